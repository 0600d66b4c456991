// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// scrape serves /metrics once with the given Accept-Encoding and returns
// the body, decompressed when the response says gzip.
func scrape(t *testing.T, h http.Handler, acceptEncoding string) (body []byte, encoding string) {
	t.Helper()
	req := httptest.NewRequest("GET", "/metrics", nil)
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	encoding = rec.Header().Get("Content-Encoding")
	body = rec.Body.Bytes()
	if encoding == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("gzip response: %v", err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatalf("gzip response: %v", err)
		}
	}
	return body, encoding
}

func parse(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("served text does not parse: %v", err)
	}
	return fams
}

// seriesKey renders a sample's labels in a fixed order.
func seriesKey(m *dto.Metric) string {
	var b strings.Builder
	for _, l := range m.GetLabel() {
		b.WriteString(l.GetName() + "=" + l.GetValue() + ",")
	}
	return b.String()
}

// TestFlowCountersNeverDecrease scrapes over and over while flows start
// and end (idle timeout, table full, flush) and the sample rate changes,
// and requires every rfm_flow_estimated_*_total series to never go down
// between two scrapes (Prometheus would take that for a counter reset
// and rate() would spike). At the end the counters must equal the
// traffic sent, computed here from the events.
func TestFlowCountersNeverDecrease(t *testing.T) {
	tab := flow.NewTable(flow.Options{MaxFlows: 50, Enricher: asnCityEnricher{}, IdleTimeout: time.Second})
	c := New(fakeDatapath{}, tab, func() uint32 { return 1 })
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	h := Handler(reg, c, func(err error) { t.Error(err) })

	var wantPackets, wantBytes uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		ns := uint64(1)
		for round := range 400 {
			evs := make([]datapath.Event, 64)
			for i := range evs {
				e := &evs[i]
				e.BootNs = ns
				ns += 1000
				e.Src = [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: byte(i), 15: byte(round)}
				e.Dst = [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 19, 14: byte(i % 3), 15: 1}
				e.Ifindex = 2
				e.Proto = 17
				e.SrcPort = uint16(round)
				e.DstPort = 53
				e.Len = uint32(60 + i)
				e.SampleRate = uint32(1 + round%4)
				wantPackets += uint64(e.SampleRate)
				wantBytes += uint64(e.Len) * uint64(e.SampleRate)
			}
			tab.UpdateBatch(evs) // more flows than fit: the oldest are pushed out
			switch round % 3 {
			case 0:
				tab.Sweep(int64(ns) + int64(2*time.Second))
			case 1:
				tab.Flush(flow.EndForced)
			}
		}
	}()

	prev := map[string]float64{}
	scrapes := 0
	check := func(enc string) {
		body, _ := scrape(t, h, enc)
		fams := parse(t, body)
		scrapes++
		for _, name := range []string{"rfm_flow_estimated_bytes_total", "rfm_flow_estimated_packets_total"} {
			f := fams[name]
			if f == nil {
				t.Fatalf("scrape has no %s", name)
			}
			if f.GetType() != dto.MetricType_COUNTER {
				t.Fatalf("%s has type %v, want counter", name, f.GetType())
			}
			for _, m := range f.GetMetric() {
				k := name + "{" + seriesKey(m) + "}"
				v := m.GetCounter().GetValue()
				if p, ok := prev[k]; ok && v < p {
					t.Fatalf("%s went down between two scrapes: %v -> %v", k, p, v)
				}
				prev[k] = v
			}
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		check("gzip")
	}
	wg.Wait()
	check("")
	if scrapes < 3 {
		t.Fatalf("only %d scrapes while flows ended", scrapes)
	}
	var gotPackets, gotBytes float64
	for k, v := range prev {
		switch {
		case strings.HasPrefix(k, "rfm_flow_estimated_packets_total{"):
			gotPackets += v
		case strings.HasPrefix(k, "rfm_flow_estimated_bytes_total{"):
			gotBytes += v
		}
	}
	if gotPackets != float64(wantPackets) || gotBytes != float64(wantBytes) {
		t.Fatalf("counters sum to %v packets / %v bytes, want %d / %d", gotPackets, gotBytes, wantPackets, wantBytes)
	}
}

// TestFamilyNamesDoNotClash: in OpenMetrics a counter family is named
// without its _total suffix, so no other family may have that name (a
// counter rfm_flow_bytes would collide with the gauge rfm_flow_bytes).
// When promtool is installed, `promtool check metrics` must also be clean
// for the flow families.
func TestFamilyNamesDoNotClash(t *testing.T) {
	tab := flow.NewTable(flow.Options{Enricher: asnCityEnricher{}})
	ev := datapath.Event{BootNs: 1, Src: [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 18, 15: 1},
		Dst: [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 19, 15: 1}, Ifindex: 2, Len: 100, Proto: 6, SampleRate: 1}
	tab.Update(&ev)
	reg := prometheus.NewRegistry()
	c := New(fakeDatapath{}, tab, func() uint32 { return 1 })
	reg.MustRegister(c)
	body, _ := scrape(t, Handler(reg, c, nil), "")
	fams := parse(t, body)
	for name, f := range fams {
		if f.GetType() != dto.MetricType_COUNTER {
			continue
		}
		base, ok := strings.CutSuffix(name, "_total")
		if !ok {
			t.Errorf("counter %s does not end in _total", name)
			continue
		}
		if _, clash := fams[base]; clash {
			t.Errorf("counter %s and family %s have the same OpenMetrics family name", name, base)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed: skipping `promtool check metrics`")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestGzip: a client that accepts gzip gets the same exposition
// compressed; one that does not (or refuses it with q=0) gets plain text.
func TestGzip(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := New(fakeDatapath{}, fakeFlows{}, func() uint32 { return 100 })
	reg.MustRegister(c)
	h := Handler(reg, c, func(err error) { t.Fatal(err) })
	plain, enc := scrape(t, h, "")
	if enc != "" {
		t.Fatalf("no Accept-Encoding: Content-Encoding %q", enc)
	}
	for _, accept := range []string{"gzip", "identity, gzip;q=0.5", "GZIP", "*"} {
		got, enc := scrape(t, h, accept)
		if enc != "gzip" {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want gzip", accept, enc)
			continue
		}
		if !bytes.Equal(got, plain) {
			t.Errorf("Accept-Encoding %q: decompressed body differs from the plain one", accept)
		}
	}
	for _, accept := range []string{"gzip;q=0", "identity", "br, zstd"} {
		if _, enc := scrape(t, h, accept); enc != "" {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want none", accept, enc)
		}
	}
}
