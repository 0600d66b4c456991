// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/test/lab"
)

// TestSampledDirections runs the agent on the router with
// agent.bpf.directions = ["ingress"], sends a UDP stream from the client
// to the server, then reloads with ["egress"] and sends another. Must
// hold: each stream is a flow only at the hook that samples (the
// router's client-side ingress, then its server-side egress), never at
// the other; both interfaces' counters count every packet in both
// configurations.
func TestSampledDirections(t *testing.T) {
	l := newRouted(t)
	a := startAgent(t, l.r, []string{l.rIn, l.rOut}, 1, "")
	setDirections(t, a, `["ingress"]`)
	sink := lab.UDPConn(t, l.s, "198.19.0.2:5001", "")
	const n = 20
	send := func(local string) {
		t.Helper()
		c := lab.UDPConn(t, l.c, local, "198.19.0.2:5001")
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
	}
	before := a.mustScrape(t)
	send("198.18.0.2:40000")
	inKey := flowKey{l.rIn, "ingress", 17, "198.18.0.2:40000", "198.19.0.2:5001"}
	outKey := flowKey{l.rOut, "egress", 17, "198.18.0.2:40000", "198.19.0.2:5001"}
	if f := a.settledFlow(t, inKey, 200*time.Millisecond, 10*time.Second); f.Sampled != n {
		t.Errorf("ingress flow sampled %d packets, want %d", f.Sampled, n)
	}
	if f, ok := findFlow(a.flows(t), outKey); ok {
		t.Errorf("egress flow %+v with directions = [\"ingress\"]", f)
	}
	checkCounted(t, a, l, before, n)

	setDirections(t, a, `["egress"]`)
	before = a.mustScrape(t)
	send("198.18.0.2:40001")
	inKey.src, outKey.src = "198.18.0.2:40001", "198.18.0.2:40001"
	if f := a.settledFlow(t, outKey, 200*time.Millisecond, 10*time.Second); f.Sampled != n {
		t.Errorf("egress flow sampled %d packets, want %d", f.Sampled, n)
	}
	if f, ok := findFlow(a.flows(t), inKey); ok {
		t.Errorf("ingress flow %+v with directions = [\"egress\"]", f)
	}
	checkCounted(t, a, l, before, n)

	// Optional fields are a constant of the loaded programs: a reload
	// reports them as waiting for a restart and keeps sampling as it was.
	cfg, err := os.ReadFile(a.config)
	if err != nil {
		t.Fatal(err)
	}
	withFields := strings.Replace(string(cfg), "[agent.bpf]\n", "[agent.bpf]\nfields = [\"ttl\"]\nfib_lookup = true\n", 1)
	if err := os.WriteFile(a.config, []byte(withFields), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err := a.control("reload")
	if err != nil {
		t.Fatal(err)
	}
	var res control.ReloadResult
	if err := json.Unmarshal([]byte(resp), &res); err != nil {
		t.Fatalf("reload answer %q: %v", resp, err)
	}
	if !slices.Contains(res.NeedsRestart, "agent.bpf.fields") || !slices.Contains(res.NeedsRestart, "agent.bpf.fib_lookup") {
		t.Errorf("reload adding fields: needs_restart %v, want agent.bpf.fields and agent.bpf.fib_lookup", res.NeedsRestart)
	}
}

// checkCounted checks that both router interfaces counted at least n
// forwarded IPv4 packets since before: the client side received them,
// the server side sent them.
func checkCounted(t *testing.T, a *agent, l *routed, before metrics, n int) {
	t.Helper()
	after := a.mustScrape(t)
	in := after.iface(l.rIn, "ipv4").minus(before.iface(l.rIn, "ipv4"))
	out := after.iface(l.rOut, "ipv4").minus(before.iface(l.rOut, "ipv4"))
	if in.rxPackets < float64(n) || out.txPackets < float64(n) {
		t.Errorf("counters: %s received %v packets, %s sent %v; want at least %d each", l.rIn, in.rxPackets, l.rOut, out.txPackets, n)
	}
}

// setDirections rewrites agent.bpf.directions in a's config file and
// reloads it, checking the reload applied the key unless it is already
// in effect.
func setDirections(t *testing.T, a *agent, list string) {
	t.Helper()
	cfg, err := os.ReadFile(a.config)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.Split(string(cfg), "\n") {
		if !strings.HasPrefix(line, "directions = ") {
			kept = append(kept, line)
		}
	}
	out := strings.Replace(strings.Join(kept, "\n"), "[agent.bpf]\n", "[agent.bpf]\ndirections = "+list+"\n", 1)
	if err := os.WriteFile(a.config, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	resp, err := a.control("reload")
	if err != nil {
		t.Fatal(err)
	}
	var res control.ReloadResult
	if err := json.Unmarshal([]byte(resp), &res); err != nil {
		t.Fatalf("reload answer %q: %v", resp, err)
	}
	if !slices.Contains(res.Applied, "agent.bpf.directions") {
		t.Fatalf("reload to directions = %s applied %v, want agent.bpf.directions among them", list, res.Applied)
	}
}
