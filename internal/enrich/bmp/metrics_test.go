// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// gather collects c through a pedantic registry (which checks the
// descriptions against the metrics) and returns its samples as
// "name{labels} value" lines in exposition order, comments left out.
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
	var text strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&text, mf); err != nil {
			t.Fatal(err)
		}
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(text.String()), "\n") {
		if !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out
}

// seriesValue returns the value of series name{label} among gathered
// lines ("" label: the series without labels), "" if absent.
func seriesValue(lines []string, name, label string) string {
	series := name
	if label != "" {
		series += "{" + label + "}"
	}
	for _, line := range lines {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
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
		`rfm_bmp_route_limit_drops_total 0`,
		`rfm_bmp_sessions 0`,
		`rfm_bmp_skipped_total{reason="adj_rib_out"} 0`,
		`rfm_bmp_skipped_total{reason="malformed"} 1`,
		`rfm_bmp_skipped_total{reason="unsupported_family"} 0`,
		`rfm_errors_total{subsystem="bmp"} 1`,
	}
	if got := gather(t, h.st); !slices.Equal(got, want) {
		t.Fatalf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
