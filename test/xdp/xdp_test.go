// SPDX-License-Identifier: AGPL-3.0-only

// Package xdp holds end-to-end tests of the agent's XDP fast path: the
// agent binary runs in namespace A with XDP on its veth end, traffic comes
// from namespace B, and the rfm CLI drives the blocklist over the control
// socket.
package xdp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/netsampler/goflow2/v2/decoders/netflow"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/test/lab"
)

var rfmBinary string

func TestMain(m *testing.M) {
	for _, tool := range []string{"ip", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("skipping test/xdp: %s not installed\n", tool)
			os.Exit(0)
		}
	}
	os.Exit(lab.RunWithAgent(m, "xdp", &rfmBinary))
}

const (
	addrA4  = "198.18.0.1"
	addrB4  = "198.18.0.2"
	addrA6  = "2001:db8:f::1"
	addrB6  = "2001:db8:f::2"
	devA    = "rfmqA"
	devB    = "rfmqB"
	metrics = "127.0.0.1:9669"
)

var seq atomic.Uint32

type testbed struct {
	A, B string
	dir  string // config, state file and control socket
	// xdpIfaces is agent.xdp.interfaces as TOML; "" means [devA].
	xdpIfaces string
	// stateFile is agent.xdp.state_file; "" means state/blocklist.json
	// in dir.
	stateFile string
}

func newLab(t *testing.T) *testbed {
	t.Helper()
	n := seq.Add(1)
	l := &testbed{A: fmt.Sprintf("rfmqa%d-%d", os.Getpid(), n), B: fmt.Sprintf("rfmqb%d-%d", os.Getpid(), n), dir: t.TempDir()}
	lab.NewPair(t, lab.PairOptions{
		NsA: l.A, NsB: l.B, DevA: devA, DevB: devB,
		MACA: lab.MustMAC("02:00:c6:12:0f:01"), MACB: lab.MustMAC("02:00:c6:12:0f:02"),
		Addrs: [][2]netip.Prefix{
			{netip.MustParsePrefix(addrA4 + "/24"), netip.MustParsePrefix(addrB4 + "/24")},
			{netip.MustParsePrefix(addrA6 + "/64"), netip.MustParsePrefix(addrB6 + "/64")},
		},
	})
	return l
}

func (l *testbed) socket() string { return filepath.Join(l.dir, "rfm.sock") }

func (l *testbed) stateFilePath() string {
	if l.stateFile != "" {
		return l.stateFile
	}
	return filepath.Join(l.dir, "state", "blocklist.json")
}

func (l *testbed) xdpIfacesTOML() string {
	if l.xdpIfaces != "" {
		return l.xdpIfaces
	}
	return fmt.Sprintf("[%q]", devA)
}

// writeConfig writes rfm.toml with XDP on devA and the given rules
// (TOML of [[agent.xdp.rules]] tables).
func (l *testbed) writeConfig(t *testing.T, rules string) string {
	t.Helper()
	toml := fmt.Sprintf(`[agent]
interfaces = [%q]
[agent.bpf]
sample_rate = 1
[agent.prometheus]
host = "127.0.0.1"
port = 9669
[agent.control]
socket = %q
[agent.xdp]
interfaces = %s
mode = "native"
state_file = %q
`, devA, l.socket(), l.xdpIfacesTOML(), l.stateFilePath()) + rules
	path := filepath.Join(l.dir, "rfm.toml")
	if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startAgent starts the agent with rules (TOML after [agent.xdp]: its
// remaining keys, then [[agent.xdp.rules]] or other tables).
func (l *testbed) startAgent(t *testing.T, rules string) *lab.Process {
	t.Helper()
	path := l.writeConfig(t, rules)
	p := lab.Start(t, "rfm agent", l.A, rfmBinary, "agent", "-c", path, "--log-level", "debug")
	lab.Eventually(t, 20*time.Second, "XDP attached to "+devA, func() error {
		if p.Exited() {
			t.Fatalf("agent exited at start: %v; output:\n%s", p.Err(), p.Output())
		}
		v, err := l.metric(t, "rfm_xdp_attached", map[string]string{"ifname": devA})
		if err != nil {
			return err
		}
		if v != 1 {
			return errors.New("rfm_xdp_attached not 1 yet")
		}
		return nil
	})
	return p
}

// rfm runs the CLI against the agent's control socket.
func (l *testbed) rfm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(rfmBinary, append(args, "--socket", l.socket())...).CombinedOutput()
	if err != nil {
		t.Fatalf("rfm %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// metric sums the samples of name with the given labels, scraped in A.
func (l *testbed) metric(t *testing.T, name string, want map[string]string) (float64, error) {
	resp, err := lab.HTTPClient(l.A, time.Second).Get("http://" + metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %s", resp.Status)
	}
	samples, err := lab.ParseMetrics(resp.Body)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, s := range samples {
		if s.Name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.Labels[k] != v {
				match = false
			}
		}
		if match {
			sum += s.Value
		}
	}
	return sum, nil
}

// receiver counts datagrams on a UDP socket in A.
type receiver struct {
	conn *net.UDPConn
	n    chan int
}

func (l *testbed) receiver(t *testing.T, addr string) *receiver {
	t.Helper()
	c := lab.UDPConn(t, l.A, addr, "")
	raw, _ := c.SyscallConn()
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) })
	r := &receiver{conn: c, n: make(chan int, 1)}
	go func() {
		buf := make([]byte, 2048)
		n := 0
		for {
			if _, err := c.Read(buf); err != nil {
				r.n <- n
				return
			}
			n++
		}
	}()
	return r
}

// count returns how many datagrams arrived once the queue is drained.
func (r *receiver) count() int {
	r.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	n := <-r.n
	r.conn.Close() // the port is free for the next receiver
	return n
}

// sendFromB sends n datagrams of 32 bytes from B to A's port.
func (l *testbed) sendFromB(t *testing.T, local, remote string, n int) {
	t.Helper()
	c := lab.UDPConn(t, l.B, local, remote)
	defer c.Close()
	buf := make([]byte, 32)
	for range n {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// try sends n datagrams and returns how many arrived.
func (l *testbed) try(t *testing.T, port, n int) int {
	t.Helper()
	r := l.receiver(t, fmt.Sprintf("%s:%d", addrA4, port))
	l.sendFromB(t, addrB4+":5000", fmt.Sprintf("%s:%d", addrA4, port), n)
	return r.count()
}

// TestBlocklistLive: rfm block add drops from the next packet on, every
// arriving packet still counts once in the rx counters, del and expiry
// let traffic through again, and the list survives a restart.
func TestBlocklistLive(t *testing.T) {
	l := newLab(t)
	p := l.startAgent(t, "")
	const n = 50
	rx := func() float64 {
		v, err := l.metric(t, "rfm_interface_rx_packets_total", map[string]string{"ifname": devA, "family": "ipv4"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := l.try(t, 7000, n); got != n {
		t.Fatalf("before blocking: %d of %d arrived", got, n)
	}
	start := time.Now()
	l.rfm(t, "block", "add", addrB4, "--reason", "test")
	t.Logf("rfm block add returned after %s; the next packets are dropped", time.Since(start))
	rxBefore := rx()
	if got := l.try(t, 7001, n); got != 0 {
		t.Errorf("blocked source: %d of %d arrived", got, n)
	}
	lab.Eventually(t, 5*time.Second, "rx counts the dropped packets", func() error {
		if d := rx() - rxBefore; d != n {
			return fmt.Errorf("rx grew by %v, want %d", d, n)
		}
		return nil
	})
	if v, _ := l.metric(t, "rfm_xdp_packets_total", map[string]string{"ifname": devA, "rule": "blocklist", "action": "drop"}); v != n {
		t.Errorf("rfm_xdp_packets_total blocklist drop = %v, want %d", v, n)
	}
	// Sampled at rate 1 like any packet: a flow of their own, labelled.
	lab.Eventually(t, 5*time.Second, "the dropped packets' flow", func() error {
		v, err := l.metric(t, "rfm_flow_estimated_packets_total", map[string]string{"ifname": devA, "direction": "ingress", "xdp": "dropped"})
		if err != nil || v != n {
			return fmt.Errorf("rfm_flow_estimated_packets_total{xdp=dropped} = %v, want %d (%v)", v, n, err)
		}
		return nil
	})
	out := l.rfm(t, "block", "list", "--json")
	var list struct {
		Entries []struct{ Prefix, Reason string }
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Entries) != 1 || list.Entries[0].Prefix != addrB4+"/32" {
		t.Fatalf("block list: %s (%v)", out, err)
	}
	l.rfm(t, "block", "del", addrB4)
	if got := l.try(t, 7002, n); got != n {
		t.Errorf("after del: %d of %d arrived", got, n)
	}

	// Expiry.
	l.rfm(t, "block", "add", "198.18.0.0/30", "--for", "2s")
	if got := l.try(t, 7003, n); got != 0 {
		t.Errorf("blocked prefix: %d of %d arrived", got, n)
	}
	lab.Eventually(t, 10*time.Second, "the entry expires", func() error {
		if got := l.try(t, 7004, 5); got != 5 {
			return fmt.Errorf("%d of 5 arrived", got)
		}
		return nil
	})

	// Restart: the list comes back from the state file.
	l.rfm(t, "block", "add", addrB6, "--for", "1h")
	if _, err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p = l.startAgent(t, "")
	r := l.receiver(t, fmt.Sprintf("[%s]:7005", addrA6))
	l.sendFromB(t, fmt.Sprintf("[%s]:5000", addrB6), fmt.Sprintf("[%s]:7005", addrA6), n)
	if got := r.count(); got != 0 {
		t.Errorf("after restart: %d of %d IPv6 datagrams from the blocked source arrived", got, n)
	}
	if out := l.rfm(t, "status"); !strings.Contains(out, devA) || !strings.Contains(out, "native") || !strings.Contains(out, "blocklist") {
		t.Errorf("rfm status lacks the XDP interface, mode or blocklist hits:\n%s", out)
	}

	// SIGKILL: the kernel removes the program with the agent's link.
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 5*time.Second, "no XDP program after SIGKILL", func() error {
		if id := xdpProgID(t, l.A, devA); id != 0 {
			return fmt.Errorf("program %d still attached", id)
		}
		return nil
	})
}

// TestRulesAndReload: a rule drops what it names; a reload swaps the
// rule set.
func TestRulesAndReload(t *testing.T) {
	l := newLab(t)
	l.startAgent(t, `[[agent.xdp.rules]]
name = "no-7100"
action = "drop"
proto = "udp"
dst_ports = ["7100"]
`)
	if got := l.try(t, 7100, 20); got != 0 {
		t.Errorf("rule no-7100: %d of 20 arrived", got)
	}
	// The XDP maps count in the agent's locked memory: the port tables
	// (4 x 65536 x 8 bytes) and the /16 tables (4 x 65536 x 16) alone are
	// 6 MiB.
	if v, err := l.metric(t, "rfm_memory_bpf_locked_bytes", nil); err != nil || v < 6<<20 {
		t.Errorf("rfm_memory_bpf_locked_bytes = %v (%v), want the XDP maps' 6 MiB at least", v, err)
	}
	if got := l.try(t, 7101, 20); got != 20 {
		t.Errorf("port 7101: %d of 20 arrived", got)
	}
	l.writeConfig(t, `[[agent.xdp.rules]]
name = "no-7101"
action = "drop"
proto = "udp"
dst_ports = ["7101"]
`)
	if out := l.rfm(t, "reload"); !strings.Contains(out, "agent.xdp.rules") {
		t.Errorf("reload did not apply the rules: %s", out)
	}
	if got := l.try(t, 7100, 20); got != 20 {
		t.Errorf("after reload, port 7100: %d of 20 arrived", got)
	}
	if got := l.try(t, 7101, 20); got != 0 {
		t.Errorf("after reload, rule no-7101: %d of 20 arrived", got)
	}
	if v, _ := l.metric(t, "rfm_xdp_packets_total", map[string]string{"rule": "no-7100", "action": "drop"}); v != 20 {
		t.Errorf("rfm_xdp_packets_total of the replaced rule = %v, want 20", v)
	}
}

// TestStateFileMovesOnReload: a reload that changes agent.xdp.state_file
// moves the running blocklist there (a file already at the new path is
// replaced, not read), later changes go to the new file, and a restart
// from it finds every entry. A path that cannot be written refuses the
// whole reload: the rule change in it does not apply either.
func TestStateFileMovesOnReload(t *testing.T) {
	l := newLab(t)
	p := l.startAgent(t, "")
	oldPath := l.stateFilePath()

	// Refused: the new path's directory would be a regular file. The
	// rule in the same reload does not apply either.
	blocker := filepath.Join(l.dir, "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l.stateFile = filepath.Join(blocker, "list.json")
	l.writeConfig(t, `[[agent.xdp.rules]]
name = "no-7301"
action = "drop"
proto = "udp"
dst_ports = ["7301"]
`)
	out, err := l.rfmErr("reload")
	if err == nil || !strings.Contains(out, "agent.xdp.state_file") || !strings.Contains(out, blocker) {
		t.Errorf("reload to an unwritable state file: err %v, output %s", err, out)
	}
	if got := l.try(t, 7301, 20); got != 20 {
		t.Errorf("the refused reload's rule applied: %d of 20 arrived", got)
	}
	l.rfm(t, "block", "add", addrB4, "--for", "1h", "--reason", "before the move")
	if data, err := os.ReadFile(oldPath + ".journal"); err != nil || !strings.Contains(string(data), addrB4) {
		t.Errorf("after the refused reload the old state file's journal lacks the new entry: %s (%v)", data, err)
	}

	// Someone else's list at the new path: replaced, not merged.
	l.stateFile = filepath.Join(l.dir, "moved", "list.json")
	if err := os.MkdirAll(filepath.Dir(l.stateFile), 0o750); err != nil {
		t.Fatal(err)
	}
	foreign := `{"version":1,"entries":[{"prefix":"198.18.99.0/24","added":"2026-01-01T00:00:00Z"}]}` + "\n"
	if err := os.WriteFile(l.stateFile, []byte(foreign), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.stateFile+".journal", []byte(`{"entry":{"prefix":"198.18.98.0/24","added":"2026-01-01T00:00:00Z"}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.writeConfig(t, "")
	if out := l.rfm(t, "reload"); !strings.Contains(out, "agent.xdp.state_file") || strings.Contains(out, "restart") {
		t.Errorf("reload did not apply agent.xdp.state_file: %s", out)
	}
	data, err := os.ReadFile(l.stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), addrB4+"/32") || strings.Contains(string(data), "198.18.99.0") {
		t.Errorf("new state file after the move: %s", data)
	}
	if _, err := os.Stat(l.stateFile + ".journal"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the new path's old journal is still there (%v)", err)
	}
	// Changes after the move go to the new file only.
	l.rfm(t, "block", "add", addrB6, "--for", "1h")
	l.rfm(t, "block", "add", "198.18.0.64/26", "--for", "1h")
	if data, _ := os.ReadFile(oldPath + ".journal"); strings.Contains(string(data), addrB6) {
		t.Errorf("the old state file got a change after the move: %s", data)
	}

	// Restart from the moved file: every entry is back.
	if _, err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	l.startAgent(t, "")
	var list struct{ Entries []struct{ Prefix string } }
	if err := json.Unmarshal([]byte(l.rfm(t, "block", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range list.Entries {
		got = append(got, e.Prefix)
	}
	want := []string{"198.18.0.64/26", addrB4 + "/32", addrB6 + "/128"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("blocklist after a restart from the moved file: %v, want %v", got, want)
	}
	if got := l.try(t, 7302, 20); got != 0 {
		t.Errorf("after the restart, the blocked source: %d of 20 arrived", got)
	}
}

// TestForeignProgramRefused: the agent does not start over someone
// else's XDP program, names it, and leaves it attached.
func TestForeignProgramRefused(t *testing.T) {
	l := newLab(t)
	foreign, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "their_fw", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	if err := lab.InNetns(l.A, func() error {
		link, err := netlink.LinkByName(devA)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFd(link, foreign.FD())
	}); err != nil {
		t.Fatal(err)
	}
	before := xdpProgID(t, l.A, devA)
	path := l.writeConfig(t, "")
	p := lab.Start(t, "rfm agent", l.A, rfmBinary, "agent", "-c", path)
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("agent still running over a foreign XDP program:\n%s", p.Output())
	}
	if p.Err() == nil || !strings.Contains(p.Output(), `"their_fw"`) {
		t.Errorf("agent exit %v, output does not name the program:\n%s", p.Err(), p.Output())
	}
	if id := xdpProgID(t, l.A, devA); id != before || id == 0 {
		t.Errorf("foreign program id %d before, %d after", before, id)
	}
}

// xdpProgID is the id of the XDP program on the interface, 0 without one.
func xdpProgID(t *testing.T, ns, dev string) uint32 { return xdpAttached(t, ns, dev).ProgId }

// xdpAttachMode is the kernel's XDP attach mode on the interface
// (netlink IFLA_XDP_ATTACHED: 1 driver, 2 generic/skb), 0 without one.
func xdpAttachMode(t *testing.T, ns, dev string) uint32 { return xdpAttached(t, ns, dev).AttachMode }

// xdpAttached is what netlink says of XDP on the interface; zero
// without a program.
func xdpAttached(t *testing.T, ns, dev string) netlink.LinkXdp {
	t.Helper()
	var x netlink.LinkXdp
	if err := lab.InNetns(ns, func() error {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		if a := link.Attrs().Xdp; a != nil && a.Attached {
			x = *a
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return x
}

// TestBlackholeFromBMP: a gobgpd in A reports its RIB over BMP to the
// agent; a route it originates with 65535:666 for A's address makes XDP
// drop the traffic to it, and withdrawing the route lets it through.
func TestBlackholeFromBMP(t *testing.T) {
	for _, bin := range []string{"gobgpd", "gobgp"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (Debian package gobgpd)", bin)
		}
	}
	l := newLab(t)
	const bmpPort, bgpPort, apiPort = 11019, 10179, 10180
	l.startAgent(t, fmt.Sprintf("blackhole_from_rib = true\n[agent.enrich.rib.bmp]\nhost = \"127.0.0.1\"\nport = %d\n", bmpPort))
	conf := filepath.Join(l.dir, "gobgpd.toml")
	if err := os.WriteFile(conf, []byte(lab.GoBGPD{AS: 65020, Addr: "127.0.0.1", Port: bgpPort,
		BMP: &lab.GoBGPBMP{Port: bmpPort, SysName: "rtbh"}}.Config()), 0o644); err != nil {
		t.Fatal(err)
	}
	lab.Start(t, "gobgpd", l.A, "gobgpd", "-f", conf, "--api-hosts", fmt.Sprintf("127.0.0.1:%d", apiPort), "--pprof-disable", "-p", "-l", "info")
	gobgp := func(args ...string) error {
		out, err := exec.Command("ip", append([]string{"netns", "exec", l.A, "gobgp", "-u", "127.0.0.1", "-p", fmt.Sprint(apiPort)}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("gobgp %v: %v: %s", args, err, out)
		}
		return nil
	}
	lab.Eventually(t, 20*time.Second, "gobgpd's API", func() error { return gobgp("global") })
	if got := l.try(t, 7200, 20); got != 20 {
		t.Fatalf("before the blackhole: %d of 20 arrived", got)
	}
	if err := gobgp("global", "rib", "-a", "ipv4", "add", addrA4+"/32", "community", "65535:666"); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 20*time.Second, "traffic to the blackholed address dropped", func() error {
		if got := l.try(t, 7201, 10); got != 0 {
			return fmt.Errorf("%d of 10 arrived", got)
		}
		return nil
	})
	if v, _ := l.metric(t, "rfm_xdp_list_entries", map[string]string{"list": "blackhole"}); v != 1 {
		t.Errorf("rfm_xdp_list_entries{list=blackhole} = %v, want 1", v)
	}
	if err := gobgp("global", "rib", "-a", "ipv4", "del", addrA4+"/32"); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 20*time.Second, "traffic passes after the withdraw", func() error {
		if got := l.try(t, 7202, 10); got != 10 {
			return fmt.Errorf("%d of 10 arrived", got)
		}
		return nil
	})
}

// TestXDPHotplug: an interface that appears later and matches
// agent.xdp.interfaces gets the program (here without TC: agent.interfaces
// names only devA); when it goes, nothing is left behind.
func TestXDPHotplug(t *testing.T) {
	l := newLab(t)
	l.xdpIfaces = `["rfmq*"]`
	l.startAgent(t, "")
	lab.Run(t, "ip", "-n", l.A, "link", "add", "rfmqhot0", "type", "veth", "peer", "name", "rfmqhot1")
	lab.Run(t, "ip", "-n", l.A, "link", "set", "rfmqhot0", "up")
	lab.Run(t, "ip", "-n", l.A, "link", "set", "rfmqhot1", "up")
	for _, dev := range []string{"rfmqhot0", "rfmqhot1"} {
		lab.Eventually(t, 10*time.Second, "XDP on the new "+dev, func() error {
			v, err := l.metric(t, "rfm_xdp_attached", map[string]string{"ifname": dev})
			if err != nil || v != 1 {
				return fmt.Errorf("rfm_xdp_attached{ifname=%s} = %v (%v)", dev, v, err)
			}
			if xdpProgID(t, l.A, dev) == 0 {
				return errors.New("no program on the interface")
			}
			return nil
		})
	}
	if v, _ := l.metric(t, "rfm_interface_attached", map[string]string{"ifname": "rfmqhot0"}); v != 0 {
		t.Errorf("TC attached to rfmqhot0, which agent.interfaces does not select")
	}
	lab.Run(t, "ip", "-n", l.A, "link", "del", "rfmqhot0")
	lab.Eventually(t, 10*time.Second, "the gone interfaces leave the metrics", func() error {
		v, err := l.metric(t, "rfm_xdp_attached", map[string]string{"ifname": "rfmqhot0"})
		if err != nil {
			return err
		}
		if w, _ := l.metric(t, "rfm_xdp_attached", map[string]string{"ifname": "rfmqhot1"}); v != 0 || w != 0 {
			return fmt.Errorf("rfm_xdp_attached still %v and %v", v, w)
		}
		return nil
	})
}

// TestBlockTakesEffectAtOnce: while B streams datagrams at A, a
// blocklist add over the control API stops them: nothing arrives after
// the call returned. The call's own duration (which includes writing the
// state file) is logged: it bounds how long the block took to act.
func TestBlockTakesEffectAtOnce(t *testing.T) {
	l := newLab(t)
	l.startAgent(t, "")
	c := lab.UDPConn(t, l.A, addrA4+":7600", "")
	// The kernel stamps each datagram as it enters the stack, past XDP:
	// a reader that runs late cannot make a packet look late.
	raw, _ := c.SyscallConn()
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) })
	var last atomic.Int64 // kernel arrival time of the latest datagram, Unix ns
	var got atomic.Int64
	go func() {
		buf, oob := make([]byte, 64), make([]byte, 128)
		for {
			_, oobn, _, _, err := c.ReadMsgUDP(buf, oob)
			if err != nil {
				return
			}
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
					ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
					last.Store(ts.Nano())
				}
			}
			got.Add(1)
		}
	}()
	s := lab.UDPConn(t, l.B, addrB4+":5000", addrA4+":7600")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.Write(buf)
			time.Sleep(100 * time.Microsecond)
		}
	}()
	lab.Eventually(t, 5*time.Second, "the stream arrives", func() error {
		if got.Load() < 100 {
			return errors.New("fewer than 100 datagrams yet")
		}
		return nil
	})
	client := control.NewClient(l.socket())
	defer client.Close()
	start := time.Now()
	if err := client.Do(context.Background(), control.BlockAddCall(netip.MustParsePrefix(addrB4+"/32"), 0, ""), nil); err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	before := got.Load()
	time.Sleep(200 * time.Millisecond) // the stream goes on, blocked, for a while
	close(stop)
	<-done
	lastAt := time.Unix(0, last.Load())
	t.Logf("block call took %s; the last datagram arrived %s after the call started", returned.Sub(start), lastAt.Sub(start))
	if lastAt.After(returned) {
		t.Errorf("a datagram arrived %s after the block call returned (%d before, %d after)", lastAt.Sub(returned), before, got.Load())
	}
}

// TestDroppedFlowsOverIPFIX: packets XDP drops reach the collector as a
// flow whose forwardingStatus (IE 89) is 128, dropped.
func TestDroppedFlowsOverIPFIX(t *testing.T) {
	l := newLab(t)
	const collectorPort = 4739
	collector := lab.UDPConn(t, l.A, fmt.Sprintf("127.0.0.1:%d", collectorPort), "")
	l.startAgent(t, fmt.Sprintf("[agent.collector]\neviction_timeout = \"1s\"\n[agent.ipfix]\nhost = \"127.0.0.1\"\nport = %d\n", collectorPort))
	l.rfm(t, "block", "add", addrB4)
	const n = 20
	l.sendFromB(t, addrB4+":5000", addrA4+":7800", n)
	templates := netflow.CreateTemplateSystem()
	collector.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 65535)
	for {
		k, err := collector.Read(buf)
		if err != nil {
			t.Fatalf("no IPFIX record of the dropped flow within 30 s: %v", err)
		}
		var v9 netflow.NFv9Packet
		var pkt netflow.IPFIXPacket
		if err := netflow.DecodeMessageVersion(bytes.NewBuffer(buf[:k]), templates, &v9, &pkt); err != nil {
			continue // data before its template: the next message repeats it
		}
		for _, fs := range pkt.FlowSets {
			data, ok := fs.(netflow.DataFlowSet)
			if !ok {
				continue
			}
			for _, r := range data.Records {
				f := map[uint16][]byte{}
				for _, v := range r.Values {
					if b, ok := v.Value.([]byte); ok {
						f[v.Type] = b
					}
				}
				if src, ok := netip.AddrFromSlice(f[8]); !ok || src != netip.MustParseAddr(addrB4) || be(f[11]) != 7800 {
					continue
				}
				if fwd, pkts := be(f[89]), be(f[2]); fwd != 128 || pkts != n {
					t.Fatalf("dropped flow: forwardingStatus %d, %d packets; want 128 and %d", fwd, pkts, n)
				}
				return
			}
		}
	}
}

func be(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// rfmErr runs the CLI against the agent's control socket and returns its
// output and error (for commands expected to fail).
func (l *testbed) rfmErr(args ...string) (string, error) {
	out, err := exec.Command(rfmBinary, append(args, "--socket", l.socket())...).CombinedOutput()
	return string(out), err
}

// TestReloadTurnsXDPOnAndOff: the agent starts without XDP; a reload
// turns it on (the program is on the interface when rfm reload returns,
// its rule drops), a reload changes its mode (the counts go on), one
// that names an interface another XDP program holds is rejected whole
// (the interface it could attach stays without the program), and a
// reload turns it off again. While on, a reload adding an interface
// another program holds is rejected with its rules, and interfaces are
// added and removed. Through all of it every packet B sends
// counts once in rfm_interface_rx_packets_total.
func TestReloadTurnsXDPOnAndOff(t *testing.T) {
	l := newLab(t)
	const rule = `[[agent.xdp.rules]]
name = "no-7101"
action = "drop"
proto = "udp"
dst_ports = ["7101"]
`
	l.xdpIfaces = "[]"
	path := l.writeConfig(t, rule)
	p := lab.Start(t, "rfm agent", l.A, rfmBinary, "agent", "-c", path, "--log-level", "debug")
	lab.Eventually(t, 20*time.Second, "TC attached to "+devA, func() error {
		if p.Exited() {
			t.Fatalf("agent exited at start: %v; output:\n%s", p.Err(), p.Output())
		}
		if v, err := l.metric(t, "rfm_interface_attached", map[string]string{"ifname": devA}); err != nil || v != 1 {
			return fmt.Errorf("rfm_interface_attached = %v (%v)", v, err)
		}
		return nil
	})
	rx := func() float64 {
		v, err := l.metric(t, "rfm_interface_rx_packets_total", map[string]string{"ifname": devA, "family": "ipv4"})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	sent := 0.0
	rx0 := rx()
	const n = 30
	send := func(port, want int, when string) {
		t.Helper()
		if got := l.try(t, port, n); got != want {
			t.Errorf("%s, port %d: %d of %d arrived, want %d", when, port, got, n, want)
		}
		sent += n
	}
	reload := func(when string) string {
		t.Helper()
		out, err := l.rfmErr("reload")
		if err != nil {
			t.Fatalf("%s: rfm reload: %v: %s", when, err, out)
		}
		return out
	}
	dropped := func() float64 {
		v, _ := l.metric(t, "rfm_xdp_packets_total", map[string]string{"ifname": devA, "rule": "no-7101", "action": "drop"})
		return v
	}

	// Off.
	if id := xdpProgID(t, l.A, devA); id != 0 {
		t.Fatalf("XDP program %d on %s with agent.xdp.interfaces empty", id, devA)
	}
	send(7101, n, "XDP off")
	if out, err := l.rfmErr("block", "list"); err == nil {
		t.Errorf("rfm block list with XDP off succeeded: %s", out)
	}

	// On.
	l.xdpIfaces = fmt.Sprintf("[%q]", devA)
	l.writeConfig(t, rule)
	if out := reload("off -> on"); !strings.Contains(out, "agent.xdp.interfaces") || strings.Contains(out, "restart") {
		t.Errorf("off -> on: reload did not apply agent.xdp.interfaces: %s", out)
	}
	if xdpProgID(t, l.A, devA) == 0 || xdpAttachMode(t, l.A, devA) != nlXDPAttachedDrv {
		t.Fatalf("off -> on: no native XDP program on %s when rfm reload returned", devA)
	}
	if v, err := l.metric(t, "rfm_xdp_attached", map[string]string{"ifname": devA}); err != nil || v != 1 {
		t.Errorf("off -> on: rfm_xdp_attached = %v (%v)", v, err)
	}
	send(7101, 0, "XDP on")
	send(7100, n, "XDP on")
	if v := dropped(); v != n {
		t.Errorf("XDP on: rfm_xdp_packets_total{no-7101,drop} = %v, want %d", v, n)
	}
	l.rfm(t, "block", "list")

	// Mode: native -> generic, the rule's counts go on.
	path = l.writeConfig(t, rule)
	cfg, _ := os.ReadFile(path)
	os.WriteFile(path, bytes.Replace(cfg, []byte(`mode = "native"`), []byte(`mode = "generic"`), 1), 0o644)
	if out := reload("native -> generic"); !strings.Contains(out, "agent.xdp.mode") || strings.Contains(out, "restart") {
		t.Errorf("native -> generic: reload did not apply agent.xdp.mode: %s", out)
	}
	if m := xdpAttachMode(t, l.A, devA); m != nlXDPAttachedSKB {
		t.Errorf("after the mode reload: attach mode %d, want %d (generic)", m, nlXDPAttachedSKB)
	}
	send(7101, 0, "generic")
	if v, err := l.metric(t, "rfm_xdp_attached", map[string]string{"ifname": devA, "mode": "generic"}); err != nil || v != 1 {
		t.Errorf("generic: rfm_xdp_attached{mode=generic} = %v (%v), want 1", v, err)
	}
	// Generic mode attaches the skb GSO recorder (tp_btf), with the
	// capabilities the running agent kept.
	if v, err := l.metric(t, "rfm_errors_total", map[string]string{"subsystem": "xdp"}); err != nil || v != 0 {
		t.Errorf("generic: rfm_errors_total{subsystem=xdp} = %v (%v), want 0", v, err)
	}
	if v := dropped(); v != 2*n {
		t.Errorf("generic: rfm_xdp_packets_total{no-7101,drop} = %v, want %d (counts kept across the mode change)", v, 2*n)
	}
	l.writeConfig(t, rule) // back to native for what follows
	reload("generic -> native")
	if m := xdpAttachMode(t, l.A, devA); m != nlXDPAttachedDrv {
		t.Errorf("back to native: attach mode %d", m)
	}

	// All or nothing: off, then on for devA and an interface someone
	// else's XDP program holds: rejected, devA stays without the program.
	l.xdpIfaces = "[]"
	l.writeConfig(t, rule)
	reload("on -> off")
	if id := xdpProgID(t, l.A, devA); id != 0 {
		t.Fatalf("on -> off: XDP program %d still on %s", id, devA)
	}
	send(7101, n, "XDP off again")
	lab.Run(t, "ip", "-n", l.A, "link", "add", "rfmqx0", "type", "veth", "peer", "name", "rfmqx1")
	foreign, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "their_fw", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	if err := lab.InNetns(l.A, func() error {
		link, err := netlink.LinkByName("rfmqx0")
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFd(link, foreign.FD())
	}); err != nil {
		t.Fatal(err)
	}
	l.xdpIfaces = fmt.Sprintf("[%q, %q]", devA, "rfmqx0")
	l.writeConfig(t, rule)
	// The running agent has dropped CAP_SYS_ADMIN, which reading another
	// program's name needs: the id names it.
	theirs := fmt.Sprintf("id %d", xdpProgID(t, l.A, "rfmqx0"))
	if out, err := l.rfmErr("reload"); err == nil || !strings.Contains(out, theirs) {
		t.Errorf("reload over a foreign XDP program: err %v, output does not name %s: %s", err, theirs, out)
	}
	if id := xdpProgID(t, l.A, "rfmqx0"); fmt.Sprintf("id %d", id) != theirs {
		t.Errorf("the foreign program was replaced: %s before, id %d after", theirs, id)
	}
	if id := xdpProgID(t, l.A, devA); id != 0 {
		t.Errorf("rejected reload left XDP program %d on %s", id, devA)
	}
	send(7101, n, "after the rejected reload")

	// On again, then off by reload, and the counts add up.
	l.xdpIfaces = fmt.Sprintf("[%q]", devA)
	l.writeConfig(t, rule)
	reload("off -> on again")
	send(7101, 0, "XDP on again")
	if v := dropped(); v != n {
		t.Errorf("XDP on again: rfm_xdp_packets_total{no-7101,drop} = %v, want %d (a new program counts from 0)", v, n)
	}

	// While on: a reload adding the foreign interface and a new rule is
	// rejected whole (the old rule stays in effect, the new one is not);
	// one adding the free end of that pair attaches it.
	l.xdpIfaces = fmt.Sprintf("[%q, %q]", devA, "rfmqx0")
	l.writeConfig(t, rule+strings.ReplaceAll(rule, "7101", "7102"))
	if out, err := l.rfmErr("reload"); err == nil || !strings.Contains(out, theirs) {
		t.Errorf("on, reload over a foreign XDP program: err %v, output does not name %s: %s", err, theirs, out)
	}
	send(7102, n, "after the rejected reload while on")
	send(7101, 0, "after the rejected reload while on")
	l.xdpIfaces = fmt.Sprintf("[%q, %q]", devA, "rfmqx1")
	l.writeConfig(t, rule)
	if out := reload("on, add rfmqx1"); !strings.Contains(out, "agent.xdp.interfaces") {
		t.Errorf("on, add rfmqx1: %s", out)
	}
	if xdpProgID(t, l.A, "rfmqx1") == 0 {
		t.Errorf("on, add rfmqx1: no program on rfmqx1 when rfm reload returned")
	}
	l.xdpIfaces = fmt.Sprintf("[%q]", devA)
	l.writeConfig(t, rule)
	reload("on, remove rfmqx1")
	if id := xdpProgID(t, l.A, "rfmqx1"); id != 0 {
		t.Errorf("on, remove rfmqx1: program %d still on it", id)
	}
	if v := dropped(); v != 2*n {
		t.Errorf("XDP on again: rfm_xdp_packets_total{no-7101,drop} = %v, want %d", v, 2*n)
	}

	l.xdpIfaces = "[]"
	l.writeConfig(t, rule)
	reload("on -> off again")
	if id := xdpProgID(t, l.A, devA); id != 0 {
		t.Errorf("on -> off: XDP program %d still on %s", id, devA)
	}
	if v, _ := l.metric(t, "rfm_xdp_attached", nil); v != 0 {
		t.Errorf("XDP off: rfm_xdp_attached = %v", v)
	}
	send(7100, n, "XDP off at the end")
	lab.Eventually(t, 5*time.Second, "rx counts every packet sent once", func() error {
		if d := rx() - rx0; d != sent {
			return fmt.Errorf("rfm_interface_rx_packets_total grew by %v, sent %v", d, sent)
		}
		return nil
	})
	if p.Exited() {
		t.Fatalf("agent exited: %v\n%s", p.Err(), p.Output())
	}
}

// IFLA_XDP_ATTACHED values.
const (
	nlXDPAttachedDrv = 1
	nlXDPAttachedSKB = 2
)
