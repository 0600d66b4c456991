// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/packet/bmp"
)

// FuzzStream feeds a byte stream through the framer, the decoder and
// the RIB, as a router's session would. Nothing may panic and the RIB's
// route accounting must stay consistent.
func FuzzStream(f *testing.F) {
	for _, s := range streamSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t)
		fr := newFramer(bytes.NewReader(data), 1<<16)
		for {
			m, err := fr.next()
			if err != nil || h.feed(m) != nil {
				break
			}
		}
		checkRIB(t, h)
		h.end()
		checkRIB(t, h)
	})
}

// FuzzUpdate wraps a BGP message in Route Monitoring for a peer whose
// Peer Up negotiated ADD-PATH (flags bit 0); flags also carry the BMP
// per-peer flags (L, A, O), bit 7 selects the Loc-RIB peer type and
// bit 2 a VRF (fuzzHeader). A Peer Down afterwards must leave no route
// of that peer; a VRF's routes must stay out of global lookups.
func FuzzUpdate(f *testing.F) {
	for _, s := range updateSeeds(f) {
		f.Add(s.flags, s.msg)
	}
	f.Fuzz(func(t *testing.T, flags byte, msg []byte) {
		h := newHarness(t)
		var o peerUpOpts
		if flags&1 != 0 {
			both := map[bgp.Family]bgp.BGPAddPathMode{bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_BOTH, bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_BOTH}
			o.sentAddPath, o.recvAddPath = both, both
		}
		h.feed(initiationMsg(t, "fuzz"), peerUpMsg(t, peerA, 65001, o))
		hdr := fuzzHeader(flags)
		if err := h.feed(rmRaw(t, hdr, msg)); err != nil {
			t.Fatal(err)
		}
		checkRIB(t, h)
		if hdr.PeerType == 1 || hdr.PeerDistinguisher != 0 {
			for _, r := range h.rib.Summary().Routers {
				for _, p := range r.Peers {
					if p.Peer.Global() && p.Routes4+p.Routes6 != 0 {
						t.Fatalf("VRF update gave global peer %+v routes", p)
					}
				}
			}
			for _, v := range h.rib.Summary().VRFs {
				if v.VRF.Distinguisher != hdr.PeerDistinguisher {
					t.Fatalf("VRF %+v, want distinguisher %#x", v.VRF, hdr.PeerDistinguisher)
				}
			}
		}
		h.feed(peerDownMsg(t, peerA, 65001))
		if c := h.rib.Counts(); hdr.PeerType == 0 && (c.Routes4 != 0 || c.Routes6 != 0 || c.Prefixes4 != 0 || c.Prefixes6 != 0) {
			t.Fatalf("routes left after Peer Down: %+v", c)
		}
	})
}

// fuzzRD is the distinguisher of fuzzed VRF peers: 65000:1.
const fuzzRD = 0x0000_fde8_0000_0001

// fuzzHeader is the per-peer header the update fuzzers use: the BMP
// flags L, A and O from flags; bit 7 the Loc-RIB peer type, bit 2 a VRF
// (an RD-instance peer, or with bit 7 a VRF's Loc-RIB) with fuzzRD.
func fuzzHeader(flags byte) bmp.BMPPeerHeader {
	peerType := uint8(0)
	if flags&0x80 != 0 {
		peerType = peerTypeLocRIB
	}
	var rd uint64
	if flags&0x04 != 0 {
		rd = fuzzRD
		if peerType == 0 {
			peerType = bmp.BMP_PEER_TYPE_L3VPN
		}
	}
	return *bmp.NewBMPPeerHeader(peerType, flags&(flagPostPolicy|flagTwoByteAS|flagAdjRIBOut), rd, netip.MustParseAddr(peerA), 65001, netip.MustParseAddr("192.0.2.254"), 0)
}

// checkRIB checks that counts are sane and every counted route can be
// looked up.
func checkRIB(t *testing.T, h *harness) {
	t.Helper()
	c := h.rib.Counts()
	if c.Routes4 < 0 || c.Routes6 < 0 || c.Prefixes4 < 0 || c.Prefixes6 < 0 || c.Peers < 0 ||
		c.Prefixes4 > c.Routes4 || c.Prefixes6 > c.Routes6 {
		t.Fatalf("inconsistent counts %+v", c)
	}
	n := 0
	for _, r := range h.rib.Summary().Routers {
		for _, p := range r.Peers {
			if p.Routes4 < 0 || p.Routes6 < 0 {
				t.Fatalf("negative peer counts %+v", p)
			}
			n += p.Routes4 + p.Routes6
		}
	}
	if n != c.Routes4+c.Routes6 {
		t.Fatalf("peers hold %d routes, totals say %d", n, c.Routes4+c.Routes6)
	}
}

// streamSeeds are kept small: the fuzzing engine minimizes every new
// input it finds, and minimizing a whole recorded session (kilobytes,
// with gobgp's coverage counters) takes it minutes.
func streamSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	// The recorded sessions in pieces: Initiation and the first Peer Up,
	// then four more messages.
	for _, fx := range fixtures {
		b, err := os.ReadFile(filepath.Join("testdata", fx.file))
		if err != nil {
			t.Fatal(err)
		}
		var head, rest [][]byte
		fr := newFramer(bytes.NewReader(b), DefaultMaxMessageSize)
		for {
			m, err := fr.next()
			if err != nil {
				break
			}
			if len(head) < 2 && (m[5] == typeInitiation || m[5] == typePeerUp) {
				head = append(head, m)
			} else {
				rest = append(rest, m)
			}
		}
		for i := 0; i < len(rest); i += 4 {
			seeds = append(seeds, slices.Concat(slices.Concat(head...), slices.Concat(rest[i:min(i+4, len(rest))]...)))
		}
	}
	both := map[bgp.Family]bgp.BGPAddPathMode{bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_BOTH}
	seeds = append(seeds,
		slices.Concat(
			initiationMsg(t, "r"),
			peerUpMsg(t, peerA, 65001, peerUpOpts{sentAddPath: both, recvAddPath: both}),
			rmMsg(t, peerHeader(0, 0, peerA, 65001), updateMsg(t, route{announce: []string{"198.18.0.0/24", "2001:db8::/32"}, pathIDs: []uint32{1, 2}, path: []uint32{65001, 64500}}), true),
			rmMsg(t, peerHeader(0, flagTwoByteAS, peerA, 65001), as2Update([]uint16{65001, 23456}, []uint32{4200000001}), true),
			statsMsg(t, peerA, 65001),
			rmMsg(t, peerHeader(0, 0, peerA, 65001), bgp.NewEndOfRib(bgp.RF_IPv4_UC), true),
			peerDownMsg(t, peerA, 65001),
			terminationMsg(t),
		),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		[]byte{3, 0, 0, 0, 6, 4},
		[]byte{3, 0, 0, 0, 100, 0, 1},
		// A PE: an RD-instance peer, a VRF Loc-RIB, a default route.
		slices.Concat(
			initiationMsg(t, "pe"),
			mustSerialize(t, bmp.NewBMPPeerUpNotification(*bmp.NewBMPPeerHeader(bmp.BMP_PEER_TYPE_L3VPN, 0, fuzzRD, netip.MustParseAddr(peerB), 65002, netip.MustParseAddr("192.0.2.254"), 0),
				netip.MustParseAddr("192.0.2.254"), 179, 40000, openMsg(65000, false, nil), openMsg(65002, false, nil))),
			rmMsg(t, *bmp.NewBMPPeerHeader(bmp.BMP_PEER_TYPE_L3VPN, 0, fuzzRD, netip.MustParseAddr(peerB), 65002, netip.MustParseAddr("192.0.2.254"), 0),
				updateMsg(t, route{announce: []string{"198.18.8.0/24"}, path: []uint32{65002}}), false),
			rmMsg(t, *bmp.NewBMPPeerHeader(peerTypeLocRIB, 0, 0x0001_c000_0201_0005, netip.MustParseAddr("0.0.0.0"), 65000, netip.MustParseAddr("192.0.2.254"), 0),
				updateMsg(t, route{announce: []string{"198.18.9.0/24"}, path: []uint32{64700}}), false),
			rmMsg(t, peerHeader(0, 0, peerA, 65001), updateMsg(t, route{announce: []string{"0.0.0.0/0", "::/0"}, path: []uint32{65001}}), false),
			mustSerialize(t, bmp.NewBMPPeerDownNotification(*bmp.NewBMPPeerHeader(bmp.BMP_PEER_TYPE_L3VPN, 0, fuzzRD, netip.MustParseAddr(peerB), 65002, netip.MustParseAddr("192.0.2.254"), 0),
				bmp.BMP_PEER_DOWN_REASON_REMOTE_NO_NOTIFICATION, nil, nil)),
		),
	)
	return seeds
}

type updateSeed struct {
	flags byte
	msg   []byte
}

func updateSeeds(t testing.TB) []updateSeed {
	var seeds []updateSeed
	// The UPDATEs of the recorded sessions.
	for _, fx := range fixtures {
		b, err := os.ReadFile(filepath.Join("testdata", fx.file))
		if err != nil {
			t.Fatal(err)
		}
		fr := newFramer(bytes.NewReader(b), DefaultMaxMessageSize)
		for {
			m, err := fr.next()
			if err != nil {
				break
			}
			if m[5] == typeRouteMonitoring && len(m) > 48 {
				seeds = append(seeds, updateSeed{m[7] & (flagPostPolicy | flagTwoByteAS), m[48:]})
			}
		}
	}
	ser := func(m *bgp.BGPMessage, addPath bool) []byte {
		var opts []*bgp.MarshallingOption
		if addPath {
			opts = append(opts, &bgp.MarshallingOption{AddPath: map[bgp.Family]bgp.BGPAddPathMode{
				bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_SEND, bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_SEND,
			}})
		}
		b, err := m.Serialize(opts...)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	setPath := bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{
			bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_CONFED_SEQ, []uint32{65100}),
			bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65001}),
			bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SET, []uint32{64501, 64500}),
		}),
		must(bgp.NewPathAttributeNextHop(netip.MustParseAddr("192.0.2.1"))),
	}, []bgp.PathNLRI{nlri("198.18.0.0/24")})
	vpn := bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(0),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65001})}),
		vpnReach("198.18.3.0/24", "192.0.2.1"),
	}, nil)
	addPathRoutes := updateMsg(t, route{announce: []string{"198.18.0.0/24", "198.18.1.0/24", "2001:db8::/32"}, pathIDs: []uint32{1, 2, 3}, path: []uint32{65001, 64500}})
	seeds = append(seeds,
		updateSeed{1, ser(addPathRoutes, true)},
		updateSeed{0, ser(updateMsg(t, route{withdraw: []string{"198.18.0.0/24", "2001:db8::/32"}}), false)},
		updateSeed{flagTwoByteAS, ser(as2Update([]uint16{65001, 23456, 23456}, []uint32{4200000002, 4200000001}), false)},
		updateSeed{flagPostPolicy, ser(setPath, false)},
		updateSeed{0x80, ser(updateMsg(t, route{announce: []string{"198.18.9.0/24"}}), false)},
		updateSeed{0, ser(vpn, false)},
		updateSeed{0, ser(bgp.NewEndOfRib(bgp.RF_IPv6_UC), false)},
		// VRFs: an RD-instance peer, a VRF Loc-RIB; a default route.
		updateSeed{0x04, ser(updateMsg(t, route{announce: []string{"198.18.8.0/24", "2001:db8:8::/48"}, path: []uint32{65001}}), false)},
		updateSeed{0x84, ser(updateMsg(t, route{announce: []string{"198.18.9.0/24"}, path: []uint32{64700}}), false)},
		updateSeed{0x80, ser(updateMsg(t, route{announce: []string{"0.0.0.0/0", "::/0"}, path: []uint32{64500}}), false)},
	)
	return seeds
}

// TestWriteFuzzSeeds rewrites the committed seed corpora from the
// builders above and the recorded fixtures: RFM_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("RFM_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set RFM_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	write := func(target string, i int, body string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte("go test fuzz v1\n"+body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range streamSeeds(t) {
		write("FuzzStream", i, fmt.Sprintf("[]byte(%q)\n", s))
	}
	for i, s := range updateSeeds(t) {
		for _, target := range []string{"FuzzUpdate", "FuzzFastPath"} {
			write(target, i, fmt.Sprintf("byte(%q)\n[]byte(%q)\n", s.flags, s.msg))
		}
	}
}
