package prom

import (
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

var cities = []string{"Amsterdam", "Berlin", "Chicago", "Dallas", "Frankfurt", "London", "Madrid", "Miami",
	"Paris", "Prague", "Seattle", "Singapore", "Sydney", "Tokyo", "Toronto", "Zurich"}

// BenchmarkScrape measures serving /metrics (gather + text encoding) with
// 65,536 active flows spread over many label sets.
func BenchmarkScrape(b *testing.B) {
	t := flow.NewTable(flow.Options{MaxFlows: 65536, Enricher: asnCityEnricher{}})
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(New(fakeDatapath{}, t, func() uint32 { return 100 }))
	b.ResetTimer()
	for b.Loop() {
		fams, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, f := range fams {
			if err := enc.Encode(f); err != nil {
				b.Fatal(err)
			}
		}
	}
}
