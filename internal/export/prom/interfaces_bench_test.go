// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// manyInterfaces is a datapath with n attached interfaces (ifindex 2..n+1)
// whose counters are precomputed: the kernel read is measured in
// internal/datapath (BenchmarkAttach, us/counters-read).
type manyInterfaces struct {
	ifaces   []datapath.Interface
	counters []datapath.Counters
}

func newManyInterfaces(n int) *manyInterfaces {
	m := &manyInterfaces{}
	for i := 0; i < n; i++ {
		in := datapath.Interface{Index: i + 2, Name: fmt.Sprintf("lxc%012x", i)}
		m.ifaces = append(m.ifaces, in)
		for dir := datapath.Ingress; dir <= datapath.Egress; dir++ {
			v := uint64(i*1000 + 17)
			m.counters = append(m.counters, datapath.Counters{Interface: in, Dir: dir,
				Packets: [3]uint64{v, 3 * v, 5 * v}, Bytes: [3]uint64{60 * v, 1500 * v, 900 * v}})
		}
	}
	return m
}

func (m *manyInterfaces) Counters() ([]datapath.Counters, error) { return m.counters, nil }
func (m *manyInterfaces) Stats() (datapath.Stats, error)         { return datapath.Stats{}, nil }
func (m *manyInterfaces) DecodeErrors() uint64                   { return 0 }
func (m *manyInterfaces) Interfaces() []datapath.Interface       { return m.ifaces }

// BenchmarkScrapeInterfaces serves /metrics for a Kubernetes node's
// worth of interfaces: 2,000 attached, with no flows and with 65,536
// active flows spread over them (router label sets).
//
//	go test -run x -bench ScrapeInterfaces ./internal/export/prom
func BenchmarkScrapeInterfaces(b *testing.B) {
	for _, flows := range []int{0, 65536} {
		for _, enc := range []string{"identity", "gzip"} {
			b.Run(fmt.Sprintf("interfaces=2000/flows=%d/%s", flows, enc), func(b *testing.B) { benchScrapeInterfaces(b, 2000, flows, enc) })
		}
	}
}

func benchScrapeInterfaces(b *testing.B, n, flows int, encoding string) {
	dp := newManyInterfaces(n)
	t := flow.NewTable(flow.Options{MaxFlows: 65536, Enricher: routerEnricher{}})
	evs := make([]datapath.Event, flows)
	for i := range evs {
		e := &evs[i]
		e.BootNs = uint64(i + 1)
		e.Src = [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: byte(i >> 8), 15: byte(i)}
		e.Dst = [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 19, 14: byte(i), 15: 1}
		e.Ifindex = uint32(2 + i%n)
		e.Len = 1500
		e.SrcPort = uint16(i)
		e.DstPort = 443
		e.Proto = []uint8{6, 17}[i%2]
		e.Dir = datapath.Direction(i % 2)
	}
	t.UpdateBatch(evs)
	if t.Active() != flows {
		b.Fatalf("active flows = %d", t.Active())
	}
	reg := prometheus.NewRegistry()
	c := New(dp, t, func() uint32 { return 100 })
	reg.MustRegister(c)
	h := Handler(reg, c, func(err error) { b.Fatal(err) })
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", encoding)
	var w countingResponse
	b.ResetTimer()
	for b.Loop() {
		w.n = 0
		h.ServeHTTP(&w, req)
	}
	b.ReportMetric(float64(w.n), "body-bytes")
}
