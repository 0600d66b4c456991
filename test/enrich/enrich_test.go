// SPDX-License-Identifier: AGPL-3.0-only

package enrich

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stepbrobd/rfm/test/lab"
)

// Fixed ports: namespace A is fresh, so nothing else holds them.
const (
	addrR1, addrR2 = "127.0.0.11", "127.0.0.12"
	bgpPort        = 1179
	apiPort        = 50051
	bmpPort        = 11019
	promPort       = 9669
	dstPort        = 9999
	originAS       = "65010" // last AS of R1's announced path
	prefix         = "198.19.1.0/24"
)

// routerConfig is a gobgpd config. The BMP speaker (R2) monitors all
// views to the agent; the originator (R1) rewrites the next hop, since
// gobgpd rejects a loopback next hop as martian.
func routerConfig(as int, addr, neighbor string, peerAS int, speaksBMP bool) string {
	// The BMP speaker waits for the originator to connect, so the two
	// never dial each other at once.
	c := lab.GoBGPD{AS: as, Addr: addr, Port: bgpPort, Neighbors: []lab.GoBGPNeighbor{{Addr: neighbor, AS: peerAS, Passive: speaksBMP}}}
	if speaksBMP {
		c.BMP = &lab.GoBGPBMP{Port: bmpPort, SysName: "r2"}
	} else {
		c.NextHop4 = "198.18.0.2"
	}
	return c.Config()
}

type env struct {
	t       *testing.T
	lab     *testbed
	dir     string
	client  *http.Client
	sendSeq int
}

// gobgp runs the gobgp CLI inside A against router addr's API.
func (e *env) gobgp(addr string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"netns", "exec", e.lab.nsA, "gobgp", "-u", addr, "-p", fmt.Sprint(apiPort)}, args...)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("gobgp -u %s %s: %v: %s", addr, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (e *env) startRouter(name, addr, neighbor string, as, peerAS int, speaksBMP bool) *lab.Process {
	e.t.Helper()
	conf := filepath.Join(e.dir, name+".toml")
	if err := os.WriteFile(conf, []byte(routerConfig(as, addr, neighbor, peerAS, speaksBMP)), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return lab.Start(e.t, name, e.lab.nsA, "gobgpd", "-f", conf,
		"--api-hosts", net.JoinHostPort(addr, fmt.Sprint(apiPort)), "--pprof-disable", "-p", "-l", "info")
}

func (e *env) scrape() (scrape, error) {
	resp, err := e.client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort))
	if err != nil {
		return scrape{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return scrape{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return scrape{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	samples, err := parseMetrics(strings.NewReader(string(b)))
	return scrape{raw: string(b), samples: samples}, err
}

// eventually polls cond on fresh scrapes until it holds or the deadline
// passes; on failure it shows the metrics that matter.
func (e *env) eventually(what string, timeout time.Duration, cond func(s scrape) bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var last scrape
	var lastErr error
	for {
		s, err := e.scrape()
		if err == nil {
			last, lastErr = s, nil
			if cond(s) {
				e.t.Logf("%s: ok\n%s", what, s.grep("rfm_flow_sampled_packets", "rfm_bmp_sessions", "rfm_rib_routes"))
				return
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s (last scrape error: %v); metrics:\n%s", timeout, what, lastErr,
				last.grep("rfm_flow_sampled_packets", "rfm_bmp_", "rfm_rib_", "rfm_errors_total", "rfm_collector_active_flows"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// send sends n datagrams from A to dstIP from a new source port each
// call (so each call makes a new flow).
func (e *env) send(n int) {
	e.t.Helper()
	e.sendSeq++
	src := &net.UDPAddr{IP: ipA.AsSlice(), Port: 40000 + e.sendSeq}
	err := lab.InNetns(e.lab.nsA, func() error {
		c, err := net.DialUDP("udp4", src, &net.UDPAddr{IP: dstIP.AsSlice(), Port: dstPort})
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < n; i++ {
			if _, err := c.Write([]byte("rfm enrich test")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("send from %v: %v", src, err)
	}
}

// flowLabels selects the egress UDP series from A to dstIP's labels.
func (e *env) flowLabels(dstASN string) map[string]string {
	return map[string]string{
		"ifname": e.lab.vethA, "direction": "egress", "proto": "udp",
		"src_asn": "64500", "src_city": "Alpha", "dst_asn": dstASN, "dst_city": "Beta",
	}
}

// flowsAre holds when the egress UDP series carry exactly the wanted
// sampled packet counts by dst_asn.
func (e *env) flowsAre(want map[string]float64) func(s scrape) bool {
	return func(s scrape) bool {
		got := map[string]float64{}
		for _, x := range s.find("rfm_flow_sampled_packets", map[string]string{"direction": "egress", "proto": "udp"}) {
			got[x.Labels["dst_asn"]] += x.Value
			for k, v := range e.flowLabels(x.Labels["dst_asn"]) {
				if x.Labels[k] != v {
					return false
				}
			}
		}
		return maps.Equal(got, want)
	}
}

func value(s scrape, name string, labels map[string]string) (float64, bool) {
	xs := s.find(name, labels)
	if len(xs) != 1 {
		return 0, false
	}
	return xs[0].Value, true
}

func bmpState(sessions, routes float64) func(s scrape) bool {
	return func(s scrape) bool {
		n, ok1 := value(s, "rfm_bmp_sessions", nil)
		r, ok2 := value(s, "rfm_rib_routes", map[string]string{"family": "ipv4"})
		return ok1 && ok2 && n == sessions && r == routes
	}
}

func TestEnrichmentLabels(t *testing.T) {
	requireLab(t)
	e := &env{t: t, dir: t.TempDir()}
	e.lab = newLab(t)
	e.client = lab.HTTPClient(e.lab.nsA, 2*time.Second)

	// MMDB: A's subnet is AS 64500 "Alpha", 198.19/16 is AS 64501 "Beta".
	asnDB, cityDB := filepath.Join(e.dir, "asn.mmdb"), filepath.Join(e.dir, "city.mmdb")
	asn := func(n uint32) mmdbtype.Map {
		return mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(n), "autonomous_system_organization": mmdbtype.String("Test")}
	}
	city := func(name string) mmdbtype.Map {
		return mmdbtype.Map{"city": mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(name)}}}
	}
	writeMMDB(t, asnDB, "GeoLite2-ASN", map[string]mmdbtype.Map{"198.18.0.0/24": asn(64500), "198.19.0.0/16": asn(64501)})
	writeMMDB(t, cityDB, "GeoLite2-City", map[string]mmdbtype.Map{"198.18.0.0/24": city("Alpha"), "198.19.0.0/16": city("Beta")})

	// The receiver binds the port so B sends no ICMP back.
	err := lab.InNetns(e.lab.nsB, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: dstIP.AsSlice(), Port: dstPort})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return err
	})
	if err != nil {
		t.Fatalf("receiver in %s: %v", e.lab.nsB, err)
	}

	// Flows stay active for the whole test so relabelling of existing
	// flows by the table's sweep is visible.
	cfg := fmt.Sprintf(`[agent]
interfaces = [%q]
[agent.bpf]
sample_rate = 1
[agent.collector]
eviction_timeout = "10m"
[agent.prometheus]
host = "127.0.0.1"
port = %d
[agent.enrich.mmdb]
asn_db = %q
city_db = %q
[agent.enrich.rib.bmp]
host = "127.0.0.1"
port = %d
keep = "1s"
[agent.control]
socket = %q
`, e.lab.vethA, promPort, asnDB, cityDB, bmpPort, filepath.Join(e.dir, "rfm.sock"))
	cfgPath := filepath.Join(e.dir, "rfm.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := lab.Start(t, "agent", e.lab.nsA, agentBin, "agent", "-c", cfgPath)
	e.eventually("agent metrics endpoint", 20*time.Second, func(s scrape) bool {
		_, ok := value(s, "rfm_interface_attached", map[string]string{"ifname": e.lab.vethA})
		return ok
	})
	if agent.Exited() {
		t.Fatal("agent exited")
	}

	// MMDB only, before any router: the ASN falls back to the MMDB.
	e.send(5)
	e.eventually("MMDB-only labels (dst_asn 64501)", 10*time.Second, e.flowsAre(map[string]float64{"64501": 5}))

	r1 := e.startRouter("r1", addrR1, addrR2, 65001, 65002, false)
	r2 := e.startRouter("r2", addrR2, addrR1, 65002, 65001, true)
	e.eventually("BMP session from R2", 20*time.Second, bmpState(1, 0))
	if err := retry(10*time.Second, func() error { return e.gobgp(addrR1, "global") }); err != nil {
		t.Fatal(err)
	}
	if err := e.gobgp(addrR1, "global", "rib", "-a", "ipv4", "add", prefix, "aspath", originAS); err != nil {
		t.Fatal(err)
	}
	// gobgpd with "all" reports pre-policy, post-policy and Loc-RIB.
	e.eventually("route in the RIB via BMP (3 views)", 30*time.Second, bmpState(1, 3))

	// 1. RIB beats MMDB for the destination ASN; the existing flow is
	// relabelled by the sweep and a new flow is labelled at creation.
	e.eventually("existing flow relabelled to RIB origin", 10*time.Second, e.flowsAre(map[string]float64{originAS: 5}))
	e.send(7)
	e.eventually("new flow labelled with RIB origin", 10*time.Second, e.flowsAre(map[string]float64{originAS: 12}))

	// 2. Withdraw: everything falls back to the MMDB ASN, existing flows
	// by relabelling, new flows at creation.
	if err := e.gobgp(addrR1, "global", "rib", "-a", "ipv4", "del", prefix); err != nil {
		t.Fatal(err)
	}
	e.eventually("withdraw reaching the RIB", 20*time.Second, bmpState(1, 0))
	e.eventually("flows relabelled to MMDB ASN after withdraw", 10*time.Second, e.flowsAre(map[string]float64{"64501": 12}))
	e.send(3)
	e.eventually("new flow after withdraw gets MMDB ASN", 10*time.Second, e.flowsAre(map[string]float64{"64501": 15}))

	// Re-announce, then Peer Down (R1 stops): R2 reports its peer gone.
	if err := e.gobgp(addrR1, "global", "rib", "-a", "ipv4", "add", prefix, "aspath", originAS); err != nil {
		t.Fatal(err)
	}
	e.eventually("re-announced route", 20*time.Second, bmpState(1, 3))
	e.eventually("flows back on RIB origin", 10*time.Second, e.flowsAre(map[string]float64{originAS: 15}))
	r1.Stop(5 * time.Second)
	e.eventually("Peer Down removing R1's routes", 30*time.Second, bmpState(1, 0))
	e.eventually("flows on MMDB ASN after Peer Down", 10*time.Second, e.flowsAre(map[string]float64{"64501": 15}))

	// 3. Router gone: R1 back with the route, then R2 stops. After
	// keep (1s) its routes go and labels fall back to the MMDB.
	e.startRouter("r1-again", addrR1, addrR2, 65001, 65002, false)
	if err := retry(10*time.Second, func() error {
		return e.gobgp(addrR1, "global", "rib", "-a", "ipv4", "add", prefix, "aspath", originAS)
	}); err != nil {
		t.Fatal(err)
	}
	e.eventually("route back after R1 restart", 30*time.Second, bmpState(1, 3))
	e.eventually("flows back on RIB origin after R1 restart", 10*time.Second, e.flowsAre(map[string]float64{originAS: 15}))
	// SIGKILL: no Termination or Peer Down from R2, so only the end of
	// the TCP session tells the station; routes must stay (stale) for
	// keep, then go.
	r2.Kill()
	var staleSeen bool
	e.eventually("BMP session gone", 10*time.Second, func(s scrape) bool {
		n, _ := value(s, "rfm_bmp_sessions", nil)
		r, _ := value(s, "rfm_rib_routes", map[string]string{"family": "ipv4"})
		if n == 0 && r == 3 {
			staleSeen = true
		}
		return n == 0
	})
	e.eventually("routes dropped after keep", 20*time.Second, bmpState(0, 0))
	if !staleSeen {
		t.Error("routes of the disconnected router were not kept (stale) after its session ended; keep = 1s")
	}
	e.eventually("flows on MMDB ASN after router gone", 10*time.Second, e.flowsAre(map[string]float64{"64501": 15}))

	s, err := e.scrape()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := value(s, "rfm_errors_total", map[string]string{"subsystem": "bmp"}); ok && v != 0 {
		t.Errorf("rfm_errors_total{subsystem=\"bmp\"} = %v, want 0", v)
	}
	if agent.Exited() {
		t.Fatal("agent exited during the test")
	}
}

func retry(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
