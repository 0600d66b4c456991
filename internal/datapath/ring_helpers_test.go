// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"errors"
	"os"
	"time"
)

// readNow decodes what the ring holds now, up to len(evs), without
// waiting.
func (d *Datapath) readNow(evs []Event) (int, error) {
	d.ring.mu.Lock()
	defer d.ring.mu.Unlock()
	n, _, err := d.readReady(evs)
	return n, err
}

// readWithin is readNow after waiting up to timeout for the ring to
// signal data when it holds none.
func (d *Datapath) readWithin(evs []Event, timeout time.Duration) (int, error) {
	if n, err := d.readNow(evs); n > 0 || err != nil {
		return n, err
	}
	d.ring.mu.Lock()
	err := d.ring.wait(time.Now().Add(timeout))
	d.ring.mu.Unlock()
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, err
	}
	return d.readNow(evs)
}
