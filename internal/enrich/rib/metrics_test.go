package rib

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

func TestMetrics(t *testing.T) {
	f := newFixture(t)
	s := f.connect(router1())
	a := f.peerUp(s, peerA, 65001)
	f.peerUp(s, peerB, 65002)
	f.announce(a, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500))
	f.announce(a, PostPolicy, "198.18.0.0/24", 0, seq(65001, 64500))
	f.announce(a, PrePolicy, "2001:db8::/32", 0, seq(65001, 64500))
	want := []string{
		`rfm_rib_peers{} 2`,
		`rfm_rib_routes{family="ipv4"} 2`,
		`rfm_rib_routes{family="ipv6"} 1`,
	}
	if got := gather(t, f.rib); !slices.Equal(got, want) {
		t.Fatalf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
