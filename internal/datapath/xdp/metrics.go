// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
)

var (
	packetsDesc = prometheus.NewDesc("rfm_xdp_packets_total",
		"Packets the XDP fast path matched, by interface, rule (a rule name, blocklist or blackhole) and what it did (pass or drop).",
		[]string{"ifname", "rule", "action"}, nil)
	bytesDesc = prometheus.NewDesc("rfm_xdp_bytes_total",
		"Frame bytes of the packets in rfm_xdp_packets_total.",
		[]string{"ifname", "rule", "action"}, nil)
	attachedDesc = prometheus.NewDesc("rfm_xdp_attached",
		"1 for an interface of agent.xdp.interfaces that runs rfm's XDP program, 0 when the program is no longer on it (detached behind the agent's back).",
		[]string{"ifname", "mode"}, nil)
	entriesDesc = prometheus.NewDesc("rfm_xdp_list_entries",
		"Prefixes in the XDP blocklist and blackhole list.", []string{"list"}, nil)
	xdpErrorsDesc = prometheus.NewDesc("rfm_errors_total", "Errors by subsystem.", nil, prometheus.Labels{"subsystem": "xdp"})
)

// Describe implements prometheus.Collector.
func (p *Program) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, attachedDesc, entriesDesc, xdpErrorsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (p *Program) Collect(ch chan<- prometheus.Metric) {
	cs, err := p.Counters()
	if err != nil {
		p.errors.Add(1)
	}
	for _, c := range cs {
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(c.Packets), c.Ifname, c.Rule, c.Action)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(c.Bytes), c.Ifname, c.Rule, c.Action)
	}
	for _, a := range p.Attached() {
		v := 0.0
		if p.Holds(a.Index) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(attachedDesc, prometheus.GaugeValue, v, a.Name, a.Mode.String())
	}
	block, hole := p.ListEntries()
	ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(block), "blocklist")
	ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(hole), "blackhole")
	ch <- prometheus.MustNewConstMetric(xdpErrorsDesc, prometheus.CounterValue, float64(p.errors.Load()))
}

// Holds reports whether the interface still runs this program: a BPF
// link can be detached by another root process (BPF_LINK_DETACH), which
// the agent would otherwise not notice.
func (p *Program) Holds(ifindex int) bool {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil {
		return false
	}
	for _, prog := range []*ebpf.Program{p.prog, p.generic} {
		info, err := prog.Info()
		if err != nil {
			continue
		}
		if id, ok := info.ID(); ok && l.Attrs().Xdp.ProgId == uint32(id) {
			return true
		}
	}
	return false
}

// ListEntries returns how many prefixes the blocklist and the blackhole
// list hold.
func (p *Program) ListEntries() (blocklist, blackhole int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries
	return e[0] + e[1] + e[4] + e[5], e[2] + e[3]
}
