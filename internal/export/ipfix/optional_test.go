// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/netsampler/goflow2/v2/decoders/netflow"

	"github.com/stepbrobd/rfm/internal/flow"
)

// wantFlowGroups is wantFlow with the optional groups of a layout,
// computed from the record independently of the encoder.
func wantFlowGroups(r *flow.Record, groups []string) decodedFlow {
	w := wantFlow(r)
	if slices.Contains(groups, GroupBGP) {
		b := &r.BGP
		nh := netip.AddrFrom16(b.NextHop)
		if w.Src.Is4() {
			nh = netip.IPv4Unspecified()
			if a := netip.AddrFrom16(b.NextHop); a.Is4In6() {
				nh = a.Unmap()
			}
		}
		w.BGPNextHop, w.SrcPrefixLen, w.DstPrefixLen, w.NextAS, w.PrevAS = nh, b.SrcPrefixLen, b.DstPrefixLen, b.NextAS, b.PrevAS
	}
	if slices.Contains(groups, GroupBGPCommunities) {
		var std, large []string
		for v := r.BGP.Communities; len(v) >= 4 && len(std) < 40; v = v[4:] {
			std = append(std, fmt.Sprintf("%d:%d", uint16(v[0])<<8|uint16(v[1]), uint16(v[2])<<8|uint16(v[3])))
		}
		for v := []byte(r.BGP.LargeCommunities); len(v) >= 12 && len(large) < 12; v = v[12:] {
			large = append(large, fmt.Sprintf("%d:%d:%d", binary.BigEndian.Uint32(v), binary.BigEndian.Uint32(v[4:]), binary.BigEndian.Uint32(v[8:])))
		}
		w.Communities, w.LargeCommunities = strings.Join(std, " "), strings.Join(large, " ")
	}
	return w
}

// encodeGroups encodes recs with the templates of groups, as the
// exporter does, into messages of at most maxSize bytes.
func encodeGroups(t testing.TB, maxSize int, groups []string, recs []flow.Record) [][]byte {
	t.Helper()
	lay, err := newLayout(baseLayout, groups)
	if err != nil {
		t.Fatal(err)
	}
	exp := &Exporter{defaultRate: 1, communities: slices.Contains(groups, GroupBGPCommunities)}
	m := newMessageLayout(maxSize, lay)
	var out [][]byte
	var seq uint32
	emit := func() {
		if !m.empty() {
			b := m.finish(1740830400, seq, 1)
			seq += m.dataRecords
			out = append(out, append([]byte(nil), b...))
			m.reset()
		}
	}
	if !m.addTemplates() || !m.addSampling(1, 1) {
		t.Fatal("templates do not fit")
	}
	emit()
	for i := range recs {
		e := exp.entryWithCommunities(&recs[i], &m.comms)
		if !m.addFlow(&e) {
			emit()
			if !m.addSampling(1, 1) || !m.addFlow(&e) {
				t.Fatal("record does not fit in a message after a sampling record")
			}
		}
	}
	emit()
	return out
}

func TestRoundTripGoflow2OptionalGroups(t *testing.T) {
	many := testRecord(4)
	for i := range 100 {
		many.BGP.Communities += string(binary.BigEndian.AppendUint32(nil, 65001<<16|uint32(i)))
		many.BGP.LargeCommunities += string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 1), 2), uint32(i)))
	}
	recs := append(testRecords(120), many)
	for _, groups := range [][]string{{GroupBGP}, {GroupBGPCommunities}, {GroupBGP, GroupBGPCommunities}} {
		t.Run(strings.Join(groups, "+"), func(t *testing.T) {
			for _, size := range []int{MinMessageSize, DefaultMaxMessageSize} {
				msgs := encodeGroups(t, size, groups, recs)
				c := newGoflowCollector()
				var flows []decodedFlow
				for i, b := range msgs {
					m, err := c.decode(b)
					if err != nil {
						t.Fatalf("message %d: %v", i, err)
					}
					if len(b) > size || m.Undecodable != 0 {
						t.Fatalf("message %d: %d bytes (limit %d), %d undecodable sets", i, len(b), size, m.Undecodable)
					}
					if i == 0 {
						checkOptionalTemplates(t, m, groups)
					}
					flows = append(flows, m.Flows...)
				}
				if len(flows) != len(recs) {
					t.Fatalf("decoded %d flows, want %d", len(flows), len(recs))
				}
				for i := range recs {
					if want := wantFlowGroups(&recs[i], groups); flows[i] != want {
						t.Errorf("size %d, flow %d:\n got %+v\nwant %+v", size, i, flows[i], want)
					}
				}
			}
		})
	}
}

// checkOptionalTemplates compares the optional part of the decoded flow
// templates with the elements docs/ipfix.md lists.
func checkOptionalTemplates(t *testing.T, m decodedMessage, groups []string) {
	t.Helper()
	var want4, want6 []netflow.Field
	if slices.Contains(groups, GroupBGP) {
		want4 = append(want4, netflow.Field{Type: 18, Length: 4}, netflow.Field{Type: 9, Length: 1}, netflow.Field{Type: 13, Length: 1},
			netflow.Field{Type: 128, Length: 4}, netflow.Field{Type: 129, Length: 4})
		want6 = append(want6, netflow.Field{Type: 63, Length: 16}, netflow.Field{Type: 29, Length: 1}, netflow.Field{Type: 30, Length: 1},
			netflow.Field{Type: 128, Length: 4}, netflow.Field{Type: 129, Length: 4})
	}
	if slices.Contains(groups, GroupBGPCommunities) {
		lists := []netflow.Field{{Type: 485, Length: 0xffff}, {Type: 491, Length: 0xffff}}
		want4, want6 = append(want4, lists...), append(want6, lists...)
	}
	for id, want := range map[uint16][]netflow.Field{256: want4, 257: want6} {
		got := m.Templates[id]
		if len(got) < 16 || !slices.Equal(got[16:], want) {
			t.Errorf("template %d: optional fields %+v, want %+v", id, got[min(16, len(got)):], want)
		}
	}
}

// The queue of an exporter holds up to 65536 entries: they must stay
// free of pointers, so the garbage collector never scans it.
func TestFlowEntryHasNoPointers(t *testing.T) {
	var check func(reflect.Type) bool
	check = func(typ reflect.Type) bool {
		switch typ.Kind() {
		case reflect.Struct:
			for i := range typ.NumField() {
				if !check(typ.Field(i).Type) {
					t.Errorf("flowEntry.%s is a %s", typ.Field(i).Name, typ.Field(i).Type)
					return false
				}
			}
			return true
		case reflect.Array:
			return check(typ.Elem())
		case reflect.Bool, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Int64:
			return true
		}
		return false
	}
	check(reflect.TypeOf(flowEntry{}))
}

func TestUnknownGroupRejected(t *testing.T) {
	if _, err := New(Config{Collector: "127.0.0.1:4739", Optional: []string{"bgp_communitys"}}, nil); err == nil ||
		!strings.Contains(err.Error(), "bgp_communitys") {
		t.Errorf("New with an unknown group: %v", err)
	}
}

// docs/ipfix.md: with the BGP context a 1400-byte message holds 17 IPv4
// or 12 IPv6 records.
func TestRecordsPerMessageWithBGP(t *testing.T) {
	lay, err := newLayout(baseLayout, []string{GroupBGP})
	if err != nil {
		t.Fatal(err)
	}
	exp := &Exporter{defaultRate: 1}
	for _, tt := range []struct {
		rec  flow.Record
		want int
	}{{testRecord(2), 17}, {testRecord(1), 12}} {
		m := newMessageLayout(DefaultMaxMessageSize, lay)
		e := exp.entryFromRecord(&tt.rec)
		n := 0
		for m.addFlow(&e) {
			n++
		}
		if n != tt.want {
			t.Errorf("IPv4 %v: %d records fit, docs say %d", tt.rec.IsIPv4(), n, tt.want)
		}
	}
}

// The fixed optional fields (fields.go) and the groups together: each
// element decodes to its record's value, so neither part shifts the
// other.
func TestFieldsAndGroupsTogether(t *testing.T) {
	recs := optionalRecords()
	for i := range recs {
		recs[i].BGP = flow.BGP{NextHop: netip.MustParseAddr("::ffff:192.0.2.9").As16(), NextAS: 65001 + uint32(i), PrevAS: 64999,
			SrcPrefixLen: 16, DstPrefixLen: 24, Communities: string(binary.BigEndian.AppendUint32(nil, 65001<<16|uint32(i)))}
	}
	lay := mustLayout(newFlowLayout(fieldsAll), allGroups)
	m := newMessageLayout(DefaultMaxMessageSize, lay)
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
	b := m.finish(1740830400, 0, 1)
	var v9 netflow.NFv9Packet
	var pkt netflow.IPFIXPacket
	if err := netflow.DecodeMessageVersion(bytes.NewBuffer(b), netflow.CreateTemplateSystem(), &v9, &pkt); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fs := range pkt.FlowSets {
		s, ok := fs.(netflow.DataFlowSet)
		if !ok {
			continue
		}
		for _, r := range s.Records {
			fm, err := fieldMap(r.Values)
			if err != nil {
				t.Fatal(err)
			}
			sport := beUint(fm[7])
			i := slices.IndexFunc(recs, func(r flow.Record) bool { return uint64(r.SrcPort) == sport && r.IsIPv4() == (fm[8] != nil) })
			if i < 0 {
				t.Fatalf("decoded a record of source port %d that was not sent", sport)
			}
			comms, err := readBasicList(fm[485], 483, 4)
			if err != nil {
				t.Fatal(err)
			}
			wantNH := []byte{192, 0, 2, 9}
			if fm[8] == nil {
				wantNH = netip.MustParseAddr("::ffff:192.0.2.9").AsSlice()
			}
			if beUint(fm[6]) != 0x13 || beUint(fm[52]) != 60 || beUint(fm[128]) != uint64(65001+i) || beUint(fm[129]) != 64999 ||
				!bytes.Equal(append(fm[18], fm[63]...), wantNH) || comms != fmt.Sprintf("65001:%d", i) {
				t.Errorf("record %d: tcp flags %x min TTL %d next AS %d prev AS %d next hop %v communities %q",
					i, fm[6], beUint(fm[52]), beUint(fm[128]), beUint(fm[129]), append(fm[18], fm[63]...), comms)
			}
			n++
		}
	}
	if n != len(recs) {
		t.Errorf("decoded %d records, want %d", n, len(recs))
	}
}
