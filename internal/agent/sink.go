// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/export/ipfix"
	"github.com/stepbrobd/rfm/internal/flow"
)

// ipfixSink hands ended flows to the current IPFIX exporter, which a
// reload may start, replace or stop; without one, flows end unexported.
// It also forwards the exporter's metrics.
type ipfixSink struct {
	cur atomic.Pointer[ipfix.Exporter]
	// other is, during a reload, the exporter that is about to replace
	// cur or the one cur replaced and that still flushes; its socket is
	// excluded from sampling as well. Guarded by agent.mu.
	other *ipfix.Exporter
}

var _ flow.PacedSink = (*ipfixSink)(nil)

func (s *ipfixSink) ExportFlows(recs []flow.Record) {
	if e := s.cur.Load(); e != nil {
		e.ExportFlows(recs)
	}
}

// ExportFlowsPaced takes the records of a flush, waiting for the
// exporter's queue rather than dropping.
func (s *ipfixSink) ExportFlowsPaced(recs []flow.Record) {
	if e := s.cur.Load(); e != nil {
		e.ExportFlowsPaced(recs)
	}
}

// Describe sends nothing: the exporter behind it comes and goes, so the
// registry treats this as an unchecked collector.
func (s *ipfixSink) Describe(chan<- *prometheus.Desc) {}

func (s *ipfixSink) Collect(ch chan<- prometheus.Metric) {
	if e := s.cur.Load(); e != nil {
		e.Collect(ch)
	}
}

func (s *ipfixSink) setInterfaces(in []datapath.Interface) {
	e := s.cur.Load()
	if e == nil {
		return
	}
	s.set(e, in)
}

// refreshInterfaces gives the exporter the interface list that list
// returns, calling list only when there is an exporter: hotplug calls
// this on every attach and detach, and without IPFIX a copy of every
// attached interface per change was only garbage (quadratic in churn).
func (s *ipfixSink) refreshInterfaces(list func() []datapath.Interface) {
	if e := s.cur.Load(); e != nil {
		s.set(e, list())
	}
}

func (s *ipfixSink) set(e *ipfix.Exporter, in []datapath.Interface) {
	out := make([]ipfix.Interface, len(in))
	for i, ifc := range in {
		out[i] = ipfix.Interface{Index: uint32(ifc.Index), Name: ifc.Name}
	}
	e.SetInterfaces(out)
}

// ipfixStage is the IPFIX exporter behind a.ipfix, which a reload may
// start, replace or stop.
type ipfixStage struct{ a *agent }

// newIPFIX resolves the collector and binds the exporter's socket; the
// exporter sends nothing until start, after the datapath has excluded
// its socket from sampling.
func (a *agent) newIPFIX() (component, error) {
	a.ipfix = &ipfixSink{}
	c := a.cfg.Agent
	if c.IPFIX.Enabled() {
		e, err := newExporter(c.IPFIX, exportFields(c.BPF), c.BPF.SampleRate, true, a.log)
		if err != nil {
			return nil, err
		}
		a.ipfix.cur.Store(e)
	}
	return &ipfixStage{a: a}, nil
}

func (s *ipfixStage) name() string { return "IPFIX exporter" }

func (s *ipfixStage) start() error {
	s.a.reg.MustRegister(s.a.ipfix)
	if e := s.a.ipfix.cur.Load(); e != nil {
		e.Start()
	}
	return nil
}

func (s *ipfixStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	a := s.a
	c, n := cur.Agent.IPFIX, next.Agent.IPFIX
	if c == n {
		return reconfig{}, nil
	}
	var newExp *ipfix.Exporter
	if n.Enabled() {
		// With the same fixed bind port the new socket shares the port
		// with the old one (SO_REUSEPORT) until the old exporter has
		// flushed; a new bind address must be free, as at start.
		exclusive := n.Bind != c.Bind
		var err error
		// The running datapath's fields: a change waits for a restart.
		if newExp, err = newExporter(n, exportFields(cur.Agent.BPF), a.sampleRate.Load(), exclusive, a.log); err != nil {
			return reconfig{}, err
		}
		// The new exporter may send templates at once: exclude its
		// socket from sampling now, next to the running one's.
		a.ipfix.other = newExp
		if err := a.dp.SetConfig(a.datapathConfig(a.sampleRate.Load())); err != nil {
			a.ipfix.other = nil
			_ = newExp.Close()
			return reconfig{}, err
		}
		newExp.Start()
	}
	return reconfig{
		commit: func() []string {
			// The old exporter stays excluded from sampling while it
			// flushes, so neither exporter's packets become flows.
			old := a.ipfix.cur.Swap(newExp)
			a.ipfix.other = old
			if newExp != nil {
				a.ipfix.setInterfaces(a.dp.Interfaces())
			}
			if old != nil {
				_ = old.Close()
			}
			a.ipfix.other = nil
			if err := a.dp.SetConfig(a.datapathConfig(a.sampleRate.Load())); err != nil {
				a.log.Warn("reload: updating the exporter exclusion", "err", err)
			}
			return []string{"agent.ipfix"}
		},
		abort: func() {
			if newExp != nil {
				_ = newExp.Close()
				a.ipfix.other = nil
				_ = a.dp.SetConfig(a.datapathConfig(a.sampleRate.Load()))
			}
		},
	}, nil
}

func (s *ipfixStage) stop() error {
	if e := s.a.ipfix.cur.Swap(nil); e != nil {
		_ = e.Close()
	}
	return nil
}

// newExporter creates an exporter whose sender waits for Start, so its
// socket can be excluded from sampling before its first packet. A fixed
// bind port is bound with SO_REUSEPORT, so that a reload can open the
// replacement socket while the old exporter still flushes; at start
// (exclusive) the port is first bound alone, so a port some other
// socket holds is still an error, as it would be without the option.
func newExporter(c config.IPFIX, fields ipfix.Fields, rate uint32, exclusive bool, log *slog.Logger) (*ipfix.Exporter, error) {
	bind := ""
	if c.Bind.Host != "" || c.Bind.Port != 0 {
		bind = c.Bind.Addr()
	}
	if exclusive && c.Bind.Port != 0 {
		if err := ipfix.CheckBindFree(bind, c.CollectorAddr()); err != nil {
			return nil, fmt.Errorf("agent.ipfix.bind %s: %w", bind, err)
		}
	}
	e, err := ipfix.New(ipfix.Config{
		ReusePort:           c.Bind.Port != 0,
		Collector:           c.CollectorAddr(),
		Bind:                bind,
		ObservationDomainID: c.ObservationDomainID,
		TemplateRefresh:     c.TemplateRefresh.Duration,
		MaxMessageSize:      c.MaxMessageSize,
		SampleRate:          rate,
		Deferred:            true,
		Fields:              fields,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("agent.ipfix: %w", err)
	}
	return e, nil
}

// exportFields are the optional elements of the IPFIX flow templates for
// agent.bpf.fields and agent.bpf.fib_lookup.
func exportFields(b config.BPF) ipfix.Fields {
	var f ipfix.Fields
	for name, bit := range map[string]ipfix.Fields{"tcp_flags": ipfix.FieldTCPFlags, "dscp": ipfix.FieldDSCP,
		"icmp": ipfix.FieldICMP, "ttl": ipfix.FieldTTL, "vlan": ipfix.FieldVLAN} {
		if b.HasField(name) {
			f |= bit
		}
	}
	if b.FIBLookup {
		f |= ipfix.FieldNextHop
	}
	return f
}
