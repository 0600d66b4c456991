// SPDX-License-Identifier: AGPL-3.0-only

// Package fault is rfm's fault-injection suite: the real agent binary in
// network namespaces on the real kernel, put through floods, collector
// and BMP router failures, signals, a second agent and interface churn.
// Each test says what must survive and asserts it.
//
// Short by default (each test a few seconds); heavier variants run with
// -long, or with RFM_FAULT_LONG=1 when -short is not given.
// RFM_FAULT_AGENT=/path/to/rfm tests a prebuilt agent instead of
// building cmd/rfm.
package fault

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

var longFlag = flag.Bool("long", false, "run the heavier fault variants (longer floods, more flaps)")

// long reports whether the heavier variants run.
func long() bool {
	return *longFlag || (!testing.Short() && os.Getenv("RFM_FAULT_LONG") == "1")
}

var agentBin, skipReason string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		skipReason = "fault suite needs root (network namespaces, eBPF): skipped"
	} else {
		for _, bin := range []string{"ip", "ethtool"} {
			if _, err := exec.LookPath(bin); err != nil {
				skipReason = fmt.Sprintf("fault suite needs %s: %v", bin, err)
			}
		}
	}
	if skipReason != "" {
		return m.Run()
	}
	// A prebuilt binary, e.g. while the module does not build.
	if agentBin = os.Getenv("RFM_FAULT_AGENT"); agentBin != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "rfm-fault-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault test: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if agentBin, err = lab.BuildAgent(dir); err != nil {
		fmt.Fprintln(os.Stderr, "fault test:", err)
		return 1
	}
	return m.Run()
}

// Lab addresses (RFC 2544 benchmarking range only).
const (
	addrA     = "198.18.0.1"
	addrB     = "198.18.0.2"
	devA      = "rfmfA"
	devB      = "rfmfB"
	sinkPort  = 5001 // UDP receiver in B: no ICMP comes back
	metricsAt = "127.0.0.1:9669"
)

var labSeq atomic.Uint32

// testbed is namespace A (the agent, devA) and B (devB), quiet.
type testbed struct{ A, B string }

func newLab(t *testing.T) *testbed {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	n := labSeq.Add(1)
	l := &testbed{A: fmt.Sprintf("rfmfa%d-%d", os.Getpid(), n), B: fmt.Sprintf("rfmfb%d-%d", os.Getpid(), n)}
	lab.NewPair(t, lab.PairOptions{
		NsA: l.A, NsB: l.B, DevA: devA, DevB: devB,
		MACA: net.HardwareAddr{2, 0, 0xc6, 0x12, 0, 1}, MACB: net.HardwareAddr{2, 0, 0xc6, 0x12, 0, 2},
		Addrs: [][2]netip.Prefix{{netip.MustParsePrefix(addrA + "/24"), netip.MustParsePrefix(addrB + "/24")}},
	})
	return l
}

// ifindex returns dev's index in ns.
func ifindex(t testing.TB, ns, dev string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(lab.Run(t, "ip", "netns", "exec", ns, "cat", "/sys/class/net/"+dev+"/ifindex")))
	if err != nil {
		t.Fatalf("ifindex of %s in %s: %v", dev, ns, err)
	}
	return n
}

// kernelStats reads dev's statistics counters in ns.
func kernelStats(t testing.TB, ns, dev string, names ...string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, name := range names {
		s := lab.Run(t, "ip", "netns", "exec", ns, "cat", "/sys/class/net/"+dev+"/statistics/"+name)
		v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
		if err != nil {
			t.Fatalf("%s %s: %q", dev, name, s)
		}
		out[name] = v
	}
	return out
}

// sink binds the receiving port in B so no ICMP unreachable comes back.
func (l *testbed) sink(t testing.TB) { lab.UDPConn(t, l.B, fmt.Sprintf("%s:%d", addrB, sinkPort), "") }

// sendFlow sends count datagrams of payload bytes from A's sport to the sink.
func (l *testbed) sendFlow(t testing.TB, sport, count, payload int) {
	t.Helper()
	c := lab.UDPConn(t, l.A, fmt.Sprintf("%s:%d", addrA, sport), fmt.Sprintf("%s:%d", addrB, sinkPort))
	buf := make([]byte, payload)
	for i := 0; i < count; i++ {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("send from port %d: %v", sport, err)
		}
	}
	c.Close()
}

// agentConfig is the part of rfm.toml these tests vary.
type agentConfig struct {
	interfaces      string // TOML array body; default devA
	sampleRate      int    // default 1
	ringBufSize     int    // default: agent's
	metricsPort     int    // default 9669
	eviction        string // default 30s
	ipfixPort       int    // 0: no IPFIX
	templateRefresh string // default 60s
	bmpPort         int    // 0: no BMP
	bmpKeep         string
	bmpMaxSessions  int
}

func (c agentConfig) toml() string {
	if c.interfaces == "" {
		c.interfaces = strconv.Quote(devA)
	}
	if c.sampleRate == 0 {
		c.sampleRate = 1
	}
	if c.metricsPort == 0 {
		c.metricsPort = 9669
	}
	if c.eviction == "" {
		c.eviction = "30s"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[agent]\ninterfaces = [%s]\n[agent.bpf]\nsample_rate = %d\n", c.interfaces, c.sampleRate)
	if c.ringBufSize != 0 {
		fmt.Fprintf(&b, "ring_buf_size = %d\n", c.ringBufSize)
	}
	fmt.Fprintf(&b, "[agent.collector]\neviction_timeout = %q\n", c.eviction)
	fmt.Fprintf(&b, "[agent.prometheus]\nhost = \"127.0.0.1\"\nport = %d\n", c.metricsPort)
	if c.ipfixPort != 0 {
		if c.templateRefresh == "" {
			c.templateRefresh = "60s"
		}
		fmt.Fprintf(&b, "[agent.ipfix]\nhost = %q\nport = %d\ntemplate_refresh = %q\n", addrB, c.ipfixPort, c.templateRefresh)
	}
	if c.bmpPort != 0 {
		fmt.Fprintf(&b, "[agent.enrich.rib.bmp]\nhost = \"127.0.0.1\"\nport = %d\n", c.bmpPort)
		if c.bmpKeep != "" {
			fmt.Fprintf(&b, "keep = %q\n", c.bmpKeep)
		}
		if c.bmpMaxSessions != 0 {
			fmt.Fprintf(&b, "max_sessions = %d\n", c.bmpMaxSessions)
		}
	}
	return b.String()
}

// agent is a running rfm agent.
type agent struct {
	*lab.Process
	ns      string
	metrics string // host:port inside ns
}

// startAgent runs the agent in ns and waits until every interface in
// wantAttached is attached.
func startAgent(t *testing.T, ns string, c agentConfig, wantAttached ...string) *agent {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "rfm.toml")
	// Every agent its own control socket: agents of other test packages
	// (and the second agent of TestSecondAgent) run at the same time.
	text := c.toml() + fmt.Sprintf("\n[agent.control]\nsocket = %q\n", filepath.Join(dir, "rfm.sock"))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	port := c.metricsPort
	if port == 0 {
		port = 9669
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	a := &agent{ns: ns, metrics: addr, Process: lab.Start(t, "agent "+addr, ns, agentBin, "agent", "-c", path)}
	if len(wantAttached) == 0 {
		wantAttached = []string{devA}
	}
	a.waitFor(t, 20*time.Second, "agent attached", func(m metrics) error {
		for _, dev := range wantAttached {
			if m.sum("rfm_interface_attached", "ifname", dev) != 1 {
				return fmt.Errorf("%s not attached", dev)
			}
		}
		return nil
	})
	return a
}

// metrics is one scrape.
type metrics []lab.Sample

func (m metrics) sum(name string, kv ...string) float64 {
	var v float64
	for _, s := range m {
		if s.Name != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			if s.Labels[kv[i]] != kv[i+1] {
				ok = false
				break
			}
		}
		if ok {
			v += s.Value
		}
	}
	return v
}

func (a *agent) scrape() (metrics, error) {
	resp, err := lab.HTTPClient(a.ns, time.Second).Get("http://" + a.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	s, err := lab.ParseMetrics(resp.Body)
	return metrics(s), err
}

// mustScrape scrapes once; failing the test if the agent does not answer.
func (a *agent) mustScrape(t testing.TB) metrics {
	t.Helper()
	m, err := a.scrape()
	if err != nil {
		t.Fatalf("agent %s did not answer /metrics: %v (exited: %v)", a.metrics, err, a.Exited())
	}
	return m
}

// waitFor scrapes until cond accepts, failing if the agent exits.
func (a *agent) waitFor(t testing.TB, timeout time.Duration, what string, cond func(metrics) error) metrics {
	t.Helper()
	var m metrics
	lab.Eventually(t, timeout, what, func() error {
		if a.Exited() {
			t.Fatalf("agent exited while waiting for %s: %s; output:\n%s", what, a.State(), a.Output())
		}
		var err error
		if m, err = a.scrape(); err != nil {
			return err
		}
		return cond(m)
	})
	return m
}

// signal sends sig and waits up to timeout for the exit.
func (a *agent) signal(t testing.TB, sig syscall.Signal, timeout time.Duration) (*os.ProcessState, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := a.Signal(sig); err != nil {
		t.Fatalf("signal agent: %v", err)
	}
	st, err := a.Wait(timeout)
	if err != nil {
		t.Fatalf("agent still running %s after %v; output:\n%s", timeout, sig, a.Output())
	}
	return st, time.Since(start)
}

// rssBytes reads VmRSS of pid.
func rssBytes(t testing.TB, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading agent status: %v", err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				break
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// ifaceTotal sums a per-family interface counter of dev.
func ifaceTotal(m metrics, name, dev string) uint64 {
	return uint64(m.sum(name, "ifname", dev))
}

var errNotYet = errors.New("not yet")
