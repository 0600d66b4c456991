// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

type fakeDatapath struct{}

func (fakeDatapath) Counters() ([]datapath.Counters, error) {
	eth0 := datapath.Interface{Index: 2, Name: "eth0"}
	return []datapath.Counters{
		{Interface: eth0, Dir: datapath.Ingress, Packets: [3]uint64{1, 10, 20}, Bytes: [3]uint64{60, 1000, 2000}},
		{Interface: eth0, Dir: datapath.Egress, Packets: [3]uint64{2, 30, 40}, Bytes: [3]uint64{120, 3000, 4000}},
	}, nil
}
func (fakeDatapath) Stats() (datapath.Stats, error) {
	return datapath.Stats{RingDrops: 7, Malformed: 3}, nil
}
func (fakeDatapath) DecodeErrors() uint64 { return 1 }
func (fakeDatapath) Interfaces() []datapath.Interface {
	return []datapath.Interface{{Index: 2, Name: "eth0"}}
}

type fakeFlows struct{}

// LabelSets reports flows sampled at 1 in 100 (the rate fakeFlows' tests use).
func (fakeFlows) LabelSets(fn func(r *flow.LabelSetRow)) {
	at100 := func(p, b uint64) flow.RollupCounts {
		return flow.RollupCounts{SampledPackets: p, SampledBytes: b, Packets: 100 * p, Bytes: 100 * b}
	}
	for _, r := range []flow.LabelSetRow{
		{Key: flow.RollupKey{Ifindex: 2, Dir: datapath.Egress, Proto: 17, SrcASN: 64500, SrcCity: "Testville"},
			ActiveFlows: 1, Active: at100(5, 500), Packets: 7000, Bytes: 900000},
		{Key: flow.RollupKey{Ifindex: 9, Dir: datapath.Ingress, Proto: 99}, ActiveFlows: 1, Active: at100(1, 40)},
		{Key: flow.RollupKey{Ifindex: 2, Dir: datapath.Ingress, Proto: 6, SrcCity: `Quote"d \ New` + "\n" + `line`},
			ActiveFlows: 2, Active: at100(2, 80)},
		// No active flow: only in the counters.
		{Key: flow.RollupKey{Ifindex: 2, Dir: datapath.Ingress, Proto: 1, DstASN: 64511}, Packets: 3, Bytes: 252},
		{Key: flow.RollupKey{Ifindex: 2, Dir: datapath.Egress, Overflow: true},
			ActiveFlows: 3, Active: at100(4, 400), Packets: 11, Bytes: 1100},
	} {
		fn(&r)
	}
}
func (fakeFlows) LabelSetStats() flow.LabelSetStats {
	return flow.LabelSetStats{Sets: 5, Max: 4, Overflowed: 3, Expired: 6}
}
func (fakeFlows) Active() int             { return 2 }
func (fakeFlows) Capacity() int           { return 65536 }
func (fakeFlows) ForcedEvictions() uint64 { return 4 }
func (fakeFlows) LateEvents() uint64      { return 0 }

// value finds one sample by name and exact labels.
func value(t *testing.T, fams []*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no sample %s%v", name, labels)
	return 0
}

// has reports whether the sample name{labels} exists.
func has(fams []*dto.MetricFamily, name string, labels map[string]string) bool {
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
					continue next
				}
			}
			return true
		}
	}
	return false
}

func TestCollect(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c := New(fakeDatapath{}, fakeFlows{}, func() uint32 { return 100 })
	reg.MustRegister(c)
	// Parse what the handler serves, so the directly rendered flow
	// families are checked by Prometheus' own text parser.
	rec := httptest.NewRecorder()
	Handler(reg, c, func(err error) { t.Fatal(err) }).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("served text does not parse: %v", err)
	}
	var fams []*dto.MetricFamily
	for _, f := range parsed {
		fams = append(fams, f)
	}
	flowLabels := map[string]string{"ifname": "eth0", "direction": "egress", "proto": "udp",
		"src_asn": "64500", "dst_asn": "", "src_city": "Testville", "dst_city": ""}
	unknownIf := map[string]string{"ifname": "9", "direction": "ingress", "proto": "99",
		"src_asn": "", "dst_asn": "", "src_city": "", "dst_city": ""}
	icmpIn := map[string]string{"ifname": "eth0", "direction": "ingress", "proto": "icmp",
		"src_asn": "", "dst_asn": "64511", "src_city": "", "dst_city": ""}
	overflow := map[string]string{"ifname": "eth0", "direction": "egress", "proto": "overflow",
		"src_asn": "overflow", "dst_asn": "overflow", "src_city": "overflow", "dst_city": "overflow"}
	if has(fams, "rfm_flow_bytes", icmpIn) {
		t.Errorf("a label set without active flows has a gauge series")
	}
	cases := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"rfm_interface_rx_packets_total", map[string]string{"ifname": "eth0", "family": "ipv4"}, 10},
		{"rfm_interface_rx_bytes_total", map[string]string{"ifname": "eth0", "family": "other"}, 60},
		{"rfm_interface_tx_packets_total", map[string]string{"ifname": "eth0", "family": "ipv6"}, 40},
		{"rfm_interface_tx_bytes_total", map[string]string{"ifname": "eth0", "family": "ipv4"}, 3000},
		{"rfm_flow_sampled_packets", flowLabels, 5},
		{"rfm_flow_sampled_bytes", flowLabels, 500},
		{"rfm_flow_packets", flowLabels, 500},
		{"rfm_flow_bytes", flowLabels, 50000},
		{"rfm_flow_packets", unknownIf, 100},
		{"rfm_flow_sampled_bytes", map[string]string{"ifname": "eth0", "direction": "ingress", "proto": "tcp",
			"src_asn": "", "dst_asn": "", "src_city": `Quote"d \ New` + "\n" + `line`, "dst_city": ""}, 80},
		{"rfm_collector_active_flows", nil, 2},
		{"rfm_collector_max_flows", nil, 65536},
		{"rfm_collector_dropped_events_total", nil, 7},
		{"rfm_collector_forced_evictions_total", nil, 4},
		{"rfm_datapath_malformed_packets_total", nil, 3},
		{"rfm_errors_total", map[string]string{"subsystem": "ring_buffer"}, 1},
		{"rfm_errors_total", map[string]string{"subsystem": "bpf_map"}, 0},
		{"rfm_sample_rate", nil, 100},
		{"rfm_flow_estimated_bytes_total", flowLabels, 900000},
		{"rfm_flow_estimated_packets_total", flowLabels, 7000},
		{"rfm_flow_estimated_packets_total", icmpIn, 3},
		{"rfm_flow_estimated_bytes_total", overflow, 1100},
		{"rfm_flow_packets", overflow, 400},
		{"rfm_flow_label_sets", nil, 5},
		{"rfm_flow_label_sets_max", nil, 4},
		{"rfm_flow_label_set_overflows_total", nil, 3},
		{"rfm_flow_label_sets_expired_total", nil, 6},
		{"rfm_interface_attached", map[string]string{"ifname": "eth0"}, 1},
	}
	for _, tc := range cases {
		if got := value(t, fams, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

func TestProtoName(t *testing.T) {
	for p, want := range map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 0: "0", 255: "255"} {
		if got := ProtoName(p); got != want {
			t.Errorf("ProtoName(%d) = %q, want %q", p, got, want)
		}
	}
}
