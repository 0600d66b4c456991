// SPDX-License-Identifier: AGPL-3.0-only

// Package realnet checks rfm's numbers on links as real routers run them:
// TCP with TSO/GSO/GRO on, untrusted GSO from a tap with a virtio-net
// header, L3 devices (tun) without an Ethernet header, a sample rate
// changed under load and an interface deleted under traffic. Every test
// needs root, builds its own namespaces and runs the real `rfm` binary;
// the truth each test compares with comes from the endpoints (TCP_INFO,
// bytes written by construction), never from rfm's own code.
package realnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/test/lab"
)

// rfmBin is the agent binary built once by TestMain.
var rfmBin string

func TestMain(m *testing.M) { os.Exit(lab.RunWithAgent(m, "realnet", &rfmBin)) }

// labSeq makes namespace names unique within one test binary; the pid
// keeps concurrent binaries apart.
var labSeq atomic.Uint32

// newNamespace creates a quiet namespace (no DAD, RA, RS or link-local
// addresses on devices created later) and removes it when the test ends.
func newNamespace(t *testing.T, role string) string {
	t.Helper()
	ns := fmt.Sprintf("rfmrn-%d-%d-%s", os.Getpid(), labSeq.Add(1), role)
	lab.Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("removing namespace %s: %v: %s", ns, err, out)
		}
	})
	for _, conf := range []string{"all", "default"} {
		for _, kv := range []string{"accept_dad=0", "accept_ra=0", "router_solicitations=0", "addr_gen_mode=1"} {
			sysctl(t, ns, "net.ipv6.conf."+conf+"."+kv)
		}
	}
	lab.Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// sysctl sets one key=value inside ns through /proc/sys (lab.SetSysctl:
// no procps needed, a minimal Debian lacks it).
func sysctl(t testing.TB, ns, kv string) {
	t.Helper()
	key, value, ok := strings.Cut(kv, "=")
	if !ok {
		t.Fatalf("sysctl %q: want key=value", kv)
	}
	lab.SetSysctl(t, ns, key, value)
}

// metricsPort is where every agent serves /metrics, on 127.0.0.1 inside
// its own namespace, so tests never collide.
const metricsPort = 9669

// agent is one running `rfm agent` inside a namespace.
type agent struct {
	*lab.Process
	ns     string
	socket string // control socket
	config string // config file path
	client *http.Client
}

// startAgent runs `rfm agent` in ns watching ifaces at sampleRate and
// waits until /metrics and the control socket answer. extra is appended
// to the config (more TOML tables).
func startAgent(t *testing.T, ns string, ifaces []string, sampleRate int, extra ...string) *agent {
	t.Helper()
	return startAgentWith(t, ns, ifaces, sampleRate, "", extra...)
}

// startAgentWith is startAgent with more keys (TOML lines) in [agent.bpf].
func startAgentWith(t *testing.T, ns string, ifaces []string, sampleRate int, bpfKeys string, extra ...string) *agent {
	t.Helper()
	quoted := make([]string, len(ifaces))
	for i, name := range ifaces {
		quoted[i] = strconv.Quote(name)
	}
	dir := t.TempDir()
	socket := filepath.Join(dir, "rfm.sock")
	cfg := fmt.Sprintf(`[agent]
interfaces = [%s]

[agent.bpf]
sample_rate = %d
ring_buf_size = 4194304
%s

[agent.collector]
max_flows = 0
eviction_timeout = "120s"

[agent.prometheus]
host = "127.0.0.1"
port = %d

[agent.control]
socket = %q
`, strings.Join(quoted, ", "), sampleRate, bpfKeys, metricsPort, socket) + strings.Join(extra, "\n")
	path := filepath.Join(dir, "rfm.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatalf("writing config: %v", err)
	}
	a := &agent{ns: ns, socket: socket, config: path, client: lab.HTTPClient(ns, 0),
		Process: lab.Start(t, "agent", ns, rfmBin, "agent", "-c", path, "--log-level", "info")}
	t.Cleanup(func() {
		if a.Exited() {
			return
		}
		if _, err := a.Stop(10 * time.Second); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("agent ignored SIGTERM for 10s; output:\n%s", a.Output())
		}
	})
	lab.Eventually(t, 20*time.Second, "agent /metrics and control socket", func() error {
		if a.Exited() {
			t.Fatalf("agent exited early (%v); output:\n%s", a.State(), a.Output())
		}
		if _, err := a.scrape(); err != nil {
			return err
		}
		_, err := a.control("status")
		return err
	})
	return a
}

// scrape reads /metrics once.
func (a *agent) scrape() (metrics, error) {
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
	s, err := lab.ParseMetrics(strings.NewReader(string(body)))
	return metrics(s), err
}

func (a *agent) mustScrape(t testing.TB) metrics {
	t.Helper()
	m, err := a.scrape()
	if err != nil {
		t.Fatalf("scraping agent: %v; output:\n%s", err, a.Output())
	}
	return m
}

// control runs `rfm ARGS --json --socket S` and returns stdout.
func (a *agent) control(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append(args, "--json", "--socket", a.socket)
	cmd := exec.CommandContext(ctx, rfmBin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("rfm %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// flows lists every active flow through `rfm flows --json`.
func (a *agent) flows(t testing.TB) control.Flows {
	t.Helper()
	out, err := a.control("flows")
	if err != nil {
		t.Fatalf("%v", err)
	}
	var fl control.Flows
	if err := json.Unmarshal([]byte(out), &fl); err != nil {
		t.Fatalf("rfm flows --json: %v\n%s", err, out)
	}
	return fl
}

// setSampleRate runs `rfm set sample-rate N`.
func (a *agent) setSampleRate(t testing.TB, n int) {
	t.Helper()
	if _, err := a.control("set", "sample-rate", strconv.Itoa(n)); err != nil {
		t.Fatalf("%v", err)
	}
}

// flowKey names one flow as `rfm flows` lists it.
type flowKey struct {
	iface, dir string
	proto      uint8
	src, dst   string // addr:port, as netip.AddrPort prints it
}

func keyOf(f control.Flow) flowKey {
	return flowKey{f.Iface, f.Direction, f.Proto,
		addrPort(f.Src.String(), f.SrcPort), addrPort(f.Dst.String(), f.DstPort)}
}

func addrPort(addr string, port uint16) string {
	if strings.Contains(addr, ":") {
		return "[" + addr + "]:" + strconv.Itoa(int(port))
	}
	return addr + ":" + strconv.Itoa(int(port))
}

// findFlow returns the listed flow with key k.
func findFlow(fl control.Flows, k flowKey) (control.Flow, bool) {
	for _, f := range fl.Flows {
		if keyOf(f) == k {
			return f, true
		}
	}
	return control.Flow{}, false
}

// settledFlow polls `rfm flows` until flow k is listed and its counts
// have not moved for settle (many batch flush intervals: events still in
// per-CPU batches or the ring have arrived), failing after timeout.
func (a *agent) settledFlow(t testing.TB, k flowKey, settle, timeout time.Duration) control.Flow {
	t.Helper()
	return a.settledFlows(t, []flowKey{k}, settle, timeout)[k]
}

// settledFlows is settledFlow for several flows at once.
func (a *agent) settledFlows(t testing.TB, keys []flowKey, settle, timeout time.Duration) map[flowKey]control.Flow {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[flowKey]control.Flow
	var lastChange time.Time
	for {
		fl := a.flows(t)
		now := time.Now()
		cur := map[flowKey]control.Flow{}
		for _, k := range keys {
			if f, ok := findFlow(fl, k); ok {
				cur[k] = f
			}
		}
		changed := len(cur) != len(last)
		for k, f := range cur {
			if l, ok := last[k]; !ok || l.Sampled != f.Sampled || l.Packets != f.Packets || l.Bytes != f.Bytes {
				changed = true
			}
		}
		if changed {
			last, lastChange = cur, now
		}
		if len(last) == len(keys) && now.Sub(lastChange) >= settle {
			return last
		}
		if now.After(deadline) {
			t.Fatalf("flows %+v did not all appear and settle within %s: have %+v; listed:\n%+v", keys, timeout, last, fl.Flows)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metrics is one scrape.
type metrics []lab.Sample

// sum adds every sample of name whose labels include match ("k", "v", ...).
func (m metrics) sum(name string, match ...string) float64 {
	var total float64
	for _, s := range m {
		if s.Name == name && matches(s, match) {
			total += s.Value
		}
	}
	return total
}

func matches(s lab.Sample, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if s.Labels[match[i]] != match[i+1] {
			return false
		}
	}
	return true
}

// ifaceCounts is one interface's rfm_interface_* counters of one family.
type ifaceCounts struct{ rxPackets, rxBytes, txPackets, txBytes float64 }

func (m metrics) iface(name, family string) ifaceCounts {
	l := []string{"ifname", name, "family", family}
	return ifaceCounts{
		rxPackets: m.sum("rfm_interface_rx_packets_total", l...),
		rxBytes:   m.sum("rfm_interface_rx_bytes_total", l...),
		txPackets: m.sum("rfm_interface_tx_packets_total", l...),
		txBytes:   m.sum("rfm_interface_tx_bytes_total", l...),
	}
}

func (c ifaceCounts) minus(o ifaceCounts) ifaceCounts {
	return ifaceCounts{c.rxPackets - o.rxPackets, c.rxBytes - o.rxBytes, c.txPackets - o.txPackets, c.txBytes - o.txBytes}
}
