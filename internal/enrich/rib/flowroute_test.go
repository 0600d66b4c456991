// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"net/netip"
	"slices"
	"testing"
)

func TestPathAttrsRoundTrip(t *testing.T) {
	asPath := MakePath(Segment{Type: ConfedSequence, ASNs: []uint32{64512}}, Segment{Type: ASSequence, ASNs: []uint32{65001, 65002, 4200000000}})
	attrs := Attrs{
		NextHop:          netip.MustParseAddr("2001:db8::1"),
		Communities:      []uint32{65001<<16 | 100, 0xffffff01},
		LargeCommunities: []LargeCommunity{{4200000000, 1, 2}, {65001, 7, 8}},
	}
	p := asPath.WithAttrs(attrs)
	if p.ASPath() != asPath {
		t.Errorf("ASPath() = %q, want the path without attributes %q", p.ASPath(), asPath)
	}
	if p.String() != "(64512) 65001 65002 4200000000" || p.Len() != asPath.Len() {
		t.Errorf("String %q Len %d, want the AS path's", p.String(), p.Len())
	}
	if asn, empty := p.Origin(); asn != 4200000000 || empty {
		t.Errorf("Origin = %d, %v", asn, empty)
	}
	if got := p.FirstAS(); got != 65001 {
		t.Errorf("FirstAS = %d, want 65001 (the confederation segment skipped)", got)
	}
	if got := p.NextHop(); got != attrs.NextHop {
		t.Errorf("NextHop = %v", got)
	}
	if got := p.Communities(); !slices.Equal(got, attrs.Communities) {
		t.Errorf("Communities = %v", got)
	}
	if got := p.LargeCommunities(); !slices.Equal(got, attrs.LargeCommunities) {
		t.Errorf("LargeCommunities = %v", got)
	}
	if got := len(p.CommunityBytes()); got != 8 {
		t.Errorf("CommunityBytes is %d bytes, want 8", got)
	}

	// Attributes without an AS path (a route of an iBGP peer).
	q := (Path{}).WithAttrs(Attrs{NextHop: netip.MustParseAddr("198.18.0.1")})
	if q == (Path{}) || q.NextHop() != netip.MustParseAddr("198.18.0.1") || q.FirstAS() != 0 || q.Segments() != nil {
		t.Errorf("empty path with a next hop: %q next hop %v first AS %d", q.enc, q.NextHop(), q.FirstAS())
	}
	if _, empty := q.Origin(); !empty {
		t.Error("an empty path with attributes names an origin")
	}
	if (Path{}).WithAttrs(Attrs{}) != (Path{}) || asPath.WithAttrs(Attrs{}) != asPath {
		t.Error("no attributes must leave the path as it was")
	}
	if MakePath(Segment{Type: ASSet, ASNs: []uint32{1, 2}}).FirstAS() != 0 {
		t.Error("a path starting with an AS_SET has no single first AS")
	}
}

func TestFlowRoute(t *testing.T) {
	f := newFixture(t)
	s := f.connect(router1())
	p := f.peerUp(s, "192.0.2.1", 65001)
	nh := netip.MustParseAddr("192.0.2.1")
	f.announce(p, PostPolicy, "198.18.0.0/15", 0, SequencePath(65001, 65002).WithAttrs(Attrs{NextHop: nh, Communities: []uint32{65001<<16 | 7}}))
	f.announce(p, PostPolicy, "198.18.4.0/24", 0, SequencePath(65001, 65003).WithAttrs(Attrs{NextHop: nh}))
	f.announce(p, PostPolicy, "0.0.0.0/0", 0, SequencePath(65001).WithAttrs(Attrs{NextHop: nh}))

	for _, tt := range []struct {
		addr    string
		bits    int
		origin  uint32
		firstAS uint32
		comms   int
	}{
		{"198.18.9.9", 15, 65002, 65001, 1},
		{"198.18.4.4", 24, 65003, 65001, 0},
		{"::ffff:198.18.4.4", 24, 65003, 65001, 0},
		{"203.0.113.1", 0, 0, 65001, 0}, // the default route: chosen, but no origin
	} {
		r, ok := f.rib.FlowRoute(addr(tt.addr))
		if !ok || r.Bits != tt.bits || r.Origin != tt.origin || r.Path.FirstAS() != tt.firstAS ||
			r.Path.NextHop() != nh || len(r.Path.Communities()) != tt.comms {
			t.Errorf("FlowRoute(%s) = %+v (next hop %v, first AS %d, communities %v), %v; want /%d origin %d first AS %d, %d communities",
				tt.addr, r, r.Path.NextHop(), r.Path.FirstAS(), r.Path.Communities(), ok, tt.bits, tt.origin, tt.firstAS, tt.comms)
		}
		if got := f.rib.Origin(addr(tt.addr)); got != tt.origin {
			t.Errorf("Origin(%s) = %d, FlowRoute says %d", tt.addr, got, tt.origin)
		}
	}
	if _, ok := f.rib.FlowRoute(addr("2001:db8::1")); ok {
		t.Error("FlowRoute found a route for an address no prefix covers")
	}
	var nilRIB *RIB
	if _, ok := nilRIB.FlowRoute(addr("198.18.0.1")); ok {
		t.Error("a nil RIB found a route")
	}
}
