package bmp

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// gather registers c in a pedantic registry (which checks descriptions
// against the metrics) and returns "name{labels} value" lines, sorted.
func gather(t *testing.T, c prometheus.Collector) []string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out = append(out, fmt.Sprintf("%s{%s} %g", mf.GetName(), strings.Join(labels, ","), v))
		}
	}
	slices.Sort(out)
	return out
}

func TestMetricsExposition(t *testing.T) {
	h := newHarness(t)
	h.feed(initiationMsg(t, "r"), peerUpMsg(t, peerA, 65001, peerUpOpts{}), []byte{3, 0, 0, 0, 6, 99},
		[]byte{3, 0, 0, 0, 8, typeRouteMonitoring, 0, 0})
	want := []string{
		`rfm_bmp_messages_total{type="initiation"} 1`,
		`rfm_bmp_messages_total{type="peer_down"} 0`,
		`rfm_bmp_messages_total{type="peer_up"} 1`,
		`rfm_bmp_messages_total{type="route_mirroring"} 0`,
		`rfm_bmp_messages_total{type="route_monitoring"} 1`,
		`rfm_bmp_messages_total{type="statistics_report"} 0`,
		`rfm_bmp_messages_total{type="termination"} 0`,
		`rfm_bmp_messages_total{type="unknown"} 1`,
		`rfm_bmp_sessions{} 0`,
		`rfm_bmp_skipped_total{reason="adj_rib_out"} 0`,
		`rfm_bmp_skipped_total{reason="malformed"} 1`,
		`rfm_bmp_skipped_total{reason="unsupported_family"} 0`,
		`rfm_errors_total{subsystem="bmp"} 1`,
	}
	if got := gather(t, h.st); !slices.Equal(got, want) {
		t.Fatalf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
