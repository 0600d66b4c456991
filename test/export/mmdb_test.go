// SPDX-License-Identifier: AGPL-3.0-only

package export

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/stepbrobd/rfm/test/lab"
)

// testNetwork is one MMDB entry; only benchmarking addresses.
type testNetwork struct {
	cidr string
	asn  uint32
	city string
}

var testNetworks = []testNetwork{
	{"198.18.0.0/24", 64500, "Testville"},
	{"198.18.1.0/24", 64501, "Otherville"},
}

// writeMMDB writes a GeoLite2-shaped database with one record per network.
func writeMMDB(t *testing.T, path, dbType string, record func(testNetwork) mmdbtype.Map) {
	t.Helper()
	records := make(map[string]mmdbtype.Map, len(testNetworks))
	for _, n := range testNetworks {
		records[n.cidr] = record(n)
	}
	if err := lab.WriteMMDB(path, dbType, records); err != nil {
		t.Fatal(err)
	}
}

// TestMMDBEnrichment checks ASN and city labels in /metrics and the
// BGP AS numbers in the IPFIX records nfdump decodes.
func TestMMDBEnrichment(t *testing.T) {
	dir := t.TempDir()
	asnDB, cityDB := filepath.Join(dir, "asn.mmdb"), filepath.Join(dir, "city.mmdb")
	writeMMDB(t, asnDB, "GeoLite2-ASN", func(n testNetwork) mmdbtype.Map {
		return mmdbtype.Map{
			"autonomous_system_number":       mmdbtype.Uint32(n.asn),
			"autonomous_system_organization": mmdbtype.String("Test Org"),
		}
	})
	writeMMDB(t, cityDB, "GeoLite2-City", func(n testNetwork) mmdbtype.Map {
		return mmdbtype.Map{
			"city":    mmdbtype.Map{"geoname_id": mmdbtype.Uint32(1), "names": mmdbtype.Map{"en": mmdbtype.String(n.city)}},
			"country": mmdbtype.Map{"iso_code": mmdbtype.String("XX"), "names": mmdbtype.Map{"en": mmdbtype.String("Testland")}},
		}
	})

	l := newLab(t)
	col := startCollector(t, l, collectorPort)
	receivers(t, l, addrB4+":5001")
	agent := startAgent(t, l, agentConfig{sampleRate: 1, collectorPort: collectorPort, asnDB: asnDB, cityDB: cityDB})

	s4 := lab.UDPConn(t, l.A, addrA4+":40001", addrB4+":5001")
	send(t, s4, 7, 100)

	want := map[string]string{
		"ifname": devA, "direction": "egress", "proto": "udp",
		"src_asn": "64500", "dst_asn": "64501", "src_city": "Testville", "dst_city": "Otherville",
	}
	var last string
	lab.Eventually(t, 10*time.Second, "enriched flow gauge", func() error {
		m, err := scrape(l)
		if err != nil {
			return err
		}
		last = m
		if v, ok := metricValue(m, "rfm_flow_sampled_packets", want); !ok || v != 7 {
			return fmt.Errorf("rfm_flow_sampled_packets%v = %v (present %v)", want, v, ok)
		}
		return nil
	})
	if v, ok := metricValue(last, "rfm_flow_sampled_bytes", want); !ok || v != 7*128 {
		t.Errorf("rfm_flow_sampled_bytes%v = %v (present %v), want %d", want, v, ok, 7*128)
	}

	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	flows := col.finish(t, l)
	got := findFlows(flows, addrA4, addrB4, 40001, 5001, protoUDP)
	if len(got) != 1 {
		t.Fatalf("want 1 flow, got %d; all flows:\n%s", len(got), dumpFlows(flows))
	}
	if got[0].srcASN != 64500 || got[0].dstASN != 64501 || got[0].packets != 7 {
		t.Errorf("want src_as 64500, dst_as 64501, 7 packets; got %s", got[0])
	}
}
