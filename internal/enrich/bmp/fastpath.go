// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"encoding/binary"
	"net/netip"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

// The fast path decodes the dominant message, a Route Monitoring of a
// well-formed IPv4/IPv6 unicast UPDATE, straight from its bytes: no
// per-message, per-attribute or per-prefix objects. It accepts only
// input on which gobgp's parser reports no error and produces the same
// ops as the gobgp-based decoder would (FuzzFastPath checks this);
// anything else (an attribute it does not know, a non-unicast family,
// End-of-RIB, Adj-RIB-Out, a peer without Peer Up, any error) goes to
// the gobgp-based decoder, so error handling stays in one place.

// Expected flags (without Extended Length) of the attributes the fast
// path checks; 0 means the fast path does not know the attribute.
var fastAttrFlags = [256]byte{
	1:  0x40, // ORIGIN
	2:  0x40, // AS_PATH
	3:  0x40, // NEXT_HOP
	4:  0x80, // MULTI_EXIT_DISC
	5:  0x40, // LOCAL_PREF
	6:  0x40, // ATOMIC_AGGREGATE
	8:  0xc0, // COMMUNITIES
	9:  0x80, // ORIGINATOR_ID
	10: 0x80, // CLUSTER_LIST
	14: 0x80, // MP_REACH_NLRI
	15: 0x80, // MP_UNREACH_NLRI
	17: 0xc0, // AS4_PATH
	32: 0xc0, // LARGE_COMMUNITY
}

// fastAttrOK reports whether gobgp decodes the attribute without error.
func fastAttrOK(typ byte, val []byte) bool {
	n := len(val)
	switch typ {
	case 1:
		return n == 1
	case 2:
		return n == 0 || gobgpASPathOK(val, true) || gobgpASPathOK(val, false)
	case 3:
		return n == 4 || n == 16
	case 4, 5, 9:
		return n == 4
	case 6:
		return n == 0
	case 8, 10:
		return n%4 == 0
	case 17:
		return n == 0 || gobgpASPathOK(val, true)
	case 32:
		return n%12 == 0
	}
	return false // MP_REACH/MP_UNREACH are walked by the caller
}

// gobgpASPathOK mirrors gobgp's AS_PATH validation with one ASN width:
// an even length, segment types 1 to 4, no empty segment.
func gobgpASPathOK(b []byte, as4 bool) bool {
	if len(b)%2 != 0 {
		return false
	}
	width := 2
	if as4 {
		width = 4
	}
	for len(b) > 0 {
		if len(b) < 2 || b[0] == 0 || b[0] > 4 || b[1] == 0 {
			return false
		}
		n := 2 + int(b[1])*width
		if n > len(b) {
			return false
		}
		b = b[n:]
	}
	return true
}

// walkPrefixes calls f for each prefix of an NLRI field (with a path id
// first when addPath). It reports false, having called f for nothing,
// unless the whole field parses as gobgp would parse it without error.
func walkPrefixes(b []byte, v6, addPath bool, f func(netip.Prefix, uint32)) bool {
	if !checkPrefixes(b, v6, addPath) {
		return false
	}
	for len(b) > 0 {
		var id uint32
		if addPath {
			id = binary.BigEndian.Uint32(b)
			b = b[4:]
		}
		bits := int(b[0])
		n := (bits + 7) / 8
		var p netip.Prefix
		if v6 {
			var a [16]byte
			copy(a[:], b[1:1+n])
			p = netip.PrefixFrom(netip.AddrFrom16(a), bits)
		} else {
			var a [4]byte
			copy(a[:], b[1:1+n])
			p = netip.PrefixFrom(netip.AddrFrom4(a), bits)
		}
		f(p.Masked(), id)
		b = b[1+n:]
	}
	return true
}

func checkPrefixes(b []byte, v6, addPath bool) bool {
	maxBits := 32
	if v6 {
		maxBits = 128
	}
	for len(b) > 0 {
		if addPath {
			if len(b) < 4 {
				return false
			}
			b = b[4:]
		}
		if len(b) < 1 || int(b[0]) > maxBits {
			return false
		}
		n := 1 + (int(b[0])+7)/8
		if len(b) < n {
			return false
		}
		b = b[n:]
	}
	return true
}

// bgpMarker reports whether a BGP message starts with the 16-byte
// all-ones marker (RFC 4271 4.1), which gobgp requires.
func bgpMarker(msg []byte) bool {
	for _, b := range msg[:16] {
		if b != 0xff {
			return false
		}
	}
	return true
}

// fastUpdate is one UPDATE split into its parts by fastSplit.
type fastUpdate struct {
	withdrawn, nlri []byte
	// MP_REACH/MP_UNREACH in message order: their NLRI fields.
	mp [2]struct {
		reach bool
		v6    bool
		nlri  []byte
	}
	nmp int
	any bool // at least one prefix somewhere
}

// fastSplit checks a BGP UPDATE message (with its header) and splits
// it. ok is false unless gobgp would parse the message without error
// and every part is one the fast path handles.
func fastSplit(msg []byte, addPath [2]bool) (u fastUpdate, ok bool) {
	if len(msg) < 23 || msg[18] != 2 || !bgpMarker(msg) {
		return u, false
	}
	hl := int(binary.BigEndian.Uint16(msg[16:18]))
	if hl < 23 || hl > len(msg) {
		return u, false
	}
	b := msg[19:hl]
	wl := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+wl+2 {
		return u, false
	}
	u.withdrawn = b[2 : 2+wl]
	if !checkPrefixes(u.withdrawn, false, addPath[0]) {
		return u, false
	}
	b = b[2+wl:]
	al := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+al {
		return u, false
	}
	attrs := b[2 : 2+al]
	u.nlri = b[2+al:]
	if !checkPrefixes(u.nlri, false, addPath[0]) {
		return u, false
	}
	u.any = len(u.withdrawn) > 0 || len(u.nlri) > 0
	var seen [256 / 64]uint64
	for len(attrs) > 0 {
		if len(attrs) < 3 {
			return u, false
		}
		flags, typ := attrs[0], attrs[1]
		n, h := int(attrs[2]), 3
		if flags&attrExtLenFlag != 0 {
			if len(attrs) < 4 {
				return u, false
			}
			n, h = int(binary.BigEndian.Uint16(attrs[2:])), 4
		}
		if len(attrs) < h+n {
			return u, false
		}
		val := attrs[h : h+n]
		attrs = attrs[h+n:]
		want := fastAttrFlags[typ]
		if want == 0 || flags&^attrExtLenFlag != want || seen[typ/64]&(1<<(typ%64)) != 0 {
			return u, false
		}
		seen[typ/64] |= 1 << (typ % 64)
		if typ != attrMPReach && typ != attrMPUnreach {
			if !fastAttrOK(typ, val) {
				return u, false
			}
			continue
		}
		if len(val) < 3 || val[2] != 1 {
			return u, false
		}
		var v6 bool
		switch binary.BigEndian.Uint16(val) {
		case 1:
		case 2:
			v6 = true
		default:
			return u, false
		}
		val = val[3:]
		if typ == attrMPReach {
			if len(val) < 1 {
				return u, false
			}
			switch nh := int(val[0]); {
			case nh != 4 && nh != 16 && nh != 32, len(val) < 2+nh:
				return u, false
			default:
				val = val[2+nh:] // next hop and the reserved byte
			}
		}
		fam := 0
		if v6 {
			fam = 1
		}
		if !checkPrefixes(val, v6, addPath[fam]) {
			return u, false
		}
		mp := &u.mp[u.nmp]
		mp.reach, mp.v6, mp.nlri = typ == attrMPReach, v6, val
		u.nmp++
		u.any = u.any || len(val) > 0
	}
	return u, u.any
}

// fastRouteMonitoring decodes a Route Monitoring message on the fast
// path. ok false means nothing was done: decode it the gobgp way.
func (d *decoder) fastRouteMonitoring(msg []byte, ops []op) (out []op, ok bool) {
	const hdr = 6 + 42
	if len(msg) < hdr+23 || msg[0] != 3 || int(binary.BigEndian.Uint32(msg[1:5])) != len(msg) {
		return ops, false
	}
	ph := msg[6:hdr]
	peerType, flags := ph[0], ph[1]
	key := rib.PeerKey{Type: peerType, Distinguisher: binary.BigEndian.Uint64(ph[2:10])}
	switch {
	case peerType == peerTypeLocRIB:
		key.Addr = netip.IPv4Unspecified()
	case flags&0x80 != 0:
		key.Addr = netip.AddrFrom16([16]byte(ph[10:26])).Unmap()
	default:
		key.Addr = netip.AddrFrom4([4]byte(ph[22:26]))
	}
	view := rib.PrePolicy
	switch {
	case peerType == peerTypeLocRIB:
		view = rib.LocRIB
	case flags&flagAdjRIBOut != 0:
		return ops, false
	case flags&flagPostPolicy != 0:
		view = rib.PostPolicy
	}
	ps := d.peers[key]
	if ps == nil {
		return ops, false
	}
	raw := msg[hdr:]
	u, ok := fastSplit(raw, ps.addPath)
	if !ok {
		return ops, false
	}
	as4 := peerType == peerTypeLocRIB || flags&flagTwoByteAS == 0

	// From here on the message is accepted: the ops below are the ones
	// update() makes from gobgp's objects, in the same order.
	r := routeOps{d: d, ps: ps, view: view, raw: raw, as4: as4, ops: ops}
	announce, withdraw := r.announce, r.withdraw
	walkPrefixes(u.withdrawn, false, ps.addPath[0], withdraw)
	for _, mp := range u.mp[:u.nmp] {
		fam := 0
		if mp.v6 {
			fam = 1
		}
		if mp.reach {
			walkPrefixes(mp.nlri, mp.v6, ps.addPath[fam], announce)
		} else {
			walkPrefixes(mp.nlri, mp.v6, ps.addPath[fam], withdraw)
		}
	}
	walkPrefixes(u.nlri, false, ps.addPath[0], announce)
	return r.ops, true
}
