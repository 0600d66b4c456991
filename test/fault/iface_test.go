// SPDX-License-Identifier: AGPL-3.0-only

package fault

import (
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// exactBurst sends n datagrams and waits until the agent's tx ipv4 count
// on devA grew by exactly n.
func exactBurst(t *testing.T, l *testbed, a *agent, sport, n int) {
	t.Helper()
	m0 := a.mustScrape(t)
	base := m0.sum("rfm_interface_tx_packets_total", "ifname", devA, "family", "ipv4")
	l.sendFlow(t, sport, n, 32)
	a.waitFor(t, 10*time.Second, fmt.Sprintf("burst of %d counted", n), func(m metrics) error {
		if got := m.sum("rfm_interface_tx_packets_total", "ifname", devA, "family", "ipv4") - base; got != float64(n) {
			return fmt.Errorf("tx ipv4 packets +%v, want +%d", got, n)
		}
		return nil
	})
}

// TestLinkDownUpAndMTU flaps the monitored link and changes its MTU under
// load. Must hold: the agent keeps running and answering, stays attached
// (same ifindex, one program per hook), and counts exactly afterwards.
func TestLinkDownUpAndMTU(t *testing.T) {
	l := newLab(t)
	l.sink(t)
	idx := ifindex(t, l.A, devA)
	a := startAgent(t, l.A, agentConfig{interfaces: `"*"`, sampleRate: 1})
	stop := make(chan struct{})
	wait := l.blast(t, 2, 24000, stop)
	rounds := 3
	if long() {
		rounds = 50
	}
	for i := 0; i < rounds; i++ {
		lab.Run(t, "ip", "-n", l.A, "link", "set", devA, "down")
		a.mustScrape(t)
		lab.Run(t, "ip", "-n", l.A, "link", "set", devA, "up")
		for _, mtu := range []int{1280, 9000, 1500} {
			lab.Run(t, "ip", "-n", l.A, "link", "set", devA, "mtu", strconv.Itoa(mtu))
		}
		a.mustScrape(t)
	}
	close(stop)
	wait()
	if a.Exited() {
		t.Fatalf("agent exited during link churn: %v", a.State())
	}
	if in, eg := lab.AttachedPrograms(t, l.A, idx); in != 1 || eg != 1 {
		t.Fatalf("after link churn: %d ingress, %d egress programs on %s, want 1 each", in, eg, devA)
	}
	exactBurst(t, l, a, 24100, 100)
}

var (
	hotplugOnce sync.Once
	hotplugHave bool
)

// hotplugSupported answers once per run whether `rfm agent` has
// interface hotplug, by probing with a wildcard agent of its own in A.
func hotplugSupported(t *testing.T, l *testbed) bool {
	t.Helper()
	hotplugOnce.Do(func() {
		p := startAgent(t, l.A, agentConfig{interfaces: `"*"`, sampleRate: 100, metricsPort: 9671})
		hotplugHave = hotplugProbe(t, l, p)
		p.signal(t, syscall.SIGTERM, 5*time.Second)
		lab.Run(t, "ip", "-n", l.A, "link", "del", "rfmfP")
	})
	return hotplugHave
}

// hotplugProbe creates a veth pair in A and reports whether the agent
// attached its A end within 3 s: interface hotplug is in `rfm agent`.
func hotplugProbe(t *testing.T, l *testbed, a *agent) bool {
	t.Helper()
	lab.Run(t, "ip", "-n", l.A, "link", "add", "rfmfP", "type", "veth", "peer", "name", "rfmfQ")
	lab.Run(t, "ip", "-n", l.A, "link", "set", "rfmfP", "up")
	lab.Run(t, "ip", "-n", l.A, "link", "set", "rfmfQ", "up")
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if m, err := a.scrape(); err == nil && m.sum("rfm_interface_attached", "ifname", "rfmfP") == 1 {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

const hotplugMissing = "rfm agent lacks interface hotplug (a new veth was not attached within 3 s); " +
	"this test exercises hotplug and runs once it lands"

// recreate builds the deleted devA/devB pair again with the same names,
// addresses and neighbours.
func (l *testbed) recreate(t *testing.T) {
	t.Helper()
	lab.Run(t, "ip", "link", "add", devA, "netns", l.A, "address", "02:00:c6:12:00:01", "type", "veth",
		"peer", "name", devB, "netns", l.B, "address", "02:00:c6:12:00:02")
	for _, s := range []struct{ ns, dev, own, peer, peerMAC string }{
		{l.A, devA, addrA, addrB, "02:00:c6:12:00:02"},
		{l.B, devB, addrB, addrA, "02:00:c6:12:00:01"},
	} {
		lab.Run(t, "ip", "netns", "exec", s.ns, "ethtool", "-K", s.dev, "gro", "off", "gso", "off", "tso", "off")
		lab.Run(t, "ip", "-n", s.ns, "link", "set", s.dev, "arp", "off")
		lab.Run(t, "ip", "-n", s.ns, "addr", "add", s.own+"/24", "dev", s.dev)
		lab.Run(t, "ip", "-n", s.ns, "neigh", "replace", s.peer, "lladdr", s.peerMAC, "dev", s.dev, "nud", "permanent")
		lab.Run(t, "ip", "-n", s.ns, "link", "set", s.dev, "up")
	}
}

// TestInterfaceRecreatedWildcard deletes the monitored interface under
// load and creates it again, with interfaces = ["*"]. Must hold: the
// agent keeps running; the vanished interface is detached and its series
// leave /metrics; the new one is attached within a second and counts
// exactly.
func TestInterfaceRecreatedWildcard(t *testing.T) {
	testInterfaceRecreated(t, `"*"`)
}

// TestInterfaceRecreatedNamed is the same with the interface named in the
// config: a named interface that returns is attached again.
func TestInterfaceRecreatedNamed(t *testing.T) {
	testInterfaceRecreated(t, strconv.Quote(devA))
}

func testInterfaceRecreated(t *testing.T, interfaces string) {
	l := newLab(t)
	l.sink(t)
	if !hotplugSupported(t, l) {
		t.Skip(hotplugMissing)
	}
	a := startAgent(t, l.A, agentConfig{interfaces: interfaces, sampleRate: 1})
	rounds := 1
	if long() {
		rounds = 20
	}
	for i := 0; i < rounds; i++ {
		stop := make(chan struct{})
		wait := l.blast(t, 2, 25000+10*i, stop)
		time.Sleep(200 * time.Millisecond) // load on the interface as it goes
		lab.Run(t, "ip", "-n", l.A, "link", "del", devA)
		close(stop)
		wait()
		a.waitFor(t, 5*time.Second, devA+" detached and its series gone", func(m metrics) error {
			for _, s := range m {
				if s.Labels["ifname"] == devA {
					return fmt.Errorf("%s%v still exported", s.Name, s.Labels)
				}
			}
			return nil
		})
		l.recreate(t)
		start := time.Now()
		lab.Eventually(t, 3*time.Second, devA+" attached again", func() error {
			m, err := a.scrape()
			if err != nil {
				return err
			}
			if m.sum("rfm_interface_attached", "ifname", devA) != 1 {
				return errNotYet
			}
			return nil
		})
		if took := time.Since(start); took > time.Second {
			t.Errorf("re-created %s attached after %s, want within 1s", devA, took)
		}
		if in, eg := lab.AttachedPrograms(t, l.A, ifindex(t, l.A, devA)); in != 1 || eg != 1 {
			t.Fatalf("re-created %s: %d ingress, %d egress programs, want 1 each", devA, in, eg)
		}
		exactBurst(t, l, a, 25500+i, 100)
	}
}

// TestInterfaceDeletedUnderLoad deletes the monitored interface while
// traffic flows, with the interface named and with ["*"]; no hotplug
// needed. Must hold: the agent keeps running and answering /metrics,
// and still exits 0 promptly on SIGTERM (detaching a vanished interface
// is not an error).
func TestInterfaceDeletedUnderLoad(t *testing.T) {
	for _, ifs := range []string{strconv.Quote(devA), `"*"`} {
		t.Run(ifs, func(t *testing.T) {
			l := newLab(t)
			l.sink(t)
			a := startAgent(t, l.A, agentConfig{interfaces: ifs, sampleRate: 1})
			stop := make(chan struct{})
			wait := l.blast(t, 2, 26000, stop)
			time.Sleep(200 * time.Millisecond)
			lab.Run(t, "ip", "-n", l.A, "link", "del", devA)
			close(stop)
			wait()
			for i := 0; i < 5; i++ {
				a.mustScrape(t)
				time.Sleep(100 * time.Millisecond)
			}
			if st, took := a.signal(t, syscall.SIGTERM, 5*time.Second); !st.Success() {
				t.Errorf("exit after SIGTERM (%s) with the interface gone: %v; output:\n%s", took, st, a.Output())
			}
		})
	}
}
