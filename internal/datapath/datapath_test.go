// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs (run the suite as root)")
	}
}

// testbed is a loaded datapath whose Ethernet program pair is driven
// with BPF_PROG_TEST_RUN. Test runs are on loopback (ifindex 1), which
// holds slot 0 as an injector's.
type testbed struct {
	d     *Datapath
	progs [2]*ebpf.Program
}

func newTestbed(t testing.TB, rate uint32) *testbed {
	t.Helper()
	return newTestbedRing(t, rate, 1<<23)
}

// newTestbedRing is newTestbed with a ring buffer of ringSize bytes.
func newTestbedRing(t testing.TB, rate uint32, ringSize int) *testbed {
	t.Helper()
	return newTestbedOpts(t, rate, Options{RingBufSize: ringSize})
}

// newTestbedOpts is newTestbed loaded with opts.
func newTestbedOpts(t testing.TB, rate uint32, opts Options) *testbed {
	t.Helper()
	requireRoot(t)
	opts.MaxInterfaces = 4
	d, err := Load(opts)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	in, err := d.NewInjector()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	if err := d.SetConfig(Config{SampleRate: rate}); err != nil {
		t.Fatal(err)
	}
	return &testbed{d: d, progs: in.progs}
}

func (tb *testbed) run(t testing.TB, dir Direction, frame []byte, repeat uint32) {
	t.Helper()
	ret, err := tb.progs[dir].Run(&ebpf.RunOptions{Data: frame, Repeat: repeat})
	if err != nil {
		t.Fatalf("test run of %d-byte frame: %v", len(frame), err)
	}
	if int32(ret) != -1 {
		t.Fatalf("program returned %d, want TCX_NEXT (-1)", int32(ret))
	}
}

// events writes the per-CPU batches to the ring and returns what is in
// it, without blocking.
func (tb *testbed) events(t testing.TB) []Event {
	t.Helper()
	if err := tb.d.FlushBatches(); err != nil {
		t.Fatal(err)
	}
	var out []Event
	buf := make([]Event, 64)
	for {
		// A record can hold more events than buf: a short read means
		// the record and the ring are both used up.
		n, err := tb.d.readNow(buf)
		if err != nil {
			t.Fatalf("read events: %v", err)
		}
		out = append(out, buf[:n]...)
		if n < len(buf) {
			return out
		}
	}
}

func (tb *testbed) counters(t testing.TB, dir Direction) rawCounters {
	t.Helper()
	var perCPU []rawCounters
	if err := tb.d.chunks[0].Lookup(uint32(dir), &perCPU); err != nil {
		t.Fatal(err)
	}
	var sum rawCounters
	for _, c := range perCPU {
		for f := range sum.Packets {
			sum.Packets[f] += c.Packets[f]
			sum.Bytes[f] += c.Bytes[f]
		}
	}
	return sum
}

func mapped(s string) [16]byte { return netip.MustParseAddr(s).As16() }

const (
	v4a, v4b = "198.18.0.1", "198.19.255.2"
	v6a, v6b = "2001:db8::1", "2001:db8:ffff::2"
)

type wantEvent struct {
	src, dst     string
	sport, dport uint16
	proto        uint8
	len          uint32
	truncated    bool
}

func TestParseFrames(t *testing.T) {
	udp4 := ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 40000, 53, 10))
	udp6 := ipv6Packet(v6a, v6b, 17, nil, l4Header(17, 40000, 53, 10))
	tcp4opt := ipv4Packet(v4a, v4b, 6, v4opts{optionLen: 8}, l4Header(6, 1234, 443, 0))
	cases := []struct {
		name  string
		frame []byte
		fam   Family
		want  *wantEvent
	}{
		{"ipv4 udp", append(ethHeader(0x0800), udp4...), FamilyIPv4,
			&wantEvent{v4a, v4b, 40000, 53, 17, uint32(len(udp4)), false}},
		{"ipv4 tcp with options honours IHL", append(ethHeader(0x0800), tcp4opt...), FamilyIPv4,
			&wantEvent{v4a, v4b, 1234, 443, 6, uint32(len(tcp4opt)), false}},
		{"ipv4 sctp", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 132, v4opts{}, l4Header(132, 5000, 6000, 4))...), FamilyIPv4,
			&wantEvent{v4a, v4b, 5000, 6000, 132, 20 + 16, false}},
		{"ipv4 udplite", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 136, v4opts{}, l4Header(136, 7, 9, 0))...), FamilyIPv4,
			&wantEvent{v4a, v4b, 7, 9, 136, 28, false}},
		// ICMP type and code in the destination port, NetFlow style.
		{"ipv4 icmp echo request", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 1, v4opts{}, icmpHeader(8, 0, 8))...), FamilyIPv4,
			&wantEvent{v4a, v4b, 0, 8 * 256, 1, 36, false}},
		{"ipv4 icmp time exceeded", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 1, v4opts{}, icmpHeader(11, 0, 28))...), FamilyIPv4,
			&wantEvent{v4a, v4b, 0, 11 * 256, 1, 56, false}},
		{"ipv4 icmp port unreachable", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 1, v4opts{}, icmpHeader(3, 3, 28))...), FamilyIPv4,
			&wantEvent{v4a, v4b, 0, 3*256 + 3, 1, 56, false}},
		{"ipv4 icmp later fragment has no type", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 1, v4opts{fragOffset: 2}, icmpHeader(8, 0, 8))...), FamilyIPv4,
			&wantEvent{v4a, v4b, 0, 0, 1, 36, false}},
		{"ipv4 icmp shorter than type, code and checksum is malformed", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 1, v4opts{}, []byte{8, 0, 0})...), FamilyIPv4, nil},
		{"ipv4 protocol 58 is not icmp", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 58, v4opts{}, icmpHeader(128, 0, 8))...), FamilyIPv4,
			&wantEvent{v4a, v4b, 0, 0, 58, 36, false}},
		{"ipv4 first fragment keeps ports", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{moreFrags: true}, l4Header(17, 1000, 2000, 16))...), FamilyIPv4,
			&wantEvent{v4a, v4b, 1000, 2000, 17, 44, false}},
		{"ipv4 later fragment reports ports 0", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{fragOffset: 3}, make([]byte, 24))...), FamilyIPv4,
			&wantEvent{v4a, v4b, 0, 0, 17, 44, false}},
		{"ipv4 IHL below 5 is malformed", func() []byte {
			f := append(ethHeader(0x0800), udp4...)
			f[14] = 0x44
			return f
		}(), FamilyIPv4, nil},
		{"ipv4 total length beyond frame is malformed", func() []byte {
			f := append(ethHeader(0x0800), udp4...)
			f[16], f[17] = 0x05, 0xdc
			return f
		}(), FamilyIPv4, nil},
		{"not ipv4 inside an ipv4 ethertype", func() []byte {
			f := append(ethHeader(0x0800), udp4...)
			f[14] = 0x65
			return f
		}(), FamilyIPv4, nil},
		{"ipv6 udp", append(ethHeader(0x86dd), udp6...), FamilyIPv6,
			&wantEvent{v6a, v6b, 40000, 53, 17, uint32(len(udp6)), false}},
		{"ipv6 hop-by-hop, destination options and routing", append(ethHeader(0x86dd),
			ipv6Packet(v6a, v6b, 6, []ext{{typ: 0, len: 8}, {typ: 60, len: 16}, {typ: 43, len: 24}}, l4Header(6, 33000, 22, 0))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 33000, 22, 6, 40 + 48 + 20, false}},
		{"ipv6 AH", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, []ext{{typ: 51, len: 12}}, l4Header(17, 1, 2, 0))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 1, 2, 17, 40 + 12 + 8, false}},
		{"ipv6 first fragment keeps ports", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, []ext{{typ: 44, len: 8}}, l4Header(17, 1111, 2222, 8))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 1111, 2222, 17, 40 + 8 + 16, false}},
		{"ipv6 later fragment reports ports 0", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, []ext{{typ: 44, len: 8, fragOf: 10}}, make([]byte, 32))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 0, 0, 17, 40 + 8 + 32, false}},
		{"ipv6 icmpv6 echo request", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 58, nil, icmpHeader(128, 0, 4))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 0, 128 * 256, 58, 40 + 12, false}},
		{"ipv6 icmpv6 port unreachable behind a hop-by-hop header", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 58, []ext{{typ: 0, len: 8}}, icmpHeader(1, 4, 48))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 0, 1*256 + 4, 58, 40 + 8 + 56, false}},
		{"ipv6 icmpv6 time exceeded", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 58, nil, icmpHeader(3, 0, 48))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 0, 3 * 256, 58, 40 + 56, false}},
		{"ipv6 protocol 1 is not icmpv6", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 1, nil, icmpHeader(8, 0, 4))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 0, 0, 1, 40 + 12, false}},
		{"ipv6 eight extension headers keep ports", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, []ext{
			{typ: 60, len: 8}, {typ: 60, len: 8}, {typ: 60, len: 8}, {typ: 60, len: 8},
			{typ: 60, len: 8}, {typ: 60, len: 8}, {typ: 60, len: 8}, {typ: 60, len: 8}}, l4Header(17, 1, 2, 0))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 1, 2, 17, 40 + 64 + 8, false}},
		{"ipv6 longer extension chain is a truncated flow", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, []ext{
			{typ: 60, len: 8}, {typ: 60, len: 8}, {typ: 60, len: 8}, {typ: 60, len: 8}, {typ: 60, len: 8},
			{typ: 60, len: 8}, {typ: 60, len: 8}, {typ: 60, len: 8}, {typ: 60, len: 8}}, l4Header(17, 1, 2, 0))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 0, 0, 60, 40 + 72 + 8, true}},
		{"ipv6 options padding ports far out is a truncated flow", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 6, []ext{
			{typ: 60, len: 200}, {typ: 60, len: 200}, {typ: 60, len: 200}, {typ: 60, len: 200}, {typ: 60, len: 200},
			{typ: 60, len: 200}, {typ: 0, len: 8}, {typ: 43, len: 8}, {typ: 60, len: 8}}, l4Header(6, 1, 2, 0))...), FamilyIPv6,
			&wantEvent{v6a, v6b, 0, 0, 60, 40 + 1224 + 20, true}},
		{"mpls one label ipv4", mplsFrame(1, udp4), FamilyIPv4,
			&wantEvent{v4a, v4b, 40000, 53, 17, uint32(len(udp4)), false}},
		{"mpls two labels ipv6", mplsFrame(2, udp6), FamilyIPv6,
			&wantEvent{v6a, v6b, 40000, 53, 17, uint32(len(udp6)), false}},
		{"mpls three labels behind a tag ipv4", mplsFrame(3, udp4, 0x8100), FamilyIPv4,
			&wantEvent{v4a, v4b, 40000, 53, 17, uint32(len(udp4)), false}},
		{"mpls eight labels ipv6", mplsFrame(8, udp6), FamilyIPv6,
			&wantEvent{v6a, v6b, 40000, 53, 17, uint32(len(udp6)), false}},
		{"mpls nine labels are more than walked", mplsFrame(9, udp4), FamilyOther, nil},
		{"mpls over a non-IP payload is other", mplsFrame(1, append([]byte{0x00}, udp4[1:]...)), FamilyOther, nil},
		{"pppoe ipv4", pppoeFrame(0x0021, udp4), FamilyIPv4,
			&wantEvent{v4a, v4b, 40000, 53, 17, uint32(len(udp4)), false}},
		{"pppoe ipv6 behind a tag", pppoeFrame(0x0057, udp6, 0x8100), FamilyIPv6,
			&wantEvent{v6a, v6b, 40000, 53, 17, uint32(len(udp6)), false}},
		{"pppoe LCP is other", pppoeFrame(0xc021, make([]byte, 8)), FamilyOther, nil},
		{"802.1Q ipv4", append(ethHeader(0x0800, 0x8100), udp4...), FamilyIPv4,
			&wantEvent{v4a, v4b, 40000, 53, 17, uint32(len(udp4)), false}},
		{"QinQ 802.1ad outer, 802.1Q inner, ipv6", append(ethHeader(0x86dd, 0x88a8, 0x8100), udp6...), FamilyIPv6,
			&wantEvent{v6a, v6b, 40000, 53, 17, uint32(len(udp6)), false}},
		{"QinQ 802.1Q outer, 802.1Q inner, ipv4", append(ethHeader(0x0800, 0x8100, 0x8100), udp4...), FamilyIPv4,
			&wantEvent{v4a, v4b, 40000, 53, 17, uint32(len(udp4)), false}},
		{"three tags are more than supported", append(ethHeader(0x0800, 0x88a8, 0x8100, 0x8100), udp4...), FamilyOther, nil},
		{"ARP is other", append(ethHeader(0x0806), make([]byte, 28)...), FamilyOther, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, dir := range []Direction{Ingress, Egress} {
				tb := newTestbed(t, 1)
				tb.run(t, dir, tc.frame, 1)
				c := tb.counters(t, dir)
				for f := Family(0); f < numFamilies; f++ {
					wantP, wantB := uint64(0), uint64(0)
					if f == tc.fam {
						wantP, wantB = 1, uint64(len(tc.frame))
					}
					if c.Packets[f] != wantP || c.Bytes[f] != wantB {
						t.Errorf("%s %s counters = %d packets %d bytes, want %d/%d", dir, f, c.Packets[f], c.Bytes[f], wantP, wantB)
					}
				}
				evs := tb.events(t)
				if tc.want == nil {
					if len(evs) != 0 {
						t.Fatalf("%s: got %d events, want none: %+v", dir, len(evs), evs)
					}
					continue
				}
				if len(evs) != 1 {
					t.Fatalf("%s: got %d events, want 1", dir, len(evs))
				}
				e := evs[0]
				w := tc.want
				if e.Src != mapped(w.src) || e.Dst != mapped(w.dst) || e.SrcPort != w.sport || e.DstPort != w.dport ||
					e.Proto != w.proto || e.Len != w.len || e.Truncated != w.truncated || e.Dir != dir || e.Segs != 1 ||
					e.SampleRate != 1 || e.Ifindex == 0 || e.BootNs == 0 {
					t.Errorf("%s: event %+v, want %+v", dir, e, *w)
				}
			}
		})
	}
}

// Every truncation of a valid frame is counted and never yields an event.
func TestTruncatedFrames(t *testing.T) {
	frames := map[string][]byte{
		"ipv4 udp":        append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 1, 2, 4))...),
		"ipv4 tcp":        append(ethHeader(0x0800, 0x8100), ipv4Packet(v4a, v4b, 6, v4opts{optionLen: 4}, l4Header(6, 1, 2, 0))...),
		"ipv6 ext chain":  append(ethHeader(0x86dd, 0x88a8, 0x8100), ipv6Packet(v6a, v6b, 17, []ext{{typ: 0, len: 8}, {typ: 44, len: 8}}, l4Header(17, 1, 2, 4))...),
		"ipv4 tagged":     append(ethHeader(0x0800, 0x8100), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 1, 2, 4))...),
		"ipv6 tagged":     append(ethHeader(0x86dd, 0x8100), ipv6Packet(v6a, v6b, 17, nil, l4Header(17, 1, 2, 4))...),
		"ipv6 fragmented": append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, []ext{{typ: 44, len: 8, fragOf: 2}}, make([]byte, 8))...),
	}
	tb := newTestbed(t, 1)
	for name, full := range frames {
		for n := 14; n < len(full); n++ {
			before := tb.counters(t, Ingress)
			// BPF_PROG_TEST_RUN itself refuses untagged IPv4/IPv6 frames
			// shorter than the IP header; tagged frames cover those cuts.
			if _, err := tb.progs[Ingress].Run(&ebpf.RunOptions{Data: full[:n]}); err != nil {
				if errors.Is(err, unix.EINVAL) && n < 14+40 {
					continue
				}
				t.Fatalf("%s truncated to %d bytes: %v", name, n, err)
			}
			after := tb.counters(t, Ingress)
			var dp uint64
			for f := range after.Packets {
				dp += after.Packets[f] - before.Packets[f]
			}
			if dp != 1 {
				t.Fatalf("%s truncated to %d bytes: counted %d packets, want 1", name, n, dp)
			}
			if evs := tb.events(t); len(evs) != 0 {
				t.Fatalf("%s truncated to %d bytes: produced event %+v", name, n, evs[0])
			}
		}
	}
	st, err := tb.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Malformed == 0 {
		t.Errorf("malformed counter stayed 0")
	}
}

func TestSamplingRate(t *testing.T) {
	frame := append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 1, 2, 4))...)
	const packets = 100000
	for _, rate := range []uint32{0, 1, 10, 1000} {
		tb := newTestbed(t, rate)
		tb.run(t, Ingress, frame, packets)
		if c := tb.counters(t, Ingress); c.Packets[FamilyIPv4] != packets {
			t.Fatalf("rate %d: counted %d packets, want %d", rate, c.Packets[FamilyIPv4], packets)
		}
		// Events of a flow's packets in a row carry them all: count
		// packets and bytes as the flow table does.
		got, bytes := sampledPackets(tb.events(t))
		if l3 := uint64(len(frame) - 14); bytes != got*l3 {
			t.Errorf("rate %d: %d sampled packets of %d bytes, want %d bytes", rate, got, bytes, got*l3)
		}
		switch rate {
		case 0:
			if got != 0 {
				t.Errorf("rate 0: %d sampled packets, want 0", got)
			}
		case 1:
			if got != packets {
				t.Errorf("rate 1: %d sampled packets, want %d", got, packets)
			}
		default:
			// Mean packets/rate; the uniform gap keeps the spread small.
			want := uint64(packets) / uint64(rate)
			if got < want*8/10 || got > want*12/10 {
				t.Errorf("rate %d: %d sampled packets, want about %d", rate, got, want)
			}
		}
	}
}

func TestExcludeTuple(t *testing.T) {
	frame := append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 4739, 2055, 4))...)
	tb := newTestbed(t, 1)
	match := Tuple{Src: netip.MustParseAddrPort(v4a + ":4739"), Dst: netip.MustParseAddrPort(v4b + ":2055")}
	cfg := Config{SampleRate: 1, Exclude: []Tuple{match}}
	if err := tb.d.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	tb.run(t, Egress, frame, 1)
	if evs := tb.events(t); len(evs) != 0 {
		t.Fatalf("excluded tuple produced %d events", len(evs))
	}
	if c := tb.counters(t, Egress); c.Packets[FamilyIPv4] != 1 {
		t.Fatalf("excluded packet not counted on the interface")
	}
	// Same addresses, other source port, in every slot: exported.
	other := match
	other.Src = netip.MustParseAddrPort(v4a + ":4740")
	cfg.Exclude = make([]Tuple, MaxExclude)
	for i := range cfg.Exclude {
		cfg.Exclude[i] = other
	}
	if err := tb.d.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	tb.run(t, Egress, frame, 1)
	if evs := tb.events(t); len(evs) != 1 {
		t.Fatalf("non-matching tuples: %d events, want 1", len(evs))
	}
	// The last slot excludes as well (one socket per collector, old and
	// new ones during a reload).
	cfg.Exclude[MaxExclude-1] = match
	if err := tb.d.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	tb.run(t, Egress, frame, 1)
	if evs := tb.events(t); len(evs) != 0 {
		t.Fatalf("tuple in the last slot produced %d events", len(evs))
	}
	if err := tb.d.SetConfig(Config{SampleRate: 1, Exclude: append(cfg.Exclude, match)}); err == nil {
		t.Errorf("SetConfig took %d tuples to exclude, more than the %d slots", MaxExclude+1, MaxExclude)
	}
}

func TestRingFullCountsDrops(t *testing.T) {
	requireRoot(t)
	d, err := Load(Options{RingBufSize: 4096, MaxInterfaces: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in, err := d.NewInjector()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := d.SetConfig(Config{SampleRate: 1}); err != nil {
		t.Fatal(err)
	}
	// 1000 packets of 1000 flows (an event each) overfill the ring; then
	// 500 of one flow, whose events each carry a run of packets, are
	// lost with it and must count every packet they carried.
	const flows, run = 1000, 500
	tb := &testbed{d: d, progs: in.progs}
	for i := range flows {
		tb.run(t, Ingress, udpFlowFrame(i), 1)
	}
	for range run {
		tb.run(t, Ingress, udpFlowFrame(flows), 1)
	}
	evs := tb.events(t) // flushes the batches first
	got, _ := sampledPackets(evs)
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// A 4096-byte ring holds fewer than 4096/EventSize events, however they are
	// batched into records; every other packet is a counted drop.
	if len(evs) == 0 || len(evs) >= 4096/EventSize || st.RingDrops != flows+run-got {
		t.Fatalf("%d events of %d packets delivered and %d drops counted, want drops = %d - delivered",
			len(evs), got, st.RingDrops, flows+run)
	}
}

// A hook with sampling turned off still counts every packet but reports
// none; the other hook keeps sampling.
func TestUnsampledDirection(t *testing.T) {
	frame := append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 40000, 53, 10))...)
	for _, off := range []Direction{Ingress, Egress} {
		t.Run("no "+off.String(), func(t *testing.T) {
			tb := newTestbed(t, 1)
			cfg := Config{SampleRate: 1}
			cfg.Unsampled[off] = true
			if err := tb.d.SetConfig(cfg); err != nil {
				t.Fatal(err)
			}
			for _, dir := range []Direction{Ingress, Egress} {
				tb.run(t, dir, frame, 3)
				if c := tb.counters(t, dir); c.Packets[FamilyIPv4] != 3 || c.Bytes[FamilyIPv4] != 3*uint64(len(frame)) {
					t.Errorf("%s counters %d packets %d bytes, want 3 and %d", dir, c.Packets[FamilyIPv4], c.Bytes[FamilyIPv4], 3*len(frame))
				}
			}
			evs := tb.events(t)
			if n, _ := sampledPackets(evs); n != 3 {
				t.Fatalf("%d sampled packets, want the 3 of the sampled hook: %+v", n, evs)
			}
			for _, e := range evs {
				if e.Dir == off {
					t.Errorf("event at %s, where sampling is off: %+v", off, e)
				}
			}
		})
	}
}

// TestOptionalFields loads the programs with every optional field and
// checks each against values written into the frame, and that the
// default load reports none of them.
func TestOptionalFields(t *testing.T) {
	tcp := l4Header(6, 1234, 443, 0)
	tcp[13] = 0x12 // SYN, ACK
	v4 := ipv4Packet(v4a, v4b, 6, v4opts{}, tcp)
	v4[1] = 0xb8 | 1 // DSCP EF (46), ECN ECT(1)
	v4[8] = 17       // TTL
	v6 := ipv6Packet(v6a, v6b, 6, []ext{{typ: 0, len: 8}}, tcp)
	v6[0], v6[1] = 0x6b, 0x83 // traffic class 0xb8: DSCP EF, ECN CE (3)
	v6[7] = 3                 // hop limit
	udp := ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 1, 2, 4))
	cases := []struct {
		name  string
		frame []byte
		want  EventFields
	}{
		{"ipv4 tcp untagged", append(ethHeader(0x0800), v4...), EventFields{TCPFlags: 0x12, TOS: 0xb8, TTL: 17}},
		{"ipv4 tcp 802.1Q", append(ethHeader(0x0800, 0x8100), v4...), EventFields{TCPFlags: 0x12, TOS: 0xb8, TTL: 17, VLANOuter: 100}},
		{"ipv6 tcp QinQ behind hop-by-hop", append(ethHeader(0x86dd, 0x88a8, 0x8100), v6...), EventFields{TCPFlags: 0x12, TOS: 0xb8, TTL: 3, VLANOuter: 100, VLANInner: 101}},
		{"ipv4 udp has no TCP flags", append(ethHeader(0x0800), udp...), EventFields{TTL: 64}},
		{"ipv4 tcp later fragment has no TCP flags", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 6, v4opts{fragOffset: 8}, tcp)...), EventFields{TTL: 64}},
		{"mpls ipv4 tcp behind a tag", mplsFrame(2, v4, 0x8100), EventFields{TCPFlags: 0x12, TOS: 0xb8, TTL: 17, VLANOuter: 100}},
	}
	noFIB := fieldsAll &^ FieldFIB // a FIB lookup depends on the host's routes: see test/realnet
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 20, Fields: noFIB})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, dir := range []Direction{Ingress, Egress} {
				tb.run(t, dir, tc.frame, 1)
				evs := tb.events(t)
				if len(evs) != 1 {
					t.Fatalf("%s: %d events, want 1", dir, len(evs))
				}
				if evs[0].EventFields != tc.want {
					t.Errorf("%s: fields %+v, want %+v", dir, evs[0].EventFields, tc.want)
				}
				if ref := refParse(tc.frame); !sameFlow(evs[0], ref.ev) {
					t.Errorf("%s: event %+v, want %+v", dir, evs[0], ref.ev)
				}
			}
		})
	}
	t.Run("each field alone", func(t *testing.T) {
		frame := append(ethHeader(0x86dd, 0x88a8, 0x8100), v6...)
		all := EventFields{TCPFlags: 0x12, TOS: 0xb8, TTL: 3, VLANOuter: 100, VLANInner: 101}
		for _, f := range []Fields{FieldTCPFlags, FieldDSCP, FieldTTL, FieldVLAN} {
			want := EventFields{}
			switch f {
			case FieldTCPFlags:
				want.TCPFlags = all.TCPFlags
			case FieldDSCP:
				want.TOS = all.TOS
			case FieldTTL:
				want.TTL = all.TTL
			case FieldVLAN:
				want.VLANOuter, want.VLANInner = all.VLANOuter, all.VLANInner
			}
			tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 20, Fields: f})
			tb.run(t, Ingress, frame, 1)
			evs := tb.events(t)
			if len(evs) != 1 || evs[0].EventFields != want {
				t.Errorf("fields %#x: events %+v, want one with %+v", f, evs, want)
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		tb := newTestbed(t, 1)
		tb.run(t, Ingress, append(ethHeader(0x86dd, 0x88a8, 0x8100), v6...), 1)
		if evs := tb.events(t); len(evs) != 1 || evs[0].EventFields != (EventFields{}) {
			t.Errorf("default load: events %+v, want one without optional fields", evs)
		}
	})
}

// Every optional field, alone and all together, passes the verifier in
// both link kinds (Load loads both).
func TestLoadWithFields(t *testing.T) {
	requireRoot(t)
	for _, f := range []Fields{FieldTCPFlags, FieldDSCP, FieldTTL, FieldVLAN, FieldFIB, fieldsAll} {
		d, err := Load(Options{MaxInterfaces: 4, Fields: f})
		if err != nil {
			t.Fatalf("fields %#x: %v", f, err)
		}
		d.Close()
	}
	if _, err := Load(Options{MaxInterfaces: 4, Fields: fieldsAll + 1}); err == nil {
		t.Error("Load took an unknown field bit")
	}
}
