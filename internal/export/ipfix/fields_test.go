// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"bytes"
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

	"github.com/netsampler/goflow2/v2/decoders/netflow"

	"github.com/stepbrobd/rfm/internal/flow"
)

// optionalIEs is, per selectable field, the IANA elements the IPv4 and
// IPv6 templates must gain (written from the IANA registry, not from
// fields.go).
var optionalIEs = map[Fields][2][]uint16{
	FieldTCPFlags: {{6}, {6}},
	FieldDSCP:     {{5}, {5}},
	FieldICMP:     {{32}, {139}},
	FieldTTL:      {{52, 53}, {52, 53}},
	FieldVLAN:     {{243, 245}, {243, 245}},
	FieldNextHop:  {{15}, {62}},
}

// The flow templates carry exactly the fields selected, and the encoder
// writes as many bytes as each template says; templates and the largest
// record still fit the smallest message.
func TestOptionalFieldTemplates(t *testing.T) {
	for sel := Fields(0); sel <= fieldsAll; sel++ {
		l := newFlowLayout(sel)
		for fam, fields := range [2][]fieldSpec{l.fieldsV4, l.fieldsV6} {
			base := [2][]fieldSpec{fieldsV4, fieldsV6}[fam]
			var want []uint16
			for _, f := range base {
				want = append(want, f.id)
			}
			for bit := Fields(1); bit <= fieldsAll; bit <<= 1 {
				if sel&bit != 0 {
					want = append(want, optionalIEs[bit][fam]...)
				}
			}
			var got []uint16
			for _, f := range fields {
				got = append(got, f.id)
			}
			if !slices.Equal(got, want) {
				t.Errorf("fields %#x family %d: template IEs %v, want %v", sel, fam, got, want)
			}
		}
		if specLen(l.fieldsV4) != l.lenV4 || specLen(l.fieldsV6) != l.lenV6 {
			t.Errorf("fields %#x: templates add up to %d/%d bytes, records are %d/%d", sel, specLen(l.fieldsV4), specLen(l.fieldsV6), l.lenV4, l.lenV6)
		}
		m := newMessage(MinMessageSize).withFields(sel)
		if !m.addTemplates() || !m.addSampling(1, 1) {
			t.Errorf("fields %#x: templates do not fit a %d-byte message", sel, MinMessageSize)
		}
		m = newMessage(MinMessageSize).withFields(sel)
		v6 := optionalRecords()[1]
		if e := (&Exporter{defaultRate: 1}).entryFromRecord(&v6); !m.addFlow(&e) {
			t.Errorf("fields %#x: an IPv6 record does not fit a %d-byte message", sel, MinMessageSize)
		}
	}
}

// optionalRecords are records with every optional field set: an
// ingress TCP flow routed by the FIB through a gateway, in IPv4 and
// IPv6, and ICMP flows (time exceeded, port unreachable).
func optionalRecords() []flow.Record {
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	mk := func(src, dst, nh string, proto uint8, sport, dport uint16) flow.Record {
		r := flow.Record{Start: base, End: base.Add(time.Second), Packets: 3, Bytes: 300, SampleRate: 1,
			TCPFlags: 0x13, MinTTL: 60, MaxTTL: 70, OutIfindex: 7, Reason: flow.EndIdleTimeout}
		r.Src, r.Dst = netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
		if nh != "" {
			r.NextHop = netip.MustParseAddr(nh).As16()
		}
		r.Ifindex, r.Proto, r.SrcPort, r.DstPort = 2, proto, sport, dport
		r.TOS, r.VLANOuter, r.VLANInner = 0xb8, 10, 20
		return r
	}
	return []flow.Record{
		mk("198.18.0.2", "198.19.0.2", "198.18.0.254", 6, 40000, 443),
		mk("2001:db8:c::2", "2001:db8:5::2", "2001:db8:c::fe", 6, 40001, 443),
		mk("198.18.0.1", "198.18.0.2", "", 1, 0, 11<<8),
		mk("2001:db8:5::2", "2001:db8:c::2", "", 58, 0, 1<<8|4),
	}
}

// goflow2 decodes every optional element with the value of the record.
func TestOptionalFieldsGoflow2(t *testing.T) {
	recs := optionalRecords()
	m := newMessage(DefaultMaxMessageSize).withFields(fieldsAll)
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
	b := m.finish(1740830400, 0, 1)
	var v9 netflow.NFv9Packet
	var pkt netflow.IPFIXPacket
	if err := netflow.DecodeMessageVersion(bytes.NewBuffer(b), netflow.CreateTemplateSystem(), &v9, &pkt); err != nil {
		t.Fatal(err)
	}
	var got []map[uint16][]byte
	for _, fs := range pkt.FlowSets {
		if s, ok := fs.(netflow.DataFlowSet); ok {
			for _, r := range s.Records {
				fm, err := fieldMap(r.Values)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, fm)
			}
		}
	}
	if len(got) != len(recs) {
		t.Fatalf("goflow2 decoded %d records, want %d", len(got), len(recs))
	}
	for _, fm := range got {
		v4 := fm[8] != nil
		proto := beUint(fm[4])
		want := map[uint16]uint64{6: 0x13, 5: 0xb8, 52: 60, 53: 70, 243: 10, 245: 20, 14: 7}
		switch {
		case v4 && proto == 1:
			want[32] = 11 << 8
		case !v4 && proto == 58:
			want[139] = 1<<8 | 4
		case v4:
			want[32] = 0
		default:
			want[139] = 0
		}
		for ie, w := range want {
			if v, ok := fm[ie]; !ok || beUint(v) != w {
				t.Errorf("record (IPv4 %v, proto %d): IE %d = %x, want %d", v4, proto, ie, v, w)
			}
		}
		nh, ie := fm[15], "15"
		if !v4 {
			nh, ie = fm[62], "62"
		}
		a, _ := netip.AddrFromSlice(nh)
		wantNH := map[uint64]string{6: "198.18.0.254", 1: "0.0.0.0"}[proto]
		if !v4 {
			wantNH = map[uint64]string{6: "2001:db8:c::fe", 58: "::"}[proto]
		}
		if a.String() != wantNH {
			t.Errorf("record (IPv4 %v, proto %d): next hop IE %s = %v, want %s", v4, proto, ie, a, wantNH)
		}
	}
}

// nfdump stores and prints every optional element it knows.
func TestOptionalFieldsNfdump(t *testing.T) {
	nfcapd := lookTool(t, "nfcapd", "nfdump")
	nfdump := lookTool(t, "nfdump", "nfdump")
	dir := t.TempDir()
	proc, port := startNfcapd(t, nfcapd, dir)
	e, err := New(Config{Collector: fmt.Sprintf("127.0.0.1:%d", port), SampleRate: 1, Fields: fieldsAll}, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := optionalRecords()
	e.ExportFlows(recs)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(proc.Output(), "Flow Record:") < len(recs) {
		if time.Now().After(deadline) {
			t.Fatalf("nfcapd stored fewer than %d records; output:\n%s", len(recs), proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := proc.Stop(10 * time.Second); err != nil {
		t.Fatalf("stopping nfcapd: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "nfcapd.2*"))
	if len(files) != 1 {
		t.Fatalf("nfcapd files %v, want one", files)
	}
	out, err := exec.Command(nfdump, "-r", files[0], "-q", "-N", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump: %v\n%s", err, out)
	}
	if out = bytes.TrimSpace(out); len(out) > 0 && out[0] != '[' {
		out = append(append([]byte("["), out...), ']')
	}
	var got []map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("nfdump -o json: %v\n%s", err, out)
	}
	// nfdump 1.7.1 keeps tcpControlBits, ipClassOfService, the egress
	// interface and the next hop; it drops minimum/maximumTTL and the
	// dot1q VLAN ids, and shows icmpTypeCode with type and code swapped
	// (it reads the destination port convention right): see docs/ipfix.md.
	if len(got) != len(recs) {
		t.Fatalf("nfdump printed %d records, want %d:\n%s", len(got), len(recs), out)
	}
	for _, r := range got {
		nh := r["ip4_next_hop"]
		if r["src6_addr"] != nil {
			nh = r["ip6_next_hop"]
		}
		want := map[string]any{"src_tos": float64(0xb8), "output_snmp": float64(7)}
		switch r["proto"] {
		case float64(6):
			want["tcp_flags"] = "...A..SF"
			want["nh"] = map[bool]string{true: "198.18.0.254", false: "2001:db8:c::fe"}[r["src4_addr"] != nil]
		default:
			want["nh"] = map[bool]string{true: "0.0.0.0", false: "::"}[r["src4_addr"] != nil]
		}
		r["nh"] = nh
		for k, w := range want {
			if r[k] != w {
				t.Errorf("nfdump record %v %v: %s = %v, want %v", r["proto"], r["src_port"], k, r[k], w)
			}
		}
	}
	if t.Failed() {
		t.Logf("nfdump -o json:\n%s", out)
	}
}

// tshark decodes every optional element, malformed nowhere.
func TestOptionalFieldsTshark(t *testing.T) {
	tshark := lookTool(t, "tshark", "tshark")
	recs := optionalRecords()
	m := newMessage(DefaultMaxMessageSize).withFields(fieldsAll)
	m.addTemplates()
	e := &Exporter{defaultRate: 1}
	for i := range recs {
		f := e.entryFromRecord(&recs[i])
		m.addFlow(&f)
	}
	raw := append([]byte(nil), m.finish(1740830400, 0, 1)...)
	from, to := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:4739")
	pcap := filepath.Join(t.TempDir(), "fields.pcap")
	f, err := os.Create(pcap)
	if err != nil {
		t.Fatal(err)
	}
	writePcap(t, f, []netip.AddrPort{from}, to, []decodedMessage{{Raw: raw}})
	f.Close()
	fields := []string{"_ws.malformed", "_ws.expert.message", "cflow.tcpflags", "cflow.tos", "cflow.icmp_type_code_ipv4",
		"cflow.ttl_min", "cflow.ttl_max", "cflow.dot1q_vlan_id", "cflow.dot1q_customer_vlan_id", "cflow.nexthop", "cflow.nexthopv6"}
	args := []string{"-n", "-r", pcap, "-d", "udp.port==4739,cflow", "-T", "fields"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command(tshark, args...).Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	cols := strings.Split(strings.TrimRight(string(out), "\n"), "\t")
	if len(cols) != len(fields) {
		t.Fatalf("tshark printed %q, want %d columns", out, len(fields))
	}
	// One value per record that has the element, in record order: the
	// IPv4 records (TCP, ICMP time exceeded) come before the IPv6 ones.
	want := []string{"", "", "0x13,0x13,0x13,0x13", "0xb8,0xb8,0xb8,0xb8", "0x0000,0x0b00",
		"60,60,60,60", "70,70,70,70", "10,10,10,10", "20,20,20,20", "198.18.0.254,0.0.0.0", "2001:db8:c::fe,::"}
	for i := range fields {
		if cols[i] != want[i] {
			t.Errorf("tshark %s = %q, want %q", fields[i], cols[i], want[i])
		}
	}
}
