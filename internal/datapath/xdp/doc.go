// SPDX-License-Identifier: AGPL-3.0-only

// Package xdp is rfm's XDP fast path: the program of bpf/xdp.c attached
// to interfaces with XDP links, a stateless rule set compiled into its
// maps, a live blocklist and a blackhole list of destination prefixes.
package xdp
