// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
)

// skbContext is the __sk_buff a BPF_PROG_TEST_RUN starts from; the
// kernel takes only a few fields from it (gso_segs, gso_size, wire_len,
// ifindex, ...) and wants the rest zero. Offsets are UAPI.
type skbContext [192]byte

func gsoContext(segs, size, wireLen uint32) *skbContext {
	var c skbContext
	binary.LittleEndian.PutUint32(c[160:], wireLen)
	binary.LittleEndian.PutUint32(c[164:], segs)
	binary.LittleEndian.PutUint32(c[176:], size)
	return &c
}

// tcpHeader is a TCP header of hlen bytes (options as NOPs) with ports.
func tcpHeader(sport, dport uint16, hlen int) []byte {
	b := make([]byte, hlen)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = byte(hlen/4) << 4
	for i := 20; i < hlen; i++ {
		b[i] = 1
	}
	return b
}

// A GSO/GRO super-packet stands for several packets on the wire, each
// repeating the link, IP and transport headers. The expected figures are
// built from the segments themselves: every segment carries up to
// gso_size payload bytes behind a full copy of the headers.
func TestGSOCountsSegments(t *testing.T) {
	type tc struct {
		name     string
		l2       []byte
		ipHdr    func(l4 []byte) []byte // wraps transport header + payload
		l4Hdr    []byte
		payload  int
		gsoSize  int
		trusted  bool // gso_segs set (the stack's own), else 0 as from a tap
		fam      Family
		src, dst string
		proto    uint8
	}
	v4 := func(proto uint8) func([]byte) []byte {
		return func(l4 []byte) []byte { return ipv4Packet(v4a, v4b, proto, v4opts{}, l4) }
	}
	v6 := func(proto uint8) func([]byte) []byte {
		return func(l4 []byte) []byte { return ipv6Packet(v6a, v6b, proto, nil, l4) }
	}
	udpHdr := make([]byte, 8)
	binary.BigEndian.PutUint16(udpHdr[0:], 4000)
	binary.BigEndian.PutUint16(udpHdr[2:], 4001)
	cases := []tc{
		{"ipv4 tcp", ethHeader(0x0800), v4(6), tcpHeader(5001, 40000, 20), 1200, 300, true, FamilyIPv4, v4a, v4b, 6},
		{"ipv4 tcp timestamps", ethHeader(0x0800), v4(6), tcpHeader(5001, 40000, 32), 1448, 362, true, FamilyIPv4, v4a, v4b, 6},
		{"ipv4 tcp untrusted uneven", ethHeader(0x0800), v4(6), tcpHeader(5001, 40000, 20), 1250, 300, false, FamilyIPv4, v4a, v4b, 6},
		{"ipv6 tcp", ethHeader(0x86dd), v6(6), tcpHeader(443, 50000, 32), 1400, 280, true, FamilyIPv6, v6a, v6b, 6},
		{"ipv6 tcp untrusted", ethHeader(0x86dd), v6(6), tcpHeader(443, 50000, 20), 1001, 200, false, FamilyIPv6, v6a, v6b, 6},
		{"ipv4 udp gso", ethHeader(0x0800), v4(17), udpHdr, 1200, 400, true, FamilyIPv4, v4a, v4b, 17},
		{"802.1Q ipv4 tcp", ethHeader(0x0800, 0x8100), v4(6), tcpHeader(5001, 40000, 20), 1200, 300, true, FamilyIPv4, v4a, v4b, 6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			frame := append(append([]byte{}, c.l2...), c.ipHdr(append(append([]byte{}, c.l4Hdr...), make([]byte, c.payload)...))...)
			headers := len(frame) - c.payload // each segment's link+IP+transport headers
			ipHeaders := headers - len(c.l2)
			var wantSegs, wantWire, wantL3 int
			for left := c.payload; left > 0; left -= c.gsoSize {
				seg := min(left, c.gsoSize)
				wantSegs++
				wantWire += headers + seg
				wantL3 += ipHeaders + seg
			}
			gsoSegs := uint32(0)
			if c.trusted {
				gsoSegs = uint32(wantSegs)
			}
			for _, dir := range []Direction{Ingress, Egress} {
				tb := newTestbed(t, 1)
				ret, err := tb.progs[dir].Run(&ebpf.RunOptions{Data: frame, Context: gsoContext(gsoSegs, uint32(c.gsoSize), 0)})
				if err != nil || int32(ret) != -1 {
					t.Fatalf("%s: test run: ret %d, %v", dir, int32(ret), err)
				}
				got := tb.counters(t, dir)
				if got.Packets[c.fam] != uint64(wantSegs) || got.Bytes[c.fam] != uint64(wantWire) {
					t.Errorf("%s: counted %d packets %d bytes, want %d segments of %d wire bytes",
						dir, got.Packets[c.fam], got.Bytes[c.fam], wantSegs, wantWire)
				}
				evs := tb.events(t)
				if len(evs) != 1 {
					t.Fatalf("%s: %d events, want 1", dir, len(evs))
				}
				e := evs[0]
				if int(e.Segs) != wantSegs || int(e.Len) != wantL3 || e.Proto != c.proto ||
					e.Src != mapped(c.src) || e.Dst != mapped(c.dst) || e.SampleRate != 1 {
					t.Errorf("%s: event %+v, want %d segments, %d L3 bytes", dir, e, wantSegs, wantL3)
				}
			}
		})
	}
}

// At egress the kernel has already worked out the wire length for the
// qdisc (wire_len, tunnel inner headers included); the datapath takes
// it as is rather than its own estimate.
func TestGSOEgressUsesWireLen(t *testing.T) {
	frame := append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 6, v4opts{}, append(tcpHeader(1, 2, 20), make([]byte, 1200)...))...)
	const segs, kernelWire = 4, 1200 + 4*54 + 4*50 // e.g. 50 bytes of encapsulation per segment
	tb := newTestbed(t, 0)
	if _, err := tb.progs[Egress].Run(&ebpf.RunOptions{Data: frame, Context: gsoContext(segs, 300, kernelWire)}); err != nil {
		t.Fatal(err)
	}
	if got := tb.counters(t, Egress); got.Packets[FamilyIPv4] != segs || got.Bytes[FamilyIPv4] != kernelWire {
		t.Errorf("egress counted %d packets %d bytes, want %d / %d", got.Packets[FamilyIPv4], got.Bytes[FamilyIPv4], segs, kernelWire)
	}
}

// Sampling off: counters still see segments and wire bytes, not skbs.
func TestGSOCountedWithoutSampling(t *testing.T) {
	frame := append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 6, nil, append(tcpHeader(1, 2, 20), make([]byte, 900)...))...)
	tb := newTestbed(t, 0)
	if _, err := tb.progs[Ingress].Run(&ebpf.RunOptions{Data: frame, Context: gsoContext(0, 300, 0)}); err != nil {
		t.Fatal(err)
	}
	if got := tb.counters(t, Ingress); got.Packets[FamilyIPv6] != 3 || got.Bytes[FamilyIPv6] != 900+3*(14+40+20) {
		t.Errorf("counted %d packets %d bytes, want 3 / %d", got.Packets[FamilyIPv6], got.Bytes[FamilyIPv6], 900+3*(14+40+20))
	}
	if evs := tb.events(t); len(evs) != 0 {
		t.Errorf("rate 0 produced %d events", len(evs))
	}
}
