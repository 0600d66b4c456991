// SPDX-License-Identifier: AGPL-3.0-only

package export

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// TestIPFIXRateChangeKeepsRates changes the sample rate of a running agent
// twice (`rfm set sample-rate`) and reads the flows it ended back from
// nfdump, which scales each record by the sampling options in force when
// nfcapd read it: a flow sampled at 1 must read as the packets sent, not
// a thousand times more, and one sampled at 1000 as a multiple of 1000.
func TestIPFIXRateChangeKeepsRates(t *testing.T) {
	l := newLab(t)
	col := startCollector(t, l, collectorPort)
	receivers(t, l, addrB4+":5001", addrB4+":5002")
	agent := startAgent(t, l, agentConfig{sampleRate: 1, collectorPort: collectorPort})
	sock := filepath.Join(filepath.Dir(agent.configPath), "rfm.sock")
	setRate := func(rate int) {
		t.Helper()
		out, err := exec.Command(rfmBinary, "set", "sample-rate", fmt.Sprint(rate), "--socket", sock).CombinedOutput()
		if err != nil {
			t.Fatalf("rfm set sample-rate %d: %v\n%s", rate, err, out)
		}
	}
	sampled := func(want float64) {
		t.Helper()
		lab.Eventually(t, 10*time.Second, fmt.Sprintf("%v sampled packets in the table", want), func() error {
			m, err := scrape(l)
			if err != nil {
				return err
			}
			if v, _ := metricValue(m, "rfm_flow_sampled_packets", nil); v < want {
				return fmt.Errorf("%v sampled packets", v)
			}
			return nil
		})
	}

	const atOne, atThousand = 2000, 30000
	send(t, lab.UDPConn(t, l.A, addrA4+":40001", addrB4+":5001"), atOne, 100)
	sampled(atOne) // all of them in the table before the rate changes
	setRate(1000)
	send(t, lab.UDPConn(t, l.A, addrA4+":40002", addrB4+":5002"), atThousand, 100)
	sampled(1) // at least one of them sampled
	setRate(1)

	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	flows := col.finish(t, l)
	expectFlow(t, flows, addrA4, addrB4, 40001, 5001, atOne, atOne*128)
	var packets uint64
	for _, f := range findFlows(flows, addrA4, addrB4, 40002, 5002, protoUDP) {
		if f.packets%1000 != 0 || f.bytes != f.packets*128 {
			t.Errorf("flow sampled at 1000 not scaled by 1000: %s", f)
		}
		packets += f.packets
	}
	// About 30 of 30,000 sampled: far from 30 or 30 million.
	if packets < atThousand/5 || packets > 5*atThousand {
		t.Errorf("flow sampled at 1000 reads as %d packets, sent %d; flows:\n%s", packets, atThousand, dumpFlows(flows))
	}
}

// TestIPFIXActiveTimeout streams to a running agent with active_timeout
// 1s for longer than that: nfdump reads several records of the one flow,
// delta records (flowEndReason 2) that add up to the datagrams sent.
func TestIPFIXActiveTimeout(t *testing.T) {
	l := newLab(t)
	col := startCollector(t, l, collectorPort)
	receivers(t, l, addrB4+":5001")
	agent := startAgent(t, l, agentConfig{sampleRate: 1, collectorPort: collectorPort, activeTimeout: "1s"})

	c := lab.UDPConn(t, l.A, addrA4+":40001", addrB4+":5001")
	const perRound, rounds = 50, 8
	start := time.Now()
	for r := range rounds {
		send(t, c, perRound, 100)
		// Spread the stream over about 4 s: at least three active
		// timeouts pass while the flow goes on.
		time.Sleep(time.Until(start.Add(time.Duration(r+1) * 500 * time.Millisecond)))
	}
	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	flows := col.finish(t, l)
	recs := findFlows(flows, addrA4, addrB4, 40001, 5001, protoUDP)
	var packets, bytes uint64
	for _, f := range recs {
		packets += f.packets
		bytes += f.bytes
	}
	if len(recs) < 3 || packets != perRound*rounds || bytes != packets*128 {
		t.Fatalf("%d records summing to %d packets %d bytes, want 3 or more summing to %d packets of 128 bytes:\n%s",
			len(recs), packets, bytes, perRound*rounds, dumpFlows(recs))
	}
	// The records tile the flow: each starts where the previous ended.
	type span struct{ first, last string }
	var spans []span
	for _, f := range recs {
		var r struct{ First, Last string }
		if err := json.Unmarshal([]byte(f.raw), &r); err != nil || r.First == "" {
			t.Fatalf("no first/last in %s: %v", f, err)
		}
		spans = append(spans, span{r.First, r.Last})
	}
	slices.SortFunc(spans, func(a, b span) int { return strings.Compare(a.first, b.first) })
	for i := 1; i < len(spans); i++ {
		if spans[i].first != spans[i-1].last {
			t.Errorf("record %d starts at %s, the previous ended at %s", i, spans[i].first, spans[i-1].last)
		}
	}
}
