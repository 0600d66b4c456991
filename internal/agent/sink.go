// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/export/ipfix"
	"github.com/stepbrobd/rfm/internal/flow"
)

// ipfixSink hands ended flows to the current IPFIX exporters, one per
// collector, which a reload may start, replace or stop; without any,
// flows end unexported. It also forwards the exporters' metrics.
type ipfixSink struct {
	cur atomic.Pointer[ipfix.Fanout]
	// other are, during a reload, the exporters about to join cur or
	// those that left it and still flush; their sockets are excluded
	// from sampling as well. Guarded by agent.mu.
	other []*ipfix.Exporter

	aliasMu sync.Mutex
	aliases map[aliasKey]string // of the interfaces last listed
}

var _ flow.PacedSink = (*ipfixSink)(nil)

func (s *ipfixSink) ExportFlows(recs []flow.Record) {
	if f := s.cur.Load(); f != nil {
		f.ExportFlows(recs)
	}
}

// ExportFlowsPaced takes the records of a flush, waiting for the
// exporters' queues rather than dropping.
func (s *ipfixSink) ExportFlowsPaced(recs []flow.Record) {
	if f := s.cur.Load(); f != nil {
		f.ExportFlowsPaced(recs)
	}
}

// Describe sends nothing: the exporters behind it come and go, so the
// registry treats this as an unchecked collector.
func (s *ipfixSink) Describe(chan<- *prometheus.Desc) {}

func (s *ipfixSink) Collect(ch chan<- prometheus.Metric) {
	if f := s.cur.Load(); f != nil {
		f.Collect(ch)
	}
}

// exporters returns the running exporters (none when export is off).
func (s *ipfixSink) exporters() []*ipfix.Exporter { return s.cur.Load().Exporters() }

func (s *ipfixSink) setInterfaces(in []datapath.Interface) {
	if f := s.cur.Load(); f != nil {
		f.SetInterfaces(s.exportInterfaces(in))
	}
}

// refreshInterfaces gives the exporters the interface list that list
// returns, calling list only when there are exporters: hotplug calls
// this on every attach and detach, and without IPFIX a copy of every
// attached interface per change was only garbage (quadratic in churn).
func (s *ipfixSink) refreshInterfaces(list func() []datapath.Interface) {
	if f := s.cur.Load(); f != nil {
		f.SetInterfaces(s.exportInterfaces(list()))
	}
}

// exportInterfaces names the attached interfaces for the interface
// options records, with their alias (IFLA_IFALIAS, as `ip link set DEV
// alias TEXT` sets it) as the description. The alias is read when an
// interface first shows up in the list, not on every change of the list:
// hotplug with thousands of interfaces would otherwise read each one's
// alias per attach.
func (s *ipfixSink) exportInterfaces(in []datapath.Interface) []ipfix.Interface {
	s.aliasMu.Lock()
	defer s.aliasMu.Unlock()
	seen := make(map[aliasKey]string, len(in))
	out := make([]ipfix.Interface, len(in))
	for i, ifc := range in {
		k := aliasKey{ifc.Index, ifc.Name}
		alias, ok := s.aliases[k]
		if !ok {
			alias = interfaceAlias(ifc.Name)
		}
		seen[k] = alias
		out[i] = ipfix.Interface{Index: uint32(ifc.Index), Name: ifc.Name, Description: alias}
	}
	s.aliases = seen
	return out
}

// aliasKey names an interface for the alias cache: an ifindex reused by
// another interface is another key.
type aliasKey struct {
	index int
	name  string
}

// interfaceAlias reads an interface's alias from sysfs, which shows the
// agent's network namespace; "" when it has none or cannot be read.
func interfaceAlias(name string) string {
	if name == "" || strings.ContainsAny(name, "/") {
		return ""
	}
	b, err := os.ReadFile(filepath.Join("/sys/class/net", name, "ifalias"))
	if err != nil {
		return ""
	}
	return strings.TrimRight(string(b), "\n")
}

// excludeTuples names exporters' sockets for the datapath, which never
// samples them.
func excludeTuples(exps ...[]*ipfix.Exporter) []datapath.Tuple {
	var out []datapath.Tuple
	for _, list := range exps {
		for _, e := range list {
			out = append(out, datapath.Tuple{Src: e.LocalAddr(), Dst: e.RemoteAddr()})
		}
	}
	return out
}

// ipfixStage is the IPFIX exporters behind a.ipfix, which a reload may
// start, replace or stop.
type ipfixStage struct{ a *agent }

// newIPFIX resolves the collectors and binds the exporters' sockets;
// they send nothing until start, after the datapath has excluded their
// sockets from sampling.
func (a *agent) newIPFIX() (component, error) {
	a.ipfix = &ipfixSink{}
	c := a.cfg.Agent
	if c.IPFIX.Enabled() {
		f, err := newFanout(&a.cfg.Agent, exportFields(c.BPF), c.BPF.SampleRate, nil, false, a.log)
		if err != nil {
			return nil, err
		}
		a.ipfix.cur.Store(f)
	}
	return &ipfixStage{a: a}, nil
}

func (s *ipfixStage) name() string { return "IPFIX exporter" }

func (s *ipfixStage) start() error {
	s.a.reg.MustRegister(s.a.ipfix)
	if f := s.a.ipfix.cur.Load(); f != nil {
		f.Start()
	}
	return nil
}

// sameExport reports whether two configs export the same way to a
// collector both list: the settings all collectors share are equal.
func sameExport(c, n *config.Agent) bool {
	return c.IPFIX.ObservationDomainID == n.IPFIX.ObservationDomainID && c.IPFIX.TemplateRefresh == n.IPFIX.TemplateRefresh &&
		c.IPFIX.MaxMessageSize == n.IPFIX.MaxMessageSize && slices.Equal(optionalGroups(c), optionalGroups(n))
}

func (s *ipfixStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	a := s.a
	c, n := &cur.Agent, &next.Agent
	if c.IPFIX.Equal(n.IPFIX) && sameExport(c, n) {
		return reconfig{}, nil
	}
	running := a.ipfix.exporters()
	var newExp *ipfix.Fanout
	var added []*ipfix.Exporter
	if n.IPFIX.Enabled() {
		// Collectors whose settings did not change keep their exporter
		// (socket, templates, sequence numbers); the others get new
		// ones. A fixed bind port a running exporter holds is shared
		// with it (SO_REUSEPORT) until it has flushed.
		byCollector := map[config.IPFIXCollector]*ipfix.Exporter{}
		for i, e := range running {
			byCollector[c.IPFIX.Targets()[i]] = e
		}
		var err error
		// The running datapath's fields: a change waits for a restart.
		if newExp, err = newFanout(n, exportFields(cur.Agent.BPF), a.sampleRate.Load(), byCollector, sameExport(c, n), a.log); err != nil {
			return reconfig{}, err
		}
		added = notIn(newExp.Exporters(), running)
		// The new exporters may send templates at once: exclude their
		// sockets from sampling now, next to the running ones.
		a.ipfix.other = added
		if err := a.dp.SetConfig(a.datapathConfig(a.sampleRate.Load())); err != nil {
			a.ipfix.other = nil
			closeExporters(added)
			return reconfig{}, err
		}
		for _, e := range added {
			e.Start()
		}
	}
	return reconfig{
		commit: func() []string {
			// Removed exporters stay excluded from sampling while they
			// flush, so no exporter's packets become flows.
			removed := notIn(running, newExp.Exporters())
			a.ipfix.cur.Store(newExp)
			a.ipfix.other = removed
			if len(added) > 0 {
				ifaces := a.ipfix.exportInterfaces(a.dp.Interfaces())
				for _, e := range added {
					e.SetInterfaces(ifaces)
				}
			}
			closeExporters(removed)
			a.ipfix.other = nil
			if err := a.dp.SetConfig(a.datapathConfig(a.sampleRate.Load())); err != nil {
				a.log.Warn("reload: updating the exporter exclusion", "err", err)
			}
			return []string{"agent.ipfix"}
		},
		abort: func() {
			if len(added) > 0 {
				closeExporters(added)
				a.ipfix.other = nil
				_ = a.dp.SetConfig(a.datapathConfig(a.sampleRate.Load()))
			}
		},
	}, nil
}

func (s *ipfixStage) stop() error {
	if f := s.a.ipfix.cur.Swap(nil); f != nil {
		_ = f.Close()
	}
	return nil
}

// notIn returns the exporters of exps that are not in of.
func notIn(exps, of []*ipfix.Exporter) []*ipfix.Exporter {
	var out []*ipfix.Exporter
	for _, e := range exps {
		if !slices.Contains(of, e) {
			out = append(out, e)
		}
	}
	return out
}

// closeExporters closes exps, which flush in parallel.
func closeExporters(exps []*ipfix.Exporter) {
	if len(exps) > 0 {
		_ = ipfix.NewFanout(exps...).Close()
	}
}

// optionalGroups are the groups of optional information elements the
// flow templates carry: the BGP context when a RIB is fed over BMP, its
// communities when asked for as well.
func optionalGroups(a *config.Agent) []string {
	var groups []string
	if a.Enrich.RIB.BMP.Enabled() {
		groups = append(groups, ipfix.GroupBGP)
		if a.IPFIX.BGPCommunities {
			groups = append(groups, ipfix.GroupBGPCommunities)
		}
	}
	return groups
}

// newFanout creates an exporter per collector of a.IPFIX. running are
// the exporters of the running config by collector (nil at start); with
// reuse (the settings all collectors share are unchanged) a collector
// that is still configured keeps its exporter. On an error the
// exporters it created are closed and the running ones left alone.
func newFanout(a *config.Agent, fields ipfix.Fields, rate uint32, running map[config.IPFIXCollector]*ipfix.Exporter, reuse bool, log *slog.Logger) (*ipfix.Fanout, error) {
	var exps, created []*ipfix.Exporter
	for _, col := range a.IPFIX.Targets() {
		if e := running[col]; e != nil && reuse {
			exps = append(exps, e)
			continue
		}
		// A fixed bind port a running exporter holds is shared with it
		// (SO_REUSEPORT) until it has flushed; any other must be free.
		exclusive := true
		for old := range running {
			if old.Bind == col.Bind {
				exclusive = false
			}
		}
		e, err := newExporter(a, fields, col, rate, exclusive, log)
		if err != nil {
			closeExporters(created)
			return nil, err
		}
		exps = append(exps, e)
		created = append(created, e)
	}
	return ipfix.NewFanout(exps...), nil
}

// newExporter creates an exporter whose sender waits for Start, so its
// socket can be excluded from sampling before its first packet. A fixed
// bind port is bound with SO_REUSEPORT, so that a reload can open the
// replacement socket while the old exporter still flushes; when no
// running exporter has it (exclusive) the port is first bound alone, so
// a port some other socket holds is still an error, as it would be
// without the option.
func newExporter(a *config.Agent, fields ipfix.Fields, col config.IPFIXCollector, rate uint32, exclusive bool, log *slog.Logger) (*ipfix.Exporter, error) {
	c := a.IPFIX
	key := "agent.ipfix"
	if len(c.Collectors) > 0 {
		key = fmt.Sprintf("agent.ipfix.collectors[%d]", slices.Index(c.Collectors, col))
	}
	bind := ""
	if col.Bind.Host != "" || col.Bind.Port != 0 {
		bind = col.Bind.Addr()
	}
	if exclusive && col.Bind.Port != 0 {
		if err := ipfix.CheckBindFree(bind, col.Addr()); err != nil {
			return nil, fmt.Errorf("%s.bind %s: %w", key, bind, err)
		}
	}
	e, err := ipfix.New(ipfix.Config{
		ReusePort:           col.Bind.Port != 0,
		Collector:           col.Addr(),
		Name:                col.Addr(),
		Bind:                bind,
		ObservationDomainID: c.ObservationDomainID,
		TemplateRefresh:     c.TemplateRefresh.Duration,
		MaxMessageSize:      c.MaxMessageSize,
		SampleRate:          rate,
		Deferred:            true,
		Optional:            optionalGroups(a),
		Fields:              fields,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return e, nil
}

// exportFields are the optional elements of the IPFIX flow templates for
// agent.bpf.fields and agent.bpf.fib_lookup.
func exportFields(b config.BPF) ipfix.Fields {
	return fieldBits(b, map[string]ipfix.Fields{"tcp_flags": ipfix.FieldTCPFlags, "dscp": ipfix.FieldDSCP,
		"icmp": ipfix.FieldICMP, "ttl": ipfix.FieldTTL, "vlan": ipfix.FieldVLAN}, ipfix.FieldNextHop)
}
