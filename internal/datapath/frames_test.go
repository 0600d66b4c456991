// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"encoding/binary"
	"net/netip"
)

// Test frame builders: enough of Ethernet, 802.1Q, IPv4, IPv6 and L4 to
// craft every case the parser handles, with correct length fields.

func ethHeader(ethertype uint16, tags ...uint16) []byte {
	b := []byte{0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1}
	// tags are TPIDs, outermost first; each is followed by a TCI.
	for i, tpid := range tags {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(100+i)) // VLAN id
	}
	return binary.BigEndian.AppendUint16(b, ethertype)
}

func l4Header(proto uint8, sport, dport uint16, payload int) []byte {
	var b []byte
	switch proto {
	case 6: // TCP, 20 bytes, no options
		b = make([]byte, 20)
		b[12] = 5 << 4
	case 17, 136: // UDP / UDP-Lite
		b = make([]byte, 8)
		binary.BigEndian.PutUint16(b[4:], uint16(8+payload))
	case 132: // SCTP common header
		b = make([]byte, 12)
	default: // ICMP-like: no ports
		b = make([]byte, 8)
		b[0] = 8
		return append(b, make([]byte, payload)...)
	}
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return append(b, make([]byte, payload)...)
}

// icmpHeader is an 8-byte ICMP/ICMPv6 header (type, code, checksum 0,
// rest 0) and payload.
func icmpHeader(typ, code uint8, payload int) []byte {
	return append([]byte{typ, code, 0, 0, 0, 0, 0, 0}, make([]byte, payload)...)
}

type v4opts struct {
	fragOffset uint16 // in 8-byte units
	moreFrags  bool
	optionLen  int // IPv4 options bytes (multiple of 4)
}

func ipv4Packet(src, dst string, proto uint8, o v4opts, l4 []byte) []byte {
	ihl := 20 + o.optionLen
	b := make([]byte, ihl)
	b[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(ihl+len(l4)))
	frag := o.fragOffset & 0x1fff
	if o.moreFrags {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = 64
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	for i := 20; i < ihl; i++ {
		b[i] = 1 // NOP options
	}
	return append(b, l4...)
}

// ext is one IPv6 extension header: its type and total length in bytes.
type ext struct {
	typ    uint8
	len    int    // total bytes, multiple of 8 (AH: of 4)
	fragOf uint16 // fragment offset in 8-byte units (type 44 only)
}

func ipv6Packet(src, dst string, proto uint8, exts []ext, l4 []byte) []byte {
	var chain []byte
	for i, e := range exts {
		next := proto
		if i+1 < len(exts) {
			next = exts[i+1].typ
		}
		h := make([]byte, e.len)
		h[0] = next
		switch e.typ {
		case 44:
			binary.BigEndian.PutUint16(h[2:], e.fragOf<<3)
		case 51:
			h[1] = byte(e.len/4 - 2)
		default:
			h[1] = byte(e.len/8 - 1)
		}
		chain = append(chain, h...)
	}
	first := proto
	if len(exts) > 0 {
		first = exts[0].typ
	}
	b := make([]byte, 40)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(chain)+len(l4)))
	b[6] = first
	b[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(append(b, chain...), l4...)
}

// mplsFrame puts packet under an MPLS label stack of n labels (ethertype
// 0x8847), the last with the bottom-of-stack bit, behind tags.
func mplsFrame(n int, packet []byte, tags ...uint16) []byte {
	b := ethHeader(0x8847, tags...)
	for i := 0; i < n; i++ {
		lse := uint32(16+i)<<12 | 64 // label, TTL 64
		if i == n-1 {
			lse |= 1 << 8
		}
		b = binary.BigEndian.AppendUint32(b, lse)
	}
	return append(b, packet...)
}

// pppoeFrame wraps packet in a PPPoE session header (ethertype 0x8864)
// with the given PPP protocol (0x0021 IPv4, 0x0057 IPv6).
func pppoeFrame(pppProto uint16, packet []byte, tags ...uint16) []byte {
	b := ethHeader(0x8864, tags...)
	b = append(b, 0x11, 0x00) // version 1, type 1, code 0 (session data)
	b = binary.BigEndian.AppendUint16(b, 0x1234)
	b = binary.BigEndian.AppendUint16(b, uint16(2+len(packet)))
	b = binary.BigEndian.AppendUint16(b, pppProto)
	return append(b, packet...)
}
