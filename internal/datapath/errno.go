// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import "golang.org/x/sys/unix"

// Closing a TCX link whose device is gone reports ENODEV; that is the
// detach we wanted anyway.
var errNoDevice error = unix.ENODEV
