// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
)

// SegmentType is a BGP AS_PATH segment type (RFC 4271, RFC 5065).
type SegmentType uint8

const (
	ASSet          SegmentType = 1
	ASSequence     SegmentType = 2
	ConfedSequence SegmentType = 3
	ConfedSet      SegmentType = 4
)

// Segment is one AS_PATH segment.
type Segment struct {
	Type SegmentType
	ASNs []uint32
}

// Path is an AS path and, optionally, the route attributes flow export
// reports (next hop, standard and large communities; WithAttrs). The RIB
// interns the paths of its routes (routes of a full table share a few
// hundred thousand distinct paths) and frees a path with its last
// route. The zero Path is the empty path without attributes. Path is
// comparable: equal paths are ==.
//
// Encoding:
//
//	[0]    flags (pathEmpty, pathSetOrigin)
//	[1:5]  origin ASN, big endian
//	[5:7]  path length for tie-breaks, big endian
//	[7:9]  byte length of the segments
//	[9:13] first AS (FirstAS), big endian, so flow export reads it
//	       without walking the segments
//	[13:]  segments: type, count, count*4 bytes of ASNs, big endian
//	then, only with attributes: next hop length (0, 4 or 16) and bytes;
//	standard communities: count (2 bytes) and 4 bytes each; large
//	communities: count (2 bytes) and 12 bytes each; all big endian.
type Path struct{ enc string }

const (
	pathHeader = 13

	// pathEmpty: no AS outside confederation segments; the origin is
	// the peer's AS.
	pathEmpty = 1 << 0
	// pathSetOrigin: the path ends in an AS_SET; the origin is unknown.
	pathSetOrigin = 1 << 1
)

// MakePath returns the path made of segs. Empty segments are dropped
// and segments longer than 255 ASNs are split, as on the wire.
//
// Origin rule: confederation segments are ignored; the origin is the
// last ASN of a trailing AS_SEQUENCE. A trailing AS_SET gives origin 0
// (unknown), like route origin validation (RFC 6811): an aggregate has
// no single origin, and 0 lets enrichment fall back to the MMDB. A path
// with no AS outside confederation segments takes the peer's AS.
func MakePath(segs ...Segment) Path {
	var stack [256]byte
	buf := appendPath(stack[:0], segs)
	if len(buf) == pathHeader {
		return Path{}
	}
	return Path{string(buf)}
}

// MakePathAttrs is MakePath(segs...).WithAttrs(a) with one allocation,
// for the BMP decoder's hot path.
func MakePathAttrs(a Attrs, segs ...Segment) Path {
	var stack [512]byte
	buf := appendPath(stack[:0], segs)
	if !a.NextHop.IsValid() && len(a.Communities) == 0 && len(a.LargeCommunities) == 0 {
		if len(buf) == pathHeader {
			return Path{}
		}
		return Path{string(buf)}
	}
	return Path{string(appendAttrs(buf, a))}
}

// appendPath appends the encoding of segs (header and segments) to buf.
func appendPath(buf []byte, segs []Segment) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, pathHeader)...)
	var origin uint32
	flags := byte(pathEmpty)
	length := 0
	for _, s := range segs {
		for asns := s.ASNs; len(asns) > 0; {
			n := min(len(asns), 255)
			buf = append(buf, byte(s.Type), byte(n))
			for _, a := range asns[:n] {
				buf = binary.BigEndian.AppendUint32(buf, a)
			}
			switch s.Type {
			case ASSequence:
				flags = 0
				origin = asns[n-1]
				length += n
			case ASSet:
				flags = pathSetOrigin
				origin = 0
				length++
			}
			asns = asns[n:]
		}
	}
	h := buf[start:]
	h[0] = flags
	binary.BigEndian.PutUint32(h[1:5], origin)
	binary.BigEndian.PutUint16(h[5:7], uint16(min(length, 0xffff)))
	binary.BigEndian.PutUint16(h[7:9], uint16(len(h)-pathHeader))
	binary.BigEndian.PutUint32(h[9:13], firstAS(h[pathHeader:]))
	return buf
}

// LargeCommunity is a BGP large community (RFC 8092).
type LargeCommunity struct{ Global, Local1, Local2 uint32 }

// Attrs are the route attributes, besides the AS path, that flow export
// reports for the route chosen for an address.
type Attrs struct {
	NextHop          netip.Addr // invalid: none
	Communities      []uint32   // RFC 1997, as on the wire
	LargeCommunities []LargeCommunity
}

// WithAttrs returns p (its AS path alone) with attributes a. Without
// any attribute it is p's AS path.
func (p Path) WithAttrs(a Attrs) Path {
	p = p.ASPath()
	if !a.NextHop.IsValid() && len(a.Communities) == 0 && len(a.LargeCommunities) == 0 {
		return p
	}
	var stack [512]byte
	buf := append(stack[:0], p.enc...)
	if p.enc == "" {
		buf = appendPath(buf, nil)
	}
	return Path{string(appendAttrs(buf, a))}
}

// appendAttrs appends the attribute part of the encoding to buf, which
// holds a header and segments.
func appendAttrs(buf []byte, a Attrs) []byte {
	nc, nl := min(len(a.Communities), 0xffff), min(len(a.LargeCommunities), 0xffff)
	switch {
	case a.NextHop.Is4():
		b := a.NextHop.As4()
		buf = append(append(buf, 4), b[:]...)
	case a.NextHop.Is6():
		b := a.NextHop.As16()
		buf = append(append(buf, 16), b[:]...)
	default:
		buf = append(buf, 0)
	}
	buf = binary.BigEndian.AppendUint16(buf, uint16(nc))
	for _, c := range a.Communities[:nc] {
		buf = binary.BigEndian.AppendUint32(buf, c)
	}
	buf = binary.BigEndian.AppendUint16(buf, uint16(nl))
	for _, c := range a.LargeCommunities[:nl] {
		buf = binary.BigEndian.AppendUint32(buf, c.Global)
		buf = binary.BigEndian.AppendUint32(buf, c.Local1)
		buf = binary.BigEndian.AppendUint32(buf, c.Local2)
	}
	return buf
}

// segEnd is where the segments end in the encoding.
func (p Path) segEnd() int {
	if len(p.enc) < pathHeader {
		return len(p.enc)
	}
	return pathHeader + (int(p.enc[7])<<8 | int(p.enc[8]))
}

// ASPath returns p without its attributes.
func (p Path) ASPath() Path {
	end := p.segEnd()
	if end == len(p.enc) {
		return p
	}
	if end == pathHeader {
		return Path{}
	}
	return Path{p.enc[:end]}
}

// attrs returns the encoded attributes ("" without any).
func (p Path) attrs() string { return p.enc[p.segEnd():] }

// NextHop is the route's next hop; invalid when unknown. It does not
// allocate.
func (p Path) NextHop() netip.Addr {
	a := p.attrs()
	if len(a) == 0 {
		return netip.Addr{}
	}
	switch n := int(a[0]); {
	case n == 4 && len(a) >= 5:
		return netip.AddrFrom4([4]byte{a[1], a[2], a[3], a[4]})
	case n == 16 && len(a) >= 17:
		var b [16]byte
		copy(b[:], a[1:17])
		return netip.AddrFrom16(b)
	}
	return netip.Addr{}
}

// CommunityBytes returns the standard communities as encoded, 4 bytes
// each, big endian; a substring of the path, so it does not allocate.
func (p Path) CommunityBytes() string {
	c, _ := p.communityParts()
	return c
}

// LargeCommunityBytes returns the large communities as encoded, 12
// bytes each (global administrator, local data 1 and 2), big endian.
func (p Path) LargeCommunityBytes() string {
	_, l := p.communityParts()
	return l
}

func (p Path) communityParts() (std, large string) {
	a := p.attrs()
	if len(a) == 0 || len(a) < 1+int(a[0]) {
		return "", ""
	}
	a = a[1+int(a[0]):]
	if len(a) < 2 {
		return "", ""
	}
	n := 4 * (int(a[0])<<8 | int(a[1]))
	if len(a) < 2+n {
		return "", ""
	}
	std, a = a[2:2+n], a[2+n:]
	if len(a) < 2 {
		return std, ""
	}
	m := 12 * (int(a[0])<<8 | int(a[1]))
	if len(a) < 2+m {
		return std, ""
	}
	return std, a[2 : 2+m]
}

// Communities decodes the standard communities. It allocates.
func (p Path) Communities() []uint32 {
	b := p.CommunityBytes()
	out := make([]uint32, 0, len(b)/4)
	for i := 0; i+4 <= len(b); i += 4 {
		out = append(out, binary.BigEndian.Uint32([]byte(b[i:i+4])))
	}
	return out
}

// LargeCommunities decodes the large communities. It allocates.
func (p Path) LargeCommunities() []LargeCommunity {
	b := p.LargeCommunityBytes()
	out := make([]LargeCommunity, 0, len(b)/12)
	for i := 0; i+12 <= len(b); i += 12 {
		v := []byte(b[i : i+12])
		out = append(out, LargeCommunity{binary.BigEndian.Uint32(v), binary.BigEndian.Uint32(v[4:]), binary.BigEndian.Uint32(v[8:])})
	}
	return out
}

// FirstAS is the first AS of the path, the neighbour AS the route was
// learned from (confederation segments skipped); 0 for an empty path or
// one that starts with an AS_SET, which names no single neighbour.
func (p Path) FirstAS() uint32 {
	if len(p.enc) < pathHeader {
		return 0
	}
	return uint32(p.enc[9])<<24 | uint32(p.enc[10])<<16 | uint32(p.enc[11])<<8 | uint32(p.enc[12])
}

// firstAS walks encoded segments for FirstAS.
func firstAS(s []byte) uint32 {
	for len(s) >= 2 {
		t, n := SegmentType(s[0]), int(s[1])
		if len(s) < 2+4*n {
			return 0
		}
		switch t {
		case ASSequence:
			if n > 0 {
				return binary.BigEndian.Uint32(s[2:])
			}
		case ASSet:
			return 0
		}
		s = s[2+4*n:]
	}
	return 0
}

// ExportAttrs returns, in one pass and without allocating, what flow
// export reports of the route: next hop (invalid when unknown), first AS,
// and the standard and large communities as encoded (CommunityBytes,
// LargeCommunityBytes).
func (p Path) ExportAttrs() (nextHop netip.Addr, first uint32, communities, large string) {
	first = p.FirstAS()
	a := p.attrs()
	if len(a) == 0 {
		return
	}
	switch n := int(a[0]); {
	case n == 4 && len(a) >= 5:
		nextHop = netip.AddrFrom4([4]byte{a[1], a[2], a[3], a[4]})
	case n == 16 && len(a) >= 17:
		nextHop = netip.AddrFrom16([16]byte([]byte(a[1:17])))
	}
	communities, large = p.communityParts()
	return
}

// SequencePath is MakePath with one AS_SEQUENCE.
func SequencePath(asns ...uint32) Path {
	return MakePath(Segment{Type: ASSequence, ASNs: asns})
}

// Origin returns the origin ASN and whether the path names none (empty
// path or only confederation segments), in which case the caller uses
// the peer's AS.
func (p Path) Origin() (asn uint32, empty bool) {
	s := p.enc
	if len(s) < pathHeader || s[0]&pathEmpty != 0 {
		return 0, true
	}
	return uint32(s[1])<<24 | uint32(s[2])<<16 | uint32(s[3])<<8 | uint32(s[4]), false
}

// Len is the path length used by BGP best-path selection: each AS of a
// sequence counts one, an AS_SET counts one, confederation segments
// count zero.
func (p Path) Len() int {
	if len(p.enc) < pathHeader {
		return 0
	}
	return int(p.enc[5])<<8 | int(p.enc[6])
}

// Segments decodes the path. It allocates; use it off the hot path.
func (p Path) Segments() []Segment {
	if p.segEnd() <= pathHeader {
		return nil
	}
	s := p.enc[pathHeader:p.segEnd()]
	var out []Segment
	for len(s) >= 2 {
		t, n := SegmentType(s[0]), int(s[1])
		s = s[2:]
		if len(s) < 4*n {
			break
		}
		asns := make([]uint32, n)
		for i := range asns {
			o := 4 * i
			asns[i] = uint32(s[o])<<24 | uint32(s[o+1])<<16 | uint32(s[o+2])<<8 | uint32(s[o+3])
		}
		out = append(out, Segment{Type: t, ASNs: asns})
		s = s[4*n:]
	}
	return out
}

// String formats the path like routers do: sequences as space separated
// ASNs, sets in braces, confederation segments in parentheses.
func (p Path) String() string {
	var b strings.Builder
	for i, seg := range p.Segments() {
		if i > 0 {
			b.WriteByte(' ')
		}
		open, sep, end := "", " ", ""
		switch seg.Type {
		case ASSet:
			open, sep, end = "{", ",", "}"
		case ConfedSequence:
			open, end = "(", ")"
		case ConfedSet:
			open, sep, end = "[", ",", "]"
		}
		b.WriteString(open)
		for j, a := range seg.ASNs {
			if j > 0 {
				b.WriteString(sep)
			}
			b.WriteString(strconv.FormatUint(uint64(a), 10))
		}
		b.WriteString(end)
	}
	return b.String()
}
