// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

var cities = []string{"Amsterdam", "Berlin", "Chicago", "Dallas", "Frankfurt", "London", "Madrid", "Miami",
	"Paris", "Prague", "Seattle", "Singapore", "Sydney", "Tokyo", "Toronto", "Zurich"}

// BenchmarkScrape measures serving /metrics (gather + text encoding) with
// 65,536 active flows spread over many label sets.
func BenchmarkScrape(b *testing.B) {
	b.Run("labelsets=router", func(b *testing.B) { benchScrape(b, routerEnricher{}) })
	b.Run("labelsets=per-flow", func(b *testing.B) { benchScrape(b, asnCityEnricher{}) })
}

func benchScrape(b *testing.B, en flow.Enricher) {
	t := flow.NewTable(flow.Options{MaxFlows: 65536, Enricher: en})
	evs := make([]datapath.Event, 65536)
	for i := range evs {
		e := &evs[i]
		e.BootNs = uint64(i + 1)
		e.Src = [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: byte(i >> 8), 15: byte(i)}
		e.Dst = [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 19, 14: byte(i), 15: 1}
		e.Ifindex = uint32(2 + i%4)
		e.Len = 1500
		e.SrcPort = uint16(i)
		e.DstPort = 443
		e.Proto = []uint8{6, 17}[i%2]
		e.Dir = datapath.Direction(i % 2)
	}
	t.UpdateBatch(evs)
	if t.Active() != 65536 {
		b.Fatalf("active flows = %d", t.Active())
	}
	groups := 0
	t.Rollup(func(flow.RollupKey, flow.RollupCounts) { groups++ })
	reg := prometheus.NewRegistry()
	c := New(fakeDatapath{}, t, func() uint32 { return 100 })
	reg.MustRegister(c)
	h := Handler(reg, c, func(err error) { b.Fatal(err) })
	req := httptest.NewRequest("GET", "/metrics", nil)
	b.ResetTimer()
	for b.Loop() {
		h.ServeHTTP(discardResponse{}, req)
	}
	b.ReportMetric(float64(groups*4), "flow-series")
}

type discardResponse struct{}

func (discardResponse) Header() http.Header         { return http.Header{} }
func (discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (discardResponse) WriteHeader(int)             {}
