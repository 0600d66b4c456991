// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// fibBenchNetns makes a namespace where the benchmark frames' destinations
// (v4b, v6b) are routed through a gateway, forwarding on, so the FIB
// lookup of FieldFIB does the work a router's does. It returns the
// namespace and the index of the interface the frames "arrive" on.
func fibBenchNetns(b *testing.B) (string, uint32) {
	ns := fmt.Sprintf("rfmdpb-%d", os.Getpid())
	lab.Run(b, "ip", "netns", "add", ns)
	b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	for _, c := range [][]string{
		{"link", "add", "out0", "type", "veth", "peer", "name", "in0"},
		{"addr", "add", "198.18.0.1/24", "dev", "out0"},
		{"-6", "addr", "add", "2001:db8:1::1/64", "dev", "out0", "nodad"},
		{"link", "set", "out0", "up"},
		{"link", "set", "in0", "up"},
		{"route", "add", "198.19.0.0/16", "via", "198.18.0.2", "dev", "out0"},
		{"-6", "route", "add", "2001:db8:ffff::/48", "via", "2001:db8:1::2", "dev", "out0"},
	} {
		lab.Run(b, "ip", append([]string{"-n", ns}, c...)...)
	}
	lab.SetSysctl(b, ns, "net.ipv4.ip_forward", "1")
	lab.SetSysctl(b, ns, "net.ipv6.conf.in0.forwarding", "1")
	out := lab.Run(b, "ip", "-n", ns, "-o", "link", "show", "in0")
	idx, err := strconv.Atoi(strings.SplitN(out, ":", 2)[0])
	if err != nil {
		b.Fatalf("ifindex of in0 from %q: %v", out, err)
	}
	return ns, uint32(idx)
}

// BenchmarkDatapathFields is the cost of the optional fields, side by
// side in one run: ns per packet through BPF_PROG_TEST_RUN for the floor
// program and for ours with fields off, each field alone and all of
// them, sampled at rate 1 (every packet) and unsampled (rate 0), on
// frames arriving on a forwarding interface whose destination is routed
// through a gateway (so the FIB lookup finds a route).
//
//	go test -run x -bench DatapathFields -benchtime 300000x ./internal/datapath
func BenchmarkDatapathFields(b *testing.B) {
	requireRoot(b)
	ns, inIdx := fibBenchNetns(b)
	tcp := l4Header(6, 40000, 443, 64)
	tcp[13] = 0x18
	frames := []benchFrame{
		{name: "ipv4-tcp", frame: append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 6, v4opts{}, tcp)...)},
		{name: "ipv6-tcp", frame: append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 6, nil, tcp)...)},
		{name: "qinq-ipv4-tcp", frame: append(ethHeader(0x0800, 0x88a8, 0x8100), ipv4Packet(v4a, v4b, 6, v4opts{}, tcp)...)},
	}
	for i := range frames {
		var c skbContext
		binary.LittleEndian.PutUint32(c[36:], inIdx) // ingress_ifindex
		binary.LittleEndian.PutUint32(c[40:], inIdx) // ifindex
		frames[i].ctx = &c
	}
	inNS := func(b *testing.B, fn func()) {
		if err := lab.InNetns(ns, func() error { fn(); return nil }); err != nil {
			b.Fatal(err)
		}
	}
	floor := floorProgram(b)
	var floorNs float64
	b.Run("floor", func(b *testing.B) {
		inNS(b, func() { floorNs = float64(runBench(b, floor, frames[0]).Nanoseconds()) })
		b.ReportMetric(floorNs, "ns/pkt")
	})
	sels := []struct {
		name string
		f    Fields
		rate []uint32
	}{
		{"off", 0, []uint32{0, 1}},
		{"tcp_flags", FieldTCPFlags, []uint32{1}},
		{"dscp", FieldDSCP, []uint32{1}},
		{"ttl", FieldTTL, []uint32{1}},
		{"vlan", FieldVLAN, []uint32{1}},
		{"fib", FieldFIB, []uint32{1}},
		{"all", fieldsAll, []uint32{0, 1}},
	}
	for _, s := range sels {
		for _, rate := range s.rate {
			for _, f := range frames {
				b.Run(fmt.Sprintf("fields=%s/rate=%d/%s", s.name, rate, f.name), func(b *testing.B) {
					tb := newTestbedOpts(b, rate, Options{RingBufSize: 1 << 23, Fields: s.f})
					stop, done := make(chan struct{}), make(chan struct{})
					go func() { // the consumer, as in the agent
						defer close(done)
						evs := make([]Event, 512)
						for {
							select {
							case <-stop:
								return
							default:
							}
							_, _ = tb.d.readWithin(evs, 10*time.Millisecond)
						}
					}()
					var d time.Duration
					inNS(b, func() { d = runBench(b, tb.progs[Ingress], f) })
					close(stop)
					<-done
					ns := float64(d.Nanoseconds())
					b.ReportMetric(ns, "ns/pkt")
					b.ReportMetric(ns-floorNs, "over-floor-ns")
					b.ReportMetric(float64(s.f.eventSize()), "event-bytes")
					st, _ := tb.d.Stats()
					b.ReportMetric(float64(st.RingDrops), "ring-drops")
				})
			}
		}
	}
}
