// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/flow"
)

// nfacctdPrimitives defines, for nfacctd's aggregate_primitives map, the
// optional elements it has no primitive of its own for: the ICMP type and
// code, the TTLs and the inner VLAN id (IANA IE numbers and lengths).
const nfacctdPrimitives = `name=icmp4 field_type=32 len=2 semantics=u_int
name=icmp6 field_type=139 len=2 semantics=u_int
name=ttl_min field_type=52 len=1 semantics=u_int
name=ttl_max field_type=53 len=1 semantics=u_int
name=cvlan field_type=245 len=2 semantics=u_int
`

// TestOptionalFieldsNfacctd: pmacct's nfacctd, with every optional field
// on, reads tcpControlBits (tcpflags), ipClassOfService (tos), the outer
// VLAN (vlan), the egress interface (out_iface) and the IP next hop
// (peer_dst_ip with use_ip_next_hop) as its own primitives; the ICMP
// type/code, TTLs and inner VLAN through custom primitives.
func TestOptionalFieldsNfacctd(t *testing.T) {
	client := lookTool(t, "pmacct", "pmacct")
	_, port, pipe := startNfacctd(t, `nfacctd_net: netflow
use_ip_next_hop: true
aggregate_primitives: $primitives.lst
aggregate[m]: src_host, dst_host, proto, dst_port, tcpflags, tos, vlan, in_iface, out_iface, peer_dst_ip, icmp4, icmp6, ttl_min, ttl_max, cvlan
`, map[string]string{"primitives.lst": nfacctdPrimitives})
	e, err := New(Config{Collector: fmt.Sprintf("127.0.0.1:%d", port), SampleRate: 1, Fields: fieldsAll}, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := optionalRecords()
	e.ExportFlows(recs)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// What each record must read as, from optionalRecords' values: TCP
	// flags 0x13 on every record (nfacctd prints the decimal 19), TOS 0xb8 (184), VLANs
	// 10 and 20, egress interface 7, TTLs 60 and 70.
	want := map[string]map[string]any{}
	for _, r := range recs {
		src := netip.AddrFrom16(r.Src).Unmap().String()
		w := map[string]any{"ip_dst": netip.AddrFrom16(r.Dst).Unmap().String(), "tos": 184.0, "vlan": 10.0,
			"iface_in": 2.0, "iface_out": 7.0, "ttl_min": "60", "ttl_max": "70", "cvlan": "20",
			"port_dst": float64(r.DstPort), "icmp4": "0", "icmp6": "0", "tcp_flags": "19", "packets": 3.0}
		nh := netip.AddrFrom16(r.NextHop)
		if r.IsIPv4() {
			nh = netip.AddrFrom4([4]byte(r.NextHop[12:]))
		}
		w["peer_ip_dst"] = nh.String()
		switch r.Proto {
		case 1:
			w["icmp4"] = fmt.Sprint(r.DstPort)
		case 58:
			w["icmp6"] = fmt.Sprint(r.DstPort)
		}
		want[src] = w
	}

	var got map[string]map[string]any
	var out []byte
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _ = exec.Command(client, "-p", pipe, "-s", "-O", "json").CombinedOutput()
		got = map[string]map[string]any{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				if src, ok := m["ip_src"].(string); ok {
					got[src] = m
				}
			}
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(got) != len(want) {
		t.Fatalf("pmacct -s has %d flows, want %d:\n%s", len(got), len(want), out)
	}
	for src, w := range want {
		for k, v := range w {
			if got[src][k] != v {
				t.Errorf("flow from %s: nfacctd %s = %v (%T), want %v", src, k, got[src][k], got[src][k], v)
			}
		}
	}
	if t.Failed() {
		t.Logf("pmacct -s -O json:\n%s", out)
	}
}

// TestTsharkAllFieldsAndBGP: Wireshark reads every optional field, the
// BGP context and both community lists in one record without a
// malformed field, each element at the value of its record.
func TestTsharkAllFieldsAndBGP(t *testing.T) {
	tshark := lookTool(t, "tshark", "tshark")
	recs := optionalRecords()
	for i := range recs {
		recs[i].BGP = flow.BGP{NextHop: netip.MustParseAddr("::ffff:192.0.2.9").As16(), NextAS: 65001, PrevAS: 64999,
			SrcPrefixLen: 16, DstPrefixLen: 24, Communities: string(binary.BigEndian.AppendUint32(nil, 65001<<16|7)),
			LargeCommunities: string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 4200000001), 1), 2))}
		if !recs[i].IsIPv4() {
			recs[i].BGP.NextHop = netip.MustParseAddr("2001:db8::9").As16()
			recs[i].BGP.SrcPrefixLen, recs[i].BGP.DstPrefixLen = 32, 48
		}
	}
	// The test collector's decoder knows the two parts only apart, so
	// the message is built here as the exporter builds it.
	m := newMessageLayout(DefaultMaxMessageSize, mustLayout(newFlowLayout(fieldsAll), allGroups))
	if !m.addTemplates() {
		t.Fatal("templates do not fit")
	}
	exp := &Exporter{defaultRate: 1, communities: true}
	for i := range recs {
		f := exp.entryWithCommunities(&recs[i], &m.comms)
		if !m.addFlow(&f) {
			t.Fatal("records do not fit")
		}
	}
	raw := append([]byte(nil), m.finish(1740830400, 0, 1)...)
	from, to := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:4739")
	pcap := filepath.Join(t.TempDir(), "all.pcap")
	f, err := os.Create(pcap)
	if err != nil {
		t.Fatal(err)
	}
	writePcap(t, f, []netip.AddrPort{from}, to, []decodedMessage{{Raw: raw}})
	f.Close()

	fields := []string{"_ws.malformed", "_ws.expert.message", "cflow.tcpflags", "cflow.tos", "cflow.ttl_min", "cflow.ttl_max",
		"cflow.dot1q_vlan_id", "cflow.dot1q_customer_vlan_id", "cflow.outputint", "cflow.nexthop", "cflow.nexthopv6",
		"cflow.icmp_type_code_ipv4", "cflow.bgpnexthop", "cflow.bgpnexthopv6", "cflow.peer_dstas", "cflow.peer_srcas",
		"cflow.bgp_destination_community", "cflow.bgp_source_destination_community"}
	args := []string{"-n", "-r", pcap, "-d", "udp.port==4739,cflow", "-T", "fields", "-E", "separator=|"}
	for _, fl := range fields {
		args = append(args, "-e", fl)
	}
	out, err := exec.Command(tshark, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	all := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "|")
		if len(cols) != len(fields) {
			continue
		}
		if strings.HasPrefix(cols[1], "Possible traceroute") {
			cols[1] = "" // the records' TTLs, not a decoding problem
		}
		if cols[0] != "" || cols[1] != "" {
			t.Errorf("tshark: malformed %q, expert %q", cols[0], cols[1])
		}
		for i, c := range cols[2:] {
			if c != "" {
				all[fields[i+2]] = append(all[fields[i+2]], strings.Split(c, ",")...)
			}
		}
	}
	// Record order: the IPv4 records (TCP, ICMP), then the IPv6 ones.
	want := map[string]string{
		"cflow.tcpflags":                  "0x13 0x13 0x13 0x13",
		"cflow.tos":                       "0xb8 0xb8 0xb8 0xb8",
		"cflow.ttl_min":                   "60 60 60 60",
		"cflow.ttl_max":                   "70 70 70 70",
		"cflow.dot1q_vlan_id":             "10 10 10 10",
		"cflow.dot1q_customer_vlan_id":    "20 20 20 20",
		"cflow.outputint":                 "7 7 7 7",
		"cflow.nexthop":                   "198.18.0.254 0.0.0.0",
		"cflow.nexthopv6":                 "2001:db8:c::fe ::",
		"cflow.icmp_type_code_ipv4":       "0x0000 0x0b00",
		"cflow.bgpnexthop":                "192.0.2.9 192.0.2.9",
		"cflow.bgpnexthopv6":              "2001:db8::9 2001:db8::9",
		"cflow.peer_dstas":                "65001 65001 65001 65001",
		"cflow.peer_srcas":                "64999 64999 64999 64999",
		"cflow.bgp_destination_community": "0301e30004fde90007 0301e30004fde90007 0301e30004fde90007 0301e30004fde90007",
		// IE 491, which Wireshark 4.0 names "BGP Source Destination Community".
		"cflow.bgp_source_destination_community": strings.Repeat("0301e9000cfa56ea010000000100000002 ", 4)[:4*35-1],
	}
	for name, w := range want {
		if got := strings.Join(all[name], " "); got != w {
			t.Errorf("tshark %s = %q, want %q", name, got, w)
		}
	}
	if t.Failed() {
		t.Logf("tshark output:\n%s", out)
	}
}

// TestOptionalFieldsGoflow2Protobuf: goflow2's protobuf producer (what
// goflow2 -format json/bin emits) maps tcpControlBits, ipClassOfService,
// minimumTTL, the ICMP type and code, egressInterface and the next hop
// to FlowMessage fields. maximumTTL and the dot1q VLAN ids have none
// (its vlan_id comes from vlanId, IE 58): the test pins that they stay
// zero, so a goflow2 that maps them shows up here.
func TestOptionalFieldsGoflow2Protobuf(t *testing.T) {
	recs := optionalRecords()
	got := goflow2Messages(t, encodeFields(t, fieldsAll, recs))
	if len(got) != len(recs) {
		t.Fatalf("goflow2 produced %d flow messages, want %d", len(got), len(recs))
	}
	for _, m := range got {
		src, _ := netip.AddrFromSlice(m.SrcAddr)
		i := slices.IndexFunc(recs, func(r flow.Record) bool { return netip.AddrFrom16(r.Src).Unmap() == src.Unmap() })
		if i < 0 {
			t.Fatalf("goflow2 message from %v, which was not sent", src)
		}
		r := recs[i]
		var icmpType, icmpCode uint32
		if r.Proto == 1 || r.Proto == 58 {
			icmpType, icmpCode = uint32(r.DstPort>>8), uint32(r.DstPort&0xff)
		}
		nh := netip.AddrFrom16(r.NextHop)
		if r.IsIPv4() {
			nh = netip.AddrFrom4([4]byte(r.NextHop[12:]))
		}
		gotNH, _ := netip.AddrFromSlice(m.NextHop)
		if m.TcpFlags != 0x13 || m.IpTos != 0xb8 || m.IpTtl != 60 || m.IcmpType != icmpType || m.IcmpCode != icmpCode ||
			m.OutIf != 7 || gotNH != nh || m.VlanId != 0 || m.SrcVlan != 0 || m.DstVlan != 0 {
			t.Errorf("flow from %v: goflow2 tcp_flags %#x ip_tos %#x ip_ttl %d icmp %d.%d out_if %d next_hop %v vlan_id %d src_vlan %d dst_vlan %d; "+
				"want 0x13 0xb8 60 %d.%d 7 %v 0 0 0", src, m.TcpFlags, m.IpTos, m.IpTtl, m.IcmpType, m.IcmpCode, m.OutIf, gotNH,
				m.VlanId, m.SrcVlan, m.DstVlan, icmpType, icmpCode, nh)
		}
	}
}

// encodeFields encodes recs with the optional fields sel into messages,
// templates first, as the exporter sends them.
func encodeFields(t *testing.T, sel Fields, recs []flow.Record) [][]byte {
	t.Helper()
	m := newMessage(DefaultMaxMessageSize).withFields(sel)
	if !m.addTemplates() {
		t.Fatal("templates do not fit")
	}
	e := &Exporter{defaultRate: 1}
	for i := range recs {
		f := e.entryFromRecord(&recs[i])
		if !m.addFlow(&f) {
			t.Fatal("records do not fit")
		}
	}
	return [][]byte{append([]byte(nil), m.finish(1740830400, 0, 1)...)}
}
