// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// benchFrames are the frames of the per-packet cost benchmark.
func benchFrames() []struct {
	name  string
	frame []byte
} {
	return []struct {
		name  string
		frame []byte
	}{
		{"ipv4", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 40000, 53, 64))...)},
		{"ipv6", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, nil, l4Header(17, 40000, 53, 64))...)},
		{"qinq-ipv4", append(ethHeader(0x0800, 0x88a8, 0x8100), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 40000, 53, 64))...)},
		{"ipv6-ext", append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, []ext{{typ: 0, len: 8}, {typ: 60, len: 16}}, l4Header(17, 40000, 53, 64))...)},
	}
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
	measure := func(b *testing.B, p *ebpf.Program, frame []byte) time.Duration {
		_, d, err := p.Benchmark(frame, b.N, b.ResetTimer)
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	var floorNs float64
	b.Run("floor", func(b *testing.B) {
		d := measure(b, floor, frames[0].frame)
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
							tb.d.reader.SetDeadline(time.Now().Add(10 * time.Millisecond))
							_, _ = tb.d.readReady(evs)
							continue
						}
						tb.d.reader.SetDeadline(pastDeadline)
						if n, _ := tb.d.readReady(evs); n < len(evs) {
							time.Sleep(c.pause) // drained: fall behind again
						}
					}
				}()
				d := measure(b, tb.progs[Ingress], f.frame)
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
