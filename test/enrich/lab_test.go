// SPDX-License-Identifier: AGPL-3.0-only

package enrich

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stepbrobd/rfm/test/lab"
)

// Lab addresses. Namespace A holds the agent, both routers and the
// sender; B holds the receiver of the test traffic.
var (
	ipA   = netip.MustParseAddr("198.18.0.1")
	ipB   = netip.MustParseAddr("198.18.0.2")
	dstIP = netip.MustParseAddr("198.19.1.5") // on B's loopback, routed via ipB
	macA  = net.HardwareAddr{0x02, 0x52, 0x46, 0x45, 0x00, 0x01}
	macB  = net.HardwareAddr{0x02, 0x52, 0x46, 0x45, 0x00, 0x02}
)

// testbed is namespaces nsA and nsB joined by the veth vethA/vethB.
type testbed struct {
	nsA, nsB     string
	vethA, vethB string
}

// newLab builds two quiet namespaces joined by a veth and removes them
// when the test ends, then routes 198.19.0.0/16 from A to B's loopback.
func newLab(t *testing.T) *testbed {
	t.Helper()
	pid := os.Getpid()
	l := &testbed{
		nsA:   fmt.Sprintf("rfme-%d-a", pid),
		nsB:   fmt.Sprintf("rfme-%d-b", pid),
		vethA: fmt.Sprintf("rfmea%d", pid%100000),
		vethB: fmt.Sprintf("rfmeb%d", pid%100000),
	}
	lab.NewPair(t, lab.PairOptions{
		NsA: l.nsA, NsB: l.nsB, DevA: l.vethA, DevB: l.vethB, MACA: macA, MACB: macB,
		Addrs: [][2]netip.Prefix{{netip.PrefixFrom(ipA, 24), netip.PrefixFrom(ipB, 24)}},
	})
	lab.Run(t, "ip", "-n", l.nsA, "route", "add", "198.19.0.0/16", "via", ipB.String(), "dev", l.vethA)
	lab.Run(t, "ip", "-n", l.nsB, "addr", "add", dstIP.String()+"/32", "dev", "lo")
	return l
}

// sample is one line of the Prometheus text format.
type sample = lab.Sample

// parseMetrics reads the text exposition format.
func parseMetrics(r io.Reader) ([]sample, error) { return lab.ParseMetrics(r) }

// scrape is one /metrics response, kept raw for failure messages.
type scrape struct {
	raw     string
	samples []sample
}

// find returns the samples named name whose labels include want.
func (s scrape) find(name string, want map[string]string) []sample {
	var out []sample
next:
	for _, x := range s.samples {
		if x.Name != name {
			continue
		}
		for k, v := range want {
			if x.Labels[k] != v {
				continue next
			}
		}
		out = append(out, x)
	}
	return out
}

// grep returns the raw lines starting with prefix, for failure messages.
func (s scrape) grep(prefixes ...string) string {
	var b strings.Builder
	for _, line := range strings.Split(s.raw, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				b.WriteString(line + "\n")
				break
			}
		}
	}
	return b.String()
}

// writeMMDB writes a database with one record per prefix.
func writeMMDB(t *testing.T, path, dbType string, records map[string]mmdbtype.Map) {
	t.Helper()
	if err := lab.WriteMMDB(path, dbType, records); err != nil {
		t.Fatal(err)
	}
}
