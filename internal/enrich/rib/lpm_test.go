// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestLPMDifferential compares lookups with a linear longest-prefix
// match over the announced prefixes, through batches of announces and
// withdraws. Prefixes are random but crowded into a few /16s so they
// nest across every shard layout: short tables (< /16), shards (/16 to
// /48 for IPv6, /16 to /32 for IPv4) and the long IPv6 table (> /48).
func TestLPMDifferential(t *testing.T) {
	for _, v6 := range []bool{true, false} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) { lpmDifferential(t, v6) })
	}
}

func lpmDifferential(t *testing.T, v6 bool) {
	rnd := rand.New(rand.NewPCG(11, 12))
	bitLen := 32
	if v6 {
		bitLen = 128
	}
	// randAddr: the first octet from 2, the second from 4, the rest
	// random, so prefixes share shards and nest.
	randAddr := func() netip.Addr {
		if v6 {
			var b [16]byte
			b[0], b[1] = 0x20, byte(rnd.IntN(2))
			b[2], b[3] = byte(rnd.IntN(4)), byte(rnd.IntN(4))
			b[4], b[5], b[6] = byte(rnd.IntN(4)), byte(rnd.IntN(256)), byte(rnd.IntN(4))
			for i := 7; i < 16; i++ {
				b[i] = byte(rnd.Uint32())
			}
			return netip.AddrFrom16(b)
		}
		v := rnd.Uint32()
		return netip.AddrFrom4([4]byte{198, 16 + byte(rnd.IntN(4)), byte(v >> 8 % 8), byte(v)})
	}
	randBits := func() int {
		if rnd.IntN(4) == 0 {
			return rnd.IntN(bitLen + 1) // anything, /0 included
		}
		if v6 {
			return []int{16, 24, 29, 32, 40, 44, 47, 48, 49, 56, 64, 127, 128}[rnd.IntN(13)]
		}
		return []int{8, 15, 16, 17, 20, 24, 31, 32}[rnd.IntN(8)]
	}

	f := newFixture(t)
	s := f.connect(router1())
	p := f.peerUp(s, peerA, 65001)
	model := map[netip.Prefix]uint32{}
	next := uint32(1)
	naive := func(a netip.Addr) (netip.Prefix, uint32) {
		best := netip.Prefix{}
		for q := range model {
			if q.Contains(a) && (!best.IsValid() || q.Bits() > best.Bits()) {
				best = q
			}
		}
		return best, model[best]
	}
	var known []netip.Prefix
	for round := range 30 {
		tx := f.rib.Begin()
		for range 150 {
			q, _ := randAddr().Prefix(randBits())
			model[q] = next
			known = append(known, q)
			tx.Announce(p, PrePolicy, q, 0, SequencePath(65001, next))
			next++
		}
		for range 50 {
			q := known[rnd.IntN(len(known))]
			delete(model, q)
			tx.Withdraw(p, PrePolicy, q, 0)
		}
		tx.Commit()
		for range 400 {
			a := randAddr()
			if rnd.IntN(2) == 0 && len(known) > 0 {
				// An address inside a known prefix, often its first.
				q := known[rnd.IntN(len(known))]
				a = q.Addr()
				if rnd.IntN(2) == 0 {
					a = a.Next()
				}
			}
			wantPfx, wantOrigin := naive(a)
			wantLabel := wantOrigin // a default route labels nothing
			if wantPfx.Bits() == 0 {
				wantLabel = 0
			}
			if got := f.rib.Origin(a); got != wantLabel {
				t.Fatalf("round %d: Origin(%s) = %d, want %d (%s)", round, a, got, wantLabel, wantPfx)
			}
			ri, ok := f.rib.LookupRoute(a)
			if ok != wantPfx.IsValid() || ok && (ri.Prefix != wantPfx || ri.Origin != wantOrigin) {
				t.Fatalf("round %d: LookupRoute(%s) = %s origin %d (found %v), want %s origin %d",
					round, a, ri.Prefix, ri.Origin, ok, wantPfx, wantOrigin)
			}
			if v6 {
				// The IPv4-mapped form of an IPv4 address is looked up
				// as IPv4; an IPv6 address never matches IPv4 routes.
				continue
			}
			if got := f.rib.Origin(netip.AddrFrom16(a.As16())); got != wantLabel {
				t.Fatalf("round %d: Origin(%s as IPv4-mapped) = %d, want %d", round, a, got, wantLabel)
			}
		}
	}
	c := f.rib.Counts()
	if got := c.Routes4 + c.Routes6; got != len(model) {
		t.Fatalf("%d routes in the RIB, want %d", got, len(model))
	}
	f.rib.Update(func(tx *Tx) { tx.PeerDown(p) })
	for q := range model {
		if got := f.rib.Origin(q.Addr()); got != 0 {
			t.Fatalf("after Peer Down: Origin(%s) = %d, want 0", q.Addr(), got)
		}
	}
}

// TestAddrHi checks the word addrHi reads against As16, and that the
// fast read is in use (a Go release that changes netip.Addr's layout
// would silently make IPv6 lookups slower).
func TestAddrHi(t *testing.T) {
	if !addrLayoutOK {
		t.Error("netip.Addr layout check failed: IPv6 lookups fall back to As16")
	}
	rnd := rand.New(rand.NewPCG(1, 1))
	for range 10000 {
		var b [16]byte
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		a := netip.AddrFrom16(b)
		if rnd.IntN(4) == 0 {
			a = a.WithZone("eth0")
		}
		want := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
			uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
		if got := addrHi(a); got != want {
			t.Fatalf("addrHi(%s) = %#x, want %#x", a, got, want)
		}
	}
}
