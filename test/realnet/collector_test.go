// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// nfcapd is an nfcapd collector on the loopback of a lab namespace,
// writing what it receives into dir.
type nfcapd struct {
	*lab.Process
	ns  string
	dir string
}

// startNfcapd runs nfcapd on 127.0.0.1:collectorPort in ns and waits until
// its socket is bound.
func startNfcapd(t *testing.T, ns string) *nfcapd {
	t.Helper()
	dir := t.TempDir()
	p := lab.Start(t, "nfcapd", ns, "nfcapd", "-w", dir, "-p", strconv.Itoa(collectorPort), "-b", "127.0.0.1", "-t", "3600")
	lab.Eventually(t, 10*time.Second, "nfcapd listening", func() error {
		if p.Exited() {
			t.Fatalf("nfcapd exited: %v; output:\n%s", p.Err(), p.Output())
		}
		if _, ok := udpRxQueue(t, ns, collectorPort); !ok {
			return fmt.Errorf("no socket on port %d yet", collectorPort)
		}
		return nil
	})
	return &nfcapd{Process: p, ns: ns, dir: dir}
}

// ipfixConfig is the agent config table that exports to startNfcapd's
// collector.
func ipfixConfig() string {
	return fmt.Sprintf("[agent.ipfix]\nhost = \"127.0.0.1\"\nport = %d\n", collectorPort)
}

// records stops the agent (which exports its active flows), lets nfcapd
// drain its socket, stops nfcapd and returns every record it wrote.
func (n *nfcapd) records(t *testing.T, a *agent) []map[string]any {
	t.Helper()
	if _, err := a.Stop(10 * time.Second); err != nil {
		t.Fatalf("stopping agent: %v", err)
	}
	lab.Eventually(t, 10*time.Second, "nfcapd to drain its socket", func() error {
		if rx, _ := udpRxQueue(t, n.ns, collectorPort); rx != 0 {
			return fmt.Errorf("%d bytes queued", rx)
		}
		return nil
	})
	if _, err := n.Stop(10 * time.Second); err != nil {
		t.Logf("nfcapd: %v", err)
	}
	return nfdumpRecords(t, n.dir)
}
