// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// FuzzDatapath runs arbitrary frames through the real programs (both
// directions) at sample rate 1 and checks what the kernel produced
// against refParse, an independent Go reading of the same frame:
//   - the program returns TCX_NEXT;
//   - exactly one packet and len(frame) bytes land in the counter of the
//     frame's family, nothing in the others;
//   - an IP frame yields at most one event; that event equals what
//     refParse derives, and a frame refParse rejects is counted as
//     malformed instead;
//   - non-IP frames yield no event and no malformed count.
//
// Seeds: testdata/fuzz/FuzzDatapath (regenerate with
// RFM_WRITE_FUZZ_SEEDS=1 go test -run TestWriteDatapathFuzzSeeds).
func FuzzDatapath(f *testing.F) {
	for _, s := range datapathSeeds() {
		f.Add(s.frame)
	}
	tb := newTestbed(f, 1)
	// The same programs with every optional field but the FIB lookup
	// (which depends on the host's routes).
	tbx := newTestbedOpts(f, 1, Options{RingBufSize: 1 << 23, Fields: fieldsAll &^ FieldFIB})
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, dir := range []Direction{Ingress, Egress} {
			checkFrame(t, tb, dir, frame)
			checkFields(t, tbx, dir, frame)
		}
	})
}

// checkFields runs frame through programs loaded with optional fields:
// a frame refParse accepts yields one event with the flow refParse
// derives and the TOS, TTL, TCP flags and VLAN ids it reads; any other
// frame is checked by checkFrame.
func checkFields(t *testing.T, tb *testbed, dir Direction, frame []byte) {
	t.Helper()
	if len(frame) > maxTestRunFrame {
		return
	}
	if _, err := tb.progs[dir].Run(&ebpf.RunOptions{Data: frame}); err != nil {
		return // checkFrame reports what the kernel refuses
	}
	evs := tb.events(t)
	ref := refParse(frame)
	if ref.fam == FamilyOther || ref.bad != "" {
		return
	}
	if len(evs) != 1 {
		t.Fatalf("%s with fields: %d events for a valid frame, want 1; frame %x", dir, len(evs), frame)
	}
	want := ref.ev.EventFields
	if e := evs[0]; !sameFlow(e, ref.ev) || e.EventFields != want {
		t.Fatalf("%s with fields: event\n %+v\nwant\n %+v; frame %x", dir, e, ref.ev, frame)
	}
}

// maxTestRunFrame keeps inputs well inside what BPF_PROG_TEST_RUN accepts
// (a page minus head- and tailroom).
const maxTestRunFrame = 1600

func checkFrame(t *testing.T, tb *testbed, dir Direction, frame []byte) {
	t.Helper()
	if len(frame) > maxTestRunFrame {
		t.Skip("frame longer than BPF_PROG_TEST_RUN takes")
	}
	beforeC := tb.counters(t, dir)
	beforeS, err := tb.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	ret, err := tb.progs[dir].Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		if errors.Is(err, unix.EINVAL) && testRunRejects(frame) {
			t.Skip("BPF_PROG_TEST_RUN rejects frames shorter than Ethernet or the untagged IP header")
		}
		t.Fatalf("%s: test run of %d-byte frame %x: %v", dir, len(frame), frame, err)
	}
	if int32(ret) != -1 {
		t.Fatalf("%s: program returned %d, want TCX_NEXT (-1); frame %x", dir, int32(ret), frame)
	}
	afterC := tb.counters(t, dir)
	afterS, err := tb.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	evs := tb.events(t)

	ref := refParse(frame)
	for f := Family(0); f < numFamilies; f++ {
		wantP, wantB := uint64(0), uint64(0)
		if f == ref.fam {
			wantP, wantB = 1, uint64(len(frame))
		}
		if dp, db := afterC.Packets[f]-beforeC.Packets[f], afterC.Bytes[f]-beforeC.Bytes[f]; dp != wantP || db != wantB {
			t.Errorf("%s: %s counter +%d packets +%d bytes, want +%d/+%d; frame %x", dir, f, dp, db, wantP, wantB, frame)
		}
	}
	if drops := afterS.RingDrops - beforeS.RingDrops; drops != 0 {
		t.Fatalf("%s: %d ring drops with an empty 8 MiB ring", dir, drops)
	}
	malformed := afterS.Malformed - beforeS.Malformed
	if len(evs) > 1 {
		t.Fatalf("%s: %d events for one frame: %+v; frame %x", dir, len(evs), evs, frame)
	}
	switch {
	case ref.fam == FamilyOther:
		if len(evs) != 0 || malformed != 0 {
			t.Fatalf("%s: non-IP frame gave %d events, %d malformed; frame %x", dir, len(evs), malformed, frame)
		}
	case ref.bad != "" && knownPaddingBug && !strictPadding() && len(evs) == 1 &&
		refParseBounded(frame, true).bad == "" && sameFlow(evs[0], refParseBounded(frame, true).ev):
		// bpf/rfm.c reads L4/extension headers up to the end of the
		// frame rather than the end of the IP packet, so Ethernet
		// padding behind a short IP packet becomes ports. Tolerated
		// (and logged) until the datapath bounds reads by the IP length;
		// RFM_FUZZ_STRICT=1 turns it into a failure.
		t.Logf("%s: known datapath bug: %s, yet reported %+v; frame %x", dir, ref.bad, evs[0], frame)
	case ref.bad != "":
		if len(evs) != 0 || malformed != 1 {
			t.Fatalf("%s: frame invalid (%s) but got events %+v and %d malformed, want none and 1; frame %x",
				dir, ref.bad, evs, malformed, frame)
		}
	default:
		if len(evs) != 1 || malformed != 0 {
			t.Fatalf("%s: valid frame gave %d events and %d malformed, want 1 event %+v; frame %x",
				dir, len(evs), malformed, ref.ev, frame)
		}
		if e := evs[0]; !sameFlow(e, ref.ev) || e.Dir != dir || e.Segs != 1 || e.SampleRate != 1 || e.Ifindex == 0 || e.BootNs == 0 {
			t.Fatalf("%s: event\n %+v\nwant\n %+v; frame %x", dir, e, ref.ev, frame)
		}
	}
}

// knownPaddingBug: the datapath takes ports and IPv6 extension headers
// from bytes behind the IP packet's own length (see checkFrame).
const knownPaddingBug = false

func strictPadding() bool { return os.Getenv("RFM_FUZZ_STRICT") == "1" }

// sameFlow compares the fields refParse derives.
func sameFlow(e, w Event) bool {
	return e.Src == w.Src && e.Dst == w.Dst && e.SrcPort == w.SrcPort && e.DstPort == w.DstPort &&
		e.Proto == w.Proto && e.Len == w.Len && e.Truncated == w.Truncated
}

// testRunRejects reports frames the kernel's BPF_PROG_TEST_RUN refuses
// before the program runs: shorter than Ethernet, or an untagged IPv4/IPv6
// ethertype with less than the fixed IP header behind it.
func testRunRejects(frame []byte) bool {
	if len(frame) < 14 {
		return true
	}
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		return len(frame) < 14+20
	case 0x86dd:
		return len(frame) < 14+40
	}
	return false
}

// refResult is refParse's verdict on a frame.
type refResult struct {
	fam Family
	bad string // why an IP frame cannot be reported; "" if ev is valid
	ev  Event  // addresses, ports, proto and length only
}

// Limits the datapath documents (bpf/rfm.c): how many IPv6 extension
// headers it walks (a packet with more is reported without ports, flagged
// truncated) and how many MPLS labels.
const (
	refMaxIPv6ExtHeaders = 8
	refMaxLabels         = 8
)

// refParse reads a frame as the datapath is specified to, written
// independently of bpf/rfm.c: family from the ethertype behind at most
// two VLAN tags (802.1Q or 802.1ad), inside a PPPoE session (PPP
// protocol 0x0021/0x0057) or under an MPLS label stack (the first nibble
// behind the bottom-of-stack label); for IP, the addresses, protocol
// after IPv6 extension headers, total length and the transport ports.
// Every header it reads must lie inside both the frame and the IP
// packet's own length: bytes behind the IP packet (Ethernet padding)
// are not part of the flow.
func refParse(frame []byte) refResult { return refParseBounded(frame, false) }

// refParseBounded is refParse; with toFrameEnd, headers may also lie in
// bytes behind the IP packet, which is what bpf/rfm.c does today (see
// knownPaddingBug).
func refParseBounded(frame []byte, toFrameEnd bool) refResult {
	if len(frame) < 14 {
		return refResult{fam: FamilyOther}
	}
	l3 := 14
	et := binary.BigEndian.Uint16(frame[12:])
	for tags := 0; tags < 2 && isTag(et); tags++ {
		if len(frame) < l3+4 {
			return refResult{fam: FamilyOther}
		}
		et = binary.BigEndian.Uint16(frame[l3+2:])
		l3 += 4
	}
	switch et {
	case 0x8864: // PPPoE session: 6-byte header, then the PPP protocol
		if len(frame) < l3+8 {
			return refResult{fam: FamilyOther}
		}
		switch binary.BigEndian.Uint16(frame[l3+6:]) {
		case 0x0021:
			et = 0x0800
		case 0x0057:
			et = 0x86dd
		default:
			return refResult{fam: FamilyOther}
		}
		l3 += 8
	case 0x8847, 0x8848: // MPLS unicast/multicast label stack
		et = 0
		for labels := 0; labels < refMaxLabels && et == 0; labels++ {
			if len(frame) < l3+5 { // the label and the byte behind it
				return refResult{fam: FamilyOther}
			}
			bottom := frame[l3+2]&1 == 1
			l3 += 4
			if !bottom {
				continue
			}
			switch frame[l3] >> 4 {
			case 4:
				et = 0x0800
			case 6:
				et = 0x86dd
			default:
				return refResult{fam: FamilyOther}
			}
		}
	}
	var r refResult
	switch et {
	case 0x0800:
		r.fam = FamilyIPv4
		r.ev, r.bad = refIPv4(frame, l3, toFrameEnd)
	case 0x86dd:
		r.fam = FamilyIPv6
		r.ev, r.bad = refIPv6(frame, l3, toFrameEnd)
	default:
		return refResult{fam: FamilyOther}
	}
	// Optional VLAN field: the first two tags behind the MAC addresses
	// (BPF_PROG_TEST_RUN leaves every tag in the data).
	if first := binary.BigEndian.Uint16(frame[12:]); isTag(first) && len(frame) >= 20 {
		r.ev.VLANOuter = binary.BigEndian.Uint16(frame[14:]) & 0x0fff
		if isTag(binary.BigEndian.Uint16(frame[16:])) {
			r.ev.VLANInner = binary.BigEndian.Uint16(frame[18:]) & 0x0fff
		}
	}
	return r
}

func isTag(et uint16) bool { return et == 0x8100 || et == 0x88a8 }

func refPorts(proto uint8) bool { return proto == 6 || proto == 17 || proto == 132 || proto == 136 }

// refL4Key reads the flow key's transport fields from the first four
// bytes of the L4 header: the ports, or for ICMP (protocol 1 in IPv4,
// 58 in IPv6) source port 0 and destination port type*256+code, the
// NetFlow convention.
func refL4Key(e *Event, l4 []byte, icmp bool) {
	if icmp {
		e.SrcPort, e.DstPort = 0, uint16(l4[0])<<8|uint16(l4[1])
		return
	}
	e.SrcPort = binary.BigEndian.Uint16(l4[0:])
	e.DstPort = binary.BigEndian.Uint16(l4[2:])
}

func refIPv4(frame []byte, l3 int, toFrameEnd bool) (Event, string) {
	var e Event
	ip := frame[l3:]
	if len(ip) < 20 {
		return e, "shorter than an IPv4 header"
	}
	if ip[0]>>4 != 4 {
		return e, "IP version not 4"
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 {
		return e, "IHL below 5"
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total == 0 { // GSO/BIG TCP: the length is the frame's
		total = len(ip)
	}
	if total < ihl || total > len(ip) {
		return e, fmt.Sprintf("total length %d outside [IHL %d, %d available]", total, ihl, len(ip))
	}
	end := total
	if toFrameEnd {
		end = len(ip)
	}
	e.Src[10], e.Src[11] = 0xff, 0xff
	e.Dst[10], e.Dst[11] = 0xff, 0xff
	copy(e.Src[12:], ip[12:16])
	copy(e.Dst[12:], ip[16:20])
	e.Proto = ip[9]
	e.Len = uint32(total)
	e.TOS, e.TTL = ip[1]&0xfc, ip[8] // optional fields
	icmp := e.Proto == 1
	if binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 || !(refPorts(e.Proto) || icmp) {
		return e, ""
	}
	if ihl+4 > end {
		return e, "ports or ICMP header outside the IP packet"
	}
	refL4Key(&e, ip[ihl:], icmp)
	if e.Proto == 6 && ihl+14 <= total {
		e.TCPFlags = ip[ihl+13]
	}
	return e, ""
}

func refIPv6(frame []byte, l3 int, toFrameEnd bool) (Event, string) {
	var e Event
	ip := frame[l3:]
	if len(ip) < 40 {
		return e, "shorter than an IPv6 header"
	}
	if ip[0]>>4 != 6 {
		return e, "IP version not 6"
	}
	total := int(binary.BigEndian.Uint16(ip[4:])) + 40
	if total == 40 && len(ip) > 40 { // jumbogram / BIG TCP
		total = len(ip)
	}
	if total > len(ip) {
		return e, fmt.Sprintf("payload length %d beyond %d available", total-40, len(ip)-40)
	}
	end := total
	if toFrameEnd {
		end = len(ip)
	}
	copy(e.Src[:], ip[8:24])
	copy(e.Dst[:], ip[24:40])
	e.Len = uint32(total)
	e.TOS, e.TTL = (ip[0]<<4|ip[1]>>4)&0xfc, ip[7] // optional fields
	next := ip[6]
	off := 40 // from the start of the IPv6 header
	for hdr := 0; ; hdr++ {
		switch next {
		case 0, 43, 60, 51, 44:
			if hdr == refMaxIPv6ExtHeaders {
				// Longer chains are still flows: no ports, flagged.
				e.Proto, e.Truncated = next, true
				return e, ""
			}
		}
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if off+8 > end { // every extension header is at least 8 bytes
				return e, "extension header outside the IP packet"
			}
			next, off = ip[off], off+(int(ip[off+1])+1)*8
			continue
		case 51: // AH: length in 4-byte units minus 2
			if off+8 > end {
				return e, "AH outside the IP packet"
			}
			next, off = ip[off], off+(int(ip[off+1])+2)*4
			continue
		case 44: // fragment
			if off+8 > end {
				return e, "fragment header outside the IP packet"
			}
			later := binary.BigEndian.Uint16(ip[off+2:])&0xfff8 != 0
			next, off = ip[off], off+8
			if later {
				e.Proto = next
				return e, ""
			}
			continue
		}
		e.Proto = next
		icmp := next == 58
		if !refPorts(next) && !icmp {
			return e, ""
		}
		if off+4 > end {
			return e, "ports or ICMPv6 header outside the IP packet"
		}
		refL4Key(&e, ip[off:], icmp)
		if next == 6 && off+14 <= total {
			e.TCPFlags = ip[off+13]
		}
		return e, ""
	}
}

type datapathSeed struct {
	name  string
	frame []byte
}

// datapathSeeds are the committed corpus: every truncation of IPv4/IPv6
// UDP/TCP frames (tagged and not), bad IHL, bogus IPv6 extension chains,
// VLAN stacks deeper than supported, zero-length payloads.
func datapathSeeds() []datapathSeed {
	var seeds []datapathSeed
	add := func(name string, frame []byte) { seeds = append(seeds, datapathSeed{name, frame}) }
	eth4, eth6 := ethHeader(0x0800), ethHeader(0x86dd)
	full := map[string][]byte{
		"ipv4-udp":        append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 40000, 53, 6))...),
		"ipv4-tcp-opts":   append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 6, v4opts{optionLen: 8}, l4Header(6, 1234, 443, 0))...),
		"ipv6-udp":        append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 17, nil, l4Header(17, 40000, 53, 6))...),
		"ipv6-tcp-ext":    append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 6, []ext{{typ: 0, len: 8}, {typ: 60, len: 16}}, l4Header(6, 33000, 22, 0))...),
		"qinq-ipv4-udp":   append(ethHeader(0x0800, 0x88a8, 0x8100), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 1, 2, 4))...),
		"dot1q-ipv6-tcp":  append(ethHeader(0x86dd, 0x8100), ipv6Packet(v6a, v6b, 6, nil, l4Header(6, 5, 6, 0))...),
		"ipv4-icmp-ttl":   append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 1, v4opts{}, icmpHeader(11, 0, 28))...),
		"ipv6-icmpv6-ext": append(ethHeader(0x86dd), ipv6Packet(v6a, v6b, 58, []ext{{typ: 0, len: 8}}, icmpHeader(1, 4, 8))...),
	}
	for name, f := range full {
		for n := 0; n <= len(f); n++ {
			add(fmt.Sprintf("trunc-%s-%03d", name, n), f[:n])
		}
	}
	for _, ihl := range []byte{0, 1, 4, 6, 15} {
		p := ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 1, 2, 4))
		p[0] = 0x40 | ihl
		add(fmt.Sprintf("ipv4-ihl-%d", ihl), append(append([]byte{}, eth4...), p...))
	}
	// Total length shorter than the UDP header, followed by Ethernet
	// padding to the 60-byte minimum frame.
	{
		p := ipv4Packet(v4a, v4b, 17, v4opts{}, nil)
		f := append(append([]byte{}, eth4...), p...)
		f = append(f, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		add("ipv4-udp-no-l4-padded", f)
	}
	{
		p := ipv6Packet(v6a, v6b, 17, nil, nil)
		binary.BigEndian.PutUint16(p[4:], 2) // 2 payload bytes: not a UDP header
		f := append(append([]byte{}, eth6...), p...)
		add("ipv6-udp-short-payload-padded", append(f, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0))
	}
	// Zero-length payloads.
	add("ipv4-udp-empty", append(append([]byte{}, eth4...), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 9, 9, 0))...))
	add("ipv6-udp-empty", append(append([]byte{}, eth6...), ipv6Packet(v6a, v6b, 17, nil, l4Header(17, 9, 9, 0))...))
	add("ipv6-no-next-header", append(append([]byte{}, eth6...), ipv6Packet(v6a, v6b, 59, nil, nil)...))
	add("ipv4-no-payload", append(append([]byte{}, eth4...), ipv4Packet(v4a, v4b, 255, v4opts{}, nil)...))
	// IPv6 extension chains.
	dst := ext{typ: 60, len: 8}
	for n := 1; n <= 10; n++ {
		exts := make([]ext, n)
		for i := range exts {
			exts[i] = dst
		}
		add(fmt.Sprintf("ipv6-ext-chain-%d", n), append(append([]byte{}, eth6...), ipv6Packet(v6a, v6b, 17, exts, l4Header(17, 7, 8, 0))...))
	}
	{
		// A header naming itself as next: a loop the walk must bound.
		p := ipv6Packet(v6a, v6b, 60, []ext{dst, dst}, l4Header(17, 7, 8, 0))
		p[40] = 60
		p[48] = 60
		add("ipv6-ext-loop", append(append([]byte{}, eth6...), p...))
	}
	for _, l := range []byte{0, 1, 2, 200, 255} {
		p := ipv6Packet(v6a, v6b, 17, []ext{{typ: 51, len: 12}}, l4Header(17, 1, 2, 8))
		p[41] = l
		add(fmt.Sprintf("ipv6-ah-len-%d", l), append(append([]byte{}, eth6...), p...))
	}
	add("ipv6-frag-first", append(append([]byte{}, eth6...), ipv6Packet(v6a, v6b, 17, []ext{{typ: 44, len: 8}}, l4Header(17, 3, 4, 8))...))
	add("ipv6-frag-later", append(append([]byte{}, eth6...), ipv6Packet(v6a, v6b, 17, []ext{{typ: 44, len: 8, fragOf: 5}}, make([]byte, 16))...))
	add("ipv6-frag-after-hbh", append(append([]byte{}, eth6...), ipv6Packet(v6a, v6b, 6, []ext{{typ: 0, len: 8}, {typ: 44, len: 8}}, l4Header(6, 3, 4, 0))...))
	add("ipv6-ext-huge-len", func() []byte {
		p := ipv6Packet(v6a, v6b, 17, []ext{{typ: 43, len: 8}}, l4Header(17, 1, 2, 0))
		p[41] = 255
		return append(append([]byte{}, eth6...), p...)
	}())
	// VLAN stacks deeper than the two tags the datapath reads.
	udp4 := ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 1, 2, 4))
	add("vlan-3-tags", append(ethHeader(0x0800, 0x88a8, 0x8100, 0x8100), udp4...))
	add("vlan-4-tags", append(ethHeader(0x86dd, 0x8100, 0x8100, 0x8100, 0x8100), ipv6Packet(v6a, v6b, 17, nil, l4Header(17, 1, 2, 4))...))
	add("vlan-tag-then-nothing", ethHeader(0x8100)[:14])
	// Evasion: destination options padding the L4 header far out.
	{
		exts := make([]ext, 9)
		for i := range exts {
			exts[i] = ext{typ: 60, len: 128}
		}
		add("ipv6-ext-padded-far", append(append([]byte{}, eth6...), ipv6Packet(v6a, v6b, 6, exts, l4Header(6, 1, 2, 0))...))
	}
	// MPLS label stacks and PPPoE sessions, and every truncation of them.
	udp6 := ipv6Packet(v6a, v6b, 17, nil, l4Header(17, 1, 2, 4))
	layered := map[string][]byte{
		"mpls1-ipv4":        mplsFrame(1, udp4),
		"mpls3-ipv6":        mplsFrame(3, udp6),
		"dot1q-mpls2-ipv4":  mplsFrame(2, udp4, 0x8100),
		"pppoe-ipv4":        pppoeFrame(0x0021, udp4),
		"dot1q-pppoe-ipv6":  pppoeFrame(0x0057, udp6, 0x8100),
		"pppoe-lcp":         pppoeFrame(0xc021, make([]byte, 8)),
		"mpls9-ipv4":        mplsFrame(9, udp4),
		"mpls1-not-ip":      mplsFrame(1, append([]byte{0x00}, udp4[1:]...)),
		"mpls8-ipv6-qinq":   mplsFrame(8, udp6, 0x88a8, 0x8100),
		"mpls-no-bottom":    ethHeader(0x8847, 0x8100)[:18],
		"pppoe-ipv4-no-ppp": pppoeFrame(0x0021, nil)[:18],
	}
	for name, f := range layered {
		for n := 14; n <= len(f); n += max(1, len(f)/40) {
			add(fmt.Sprintf("trunc-%s-%03d", name, n), f[:n])
		}
		add(name, f)
	}
	add("arp", append(ethHeader(0x0806), make([]byte, 28)...))
	// Optional fields: TCP flags, DSCP with ECN bits, TTL, two tags.
	{
		tcp := l4Header(6, 1234, 443, 0)
		tcp[13] = 0x12
		p4 := ipv4Packet(v4a, v4b, 6, v4opts{}, tcp)
		p4[1], p4[8] = 0xb8|2, 9
		add("fields-qinq-ipv4-tcp", append(ethHeader(0x0800, 0x88a8, 0x8100), p4...))
		tcp = l4Header(6, 1234, 443, 0)
		tcp[13] = 0x11
		p6 := ipv6Packet(v6a, v6b, 6, []ext{{typ: 0, len: 8}}, tcp)
		p6[0], p6[1], p6[7] = 0x6b, 0x83, 200
		add("fields-dot1q-ipv6-tcp", append(ethHeader(0x86dd, 0x8100), p6...))
		add("fields-ipv4-tcp-flags-cut", append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 6, v4opts{}, tcp[:13])...))
	}
	return seeds
}

// TestWriteDatapathFuzzSeeds regenerates testdata/fuzz/FuzzDatapath from
// datapathSeeds when RFM_WRITE_FUZZ_SEEDS=1.
func TestWriteDatapathFuzzSeeds(t *testing.T) {
	if os.Getenv("RFM_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set RFM_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzDatapath")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDatapath")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range datapathSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s.frame)
		if err := os.WriteFile(filepath.Join(dir, s.name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
