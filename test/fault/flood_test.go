// SPDX-License-Identifier: AGPL-3.0-only

package fault

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// blast sends UDP from A to the sink from several goroutines, each on its
// own socket, until stop is closed; it returns the datagrams written.
func (l *testbed) blast(t testing.TB, senders, firstPort int, stop <-chan struct{}) func() uint64 {
	t.Helper()
	return l.blastFlows(t, senders, 1, firstPort, stop)
}

// blastFlows is blast with flows sockets per sender (source ports
// firstPort + sender*flows + k), written to in turn, so consecutive
// datagrams of a sender are different flows.
func (l *testbed) blastFlows(t testing.TB, senders, flows, firstPort int, stop <-chan struct{}) func() uint64 {
	t.Helper()
	var wg sync.WaitGroup
	counts := make([]uint64, senders)
	for i := 0; i < senders; i++ {
		conns := make([]*net.UDPConn, flows)
		for k := range conns {
			conns[k] = lab.UDPConn(t, l.A, fmt.Sprintf("%s:%d", addrA, firstPort+i*flows+k), fmt.Sprintf("%s:%d", addrB, sinkPort))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				select {
				case <-stop:
					return
				default:
				}
				for j := 0; j < 256; j++ {
					if _, err := conns[j%flows].Write(buf); err == nil {
						counts[i]++
					}
				}
			}
		}()
	}
	return func() uint64 {
		wg.Wait()
		var n uint64
		for _, c := range counts {
			n += c
		}
		return n
	}
}

// TestRingBufferFlood samples every packet into a 4 KiB ring while
// senders blast far more than the consumer drains. Must survive: the
// agent answers /metrics throughout, its interface counters equal the
// kernel's own, ring drops are counted, RSS stays under 64 MiB. Each
// sender alternates between 8 flows: packets of one flow in a row share
// an event, and a flood of few flows would not fill the ring.
func TestRingBufferFlood(t *testing.T) {
	l := newLab(t)
	l.sink(t)
	a := startAgent(t, l.A, agentConfig{sampleRate: 1, ringBufSize: 4096})
	before := kernelStats(t, l.A, devA, "tx_packets", "tx_dropped", "rx_packets", "rx_dropped")
	m0 := a.mustScrape(t)

	duration := 3 * time.Second
	if long() {
		duration = 60 * time.Second
	}
	stop := make(chan struct{})
	wait := l.blastFlows(t, 4, 8, 20000, stop)
	deadline := time.Now().Add(duration)
	var maxRSS uint64
	for time.Now().Before(deadline) {
		a.mustScrape(t) // answers while flooded
		maxRSS = max(maxRSS, rssBytes(t, a.Pid()))
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	sent := wait()

	after := kernelStats(t, l.A, devA, "tx_packets", "tx_dropped", "rx_packets", "rx_dropped")
	// TC egress runs before the veth hands the packet over, so a packet
	// the peer drops still passed the agent: tx_packets + tx_dropped.
	wantTx := after["tx_packets"] + after["tx_dropped"] - before["tx_packets"] - before["tx_dropped"]
	wantRx := after["rx_packets"] + after["rx_dropped"] - before["rx_packets"] - before["rx_dropped"]
	m := a.waitFor(t, 10*time.Second, "interface counters equal to the kernel's", func(m metrics) error {
		gotTx := ifaceTotal(m, "rfm_interface_tx_packets_total", devA) - ifaceTotal(m0, "rfm_interface_tx_packets_total", devA)
		gotRx := ifaceTotal(m, "rfm_interface_rx_packets_total", devA) - ifaceTotal(m0, "rfm_interface_rx_packets_total", devA)
		if gotTx != wantTx || gotRx != wantRx {
			return fmt.Errorf("agent tx %d rx %d, kernel tx %d rx %d", gotTx, gotRx, wantTx, wantRx)
		}
		return nil
	})
	drops := m.sum("rfm_collector_dropped_events_total")
	t.Logf("%s flood: %d datagrams written, kernel tx %d, ring drops %.0f, max RSS %.1f MiB",
		duration, sent, wantTx, drops, float64(maxRSS)/(1<<20))
	if drops <= 0 {
		t.Errorf("rfm_collector_dropped_events_total = %v after a flood into a 4 KiB ring, want > 0", drops)
	}
	if maxRSS >= 64<<20 {
		t.Errorf("agent RSS reached %.1f MiB during the flood, want < 64 MiB", float64(maxRSS)/(1<<20))
	}
	if a.Exited() {
		t.Fatalf("agent exited during the flood")
	}
}

// TestSIGKILLLeavesNothingAttached kills the agent at a random moment
// under traffic. Must hold: TCX links die with the process (no program
// left on the interface), and a restarted agent attaches and counts
// exactly.
func TestSIGKILLLeavesNothingAttached(t *testing.T) {
	l := newLab(t)
	l.sink(t)
	idx := ifindex(t, l.A, devA)
	a := startAgent(t, l.A, agentConfig{sampleRate: 1})
	if in, eg := lab.AttachedPrograms(t, l.A, idx); in != 1 || eg != 1 {
		t.Fatalf("running agent: %d ingress, %d egress programs, want 1 each", in, eg)
	}
	stop := make(chan struct{})
	wait := l.blast(t, 2, 21000, stop)
	time.Sleep(time.Duration(100+rand.IntN(900)) * time.Millisecond) // the random moment
	st, _ := a.signal(t, syscall.SIGKILL, 5*time.Second)
	close(stop)
	wait()
	t.Logf("killed: %v", st)
	// The kernel releases the links as the process's fds close.
	deadline := time.Now().Add(5 * time.Second)
	for {
		in, eg := lab.AttachedPrograms(t, l.A, idx)
		if in == 0 && eg == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGKILL %d ingress, %d egress programs still attached to %s", in, eg, devA)
		}
		time.Sleep(50 * time.Millisecond)
	}

	b := startAgent(t, l.A, agentConfig{sampleRate: 1})
	if in, eg := lab.AttachedPrograms(t, l.A, idx); in != 1 || eg != 1 {
		t.Fatalf("restarted agent: %d ingress, %d egress programs, want 1 each", in, eg)
	}
	const n = 200
	l.sendFlow(t, 22000, n, 32)
	b.waitFor(t, 10*time.Second, "restarted agent counts the burst", func(m metrics) error {
		if got := m.sum("rfm_interface_tx_packets_total", "ifname", devA, "family", "ipv4"); got != n {
			return fmt.Errorf("tx ipv4 packets %v, want %d", got, n)
		}
		return nil
	})
}

// TestSecondAgent starts a second agent on the same interface. TCX takes
// several programs per hook and rfm's return TCX_NEXT, so both attach
// and both count: they coexist. Must hold: the first agent's counts stay
// exact while the second runs, and stopping the second leaves the first
// attached and counting.
func TestSecondAgent(t *testing.T) {
	l := newLab(t)
	l.sink(t)
	idx := ifindex(t, l.A, devA)
	first := startAgent(t, l.A, agentConfig{sampleRate: 1})
	second := startAgent(t, l.A, agentConfig{sampleRate: 1, metricsPort: 9670})
	if in, eg := lab.AttachedPrograms(t, l.A, idx); in != 2 || eg != 2 {
		t.Fatalf("two agents: %d ingress, %d egress programs, want 2 each", in, eg)
	}
	const n = 300
	l.sendFlow(t, 23000, n, 32)
	for _, a := range []*agent{first, second} {
		a.waitFor(t, 10*time.Second, "both agents count exactly", func(m metrics) error {
			if got := m.sum("rfm_interface_tx_packets_total", "ifname", devA, "family", "ipv4"); got != n {
				return fmt.Errorf("agent %s: tx ipv4 packets %v, want %d", a.metrics, got, n)
			}
			return nil
		})
	}
	if st, took := second.signal(t, syscall.SIGTERM, 5*time.Second); !st.Success() {
		t.Fatalf("second agent exit after %s: %v", took, st)
	}
	if in, eg := lab.AttachedPrograms(t, l.A, idx); in != 1 || eg != 1 {
		t.Fatalf("after the second agent stopped: %d ingress, %d egress programs, want 1 each", in, eg)
	}
	l.sendFlow(t, 23001, n, 32)
	first.waitFor(t, 10*time.Second, "first agent still counts", func(m metrics) error {
		if got := m.sum("rfm_interface_tx_packets_total", "ifname", devA, "family", "ipv4"); got != 2*n {
			return fmt.Errorf("tx ipv4 packets %v, want %d", got, 2*n)
		}
		return nil
	})
}
