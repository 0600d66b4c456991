// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/packet/bmp"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

// Builders of BMP messages, with gobgp's serializers. Addresses are
// from documentation ranges only.

const (
	peerA = "192.0.2.1"
	peerB = "192.0.2.2"
	peer6 = "2001:db8:ffff::1"
)

func mustSerialize(t testing.TB, m *bmp.BMPMessage, opts ...*bgp.MarshallingOption) []byte {
	t.Helper()
	b, err := m.Serialize(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func initiationMsg(t testing.TB, name string) []byte {
	return mustSerialize(t, bmp.NewBMPInitiation([]bmp.BMPInfoTLVInterface{
		bmp.NewBMPInfoTLVString(bmp.BMP_INIT_TLV_TYPE_SYS_DESCR, "test router"),
		bmp.NewBMPInfoTLVString(bmp.BMP_INIT_TLV_TYPE_SYS_NAME, name),
	}))
}

func terminationMsg(t testing.TB) []byte {
	return mustSerialize(t, bmp.NewBMPTermination([]bmp.BMPTermTLVInterface{
		bmp.NewBMPTermTLV16(bmp.BMP_TERM_TLV_TYPE_REASON, bmp.BMP_TERM_REASON_ADMIN),
		bmp.NewBMPTermTLVString(bmp.BMP_TERM_TLV_TYPE_STRING, "maintenance"),
	}))
}

func peerHeader(peerType, flags uint8, peer string, asn uint32) bmp.BMPPeerHeader {
	return *bmp.NewBMPPeerHeader(peerType, flags, 0, netip.MustParseAddr(peer), asn, netip.MustParseAddr("192.0.2.254"), 0)
}

// must returns v and panics on err: gobgp's constructors check their
// arguments, and the tests' arguments are constants that pass.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// openMsg builds an OPEN with 4-byte ASN support (unless as2) and the
// given ADD-PATH modes.
func openMsg(asn uint32, as2 bool, addPath map[bgp.Family]bgp.BGPAddPathMode) *bgp.BGPMessage {
	caps := []bgp.ParameterCapabilityInterface{
		bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC),
		bgp.NewCapMultiProtocol(bgp.RF_IPv6_UC),
	}
	myAS := uint16(asn)
	if asn > 0xffff {
		myAS = 23456
	}
	if !as2 {
		caps = append(caps, bgp.NewCapFourOctetASNumber(asn))
	}
	var tuples []*bgp.CapAddPathTuple
	for rf, mode := range addPath {
		tuples = append(tuples, bgp.NewCapAddPathTuple(rf, mode))
	}
	if len(tuples) > 0 {
		caps = append(caps, bgp.NewCapAddPath(tuples))
	}
	return must(bgp.NewBGPOpenMessage(myAS, 90, netip.MustParseAddr("192.0.2.254"), []bgp.OptionParameterInterface{bgp.NewOptionParameterCapability(caps)}))
}

type peerUpOpts struct {
	sentAddPath, recvAddPath map[bgp.Family]bgp.BGPAddPathMode
	as2                      bool
}

func peerUpMsg(t testing.TB, peer string, asn uint32, o peerUpOpts) []byte {
	local := netip.MustParseAddr("192.0.2.254")
	if strings.Contains(peer, ":") {
		local = netip.MustParseAddr("2001:db8:ffff::fe")
	}
	return mustSerialize(t, bmp.NewBMPPeerUpNotification(peerHeader(0, 0, peer, asn), local, 179, 40000,
		openMsg(65000, o.as2, o.sentAddPath), openMsg(asn, o.as2, o.recvAddPath)))
}

func peerDownMsg(t testing.TB, peer string, asn uint32) []byte {
	return mustSerialize(t, bmp.NewBMPPeerDownNotification(peerHeader(0, 0, peer, asn), bmp.BMP_PEER_DOWN_REASON_REMOTE_NO_NOTIFICATION, nil, nil))
}

func statsMsg(t testing.TB, peer string, asn uint32) []byte {
	return mustSerialize(t, bmp.NewBMPStatisticsReport(peerHeader(0, 0, peer, asn), []bmp.BMPStatsTLVInterface{
		bmp.NewBMPStatsTLV32(bmp.BMP_STAT_TYPE_REJECTED, 3),
		bmp.NewBMPStatsTLV64(bmp.BMP_STAT_TYPE_ADJ_RIB_IN, 1200),
	}))
}

// route describes an UPDATE for rmMsg.
type route struct {
	announce  []string // prefixes, either family
	withdraw  []string
	path      []uint32 // one AS_SEQUENCE, 4-byte
	pathIDs   []uint32 // per announced/withdrawn prefix, with ADD-PATH
	extraAttr []bgp.PathAttributeInterface
}

// prefix returns the NLRI of s with path id id, and whether it is IPv4.
func prefix(s string, id uint32) (bgp.PathNLRI, bool) {
	p := netip.MustParsePrefix(s)
	return bgp.PathNLRI{NLRI: must(bgp.NewIPAddrPrefix(p)), ID: id}, p.Addr().Is4()
}

func updateMsg(t testing.TB, r route) *bgp.BGPMessage {
	var nlri4, wd4, nlri6, wd6 []bgp.PathNLRI
	id := func(i int) uint32 {
		if i < len(r.pathIDs) {
			return r.pathIDs[i]
		}
		return 0
	}
	for i, s := range r.announce {
		if p, v4 := prefix(s, id(i)); v4 {
			nlri4 = append(nlri4, p)
		} else {
			nlri6 = append(nlri6, p)
		}
	}
	for i, s := range r.withdraw {
		if p, v4 := prefix(s, id(i)); v4 {
			wd4 = append(wd4, p)
		} else {
			wd6 = append(wd6, p)
		}
	}
	var attrs []bgp.PathAttributeInterface
	if len(r.announce) > 0 {
		var segs []bgp.AsPathParamInterface
		if len(r.path) > 0 {
			segs = append(segs, bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, r.path))
		}
		attrs = append(attrs, bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeAsPath(segs))
		if len(nlri4) > 0 {
			attrs = append(attrs, must(bgp.NewPathAttributeNextHop(netip.MustParseAddr("192.0.2.1"))))
		}
		if len(nlri6) > 0 {
			attrs = append(attrs, must(bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, nlri6, netip.MustParseAddr("2001:db8::1"))))
		}
	}
	if len(wd6) > 0 {
		attrs = append(attrs, must(bgp.NewPathAttributeMpUnreachNLRI(bgp.RF_IPv6_UC, wd6)))
	}
	attrs = append(attrs, r.extraAttr...)
	return bgp.NewBGPUpdateMessage(wd4, attrs, nlri4)
}

// rmMsg wraps a BGP message in Route Monitoring; addPath serializes
// path ids for both families.
func rmMsg(t testing.TB, h bmp.BMPPeerHeader, m *bgp.BGPMessage, addPath bool) []byte {
	var opts []*bgp.MarshallingOption
	if addPath {
		opts = append(opts, &bgp.MarshallingOption{AddPath: map[bgp.Family]bgp.BGPAddPathMode{
			bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_SEND, bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_SEND,
		}})
	}
	payload, err := m.Serialize(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return rmRaw(t, h, payload)
}

// rmRaw wraps raw BGP message bytes in Route Monitoring.
func rmRaw(t testing.TB, h bmp.BMPPeerHeader, payload []byte) []byte {
	m := bmp.NewBMPRouteMonitoring(h, nil)
	m.Body.(*bmp.BMPRouteMonitoring).BGPUpdatePayload = payload
	return mustSerialize(t, m)
}

func announceMsg(t testing.TB, peer string, asn uint32, flags uint8, r route) []byte {
	return rmMsg(t, peerHeader(0, flags, peer, asn), updateMsg(t, r), false)
}

// harness feeds messages through one session's decoder and applier,
// without sockets.
type harness struct {
	t   testing.TB
	rib *rib.RIB
	st  *Station
	ss  *session
	dec *decoder
}

func newHarness(t testing.TB) *harness {
	r := rib.New(rib.Options{Keep: time.Minute})
	t.Cleanup(r.Close)
	st := &Station{rib: r, log: slog.New(slog.DiscardHandler), maxMessage: DefaultMaxMessageSize}
	h := &harness{t: t, rib: r, st: st, dec: newDecoder(&st.c)}
	h.ss = &session{st: st, remote: netip.MustParseAddrPort("127.0.0.1:40000")}
	return h
}

// feed decodes and applies msgs one at a time; it returns the
// Termination error, if any.
func (h *harness) feed(msgs ...[]byte) error {
	for _, m := range msgs {
		ops, err := h.dec.decode(m, nil)
		h.ss.apply(ops, err != nil)
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) end() { h.ss.apply(nil, true) }

func (h *harness) origin(addr string) uint32 { return h.rib.Origin(netip.MustParseAddr(addr)) }

func (h *harness) route(addr string) (rib.RouteInfo, bool) {
	return h.rib.LookupRoute(netip.MustParseAddr(addr))
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nlri returns the NLRI of prefix s without a path id.
func nlri(s string) bgp.PathNLRI {
	p, _ := prefix(s, 0)
	return p
}

// vpnReach returns an MP_REACH_NLRI attribute of one IPv4 L3VPN route,
// a family the station does not take.
func vpnReach(pfx, nextHop string) *bgp.PathAttributeMpReachNLRI {
	vpn := must(bgp.NewLabeledVPNIPAddrPrefix(netip.MustParsePrefix(pfx), *bgp.NewMPLSLabelStack(100), bgp.NewRouteDistinguisherTwoOctetAS(65001, 1)))
	return must(bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv4_VPN, []bgp.PathNLRI{{NLRI: vpn}}, netip.MustParseAddr(nextHop)))
}
