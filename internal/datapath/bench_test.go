// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
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
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() { // the consumer, as in the agent
					defer close(done)
					evs := make([]Event, 512)
					for {
						select {
						case <-stop:
							return
						default:
						}
						if c.pause == 0 {
							_, _ = tb.d.readWithin(evs, 10*time.Millisecond)
							continue
						}
						if n, _ := tb.d.readNow(evs); n < len(evs) {
							time.Sleep(c.pause) // drained: fall behind again
						}
					}
				}()
				d := runBench(b, tb.progs[Ingress], f)
				close(stop)
				<-done
				ns := float64(d.Nanoseconds())
				b.ReportMetric(ns, "ns/pkt")
				if floorNs > 0 {
					b.ReportMetric(ns-floorNs, "over-floor-ns")
					b.ReportMetric(ns/floorNs, "x-floor")
				}
				st, _ := tb.d.Stats()
				b.ReportMetric(float64(st.RingDrops), "ring-drops")
			})
		}
	}
}
