// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"encoding/binary"
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

// Path is an AS path. The RIB interns the paths of its routes (routes
// of a full table share a few hundred thousand distinct paths) and
// frees a path with its last route. The zero Path is the empty path.
// Path is comparable: equal paths are ==.
//
// Encoding:
//
//	[0]    flags (pathEmpty, pathSetOrigin)
//	[1:5]  origin ASN, big endian
//	[5:7]  path length for tie-breaks, big endian
//	[7:]   segments: type, count, count*4 bytes of ASNs, big endian
type Path struct{ enc string }

const (
	pathHeader = 7

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
	buf := stack[:pathHeader]
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
	if len(buf) == pathHeader {
		return Path{}
	}
	buf[0] = flags
	binary.BigEndian.PutUint32(buf[1:5], origin)
	binary.BigEndian.PutUint16(buf[5:7], uint16(min(length, 0xffff)))
	return Path{string(buf)}
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
	if len(p.enc) <= pathHeader {
		return nil
	}
	s := p.enc[pathHeader:]
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
