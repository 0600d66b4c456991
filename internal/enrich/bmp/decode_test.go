// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/packet/bmp"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

func TestSessionFlow(t *testing.T) {
	h := newHarness(t)
	err := h.feed(
		initiationMsg(t, "edge1"),
		peerUpMsg(t, peerA, 65001, peerUpOpts{}),
		peerUpMsg(t, peer6, 65002, peerUpOpts{}),
		announceMsg(t, peerA, 65001, 0, route{announce: []string{"198.18.0.0/24", "198.18.1.0/24"}, path: []uint32{65001, 64500}}),
		announceMsg(t, peerA, 65001, 0, route{announce: []string{"2001:db8:1::/48"}, path: []uint32{65001, 4200000000}}),
		announceMsg(t, peer6, 65002, 0, route{announce: []string{"198.18.0.0/24"}, path: []uint32{65002, 64501}}),
		statsMsg(t, peerA, 65001),
	)
	if err != nil {
		t.Fatal(err)
	}
	ri, ok := h.route("198.18.0.7")
	if !ok || ri.Origin != 64500 || ri.Peer.Addr != netip.MustParseAddr(peerA) || ri.View != rib.PrePolicy ||
		ri.Router != (rib.RouterKey{Addr: netip.MustParseAddr("127.0.0.1"), Name: "edge1"}) || ri.Path.String() != "65001 64500" {
		t.Fatalf("route = %+v, %v", ri, ok)
	}
	if got := h.origin("2001:db8:1::1"); got != 4200000000 {
		t.Errorf("IPv6 origin %d", got)
	}
	if s := h.rib.Summary(); len(s.Routers) != 1 || s.Routers[0].Descr != "test router" || len(s.Routers[0].Peers) != 2 {
		t.Errorf("summary %+v", s)
	}

	// Withdrawals: IPv4 withdrawn routes and MP_UNREACH.
	h.feed(
		announceMsg(t, peerA, 65001, 0, route{withdraw: []string{"198.18.0.0/24", "2001:db8:1::/48"}}),
	)
	if got := h.origin("198.18.0.7"); got != 64501 {
		t.Errorf("after peer A's withdraw: origin %d, want peer B's 64501", got)
	}
	if got := h.origin("2001:db8:1::1"); got != 0 {
		t.Errorf("IPv6 after withdraw: origin %d", got)
	}

	// Peer Down removes the peer's routes.
	h.feed(peerDownMsg(t, peer6, 65002))
	if got := h.origin("198.18.0.7"); got != 0 {
		t.Errorf("after peer down: origin %d", got)
	}
	if got := h.origin("198.18.1.7"); got != 64500 {
		t.Errorf("other peer's route: origin %d", got)
	}

	if err := h.feed(terminationMsg(t)); !errors.Is(err, errTerminated) {
		t.Fatalf("termination: %v", err)
	}
	if s := h.rib.Summary(); s.Routers[0].Connected {
		t.Error("router still connected after Termination")
	}
	c := &h.st.c
	for typ, want := range map[int]uint64{typeInitiation: 1, typePeerUp: 2, typeRouteMonitoring: 4, typeStatistics: 1, typePeerDown: 1, typeTermination: 1} {
		if got := c.messages[typ].Load(); got != want {
			t.Errorf("%s messages: %d, want %d", typeNames[typ], got, want)
		}
	}
	if c.errors.Load() != 0 {
		t.Errorf("%d errors", c.errors.Load())
	}
}

func TestViews(t *testing.T) {
	h := newHarness(t)
	h.feed(
		initiationMsg(t, "r"),
		peerUpMsg(t, peerA, 65001, peerUpOpts{}),
		announceMsg(t, peerA, 65001, 0, route{announce: []string{"198.18.0.0/24"}, path: []uint32{65001, 64500}}),
		announceMsg(t, peerA, 65001, flagPostPolicy, route{announce: []string{"198.18.0.0/24"}, path: []uint32{65001, 64501}}),
	)
	if ri, _ := h.route("198.18.0.1"); ri.View != rib.PostPolicy || ri.Origin != 64501 {
		t.Errorf("post-policy route not preferred: %+v", ri)
	}
	// Loc-RIB without a Peer Up, as gobgp sends it (RFC 9069 peer type 3).
	loc := peerHeader(peerTypeLocRIB, 0, "0.0.0.0", 65000)
	h.feed(rmMsg(t, loc, updateMsg(t, route{announce: []string{"198.18.0.0/24"}, path: []uint32{65001, 64502}}), false))
	if ri, _ := h.route("198.18.0.1"); ri.View != rib.LocRIB || ri.Origin != 64502 || ri.Peer.Type != peerTypeLocRIB {
		t.Errorf("Loc-RIB route not preferred: %+v", ri)
	}
	// An empty AS path in the Loc-RIB is a local route: the router's AS.
	h.feed(rmMsg(t, loc, updateMsg(t, route{announce: []string{"198.18.9.0/24"}, path: nil}), false))
	if got := h.origin("198.18.9.1"); got != 65000 {
		t.Errorf("local route origin %d, want 65000", got)
	}
	// Adj-RIB-Out (RFC 8671) is skipped.
	h.feed(announceMsg(t, peerA, 65001, flagAdjRIBOut, route{announce: []string{"198.18.5.0/24"}, path: []uint32{65001, 64509}}))
	if got := h.origin("198.18.5.1"); got != 0 {
		t.Errorf("Adj-RIB-Out route used: origin %d", got)
	}
	if h.st.c.skipped[skipAdjRIBOut].Load() != 1 {
		t.Error("Adj-RIB-Out message not counted as skipped")
	}
}

func TestAddPathNegotiation(t *testing.T) {
	both := bgp.BGP_ADD_PATH_BOTH
	send, recv := bgp.BGP_ADD_PATH_SEND, bgp.BGP_ADD_PATH_RECEIVE
	cases := []struct {
		name       string
		sent, recv bgp.BGPAddPathMode // router's OPEN, peer's OPEN (IPv4 unicast)
		addPath    bool
	}{
		{"both sides both", both, both, true},
		{"router receives, peer sends", recv, send, true},
		{"router sends, peer receives", send, recv, false},
		{"only the peer", 0, both, false},
		{"only the router", both, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			o := peerUpOpts{}
			if c.sent != 0 {
				o.sentAddPath = map[bgp.Family]bgp.BGPAddPathMode{bgp.RF_IPv4_UC: c.sent}
			}
			if c.recv != 0 {
				o.recvAddPath = map[bgp.Family]bgp.BGPAddPathMode{bgp.RF_IPv4_UC: c.recv}
			}
			h.feed(initiationMsg(t, "r"), peerUpMsg(t, peerA, 65001, o))
			hdr := peerHeader(0, 0, peerA, 65001)
			// The router encodes path ids exactly when they were negotiated.
			h.feed(
				rmMsg(t, hdr, updateMsg(t, route{announce: []string{"198.18.0.0/24"}, pathIDs: []uint32{7}, path: []uint32{65001, 64507}}), c.addPath),
				rmMsg(t, hdr, updateMsg(t, route{announce: []string{"198.18.0.0/24"}, pathIDs: []uint32{3}, path: []uint32{65001, 64503}}), c.addPath),
			)
			all := h.rib.LookupAll(netip.MustParseAddr("198.18.0.1"))
			if c.addPath {
				if len(all) != 2 || all[0].PathID != 3 || all[0].Origin != 64503 || all[1].PathID != 7 {
					t.Fatalf("routes %+v, want path ids 3 and 7", all)
				}
				h.feed(rmMsg(t, hdr, updateMsg(t, route{withdraw: []string{"198.18.0.0/24"}, pathIDs: []uint32{3}}), true))
				if got := h.origin("198.18.0.1"); got != 64507 {
					t.Fatalf("after withdrawing path id 3: origin %d, want 64507", got)
				}
			} else if len(all) != 1 || all[0].PathID != 0 || all[0].Origin != 64503 {
				t.Fatalf("routes %+v, want one without path id", all)
			}
			if h.st.c.errors.Load() != 0 {
				t.Fatalf("%d errors", h.st.c.errors.Load())
			}
		})
	}
}

// as2Update builds an UPDATE in the legacy 2-byte format with the given
// AS_PATH and optional AS4_PATH.
func as2Update(asPath []uint16, as4Path []uint32) *bgp.BGPMessage {
	attrs := []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAsPathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, asPath)}),
		must(bgp.NewPathAttributeNextHop(netip.MustParseAddr("192.0.2.1"))),
	}
	if as4Path != nil {
		attrs = append(attrs, bgp.NewPathAttributeAs4Path([]*bgp.As4PathParam{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, as4Path)}))
	}
	return bgp.NewBGPUpdateMessage(nil, attrs, []bgp.PathNLRI{nlri("198.18.0.0/24")})
}

func TestASPathFormats(t *testing.T) {
	cases := []struct {
		name   string
		flags  uint8
		msg    *bgp.BGPMessage
		origin uint32
		path   string
	}{
		{"4-byte", 0, updateMsg(t, route{announce: []string{"198.18.0.0/24"}, path: []uint32{65001, 4200000001}}), 4200000001, "65001 4200000001"},
		{"2-byte", flagTwoByteAS, as2Update([]uint16{65001, 64500}, nil), 64500, "65001 64500"},
		{"2-byte with AS_TRANS and AS4_PATH", flagTwoByteAS, as2Update([]uint16{65001, 23456, 23456}, []uint32{4200000002, 4200000001}), 4200000001, "65001 4200000002 4200000001"},
		{"2-byte, AS4_PATH longer than AS_PATH is ignored", flagTwoByteAS, as2Update([]uint16{23456}, []uint32{4200000002, 4200000001}), 23456, "23456"},
		// A flag claims 2-byte but the bytes are 4-byte: decoded with 4.
		{"A flag wrong", flagTwoByteAS, updateMsg(t, route{announce: []string{"198.18.0.0/24"}, path: []uint32{4200000001}}), 4200000001, "4200000001"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.feed(initiationMsg(t, "r"), peerUpMsg(t, peerA, 65001, peerUpOpts{as2: c.flags != 0}))
			h.feed(rmMsg(t, peerHeader(0, c.flags, peerA, 65001), c.msg, false))
			ri, ok := h.route("198.18.0.1")
			if !ok || ri.Origin != c.origin || ri.Path.String() != c.path {
				t.Fatalf("route %+v (path %q), want origin %d path %q", ri, ri.Path.String(), c.origin, c.path)
			}
		})
	}

	// AS_SET at the end: origin unknown (0), route present.
	h := newHarness(t)
	h.feed(initiationMsg(t, "r"), peerUpMsg(t, peerA, 65001, peerUpOpts{}))
	m := bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{
			bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65001}),
			bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SET, []uint32{64501, 64500}),
		}),
		must(bgp.NewPathAttributeNextHop(netip.MustParseAddr("192.0.2.1"))),
	}, []bgp.PathNLRI{nlri("198.18.0.0/24")})
	h.feed(rmMsg(t, peerHeader(0, 0, peerA, 65001), m, false))
	if ri, ok := h.route("198.18.0.1"); !ok || ri.Origin != 0 || ri.Path.String() != "65001 {64501,64500}" {
		t.Fatalf("AS_SET route %+v %v", ri, ok)
	}
}

func TestEndOfRIBAndReconnect(t *testing.T) {
	h := newHarness(t)
	h.feed(
		initiationMsg(t, "r"),
		peerUpMsg(t, peerA, 65001, peerUpOpts{}),
		announceMsg(t, peerA, 65001, 0, route{announce: []string{"198.18.0.0/24", "198.18.1.0/24", "2001:db8:1::/48"}, path: []uint32{65001, 64500}}),
	)
	h.end() // session lost

	// The router reconnects and sends part of its table again.
	h2 := &harness{t: t, rib: h.rib, st: h.st, ss: &session{st: h.st, remote: h.ss.remote}, dec: newDecoder(&h.st.c)}
	eor4 := rmMsg(t, peerHeader(0, 0, peerA, 65001), bgp.NewEndOfRib(bgp.RF_IPv4_UC), false)
	eor6 := rmMsg(t, peerHeader(0, 0, peerA, 65001), bgp.NewEndOfRib(bgp.RF_IPv6_UC), false)
	h2.feed(
		initiationMsg(t, "r"),
		peerUpMsg(t, peerA, 65001, peerUpOpts{}),
		announceMsg(t, peerA, 65001, 0, route{announce: []string{"198.18.0.0/24"}, path: []uint32{65001, 64509}}),
	)
	if h.origin("198.18.1.1") != 64500 || h.origin("198.18.0.1") != 64509 {
		t.Fatalf("before End-of-RIB: %d %d", h.origin("198.18.1.1"), h.origin("198.18.0.1"))
	}
	h2.feed(eor4)
	if h.origin("198.18.1.1") != 0 || h.origin("198.18.0.1") != 64509 || h.origin("2001:db8:1::1") != 64500 {
		t.Fatalf("after IPv4 End-of-RIB: %d %d %d", h.origin("198.18.1.1"), h.origin("198.18.0.1"), h.origin("2001:db8:1::1"))
	}
	h2.feed(eor6)
	if h.origin("2001:db8:1::1") != 0 {
		t.Fatal("IPv6 stale route survived its End-of-RIB")
	}
}

func TestSkippedInput(t *testing.T) {
	h := newHarness(t)
	h.feed(initiationMsg(t, "r"), peerUpMsg(t, peerA, 65001, peerUpOpts{}))
	hdr := peerHeader(0, 0, peerA, 65001)
	good := announceMsg(t, peerA, 65001, 0, route{announce: []string{"198.18.7.0/24"}, path: []uint32{65001, 64507}})

	vpn := bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65001})}),
		vpnReach("198.18.3.0/24", "192.0.2.1"),
	}, nil)

	// An UPDATE whose attribute length runs past the message.
	badAttr, _ := updateMsg(t, route{announce: []string{"198.18.4.0/24"}, path: []uint32{65001}}).Serialize()
	binary.BigEndian.PutUint16(badAttr[19+2:], 0x0fff)

	// An AS_PATH segment with a bad type: treat-as-withdraw.
	badPath, _ := updateMsg(t, route{announce: []string{"198.18.7.0/24"}, path: []uint32{65001}}).Serialize()
	for i := 19 + 4; i < len(badPath)-3; i++ {
		if badPath[i+1] == attrASPath {
			badPath[i+3] = 9 // segment type
			break
		}
	}

	unknownType := []byte{3, 0, 0, 0, 10, 42, 1, 2, 3, 4}
	shortRM := []byte{3, 0, 0, 0, 8, typeRouteMonitoring, 0, 0}
	badPeerUp := peerUpMsg(t, peerB, 65002, peerUpOpts{})
	badPeerUp = badPeerUp[:len(badPeerUp)-10]
	binary.BigEndian.PutUint32(badPeerUp[1:], uint32(len(badPeerUp)))

	cases := []struct {
		name   string
		msg    []byte
		reason int
	}{
		{"VPNv4 route", rmMsg(t, hdr, vpn, false), skipFamily},
		{"EVPN-free End-of-RIB of another family", rmMsg(t, hdr, bgp.NewEndOfRib(bgp.RF_IPv4_VPN), false), skipFamily},
		{"attribute length overrun", rmRaw(t, hdr, badAttr), skipMalformed},
		{"route monitoring without body", shortRM, skipMalformed},
		{"cut Peer Up", badPeerUp, skipMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := h.st.c.skipped[c.reason].Load()
			if err := h.feed(c.msg, good); err != nil {
				t.Fatal(err)
			}
			if h.st.c.skipped[c.reason].Load() != before+1 {
				t.Errorf("skipped[%s] = %d, want %d", skipNames[c.reason], h.st.c.skipped[c.reason].Load(), before+1)
			}
			if h.origin("198.18.7.1") != 64507 {
				t.Error("session broken after skipped input")
			}
		})
	}
	if h.origin("198.18.3.1") != 0 || h.origin("198.18.4.1") != 0 {
		t.Error("skipped routes were installed")
	}

	// A message type from a later RFC is counted and passed over.
	errs := h.st.c.errors.Load()
	if err := h.feed(unknownType, good); err != nil || h.st.c.errors.Load() != errs || h.st.c.messages[numTypes-1].Load() != 1 {
		t.Errorf("unknown message type: %v, errors %d -> %d", err, errs, h.st.c.errors.Load())
	}

	// A malformed AS_PATH withdraws the prefixes of the UPDATE.
	h.feed(rmRaw(t, hdr, badPath))
	if h.origin("198.18.7.1") != 0 {
		t.Error("malformed AS_PATH did not withdraw the route")
	}
}

func TestParseHeaderHelpers(t *testing.T) {
	// peerKey of an IPv6 and an IPv4 peer header.
	for _, a := range []string{peerA, peer6} {
		h := peerHeader(0, 0, a, 1)
		raw, _ := h.Serialize()
		var back bmp.BMPPeerHeader
		back.DecodeFromBytes(raw)
		k, ok := peerKey(&back)
		if !ok || k.Addr != netip.MustParseAddr(a) {
			t.Errorf("peerKey(%s) = %v %v", a, k, ok)
		}
	}
}
