// SPDX-License-Identifier: AGPL-3.0-only

package export

import (
	"errors"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// TestFlowsOfVanishedInterfaceExported: when a monitored interface is
// deleted, its active flows are exported at once (not at the next idle
// timeout or at shutdown) and reach the collector with exact counts.
func TestFlowsOfVanishedInterfaceExported(t *testing.T) {
	l := newLab(t)
	col := startCollector(t, l, collectorPort)
	// A second link between the namespaces, to be deleted mid-test.
	const hxA, hxB, hxAddrA, hxAddrB = "rfmhxA", "rfmhxB", "198.19.7.1", "198.19.7.2"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	run("ip", "link", "add", hxA, "netns", l.A, "type", "veth", "peer", "name", hxB, "netns", l.B)
	run("ip", "-n", l.A, "addr", "add", hxAddrA+"/24", "dev", hxA)
	run("ip", "-n", l.B, "addr", "add", hxAddrB+"/24", "dev", hxB)
	run("ip", "-n", l.A, "link", "set", hxA, "up")
	run("ip", "-n", l.B, "link", "set", hxB, "up")
	t.Cleanup(func() { exec.Command("ip", "-n", l.A, "link", "del", hxA).Run() })

	// Long idle timeout: only the deletion may end the flow.
	agent := startAgent(t, l, agentConfig{sampleRate: 1, collectorPort: collectorPort,
		evictionTimeout: "10m", extraInterfaces: []string{"rfmhx*"}})
	lab.Eventually(t, 10*time.Second, hxA+" attached", func() error {
		m, err := scrape(l)
		if err != nil {
			return err
		}
		if v, ok := metricValue(m, "rfm_interface_attached", map[string]string{"ifname": hxA}); !ok || v != 1 {
			return errors.New("not attached yet")
		}
		return nil
	})

	lab.UDPConn(t, l.B, hxAddrB+":6001", "") // bound: no ICMP back
	s := lab.UDPConn(t, l.A, hxAddrA+":41001", hxAddrB+":6001")
	send(t, s, 17, 50) // 17 x (20 + 8 + 50) bytes
	lab.Eventually(t, 10*time.Second, "flow on "+hxA, func() error {
		m, err := scrape(l)
		if err != nil {
			return err
		}
		if v, _ := metricValue(m, "rfm_flow_sampled_packets", map[string]string{"ifname": hxA}); v != 17 {
			return fmt.Errorf("sampled packets %v, want 17", v)
		}
		return nil
	})
	before := ipfixRecords(t, l)

	run("ip", "-n", l.A, "link", "del", hxA)
	lab.Eventually(t, 10*time.Second, "flow exported at detach", func() error {
		if n := ipfixRecords(t, l); n <= before {
			return fmt.Errorf("rfm_ipfix_records_total %v, was %v", n, before)
		}
		return nil
	})
	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	flows := col.finish(t, l)
	expectFlow(t, flows, hxAddrA, hxAddrB, 41001, 6001, 17, 17*78)
}

func ipfixRecords(t *testing.T, l *testbed) float64 {
	t.Helper()
	m, err := scrape(l)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := metricValue(m, "rfm_ipfix_records_total", nil)
	return v
}
