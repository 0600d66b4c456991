// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/export/prom"
	"github.com/stepbrobd/rfm/internal/flow"
)

// fakeStage records what the lifecycle loops ask of it in a shared
// journal, as "name:step".
type fakeStage struct {
	id       string
	journal  *[]string
	startErr error
	prepErr  error
	applied  []string
	restart  []string
}

func (f *fakeStage) name() string { return f.id }

func (f *fakeStage) start() error {
	*f.journal = append(*f.journal, f.id+":start")
	return f.startErr
}

func (f *fakeStage) reconfigure(_, _ *config.Config) (reconfig, error) {
	*f.journal = append(*f.journal, f.id+":prepare")
	if f.prepErr != nil {
		return reconfig{}, f.prepErr
	}
	return reconfig{
		needsRestart: f.restart,
		commit: func() []string {
			*f.journal = append(*f.journal, f.id+":commit")
			return f.applied
		},
		abort: func() { *f.journal = append(*f.journal, f.id+":abort") },
	}, nil
}

func (f *fakeStage) stop() error {
	*f.journal = append(*f.journal, f.id+":stop")
	return nil
}

func testAgent(stages ...component) *agent {
	return &agent{log: slog.New(slog.DiscardHandler), components: stages}
}

// TestReloadAllOrNothing: a reload that one component rejects is
// aborted by the components that prepared before it, in reverse order,
// and never committed or shown to those after it; an accepted one is
// committed in order, with the keys of all components sorted.
func TestReloadAllOrNothing(t *testing.T) {
	var journal []string
	a := testAgent(
		&fakeStage{id: "a", journal: &journal, applied: []string{"agent.z"}},
		&fakeStage{id: "b", journal: &journal, applied: []string{"agent.b"}, restart: []string{"agent.y"}},
		&fakeStage{id: "c", journal: &journal, prepErr: errors.New("agent.c: bad")},
		&fakeStage{id: "d", journal: &journal},
	)
	res, err := a.reconfigureComponents(&config.Config{}, &config.Config{})
	if err == nil || err.Error() != "agent.c: bad" {
		t.Fatalf("err = %v, want the rejecting component's error", err)
	}
	if len(res.Applied) != 0 || len(res.NeedsRestart) != 0 {
		t.Errorf("rejected reload reports %+v, want nothing", res)
	}
	want := []string{"a:prepare", "b:prepare", "c:prepare", "b:abort", "a:abort"}
	if !slices.Equal(journal, want) {
		t.Errorf("rejected reload: %v, want %v", journal, want)
	}

	journal = nil
	a.components = slices.Delete(a.components, 2, 3)
	res, err = a.reconfigureComponents(&config.Config{}, &config.Config{})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"a:prepare", "b:prepare", "d:prepare", "a:commit", "b:commit", "d:commit"}
	if !slices.Equal(journal, want) {
		t.Errorf("accepted reload: %v, want %v", journal, want)
	}
	if !slices.Equal(res.Applied, []string{"agent.b", "agent.z"}) || !slices.Equal(res.NeedsRestart, []string{"agent.y"}) {
		t.Errorf("result %+v, want applied [agent.b agent.z], needs restart [agent.y]", res)
	}
}

// TestStartFailure: a component that fails to start stops the start
// there; every component constructed (the failed one too, which may
// have done part of its work) is then stopped in reverse order, once.
// A constructor that fails stops the start before anything starts.
func TestStartFailure(t *testing.T) {
	var journal []string
	stage := func(f *fakeStage) func() (component, error) {
		return func() (component, error) {
			journal = append(journal, f.id+":new")
			return f, nil
		}
	}
	a := testAgent()
	err := a.startComponents([]func() (component, error){
		stage(&fakeStage{id: "a", journal: &journal}),
		stage(&fakeStage{id: "b", journal: &journal, startErr: errors.New("b failed")}),
		stage(&fakeStage{id: "c", journal: &journal}),
	})
	if err == nil || err.Error() != "b failed" {
		t.Fatalf("err = %v, want b's", err)
	}
	for range 2 {
		if err := a.stopComponents(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"a:new", "b:new", "c:new", "a:start", "b:start", "c:stop", "b:stop", "a:stop"}
	if !slices.Equal(journal, want) {
		t.Errorf("%v, want %v", journal, want)
	}

	journal = nil
	a = testAgent()
	err = a.startComponents([]func() (component, error){
		stage(&fakeStage{id: "a", journal: &journal}),
		func() (component, error) { return nil, errors.New("agent.b: bad") },
		stage(&fakeStage{id: "c", journal: &journal}),
	})
	if err == nil || err.Error() != "agent.b: bad" {
		t.Fatalf("err = %v, want the constructor's", err)
	}
	_ = a.stopComponents()
	want = []string{"a:new", "a:stop"}
	if !slices.Equal(journal, want) {
		t.Errorf("%v, want %v", journal, want)
	}
}

// TestMetricsReloadAbort: when a later component rejects a reload, the
// metrics listener, whose new server already answered, goes back to
// the running settings: the same socket serves with the old web config
// again, and a new address's socket is closed.
func TestMetricsReloadAbort(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	deny := writeWebConfig(t, dir, "deny.yml", "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
	same := writeWebConfig(t, dir, "same.yml", "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n")
	tab := flow.NewTable(flow.Options{})
	a := &agent{log: log, reg: prometheus.NewRegistry(), core: prom.New(noDatapath{}, tab, func() uint32 { return 1 })}

	cur := testMetricsConfig(deny)
	m, err := listenMetrics(cur, log)
	if err != nil {
		t.Fatal(err)
	}
	stage := &metricsStage{a: a, srv: m}
	if err := stage.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stage.stop() })
	addr := m.ln.ln.Addr().String()
	cur.Agent.Prometheus.Port = m.ln.ln.Addr().(*net.TCPAddr).Port

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	frameOptions := func(url string) (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return resp.Header.Get("X-Frame-Options"), nil
	}

	// Same address, another web config: the new server takes the socket
	// at once; abort hands it back.
	next := testMetricsConfig(same)
	next.Agent.Prometheus.Port = cur.Agent.Prometheus.Port
	rc, err := stage.reconfigure(cur, next)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := frameOptions("http://" + addr + "/healthz"); err != nil || h != "sameorigin" {
		t.Fatalf("while prepared: X-Frame-Options %q, err %v; want the new server's sameorigin", h, err)
	}
	rc.abort()
	if h, err := frameOptions("http://" + addr + "/healthz"); err != nil || h != "deny" {
		t.Fatalf("after abort: X-Frame-Options %q, err %v; want the running server's deny", h, err)
	}

	// Another address: abort closes the new socket.
	free, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	newAddr := free.Addr().String()
	free.Close()
	next = testMetricsConfig(deny)
	next.Agent.Prometheus.Host, next.Agent.Prometheus.Port = "127.0.0.2", free.Addr().(*net.TCPAddr).Port
	rc, err = stage.reconfigure(cur, next)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := frameOptions("http://" + newAddr + "/healthz"); err != nil {
		t.Fatalf("while prepared, the new address: %v", err)
	}
	rc.abort()
	if _, err := frameOptions("http://" + newAddr + "/healthz"); err == nil {
		t.Fatalf("after abort, %s still answers", newAddr)
	}
	if h, err := frameOptions("http://" + addr + "/healthz"); err != nil || h != "deny" {
		t.Fatalf("after abort: X-Frame-Options %q, err %v; want deny on the running address", h, err)
	}
}
