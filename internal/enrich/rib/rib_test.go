// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// step is one action or check of a RIB scenario.
type step struct {
	op     string // connect disconnect up down ann wd eor wait want none count
	router int
	peer   string // address, or "loc" for the router's Loc-RIB instance
	asn    uint32
	view   View
	prefix string
	id     uint32 // path id
	path   Path
	d      time.Duration
	ipv6   bool

	// want
	addr   string
	origin uint32

	// count
	routes4, routes6, peers int
}

func connect(r int) step    { return step{op: "connect", router: r} }
func disconnect(r int) step { return step{op: "disconnect", router: r} }
func up(r int, peer string, asn uint32) step {
	return step{op: "up", router: r, peer: peer, asn: asn}
}
func down(r int, peer string) step { return step{op: "down", router: r, peer: peer} }
func ann(r int, peer string, v View, prefix string, id uint32, path Path) step {
	return step{op: "ann", router: r, peer: peer, view: v, prefix: prefix, id: id, path: path}
}
func wd(r int, peer string, v View, prefix string, id uint32) step {
	return step{op: "wd", router: r, peer: peer, view: v, prefix: prefix, id: id}
}
func eor(r int, peer string, v View, ipv6 bool) step {
	return step{op: "eor", router: r, peer: peer, view: v, ipv6: ipv6}
}
func wait(d time.Duration) step { return step{op: "wait", d: d} }

// want checks the best route for a: its router, peer, view, path id and
// origin ASN.
func want(a string, r int, peer string, v View, id uint32, origin uint32) step {
	return step{op: "want", addr: a, router: r, peer: peer, view: v, id: id, origin: origin}
}
func none(a string) step { return step{op: "none", addr: a} }
func count(routes4, routes6, peers int) step {
	return step{op: "count", routes4: routes4, routes6: routes6, peers: peers}
}

func seq(asns ...uint32) Path { return SequencePath(asns...) }

func routerKey(r int) RouterKey {
	return RouterKey{Addr: netip.AddrFrom4([4]byte{127, 0, 0, byte(r)}), Name: fmt.Sprintf("r%d", r)}
}

func stepPeerKey(peer string) PeerKey {
	if peer == "loc" {
		return PeerKey{Type: 3, Addr: netip.IPv4Unspecified()}
	}
	return PeerKey{Addr: addr(peer)}
}

func runSteps(t *testing.T, steps []step) {
	t.Helper()
	f := newFixture(t)
	sessions := map[int]*Session{}
	peers := map[string]*Peer{}
	peerOf := func(s step) *Peer {
		p := peers[fmt.Sprint(s.router, s.peer)]
		if p == nil {
			t.Fatalf("step %+v: peer not up", s)
		}
		return p
	}
	for i, s := range steps {
		switch s.op {
		case "connect":
			sessions[s.router] = f.connect(routerKey(s.router))
		case "disconnect":
			f.rib.Update(func(tx *Tx) { tx.Disconnect(sessions[s.router]) })
		case "up":
			f.rib.Update(func(tx *Tx) {
				peers[fmt.Sprint(s.router, s.peer)] = tx.PeerUp(sessions[s.router], stepPeerKey(s.peer), s.asn, netip.Addr{})
			})
		case "down":
			f.rib.Update(func(tx *Tx) { tx.PeerDown(peerOf(s)) })
		case "ann":
			f.announce(peerOf(s), s.view, s.prefix, s.id, s.path)
		case "wd":
			f.withdraw(peerOf(s), s.view, s.prefix, s.id)
		case "eor":
			f.rib.Update(func(tx *Tx) { tx.EndOfRIB(peerOf(s), s.view, s.ipv6) })
		case "wait":
			f.clock.Advance(s.d)
		case "want":
			ri, ok := f.rib.LookupRoute(addr(s.addr))
			wantKey := stepPeerKey(s.peer)
			switch {
			case !ok:
				t.Errorf("step %d: %s has no route, want %s from %v", i, s.addr, s.view, wantKey)
			case ri.Router != routerKey(s.router) || ri.Peer != wantKey || ri.View != s.view || ri.PathID != s.id:
				t.Errorf("step %d: %s best route from router %v peer %v %s path id %d, want router %v peer %v %s path id %d",
					i, s.addr, ri.Router, ri.Peer, ri.View, ri.PathID, routerKey(s.router), wantKey, s.view, s.id)
			case ri.Origin != s.origin:
				t.Errorf("step %d: %s origin %d, want %d", i, s.addr, ri.Origin, s.origin)
			}
			// A default route is shown but labels nothing.
			wantLabel := s.origin
			if ri.Prefix.Bits() == 0 {
				wantLabel = 0
			}
			if got := f.rib.Origin(addr(s.addr)); ok && got != wantLabel {
				t.Errorf("step %d: Origin(%s) = %d, want %d", i, s.addr, got, wantLabel)
			}
		case "none":
			if ri, ok := f.rib.LookupRoute(addr(s.addr)); ok {
				t.Errorf("step %d: %s has route %s from %v, want none", i, s.addr, ri.Prefix, ri.Peer)
			}
			if got := f.rib.Origin(addr(s.addr)); got != 0 {
				t.Errorf("step %d: Origin(%s) = %d, want 0", i, s.addr, got)
			}
		case "count":
			c := f.rib.Counts()
			if c.Routes4 != s.routes4 || c.Routes6 != s.routes6 || c.Peers != s.peers {
				t.Errorf("step %d: %d IPv4 routes, %d IPv6 routes, %d peers; want %d, %d, %d",
					i, c.Routes4, c.Routes6, c.Peers, s.routes4, s.routes6, s.peers)
			}
		default:
			t.Fatalf("step %d: unknown op %q", i, s.op)
		}
	}
}

const (
	peerA = "192.0.2.1"
	peerB = "192.0.2.2"
)

func TestRIBRules(t *testing.T) {
	keep := 5 * time.Minute
	cases := []struct {
		name  string
		steps []step
	}{
		{"two peers same prefix, withdraw from one leaves the other", []step{
			connect(1), up(1, peerA, 65001), up(1, peerB, 65002),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			ann(1, peerB, PrePolicy, "198.18.0.0/24", 0, seq(65002, 64501)),
			want("198.18.0.9", 1, peerA, PrePolicy, 0, 64500), // lower peer address
			count(2, 0, 2),
			wd(1, peerA, PrePolicy, "198.18.0.0/24", 0),
			want("198.18.0.9", 1, peerB, PrePolicy, 0, 64501),
			count(1, 0, 2),
			wd(1, peerB, PrePolicy, "198.18.0.0/24", 0),
			none("198.18.0.9"),
			count(0, 0, 2),
		}},
		{"withdraw of an unknown route changes nothing", []step{
			connect(1), up(1, peerA, 65001), up(1, peerB, 65002),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			wd(1, peerB, PrePolicy, "198.18.0.0/24", 0),
			wd(1, peerA, PostPolicy, "198.18.0.0/24", 0),
			wd(1, peerA, PrePolicy, "198.18.0.0/24", 7),
			wd(1, peerA, PrePolicy, "198.18.1.0/24", 0),
			want("198.18.0.9", 1, peerA, PrePolicy, 0, 64500),
			count(1, 0, 2),
		}},
		{"re-announce replaces the peer's route", []step{
			connect(1), up(1, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64509)),
			want("198.18.0.9", 1, peerA, PrePolicy, 0, 64509),
			count(1, 0, 1),
		}},
		{"peer down removes that peer's routes at once", []step{
			connect(1), up(1, peerA, 65001), up(1, peerB, 65002),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			ann(1, peerA, PostPolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			ann(1, peerA, PrePolicy, "198.18.1.0/24", 0, seq(65001, 64500)),
			ann(1, peerA, PrePolicy, "2001:db8:1::/48", 0, seq(65001, 64500)),
			ann(1, peerB, PrePolicy, "198.18.0.0/24", 0, seq(65002, 64501)),
			count(4, 1, 2),
			down(1, peerA),
			want("198.18.0.9", 1, peerB, PrePolicy, 0, 64501),
			none("198.18.1.9"),
			none("2001:db8:1::9"),
			count(1, 0, 1),
		}},
		{"session loss keeps routes for the keep period", []step{
			connect(1), up(1, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			ann(1, peerA, PrePolicy, "2001:db8::/32", 0, seq(65001, 64500)),
			disconnect(1),
			wait(keep - time.Second),
			want("198.18.0.9", 1, peerA, PrePolicy, 0, 64500),
			want("2001:db8::9", 1, peerA, PrePolicy, 0, 64500),
			count(1, 1, 1),
			wait(time.Second),
			none("198.18.0.9"),
			none("2001:db8::9"),
			count(0, 0, 0),
		}},
		{"session loss of one router leaves another router's routes", []step{
			connect(1), up(1, peerA, 65001), connect(2), up(2, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			ann(2, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64501)),
			want("198.18.0.9", 1, peerA, PrePolicy, 0, 64500), // lower router address
			disconnect(1),
			wait(keep),
			want("198.18.0.9", 2, peerA, PrePolicy, 0, 64501),
			count(1, 0, 1),
		}},
		{"reconnect takes over: resent routes stay, the rest go at End-of-RIB", []step{
			connect(1), up(1, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			ann(1, peerA, PrePolicy, "198.18.1.0/24", 0, seq(65001, 64500)),
			ann(1, peerA, PrePolicy, "2001:db8::/32", 0, seq(65001, 64500)),
			disconnect(1),
			wait(4 * time.Minute),
			connect(1), up(1, peerA, 65001),
			want("198.18.1.9", 1, peerA, PrePolicy, 0, 64500), // stale, still answering
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64509)),
			want("198.18.0.9", 1, peerA, PrePolicy, 0, 64509),
			count(2, 1, 2),        // new session's route replaced the stale one
			wait(2 * time.Minute), // past the first keep period: nothing removed
			want("198.18.1.9", 1, peerA, PrePolicy, 0, 64500),
			eor(1, peerA, PrePolicy, false),
			none("198.18.1.9"),
			want("198.18.0.9", 1, peerA, PrePolicy, 0, 64509),
			want("2001:db8::9", 1, peerA, PrePolicy, 0, 64500), // IPv6 not ended yet
			eor(1, peerA, PrePolicy, true),
			none("2001:db8::9"),
			count(1, 0, 1),
		}},
		{"reconnect without End-of-RIB: unrefreshed routes go keep after the reconnect", []step{
			connect(1), up(1, peerA, 65001), up(1, peerB, 65002),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			ann(1, peerA, PrePolicy, "198.18.1.0/24", 0, seq(65001, 64500)),
			ann(1, peerB, PrePolicy, "198.18.2.0/24", 0, seq(65002, 64502)),
			disconnect(1),
			wait(time.Minute),
			connect(1), up(1, peerA, 65001), // peerB is not reported again
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			wait(keep - time.Second),
			want("198.18.1.9", 1, peerA, PrePolicy, 0, 64500),
			want("198.18.2.9", 1, peerB, PrePolicy, 0, 64502),
			wait(time.Second),
			want("198.18.0.9", 1, peerA, PrePolicy, 0, 64500),
			none("198.18.1.9"),
			none("198.18.2.9"),
			count(1, 0, 1),
		}},
		{"a new session of a connected router replaces the old one", []step{
			connect(1), up(1, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			connect(1), up(1, peerA, 65001),
			want("198.18.0.9", 1, peerA, PrePolicy, 0, 64500),
			eor(1, peerA, PrePolicy, false),
			none("198.18.0.9"),
			count(0, 0, 1),
		}},
		{"peer down during takeover removes the stale routes too", []step{
			connect(1), up(1, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			disconnect(1), connect(1), up(1, peerA, 65001),
			down(1, peerA),
			none("198.18.0.9"),
			count(0, 0, 0),
		}},
		{"second peer up restarts the peer", []step{
			connect(1), up(1, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			up(1, peerA, 65001),
			none("198.18.0.9"),
			count(0, 0, 1),
		}},
		{"view preference: Loc-RIB over post-policy over pre-policy", []step{
			connect(1), up(1, peerA, 65001), up(1, "loc", 65000),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			want("198.18.0.1", 1, peerA, PrePolicy, 0, 64500),
			ann(1, peerA, PostPolicy, "198.18.0.0/24", 0, seq(65001, 65001, 65001, 64501)),
			want("198.18.0.1", 1, peerA, PostPolicy, 0, 64501), // view before path length
			ann(1, "loc", LocRIB, "198.18.0.0/24", 0, seq(65001, 65001, 65001, 65001, 64502)),
			want("198.18.0.1", 1, "loc", LocRIB, 0, 64502),
			count(3, 0, 2),
			wd(1, "loc", LocRIB, "198.18.0.0/24", 0),
			want("198.18.0.1", 1, peerA, PostPolicy, 0, 64501),
			wd(1, peerA, PostPolicy, "198.18.0.0/24", 0),
			want("198.18.0.1", 1, peerA, PrePolicy, 0, 64500),
		}},
		{"view preference holds whatever the arrival order", []step{
			connect(1), up(1, peerA, 65001), up(1, "loc", 65000),
			ann(1, "loc", LocRIB, "198.18.0.0/24", 0, seq(65001, 64502)),
			ann(1, peerA, PostPolicy, "198.18.0.0/24", 0, seq(64501)),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(64500)),
			want("198.18.0.1", 1, "loc", LocRIB, 0, 64502),
		}},
		{"tie-break: shorter AS path, then router, then peer address", []step{
			connect(1), connect(2), up(1, peerA, 65001), up(1, peerB, 65002), up(2, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 65005, 64500)),
			ann(1, peerB, PrePolicy, "198.18.0.0/24", 0, seq(65002, 64501)),
			want("198.18.0.1", 1, peerB, PrePolicy, 0, 64501),
			ann(2, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64502)),
			want("198.18.0.1", 1, peerB, PrePolicy, 0, 64501), // router 1 before router 2
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64503)),
			want("198.18.0.1", 1, peerA, PrePolicy, 0, 64503), // lower peer address
		}},
		{"ADD-PATH: routes per path id", []step{
			connect(1), up(1, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 2, seq(65001, 64502)),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 1, seq(65001, 64501)),
			want("198.18.0.1", 1, peerA, PrePolicy, 1, 64501),
			count(2, 0, 1),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 1, seq(65001, 65009, 64501)),
			want("198.18.0.1", 1, peerA, PrePolicy, 2, 64502), // id 1 got longer
			wd(1, peerA, PrePolicy, "198.18.0.0/24", 2),
			want("198.18.0.1", 1, peerA, PrePolicy, 1, 64501),
			wd(1, peerA, PrePolicy, "198.18.0.0/24", 1),
			none("198.18.0.1"),
			count(0, 0, 1),
		}},
		{"origin: trailing AS_SET is unknown (0)", []step{
			connect(1), up(1, peerA, 65001),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, MakePath(
				Segment{Type: ASSequence, ASNs: []uint32{65001}},
				Segment{Type: ASSet, ASNs: []uint32{64502, 64501}})),
			want("198.18.0.1", 1, peerA, PrePolicy, 0, 0),
		}},
		{"origin: empty path is the peer's AS", []step{
			connect(1), up(1, peerA, 65001), up(1, "loc", 65000),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, Path{}),
			want("198.18.0.1", 1, peerA, PrePolicy, 0, 65001),
			ann(1, "loc", LocRIB, "198.18.0.0/24", 0, seq()),
			want("198.18.0.1", 1, "loc", LocRIB, 0, 65000),
		}},
		{"empty paths from two peers in one view", []step{
			connect(1), up(1, peerA, 65001), up(1, peerB, 65002),
			ann(1, peerB, PrePolicy, "198.18.0.0/24", 0, Path{}),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, Path{}),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 1, Path{}),
			want("198.18.0.1", 1, peerA, PrePolicy, 0, 65001),
		}},
		{"longest prefix wins, across peers and families", []step{
			connect(1), up(1, peerA, 65001), up(1, peerB, 65002),
			ann(1, peerA, PrePolicy, "198.18.0.0/15", 0, seq(65001, 64500)),
			ann(1, peerB, PrePolicy, "198.18.7.0/24", 0, seq(65002, 64501)),
			ann(1, peerB, PrePolicy, "198.18.7.128/25", 0, seq(65002, 64502)),
			ann(1, peerA, PrePolicy, "0.0.0.0/0", 0, seq(65001, 64503)),
			ann(1, peerA, PrePolicy, "2001:db8::/32", 0, seq(65001, 64504)),
			ann(1, peerB, PrePolicy, "2001:db8:7::/48", 0, seq(65002, 64505)),
			ann(1, peerA, PrePolicy, "::/0", 0, seq(65001, 64506)),
			ann(1, peerA, PrePolicy, "2000::/3", 0, seq(65001, 64507)),
			want("198.18.7.1", 1, peerB, PrePolicy, 0, 64501),
			want("198.18.7.200", 1, peerB, PrePolicy, 0, 64502),
			want("198.19.0.1", 1, peerA, PrePolicy, 0, 64500),
			want("198.18.8.1", 1, peerA, PrePolicy, 0, 64500), // shard 198.18 has no match
			want("127.0.0.1", 1, peerA, PrePolicy, 0, 64503),
			want("2001:db8:7::1", 1, peerB, PrePolicy, 0, 64505),
			want("2001:db8:8::1", 1, peerA, PrePolicy, 0, 64504),
			want("2001:db9::1", 1, peerA, PrePolicy, 0, 64507),
			want("::1", 1, peerA, PrePolicy, 0, 64506),
			want("::ffff:198.18.7.1", 1, peerB, PrePolicy, 0, 64501), // v4-mapped
			wd(1, peerB, PrePolicy, "198.18.7.0/24", 0),
			want("198.18.7.1", 1, peerA, PrePolicy, 0, 64500),
			wd(1, peerA, PrePolicy, "0.0.0.0/0", 0),
			none("127.0.0.1"),
		}},
		{"routes of a gone peer cannot come back through its handle", []step{
			connect(1), up(1, peerA, 65001),
			down(1, peerA),
			ann(1, peerA, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500)),
			none("198.18.0.1"),
			count(0, 0, 0),
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runSteps(t, c.steps) })
	}
}

func TestPathOrigin(t *testing.T) {
	cases := []struct {
		name      string
		segs      []Segment
		origin    uint32
		empty     bool
		length    int
		formatted string
	}{
		{"sequence", []Segment{{ASSequence, []uint32{65001, 4200000000}}}, 4200000000, false, 2, "65001 4200000000"},
		{"empty", nil, 0, true, 0, ""},
		{"empty segment", []Segment{{ASSequence, nil}}, 0, true, 0, ""},
		{"trailing set", []Segment{{ASSequence, []uint32{65001}}, {ASSet, []uint32{3, 1, 2}}}, 0, false, 2, "65001 {3,1,2}"},
		{"set then sequence", []Segment{{ASSet, []uint32{3, 1}}, {ASSequence, []uint32{64500}}}, 64500, false, 2, "{3,1} 64500"},
		{"confederation only", []Segment{{ConfedSequence, []uint32{65100, 65101}}}, 0, true, 0, "(65100 65101)"},
		{"confederation then sequence", []Segment{{ConfedSequence, []uint32{65100}}, {ConfedSet, []uint32{65102}}, {ASSequence, []uint32{64500, 64501}}}, 64501, false, 2, "(65100) [65102] 64500 64501"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := MakePath(c.segs...)
			asn, empty := p.Origin()
			if asn != c.origin || empty != c.empty {
				t.Errorf("Origin() = %d, %v; want %d, %v", asn, empty, c.origin, c.empty)
			}
			if p.Len() != c.length {
				t.Errorf("Len() = %d, want %d", p.Len(), c.length)
			}
			if s := p.String(); s != c.formatted {
				t.Errorf("String() = %q, want %q", s, c.formatted)
			}
			if MakePath(c.segs...) != p {
				t.Error("equal paths are not ==")
			}
		})
	}
	long := make([]uint32, 300)
	for i := range long {
		long[i] = uint32(i + 1)
	}
	p := SequencePath(long...)
	if segs := p.Segments(); len(segs) != 2 || len(segs[0].ASNs) != 255 || len(segs[1].ASNs) != 45 {
		t.Errorf("300 ASNs split into %d segments, want 255+45", len(segs))
	}
	if asn, _ := p.Origin(); asn != 300 || p.Len() != 300 {
		t.Errorf("long path origin %d length %d, want 300 300", asn, p.Len())
	}
}

func TestShardRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for range 20000 {
		var p netip.Prefix
		if r.IntN(2) == 0 {
			var b [4]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			p = netip.PrefixFrom(netip.AddrFrom4(b), r.IntN(33)).Masked()
		} else {
			var b [16]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			p = netip.PrefixFrom(netip.AddrFrom16(b), r.IntN(129)).Masked()
		}
		id, key := shardOf(p)
		if got := prefixOf(id, key); got != p {
			t.Fatalf("prefixOf(shardOf(%s)) = %s", p, got)
		}
		// IPv6 prefixes of /16 to /48 are kept under IPv4 keys.
		wantV4 := p.Addr().Is4() || p.Bits() >= 16 && p.Bits() <= 48
		if key.Addr().Is4() != wantV4 {
			t.Fatalf("shard key %s of %s: IPv4 key %v, want %v", key, p, key.Addr().Is4(), wantV4)
		}
	}
}

// TestCopyOnWrite checks both write paths (copy-on-write inserts for
// small transactions, a private shard copy for large ones) and that a
// published snapshot never changes.
func TestCopyOnWrite(t *testing.T) {
	for _, n := range []int{1, 10, 5000} {
		t.Run(fmt.Sprint(n, " routes per transaction"), func(t *testing.T) {
			f := newFixture(t)
			s := f.connect(router1())
			a := f.peerUp(s, peerA, 65001)
			// Fill one shard (198.18/16) with 4096 prefixes.
			f.rib.Update(func(tx *Tx) {
				for i := range 4096 {
					tx.Announce(a, PrePolicy, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 4), byte(i << 4)}), 28), 0, seq(65001, 64500))
				}
			})
			before := f.rib.cur.Load()
			f.rib.Update(func(tx *Tx) {
				for i := range n {
					tx.Announce(a, PrePolicy, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 4), byte(i << 4)}), 28), 0, seq(65001, 64501))
				}
			})
			after := f.rib.cur.Load()
			for i := range 4096 {
				ad := netip.AddrFrom4([4]byte{198, 18, byte(i >> 4), byte(i<<4 | 1)})
				_, e, ok := before.lookupPrefix(ad)
				if !ok || e.origin != 64500 {
					t.Fatalf("old snapshot changed at %s: %d %v", ad, e.origin, ok)
				}
				wantOrigin := uint32(64500)
				if i < n {
					wantOrigin = 64501
				}
				if _, e, _ := after.lookupPrefix(ad); e.origin != wantOrigin {
					t.Fatalf("new snapshot at %s: origin %d, want %d", ad, e.origin, wantOrigin)
				}
			}
			f.rib.Update(func(tx *Tx) { tx.PeerDown(a) })
			if _, e, ok := after.lookupPrefix(addr("198.18.0.1")); !ok || e.origin == 0 {
				t.Fatal("snapshot changed by peer down")
			}
			f.none("198.18.0.1")
			f.counts(0, 0, 0)
		})
	}
}

// TestConcurrentLookups runs readers against a writer; run with -race.
func TestConcurrentLookups(t *testing.T) {
	f := newFixture(t)
	s := f.connect(router1())
	a := f.peerUp(s, peerA, 65001)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for i := range 256 {
					o := f.rib.Origin(netip.AddrFrom4([4]byte{198, 18, byte(i), 1}))
					if o != 0 && o != 64500 && o != 64501 {
						t.Errorf("origin %d", o)
						return
					}
					f.rib.LookupRoute(netip.AddrFrom4([4]byte{198, 18, byte(i), 1}))
				}
			}
		}()
	}
	for round := range 50 {
		f.rib.Update(func(tx *Tx) {
			for i := range 256 {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
				if (i+round)%3 == 0 {
					tx.Withdraw(a, PrePolicy, p, 0)
				} else {
					tx.Announce(a, PrePolicy, p, 0, seq(65001, 64500+uint32(round%2)))
				}
			}
		})
	}
	f.rib.Update(func(tx *Tx) { tx.PeerDown(a) })
	stop.Store(true)
	wg.Wait()
}

func TestGeneration(t *testing.T) {
	f := newFixture(t)
	g0 := f.rib.Generation()
	s := f.connect(router1())
	a := f.peerUp(s, peerA, 65001)
	f.announce(a, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500))
	g1 := f.rib.Generation()
	if g1 == g0 {
		t.Fatal("generation unchanged by an announce")
	}
	f.announce(a, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500))
	f.rib.Update(func(tx *Tx) {})
	if g := f.rib.Generation(); g != g1 {
		t.Fatalf("generation changed by no-op transactions: %d -> %d", g1, g)
	}
	f.withdraw(a, PrePolicy, "198.18.0.0/24", 0)
	if f.rib.Generation() == g1 {
		t.Fatal("generation unchanged by a withdraw")
	}
	var nilRIB *RIB
	if nilRIB.Generation() != 0 || nilRIB.Origin(addr("198.18.0.1")) != 0 {
		t.Fatal("nil RIB answers")
	}
	f.announce(a, PrePolicy, "::/0", 0, seq(65001, 64500))
	f.announce(a, PrePolicy, "0.0.0.0/0", 0, seq(65001, 64500))
	if f.rib.Origin(netip.Addr{}) != 0 {
		t.Fatal("the zero Addr matched a default route")
	}
	if _, ok := f.rib.LookupRoute(netip.Addr{}); ok {
		t.Fatal("LookupRoute of the zero Addr found a route")
	}
}

func TestSummaryAndLookupAll(t *testing.T) {
	f := newFixture(t)
	s1 := f.connect(router1())
	f.rib.Update(func(tx *Tx) { tx.Connect(router2(), "second") })
	a := f.peerUp(s1, peerA, 65001)
	b := f.peerUp(s1, peerB, 65002)
	f.announce(a, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500))
	f.announce(b, PrePolicy, "198.18.0.0/24", 0, seq(65002, 64501))
	f.announce(b, PostPolicy, "2001:db8::/32", 0, seq(65002, 64501))
	all := f.rib.LookupAll(addr("198.18.0.1"))
	if len(all) != 2 || all[0].Peer.Addr != addr(peerA) || all[1].Peer.Addr != addr(peerB) {
		t.Fatalf("LookupAll = %+v", all)
	}
	if all[1].Prefix != pfx("198.18.0.0/24") || all[1].Path.String() != "65002 64501" || all[1].PeerASN != 65002 || all[1].Router != router1() {
		t.Fatalf("LookupAll[1] = %+v", all[1])
	}
	sum := f.rib.Summary()
	if sum.Routes4 != 2 || sum.Routes6 != 1 || sum.Prefixes4 != 1 || sum.Prefixes6 != 1 || sum.Peers != 2 {
		t.Fatalf("summary counts %+v", sum.Counts)
	}
	if len(sum.Routers) != 2 || sum.Routers[0].Router != router1() || sum.Routers[1].Descr != "second" {
		t.Fatalf("summary routers %+v", sum.Routers)
	}
	ps := sum.Routers[0].Peers
	if len(ps) != 2 || ps[1].Peer.Addr != addr(peerB) || ps[1].Routes4 != 1 || ps[1].Routes6 != 1 || ps[1].ASN != 65002 {
		t.Fatalf("summary peers %+v", ps)
	}
	f.rib.Update(func(tx *Tx) { tx.Disconnect(s1) })
	sum = f.rib.Summary()
	if sum.Routers[0].Connected || !sum.Routers[0].Peers[0].Stale {
		t.Fatalf("after disconnect: %+v", sum.Routers[0])
	}
}

func TestPathInterning(t *testing.T) {
	f := newFixture(t)
	s := f.connect(router1())
	a := f.peerUp(s, peerA, 65001)
	b := f.peerUp(s, peerB, 65002)
	f.rib.Update(func(tx *Tx) {
		for i := range 100 {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
			tx.Announce(a, PrePolicy, p, 0, seq(65001, 64500+uint32(i%10)))
			tx.Announce(b, PrePolicy, p, 0, seq(65001, 64500+uint32(i%10)))
			tx.Announce(b, PostPolicy, p, 0, Path{})
		}
	})
	// Paths are interned per peer.
	if n := pathCount(f.rib); n != 20 {
		t.Fatalf("%d interned paths, want 20", n)
	}
	r1 := f.rib.LookupAll(addr("198.18.3.1"))[1]
	r2 := f.rib.LookupAll(addr("198.18.13.1"))[1]
	if r1.Peer != r2.Peer || unsafe.StringData(r1.Path.enc) != unsafe.StringData(r2.Path.enc) {
		t.Fatal("equal paths of one peer are not shared")
	}
	old := f.rib.cur.Load()
	f.rib.Update(func(tx *Tx) {
		for i := range 100 {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
			tx.Announce(a, PrePolicy, p, 0, seq(65001, 64600+uint32(i%10)))
		}
	})
	if n := pathCount(f.rib); n != 20 {
		t.Fatalf("%d interned paths after changing peer A's, want 20", n)
	}
	// Freed path slots are reused; the old snapshot still resolves its own.
	f.rib.Update(func(tx *Tx) {
		for i := range 100 {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24)
			tx.Announce(a, PrePolicy, p, 0, seq(65001, 64700+uint32(i%10)))
		}
	})
	_, e, _ := old.lookupPrefix(addr("198.18.3.1"))
	if got := old.path(e.routes[1]).String(); got != "65001 64503" {
		t.Fatalf("old snapshot resolves path %q, want 65001 64503", got)
	}
	if got := f.rib.LookupAll(addr("198.18.3.1"))[1].Path.String(); got != "65001 64703" {
		t.Fatalf("path %q, want 65001 64703", got)
	}
	f.rib.Update(func(tx *Tx) { tx.PeerDown(b) })
	if n := pathCount(f.rib); n != 10 {
		t.Fatalf("%d interned paths after peer B went down, want 10", n)
	}
	f.rib.Update(func(tx *Tx) {
		for i := range 100 {
			tx.Withdraw(a, PrePolicy, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i), 0}), 24), 0)
		}
	})
	if n := pathCount(f.rib); n != 0 {
		t.Fatalf("%d interned paths left, want 0", n)
	}
}

func pathCount(r *RIB) int {
	n := 0
	for _, p := range r.peers {
		if p != nil {
			n += len(p.pt.byEnc)
		}
	}
	return n
}

// TestIPv6ShardKeys checks longest-prefix match inside one IPv6 shard
// whose prefixes are split between IPv4 keys (/16 to /48) and IPv6 keys
// (longer), through announces, withdraws and Peer Down.
func TestIPv6ShardKeys(t *testing.T) {
	f := newFixture(t)
	s := f.connect(router1())
	a := f.peerUp(s, peerA, 65001)
	announced := map[string]uint32{
		"2000::/8":               64500, // short table
		"2001:db8::/32":          64501, // IPv4 key /16
		"2001:db8:1::/48":        64502, // IPv4 key /32, the longest
		"2001:db8:1:8000::/49":   64503, // IPv6 key /33, the shortest
		"2001:db8:1:8001::/64":   64504,
		"2001:db8:1:8001::7/128": 64505,
	}
	for p, origin := range announced {
		f.announce(a, PrePolicy, p, 0, seq(65001, origin))
	}
	check := func(probe, wantPrefix string, wantOrigin uint32) {
		t.Helper()
		if got := f.rib.Origin(addr(probe)); got != wantOrigin {
			t.Errorf("Origin(%s) = %d, want %d", probe, got, wantOrigin)
		}
		ri, ok := f.rib.LookupRoute(addr(probe))
		if wantPrefix == "" {
			if ok {
				t.Errorf("LookupRoute(%s) = %s, want no route", probe, ri.Prefix)
			}
			return
		}
		if !ok || ri.Prefix != pfx(wantPrefix) || ri.Origin != wantOrigin {
			t.Errorf("LookupRoute(%s) = %s origin %d (found %v), want %s origin %d", probe, ri.Prefix, ri.Origin, ok, wantPrefix, wantOrigin)
		}
		if all := f.rib.LookupAll(addr(probe)); len(all) != 1 || all[0].Prefix != pfx(wantPrefix) {
			t.Errorf("LookupAll(%s) = %+v, want one route of %s", probe, all, wantPrefix)
		}
	}
	for _, c := range []struct {
		probe, prefix string
		origin        uint32
	}{
		{"2001:db8:1:8001::7", "2001:db8:1:8001::7/128", 64505},
		{"2001:db8:1:8001::8", "2001:db8:1:8001::/64", 64504},
		{"2001:db8:1:8002::1", "2001:db8:1:8000::/49", 64503},
		{"2001:db8:1:7fff::1", "2001:db8:1::/48", 64502},
		{"2001:db8:2::1", "2001:db8::/32", 64501},
		{"2001:db9::1", "2000::/8", 64500},
		{"2002::1", "2000::/8", 64500},
		{"3000::1", "", 0},
	} {
		check(c.probe, c.prefix, c.origin)
	}
	f.withdraw(a, PrePolicy, "2001:db8:1:8000::/49", 0)
	f.withdraw(a, PrePolicy, "2001:db8:1:8001::/64", 0)
	check("2001:db8:1:8002::1", "2001:db8:1::/48", 64502)
	check("2001:db8:1:8001::7", "2001:db8:1:8001::7/128", 64505)
	f.withdraw(a, PrePolicy, "2001:db8:1:8001::7/128", 0)
	check("2001:db8:1:8001::7", "2001:db8:1::/48", 64502)
	f.withdraw(a, PrePolicy, "2001:db8:1::/48", 0)
	check("2001:db8:1:8001::7", "2001:db8::/32", 64501)
	f.announce(a, PrePolicy, "2001:db8:1:8001::/64", 0, seq(65001, 64504))
	f.counts(0, 3, 1)
	f.rib.Update(func(tx *Tx) { tx.PeerDown(a) })
	f.counts(0, 0, 0)
	check("2001:db8:1:8001::7", "", 0)
}
