// SPDX-License-Identifier: AGPL-3.0-only

package enrich

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/netsampler/goflow2/v2/decoders/netflow"

	"github.com/stepbrobd/rfm/test/lab"
)

const collectorPort = 4739

// ipfixRecord is what goflow2's decoder read of one flow record or
// interface options record, by information element.
type ipfixRecord map[uint16][]byte

// ipfixCollector decodes what reaches a UDP socket in namespace A with
// goflow2's IPFIX decoder, keeping templates as a collector does.
type ipfixCollector struct {
	mu         sync.Mutex
	flows      []ipfixRecord
	interfaces []ipfixRecord
	errs       []error
}

func startIPFIXCollector(t *testing.T, ns string) *ipfixCollector {
	t.Helper()
	var conn *net.UDPConn
	err := lab.InNetns(ns, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: collectorPort})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &ipfixCollector{}
	templates := netflow.CreateTemplateSystem()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			var pkt netflow.IPFIXPacket
			var v9 netflow.NFv9Packet
			err = netflow.DecodeMessageVersion(bytes.NewBuffer(append([]byte(nil), buf[:n]...)), templates, &v9, &pkt)
			c.mu.Lock()
			if err != nil {
				c.errs = append(c.errs, err)
			}
			for _, fs := range pkt.FlowSets {
				switch s := fs.(type) {
				case netflow.DataFlowSet:
					for _, r := range s.Records {
						c.flows = append(c.flows, fields(r.Values))
					}
				case netflow.OptionsDataFlowSet:
					for _, r := range s.Records {
						m := fields(append(append([]netflow.DataField(nil), r.ScopesValues...), r.OptionsValues...))
						if _, ok := m[82]; ok {
							c.interfaces = append(c.interfaces, m)
						}
					}
				}
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return c
}

func fields(values []netflow.DataField) ipfixRecord {
	m := ipfixRecord{}
	for _, v := range values {
		if b, ok := v.Value.([]byte); ok {
			m[v.Type] = b
		}
	}
	return m
}

func (r ipfixRecord) uint(id uint16) uint64 {
	var v uint64
	for _, c := range r[id] {
		v = v<<8 | uint64(c)
	}
	return v
}

func (r ipfixRecord) addr(id uint16) netip.Addr {
	a, _ := netip.AddrFromSlice(r[id])
	return a
}

func (r ipfixRecord) String() string {
	return fmt.Sprintf("%v -> %v next hop %v /%d -> /%d adjacent AS %d -> %d, AS %d -> %d", r.addr(8), r.addr(12), r.addr(18),
		r.uint(9), r.uint(13), r.uint(129), r.uint(128), r.uint(16), r.uint(17))
}

// TestBGPContextInIPFIX runs the agent with a BMP feed from gobgpd and
// an IPFIX collector: a flow towards a route learned over BMP is
// exported with that route's BGP next hop, prefix lengths and adjacent
// ASes, a flow MMDB-only with zeros, and the interface options record
// carries the interface's alias.
func TestBGPContextInIPFIX(t *testing.T) {
	requireLab(t)
	e := &env{t: t, dir: t.TempDir()}
	e.lab = newLab(t)
	e.client = lab.HTTPClient(e.lab.nsA, 2*time.Second)
	lab.Run(t, "ip", "-n", e.lab.nsA, "link", "set", e.lab.vethA, "alias", "uplink to B")

	asnDB, cityDB := filepath.Join(e.dir, "asn.mmdb"), filepath.Join(e.dir, "city.mmdb")
	writeMMDB(t, asnDB, "GeoLite2-ASN", map[string]mmdbtype.Map{"198.19.0.0/16": {"autonomous_system_number": mmdbtype.Uint32(64501)}})
	writeMMDB(t, cityDB, "GeoLite2-City", map[string]mmdbtype.Map{"198.19.0.0/16": {"city": mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String("Beta")}}}})
	err := lab.InNetns(e.lab.nsB, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: dstIP.AsSlice(), Port: dstPort})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	col := startIPFIXCollector(t, e.lab.nsA)

	cfg := fmt.Sprintf(`[agent]
interfaces = [%q]
[agent.bpf]
sample_rate = 1
[agent.collector]
eviction_timeout = "1s"
[agent.prometheus]
host = "127.0.0.1"
port = %d
[agent.ipfix]
host = "127.0.0.1"
port = %d
template_refresh = "1s"
[agent.enrich.mmdb]
asn_db = %q
city_db = %q
[agent.enrich.rib.bmp]
host = "127.0.0.1"
port = %d
[agent.control]
socket = %q
`, e.lab.vethA, promPort, collectorPort, asnDB, cityDB, bmpPort, filepath.Join(e.dir, "rfm.sock"))
	cfgPath := filepath.Join(e.dir, "rfm.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := lab.Start(t, "agent", e.lab.nsA, agentBin, "agent", "-c", cfgPath)
	e.eventually("agent metrics endpoint", 20*time.Second, func(s scrape) bool {
		_, ok := value(s, "rfm_interface_attached", map[string]string{"ifname": e.lab.vethA})
		return ok
	})

	// MMDB only: no route yet.
	e.send(3) // source port 40001

	e.startRouter("r1", addrR1, addrR2, 65001, 65002, false)
	e.startRouter("r2", addrR2, addrR1, 65002, 65001, true)
	e.eventually("BMP session from R2", 20*time.Second, bmpState(1, 0))
	if err := retry(10*time.Second, func() error { return e.gobgp(addrR1, "global") }); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"global", "rib", "-a", "ipv4", "add", prefix, "aspath", originAS},
		{"global", "rib", "-a", "ipv4", "add", "198.18.0.0/24", "aspath", "65020"},
	} {
		if err := e.gobgp(addrR1, args...); err != nil {
			t.Fatal(err)
		}
	}
	e.eventually("both routes in the RIB (3 views each)", 30*time.Second, bmpState(1, 6))
	e.send(4) // source port 40002

	var bgpFlow, mmdbFlow ipfixRecord
	var alias string
	deadline := time.Now().Add(20 * time.Second)
	for {
		col.mu.Lock()
		if len(col.errs) > 0 {
			t.Fatalf("goflow2 could not decode the export: %v", col.errs)
		}
		for _, r := range col.flows {
			if r.addr(8) != ipA || r.addr(12) != dstIP {
				continue
			}
			switch r.uint(7) {
			case 40001:
				mmdbFlow = r
			case 40002:
				bgpFlow = r
			}
		}
		for _, r := range col.interfaces {
			alias = string(bytes.TrimRight(r[83], "\x00"))
		}
		col.mu.Unlock()
		if bgpFlow != nil && mmdbFlow != nil && alias != "" {
			break
		}
		if time.Now().After(deadline) || agent.Exited() {
			t.Fatalf("collector has BGP flow %v, MMDB flow %v, alias %q; agent output:\n%s", bgpFlow, mmdbFlow, alias, agent.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("BGP flow: %s", bgpFlow)
	t.Logf("MMDB flow: %s", mmdbFlow)

	// R2's Loc-RIB route is the best: its path is 65001 (R1) then the
	// origin, its next hop the one R1 sets (198.18.0.2).
	want := fmt.Sprintf("%v -> %v next hop 198.18.0.2 /24 -> /24 adjacent AS 65001 -> 65001, AS 65020 -> %s", ipA, dstIP, originAS)
	if got := bgpFlow.String(); got != want {
		t.Errorf("flow with routes:\n got %s\nwant %s", got, want)
	}
	// Before the routes: no BGP context, the MMDB's destination AS.
	want = fmt.Sprintf("%v -> %v next hop 0.0.0.0 /0 -> /0 adjacent AS 0 -> 0, AS 0 -> 64501", ipA, dstIP)
	if got := mmdbFlow.String(); got != want {
		t.Errorf("MMDB-only flow:\n got %s\nwant %s", got, want)
	}
	if alias != "uplink to B" {
		t.Errorf("interfaceDescription %q, want the alias %q", alias, "uplink to B")
	}
}
