// SPDX-License-Identifier: AGPL-3.0-only

// Package prom exports interface counters and rolled-up flows as
// Prometheus metrics, read at scrape time from the datapath and the flow
// table.
package prom

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// Datapath is what the exporter reads from the kernel side.
type Datapath interface {
	Counters() ([]datapath.Counters, error)
	Stats() (datapath.Stats, error)
	DecodeErrors() uint64
	Interfaces() []datapath.Interface
}

// Flows is what the exporter reads from the flow table.
type Flows interface {
	LabelSets(fn func(r *flow.LabelSetRow))
	LabelSetStats() flow.LabelSetStats
	Active() int
	Capacity() int
	ForcedEvictions() uint64
	LateEvents() uint64
}

// Collector implements prometheus.Collector for the core metrics except
// the rfm_flow_* families, which WriteFlows renders directly (see flows.go).
type Collector struct {
	dp         Datapath
	flows      Flows
	sampleRate func() uint32
	mapErrors  atomic.Uint64 // failed BPF map reads during scrapes
}

// New returns a collector; sampleRate reports the current 1-in-N rate
// used to scale sampled counts into estimates.
func New(dp Datapath, flows Flows, sampleRate func() uint32) *Collector {
	return &Collector{dp: dp, flows: flows, sampleRate: sampleRate}
}

var (
	activeFlows     = prometheus.NewDesc("rfm_collector_active_flows", "Flows held in the flow table.", nil, nil)
	maxFlows        = prometheus.NewDesc("rfm_collector_max_flows", "Flow table capacity (agent.collector.max_flows; its ceiling when that is 0).", nil, nil)
	droppedEvents   = prometheus.NewDesc("rfm_collector_dropped_events_total", "Sampled packets lost because the ring buffer was full.", nil, nil)
	lateEvents      = prometheus.NewDesc("rfm_collector_late_events_total", "Sampled packets dropped because they arrived after their interface was detached and its flows ended.", nil, nil)
	forcedEvictions = prometheus.NewDesc("rfm_collector_forced_evictions_total", "Flows evicted early because the flow table was full.", nil, nil)
	malformed       = prometheus.NewDesc("rfm_datapath_malformed_packets_total", "Sampled packets not reported as flows because their headers were truncated or invalid.", nil, nil)
	truncated       = prometheus.NewDesc("rfm_datapath_truncated_packets_total", "Sampled IPv6 packets whose transport header lay past the extension headers walked; reported as flows without ports.", nil, nil)
	ifaceLimit      = prometheus.NewDesc("rfm_interface_limit_refusals_total", "Interfaces selected by agent.interfaces but not attached because agent.bpf.max_interfaces were attached.", nil, nil)
	timerErrors     = prometheus.NewDesc("rfm_datapath_timer_errors_total", "Per-CPU batch flush timers that could not be armed; the batch was written to the ring at once.", nil, nil)
	sampleRateDesc  = prometheus.NewDesc("rfm_sample_rate", "Current 1-in-N packet sampling rate.", nil, nil)

	labelSets         = prometheus.NewDesc("rfm_flow_label_sets", "Label sets of the rfm_flow_* series kept now, overflow sets included.", nil, nil)
	labelSetsMax      = prometheus.NewDesc("rfm_flow_label_sets_max", "Most label sets kept before new ones go to overflow sets (agent.prometheus.max_label_sets).", nil, nil)
	labelSetOverflows = prometheus.NewDesc("rfm_flow_label_set_overflows_total", "Flows counted in an overflow label set because max_label_sets label sets were in use.", nil, nil)
	labelSetsExpired  = prometheus.NewDesc("rfm_flow_label_sets_expired_total", "Label sets dropped after label_set_expiry without traffic.", nil, nil)

	bpfMapErrors  = prometheus.NewDesc("rfm_errors_total", "Errors by subsystem.", nil, prometheus.Labels{"subsystem": "bpf_map"})
	ringbufErrors = prometheus.NewDesc("rfm_errors_total", "Errors by subsystem.", nil, prometheus.Labels{"subsystem": "ring_buffer"})
)

func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{activeFlows, maxFlows, droppedEvents, forcedEvictions, lateEvents,
		malformed, truncated, timerErrors, ifaceLimit, sampleRateDesc, bpfMapErrors, ringbufErrors,
		labelSets, labelSetsMax, labelSetOverflows, labelSetsExpired} {
		ch <- d
	}
}

func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	// The per-interface families are written by writeInterfaces.
	ch <- prometheus.MustNewConstMetric(sampleRateDesc, prometheus.GaugeValue, float64(c.sampleRate()))
	ch <- prometheus.MustNewConstMetric(activeFlows, prometheus.GaugeValue, float64(c.flows.Active()))
	ch <- prometheus.MustNewConstMetric(maxFlows, prometheus.GaugeValue, float64(c.flows.Capacity()))
	ch <- prometheus.MustNewConstMetric(forcedEvictions, prometheus.CounterValue, float64(c.flows.ForcedEvictions()))
	ch <- prometheus.MustNewConstMetric(lateEvents, prometheus.CounterValue, float64(c.flows.LateEvents()))
	ls := c.flows.LabelSetStats()
	ch <- prometheus.MustNewConstMetric(labelSets, prometheus.GaugeValue, float64(ls.Sets))
	ch <- prometheus.MustNewConstMetric(labelSetsMax, prometheus.GaugeValue, float64(ls.Max))
	ch <- prometheus.MustNewConstMetric(labelSetOverflows, prometheus.CounterValue, float64(ls.Overflowed))
	ch <- prometheus.MustNewConstMetric(labelSetsExpired, prometheus.CounterValue, float64(ls.Expired))
	if st, err := c.dp.Stats(); err == nil {
		ch <- prometheus.MustNewConstMetric(droppedEvents, prometheus.CounterValue, float64(st.RingDrops))
		ch <- prometheus.MustNewConstMetric(malformed, prometheus.CounterValue, float64(st.Malformed))
		ch <- prometheus.MustNewConstMetric(truncated, prometheus.CounterValue, float64(st.Truncated))
		ch <- prometheus.MustNewConstMetric(timerErrors, prometheus.CounterValue, float64(st.TimerErrors))
		ch <- prometheus.MustNewConstMetric(ifaceLimit, prometheus.CounterValue, float64(st.InterfaceLimitRefusals))
	} else {
		c.mapErrors.Add(1)
	}
	ch <- prometheus.MustNewConstMetric(bpfMapErrors, prometheus.CounterValue, float64(c.mapErrors.Load()))
	ch <- prometheus.MustNewConstMetric(ringbufErrors, prometheus.CounterValue, float64(c.dp.DecodeErrors()))
}

func asnLabel(asn uint32) string {
	if asn == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(asn), 10)
}

// ProtoName is the proto label: the usual lowercase name for common IP
// protocols, the decimal number otherwise.
func ProtoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 47:
		return "gre"
	case 50:
		return "esp"
	case 58:
		return "icmpv6"
	case 132:
		return "sctp"
	case 136:
		return "udplite"
	}
	return strconv.Itoa(int(p))
}
