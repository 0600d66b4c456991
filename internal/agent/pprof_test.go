// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/export/prom"
	"github.com/stepbrobd/rfm/internal/flow"
)

// TestPprofOptIn: the profile endpoints answer on the metrics listener
// only when RFM_PPROF=1 was set before the server started.
func TestPprofOptIn(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want int
	}{{"", http.StatusNotFound}, {"0", http.StatusNotFound}, {"1", http.StatusOK}} {
		t.Run("RFM_PPROF="+tc.env, func(t *testing.T) {
			t.Setenv("RFM_PPROF", tc.env)
			tab := flow.NewTable(flow.Options{})
			core := prom.New(noDatapath{}, tab, func() uint32 { return 1 })
			reg := prometheus.NewRegistry()
			reg.MustRegister(core)
			m, err := listenMetrics(testMetricsConfig(""), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if err := m.serve(reg, core, func() error { return nil }); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.close)
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + m.ln.ln.Addr().String() + "/debug/pprof/heap?debug=1")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("GET /debug/pprof/heap: status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusOK && !strings.Contains(string(body), "heap profile:") {
				t.Fatalf("GET /debug/pprof/heap?debug=1: no heap profile in %.200q", body)
			}
		})
	}
}
