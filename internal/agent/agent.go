// SPDX-License-Identifier: AGPL-3.0-only

// Package agent wires the stages together: config -> datapath (packets,
// events) -> flow table -> enrichment -> exporters (Prometheus, IPFIX),
// and owns start-up order, live changes (hotplug, reload, control
// requests) and shutdown.
package agent

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/stepbrobd/rfm/internal/enrich/mmdb"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/internal/export/ipfix"
	"github.com/stepbrobd/rfm/internal/export/prom"
	"github.com/stepbrobd/rfm/internal/flow"
)

// Version is set at build time with -ldflags "-X ...agent.Version=v1.2.3".
var Version = "dev"

// shutdownGrace bounds how long exporters get to flush at exit.
const shutdownGrace = 3 * time.Second

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
	cfg, err := config.LoadAndValidate(o.ConfigPath, nil)
	if err != nil {
		return err
	}
	ifaces, err := config.ResolveInterfaces(cfg, nil)
	if err != nil {
		return err
	}
	a := &agent{cfg: cfg, configPath: o.ConfigPath, log: o.Logger, startedAt: time.Now()}
	a.sampleRate.Store(cfg.Agent.BPF.SampleRate)
	a.fileSampleRate = cfg.Agent.BPF.SampleRate
	defer a.close()
	a.keepCaps = o.KeepCapabilities
	if err := a.start(ifaces); err != nil {
		return err
	}
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
	// fileSampleRate is the rate the config file last asked for; a rate
	// set over the control socket stays until the file changes it.
	fileSampleRate uint32
	readerDone     atomic.Bool // the datapath reader stopped
	keepCaps       bool

	// mu serialises changes (reload, hotplug, control requests that
	// write) and guards cfg.
	mu  sync.Mutex
	cfg *config.Config

	reg      *prometheus.Registry
	db       *mmdb.DB // current MMDB databases, nil when none
	enricher *enrich.Enricher
	rib      *rib.RIB
	station  *bmp.Station
	ipfix    *ipfixSink
	dp       *datapath.Datapath
	table    *flow.Table
	core     *prom.Collector
	metrics  *metricsServer
	watch    linkWatcher
	links    linkState
	control  controlServer

	bg      sync.WaitGroup
	stopBG  context.CancelFunc
	bgCtx   context.Context
	runDone chan error
	started bool
}

// start brings stages up in an order where every failure is detected
// before the kernel is touched: files and sockets first, attach last.
func (a *agent) start(ifaces []net.Interface) error {
	c := a.cfg.Agent
	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "rfm_build_info",
		Help:        "Build information of the running agent; always 1.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	a.reg.MustRegister(buildInfo, newMemoryCollector())
	a.bgCtx, a.stopBG = context.WithCancel(context.Background())

	// Enrichment.
	var err error
	if a.db, err = openMMDB(c.Enrich.MMDB); err != nil {
		return err
	}
	if c.Enrich.RIB.BMP.Enabled() {
		a.rib = rib.New(rib.Options{Keep: c.Enrich.RIB.BMP.Keep.Duration})
		sc, err := c.Enrich.RIB.BMP.Station()
		if err != nil {
			return err
		}
		if a.station, err = bmp.Listen(sc, a.rib, a.log); err != nil {
			return err
		}
		a.reg.MustRegister(a.rib, a.station)
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			if err := a.station.Serve(a.bgCtx); err != nil && a.bgCtx.Err() == nil {
				a.log.Error("BMP station stopped", "err", err)
			}
		}()
	}
	a.enricher = enrich.New(a.rib, a.db)

	// Exporters: bind the metrics port and the control socket, and
	// resolve the collector, before anything is attached.
	a.metrics, err = listenMetrics(a.cfg, a.log)
	if err != nil {
		return err
	}
	a.ipfix = &ipfixSink{}
	a.reg.MustRegister(a.ipfix)
	if c.IPFIX.Enabled() {
		f, err := newFanout(c.IPFIX, c.BPF.SampleRate, nil, false, a.log)
		if err != nil {
			return err
		}
		a.ipfix.cur.Store(f)
	}
	if err := a.startControl(); err != nil {
		return err
	}

	// Datapath.
	a.dp, err = datapath.Load(datapath.Options{RingBufSize: c.BPF.RingBufSize})
	if err != nil {
		return err
	}
	if err := a.dp.SetConfig(a.datapathConfig(c.BPF.SampleRate)); err != nil {
		return err
	}
	if f := a.ipfix.cur.Load(); f != nil {
		f.Start()
	}
	a.table = flow.NewTable(flow.Options{
		MaxFlows:      c.Collector.MaxFlows,
		IdleTimeout:   c.Collector.EvictionTimeout.Duration,
		ActiveTimeout: c.Collector.ActiveTimeout.Duration,
		Sinks:         []flow.Sink{a.ipfix},
		Enricher:      a.enricher,
		Logger:        a.log,

		MaxLabelSets:   c.Prometheus.MaxLabelSets,
		LabelSetExpiry: c.Prometheus.LabelSetExpiry.Duration,
	})
	a.core = prom.New(a.dp, a.table, a.sampleRate.Load)
	a.reg.MustRegister(a.core)

	for _, ifc := range ifaces {
		if err := a.dp.Attach(ifc.Index, ifc.Name); err != nil {
			return err // close() detaches what was attached
		}
		a.log.Debug("attached", "interface", ifc.Name, "ifindex", ifc.Index)
	}
	a.ipfix.setInterfaces(a.dp.Interfaces())
	if err := a.startWatch(); err != nil {
		return err
	}

	a.runDone = make(chan error, 1)
	go func() {
		err := a.table.Run(context.Background(), a.dp)
		a.readerDone.Store(true)
		if err != nil && !errors.Is(err, datapath.ErrFlushed) {
			a.log.Error("datapath reader stopped", "err", err)
		}
		a.runDone <- err
	}()
	a.bg.Add(1)
	go func() { defer a.bg.Done(); a.table.RunSweeper(a.bgCtx) }()

	// Everything privileged at start is done: drop what is not needed
	// before answering anyone.
	if !a.keepCaps {
		if err := dropCapabilities(a.cfg); err != nil {
			a.log.Warn("could not drop capabilities; running with those it was started with", "err", err)
		}
	}
	if err := a.metrics.serve(a.reg, a.core, a.healthy); err != nil {
		return err
	}
	a.serveControl()
	a.started = true
	return nil
}

// healthy is what /healthz reports: the agent is up while it reads
// events from its datapath.
func (a *agent) healthy() error {
	if a.readerDone.Load() {
		return errors.New("datapath reader stopped")
	}
	return nil
}

// datapathConfig is the BPF config for a sample rate, excluding the IPFIX
// exporters' own packets so exporting never creates flows.
func (a *agent) datapathConfig(rate uint32) datapath.Config {
	return datapath.Config{SampleRate: rate, Exclude: excludeTuples(a.ipfix.exporters())}
}

func openMMDB(c config.MMDB) (*mmdb.DB, error) {
	if c.ASNDB == "" && c.CityDB == "" {
		return nil, nil
	}
	return mmdb.Open(c.ASNDB, c.CityDB)
}

// newFanout creates an exporter per collector of c. running are the
// exporters of a running config by collector (nil at start); with reuse
// (the settings all collectors share are unchanged) a collector that is
// still configured keeps its exporter. On an error the exporters it
// created are closed and the running ones are left alone.
func newFanout(c config.IPFIX, rate uint32, running map[config.IPFIXCollector]*ipfix.Exporter, reuse bool, log *slog.Logger) (*ipfix.Fanout, error) {
	var exps, created []*ipfix.Exporter
	for _, col := range c.Targets() {
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
		e, err := newExporter(c, col, rate, exclusive, log)
		if err != nil {
			for _, e := range created {
				_ = e.Close()
			}
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
func newExporter(c config.IPFIX, col config.IPFIXCollector, rate uint32, exclusive bool, log *slog.Logger) (*ipfix.Exporter, error) {
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
	}, log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return e, nil
}

// shutdown stops watching links, detaches, drains what the ring still
// holds into the table and ends every flow, so exporters see them all.
func (a *agent) shutdown() error {
	a.log.Info("shutting down: exporting active flows")
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopWatch()
	var errs []error
	for _, ifc := range a.dp.Interfaces() {
		errs = append(errs, a.dp.Detach(ifc.Index))
	}
	if err := a.dp.Drain(); err != nil {
		errs = append(errs, fmt.Errorf("drain ring buffer: %w", err))
	}
	select {
	case err := <-a.runDone:
		if err != nil && !errors.Is(err, datapath.ErrFlushed) {
			errs = append(errs, err)
		}
	case <-time.After(shutdownGrace):
		errs = append(errs, errors.New("ring buffer drain timed out"))
	}
	a.table.Flush(flow.EndForced)
	return errors.Join(errs...)
}

// close releases everything start created, in reverse order. Safe to
// call after a partial start.
func (a *agent) close() {
	a.stopWatch()
	a.closeControl()
	if a.metrics != nil {
		a.metrics.close()
	}
	if a.dp != nil {
		if err := a.dp.Close(); err != nil {
			a.log.Warn("detach", "err", err)
		}
	}
	if a.ipfix != nil {
		if f := a.ipfix.cur.Swap(nil); f != nil {
			_ = f.Close()
		}
	}
	if a.stopBG != nil {
		a.stopBG()
	}
	if a.station != nil {
		a.station.Close()
	}
	a.bg.Wait()
	if a.rib != nil {
		a.rib.Close()
	}
	if a.db != nil {
		_ = a.db.Close()
	}
}
