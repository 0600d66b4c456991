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
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/export/prom"
)

// metricsServer serves /metrics and /healthz on agent.prometheus, with
// TLS and basic auth when agent.prometheus.web_config names an
// exporter-toolkit web config file.
//
// The listening socket is shared by successive servers: a reload that
// changes only web_config starts a server with the new settings on the
// same socket and retires the old one, so no connection is refused and
// no bind races the old listener (see sharedListener).
type metricsServer struct {
	addr      string
	webConfig string
	ln        *sharedListener
	srv       *http.Server
	view      *listenerView
	log       *slog.Logger
}

// listenMetrics checks the web config and binds the listen address; it
// serves nothing until serve.
func listenMetrics(cfg *config.Config, log *slog.Logger) (*metricsServer, error) {
	m := &metricsServer{addr: cfg.PrometheusAddr(), webConfig: cfg.Agent.Prometheus.WebConfig, log: log}
	if err := validateWebConfig(m.webConfig); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", m.addr)
	if err != nil {
		return nil, fmt.Errorf("agent.prometheus: listen on %s: %w", m.addr, err)
	}
	m.ln = newSharedListener(ln)
	return m, nil
}

func validateWebConfig(path string) error {
	if path == "" {
		return nil
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("agent.prometheus.web_config %s: %s", path, oneLine(err))
	}
	return nil
}

// withWebConfig returns a server for the same socket with another web
// config; it serves nothing until serve, and m keeps serving meanwhile.
func (m *metricsServer) withWebConfig(webConfig string) (*metricsServer, error) {
	if err := validateWebConfig(webConfig); err != nil {
		return nil, err
	}
	return &metricsServer{addr: m.addr, webConfig: webConfig, ln: m.ln, log: m.log}, nil
}

// serveStartTimeout bounds how long serve waits for a new server to
// reach its accept loop.
const serveStartTimeout = 5 * time.Second

// serve starts answering and takes over the socket from whichever
// server answered on it before (which the caller then retires with
// retire). healthy reports whether the agent still reads its datapath;
// /healthz answers 503 with the reason otherwise. If the server cannot
// start (a web config that broke since it was validated), serve returns
// the error and the previous server keeps the socket.
func (m *metricsServer) serve(reg *prometheus.Registry, core *prom.Collector, healthy func() error) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", prom.Handler(reg, core, func(err error) { m.log.Warn("metrics", "err", err) }))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if pprofEnabled() {
		handlePprof(mux)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "rfm agent: metrics at /metrics, health at /healthz")
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	m.view = m.ln.newView()
	flags := &web.FlagConfig{WebConfigFile: &m.webConfig}
	srv, view := m.srv, m.view
	failed := make(chan error, 1)
	go func() {
		err := web.Serve(view, srv, flags, m.log)
		// A retired server's Serve ends with net.ErrClosed (see retire).
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			m.log.Error("metrics server stopped", "addr", m.addr, "err", err)
		}
		failed <- err
	}()
	// web.Serve reads and checks the web config before it first calls
	// Accept; only then may the new server take the socket.
	select {
	case <-view.accepting:
	case err := <-failed:
		view.Close()
		return fmt.Errorf("agent.prometheus.web_config %s: %s", m.webConfig, oneLine(err))
	case <-time.After(serveStartTimeout):
		view.Close()
		_ = srv.Close()
		return fmt.Errorf("agent.prometheus: server on %s did not start within %s", m.addr, serveStartTimeout)
	}
	m.ln.activate(view)
	return nil
}

// oneLine keeps a multi-line library error on the single line a
// user-facing error gets.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// retire stops m's server after another one took over its socket; the
// socket stays open. Not Shutdown: a connection the old server accepted
// just before the handover but whose request it reads only after
// Shutdown began would be closed unanswered, a failed scrape. Instead
// the server stops accepting and stops keeping connections alive: every
// request it has or gets on its connections is answered, idle keep-alive
// connections are closed (Prometheus' client retries a request that
// meets a closed idle connection), and the next connection goes to the
// new server.
func (m *metricsServer) retire() {
	if m.srv == nil {
		return
	}
	m.view.Close()
	m.srv.SetKeepAlivesEnabled(false)
}

// close stops the server and closes the socket.
func (m *metricsServer) close() {
	if m.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = m.srv.Shutdown(ctx)
	}
	m.ln.Close()
}

// sharedListener accepts on one socket and hands each connection to the
// current view, so one socket can pass from an http.Server to its
// replacement without a moment where connections are refused.
type sharedListener struct {
	ln        net.Listener
	cur       atomic.Pointer[listenerView]
	startOnce sync.Once
	done      chan struct{} // closed when the accept loop ends
}

func newSharedListener(ln net.Listener) *sharedListener {
	return &sharedListener{ln: ln, done: make(chan struct{})}
}

// listenerView is the net.Listener one http.Server serves on.
type listenerView struct {
	parent     *sharedListener
	conns      chan net.Conn
	closed     chan struct{}
	closeOnce  sync.Once
	accepting  chan struct{} // closed at the first Accept
	acceptOnce sync.Once
}

func (s *sharedListener) newView() *listenerView {
	return &listenerView{parent: s, conns: make(chan net.Conn), closed: make(chan struct{}), accepting: make(chan struct{})}
}

// activate makes v receive every connection accepted from now on.
func (s *sharedListener) activate(v *listenerView) {
	s.cur.Store(v)
	s.startOnce.Do(func() { go s.acceptLoop() })
}

func (s *sharedListener) acceptLoop() {
	defer close(s.done)
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: retry after a
			// pause, as http.Server does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.hand(c)
	}
}

// hand gives c to the current view. A view is closed only after its
// replacement is current, so retrying with the current view never loses
// a connection during a handover; if the current view itself is closed,
// the server is shutting down and c is dropped.
func (s *sharedListener) hand(c net.Conn) {
	for {
		v := s.cur.Load()
		select {
		case v.conns <- c:
			return
		case <-v.closed:
			if s.cur.Load() == v {
				c.Close()
				return
			}
		}
	}
}

// Close closes the socket.
func (s *sharedListener) Close() error { return s.ln.Close() }

func (v *listenerView) Accept() (net.Conn, error) {
	v.acceptOnce.Do(func() { close(v.accepting) })
	select {
	case c := <-v.conns:
		return c, nil
	case <-v.closed:
	case <-v.parent.done:
	}
	return nil, net.ErrClosed
}

// Close stops v's server from accepting; the socket stays open.
func (v *listenerView) Close() error {
	v.closeOnce.Do(func() { close(v.closed) })
	return nil
}

func (v *listenerView) Addr() net.Addr { return v.parent.ln.Addr() }

// metricsStage is the HTTP listener of /metrics and /healthz. It binds
// when constructed and answers from start.
type metricsStage struct {
	a   *agent
	srv *metricsServer
}

func (a *agent) newMetrics() (component, error) {
	srv, err := listenMetrics(a.cfg, a.log)
	if err != nil {
		return nil, err
	}
	return &metricsStage{a: a, srv: srv}, nil
}

func (m *metricsStage) name() string { return "metrics listener" }

func (m *metricsStage) start() error { return m.srv.serve(m.a.reg, m.a.core, m.a.healthy) }

// reconfigure starts the new server at once, so a web config that
// fails to serve rejects the reload. A new address gets a new socket
// (the old one answers until the new one does); a change of web_config
// alone keeps the socket and hands it to a server with the new
// settings, since binding the same address again would fail while the
// old listener is open.
func (m *metricsStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	cHost, cPort, cWeb := cur.Agent.Prometheus.Listener()
	nHost, nPort, nWeb := next.Agent.Prometheus.Listener()
	if cHost == nHost && cPort == nPort && cWeb == nWeb {
		return reconfig{}, nil
	}
	var srv *metricsServer
	var err error
	if cHost != nHost || cPort != nPort {
		srv, err = listenMetrics(next, m.a.log)
	} else {
		srv, err = m.srv.withWebConfig(nWeb)
	}
	if err != nil {
		return reconfig{}, err
	}
	sameSocket := srv.ln == m.srv.ln
	if err := srv.serve(m.a.reg, m.a.core, m.a.healthy); err != nil {
		if !sameSocket {
			srv.ln.Close()
		}
		return reconfig{}, err
	}
	return reconfig{
		commit: func() []string {
			if sameSocket {
				m.srv.retire()
			} else {
				m.srv.close()
			}
			m.srv = srv
			return []string{"agent.prometheus"}
		},
		abort: func() {
			if sameSocket {
				// Give the socket back to the running server.
				m.srv.ln.activate(m.srv.view)
				srv.retire()
			} else {
				srv.close()
			}
		},
	}, nil
}

func (m *metricsStage) stop() error {
	m.srv.close()
	return nil
}
