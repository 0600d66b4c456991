// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// benchFrames are the frames of the per-packet cost benchmark.
func benchFrames() []benchFrame {
	gso := append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 6, v4opts{}, append(tcpHeader(5001, 40000, 32), make([]byte, 1200)...))...)
	return []benchFrame{
		{name: "ipv4", frame: append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 40000, 53, 64))...)},
		{name: "ipv6", frame: append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, nil, l4Header(17, 40000, 53, 64))...)},
		{name: "qinq-ipv4", frame: append(ethHeader(0x0800, 0x88a8, 0x8100), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 40000, 53, 64))...)},
		{name: "ipv6-ext", frame: append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, []ext{{typ: 0, len: 8}, {typ: 60, len: 16}}, l4Header(17, 40000, 53, 64))...)},
		{name: "mpls3-ipv4", frame: mplsFrame(3, ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 40000, 53, 64)))},
		{name: "pppoe-ipv6", frame: pppoeFrame(0x0057, ipv6Packet(v6a, v6b, 17, nil, l4Header(17, 40000, 53, 64)))},
		// A TCP super-packet of 12 segments, as the stack's own (gso_segs
		// set) and as from a tap (gso_segs 0: derived from gso_size).
		{name: "gso12-tcp", frame: gso, ctx: gsoContext(12, 100, 0)},
		{name: "gso12-tcp-untrusted", frame: gso, ctx: gsoContext(0, 100, 0)},
	}
}

type benchFrame struct {
	name  string
	frame []byte
	ctx   *skbContext // GSO fields; nil for a plain packet
}

// runBench runs p over f b.N times; with a context, which Benchmark
// cannot pass, the time is the wall time of one b.N-repeat test run.
func runBench(b *testing.B, p *ebpf.Program, f benchFrame) time.Duration {
	if f.ctx == nil {
		_, d, err := p.Benchmark(f.frame, b.N, b.ResetTimer)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	b.ResetTimer()
	start := time.Now()
	if _, err := p.Run(&ebpf.RunOptions{Data: f.frame, Context: f.ctx, Repeat: uint32(b.N)}); err != nil {
		b.Fatal(err)
	}
	return time.Since(start) / time.Duration(b.N)
}

// floorProgram loads the empty TCX program of bpf/rfm.c: the cost any
// TC program has, against which ours is reported.
func floorProgram(b *testing.B) *ebpf.Program {
	spec, err := loadRfm()
	if err != nil {
		b.Fatal(err)
	}
	for name := range spec.Programs {
		if name != rfmProgRfmFloor {
			delete(spec.Programs, name)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(coll.Close)
	return coll.Programs[rfmProgRfmFloor]
}

// BenchmarkDatapath reports ns per packet through BPF_PROG_TEST_RUN for
// the empty floor program and for ours at sample rates 0 (never sampled),
// 100 and 1 (a consumer drains the ring meanwhile), and each figure as
// floor + ns ("over-floor-ns") measured in the same run. The "behind"
// cases run rate 1 against a consumer that drains only every 5 ms, so the
// ring holds a backlog above the wakeup threshold most of the time, as it
// does when the agent falls behind under load.
//
//	go test -run x -bench Datapath -benchtime 1000000x ./internal/datapath
func BenchmarkDatapath(b *testing.B) {
	requireRoot(b)
	frames := benchFrames()
	floor := floorProgram(b)
	var floorNs float64
	b.Run("floor", func(b *testing.B) {
		d := runBench(b, floor, frames[0])
		floorNs = float64(d.Nanoseconds())
		b.ReportMetric(floorNs, "ns/pkt")
	})
	cases := []struct {
		name  string
		rate  uint32
		pause time.Duration // consumer's pause after draining the ring
	}{
		{"rate=0", 0, 0}, {"rate=100", 100, 0}, {"rate=1", 1, 0},
		{"rate=1-behind", 1, 5 * time.Millisecond},
	}
	for _, c := range cases {
		for _, f := range frames {
			b.Run(c.name+"/"+f.name, func(b *testing.B) {
				tb := newTestbed(b, c.rate)
				stop := startConsumer(tb, c.pause)
				d := runBench(b, tb.progs[Ingress], f)
				reportRun(b, tb, d, floorNs, stop())
			})
		}
	}
}

// startConsumer drains tb's ring as the agent does until the returned
// function is called; with a pause it drains only every pause, so the
// ring keeps a backlog. stop returns how many events it read.
func startConsumer(tb *testbed, pause time.Duration) (stop func() (events int)) {
	quit := make(chan struct{})
	done := make(chan struct{})
	read := 0
	go func() {
		defer close(done)
		evs := make([]Event, 512)
		for {
			select {
			case <-quit:
				return
			default:
			}
			if pause == 0 {
				n, _ := tb.d.readWithin(evs, 10*time.Millisecond)
				read += n
				continue
			}
			n, _ := tb.d.readNow(evs)
			read += n
			if n < len(evs) {
				time.Sleep(pause) // drained: fall behind again
			}
		}
	}()
	return func() int {
		close(quit)
		<-done
		return read
	}
}

// reportRun reports one case's figures: ns per packet, against the
// floor when there is one, ring drops, and events read per packet (under
// 1 when the consumer had not caught up yet, or when events stand for
// several packets).
func reportRun(b *testing.B, tb *testbed, d time.Duration, floorNs float64, events int) {
	ns := float64(d.Nanoseconds())
	b.ReportMetric(ns, "ns/pkt")
	if floorNs > 0 {
		b.ReportMetric(ns-floorNs, "over-floor-ns")
		b.ReportMetric(ns/floorNs, "x-floor")
	}
	st, _ := tb.d.Stats()
	b.ReportMetric(float64(st.RingDrops), "ring-drops")
	b.ReportMetric(float64(events)/float64(b.N), "events/pkt")
}

// flowCycler loads a test-only TC program that gives each run's packet
// the next of flows source ports (the low byte of the port at portOff
// counts 0..flows-1, flows a power of two) and tail-calls target. A
// BPF_PROG_TEST_RUN with repeat runs one skb over and over; through the
// cycler consecutive runs are different flows, so the per-packet cost
// of traffic that never repeats a flow back to back can be measured
// with repeat too. Its own cost (a map lookup, a store, a tail call) is
// measured by cycling into the empty floor program.
func flowCycler(b *testing.B, target *ebpf.Program, portOff int16, flows int32) *ebpf.Program {
	b.Helper()
	counter, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { counter.Close() })
	jump, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { jump.Close() })
	if err := jump.Put(uint32(0), target); err != nil {
		b.Fatalf("prog array: %v", err)
	}
	const skbData, skbDataEnd = 76, 80 // offsets in struct __sk_buff
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counter.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "tail"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.Add.Imm(asm.R8, 1),
		asm.StoreMem(asm.R0, 0, asm.R8, asm.Word),
		asm.And.Imm(asm.R7, flows-1),
		asm.LoadMem(asm.R2, asm.R6, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(portOff)+2),
		asm.JGT.Reg(asm.R4, asm.R3, "tail"),
		asm.StoreMem(asm.R2, portOff+1, asm.R7, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("tail"),
		asm.LoadMapPtr(asm.R2, jump.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, -1), // TCX_NEXT, if the tail call failed
		asm.Return(),
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, AttachType: ebpf.AttachTCXIngress,
		License: "GPL", Instructions: insns})
	if err != nil {
		b.Fatalf("flow cycler: %v", err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// BenchmarkDatapathInterleaved is BenchmarkDatapath for traffic whose
// consecutive packets belong to different flows: each run's packet is
// the next of 16 flows (source ports differ), so no two events of a
// batch in a row share a flow. flows=1 runs the same harness with one
// flow. The floor is the cycler in front of the empty program, so
// over-floor-ns is our program's own cost.
//
//	go test -run x -bench DatapathInterleaved -benchtime 1000000x ./internal/datapath
func BenchmarkDatapathInterleaved(b *testing.B) {
	requireRoot(b)
	frames := benchFrames()
	v4, v6 := frames[0], frames[1]
	const v4Sport, v6Sport = 14 + 20, 14 + 40 // source port offsets
	floor := floorProgram(b)
	for _, flows := range []int32{16, 1} {
		var floorNs float64
		b.Run("floor/flows="+strconv.Itoa(int(flows)), func(b *testing.B) {
			d := runBench(b, flowCycler(b, floor, v4Sport, flows), v4)
			floorNs = float64(d.Nanoseconds())
			b.ReportMetric(floorNs, "ns/pkt")
		})
		cases := []struct {
			name string
			rate uint32
			f    benchFrame
			off  int16
		}{
			{"rate=0/ipv4", 0, v4, v4Sport}, {"rate=1/ipv4", 1, v4, v4Sport}, {"rate=1/ipv6", 1, v6, v6Sport},
		}
		for _, c := range cases {
			b.Run(c.name+"/flows="+strconv.Itoa(int(flows)), func(b *testing.B) {
				tb := newTestbed(b, c.rate)
				stop := startConsumer(tb, 0)
				d := runBench(b, flowCycler(b, tb.progs[Ingress], c.off, flows), c.f)
				reportRun(b, tb, d, floorNs, stop())
			})
		}
	}
}
