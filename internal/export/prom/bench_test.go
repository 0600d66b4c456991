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

// BenchmarkScrape measures serving /metrics (gather, text encoding and,
// as Prometheus asks for it, gzip) with 65,536 active flows spread over
// many label sets: a router's shape, 4,096 sets, and one set per flow
// capped at the default limit of 10,000 label sets.
func BenchmarkScrape(b *testing.B) {
	for _, enc := range []string{"gzip", "identity"} {
		b.Run("labelsets=router/"+enc, func(b *testing.B) { benchScrape(b, routerEnricher{}, enc) })
		b.Run("labelsets=4096/"+enc, func(b *testing.B) { benchScrape(b, asnCityEnricher{}, enc) })
		b.Run("labelsets=max/"+enc, func(b *testing.B) { benchScrape(b, distinctEnricher{}, enc) })
	}
}

func benchScrape(b *testing.B, en flow.Enricher, encoding string) {
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
	t.LabelSets(func(*flow.LabelSetRow) { groups++ })
	reg := prometheus.NewRegistry()
	c := New(fakeDatapath{}, t, func() uint32 { return 100 })
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
	b.ReportMetric(float64(groups*6), "flow-series")
	b.ReportMetric(float64(w.n), "body-bytes")
}

type countingResponse struct{ n int }

func (*countingResponse) Header() http.Header           { return http.Header{} }
func (w *countingResponse) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
func (*countingResponse) WriteHeader(int)               {}
