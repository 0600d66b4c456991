// SPDX-License-Identifier: AGPL-3.0-only

// Package e2e runs the rfm binary against real network namespaces and
// checks what it exports. Every test needs root and builds its own lab.
package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// rfmBin is the agent binary built once by TestMain.
var rfmBin string

func TestMain(m *testing.M) {
	if sources, _ := filepath.Glob("../../cmd/rfm/*.go"); len(sources) == 0 {
		fmt.Println("e2e: skipping: ../../cmd/rfm has no Go sources yet")
		os.Exit(0)
	}
	os.Exit(lab.RunWithAgent(m, "e2e", &rfmBin))
}

// metricsPort is where every agent serves /metrics, on 127.0.0.1 inside its
// own namespace, so tests never collide.
const metricsPort = 9669

// agentConfig holds the knobs the tests vary.
type agentConfig struct {
	interfaces      []string
	sampleRate      int
	maxFlows        int
	evictionTimeout string
}

func (c agentConfig) toml() string {
	quoted := make([]string, len(c.interfaces))
	for i, name := range c.interfaces {
		quoted[i] = strconv.Quote(name)
	}
	sampleRate, maxFlows, eviction := c.sampleRate, c.maxFlows, c.evictionTimeout
	if sampleRate == 0 {
		sampleRate = 1
	}
	if eviction == "" {
		eviction = "60s"
	}
	return fmt.Sprintf(`[agent]
interfaces = [%s]

[agent.bpf]
sample_rate = %d
ring_buf_size = 262144

[agent.collector]
max_flows = %d
eviction_timeout = %q

[agent.prometheus]
host = "127.0.0.1"
port = %d
`, strings.Join(quoted, ", "), sampleRate, maxFlows, eviction, metricsPort)
}

// agent is one running `rfm agent` inside a namespace.
type agent struct {
	*lab.Process
	ns     string
	client *http.Client
}

// writeConfig writes text to a fresh file and returns its path. A config
// without an [agent.control] table gets a control socket next to it, so
// agents of tests running at the same time never share one.
func writeConfig(t testing.TB, text string) string {
	t.Helper()
	dir := t.TempDir()
	if !strings.Contains(text, "[agent.control]") {
		text += fmt.Sprintf("\n[agent.control]\nsocket = %q\n", filepath.Join(dir, "rfm.sock"))
	}
	path := filepath.Join(dir, "rfm.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatalf("writing config: %v", err)
	}
	return path
}

// startAgent runs the agent in ns with cfg and waits until /metrics answers.
// The agent is stopped (SIGTERM, then SIGKILL) when the test ends.
func startAgent(t *testing.T, ns string, cfg string) *agent {
	t.Helper()
	return startAgentAt(t, ns, writeConfig(t, cfg))
}

// startAgentAt is startAgent with the config file at path.
func startAgentAt(t *testing.T, ns string, path string) *agent {
	t.Helper()
	a := &agent{ns: ns, client: lab.HTTPClient(ns, 0),
		Process: lab.Start(t, "agent", ns, rfmBin, "agent", "-c", path, "--log-level", "info")}
	// Registered after Start's own cleanup, so it runs first: an agent
	// that ignores SIGTERM fails the test.
	t.Cleanup(func() {
		if a.Exited() {
			return
		}
		if _, err := a.Stop(10 * time.Second); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("agent ignored SIGTERM for 10s; output:\n%s", a.Output())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := a.scrapeOnce(); err == nil {
			return a
		} else if time.Now().After(deadline) {
			t.Fatalf("agent /metrics not up after 20s: %v; output:\n%s", err, a.Output())
		}
		select {
		case <-a.Done():
			t.Fatalf("agent exited early (%v); output:\n%s", a.State(), a.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *agent) scrapeOnce() (metrics, error) {
	resp, err := a.client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s: %s", resp.Status, body)
	}
	return parseMetrics(body)
}

// waitFor scrapes until cond holds, failing with the last scrape (filtered
// to rfm_ series) after timeout.
func (a *agent) waitFor(t testing.TB, timeout time.Duration, what string, cond func(metrics) bool) metrics {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last metrics
	for {
		m, err := a.scrapeOnce()
		if err != nil {
			t.Fatalf("scraping agent: %v; output:\n%s", err, a.Output())
		}
		last = m
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last scrape:\n%s", timeout, what, last.dump("rfm_"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sample is one exposition line.
type sample = lab.Sample

type metrics []sample

// parseMetrics reads the Prometheus text format of one scrape.
func parseMetrics(body []byte) (metrics, error) {
	return lab.ParseMetrics(bytes.NewReader(body))
}

// sum adds every sample of name whose labels include match ("k", "v", ...).
func (m metrics) sum(name string, match ...string) float64 {
	var total float64
	for _, s := range m {
		if s.Name != name || !matches(s, match) {
			continue
		}
		total += s.Value
	}
	return total
}

// has reports whether any sample of name matches.
func (m metrics) has(name string, match ...string) bool {
	for _, s := range m {
		if s.Name == name && matches(s, match) {
			return true
		}
	}
	return false
}

func matches(s sample, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if s.Labels[match[i]] != match[i+1] {
			return false
		}
	}
	return true
}

// dump renders samples whose name has prefix, for failure messages.
func (m metrics) dump(prefix string) string {
	var b strings.Builder
	for _, s := range m {
		if !strings.HasPrefix(s.Name, prefix) {
			continue
		}
		fmt.Fprintf(&b, "%s%v %g\n", s.Name, s.Labels, s.Value)
	}
	return b.String()
}

// stop sends SIGTERM and returns the exit error (nil for exit 0), failing
// if the agent takes longer than timeout.
func (a *agent) stop(t testing.TB, timeout time.Duration) error {
	t.Helper()
	st, err := a.Stop(timeout)
	if err != nil {
		t.Fatalf("stopping agent: %v; output:\n%s", err, a.Output())
	}
	if st.Success() {
		return nil
	}
	return errors.New(st.String())
}
