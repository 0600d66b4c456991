// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// collectorPort is where nfcapd listens, on the router's loopback.
const collectorPort = 2055

// TestForwardedEgressCarriesIngressInterface sends UDP from the client to
// the server through the router and reads rfm's IPFIX export with nfcapd
// and nfdump. Must hold: the router's egress record of the stream (on its
// server-side interface) names both interfaces: ingressInterface = the
// client-side interface the packets came in on, egressInterface = the
// server-side one.
func TestForwardedEgressCarriesIngressInterface(t *testing.T) {
	l := newRouted(t)
	dir := t.TempDir()
	nfcapd := lab.Start(t, "nfcapd", l.r, "nfcapd", "-w", dir, "-p", strconv.Itoa(collectorPort), "-b", "127.0.0.1", "-t", "3600")
	lab.Eventually(t, 10*time.Second, "nfcapd listening", func() error {
		if nfcapd.Exited() {
			t.Fatalf("nfcapd exited: %v; output:\n%s", nfcapd.Err(), nfcapd.Output())
		}
		if _, ok := udpRxQueue(t, l.r, collectorPort); !ok {
			return fmt.Errorf("no socket on port %d yet", collectorPort)
		}
		return nil
	})
	a := startAgent(t, l.r, []string{l.rIn, l.rOut}, 1, fmt.Sprintf("[agent.ipfix]\nhost = \"127.0.0.1\"\nport = %d\n", collectorPort))
	sink := lab.UDPConn(t, l.s, "198.19.0.2:5001", "")
	c := lab.UDPConn(t, l.c, "198.18.0.2:40000", "198.19.0.2:5001")
	const n = 20
	for i := 0; i < n; i++ {
		if _, err := c.Write(make([]byte, 100)); err != nil {
			t.Fatalf("sending: %v", err)
		}
	}
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < n; i++ {
		if _, err := sink.Read(make([]byte, 2048)); err != nil {
			t.Fatalf("server got %d of %d datagrams: %v", i, n, err)
		}
	}
	a.settledFlow(t, flowKey{l.rOut, "egress", 17, "198.18.0.2:40000", "198.19.0.2:5001"}, 200*time.Millisecond, 10*time.Second)
	// Stopping the agent exports its active flows.
	if _, err := a.Stop(10 * time.Second); err != nil {
		t.Fatalf("stopping agent: %v", err)
	}
	lab.Eventually(t, 10*time.Second, "nfcapd to drain its socket", func() error {
		if rx, _ := udpRxQueue(t, l.r, collectorPort); rx != 0 {
			return fmt.Errorf("%d bytes queued", rx)
		}
		return nil
	})
	if _, err := nfcapd.Stop(10 * time.Second); err != nil {
		t.Logf("nfcapd: %v", err)
	}
	in, out := ifindexIn(t, l.r, l.rIn), ifindexIn(t, l.r, l.rOut)
	var found bool
	for _, r := range nfdumpRecords(t, dir) {
		if r["src4_addr"] != "198.18.0.2" || r["dst4_addr"] != "198.19.0.2" || jsonNumber(r, "src_port") != 40000 {
			continue
		}
		if jsonNumber(r, "direction") != 1 { // egress
			continue
		}
		if jsonNumber(r, "output_snmp") != uint64(out) {
			continue // an egress record of the other interface (there is none for this stream)
		}
		found = true
		if got := jsonNumber(r, "input_snmp"); got != uint64(in) {
			t.Errorf("egress record on %s (ifindex %d): ingressInterface %d, want %d (%s, where the packets came in): %v", l.rOut, out, got, in, l.rIn, r)
		}
		if got := jsonNumber(r, "in_packets"); got != n {
			t.Errorf("egress record on %s: %d packets, want %d: %v", l.rOut, got, n, r)
		}
	}
	if !found {
		t.Errorf("no egress record of the stream with egressInterface %d; records:\n%v", out, nfdumpRecords(t, dir))
	}
}

// udpRxQueue reads the receive queue of the UDP socket bound to port in
// ns (/proc/net/udp); ok is false if there is no such socket.
func udpRxQueue(t testing.TB, ns string, port int) (rx int, ok bool) {
	t.Helper()
	out := lab.Run(t, "ip", "netns", "exec", ns, "cat", "/proc/net/udp")
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], suffix) {
			continue
		}
		if _, q, found := strings.Cut(f[4], ":"); found {
			v, err := strconv.ParseInt(q, 16, 64)
			if err != nil {
				t.Fatalf("/proc/net/udp rx_queue %q: %v", q, err)
			}
			return int(v), true
		}
	}
	return 0, false
}

// nfdumpRecords decodes every record nfcapd wrote into dir.
func nfdumpRecords(t testing.TB, dir string) []map[string]any {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "nfcapd.*"))
	if len(files) == 0 {
		t.Fatalf("no nfcapd file in %s", dir)
	}
	var all []map[string]any
	for _, file := range files {
		out, err := exec.Command("nfdump", "-r", file, "-N", "-q", "-o", "json").Output()
		if err != nil {
			t.Fatalf("nfdump -r %s -o json: %v", file, err)
		}
		// With -q nfdump leaves out the array's brackets.
		if out = bytes.TrimSpace(out); len(out) > 0 {
			if out[0] != '[' {
				out = append(append([]byte("["), out...), ']')
			}
			var recs []map[string]any
			if err := json.Unmarshal(out, &recs); err != nil {
				t.Fatalf("nfdump -r %s -o json: %v\n%s", file, err, out)
			}
			all = append(all, recs...)
		}
	}
	return all
}

// jsonNumber reads a number nfdump wrote as a JSON number or string.
func jsonNumber(r map[string]any, key string) uint64 {
	switch v := r[key].(type) {
	case float64:
		return uint64(v)
	case string:
		n, _ := strconv.ParseUint(v, 10, 64)
		return n
	}
	return 0
}
