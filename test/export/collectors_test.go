// SPDX-License-Identifier: AGPL-3.0-only

package export

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// TestIPFIXSeveralCollectors runs the agent with two collectors, one of
// them absent (every send refused), then reloads to drop the absent one
// and add another. The healthy collector gets every record throughout,
// the added one gets the flows that end after it was added, no exporter
// socket is sampled, and the metrics are per collector.
func TestIPFIXSeveralCollectors(t *testing.T) {
	l := newLab(t)
	const deadPort, addedPort = 4742, 4741
	kept := startCollector(t, l, collectorPort)
	added := startCollector(t, l, addedPort)
	receivers(t, l, addrB4+":5001", addrB4+":5002")
	cfg := agentConfig{sampleRate: 1, templateRefresh: "1s", evictionTimeout: "10m",
		collectorPorts: []int{deadPort, collectorPort}}
	agent := startAgent(t, l, cfg)

	series := func(port int) map[string]string {
		return map[string]string{"collector": addrB4 + ":" + strconv.Itoa(port)}
	}
	x := lab.UDPConn(t, l.A, addrA4+":40001", addrB4+":5001")
	send(t, x, 5, 100)
	lab.Eventually(t, 15*time.Second, "sends to the absent collector fail, the other's go out", func() error {
		m, err := scrape(l)
		if err != nil {
			return err
		}
		if v, _ := metricValue(m, "rfm_ipfix_send_errors_total", series(deadPort)); v < 1 {
			return fmt.Errorf("send errors to the absent collector: %v", v)
		}
		if v, _ := metricValue(m, "rfm_ipfix_messages_total", series(collectorPort)); v < 1 {
			return fmt.Errorf("messages to the healthy collector: %v", v)
		}
		if v, _ := metricValue(m, "rfm_ipfix_send_errors_total", series(collectorPort)); v != 0 {
			return fmt.Errorf("send errors to the healthy collector: %v", v)
		}
		return nil
	})

	cfg.collectorPorts = []int{collectorPort, addedPort}
	reloadLog(t, agent, cfg, "agent.ipfix", 1, 0)
	m, err := scrape(l)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := metricValue(m, "rfm_ipfix_messages_total", series(deadPort)); ok {
		t.Error("the removed collector still has metrics after the reload")
	}

	send(t, x, 3, 100)
	y := lab.UDPConn(t, l.A, addrA4+":40002", addrB4+":5002")
	send(t, y, 4, 100)
	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	for _, c := range []struct {
		name string
		col  *collector
		port int
	}{{"kept", kept, collectorPort}, {"added", added, addedPort}} {
		flows := c.col.finish(t, l)
		expectFlow(t, flows, addrA4, addrB4, 40001, 5001, 8, 8*128)
		expectFlow(t, flows, addrA4, addrB4, 40002, 5002, 4, 4*128)
		for _, f := range flows {
			if f.proto == protoUDP && (f.dport == collectorPort || f.dport == addedPort || f.dport == deadPort) {
				t.Errorf("%s collector: an exporter's own packets were exported as a flow: %s", c.name, f)
			}
		}
	}
	if t.Failed() {
		t.Log(agent.Output())
	}
}
