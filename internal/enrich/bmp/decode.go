// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/packet/bmp"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

// BMP message types (RFC 7854 section 4.1).
const (
	typeRouteMonitoring = bmp.BMP_MSG_ROUTE_MONITORING
	typeStatistics      = bmp.BMP_MSG_STATISTICS_REPORT
	typePeerDown        = bmp.BMP_MSG_PEER_DOWN_NOTIFICATION
	typePeerUp          = bmp.BMP_MSG_PEER_UP_NOTIFICATION
	typeInitiation      = bmp.BMP_MSG_INITIATION
	typeTermination     = bmp.BMP_MSG_TERMINATION
	typeRouteMirroring  = bmp.BMP_MSG_ROUTE_MIRRORING
	numTypes            = typeRouteMirroring + 2 // the last slot counts unknown types
)

var typeNames = [numTypes]string{
	typeRouteMonitoring: "route_monitoring",
	typeStatistics:      "statistics_report",
	typePeerDown:        "peer_down",
	typePeerUp:          "peer_up",
	typeInitiation:      "initiation",
	typeTermination:     "termination",
	typeRouteMirroring:  "route_mirroring",
	numTypes - 1:        "unknown",
}

// Per-peer header flags (RFC 7854 4.2, RFC 8671, RFC 9069).
const (
	flagPostPolicy = 0x40 // L: post-policy Adj-RIB-In
	flagTwoByteAS  = 0x20 // A: legacy 2-byte AS_PATH
	flagAdjRIBOut  = 0x10 // O: Adj-RIB-Out (RFC 8671), not monitored here
	peerTypeLocRIB = bmp.BMP_PEER_TYPE_LOCAL_RIB
)

// Reasons a message or part of one is skipped.
const (
	skipFamily    = iota // address family other than IPv4/IPv6 unicast
	skipAdjRIBOut        // Adj-RIB-Out view
	skipMalformed        // cannot be decoded
	numSkips
)

var skipNames = [numSkips]string{"unsupported_family", "adj_rib_out", "malformed"}

type opKind uint8

const (
	opConnect opKind = iota
	opPeerUp
	opPeerDown
	opAnnounce
	opWithdraw
	opEndOfRIB
)

// op is one change to apply to the RIB. Decoding produces ops outside
// the RIB's writer lock; a batch of them is applied in one transaction.
type op struct {
	kind   opKind
	peer   *peerState
	view   rib.View
	prefix netip.Prefix
	pathID uint32
	path   rib.Path
	ipv6   bool // End-of-RIB family
	// blackhole: the announced route carries BLACKHOLE (65535:666).
	blackhole bool
	name      string // Initiation sysName
	descr     string // Initiation sysDescr
}

// peerState is what a session knows about one monitored peer.
type peerState struct {
	key      rib.PeerKey
	asn      uint32
	bgpID    netip.Addr
	sentOpen *bgp.BGPMessage // OPEN the router sent to the peer
	recvOpen *bgp.BGPMessage // OPEN the router received from the peer
	as4      bool            // both sides announced 4-byte ASNs
	opts     []*bgp.MarshallingOption
	addPath  [2]bool   // updates carry path ids: IPv4, IPv6 unicast
	peer     *rib.Peer // set when the Peer Up op is applied
}

// decoder turns one session's BMP messages into RIB ops. Not safe for
// concurrent use.
type decoder struct {
	counters  *counters
	peers     map[rib.PeerKey]*peerState
	seen      bool // a message was decoded
	gobgpOnly bool // no fast path: every message through gobgp (benchmarks, differential tests)
	// The message being parsed has an AS_PATH to read with 2-byte
	// ASNs (see twoByteASPath); options passes it to the parser.
	twoByteAS bool
	// Reused buffers for AS path and attribute decoding.
	segs, segs4 []rib.Segment
	asns        []uint32
	comms       []uint32
	large       []rib.LargeCommunity
}

func newDecoder(c *counters) *decoder {
	return &decoder{counters: c, peers: make(map[rib.PeerKey]*peerState)}
}

// errTerminated ends a session after a Termination message.
var errTerminated = errors.New("router sent Termination")

// decode appends the ops of one framed BMP message to ops. A malformed
// message is counted and skipped; only a Termination ends the session
// (with errTerminated, wrapped with its reason).
func (d *decoder) decode(msg []byte, ops []op) (out []op, err error) {
	defer func() {
		// The parser library is not hardened against every input.
		if r := recover(); r != nil {
			d.counters.skip(skipMalformed)
			out, err = ops, nil
		}
	}()
	typ := msg[5]
	d.counters.message(typ)
	if typ >= numTypes-1 {
		// A type from a later RFC: its length is known, so it is
		// counted (type "unknown") and passed over (RFC 7854 4.1).
		return ops, nil
	}
	// Initiation must come first; a router that sends none, or sends
	// it late, is known by its address alone (the applier connects it
	// on its first op).
	first := !d.seen
	d.seen = true
	if typ == typeRouteMonitoring && !d.gobgpOnly {
		if out, ok := d.fastRouteMonitoring(msg, ops); ok {
			return out, nil
		}
	}
	d.twoByteAS = typ == typeRouteMonitoring && twoByteASPath(msg)
	m, perr := bmp.ParseBMPMessageWithOptions(msg, d.options)
	if perr != nil && (m == nil || typ != typeRouteMonitoring) {
		d.counters.skip(skipMalformed)
		return ops, nil
	}
	switch body := m.Body.(type) {
	case *bmp.BMPInitiation:
		var c op
		c.kind = opConnect
		for _, tlv := range body.Info {
			if s, ok := tlv.(*bmp.BMPInfoTLVString); ok {
				switch s.Type {
				case bmp.BMP_INIT_TLV_TYPE_SYS_NAME:
					c.name = s.Value
				case bmp.BMP_INIT_TLV_TYPE_SYS_DESCR:
					c.descr = s.Value
				}
			}
		}
		if first {
			ops = append(ops, c)
		}
	case *bmp.BMPTermination:
		return ops, terminationError(body)
	case *bmp.BMPPeerUpNotification:
		ops = d.peerUp(m.PeerHeader, body, ops)
	case *bmp.BMPPeerDownNotification:
		key, ok := peerKey(&m.PeerHeader)
		if !ok {
			d.counters.skip(skipMalformed)
			break
		}
		if ps := d.peers[key]; ps != nil {
			delete(d.peers, key)
			ops = append(ops, op{kind: opPeerDown, peer: ps})
		}
	case *bmp.BMPRouteMonitoring:
		ops = d.routeMonitoring(&m.PeerHeader, body, msg, perr, ops)
	}
	// Statistics reports and route mirroring are only counted.
	return ops, nil
}

func terminationError(t *bmp.BMPTermination) error {
	reason := "unspecified"
	var text string
	for _, tlv := range t.Info {
		switch v := tlv.(type) {
		case *bmp.BMPTermTLV16:
			switch v.Value {
			case bmp.BMP_TERM_REASON_ADMIN:
				reason = "administratively closed"
			case bmp.BMP_TERM_REASON_OUT_OF_RESOURCES:
				reason = "out of resources"
			case bmp.BMP_TERM_REASON_REDUNDANT_CONNECTION:
				reason = "redundant connection"
			case bmp.BMP_TERM_REASON_PERMANENTLY_ADMIN:
				reason = "permanently administratively closed"
			}
		case *bmp.BMPTermTLVString:
			text = v.Value
		}
	}
	if text != "" {
		reason += ": " + text
	}
	return fmt.Errorf("%w (%s)", errTerminated, reason)
}

// twoByteASOption makes the parser read AS_PATH with 2-byte ASNs.
var twoByteASOption = &bgp.MarshallingOption{Use2ByteAS: true}

// options gives the parser the ADD-PATH settings of the peer a message
// is about, and the AS_PATH width of the message.
func (d *decoder) options(h bmp.BMPPeerHeader) []*bgp.MarshallingOption {
	var opts []*bgp.MarshallingOption
	if key, ok := peerKey(&h); ok {
		if ps := d.peers[key]; ps != nil {
			opts = ps.opts
		}
	}
	if d.twoByteAS {
		opts = append([]*bgp.MarshallingOption{twoByteASOption}, opts...)
	}
	return opts
}

// twoByteASPath reports whether the AS_PATH of a Route Monitoring
// message is to be read with 2-byte ASNs: the A flag says so (RFC 7854
// 4.2) unless the bytes parse only with the other width, as asPath
// decides. The parser reads the width it is told and would treat a
// route whose router sets the flag inconsistently as withdrawn.
func twoByteASPath(msg []byte) bool {
	const hdr = bmp.BMP_HEADER_SIZE + bmp.BMP_PEER_HEADER_SIZE
	if len(msg) < hdr {
		return false
	}
	peerType, flags := msg[bmp.BMP_HEADER_SIZE], msg[bmp.BMP_HEADER_SIZE+1]
	as4 := peerType == peerTypeLocRIB || flags&flagTwoByteAS == 0
	var asPath []byte
	rawAttrs(msg[hdr:], func(typ byte, val []byte) {
		if typ == attrASPath {
			asPath = val
		}
	})
	if !gobgpASPathOK(asPath, as4) && gobgpASPathOK(asPath, !as4) {
		as4 = !as4
	}
	return !as4
}

func peerKey(h *bmp.BMPPeerHeader) (rib.PeerKey, bool) {
	a := h.PeerAddress
	if h.PeerType == peerTypeLocRIB {
		// Zero-filled (RFC 9069): the parser leaves it unset, and the
		// flag that would make it IPv6 is the "filtered" flag for this
		// peer type.
		a = netip.IPv4Unspecified()
	}
	if !a.IsValid() {
		return rib.PeerKey{}, false
	}
	// An IPv4 peer announced with the V flag is the same peer as
	// without it.
	return rib.PeerKey{Type: h.PeerType, Distinguisher: h.PeerDistinguisher, Addr: a.Unmap()}, true
}

func (d *decoder) peerUp(h bmp.BMPPeerHeader, body *bmp.BMPPeerUpNotification, ops []op) []op {
	key, ok := peerKey(&h)
	if !ok {
		d.counters.skip(skipMalformed)
		return ops
	}
	ps := &peerState{
		key:      key,
		asn:      h.PeerAS,
		bgpID:    h.PeerBGPID,
		sentOpen: body.SentOpenMsg,
		recvOpen: body.ReceivedOpenMsg,
	}
	sent, recv := capabilities(body.SentOpenMsg), capabilities(body.ReceivedOpenMsg)
	ps.as4 = sent.as4 && recv.as4
	// Updates from the peer carry path ids for a family when the peer
	// may send them and the router asked to receive them (RFC 7911).
	addPath := map[bgp.Family]bgp.BGPAddPathMode{}
	for _, rf := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		if recv.addPath[rf]&bgp.BGP_ADD_PATH_SEND != 0 && sent.addPath[rf]&bgp.BGP_ADD_PATH_RECEIVE != 0 {
			addPath[rf] = bgp.BGP_ADD_PATH_RECEIVE
			ps.addPath[boolIndex(rf == bgp.RF_IPv6_UC)] = true
		}
	}
	if len(addPath) > 0 {
		ps.opts = []*bgp.MarshallingOption{{AddPath: addPath}}
	}
	d.peers[key] = ps
	return append(ops, op{kind: opPeerUp, peer: ps})
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

type caps struct {
	as4     bool
	addPath map[bgp.Family]bgp.BGPAddPathMode
}

func capabilities(m *bgp.BGPMessage) caps {
	var c caps
	if m == nil {
		return c
	}
	open, ok := m.Body.(*bgp.BGPOpen)
	if !ok {
		return c
	}
	for _, p := range open.OptParams {
		pc, ok := p.(*bgp.OptionParameterCapability)
		if !ok {
			continue
		}
		for _, cp := range pc.Capability {
			switch v := cp.(type) {
			case *bgp.CapFourOctetASNumber:
				c.as4 = true
			case *bgp.CapAddPath:
				if c.addPath == nil {
					c.addPath = map[bgp.Family]bgp.BGPAddPathMode{}
				}
				for _, t := range v.Tuples {
					c.addPath[t.Family] |= t.Mode
				}
			}
		}
	}
	return c
}

func (d *decoder) routeMonitoring(h *bmp.BMPPeerHeader, body *bmp.BMPRouteMonitoring, msg []byte, perr error, ops []op) []op {
	key, ok := peerKey(h)
	if !ok {
		d.counters.skip(skipMalformed)
		return ops
	}
	view := rib.PrePolicy
	switch {
	case h.PeerType == peerTypeLocRIB:
		view = rib.LocRIB
	case h.Flags&flagAdjRIBOut != 0:
		d.counters.skip(skipAdjRIBOut)
		return ops
	case h.Flags&flagPostPolicy != 0:
		view = rib.PostPolicy
	}
	ps := d.peers[key]
	if ps == nil {
		// Route Monitoring before (or without) Peer Up, as some routers
		// do for their Loc-RIB: register the peer without ADD-PATH.
		ps = &peerState{key: key, asn: h.PeerAS, bgpID: h.PeerBGPID, as4: true}
		d.peers[key] = ps
		ops = append(ops, op{kind: opPeerUp, peer: ps})
	}
	var upd *bgp.BGPUpdate
	if body.BGPUpdate != nil {
		upd, _ = body.BGPUpdate.Body.(*bgp.BGPUpdate)
	}
	if upd == nil {
		d.counters.skip(skipMalformed)
		return ops
	}
	// 4-byte AS_PATH unless the A flag says otherwise (never for Loc-RIB).
	as4 := h.PeerType == peerTypeLocRIB || h.Flags&flagTwoByteAS == 0
	raw := msg[bmp.BMP_HEADER_SIZE+bmp.BMP_PEER_HEADER_SIZE:]
	return d.update(ps, view, as4, upd, raw, perr, ops)
}

// update turns a decoded UPDATE into ops. perr is the parser's error:
// RFC 7606 "treat-as-withdraw" errors withdraw the announced prefixes,
// "attribute discard" ones are ignored, anything else skips the update.
func (d *decoder) update(ps *peerState, view rib.View, as4 bool, upd *bgp.BGPUpdate, raw []byte, perr error, ops []op) []op {
	withdrawAll := false
	if perr != nil {
		var me *bgp.MessageError
		if !errors.As(perr, &me) {
			d.counters.skip(skipMalformed)
			return ops
		}
		switch me.ErrorHandling {
		case bgp.ERROR_HANDLING_ATTRIBUTE_DISCARD:
		case bgp.ERROR_HANDLING_TREAT_AS_WITHDRAW:
			withdrawAll = true
		default:
			if fam, ok := rawFamily(raw); ok && !fam {
				d.counters.skip(skipFamily)
			} else {
				d.counters.skip(skipMalformed)
			}
			return ops
		}
	}
	if eor, rf := upd.IsEndOfRib(); eor {
		switch rf {
		case bgp.RF_IPv4_UC, bgp.RF_IPv6_UC:
			return append(ops, op{kind: opEndOfRIB, peer: ps, view: view, ipv6: rf == bgp.RF_IPv6_UC})
		}
		d.counters.skip(skipFamily)
		return ops
	}
	r := routeOps{d: d, ps: ps, view: view, raw: raw, as4: as4, withdrawAll: withdrawAll, ops: ops}
	// each hands every well-formed prefix of paths to f.
	each := func(paths []bgp.PathNLRI, f func(netip.Prefix, uint32)) {
		for _, p := range paths {
			if pfx, ok := prefixOf(p.NLRI); ok {
				f(pfx, p.ID)
			} else {
				d.counters.skip(skipMalformed)
			}
		}
	}
	each(upd.WithdrawnRoutes, r.withdraw)
	for _, a := range upd.PathAttributes {
		var afi uint16
		var safi uint8
		var paths []bgp.PathNLRI
		var f func(netip.Prefix, uint32)
		switch a := a.(type) {
		case *bgp.PathAttributeMpUnreachNLRI:
			afi, safi, paths, f = a.AFI, a.SAFI, a.Value, r.withdraw
		case *bgp.PathAttributeMpReachNLRI:
			afi, safi, paths, f = a.AFI, a.SAFI, a.Value, r.announce
		default:
			continue
		}
		if !unicast(afi, safi) {
			d.counters.skip(skipFamily)
			continue
		}
		each(paths, f)
	}
	each(upd.NLRI, r.announce)
	return r.ops
}

// routeOps turns the prefixes of one UPDATE into ops. Announcements
// share the UPDATE's AS path, decoded once on first use; if it is
// malformed they all become withdrawals (RFC 7606 treat-as-withdraw).
type routeOps struct {
	d           *decoder
	ps          *peerState
	view        rib.View
	raw         []byte        // the BGP UPDATE message
	as4         bool          // AS numbers in AS_PATH are 4 bytes
	segs        []rib.Segment // the AS path, in the decoder's buffers until the next message
	withAttrs   [2]rib.Path   // the path with the attributes, by family (0 IPv4, 1 IPv6)
	attrsDone   [2]bool
	blackhole   bool // the UPDATE carries BLACKHOLE; read with the path
	pathDone    bool
	withdrawAll bool
	ops         []op
}

func (r *routeOps) announce(p netip.Prefix, id uint32) {
	if !r.withdrawAll && !r.pathDone {
		r.pathDone = true
		var err error
		if r.segs, err = r.d.asPath(r.raw, r.as4); err != nil {
			r.d.counters.skip(skipMalformed)
			r.withdrawAll = true
		}
		r.blackhole = hasBlackhole(r.raw)
	}
	if r.withdrawAll {
		r.withdraw(p, id)
		return
	}
	fam := 0
	if p.Addr().Is6() {
		fam = 1
	}
	if !r.attrsDone[fam] {
		r.attrsDone[fam] = true
		r.withAttrs[fam] = rib.MakePathAttrs(r.d.attrs(r.raw, fam == 1), r.segs...)
	}
	r.ops = append(r.ops, op{kind: opAnnounce, peer: r.ps, view: r.view, prefix: p, pathID: id, path: r.withAttrs[fam], blackhole: r.blackhole})
}

// attrs reads the attributes flow export reports from a raw UPDATE: the
// next hop for prefixes of one family (an IPv4 prefix takes NEXT_HOP,
// else the MP_REACH_NLRI next hop; an IPv6 prefix the MP_REACH_NLRI one,
// its global address when a link-local one follows), and the standard
// and large communities. Malformed attributes are left out: they never
// cost the route.
func (d *decoder) attrs(msg []byte, v6 bool) rib.Attrs {
	var nh, mpNH netip.Addr
	d.comms, d.large = d.comms[:0], d.large[:0]
	_ = rawAttrs(msg, func(typ byte, val []byte) {
		switch typ {
		case attrNextHop:
			if len(val) == 4 {
				nh = netip.AddrFrom4([4]byte(val))
			}
		case attrMPReach:
			if len(val) < 4 {
				return
			}
			n := int(val[3])
			if len(val) < 4+n {
				return
			}
			switch {
			case n == 4:
				mpNH = netip.AddrFrom4([4]byte(val[4:8]))
			case n == 16 || n == 32:
				mpNH = netip.AddrFrom16([16]byte(val[4:20]))
			}
		case attrCommunity:
			for i := 0; i+4 <= len(val); i += 4 {
				d.comms = append(d.comms, binary.BigEndian.Uint32(val[i:]))
			}
		case attrLargeComm:
			for i := 0; i+12 <= len(val); i += 12 {
				d.large = append(d.large, rib.LargeCommunity{Global: binary.BigEndian.Uint32(val[i:]),
					Local1: binary.BigEndian.Uint32(val[i+4:]), Local2: binary.BigEndian.Uint32(val[i+8:])})
			}
		}
	})
	if v6 || !nh.IsValid() {
		nh = mpNH
	}
	return rib.Attrs{NextHop: nh, Communities: d.comms, LargeCommunities: d.large}
}

func (r *routeOps) withdraw(p netip.Prefix, id uint32) {
	r.ops = append(r.ops, op{kind: opWithdraw, peer: r.ps, view: r.view, prefix: p, pathID: id})
}

func unicast(afi uint16, safi uint8) bool {
	return (afi == bgp.AFI_IP || afi == bgp.AFI_IP6) && safi == bgp.SAFI_UNICAST
}

// prefixOf returns the prefix of an IPv4 or IPv6 unicast NLRI. The
// parser builds it from the family's address length, so an IPv4 prefix
// is never an IPv4-mapped IPv6 one, and clears the bits past the length.
func prefixOf(n bgp.NLRI) (netip.Prefix, bool) {
	p, ok := n.(*bgp.IPAddrPrefix)
	if !ok || !p.Prefix.IsValid() {
		return netip.Prefix{}, false
	}
	return p.Prefix, true
}

// Path attribute type codes.
const (
	attrASPath     = 2
	attrNextHop    = 3
	attrCommunity  = 8
	attrLargeComm  = 32
	attrMPReach    = 14
	attrMPUnreach  = 15
	attrAS4Path    = 17
	attrExtLenFlag = 0x10
)

// rawAttrs walks the path attributes of a raw BGP UPDATE message (with
// its 19-byte header) and calls f for each. The parser's own AS_PATH
// decoding guesses between 2- and 4-byte ASNs; reading the bytes here
// lets the BMP A flag decide.
func rawAttrs(msg []byte, f func(typ byte, val []byte)) error {
	if len(msg) < 23 || msg[18] != bgp.BGP_MSG_UPDATE {
		return errors.New("not an UPDATE")
	}
	b := msg[19:]
	wl := int(binary.BigEndian.Uint16(b))
	if len(b) < 4+wl {
		return errors.New("withdrawn routes overrun")
	}
	b = b[2+wl:]
	al := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < al {
		return errors.New("path attributes overrun")
	}
	b = b[:al]
	for len(b) > 0 {
		if len(b) < 3 {
			return errors.New("short attribute header")
		}
		flags, typ := b[0], b[1]
		n, hl := int(b[2]), 3
		if flags&attrExtLenFlag != 0 {
			if len(b) < 4 {
				return errors.New("short attribute header")
			}
			n, hl = int(binary.BigEndian.Uint16(b[2:])), 4
		}
		if len(b) < hl+n {
			return errors.New("attribute overrun")
		}
		f(typ, b[hl:hl+n])
		b = b[hl+n:]
	}
	return nil
}

// rawFamily reports whether the MP_REACH/MP_UNREACH attributes of a raw
// UPDATE are all IPv4/IPv6 unicast (ok is false without any).
func rawFamily(msg []byte) (unicastOnly, ok bool) {
	unicastOnly = true
	rawAttrs(msg, func(typ byte, val []byte) {
		if (typ == attrMPReach || typ == attrMPUnreach) && len(val) >= 3 {
			ok = true
			if !unicast(binary.BigEndian.Uint16(val), val[2]) {
				unicastOnly = false
			}
		}
	})
	return unicastOnly, ok
}

// asPath decodes the AS path of a raw UPDATE. as4 tells the AS_PATH ASN
// width; if the bytes do not parse with it they are tried with the
// other (some speakers set the A flag inconsistently). With 2-byte
// ASNs, AS4_PATH is merged in as RFC 6793 4.2.3 says. The segments
// share the decoder's buffers.
func (d *decoder) asPath(msg []byte, as4 bool) ([]rib.Segment, error) {
	var asPath, as4Path []byte
	var have4 bool
	if err := rawAttrs(msg, func(typ byte, val []byte) {
		switch typ {
		case attrASPath:
			asPath = val
		case attrAS4Path:
			as4Path, have4 = val, true
		}
	}); err != nil {
		return nil, err
	}
	d.asns = d.asns[:0]
	segs, err := d.segments(d.segs[:0], asPath, as4)
	if err != nil {
		d.asns = d.asns[:0]
		if segs, err = d.segments(d.segs[:0], asPath, !as4); err != nil {
			return nil, err
		}
		as4 = !as4
	}
	d.segs = segs
	if !as4 && have4 {
		if segs4, err := d.segments(d.segs4[:0], as4Path, true); err == nil {
			d.segs4 = segs4
			segs = mergeAS4(segs, segs4)
		}
		// A malformed AS4_PATH is ignored (RFC 6793 6).
	}
	return segs, nil
}

// segments decodes AS_PATH bytes with 2- or 4-byte ASNs. The ASN
// slices of the result share d.asns.
func (d *decoder) segments(segs []rib.Segment, b []byte, as4 bool) ([]rib.Segment, error) {
	width := 2
	if as4 {
		width = 4
	}
	start := len(d.asns)
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("short AS_PATH segment header")
		}
		t, n := rib.SegmentType(b[0]), int(b[1])
		if t < rib.ASSet || t > rib.ConfedSet || len(b) < 2+n*width {
			return nil, errors.New("malformed AS_PATH segment")
		}
		b = b[2:]
		for i := range n {
			if as4 {
				d.asns = append(d.asns, binary.BigEndian.Uint32(b[4*i:]))
			} else {
				d.asns = append(d.asns, uint32(binary.BigEndian.Uint16(b[2*i:])))
			}
		}
		b = b[n*width:]
		segs = append(segs, rib.Segment{Type: t, ASNs: d.asns[start : start+n : start+n]})
		start += n
	}
	return segs, nil
}

// pathCount counts ASes as RFC 6793 does: a set counts one,
// confederation segments nothing.
func pathCount(segs []rib.Segment) int {
	n := 0
	for _, s := range segs {
		switch s.Type {
		case rib.ASSequence:
			n += len(s.ASNs)
		case rib.ASSet:
			n++
		}
	}
	return n
}

// mergeAS4 rebuilds the path of a 2-byte session from AS_PATH and
// AS4_PATH (RFC 6793 4.2.3): the leading ASes of AS_PATH that AS4_PATH
// lacks, then AS4_PATH. If AS4_PATH is longer, it is ignored.
func mergeAS4(asPath, as4Path []rib.Segment) []rib.Segment {
	keep := pathCount(asPath) - pathCount(as4Path)
	if keep < 0 {
		return asPath
	}
	out := make([]rib.Segment, 0, len(asPath)+len(as4Path))
	for _, s := range asPath {
		if keep == 0 {
			break
		}
		switch s.Type {
		case rib.ASSequence:
			n := min(keep, len(s.ASNs))
			out = append(out, rib.Segment{Type: s.Type, ASNs: s.ASNs[:n]})
			keep -= n
		case rib.ASSet:
			out = append(out, s)
			keep--
		default:
			out = append(out, s)
		}
	}
	return append(out, as4Path...)
}
