// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"encoding/binary"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// XDP return codes.
const (
	xdpDrop = 1
	xdpPass = 2
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs")
	}
}

// refPkt is what refParse reads from a frame, independently of
// bpf/xdp.c: a straightforward walk over the bytes.
type refPkt struct {
	ok       bool // an IP packet with whole headers
	src, dst netip.Addr
	proto    uint8
	sport    uint16
	dport    uint16
	ports    int // 0 none, 1 read, 2 unknown (later fragment, long chain)
}

func refParse(f []byte) refPkt {
	if len(f) < 14 {
		return refPkt{}
	}
	et := binary.BigEndian.Uint16(f[12:])
	off := 14
	for i := 0; i < 2 && (et == 0x8100 || et == 0x88a8); i++ {
		if len(f) < off+4 {
			return refPkt{}
		}
		et = binary.BigEndian.Uint16(f[off+2:])
		off += 4
	}
	ip := f[off:]
	switch et {
	case 0x0800:
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return refPkt{}
		}
		ihl := int(ip[0]&15) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < 20 || tot < ihl || tot > len(ip) {
			return refPkt{}
		}
		p := refPkt{ok: true, src: netip.AddrFrom4([4]byte(ip[12:16])), dst: netip.AddrFrom4([4]byte(ip[16:20])), proto: ip[9]}
		if !HasPorts(p.proto) {
			return p
		}
		if binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
			p.ports = 2
			return p
		}
		if ihl+4 > tot {
			return refPkt{}
		}
		p.sport, p.dport = binary.BigEndian.Uint16(ip[ihl:]), binary.BigEndian.Uint16(ip[ihl+2:])
		p.ports = 1
		return p
	case 0x86dd:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return refPkt{}
		}
		n := int(binary.BigEndian.Uint16(ip[4:])) + 40
		if n == 40 && len(ip) > 40 {
			n = len(ip)
		}
		if n > len(ip) {
			return refPkt{}
		}
		p := refPkt{ok: true, src: netip.AddrFrom16([16]byte(ip[8:24])), dst: netip.AddrFrom16([16]byte(ip[24:40]))}
		next, at := ip[6], 40
		for i := 0; ; i++ {
			if !slices.Contains([]uint8{0, 43, 60, 51, 44}, next) {
				break
			}
			if i == 8 {
				p.proto, p.ports = next, 2
				return p
			}
			if at+8 > n {
				return refPkt{}
			}
			h := ip[at:]
			switch next {
			case 44:
				next = h[0]
				at += 8
				if binary.BigEndian.Uint16(h[2:])&0xfff8 != 0 {
					p.proto = next
					if HasPorts(next) {
						p.ports = 2
					}
					return p
				}
			case 51:
				next = h[0]
				at += (int(h[1]) + 2) * 4
			default:
				next = h[0]
				at += (int(h[1]) + 1) * 8
			}
		}
		p.proto = next
		if !HasPorts(next) {
			return p
		}
		if at+4 > n {
			return refPkt{}
		}
		p.sport, p.dport = binary.BigEndian.Uint16(ip[at:]), binary.BigEndian.Uint16(ip[at+2:])
		p.ports = 1
		return p
	}
	return refPkt{}
}

// refMatch walks the rules in order, as the config describes them: the
// index of the first rule every set field of which matches, or -1.
func refMatch(rules []Rule, p refPkt) int {
	inAny := func(list []netip.Prefix, a netip.Addr) bool {
		if len(list) == 0 {
			return true
		}
		for _, pf := range list {
			if pf.Contains(a) {
				return true
			}
		}
		return false
	}
	portOK := func(list []PortRange, port uint16) bool {
		if len(list) == 0 || p.ports == 2 {
			return true
		}
		if p.ports == 0 {
			return false
		}
		for _, r := range list {
			if port >= r.Lo && port <= r.Hi {
				return true
			}
		}
		return false
	}
	for i, r := range rules {
		if r.Proto != AnyProto && uint8(r.Proto) != p.proto {
			continue
		}
		if !inAny(r.Src, p.src) || !inAny(r.Dst, p.dst) {
			continue
		}
		if !portOK(r.SrcPorts, p.sport) || !portOK(r.DstPorts, p.dport) {
			continue
		}
		return i
	}
	return -1
}

// runFrame runs one frame through the program and returns its verdict.
func runFrame(t testing.TB, prog *ebpf.Program, frame []byte) uint32 {
	t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatalf("test run of %x: %v", frame, err)
	}
	return ret
}

// Frame builders.

func eth(ethertype uint16, tags ...uint16) []byte {
	b := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1}
	for _, tpid := range tags {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, 100)
	}
	return binary.BigEndian.AppendUint16(b, ethertype)
}

func l4(sport, dport uint16, payload int) []byte {
	b := binary.BigEndian.AppendUint16(nil, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = binary.BigEndian.AppendUint16(b, uint16(8+payload)) // the UDP length; TCP's sequence number
	return append(b, make([]byte, 2+payload)...)
}

// ipv4Frame builds Ethernet + IPv4; fragOff is in 8-byte units.
func ipv4Frame(src, dst string, proto uint8, fragOff uint16, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(h[6:], fragOff&0x1fff)
	h[8] = 64
	h[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return slices.Concat(eth(0x0800), h, payload)
}

// ipv6Frame builds Ethernet + IPv6; with frag >= 0 a fragment header
// with that offset (8-byte units) comes first.
func ipv6Frame(src, dst string, proto uint8, frag int, payload []byte) []byte {
	next := proto
	if frag >= 0 {
		fh := []byte{proto, 0, 0, 0, 0, 0, 0, 1}
		binary.BigEndian.PutUint16(fh[2:], uint16(frag)<<3)
		payload = slices.Concat(fh, payload)
		next = 44
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = next
	h[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return slices.Concat(eth(0x86dd), h, payload)
}
