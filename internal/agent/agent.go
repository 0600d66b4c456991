// SPDX-License-Identifier: AGPL-3.0-only

// Package agent wires the stages together: config -> datapath (packets,
// events) -> flow table -> enrichment -> exporters (Prometheus, IPFIX),
// and owns start-up order, live changes (hotplug, reload, control
// requests) and shutdown.
package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/enrich"
	"github.com/stepbrobd/rfm/internal/enrich/bmp"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/internal/export/prom"
	"github.com/stepbrobd/rfm/internal/flow"
)

// Version is set at build time with -ldflags "-X ...agent.Version=v1.2.3".
var Version = "dev"

// Options configure Run.
type Options struct {
	ConfigPath string
	Logger     *slog.Logger
	// Reload receives one value per reload request (SIGHUP); nil: none.
	Reload <-chan struct{}
	// KeepCapabilities leaves the process's capabilities alone; by
	// default the agent drops every capability it does not need once
	// it runs (see caps.go).
	KeepCapabilities bool
}

// Run starts the agent and blocks until ctx is cancelled, then exports
// every active flow and detaches. Every error before the first packet is
// seen leaves nothing attached.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	setGCPercent()
	cfg, err := config.LoadAndValidate(o.ConfigPath, nil)
	if err != nil {
		return err
	}
	ifaces, err := config.ResolveInterfaces(cfg, nil)
	if err != nil {
		return err
	}
	memory := newMemoryCollector()
	a := &agent{cfg: cfg, configPath: o.ConfigPath, log: o.Logger, startedAt: time.Now(),
		keepCaps: o.KeepCapabilities, ifaces: ifaces, reg: newRegistry(memory), memory: memory}
	a.sampleRate.Store(cfg.Agent.BPF.SampleRate)
	// After a shutdown this does nothing; after a failed start it
	// releases what was started.
	defer func() { _ = a.stopComponents() }()
	if err := a.startComponents(a.stages()); err != nil {
		return err
	}
	releaseStartupGarbage()
	a.log.Info("agent running", "interfaces", len(a.dp.Interfaces()), "metrics", "http://"+cfg.PrometheusAddr()+"/metrics",
		"sample_rate", cfg.Agent.BPF.SampleRate, "control", cfg.Agent.Control.Socket)
	for {
		select {
		case <-ctx.Done():
			return a.shutdown()
		case <-o.Reload:
			if res, err := a.reload(); err != nil {
				a.log.Error("reload rejected; the running config stays in effect", "err", err)
			} else {
				a.logReload(res.Applied, res.NeedsRestart)
			}
		}
	}
}

type agent struct {
	configPath string
	log        *slog.Logger
	startedAt  time.Time
	sampleRate atomic.Uint32
	readerDone atomic.Bool // the datapath reader stopped
	keepCaps   bool
	ifaces     []net.Interface // resolved at start, attached by the interfaces stage
	// unsampled is agent.bpf.directions as the datapath takes it: the
	// hooks, by datapath.Direction, that count but do not sample. Set by
	// the datapath stage; guarded by mu after start.
	unsampled [2]bool

	// mu serialises changes (reload, hotplug, control requests that
	// write) and guards cfg.
	mu  sync.Mutex
	cfg *config.Config

	// components are the stages in start order (component.go).
	components []component

	// What a component publishes for the components after it and for
	// the control API; set while it is constructed or started.
	reg      *prometheus.Registry
	memory   *memoryCollector // in reg; the datapath gives it the BPF figure
	enricher *enrich.Enricher
	rib      *rib.RIB     // nil without BMP
	station  *bmp.Station // nil without BMP
	ipfix    *ipfixSink
	dp       *datapath.Datapath
	table    *flow.Table
	core     *prom.Collector
	xdp      atomic.Pointer[xdpPath] // nil while agent.xdp.interfaces is empty (a reload turns it on and off)
}

// newRegistry is the agent's Prometheus registry with the process-wide
// collectors; stages register their own as they start.
func newRegistry(memory *memoryCollector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "rfm_build_info",
		Help:        "Build information of the running agent; always 1.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(buildInfo, memory)
	return reg
}

// healthy is what /healthz reports: the agent is up while it reads
// events from its datapath.
func (a *agent) healthy() error {
	if a.readerDone.Load() {
		return errors.New("datapath reader stopped")
	}
	return nil
}

// shutdown stops every stage in reverse order. The control socket and
// the metrics listener stop first; then the interfaces are detached, the
// flow table takes what the ring still holds and ends every flow, so
// the exporters see them all before they close.
func (a *agent) shutdown() error {
	a.log.Info("shutting down: exporting active flows")
	return a.stopComponents()
}

// datapathStage is the BPF programs and maps (a.dp). Interfaces are
// attached by the interfaces stage.
type datapathStage struct{ a *agent }

func (a *agent) newDatapath() (component, error) {
	a.unsampled = unsampledHooks(a.cfg.Agent.BPF)
	return &datapathStage{a: a}, nil
}

func (d *datapathStage) name() string { return "datapath" }

func (d *datapathStage) start() error {
	a := d.a
	c := a.cfg.Agent.BPF
	var err error
	if a.dp, err = datapath.Load(datapath.Options{RingBufSize: c.RingBufSize, Fields: datapathFields(c),
		MaxInterfaces: c.MaxInterfaces}); err != nil {
		return err
	}
	a.memory.useBPFLocked(a.dp.LockedMemory)
	return a.dp.SetConfig(a.datapathConfig(c.SampleRate))
}

func (d *datapathStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	// The ring is sized and the optional fields (event layout, flow key)
	// chosen when the programs load.
	var rc reconfig
	c, n := &cur.Agent.BPF, &next.Agent.BPF
	if c.RingBufSize != n.RingBufSize {
		rc.needsRestart = append(rc.needsRestart, "agent.bpf.ring_buf_size")
		n.RingBufSize = c.RingBufSize
	}
	if !slices.Equal(c.Fields, n.Fields) {
		rc.needsRestart = append(rc.needsRestart, "agent.bpf.fields")
		n.Fields = c.Fields
	}
	if c.FIBLookup != n.FIBLookup {
		rc.needsRestart = append(rc.needsRestart, "agent.bpf.fib_lookup")
		n.FIBLookup = c.FIBLookup
	}
	a := d.a
	maxChanged := c.MaxInterfaces != n.MaxInterfaces
	dirChanged := !slices.Equal(c.Directions, n.Directions)
	if !maxChanged && !dirChanged {
		return rc, nil
	}
	rc.commit = func() []string {
		var applied []string
		if maxChanged {
			// Validation bounded it, so setting it cannot fail.
			if err := a.dp.SetMaxInterfaces(n.MaxInterfaces); err != nil {
				a.log.Warn("reload: setting the interface limit", "err", err)
				n.MaxInterfaces = c.MaxInterfaces
			} else {
				applied = append(applied, "agent.bpf.max_interfaces")
			}
		}
		// The sampled directions are a flag of the config map.
		if dirChanged {
			prev := a.unsampled
			a.unsampled = unsampledHooks(*n)
			if err := a.dp.SetConfig(a.datapathConfig(a.sampleRate.Load())); err != nil {
				a.log.Warn("reload: setting the sampled directions", "err", err)
				a.unsampled, n.Directions = prev, c.Directions
			} else {
				applied = append(applied, "agent.bpf.directions")
			}
		}
		return applied
	}
	return rc, nil
}

// datapathFields are the optional fields the datapath reads for
// agent.bpf.fields and agent.bpf.fib_lookup. ICMP type and code need
// none: they are in the destination port whatever the fields.
func datapathFields(b config.BPF) datapath.Fields {
	return fieldBits(b, map[string]datapath.Fields{"tcp_flags": datapath.FieldTCPFlags,
		"dscp": datapath.FieldDSCP, "ttl": datapath.FieldTTL, "vlan": datapath.FieldVLAN}, datapath.FieldFIB)
}

// fieldBits is the set of bits of the fields agent.bpf.fields lists, and
// fib for agent.bpf.fib_lookup.
func fieldBits[F ~uint32](b config.BPF, bits map[string]F, fib F) F {
	var f F
	for name, bit := range bits {
		if b.HasField(name) {
			f |= bit
		}
	}
	if b.FIBLookup {
		f |= fib
	}
	return f
}

// unsampledHooks turns agent.bpf.directions into the datapath's hooks
// that do not sample.
func unsampledHooks(b config.BPF) [2]bool {
	var off [2]bool
	for _, d := range []datapath.Direction{datapath.Ingress, datapath.Egress} {
		off[d] = !b.Samples(d.String())
	}
	return off
}

func (d *datapathStage) stop() error {
	d.a.memory.useBPFLocked(nil)
	if d.a.dp != nil {
		if err := d.a.dp.Close(); err != nil {
			d.a.log.Warn("detach", "err", err)
		}
	}
	return nil
}

// datapathConfig is the BPF config for a sample rate, excluding the IPFIX
// exporters' own packets (the running ones and, during a reload, those
// starting or still flushing) so exporting never creates flows.
func (a *agent) datapathConfig(rate uint32) datapath.Config {
	return datapath.Config{SampleRate: rate, Unsampled: a.unsampled, Exclude: excludeTuples(a.ipfix.exporters(), a.ipfix.other)}
}
