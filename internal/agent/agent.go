// Package agent wires the stages together: config -> datapath (packets,
// events) -> flow table -> enrichment -> exporters (Prometheus, IPFIX),
// and owns start-up order and shutdown.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
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

// Run starts the agent with the config at path and blocks until ctx is
// cancelled, then exports every active flow and detaches. Every error
// before the first packet is seen leaves nothing attached.
func Run(ctx context.Context, path string, log *slog.Logger) error {
	cfg, err := config.LoadAndValidate(path, nil)
	if err != nil {
		return err
	}
	ifaces, err := config.ResolveInterfaces(cfg, nil)
	if err != nil {
		return err
	}
	a := &agent{cfg: cfg, log: log}
	a.sampleRate.Store(cfg.Agent.BPF.SampleRate)
	defer a.close()
	if err := a.start(ctx, ifaces); err != nil {
		return err
	}
	log.Info("agent running", "interfaces", len(ifaces), "metrics", "http://"+cfg.PrometheusAddr()+"/metrics",
		"sample_rate", cfg.Agent.BPF.SampleRate)
	<-ctx.Done()
	return a.shutdown()
}

type agent struct {
	cfg        *config.Config
	log        *slog.Logger
	sampleRate atomic.Uint32

	db       *mmdb.DB
	rib      *rib.RIB
	station  *bmp.Station
	exporter *ipfix.Exporter
	dp       *datapath.Datapath
	table    *flow.Table
	http     *http.Server

	bg       sync.WaitGroup
	stopBG   context.CancelFunc
	runDone  chan error
	shutdown func() error
}

// start brings stages up in an order where every failure is detected
// before the kernel is touched: files and sockets first, attach last.
func (a *agent) start(ctx context.Context, ifaces []net.Interface) error {
	c := a.cfg.Agent
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "rfm_build_info",
		Help:        "Build information of the running agent; always 1.",
		ConstLabels: prometheus.Labels{"version": Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(buildInfo)

	// Enrichment.
	var err error
	if c.Enrich.MMDB.ASNDB != "" || c.Enrich.MMDB.CityDB != "" {
		if a.db, err = mmdb.Open(c.Enrich.MMDB.ASNDB, c.Enrich.MMDB.CityDB); err != nil {
			return err
		}
	}
	bgCtx, stop := context.WithCancel(context.Background())
	a.stopBG = stop
	if c.Enrich.RIB.BMP.Enabled() {
		a.rib = rib.New(rib.Options{Keep: c.Enrich.RIB.BMP.Keep.Duration})
		if a.station, err = bmp.Listen(c.Enrich.RIB.BMP, a.rib, a.log); err != nil {
			return err
		}
		reg.MustRegister(a.rib, a.station)
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			if err := a.station.Serve(bgCtx); err != nil && bgCtx.Err() == nil {
				a.log.Error("BMP station stopped", "err", err)
			}
		}()
	}
	var enricher flow.Enricher
	if a.db != nil || a.rib != nil {
		enricher = enrich.New(a.rib, a.db)
	}

	// Exporters: bind the metrics port and resolve the collector first.
	ln, err := net.Listen("tcp", a.cfg.PrometheusAddr())
	if err != nil {
		return fmt.Errorf("agent.prometheus: listen on %s: %w", a.cfg.PrometheusAddr(), err)
	}
	var sinks []flow.Sink
	if c.IPFIX.Enabled() {
		bind := ""
		if c.IPFIX.Bind.Host != "" || c.IPFIX.Bind.Port != 0 {
			bind = c.IPFIX.Bind.Addr()
		}
		a.exporter, err = ipfix.New(ipfix.Config{
			Collector:           c.IPFIX.CollectorAddr(),
			Bind:                bind,
			ObservationDomainID: c.IPFIX.ObservationDomainID,
			TemplateRefresh:     c.IPFIX.TemplateRefresh.Duration,
			MaxMessageSize:      c.IPFIX.MaxMessageSize,
			SampleRate:          c.BPF.SampleRate,
		}, a.log)
		if err != nil {
			ln.Close()
			return err
		}
		reg.MustRegister(a.exporter)
		sinks = append(sinks, a.exporter)
	}

	// Datapath.
	a.dp, err = datapath.Load(datapath.Options{RingBufSize: c.BPF.RingBufSize})
	if err != nil {
		ln.Close()
		return err
	}
	dpCfg := datapath.Config{SampleRate: c.BPF.SampleRate}
	if a.exporter != nil {
		// Never report our own export packets as flows.
		dpCfg.Exclude = datapath.Tuple{Src: a.exporter.LocalAddr(), Dst: a.exporter.RemoteAddr()}
	}
	if err := a.dp.SetConfig(dpCfg); err != nil {
		ln.Close()
		return err
	}
	a.table = flow.NewTable(flow.Options{
		MaxFlows:    c.Collector.MaxFlows,
		IdleTimeout: c.Collector.EvictionTimeout.Duration,
		Sinks:       sinks,
		Enricher:    enricher,
		Logger:      a.log,
	})
	core := prom.New(a.dp, a.table, a.sampleRate.Load)
	reg.MustRegister(core)

	for _, ifc := range ifaces {
		if err := a.dp.Attach(ifc.Index, ifc.Name); err != nil {
			ln.Close()
			return err // close() detaches what was attached
		}
		a.log.Debug("attached", "interface", ifc.Name, "ifindex", ifc.Index)
	}
	if a.exporter != nil {
		a.exporter.SetInterfaces(exportInterfaces(a.dp.Interfaces()))
	}

	a.runDone = make(chan error, 1)
	go func() { a.runDone <- a.table.Run(context.Background(), a.dp) }()
	a.bg.Add(1)
	go func() { defer a.bg.Done(); a.table.RunSweeper(bgCtx) }()

	mux := http.NewServeMux()
	mux.Handle("/metrics", prom.Handler(reg, core, func(err error) { a.log.Warn("metrics", "err", err) }))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "rfm agent: metrics at /metrics")
	})
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := a.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server stopped", "err", err)
		}
	}()

	a.shutdown = func() error {
		a.log.Info("shutting down: exporting active flows")
		// Detach first so no new events arrive, then drain what the
		// ring still holds into the table, then end every flow.
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
	return nil
}

func exportInterfaces(in []datapath.Interface) []ipfix.Interface {
	out := make([]ipfix.Interface, len(in))
	for i, ifc := range in {
		out[i] = ipfix.Interface{Index: uint32(ifc.Index), Name: ifc.Name}
	}
	return out
}

// close releases everything start created, in reverse order. Safe to
// call after a partial start.
func (a *agent) close() {
	if a.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = a.http.Shutdown(ctx)
		cancel()
	}
	if a.dp != nil {
		if err := a.dp.Close(); err != nil {
			a.log.Warn("detach", "err", err)
		}
	}
	if a.exporter != nil {
		_ = a.exporter.Close()
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
