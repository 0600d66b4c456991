// SPDX-License-Identifier: AGPL-3.0-only

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ipLink runs `ip -n ns link ARGS...`.
func ipLink(t testing.TB, ns string, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns, "link"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s link %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
}

// addVethInNs creates a veth pair with both ends in ns, up, and removes it
// when the test ends (if it still exists).
func addVethInNs(t testing.TB, ns, a, b string) {
	t.Helper()
	ipLink(t, ns, "add", a, "type", "veth", "peer", "name", b)
	ipLink(t, ns, "set", a, "up")
	ipLink(t, ns, "set", b, "up")
	t.Cleanup(func() { exec.Command("ip", "-n", ns, "link", "del", a).Run() })
	waitTransmitting(t, ns, a)
	waitTransmitting(t, ns, b)
}

// waitTransmitting waits until dev has carrier and its qdisc is in place.
// The kernel activates a device's qdisc from the linkwatch work, up to a
// second after the link comes up; until then its noop qdisc drops every
// frame after the TC egress hook saw (and rfm counted) it.
func waitTransmitting(t testing.TB, ns, dev string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("ip", "-n", ns, "link", "show", "dev", dev).CombinedOutput()
		if err == nil && strings.Contains(string(out), "state UP") && !strings.Contains(string(out), "qdisc noop") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s not transmitting after 5s: %s", dev, ns, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sendRaw writes count non-IP frames out of dev.
func sendRaw(t testing.TB, ns, dev string, count int) {
	t.Helper()
	src := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	dst := net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	sendNonIP(t, ns, dev, src, dst, count)
}

func attached(m metrics, dev string) bool { return m.has("rfm_interface_attached", "ifname", dev) }

// noSeriesOf reports whether no rfm_ series is labelled with ifname=dev.
func noSeriesOf(m metrics, dev string) bool {
	for _, s := range m {
		if strings.HasPrefix(s.Name, "rfm_") && s.Labels["ifname"] == dev {
			return false
		}
	}
	return true
}

// TestHotplugWildcard: with ["*"] an interface created after start is
// attached and counts; when it is deleted it leaves the metrics. Loopback
// is never attached.
func TestHotplugWildcard(t *testing.T) {
	l := newLab(t, labOptions{})
	a := startAgent(t, l.nsA, agentConfig{interfaces: []string{"*"}, sampleRate: 1}.toml())
	m := a.waitFor(t, 5*time.Second, l.vethA+" attached", func(m metrics) bool { return attached(m, l.vethA) })
	if attached(m, "lo") {
		t.Errorf(`"*" attached loopback:\n%s`, m.dump("rfm_interface_attached"))
	}

	hp, peer := fmt.Sprintf("hpw%d", labCounter.Load()), fmt.Sprintf("hpv%d", labCounter.Load())
	addVethInNs(t, l.nsA, hp, peer)
	a.waitFor(t, 5*time.Second, "new veth attached", func(m metrics) bool { return attached(m, hp) && attached(m, peer) })

	const n = 25
	sendRaw(t, l.nsA, hp, n)
	a.waitFor(t, 5*time.Second, "frames counted on the new veth", func(m metrics) bool {
		return m.sum("rfm_interface_tx_packets_total", "ifname", hp, "family", "other") == n &&
			m.sum("rfm_interface_rx_packets_total", "ifname", peer, "family", "other") == n
	})
	// A flow on the new interface exists before it goes away...
	sendIPv4Raw(t, l.nsA, hp, 3)
	a.waitFor(t, 5*time.Second, "flow on the new veth", func(m metrics) bool {
		return m.sum("rfm_flow_packets", "ifname", hp) == 3
	})

	// ...and deleting the interface removes every series naming it.
	ipLink(t, l.nsA, "del", hp)
	a.waitFor(t, 5*time.Second, "series of the deleted veth gone", func(m metrics) bool {
		return noSeriesOf(m, hp) && noSeriesOf(m, peer) && attached(m, l.vethA)
	})
}

// sendIPv4Raw writes count copies of one IPv4/UDP frame out of dev.
func sendIPv4Raw(t testing.TB, ns, dev string, count int) {
	t.Helper()
	frame := taggedUDP4Frame(net.HardwareAddr{0x02, 0, 0, 0, 0, 2}, net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, nil,
		netip.MustParseAddr("198.18.250.1"), netip.MustParseAddr("198.18.250.2"), 4000, 5000, 20)
	sendFrames(t, ns, dev, frame, count)
}

// TestHotplugPattern: a glob selects interfaces by name as they appear,
// follows renames in and out of the pattern, and ignores the rest.
func TestHotplugPattern(t *testing.T) {
	l := newLab(t, labOptions{})
	n := labCounter.Load()
	a := startAgent(t, l.nsA, agentConfig{interfaces: []string{"hpp*"}, sampleRate: 1}.toml())
	in, other := fmt.Sprintf("hpp%d", n), fmt.Sprintf("zzz%d", n)
	addVethInNs(t, l.nsA, in, other)
	a.waitFor(t, 5*time.Second, in+" attached, "+other+" not", func(m metrics) bool {
		return attached(m, in) && !attached(m, other) && !attached(m, l.vethA)
	})

	// Rename out of the pattern: detached (a link must be down to rename).
	renamed := fmt.Sprintf("out%d", n)
	ipLink(t, l.nsA, "set", in, "down")
	ipLink(t, l.nsA, "set", in, "name", renamed)
	a.waitFor(t, 5*time.Second, "renamed-away link detached", func(m metrics) bool {
		return !attached(m, in) && !attached(m, renamed)
	})
	// And back in.
	ipLink(t, l.nsA, "set", renamed, "name", in)
	ipLink(t, l.nsA, "set", in, "up")
	a.waitFor(t, 5*time.Second, "renamed-back link attached", func(m metrics) bool { return attached(m, in) })

	// Link down and up keeps it attached and counting.
	ipLink(t, l.nsA, "set", in, "down")
	ipLink(t, l.nsA, "set", in, "up")
	sendRaw(t, l.nsA, in, 4)
	a.waitFor(t, 5*time.Second, "counting after down/up", func(m metrics) bool {
		return m.sum("rfm_interface_tx_packets_total", "ifname", in, "family", "other") == 4
	})
}

// TestNamedInterfaceReturns: a named interface that is deleted is
// detached, and attached again when an interface of that name returns.
func TestNamedInterfaceReturns(t *testing.T) {
	l := newLab(t, labOptions{})
	n := labCounter.Load()
	named, peer := fmt.Sprintf("nmd%d", n), fmt.Sprintf("nmp%d", n)
	addVethInNs(t, l.nsA, named, peer)
	a := startAgent(t, l.nsA, agentConfig{interfaces: []string{named}, sampleRate: 1}.toml())
	a.waitFor(t, 5*time.Second, named+" attached", func(m metrics) bool { return attached(m, named) && !attached(m, peer) })

	for round := 0; round < 3; round++ {
		ipLink(t, l.nsA, "del", named)
		a.waitFor(t, 5*time.Second, "deleted interface detached", func(m metrics) bool { return noSeriesOf(m, named) })
		addVethInNs(t, l.nsA, named, peer)
		a.waitFor(t, 5*time.Second, "returned interface attached", func(m metrics) bool { return attached(m, named) })
		sendRaw(t, l.nsA, named, 6)
		// Counters start from zero on the new interface.
		a.waitFor(t, 5*time.Second, "returned interface counts", func(m metrics) bool {
			return m.sum("rfm_interface_tx_packets_total", "ifname", named, "family", "other") == 6
		})
	}
}

// TestReload: SIGHUP applies a valid file without losing active flows,
// and an invalid one is rejected with one log line while the running
// config stays in effect.
func TestReload(t *testing.T) {
	l := newLab(t, labOptions{})
	recv := listenUDP(t, l.nsB, udpPort)
	cfg := agentConfig{interfaces: []string{l.vethA}, sampleRate: 1, evictionTimeout: "60s"}
	path := writeConfig(t, cfg.toml())
	a := startAgentAt(t, l.nsA, path)

	dialUDP(t, l.nsA, l.ipA, l.ipB, 40000, udpPort, false).send(t, 10, 50)
	recv.waitCount(t, 10)
	a.waitFor(t, 5*time.Second, "flow before reload", func(m metrics) bool { return m.sum("rfm_flow_sampled_packets") == 10 })

	// Valid change of the flow table: active flows stay.
	cfg.maxFlows, cfg.evictionTimeout = 1000, "90s"
	rewriteConfig(t, path, cfg.toml())
	a.Signal(syscall.SIGHUP)
	m := a.waitFor(t, 5*time.Second, "new max_flows", func(m metrics) bool {
		return m.sum("rfm_collector_max_flows") == 1000
	})
	if got := m.sum("rfm_flow_sampled_packets"); got != 10 {
		t.Errorf("active flow lost across reload: sampled packets %v, want 10", got)
	}
	// A new sample rate applies at once; flows sampled at the old rate
	// end so no estimate mixes two rates.
	cfg.sampleRate = 10
	rewriteConfig(t, path, cfg.toml())
	a.Signal(syscall.SIGHUP)
	a.waitFor(t, 5*time.Second, "new sample rate, old flows ended", func(m metrics) bool {
		return m.sum("rfm_sample_rate") == 10 && m.sum("rfm_flow_sampled_packets") == 0
	})

	// Invalid file: rejected, old config keeps running.
	rewriteConfig(t, path, "[agent]\ninterfaces = [\"x\"]\n[agent.bpf]\nsample_rate = 0\n")
	a.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(a.Output(), "reload rejected") {
		if time.Now().After(deadline) {
			t.Fatalf("no rejection logged; output:\n%s", a.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var rejection string
	for _, line := range strings.Split(a.Output(), "\n") {
		if strings.Contains(line, "reload rejected") {
			rejection = line
		}
	}
	if !strings.Contains(rejection, "agent.bpf.sample_rate") {
		t.Errorf("rejection does not name the key: %q", rejection)
	}
	m = a.waitFor(t, 5*time.Second, "old config still in effect", func(m metrics) bool { return m.sum("rfm_sample_rate") == 10 })
	if !attached(m, l.vethA) {
		t.Errorf("interface detached after a rejected reload")
	}
}

// TestCapabilitiesDropped: once running, the agent holds only CAP_BPF,
// CAP_NET_ADMIN and CAP_PERFMON, with no_new_privs set, and still
// attaches interfaces that appear (which needs the first two).
func TestCapabilitiesDropped(t *testing.T) {
	l := newLab(t, labOptions{})
	a := startAgent(t, l.nsA, agentConfig{interfaces: []string{"*"}, sampleRate: 1}.toml())
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"CapEff":     "000000c000001000", // bits 12 (NET_ADMIN), 38 (PERFMON), 39 (BPF)
		"CapPrm":     "000000c000001000",
		"CapBnd":     "000000c000001000",
		"CapInh":     "0000000000000000",
		"CapAmb":     "0000000000000000",
		"NoNewPrivs": "1",
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if w, known := want[k]; ok && known {
			if v = strings.TrimSpace(v); v != w {
				t.Errorf("%s = %s, want %s", k, v, w)
			}
		}
	}
	hp, peer := fmt.Sprintf("cap%d", labCounter.Load()), fmt.Sprintf("cpp%d", labCounter.Load())
	addVethInNs(t, l.nsA, hp, peer)
	a.waitFor(t, 5*time.Second, "attach after dropping capabilities", func(m metrics) bool { return attached(m, hp) })
}

func rewriteConfig(t testing.TB, path, text string) {
	t.Helper()
	// Keep the control socket writeConfig chose.
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if i := strings.Index(string(old), "[agent.control]"); i >= 0 && !strings.Contains(text, "[agent.control]") {
		text += "\n" + string(old[i:])
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestInterfaceLimit: with agent.bpf.max_interfaces = 2 and ["*"], the
// lab's veth and one end of a new pair are attached; the other end is
// refused, counted, and not attached.
func TestInterfaceLimit(t *testing.T) {
	l := newLab(t, labOptions{})
	cfg := strings.Replace(agentConfig{interfaces: []string{"*"}}.toml(),
		"ring_buf_size = 262144\n", "ring_buf_size = 262144\nmax_interfaces = 2\n", 1)
	a := startAgent(t, l.nsA, cfg)
	a.waitFor(t, 5*time.Second, l.vethA+" attached", func(m metrics) bool { return attached(m, l.vethA) })

	hp, peer := fmt.Sprintf("lmw%d", labCounter.Load()), fmt.Sprintf("lmv%d", labCounter.Load())
	addVethInNs(t, l.nsA, hp, peer)
	m := a.waitFor(t, 5*time.Second, "one new veth attached and one refused", func(m metrics) bool {
		return (attached(m, hp) || attached(m, peer)) && m.sum("rfm_interface_limit_refusals_total") >= 1
	})
	if n := m.sum("rfm_interface_attached"); n != 2 {
		t.Fatalf("%v interfaces attached with max_interfaces = 2:\n%s", n, m.dump("rfm_interface_attached"))
	}
}
