// SPDX-License-Identifier: AGPL-3.0-only

package deploy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stepbrobd/rfm/test/lab"
)

// The end-to-end tests of this package run the agent in namespace A of a
// pair joined by devA/devB; only benchmarking addresses are used.
const (
	labAddrA4 = "198.18.0.1"
	labAddrB4 = "198.18.1.1"
	labAddrA6 = "2001:db8:d::1"
	labAddrB6 = "2001:db8:d::2"
	labDevA   = "rfmdA"
	labDevB   = "rfmdB"
	// The agent's metrics endpoint inside namespace A.
	labMetrics = "127.0.0.1:9669"
	// IPFIX collector socket in namespace B and the UDP sink for traffic.
	labIPFIXPort = 4739
	labSinkPort  = 5001
	// BMP listener of the agent (no router connects; its metrics exist).
	labBMPPort = 11019
)

// The MMDB maps each side's /24 to its own ASN and city, so flow gauges
// carry non-empty src_asn, dst_asn, src_city and dst_city labels.
var labNetworks = []struct {
	cidr string
	asn  uint32
	city string
}{
	{"198.18.0.0/24", 64500, "Testville"},
	{"198.18.1.0/24", 64501, "Otherville"},
}

var (
	agentOnce  sync.Once
	agentBin   string
	agentErr   error
	labCounter atomic.Uint32
)

// needRoot skips tests that create namespaces and load BPF programs.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and loads eBPF programs")
	}
	for _, tool := range []string{"ip", "ethtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian package iproute2/ethtool)", tool)
		}
	}
}

// agentBinary builds cmd/rfm once per test binary run, into a directory
// every user can read (the capability test runs it as nobody).
func agentBinary(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		var dir string
		if dir, agentErr = os.MkdirTemp("", "rfm-deploy-test-"); agentErr != nil {
			return
		}
		if agentErr = os.Chmod(dir, 0o755); agentErr != nil {
			return
		}
		agentBin, agentErr = lab.BuildAgent(dir)
	})
	if agentErr != nil {
		t.Fatalf("build the agent: %v", agentErr)
	}
	return agentBin
}

// testbed is one namespace pair: the agent (and Prometheus) live in A.
type testbed struct{ A, B string }

func newTestbed(t *testing.T) *testbed {
	t.Helper()
	n := labCounter.Add(1)
	tb := &testbed{A: fmt.Sprintf("rfmda%d-%d", os.Getpid(), n), B: fmt.Sprintf("rfmdb%d-%d", os.Getpid(), n)}
	lab.NewPair(t, lab.PairOptions{
		NsA: tb.A, NsB: tb.B, DevA: labDevA, DevB: labDevB,
		MACA: lab.MustMAC("02:00:c6:12:00:0d"), MACB: lab.MustMAC("02:00:c6:12:01:0d"),
		Addrs: [][2]netip.Prefix{
			{netip.MustParsePrefix(labAddrA4 + "/23"), netip.MustParsePrefix(labAddrB4 + "/23")},
			{netip.MustParsePrefix(labAddrA6 + "/64"), netip.MustParsePrefix(labAddrB6 + "/64")},
		},
	})
	return tb
}

// writeLabMMDBs writes an ASN and a City database for labNetworks.
func writeLabMMDBs(t *testing.T, dir string) (asnDB, cityDB string) {
	t.Helper()
	asnDB, cityDB = filepath.Join(dir, "asn.mmdb"), filepath.Join(dir, "city.mmdb")
	asns, cities := map[string]mmdbtype.Map{}, map[string]mmdbtype.Map{}
	for _, n := range labNetworks {
		asns[n.cidr] = mmdbtype.Map{
			"autonomous_system_number":       mmdbtype.Uint32(n.asn),
			"autonomous_system_organization": mmdbtype.String("Test Org"),
		}
		cities[n.cidr] = mmdbtype.Map{
			"city":    mmdbtype.Map{"geoname_id": mmdbtype.Uint32(1), "names": mmdbtype.Map{"en": mmdbtype.String(n.city)}},
			"country": mmdbtype.Map{"iso_code": mmdbtype.String("XX"), "names": mmdbtype.Map{"en": mmdbtype.String("Testland")}},
		}
	}
	if err := lab.WriteMMDB(asnDB, "GeoLite2-ASN", asns); err != nil {
		t.Fatal(err)
	}
	if err := lab.WriteMMDB(cityDB, "GeoLite2-City", cities); err != nil {
		t.Fatal(err)
	}
	return asnDB, cityDB
}

// startIn runs argv in namespace ns; it is stopped at cleanup.
func startIn(t *testing.T, ns string, argv ...string) *lab.Process {
	t.Helper()
	return lab.Start(t, filepath.Base(argv[0]), ns, argv...)
}

// httpGet fetches url from inside namespace ns.
func httpGet(ns, url string) (int, string, error) {
	resp, err := lab.HTTPClient(ns, 2*time.Second).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", url, err)
	}
	return resp.StatusCode, string(body), nil
}

// waitAttached polls the agent's /metrics until it reports devA attached,
// failing early when the process has exited.
func waitAttached(t *testing.T, tb *testbed, agent *lab.Process) string {
	t.Helper()
	var text string
	lab.Eventually(t, 30*time.Second, "agent attached to "+labDevA, func() error {
		if agent.Exited() {
			t.Fatalf("agent exited at start: %v; output:\n%s", agent.Err(), agent.Output())
		}
		code, body, err := httpGet(tb.A, "http://"+labMetrics+"/metrics")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/metrics: HTTP %d", code)
		}
		samples, err := lab.ParseMetrics(strings.NewReader(body))
		if err != nil {
			return err
		}
		for _, s := range samples {
			if s.Name == "rfm_interface_attached" && s.Labels["ifname"] == labDevA && s.Value == 1 {
				text = body
				return nil
			}
		}
		return fmt.Errorf("rfm_interface_attached{ifname=%q} is not 1 yet", labDevA)
	})
	return text
}

// sendSteady writes a datagram on each connection every interval until
// the test ends, so flows stay active for as long as Prometheus scrapes.
func sendSteady(t *testing.T, interval time.Duration, conns ...*net.UDPConn) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		buf := make([]byte, 200)
		for {
			for _, c := range conns {
				_, _ = c.Write(buf) // a closed socket at the end is fine
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}
