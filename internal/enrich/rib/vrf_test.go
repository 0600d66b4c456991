// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
)

// Distinguishers written out by hand (RFC 4364 4.2 type 0 "65000:1",
// type 1 "192.0.2.1:5").
const (
	rd65000_1   = 0x0000_fde8_0000_0001
	rd192_0_2_1 = 0x0001_c000_0201_0005
)

func TestVRFsStayApart(t *testing.T) {
	f := newFixture(t)
	s := f.connect(router1())
	var global, rdPeer, vrfLoc, loc *Peer
	f.rib.Update(func(tx *Tx) {
		global = tx.PeerUp(s, PeerKey{Type: 0, Addr: addr(peerA)}, 15169, addr(peerA))
		rdPeer = tx.PeerUp(s, PeerKey{Type: 1, Distinguisher: rd65000_1, Addr: addr(peerB)}, 65001, addr(peerB))
		vrfLoc = tx.PeerUp(s, PeerKey{Type: 3, Distinguisher: rd192_0_2_1, Addr: addr("0.0.0.0")}, 65000, addr("192.0.2.254"))
		loc = tx.PeerUp(s, PeerKey{Type: 3, Addr: addr("0.0.0.0")}, 65000, addr("192.0.2.254"))
	})
	// The VRF route is shorter (one AS) and more specific than the
	// global one: before VRFs were kept apart it won both ways.
	f.announce(global, PrePolicy, "198.18.0.0/15", 0, SequencePath(15169, 64600))
	f.announce(rdPeer, PrePolicy, "198.18.7.0/24", 0, SequencePath(65001))
	f.announce(rdPeer, PrePolicy, "198.18.0.0/15", 0, SequencePath(65001))
	f.announce(vrfLoc, LocRIB, "198.18.9.0/24", 0, SequencePath(64700))
	f.announce(loc, LocRIB, "2001:db8::/32", 0, SequencePath(64800))

	for _, c := range []struct {
		addr   string
		origin uint32
	}{
		{"198.18.7.1", 64600}, {"198.18.9.1", 64600}, {"198.19.0.1", 64600}, {"2001:db8::1", 64800},
	} {
		if got := f.rib.Origin(addr(c.addr)); got != c.origin {
			t.Errorf("global Origin(%s) = %d, want %d", c.addr, got, c.origin)
		}
		ri, ok := f.rib.LookupRoute(addr(c.addr))
		if !ok || !ri.Peer.Global() {
			t.Errorf("LookupRoute(%s) = %+v, %v: want a global route", c.addr, ri, ok)
		}
		for _, r := range f.rib.LookupAll(addr(c.addr)) {
			if !r.Peer.Global() {
				t.Errorf("LookupAll(%s) holds VRF route %+v", c.addr, r)
			}
		}
	}

	vr := f.rib.LookupVRFs(addr("198.18.7.1"))
	if len(vr) != 1 || vr[0].VRF != (VRFKey{Router: router1(), Distinguisher: rd65000_1}) || vr[0].LabelsFlows ||
		len(vr[0].Routes) != 1 || vr[0].Routes[0].Origin != 65001 || vr[0].Routes[0].Prefix != pfx("198.18.7.0/24") {
		t.Errorf("LookupVRFs(198.18.7.1) = %+v, want the 65000:1 route 198.18.7.0/24 origin 65001", vr)
	}
	vr = f.rib.LookupVRFs(addr("198.18.9.1"))
	if len(vr) != 2 || vr[0].VRF.Distinguisher != rd65000_1 || vr[0].Routes[0].Origin != 65001 ||
		vr[1].VRF.Distinguisher != rd192_0_2_1 || vr[1].Routes[0].Origin != 64700 || vr[1].Routes[0].View != LocRIB {
		t.Errorf("LookupVRFs(198.18.9.1) = %+v, want 65000:1 origin 65001 then 192.0.2.1:5 Loc-RIB origin 64700", vr)
	}

	sum := f.rib.Summary()
	if len(sum.VRFs) != 2 || sum.VRFs[0].VRF.Distinguisher != rd65000_1 || sum.VRFs[0].Routes4 != 2 ||
		sum.VRFs[1].VRF.Distinguisher != rd192_0_2_1 || sum.VRFs[1].Routes4 != 1 {
		t.Errorf("Summary VRFs = %+v, want 65000:1 with 2 IPv4 routes and 192.0.2.1:5 with 1", sum.VRFs)
	}

	// A VRF that labels flows: its more specific routes win, global
	// ones win on equal length, other VRFs stay out.
	before := f.rib.Generation()
	f.rib.SetLabelVRFs([]uint64{rd65000_1})
	if f.rib.Generation() == before {
		t.Error("SetLabelVRFs did not publish a new table")
	}
	for _, c := range []struct {
		addr   string
		origin uint32
	}{{"198.18.7.1", 65001}, {"198.19.0.1", 64600}, {"198.18.9.1", 64600}} {
		if got := f.rib.Origin(addr(c.addr)); got != c.origin {
			t.Errorf("with 65000:1 labelling, Origin(%s) = %d, want %d", c.addr, got, c.origin)
		}
	}
	// The labelling VRF changes after the setting: still used.
	f.announce(rdPeer, PrePolicy, "198.18.8.0/24", 0, SequencePath(65001, 64900))
	if got := f.rib.Origin(addr("198.18.8.1")); got != 64900 {
		t.Errorf("route added to a labelling VRF: Origin = %d, want 64900", got)
	}
	if vr := f.rib.LookupVRFs(addr("198.18.7.1")); len(vr) != 1 || !vr[0].LabelsFlows {
		t.Errorf("LookupVRFs after SetLabelVRFs = %+v, want LabelsFlows", vr)
	}

	// The VRF goes with its last peer; a VRF of the same distinguisher
	// on another router is another table.
	old := f.rib.cur.Load()
	f.rib.Update(func(tx *Tx) { tx.PeerDown(rdPeer) })
	if vr := f.rib.LookupVRFs(addr("198.18.7.1")); len(vr) != 0 {
		t.Errorf("after Peer Down of the only 65000:1 peer: LookupVRFs = %+v, want none", vr)
	}
	if got := f.rib.Origin(addr("198.18.7.1")); got != 64600 {
		t.Errorf("after Peer Down: Origin = %d, want the global 64600", got)
	}
	if _, e, ok := old.vrfs[0].lookupPrefix(addr("198.18.7.1")); !ok || e.origin != 65001 {
		t.Error("the snapshot published before Peer Down changed")
	}
	s2 := f.connect(router2())
	var other *Peer
	f.rib.Update(func(tx *Tx) {
		other = tx.PeerUp(s2, PeerKey{Type: 1, Distinguisher: rd65000_1, Addr: addr(peerA)}, 65009, addr(peerA))
	})
	f.announce(other, PrePolicy, "198.18.7.0/24", 0, SequencePath(65009))
	if got := f.rib.Origin(addr("198.18.7.1")); got != 65009 {
		t.Errorf("65000:1 of router 2 labelling: Origin = %d, want 65009", got)
	}
	if vr := f.rib.LookupVRFs(addr("198.18.7.1")); len(vr) != 1 || vr[0].VRF.Router != router2() {
		t.Errorf("LookupVRFs = %+v, want router 2's 65000:1 only", vr)
	}
	f.counts(3, 1, 4) // global /15, VRF Loc-RIB /24, router 2 /24; global IPv6 /32
}

func TestDefaultRouteGivesNoOrigin(t *testing.T) {
	f := newFixture(t)
	s := f.connect(router1())
	p := f.peerUp(s, peerA, 65001)
	f.announce(p, PrePolicy, "0.0.0.0/0", 0, SequencePath(65001, 64500))
	f.announce(p, PrePolicy, "::/0", 0, SequencePath(65001, 64501))
	f.announce(p, PrePolicy, "198.18.0.0/15", 0, SequencePath(65001, 64502))
	for _, c := range []struct {
		addr   string
		origin uint32
		prefix string
	}{
		{"203.0.113.1", 0, "0.0.0.0/0"}, {"2001:db8::1", 0, "::/0"}, {"198.18.0.1", 64502, "198.18.0.0/15"},
	} {
		if got := f.rib.Origin(addr(c.addr)); got != c.origin {
			t.Errorf("Origin(%s) = %d, want %d", c.addr, got, c.origin)
		}
		// Still shown by `rfm rib lookup`.
		if ri, ok := f.rib.LookupRoute(addr(c.addr)); !ok || ri.Prefix != pfx(c.prefix) {
			t.Errorf("LookupRoute(%s) = %s (found %v), want %s", c.addr, ri.Prefix, ok, c.prefix)
		}
	}
	// Entries rebuilt by a bulk removal follow the same rule.
	q := f.peerUp(s, peerB, 65002)
	f.announce(q, PrePolicy, "0.0.0.0/0", 0, SequencePath(65002))
	f.rib.Update(func(tx *Tx) { tx.PeerDown(q) })
	if got := f.rib.Origin(addr("203.0.113.1")); got != 0 {
		t.Errorf("after another peer's default went: Origin = %d, want 0", got)
	}
}

// TestConcurrentVRFLookups runs readers of the global table, a labelling
// VRF and every VRF against a writer that adds and removes VRFs and
// their routes; run with -race.
func TestConcurrentVRFLookups(t *testing.T) {
	f := newFixture(t)
	f.rib.SetLabelVRFs([]uint64{rd65000_1})
	s := f.connect(router1())
	g := f.peerUp(s, peerA, 65001)
	f.announce(g, PrePolicy, "198.18.0.0/15", 0, SequencePath(65001, 64500))
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for i := range 64 {
					a := netip.AddrFrom4([4]byte{198, 18, byte(i), 1})
					// The labelling VRF's /24s, or the global /15.
					if o := f.rib.Origin(a); o != 64500 && o != 64600 {
						t.Errorf("Origin(%s) = %d", a, o)
						return
					}
					for _, v := range f.rib.LookupVRFs(a) {
						if o := v.Routes[0].Origin; o != 64600 && o != 64700 {
							t.Errorf("VRF %+v origin %d", v.VRF, o)
							return
						}
					}
				}
			}
		}()
	}
	for round := range 40 {
		var lab, other *Peer
		f.rib.Update(func(tx *Tx) {
			lab = tx.PeerUp(s, PeerKey{Type: 1, Distinguisher: rd65000_1, Addr: addr(peerB)}, 65002, addr(peerB))
			other = tx.PeerUp(s, PeerKey{Type: 3, Distinguisher: rd192_0_2_1, Addr: addr("0.0.0.0")}, 65000, netip.Addr{})
			for i := range 64 {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
				if (i+round)%2 == 0 {
					tx.Announce(lab, PrePolicy, p, 0, SequencePath(65002, 64600))
				}
				tx.Announce(other, LocRIB, p, 0, SequencePath(64700))
			}
		})
		f.rib.Update(func(tx *Tx) {
			if round%2 == 0 {
				tx.PeerDown(lab)
			} else {
				tx.PeerDown(other)
			}
		})
		f.rib.Update(func(tx *Tx) {
			tx.PeerDown(lab)
			tx.PeerDown(other)
		})
	}
	stop.Store(true)
	wg.Wait()
	if n := len(f.rib.Summary().VRFs); n != 0 {
		t.Errorf("%d VRFs left after every VRF peer went down", n)
	}
	if c := f.rib.cur.Load(); len(c.label) != 0 {
		t.Errorf("label tables left: %v", c.label)
	}
}

// BenchmarkLookupLabelVRFs compares Origin with and without a VRF that
// labels flows (the global table and the VRF both of /24s).
func BenchmarkLookupLabelVRFs(b *testing.B) {
	r := New(Options{})
	b.Cleanup(r.Close)
	var s *Session
	r.Update(func(tx *Tx) {
		s = tx.Connect(router1(), "")
		g := tx.PeerUp(s, PeerKey{Addr: addr(peerA)}, 65001, netip.Addr{})
		v := tx.PeerUp(s, PeerKey{Type: 1, Distinguisher: rd65000_1, Addr: addr(peerB)}, 65002, netip.Addr{})
		for i := range 1 << 14 {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(i>>8&1), byte(i), 0}), 24)
			tx.Announce(g, PrePolicy, p, 0, SequencePath(65001, 64500))
			if i%4 == 0 {
				tx.Announce(v, PrePolicy, p, 0, SequencePath(65002))
			}
		}
	})
	addrs := make([]netip.Addr, 1024)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{198, 18 + byte(i>>8&1), byte(i * 7), 1})
	}
	run := func(b *testing.B) {
		var sink uint32
		for i := 0; b.Loop(); i++ {
			sink += r.Origin(addrs[i&1023])
		}
		if sink == 0 {
			b.Fatal("no origin")
		}
	}
	b.Run("global", run)
	r.SetLabelVRFs([]uint64{rd65000_1})
	b.Run("label1", run)
}
