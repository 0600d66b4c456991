// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
	protoproducer "github.com/netsampler/goflow2/v2/producer/proto"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// The optional groups through the collectors installed here: what each
// decodes of the BGP context, and that none chokes on the rest.

var allGroups = []string{GroupBGP, GroupBGPCommunities}

// bgpRecords: an IPv4 and an IPv6 flow with a BGP context (communities
// on the first, large ones on the second) and an MMDB-only flow, whose
// context is zero.
func bgpRecords() []flow.Record {
	start := time.Now().Add(-10 * time.Second).Truncate(time.Millisecond)
	mk := func(src, dst string, sport uint16, b flow.BGP) flow.Record {
		r := flow.Record{Start: start, End: start.Add(time.Second), Packets: 4, Bytes: 400,
			Labels: flow.Labels{SrcASN: 64500, DstASN: 64501, BGP: b}, Reason: flow.EndIdleTimeout}
		r.Src, r.Dst = netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
		r.SrcPort, r.DstPort, r.Proto, r.Dir, r.Ifindex = sport, 443, 6, datapath.Ingress, 2
		return r
	}
	comm := func(hi, lo uint16) string {
		return string(binary.BigEndian.AppendUint32(nil, uint32(hi)<<16|uint32(lo)))
	}
	large := func(g, a, b uint32) string {
		return string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, g), a), b))
	}
	return []flow.Record{
		mk("198.18.0.1", "198.19.0.2", 40001, flow.BGP{NextHop: netip.MustParseAddr("::ffff:192.0.2.1").As16(),
			NextAS: 65001, PrevAS: 65002, SrcPrefixLen: 15, DstPrefixLen: 24, Communities: comm(65001, 100) + comm(65001, 200)}),
		mk("2001:db8::1", "2001:db8:1::2", 40002, flow.BGP{NextHop: netip.MustParseAddr("2001:db8::fe").As16(),
			NextAS: 4200000001, PrevAS: 65003, SrcPrefixLen: 32, DstPrefixLen: 48, LargeCommunities: large(4200000001, 7, 8)}),
		mk("198.18.0.3", "198.19.0.4", 40003, flow.BGP{}),
	}
}

// TestGoflow2ProtobufBGP runs the records through goflow2's protobuf
// producer, as goflow2 -format json/bin does: bgp_next_hop, src_net and
// dst_net carry the context. Its FlowMessage has no field for the
// adjacent ASes nor IPFIX communities; they must not cost the record.
func TestGoflow2ProtobufBGP(t *testing.T) {
	recs := bgpRecords()
	got := goflow2Messages(t, encodeGroups(t, DefaultMaxMessageSize, allGroups, recs))
	if len(got) != len(recs) {
		t.Fatalf("goflow2 produced %d flow messages, want %d", len(got), len(recs))
	}
	for i, r := range recs {
		m := got[i]
		wantNH := []byte(nil)
		if nh := netip.AddrFrom16(r.BGP.NextHop); r.BGP.NextHop != ([16]byte{}) {
			wantNH = nh.Unmap().AsSlice()
		} else {
			wantNH = make([]byte, 4) // the IPv4 element, all zero
		}
		if !bytes.Equal(m.BgpNextHop, wantNH) || m.SrcNet != uint32(r.BGP.SrcPrefixLen) || m.DstNet != uint32(r.BGP.DstPrefixLen) ||
			m.SrcAs != r.SrcASN || m.DstAs != r.DstASN {
			t.Errorf("flow %d: goflow2 bgp_next_hop %v src_net %d dst_net %d src_as %d dst_as %d; want %v /%d /%d %d %d",
				i, m.BgpNextHop, m.SrcNet, m.DstNet, m.SrcAs, m.DstAs, wantNH, r.BGP.SrcPrefixLen, r.BGP.DstPrefixLen, r.SrcASN, r.DstASN)
		}
	}
}

// TestNfdumpDecodesBGP: nfcapd stores the BGP next hop and both prefix
// lengths, and skips the community lists. nfdump 1.7.1 does not read
// bgpNext/PrevAdjacentAsNumber (IEs 128/129) from IPFIX: %nas and %pas
// stay 0, which the test pins so a newer nfdump that reads them shows up.
func TestNfdumpDecodesBGP(t *testing.T) {
	nfcapd := lookTool(t, "nfcapd", "nfdump")
	nfdump := lookTool(t, "nfdump", "nfdump")
	dir := t.TempDir()
	proc, port := startNfcapd(t, nfcapd, dir)
	e, err := New(Config{Collector: fmt.Sprintf("127.0.0.1:%d", port), Optional: allGroups}, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := bgpRecords()
	e.ExportFlows(recs)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(proc.Output(), "src port ") < len(recs) {
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
	out, err := exec.Command(nfdump, "-r", files[0], "-q", "-N", "-o", "fmt:%sa %da %nhb %smk %dmk %nas %pas %pkt").CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump: %v\n%s", err, out)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{
		"198.18.0.1 198.19.0.2 192.0.2.1 15 24 0 0 4",
		"2001:db8::1 2001:db8:1::2 2001:db8::fe 32 48 0 0 4",
		"198.18.0.3 198.19.0.4 0.0.0.0 0 0 0 0 4",
	} {
		if !lines[want] {
			t.Errorf("nfdump lacks %q; it printed:\n%s", want, out)
		}
	}
}

// TestTsharkDecodesBGP: Wireshark decodes every optional element, the
// basicLists included, with no malformed field.
func TestTsharkDecodesBGP(t *testing.T) {
	tshark := lookTool(t, "tshark", "tshark")
	col := startCollector(t, "udp4", "127.0.0.1:0")
	e := newTestExporter(t, Config{Collector: col.addr.String(), Optional: allGroups})
	recs := bgpRecords()
	e.ExportFlows(recs)
	e.Close()
	msgs := col.waitFor(t, 3*time.Second, "all flows", func(m []decodedMessage) bool { return countFlows(m) == len(recs) })
	_, from, _ := col.snapshot()
	pcap := filepath.Join(t.TempDir(), "bgp.pcap")
	f, err := os.Create(pcap)
	if err != nil {
		t.Fatal(err)
	}
	writePcap(t, f, from, col.addr, msgs)
	f.Close()

	fields := []string{"_ws.malformed", "_ws.expert.message", "cflow.bgpnexthop", "cflow.bgpnexthopv6",
		"cflow.srcmask", "cflow.dstmask", "cflow.srcmaskv6", "cflow.dstmaskv6", "cflow.peer_dstas", "cflow.peer_srcas",
		"cflow.bgp_destination_community", "cflow.bgp_source_destination_community"}
	args := []string{"-n", "-r", pcap, "-d", fmt.Sprintf("udp.port==%d,cflow", col.addr.Port()), "-T", "fields", "-E", "separator=|"}
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
			cols[1] = ""
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
	want := map[string]string{
		"cflow.bgpnexthop":   "192.0.2.1 0.0.0.0",
		"cflow.bgpnexthopv6": "2001:db8::fe",
		"cflow.srcmask":      "15 0",
		"cflow.dstmask":      "24 0",
		"cflow.srcmaskv6":    "32",
		"cflow.dstmaskv6":    "48",
		"cflow.peer_dstas":   "65001 0 4200000001",
		"cflow.peer_srcas":   "65002 0 65003",
		// Wireshark 4.0 shows the basicLists (RFC 6313: semantic allOf,
		// element ID and length, the elements) as bytes; it names IE
		// 491 "BGP Source Destination Community".
		"cflow.bgp_destination_community":        "0301e30004fde90064fde900c8 0301e30004 0301e30004",
		"cflow.bgp_source_destination_community": "0301e9000c 0301e9000c 0301e9000cfa56ea010000000700000008",
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

// TestNfacctdDecodesBGP: pmacct's nfacctd takes the BGP next hop
// (peer_dst_ip), the prefix lengths (src_mask, dst_mask) and the
// adjacent ASes (peer_src_as, peer_dst_as) from the records.
func TestNfacctdDecodesBGP(t *testing.T) {
	client := lookTool(t, "pmacct", "pmacct")
	proc, port, pipe := startNfacctd(t, `nfacctd_as: netflow
nfacctd_net: netflow
aggregate[m]: src_host, dst_host, peer_dst_ip, src_mask, dst_mask, peer_src_as, peer_dst_as
`, nil)
	e, err := New(Config{Collector: fmt.Sprintf("127.0.0.1:%d", port), Optional: allGroups}, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := bgpRecords()
	e.ExportFlows(recs)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	// pmacct -s prints the aggregate's columns in its own order:
	// PEER_SRC_AS PEER_DST_AS PEER_DST_IP SRC_IP DST_IP SRC_MASK DST_MASK,
	// then packets and bytes.
	want := []string{
		"65002 65001 192.0.2.1 198.18.0.1 198.19.0.2 15 24 4 400",
		"65003 4200000001 2001:db8::fe 2001:db8::1 2001:db8:1::2 32 48 4 400",
		"0 0 0.0.0.0 198.18.0.3 198.19.0.4 0 0 4 400",
	}
	var table []byte
	deadline := time.Now().Add(15 * time.Second)
	for {
		table, _ = exec.Command(client, "-p", pipe, "-s").CombinedOutput()
		text := " " + strings.Join(strings.Fields(string(table)), " ") + " "
		missing := 0
		for _, w := range want {
			if !strings.Contains(text, " "+w+" ") {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pmacct -s lacks %d of %q:\n%s\nnfacctd:\n%s", missing, want, table, proc.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// goflow2Messages decodes IPFIX messages with goflow2's decoder and runs
// its protobuf producer on them, as a goflow2 collector would.
func goflow2Messages(t *testing.T, messages [][]byte) []*protoproducer.ProtoProducerMessage {
	t.Helper()
	cfg, err := (&protoproducer.ProducerConfig{}).Compile()
	if err != nil {
		t.Fatal(err)
	}
	templates := netflow.CreateTemplateSystem()
	var got []*protoproducer.ProtoProducerMessage
	for i, b := range messages {
		var pkt netflow.IPFIXPacket
		var v9 netflow.NFv9Packet
		if err := netflow.DecodeMessageVersion(bytes.NewBuffer(b), templates, &v9, &pkt); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		msgs, err := protoproducer.ProcessMessageIPFIXConfig(&pkt, protoproducer.CreateSamplingSystem(), cfg)
		if err != nil {
			t.Fatalf("message %d: goflow2 producer: %v", i, err)
		}
		for _, m := range msgs {
			got = append(got, m.(*protoproducer.ProtoProducerMessage))
		}
	}
	return got
}
