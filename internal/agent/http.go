// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/export/prom"
)

// metricsServer serves /metrics and /healthz on agent.prometheus, with
// TLS and basic auth when agent.prometheus.web_config names an
// exporter-toolkit web config file.
type metricsServer struct {
	addr      string
	webConfig string
	ln        net.Listener
	srv       *http.Server
	log       *slog.Logger
}

// listenMetrics checks the web config and binds the listen address; it
// serves nothing until serve.
func listenMetrics(cfg *config.Config, log *slog.Logger) (*metricsServer, error) {
	m := &metricsServer{addr: cfg.PrometheusAddr(), webConfig: cfg.Agent.Prometheus.WebConfig, log: log}
	if m.webConfig != "" {
		if err := web.Validate(m.webConfig); err != nil {
			return nil, fmt.Errorf("agent.prometheus.web_config %s: %s", m.webConfig, oneLine(err))
		}
	}
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		return nil, fmt.Errorf("agent.prometheus: listen on %s: %w", m.addr, err)
	}
	m.ln = ln
	return m, nil
}

// serve starts answering. healthy reports whether the agent still
// reads its datapath; /healthz answers 503 with the reason otherwise.
func (m *metricsServer) serve(reg *prometheus.Registry, core *prom.Collector, healthy func() error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", prom.Handler(reg, core, func(err error) { m.log.Warn("metrics", "err", err) }))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "rfm agent: metrics at /metrics, health at /healthz")
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	flags := &web.FlagConfig{WebConfigFile: &m.webConfig}
	srv, ln := m.srv, m.ln
	go func() {
		if err := web.Serve(ln, srv, flags, m.log); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("metrics server stopped", "addr", m.addr, "err", err)
		}
	}()
}

// oneLine keeps a multi-line library error on the single line a
// user-facing error gets.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

func (m *metricsServer) close() {
	if m.srv == nil {
		m.ln.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
}
