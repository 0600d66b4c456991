// SPDX-License-Identifier: AGPL-3.0-only

// Package export holds end-to-end tests of rfm's IPFIX export against a
// real collector (nfcapd/nfdump): the agent binary runs in one network
// namespace, nfcapd in another, joined by a veth pair.
package export

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// rfmBinary is the agent built once by TestMain.
var rfmBinary string

func TestMain(m *testing.M) {
	for _, tool := range []string{"ip", "ethtool", "nfcapd", "nfdump", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("skipping test/export: %s not installed\n", tool)
			os.Exit(0)
		}
	}
	os.Exit(lab.RunWithAgent(m, "export", &rfmBinary))
}

// Lab addresses: one /23 link so that A and B sit in different /24s
// (the MMDB test maps each /24 to its own ASN and city).
const (
	addrA4  = "198.18.0.1"
	addrB4  = "198.18.1.1"
	addrA6  = "2001:db8:e::1"
	addrB6  = "2001:db8:e::2"
	macA    = "02:00:c6:12:00:01"
	macB    = "02:00:c6:12:01:01"
	devA    = "rfmxA"
	devB    = "rfmxB"
	metrics = "127.0.0.1:9669"
)

var labSeq atomic.Uint32

// testbed is two namespaces A and B joined by the veth pair devA/devB.
type testbed struct {
	A, B string
}

// newLab creates quiet namespaces (ARP left on, MTU pinned to 1500);
// removed at cleanup.
func newLab(t *testing.T) *testbed {
	t.Helper()
	n := labSeq.Add(1)
	l := &testbed{A: fmt.Sprintf("rfmxa%d-%d", os.Getpid(), n), B: fmt.Sprintf("rfmxb%d-%d", os.Getpid(), n)}
	lab.NewPair(t, lab.PairOptions{
		NsA: l.A, NsB: l.B, DevA: devA, DevB: devB,
		MACA: lab.MustMAC(macA), MACB: lab.MustMAC(macB),
		MTU:     1500,
		KeepARP: true,
		Addrs: [][2]netip.Prefix{
			{netip.MustParsePrefix(addrA4 + "/23"), netip.MustParsePrefix(addrB4 + "/23")},
			{netip.MustParsePrefix(addrA6 + "/64"), netip.MustParsePrefix(addrB6 + "/64")},
		},
	})
	return l
}

// ifindex returns the index of devA in namespace A.
func (l *testbed) ifindexA(t *testing.T) int {
	t.Helper()
	out := lab.Run(t, "ip", "netns", "exec", l.A, "cat", "/sys/class/net/"+devA+"/ifindex")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("ifindex of %s: %q", devA, out)
	}
	return n
}

// udpSocket binds a UDP socket in ns to local and connects it to remote
// (remote "" leaves it unconnected, for receivers).
func send(t *testing.T, c *net.UDPConn, count, payload int) {
	t.Helper()
	buf := make([]byte, payload)
	for i := 0; i < count; i++ {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("send from %s to %s: %v", c.LocalAddr(), c.RemoteAddr(), err)
		}
	}
}

// proc is a child process in a namespace.
type proc struct {
	*lab.Process
	configPath string // the agent's config file
}

// startProc runs the program name in ns; it is stopped at cleanup.
func startProc(t *testing.T, ns, name string, args ...string) *proc {
	t.Helper()
	return &proc{Process: lab.Start(t, name, ns, append([]string{name}, args...)...)}
}

// stop sends SIGTERM and returns the exit error (nil for exit 0),
// failing the test if the process outlives timeout.
func (p *proc) stop(t *testing.T, timeout time.Duration) error {
	t.Helper()
	if p.Exited() {
		return fmt.Errorf("%s had already exited: %v", p.Name(), p.Err())
	}
	if _, err := p.Stop(timeout); err != nil {
		t.Fatalf("stopping %s: %v; output:\n%s", p.Name(), err, p.Output())
	}
	return p.Err()
}

// agentConfig is the part of rfm.toml these tests vary.
type agentConfig struct {
	sampleRate      int
	collectorPort   int
	templateRefresh string
	evictionTimeout string
	activeTimeout   string // "": the default
	asnDB, cityDB   string
	// extraInterfaces are added to agent.interfaces after devA.
	extraInterfaces []string
	metricsPort     int    // 0: 9669
	bindPort        int    // agent.ipfix.bind.port; 0: unset
	webConfig       string // agent.prometheus.web_config; "": unset
	maxLabelSets    int    // agent.prometheus.max_label_sets; 0: unset
	// collectorPorts, when set, replaces collectorPort: one
	// [[agent.ipfix.collectors]] on addrB4 per port.
	collectorPorts []int
}

// toml renders the config; the control socket goes into dir.
func (c agentConfig) toml(dir string) string {
	if c.templateRefresh == "" {
		c.templateRefresh = "60s"
	}
	if c.evictionTimeout == "" {
		c.evictionTimeout = "30s"
	}
	ifaces := strconv.Quote(devA)
	for _, name := range c.extraInterfaces {
		ifaces += ", " + strconv.Quote(name)
	}
	active := ""
	if c.activeTimeout != "" {
		active = fmt.Sprintf("active_timeout = %q\n", c.activeTimeout)
	}
	toml := fmt.Sprintf(`[agent]
interfaces = [%s]
[agent.bpf]
sample_rate = %d
[agent.collector]
eviction_timeout = %q
%s[agent.prometheus]
host = "127.0.0.1"
port = %d
%s[agent.ipfix]
template_refresh = %q
`, ifaces, c.sampleRate, c.evictionTimeout, active, c.metricsPortOrDefault(), c.prometheusExtra(), c.templateRefresh)
	if len(c.collectorPorts) == 0 {
		toml += fmt.Sprintf("host = %q\nport = %d\n", addrB4, c.collectorPort)
	}
	for _, port := range c.collectorPorts {
		toml += fmt.Sprintf("[[agent.ipfix.collectors]]\nhost = %q\nport = %d\n", addrB4, port)
	}
	if c.bindPort != 0 {
		toml += fmt.Sprintf("[agent.ipfix.bind]\nport = %d\n", c.bindPort)
	}
	if c.asnDB != "" {
		toml += fmt.Sprintf("[agent.enrich.mmdb]\nasn_db = %q\ncity_db = %q\n", c.asnDB, c.cityDB)
	}
	// Each agent its own control socket: agents of other test packages
	// may run at the same time.
	toml += fmt.Sprintf("[agent.control]\nsocket = %q\n", filepath.Join(dir, "rfm.sock"))
	return toml
}

// prometheusExtra renders the optional keys of [agent.prometheus].
func (c agentConfig) prometheusExtra() string {
	s := ""
	if c.webConfig != "" {
		s += fmt.Sprintf("web_config = %q\n", c.webConfig)
	}
	if c.maxLabelSets != 0 {
		s += fmt.Sprintf("max_label_sets = %d\n", c.maxLabelSets)
	}
	return s
}

func startAgent(t *testing.T, l *testbed, c agentConfig) *proc {
	t.Helper()
	dir := t.TempDir()
	toml := c.toml(dir)
	path := filepath.Join(dir, "rfm.toml")
	if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, l.A, rfmBinary, "agent", "-c", path, "--log-level", "debug")
	p.configPath = path
	lab.Eventually(t, 20*time.Second, "agent attached to "+devA, func() error {
		if p.Exited() {
			t.Fatalf("agent exited at start: %v; output:\n%s", p.Err(), p.Output())
		}
		m, err := scrape(l)
		if err != nil {
			return err
		}
		if v, ok := metricValue(m, "rfm_interface_attached", map[string]string{"ifname": devA}); !ok || v != 1 {
			return errors.New("rfm_interface_attached not 1 yet")
		}
		return nil
	})
	return p
}

// scrape fetches /metrics from inside namespace A.
func (c agentConfig) metricsPortOrDefault() int {
	if c.metricsPort == 0 {
		return 9669
	}
	return c.metricsPort
}

func scrape(l *testbed) (string, error) { return scrapeAt(l, metrics) }

// scrapeAt reads /metrics at addr ("127.0.0.1:port") in namespace A.
func scrapeAt(l *testbed, addr string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", l.A, "curl", "-sS", "--max-time", "5",
		"http://"+addr+"/metrics").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("curl /metrics: %v: %s", err, out)
	}
	return string(out), nil
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// metricValue sums the samples of name whose labels include want.
func metricValue(text, name string, want map[string]string) (float64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := sampleLine.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != name {
			continue
		}
		labels := map[string]string{}
		for _, lp := range labelPair.FindAllStringSubmatch(m[2], -1) {
			labels[lp[1]] = lp[2]
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// collector is nfcapd listening on addrB4:port in namespace B.
type collector struct {
	dir  string
	port int
	p    *proc
}

func startCollector(t *testing.T, l *testbed, port int) *collector {
	t.Helper()
	c := &collector{dir: t.TempDir(), port: port}
	c.p = startProc(t, l.B, "nfcapd", "-w", c.dir, "-p", strconv.Itoa(port), "-b", addrB4, "-t", "3600", "-v")
	lab.Eventually(t, 10*time.Second, "nfcapd listening", func() error {
		if c.p.Exited() {
			t.Fatalf("nfcapd exited: %v; output:\n%s", c.p.Err(), c.p.Output())
		}
		_, ok, err := udpRxQueue(l.B, port)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("no socket yet")
		}
		return nil
	})
	return c
}

// udpRxQueue reads the receive queue of the UDP socket bound to port in
// ns from /proc/net/udp.
func udpRxQueue(ns string, port int) (int, bool, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/udp").Output()
	if err != nil {
		return 0, false, err
	}
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], suffix) {
			continue
		}
		q := strings.SplitN(f[4], ":", 2) // tx_queue:rx_queue
		if len(q) != 2 {
			continue
		}
		rx, err := strconv.ParseInt(q[1], 16, 64)
		if err != nil {
			return 0, false, err
		}
		return int(rx), true, nil
	}
	return 0, false, nil
}

// finish waits until nfcapd has read everything queued on its socket,
// stops it so it closes its file, and returns the nfdump flows.
func (c *collector) finish(t *testing.T, l *testbed) []nfFlow {
	t.Helper()
	lab.Eventually(t, 10*time.Second, "nfcapd to drain its socket", func() error {
		rx, ok, err := udpRxQueue(l.B, c.port)
		if err != nil {
			return err
		}
		if ok && rx != 0 {
			return fmt.Errorf("%d bytes still queued", rx)
		}
		return nil
	})
	if err := c.p.stop(t, 10*time.Second); err != nil {
		t.Logf("nfcapd exit: %v", err)
	}
	return readFlows(t, c.dir)
}

func (c *collector) files(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(c.dir, "nfcapd.*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no nfcapd file in %s (%v); nfcapd output:\n%s", c.dir, err, c.p.Output())
	}
	return files
}

// nfFlow is one nfdump record, decoded from `nfdump -o json`.
type nfFlow struct {
	src, dst       netip.Addr
	sport, dport   int
	proto          int
	packets, bytes uint64
	srcASN, dstASN uint64
	direction      int
	inIf, outIf    int
	raw            string
}

func (f nfFlow) String() string { return f.raw }

func readFlows(t *testing.T, dir string) []nfFlow {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "nfcapd.*"))
	if len(files) == 0 {
		t.Fatalf("no nfcapd file in %s", dir)
	}
	var flows []nfFlow
	for _, file := range files {
		out, err := exec.Command("nfdump", "-r", file, "-N", "-q", "-o", "json").Output()
		if err != nil {
			t.Fatalf("nfdump -r %s -o json: %v", file, err)
		}
		var recs []map[string]any
		// With -q nfdump drops the enclosing brackets of the array.
		if out = bytes.TrimSpace(out); len(out) > 0 {
			if out[0] != '[' {
				out = append(append([]byte("["), out...), ']')
			}
			if err := json.Unmarshal(out, &recs); err != nil {
				t.Fatalf("nfdump -r %s -o json: decode: %v\n%s", file, err, out)
			}
		}
		for _, r := range recs {
			raw, _ := json.Marshal(r)
			fl := nfFlow{raw: string(raw)}
			fl.src = jsonAddr(r, "src4_addr", "src6_addr")
			fl.dst = jsonAddr(r, "dst4_addr", "dst6_addr")
			fl.sport = int(jsonUint(r, "src_port"))
			fl.dport = int(jsonUint(r, "dst_port"))
			fl.proto = int(jsonUint(r, "proto"))
			fl.packets = jsonUint(r, "in_packets")
			fl.bytes = jsonUint(r, "in_bytes")
			fl.srcASN = jsonUint(r, "src_as")
			fl.dstASN = jsonUint(r, "dst_as")
			fl.direction = int(jsonUint(r, "direction"))
			fl.inIf = int(jsonUint(r, "input_snmp"))
			fl.outIf = int(jsonUint(r, "output_snmp"))
			flows = append(flows, fl)
		}
	}
	return flows
}

func jsonAddr(r map[string]any, keys ...string) netip.Addr {
	for _, k := range keys {
		if s, ok := r[k].(string); ok {
			if a, err := netip.ParseAddr(s); err == nil {
				return a
			}
		}
	}
	return netip.Addr{}
}

func jsonUint(r map[string]any, key string) uint64 {
	switch v := r[key].(type) {
	case float64:
		return uint64(v)
	case string:
		n, _ := strconv.ParseUint(v, 10, 64)
		return n
	}
	return 0
}

func dumpFlows(flows []nfFlow) string {
	var b strings.Builder
	for _, f := range flows {
		b.WriteString(f.raw)
		b.WriteByte('\n')
	}
	return b.String()
}

// findFlows returns the flows with the given 5-tuple.
func findFlows(flows []nfFlow, src, dst string, sport, dport, proto int) []nfFlow {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	var out []nfFlow
	for _, f := range flows {
		if f.src == s && f.dst == d && f.sport == sport && f.dport == dport && f.proto == proto {
			out = append(out, f)
		}
	}
	return out
}
