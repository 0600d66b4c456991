// SPDX-License-Identifier: AGPL-3.0-only

package scale

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/test/lab"
)

var nsSeq atomic.Uint32

// newNamespace creates a quiet namespace (no DAD, RA, RS or link-local
// addresses on devices created later, so the only IPv4 on its links is
// what the test sends) and removes it when the test ends.
func newNamespace(t *testing.T, role string) string {
	t.Helper()
	ns := fmt.Sprintf("rfmsc-%d-%d-%s", os.Getpid(), nsSeq.Add(1), role)
	lab.Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("removing namespace %s: %v: %s", ns, err, out)
		}
	})
	for _, conf := range []string{"all", "default"} {
		for _, kv := range [][2]string{{"accept_dad", "0"}, {"accept_ra", "0"}, {"router_solicitations", "0"}, {"addr_gen_mode", "1"}} {
			lab.SetSysctl(t, ns, "net.ipv6.conf."+conf+"."+kv[0], kv[1])
		}
	}
	lab.Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// ipBatch runs `ip -n ns -batch -` over lines: one process for
// hundreds of link changes.
func ipBatch(t testing.TB, ns string, lines []string) {
	t.Helper()
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s -batch (%d commands): %v: %s", ns, len(lines), err, out)
	}
}

// addPairs creates veth pairs a<i> in nsA and b<i> in nsB, all up.
func addPairs(t testing.TB, nsA, nsB string, a, b []string) {
	t.Helper()
	var add, upA, upB []string
	for i := range a {
		add = append(add, fmt.Sprintf("link add %s type veth peer name %s netns %s", a[i], b[i], nsB))
		upA = append(upA, "link set "+a[i]+" up")
		upB = append(upB, "link set "+b[i]+" up")
	}
	ipBatch(t, nsA, add)
	ipBatch(t, nsA, upA)
	ipBatch(t, nsB, upB)
}

func delLinks(t testing.TB, ns string, names []string) {
	t.Helper()
	var lines []string
	for _, n := range names {
		lines = append(lines, "link del "+n)
	}
	ipBatch(t, ns, lines)
}

// frameLen is the length of every frame sent: Ethernet, IPv4, UDP and
// 22 bytes of payload.
const frameLen = 64

// sender writes IPv4/UDP frames with AF_PACKET on one interface of a
// namespace, from a socket that stays in that namespace.
type sender struct {
	fd    int
	to    unix.SockaddrLinklayer
	frame []byte
}

func newSender(t testing.TB, ns, dev string) *sender {
	t.Helper()
	s := &sender{frame: udpFrame()}
	err := lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		s.to = unix.SockaddrLinklayer{Ifindex: ifi.Index}
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatalf("packet socket on %s in %s: %v", dev, ns, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// send writes n frames and returns how many the kernel took.
func (s *sender) send(n int) (int, error) {
	for i := 0; i < n; i++ {
		if err := unix.Sendto(s.fd, s.frame, 0, &s.to); err != nil {
			return i, err
		}
	}
	return n, nil
}

// udpFrame is a 64-byte IPv4/UDP frame 198.18.0.1:40000 ->
// 198.19.0.1:9 to a locally administered MAC nobody has.
func udpFrame() []byte {
	f := make([]byte, frameLen)
	copy(f[0:6], []byte{0x02, 0, 0, 0, 0, 0x02})
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 0x01})
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], frameLen-14)
	ip[8] = 64
	ip[9] = 17
	copy(ip[12:16], []byte{198, 18, 0, 1})
	copy(ip[16:20], []byte{198, 19, 0, 1})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 9)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	return f
}

const metricsPort = 9669

// agent is `rfm agent` running in a namespace.
type agent struct {
	*lab.Process
	ns     string
	client func() ([]lab.Sample, time.Duration, error)
}

func startAgent(t *testing.T, ns string, patterns []string, sampleRate int) *agent {
	t.Helper()
	quoted := make([]string, len(patterns))
	for i, p := range patterns {
		quoted[i] = strconv.Quote(p)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`[agent]
interfaces = [%s]

[agent.bpf]
sample_rate = %d
ring_buf_size = 4194304

[agent.prometheus]
host = "127.0.0.1"
port = %d
`, strings.Join(quoted, ", "), sampleRate, metricsPort)
	path := filepath.Join(dir, "rfm.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &agent{ns: ns, Process: lab.Start(t, "agent", ns, rfmBin, "agent", "-c", path, "--log-level", "warn")}
	hc := lab.HTTPClient(ns, 0)
	a.client = func() ([]lab.Sample, time.Duration, error) {
		start := time.Now()
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
		if err != nil {
			return nil, 0, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		took := time.Since(start)
		if err != nil {
			return nil, 0, err
		}
		if resp.StatusCode != 200 {
			return nil, 0, fmt.Errorf("/metrics: %s", resp.Status)
		}
		s, err := lab.ParseMetrics(strings.NewReader(string(body)))
		return s, took, err
	}
	t.Cleanup(func() {
		if !a.Exited() {
			if _, err := a.Stop(10 * time.Second); err != nil {
				t.Errorf("stopping agent: %v; output:\n%s", err, a.Output())
			}
		}
	})
	lab.Eventually(t, 20*time.Second, "agent /metrics", func() error {
		if a.Exited() {
			t.Fatalf("agent exited early (%v); output:\n%s", a.State(), a.Output())
		}
		_, _, err := a.client()
		return err
	})
	return a
}

func (a *agent) scrape(t testing.TB) []lab.Sample {
	t.Helper()
	s, _, err := a.client()
	if err != nil {
		t.Fatalf("scraping agent: %v; output:\n%s", err, a.Output())
	}
	return s
}

// attached is the set of interfaces rfm_interface_attached lists.
func attached(s []lab.Sample) map[string]bool {
	out := map[string]bool{}
	for _, x := range s {
		if x.Name == "rfm_interface_attached" && x.Value == 1 {
			out[x.Labels["ifname"]] = true
		}
	}
	return out
}

func value(s []lab.Sample, name string, labels map[string]string) (float64, bool) {
next:
	for _, x := range s {
		if x.Name != name {
			continue
		}
		for k, v := range labels {
			if x.Labels[k] != v {
				continue next
			}
		}
		return x.Value, true
	}
	return 0, false
}

// waitAttached waits until exactly want is attached.
func (a *agent) waitAttached(t *testing.T, want []string, timeout time.Duration) {
	t.Helper()
	lab.Eventually(t, timeout, fmt.Sprintf("%d interfaces attached", len(want)), func() error {
		if a.Exited() {
			t.Fatalf("agent exited (%v); output:\n%s", a.State(), a.Output())
		}
		s, _, err := a.client()
		if err != nil {
			return err
		}
		got := attached(s)
		missing := 0
		for _, w := range want {
			if !got[w] {
				missing++
			}
		}
		if missing > 0 || len(got) != len(want) {
			return fmt.Errorf("%d attached, %d of the %d wanted missing", len(got), missing, len(want))
		}
		return nil
	})
}

// fdCounts counts the agent's file descriptors by kind, and collects the
// ids of the BPF programs it holds.
func fdCounts(t testing.TB, pid int) (map[string]int, map[ebpf.ProgramID]bool) {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	progs := map[ebpf.ProgramID]bool{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		kind := "other"
		switch {
		case target == "anon_inode:bpf-map":
			kind = "bpf-map"
		case target == "anon_inode:bpf-prog":
			kind = "bpf-prog"
			if id, ok := fdinfoField(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()), "prog_id:"); ok {
				progs[ebpf.ProgramID(id)] = true
			}
		case target == "anon_inode:bpf_link":
			kind = "bpf-link"
		case strings.HasPrefix(target, "socket:"):
			kind = "socket"
		}
		counts[kind]++
		counts["total"]++
	}
	return counts, progs
}

func fdinfoField(path, key string) (uint64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// kernelLinks counts the BPF links in the whole kernel (its own listing,
// BPF_LINK_GET_NEXT_ID) whose program is one of progs.
func kernelLinks(t testing.TB, progs map[ebpf.ProgramID]bool) int {
	t.Helper()
	n := 0
	it := new(link.Iterator)
	for it.Next() {
		info, err := it.Link.Info()
		if err == nil && progs[info.Program] {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatalf("listing the kernel's BPF links: %v", err)
	}
	return n
}

func rssAnonKB(t testing.TB, pid int) uint64 {
	t.Helper()
	v, ok := fdinfoField(fmt.Sprintf("/proc/%d/status", pid), "RssAnon:")
	if !ok {
		// "RssAnon:	  1234 kB": the unit follows the number.
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
				f := strings.Fields(rest)
				if len(f) > 0 {
					v, _ = strconv.ParseUint(f[0], 10, 64)
				}
			}
		}
	}
	return v
}

func envInt(t testing.TB, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", key, v)
	}
	return n
}

// snapshot is what must be back where it was once churned interfaces
// are gone.
type snapshot struct {
	fds        map[string]int
	progs      map[ebpf.ProgramID]bool
	links      int
	goroutines float64
}

func (a *agent) snapshot(t testing.TB) snapshot {
	t.Helper()
	fds, progs := fdCounts(t, a.Pid())
	g, _ := value(a.scrape(t), "go_goroutines", nil)
	return snapshot{fds: fds, progs: progs, links: kernelLinks(t, progs), goroutines: g}
}

// TestChurn creates and deletes RFM_SCALE_CHURN veth interfaces in
// rounds of RFM_SCALE_BATCH while four interfaces that stay carry
// counted traffic, and two interfaces of each round carry some too.
func TestChurn(t *testing.T) {
	churn := envInt(t, "RFM_SCALE_CHURN", 500)
	batch := min(envInt(t, "RFM_SCALE_BATCH", 100), churn)
	nsA, nsB := newNamespace(t, "a"), newNamespace(t, "b")
	const stable = 4
	var stableA, stableB []string
	for i := 0; i < stable; i++ {
		stableA = append(stableA, fmt.Sprintf("s%d", i))
		stableB = append(stableB, fmt.Sprintf("p%d", i))
	}
	addPairs(t, nsA, nsB, stableA, stableB)
	a := startAgent(t, nsA, []string{"s*", "c*"}, 1)
	a.waitAttached(t, stableA, 20*time.Second)
	base := a.snapshot(t)
	baseRSS := rssAnonKB(t, a.Pid())
	if len(base.progs) == 0 || base.links != 2*stable {
		t.Fatalf("before churn: %d BPF links of the agent's %d programs in the kernel, want %d", base.links, len(base.progs), 2*stable)
	}

	senders := make([]*sender, stable)
	sent := make([]int, stable)
	for i := range senders {
		senders[i] = newSender(t, nsB, stableB[i])
	}
	sendStable := func(round int) {
		for i, s := range senders {
			n, err := s.send((i + 1) * (round + 1))
			sent[i] += n
			if err != nil {
				t.Fatalf("sending on %s: %v", stableB[i], err)
			}
		}
	}

	var attachRates, scrapeMs []float64
	var peakRSS uint64
	rounds := (churn + batch - 1) / batch
	deleted := map[string]bool{}
	for r := 0; r < rounds; r++ {
		n := min(batch, churn-r*batch)
		var ca, cb []string
		for i := 0; i < n; i++ {
			ca = append(ca, fmt.Sprintf("c%dx%d", r, i))
			cb = append(cb, fmt.Sprintf("d%dx%d", r, i))
		}
		sendStable(r)
		start := time.Now()
		addPairs(t, nsA, nsB, ca, cb)
		created := time.Since(start)
		a.waitAttached(t, append(append([]string{}, stableA...), ca...), 60*time.Second)
		attachRates = append(attachRates, float64(time.Since(start)-created)/float64(time.Millisecond)/float64(n))
		// Traffic on two interfaces of the round: their series must go
		// with them.
		for _, i := range []int{0, n - 1} {
			if _, err := newSender(t, nsB, cb[i]).send(3); err != nil {
				t.Fatalf("sending on %s: %v", cb[i], err)
			}
		}
		sendStable(r)
		best := time.Hour
		for k := 0; k < 3; k++ {
			_, took, err := a.client()
			if err != nil {
				t.Fatal(err)
			}
			best = min(best, took)
		}
		scrapeMs = append(scrapeMs, float64(best.Microseconds())/1000)
		peakRSS = max(peakRSS, rssAnonKB(t, a.Pid()))
		delLinks(t, nsA, ca)
		for _, c := range ca {
			deleted[c] = true
		}
		sendStable(r)
	}
	a.waitAttached(t, stableA, 60*time.Second)

	// Exact counters on the interfaces that stayed: every frame sent on
	// p<i> arrived on s<i>, and nothing else of IPv4 crossed them.
	lab.Eventually(t, 10*time.Second, "exact counters on the stable interfaces", func() error {
		s := a.scrape(t)
		for i, dev := range stableA {
			l := map[string]string{"ifname": dev, "family": "ipv4"}
			rxP, _ := value(s, "rfm_interface_rx_packets_total", l)
			rxB, _ := value(s, "rfm_interface_rx_bytes_total", l)
			txP, _ := value(s, "rfm_interface_tx_packets_total", l)
			if rxP != float64(sent[i]) || rxB != float64(sent[i]*frameLen) || txP != 0 {
				return fmt.Errorf("%s: rx %v packets %v bytes, tx %v packets; want rx %d packets %d bytes, tx 0",
					dev, rxP, rxB, txP, sent[i], sent[i]*frameLen)
			}
		}
		return nil
	})
	// No series of a deleted interface, in any family labelled by
	// interface, nor any under a bare ifindex.
	lab.Eventually(t, 10*time.Second, "no series of deleted interfaces", func() error {
		for _, x := range a.scrape(t) {
			name, ok := x.Labels["ifname"]
			if _, err := strconv.Atoi(name); ok && (deleted[name] || err == nil) {
				return fmt.Errorf("%s{ifname=%q} still served", x.Name, x.Labels["ifname"])
			}
		}
		return nil
	})
	for _, dev := range stableA {
		idx := ifindex(t, nsA, dev)
		if in, eg := lab.AttachedPrograms(t, nsA, idx); in != 1 || eg != 1 {
			t.Errorf("%s: %d ingress and %d egress TCX programs, want 1 and 1", dev, in, eg)
		}
	}
	// Nothing leaked: file descriptors by kind, the agent's BPF links in
	// the kernel's own listing, its programs, goroutines.
	var after snapshot
	lab.Eventually(t, 15*time.Second, "agent back to its resources before the churn", func() error {
		after = a.snapshot(t)
		var diffs []string
		for _, k := range sortedKeys(base.fds, after.fds) {
			// BPF objects exactly; sockets and the rest may be fewer
			// (a scrape's connection still closing at the start).
			if after.fds[k] > base.fds[k] || strings.HasPrefix(k, "bpf-") && after.fds[k] != base.fds[k] {
				diffs = append(diffs, fmt.Sprintf("%s fds %d -> %d", k, base.fds[k], after.fds[k]))
			}
		}
		if after.links != base.links {
			diffs = append(diffs, fmt.Sprintf("kernel BPF links of its programs %d -> %d", base.links, after.links))
		}
		if len(after.progs) != len(base.progs) {
			diffs = append(diffs, fmt.Sprintf("BPF programs %d -> %d", len(base.progs), len(after.progs)))
		}
		if after.goroutines > base.goroutines {
			diffs = append(diffs, fmt.Sprintf("goroutines %v -> %v", base.goroutines, after.goroutines))
		}
		if len(diffs) > 0 {
			return errors.New(strings.Join(diffs, "; "))
		}
		return nil
	})
	endRSS := rssAnonKB(t, a.Pid())
	sort.Float64s(attachRates)
	sort.Float64s(scrapeMs)
	t.Logf("churned %d interfaces in %d rounds of %d next to %d that stayed", churn, rounds, batch, stable)
	t.Logf("attach: median %.2f ms per interface from creation to listed as attached (worst round %.2f ms)",
		attachRates[len(attachRates)/2], attachRates[len(attachRates)-1])
	t.Logf("scrape with %d attached: median %.1f ms (best of 3 per round; worst round %.1f ms)",
		batch+stable, scrapeMs[len(scrapeMs)/2], scrapeMs[len(scrapeMs)-1])
	// The start is before the agent's buffers grew to their working
	// size; the end, with only the stable interfaces attached, is the
	// fair base for what each interface costs.
	t.Logf("agent RssAnon: %d kB at start, %d kB at the peak of %d attached, %d kB after with %d: %.1f kB per interface (peak - after)",
		baseRSS, peakRSS, batch+stable, endRSS, stable, float64(int64(peakRSS)-int64(endRSS))/float64(batch))
	t.Logf("fds before %v, after %v; BPF links %d -> %d; goroutines %v -> %v",
		base.fds, after.fds, base.links, after.links, base.goroutines, after.goroutines)
}

func sortedKeys(a, b map[string]int) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range []map[string]int{a, b} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

func ifindex(t testing.TB, ns, dev string) int {
	t.Helper()
	var idx int
	if err := lab.InNetns(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			idx = ifi.Index
		}
		return err
	}); err != nil {
		t.Fatalf("ifindex of %s in %s: %v", dev, ns, err)
	}
	return idx
}
