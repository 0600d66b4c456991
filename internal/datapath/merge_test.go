// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// udpFlowFrame is an IPv4 UDP frame of flow i: source port 40000+i, the
// rest as benchFrames()[0]. Frames of different i are different flows,
// so run one after the other they never share an event.
func udpFlowFrame(i int) []byte {
	return append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, uint16(40000+i), 53, 64))...)
}

// udp6FlowFrame is udpFlowFrame in IPv6.
func udp6FlowFrame(i int) []byte {
	return append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, nil, l4Header(17, uint16(40000+i), 53, 64))...)
}

// sampledPackets is what the flow table takes from events: the packets
// (an event counts its Segs: the segments of a GSO skb, or a run of one
// flow's packets) and the L3 bytes they stand for.
func sampledPackets(evs []Event) (packets, bytes uint64) {
	for _, e := range evs {
		packets += uint64(e.Segs)
		bytes += uint64(e.Len)
	}
	return packets, bytes
}

// bootNow is CLOCK_BOOTTIME, the events' clock.
func bootNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// withinOneTick runs scenario on one CPU and returns its events, once
// they all carry one timestamp: the batch's stamp was not renewed, so
// the kernel's tick did not move on between its first and last packet
// (which ends a run: see rfm_batch_commit). A scenario takes
// microseconds and a tick is 1-10 ms, so a retry is rare. Every event's
// time must lie between the clock read before and after the scenario.
func withinOneTick(t *testing.T, tb *testbed, scenario func()) []Event {
	t.Helper()
	for attempt := 0; attempt < 10; attempt++ {
		tb.events(t) // an empty batch and ring to start from
		before := bootNow(t)
		scenario()
		after := bootNow(t)
		evs := tb.events(t)
		one := true
		for _, e := range evs {
			if e.BootNs < before || e.BootNs > after {
				t.Fatalf("event time %d outside the scenario's [%d, %d]", e.BootNs, before, after)
			}
			one = one && e.BootNs == evs[0].BootNs
		}
		if one {
			return evs
		}
	}
	t.Fatal("the tick moved on during every one of 10 attempts")
	return nil
}

// run is one flow's packets in a row: how the events should come out.
type run struct {
	sport   uint16
	packets int
	rate    uint32
}

func (r run) String() string { return fmt.Sprintf("%d×%d@%d", r.sport, r.packets, r.rate) }

// brief is events as the runs they carry, for failure messages.
func brief(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s %d×%d@%d %dB flags %#x ttl %d", e.Dir, e.SrcPort, e.Segs, e.SampleRate, e.Len, e.TCPFlags, e.TTL)
	}
	return out
}

// checkRuns compares events with the runs they must be, one event each,
// with the bytes of that many copies of an l3-byte packet.
func checkRuns(t *testing.T, evs []Event, want []run, l3 uint32) {
	t.Helper()
	if len(evs) != len(want) {
		t.Fatalf("%d events %v, want %d: %v", len(evs), brief(evs), len(want), want)
	}
	for i, w := range want {
		e := evs[i]
		if e.SrcPort != w.sport || int(e.Segs) != w.packets || e.Len != uint32(w.packets)*l3 || e.SampleRate != w.rate {
			t.Errorf("event %d: port %d, %d packets, %d bytes, rate %d; want %v of %d bytes each",
				i, e.SrcPort, e.Segs, e.Len, e.SampleRate, w, l3)
		}
	}
}

// Packets of one flow in a row on one CPU become one event carrying
// their packets and bytes; after two packets of other flows a packet
// starts a new event, and three interleaved flows are one event per
// packet. Two flows alternating share two events: a packet joins one of
// the last two events of its flow.
func TestMergeRunsOfOneFlow(t *testing.T) {
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 20, BatchFlush: time.Hour})
	pinToFirstCPU(t)
	a, b, c := udpFlowFrame(0), udpFlowFrame(1), udpFlowFrame(2)
	l3 := uint32(len(a) - 14)
	send := func(frame []byte, n int) {
		for range n {
			tb.run(t, Ingress, frame, 1)
		}
	}
	evs := withinOneTick(t, tb, func() {
		send(a, 5) // a5
		send(b, 3) // a5 b3
		send(a, 2) // a7 b3: a's event is one of the last two
		send(c, 1) // a7 b3 c1
		send(b, 1) // a7 b4 c1
		send(a, 1) // a7 b4 c1 a1: a's event is not among the last two
		for range 2 {
			send(a, 1) // a2 the first time, then a new a1
			send(b, 1) // new b1 each time
			send(c, 1) // new c1 each time
		}
	})
	checkRuns(t, evs, []run{{40000, 7, 1}, {40001, 4, 1}, {40002, 1, 1}, {40000, 2, 1},
		{40001, 1, 1}, {40002, 1, 1}, {40000, 1, 1}, {40001, 1, 1}, {40002, 1, 1}}, l3)

	// The two directions are two flows.
	evs = withinOneTick(t, tb, func() {
		tb.run(t, Ingress, a, 1)
		tb.run(t, Egress, a, 1)
		tb.run(t, Egress, a, 1)
	})
	if len(evs) != 2 || evs[0].Dir != Ingress || evs[0].Segs != 1 || evs[1].Dir != Egress || evs[1].Segs != 2 {
		t.Errorf("ingress, egress, egress: events %v, want 1 ingress and 2 egress packets", brief(evs))
	}
}

// A forwarded packet is sampled at ingress and again at egress, on one
// CPU: its two events alternate in the batch, and each direction's
// packets still share an event. A third flow in between ends both runs.
func TestMergeForwardedBothDirections(t *testing.T) {
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 20, BatchFlush: time.Hour})
	pinToFirstCPU(t)
	a, other := udpFlowFrame(0), udpFlowFrame(1)
	l3 := uint32(len(a) - 14)
	evs := withinOneTick(t, tb, func() {
		for range 5 {
			tb.run(t, Ingress, a, 1)
			tb.run(t, Egress, a, 1)
		}
		tb.run(t, Ingress, other, 1)
		tb.run(t, Egress, other, 1)
		tb.run(t, Ingress, a, 1)
	})
	type want struct {
		dir     Direction
		sport   uint16
		packets int
	}
	wants := []want{{Ingress, 40000, 5}, {Egress, 40000, 5}, {Ingress, 40001, 1}, {Egress, 40001, 1}, {Ingress, 40000, 1}}
	if len(evs) != len(wants) {
		t.Fatalf("%d events %v, want %d: ingress and egress 5 each, the other flow's two, then a new ingress event", len(evs), brief(evs), len(wants))
	}
	for i, w := range wants {
		if e := evs[i]; e.Dir != w.dir || e.SrcPort != w.sport || int(e.Segs) != w.packets || e.Len != uint32(w.packets)*l3 {
			t.Errorf("event %d: %v, want %s %d×%d", i, brief(evs[i:i+1]), w.dir, w.sport, w.packets)
		}
	}
}

// A run of packets sampled at one rate never takes in a packet sampled
// at another: each event's packets are multiplied by its own rate.
func TestMergeKeepsRatesApart(t *testing.T) {
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 20, BatchFlush: time.Hour})
	pinToFirstCPU(t)
	a := udpFlowFrame(0)
	l3 := uint32(len(a) - 14)
	setRate := func(rate uint32) {
		if err := tb.d.SetConfig(Config{SampleRate: rate}); err != nil {
			t.Fatal(err)
		}
	}
	const atTwo = 40
	evs := withinOneTick(t, tb, func() {
		setRate(1)
		for range 3 {
			tb.run(t, Ingress, a, 1)
		}
		setRate(2)
		for range atTwo {
			tb.run(t, Ingress, a, 1)
		}
		setRate(1)
		for range 4 {
			tb.run(t, Ingress, a, 1)
		}
	})
	// At rate 2 the sampler takes a random share of the 40 packets (gaps
	// of 1 to 3): between 13 and 40 of them, in one event. The last 4
	// join the first event, of their rate and flow and one of the last
	// two events.
	if len(evs) != 2 {
		t.Fatalf("%d events %v, want one per rate", len(evs), brief(evs))
	}
	checkRuns(t, evs[:1], []run{{40000, 3 + 4, 1}}, l3)
	if m := evs[1]; m.SampleRate != 2 || m.Segs < atTwo/3 || m.Segs > atTwo || m.Len != uint32(m.Segs)*l3 {
		t.Errorf("rate 2 event %+v, want 13-40 packets of %d bytes at rate 2", m, l3)
	}
}

// A run ends where its packet count would no longer fit the event's
// 16-bit segments: GSO skbs of 30,000 segments merge two by two.
func TestMergeCapsSegments(t *testing.T) {
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 20, BatchFlush: time.Hour})
	pinToFirstCPU(t)
	frame := append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 6, v4opts{}, append(tcpHeader(5001, 40000, 32), make([]byte, 1200)...))...)
	const segs = 30000
	ctx := gsoContext(segs, 100, 0)
	evs := withinOneTick(t, tb, func() {
		for range 3 {
			if _, err := tb.progs[Ingress].Run(&ebpf.RunOptions{Data: frame, Context: ctx}); err != nil {
				t.Fatal(err)
			}
		}
	})
	// One skb's L3 bytes: the IP packet, plus the IP and TCP headers
	// (20 + 32) of every further segment.
	one := uint32(len(frame)-14) + (segs-1)*(20+32)
	if len(evs) != 2 || evs[0].Segs != 2*segs || evs[0].Len != 2*one || evs[1].Segs != segs || evs[1].Len != one {
		t.Fatalf("events %v, want %d then %d segments (%d and %d bytes)", brief(evs), 2*segs, segs, 2*one, one)
	}
}

// With optional fields, packets of one flow merge when every field but
// the TCP flags is equal; the event carries the OR of their flags. A
// packet with another TTL starts a new event.
func TestMergeWithFields(t *testing.T) {
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 20, BatchFlush: time.Hour, Fields: fieldsAll &^ FieldFIB})
	pinToFirstCPU(t)
	tcp := func(flags, ttl byte) []byte {
		h := l4Header(6, 1234, 443, 0)
		h[13] = flags
		p := ipv4Packet(v4a, v4b, 6, v4opts{}, h)
		p[8] = ttl
		return append(ethHeader(0x0800), p...)
	}
	const syn, ack, psh, fin = 0x02, 0x10, 0x08, 0x01
	evs := withinOneTick(t, tb, func() {
		tb.run(t, Ingress, tcp(syn, 64), 1)
		tb.run(t, Ingress, tcp(ack, 64), 1)
		tb.run(t, Ingress, tcp(psh|ack, 64), 1)
		tb.run(t, Ingress, tcp(fin|ack, 63), 1)
		tb.run(t, Ingress, tcp(ack, 63), 1)
	})
	if len(evs) != 2 {
		t.Fatalf("%d events %v, want 2 (TTL 64, then 63)", len(evs), brief(evs))
	}
	if e := evs[0]; e.Segs != 3 || e.TCPFlags != syn|ack|psh || e.TTL != 64 || e.Len != 3*40 {
		t.Errorf("first event %+v, want 3 packets, 120 bytes, flags %#x, TTL 64", e, syn|ack|psh)
	}
	if e := evs[1]; e.Segs != 2 || e.TCPFlags != fin|ack || e.TTL != 63 || e.Len != 2*40 {
		t.Errorf("second event %+v, want 2 packets, 80 bytes, flags %#x, TTL 63", e, fin|ack)
	}
}
