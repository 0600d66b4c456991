// SPDX-License-Identifier: AGPL-3.0-only

package export

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// TestIPFIXCollectorAbsentAtStart starts the agent while nothing listens
// on the collector port, then starts nfcapd: the agent must keep running,
// count the failed sends, and resend its templates so that later flows
// decode.
func TestIPFIXCollectorAbsentAtStart(t *testing.T) {
	l := newLab(t)
	receivers(t, l, addrB4+":5001")
	// A long refresh, so only the resend after a send error can bring
	// the templates to the late collector.
	agent := startAgent(t, l, agentConfig{sampleRate: 1, collectorPort: collectorPort,
		templateRefresh: "60s", evictionTimeout: "1s"})
	ipfixErrors := map[string]string{"subsystem": "ipfix"}

	before := lab.UDPConn(t, l.A, addrA4+":40001", addrB4+":5001")
	send(t, before, 5, 100)
	lab.Eventually(t, 20*time.Second, `rfm_errors_total{subsystem="ipfix"} > 0`, func() error {
		if agent.Exited() {
			t.Fatalf("agent exited while the collector was absent: %v", agent.Err())
		}
		m, err := scrape(l)
		if err != nil {
			return err
		}
		if v, _ := metricValue(m, "rfm_errors_total", ipfixErrors); v <= 0 {
			return fmt.Errorf("rfm_errors_total{subsystem=\"ipfix\"} = %v", v)
		}
		return nil
	})

	col := startCollector(t, l, collectorPort)
	// Each flow ends by idle timeout and goes out in its own message. The
	// first message may still fail on the ICMP error the previous send
	// left pending on the socket; the one after it carries the templates.
	learned := false
	for i := 0; i < 6 && !learned; i++ {
		waitForExport(t, l, 41000+i)
		learned = strings.Contains(col.p.Output(), "New ipfix exporter")
	}
	if !learned {
		t.Fatalf("nfcapd never learned rfm's templates after it started")
	}
	waitForExport(t, l, 42000)

	if agent.Exited() {
		t.Fatalf("agent exited: %v", agent.Err())
	}
	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	flows := col.finish(t, l)
	expectFlow(t, flows, addrA4, addrB4, 42000, 5001, 3, 3*128)
}

// waitForExport sends one short flow from sport and waits until the
// exporter has either sent or failed to send a message after it ended.
func waitForExport(t *testing.T, l *testbed, sport int) {
	t.Helper()
	counts := func() float64 {
		m, err := scrape(l)
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		r, _ := metricValue(m, "rfm_ipfix_records_total", nil)
		e, _ := metricValue(m, "rfm_errors_total", map[string]string{"subsystem": "ipfix"})
		d, _ := metricValue(m, "rfm_ipfix_dropped_records_total", nil)
		return r + e + d
	}
	start := counts()
	c := lab.UDPConn(t, l.A, fmt.Sprintf("%s:%d", addrA4, sport), addrB4+":5001")
	send(t, c, 3, 100)
	lab.Eventually(t, 15*time.Second, fmt.Sprintf("export of the flow from port %d", sport), func() error {
		if now := counts(); now == start {
			return fmt.Errorf("records+errors+dropped still %v", now)
		}
		return nil
	})
}
