// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"net/netip"
	"testing"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// Optional fields: DSCP and VLAN ids split flows, TCP flags are ORed,
// TTL kept as lowest and highest, the FIB answer of the first packet
// kept; with no fields the record is as before (all zero).
func TestOptionalFieldRecords(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{Sinks: []Sink{sink}})
	base := udp(1, 10)
	base.Proto = 6
	gw := netip.MustParseAddr("198.19.0.254").As16()
	withFields := func(ns uint64, flags, tos, ttl uint8, outer, inner uint16, fibIf uint32) datapath.Event {
		ev := base
		ev.BootNs = ns
		ev.EventFields = datapath.EventFields{TCPFlags: flags, TOS: tos, TTL: ttl, VLANOuter: outer, VLANInner: inner,
			FIBIfindex: fibIf, FIBNextHop: gw}
		return ev
	}
	tab.UpdateBatch([]datapath.Event{
		withFields(10, 0x02, 0, 64, 10, 0, 7),    // SYN
		withFields(11, 0x10, 0, 60, 10, 0, 9),    // ACK, lower TTL, another FIB answer (ignored)
		withFields(12, 0x11, 0, 70, 10, 0, 7),    // FIN ACK, higher TTL
		withFields(13, 0x10, 0xb8, 64, 10, 0, 7), // another DSCP: another flow
		withFields(14, 0x10, 0, 64, 11, 0, 7),    // another outer VLAN
		withFields(15, 0x10, 0, 64, 10, 20, 7),   // an inner VLAN
		base,                                     // no fields at all
	})
	tab.Flush(EndForced)
	recs := sink.take()
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5 (one per DSCP/VLAN key, one without fields): %+v", len(recs), recs)
	}
	type keyFields struct {
		tos          uint8
		outer, inner uint16
	}
	byKey := map[keyFields]Record{}
	for _, r := range recs {
		byKey[keyFields{r.TOS, r.VLANOuter, r.VLANInner}] = r
	}
	first := byKey[keyFields{0, 10, 0}]
	if first.Packets != 3 || first.TCPFlags != 0x13 || first.MinTTL != 60 || first.MaxTTL != 70 ||
		first.OutIfindex != 7 || first.NextHop != gw {
		t.Errorf("flow of three packets: %+v, want flags 0x13, TTL 60..70, FIB 7 via %v", first, netip.AddrFrom16(gw))
	}
	if r := byKey[keyFields{0xb8, 10, 0}]; r.Packets != 1 || r.TCPFlags != 0x10 {
		t.Errorf("DSCP flow: %+v", r)
	}
	if r := byKey[keyFields{0, 11, 0}]; r.Packets != 1 {
		t.Errorf("outer VLAN 11 flow: %+v", r)
	}
	if r := byKey[keyFields{0, 10, 20}]; r.Packets != 1 {
		t.Errorf("inner VLAN 20 flow: %+v", r)
	}
	plain := byKey[keyFields{}]
	if plain.Packets != 1 || plain.TCPFlags != 0 || plain.MinTTL != 0 || plain.MaxTTL != 0 || plain.OutIfindex != 0 || plain.NextHop != ([16]byte{}) {
		t.Errorf("flow without fields: %+v, want no optional values", plain)
	}
}

// A flow's receiving interface, FIB egress and gateway are those of its
// first packet, in records and in Top's copies alike, for flows that
// share them and flows that do not; the table keeps one copy of each
// such path while flows use it, none once they have ended, and a path
// that comes back after that is reported as it is.
func TestFlowPaths(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{Sinks: []Sink{sink}})
	gwA := netip.MustParseAddr("198.19.0.254").As16()
	gwB := netip.MustParseAddr("2001:db8::1").As16()
	type path struct {
		in, out uint32
		gw      [16]byte
	}
	want := map[byte]path{ // by source host
		1: {3, 7, gwA},
		2: {3, 7, gwA}, // the same path as host 1
		3: {4, 7, gwB},
		4: {5, 0, [16]byte{}}, // no route found
		5: {},                 // nothing known
	}
	event := func(host byte, ns uint64) datapath.Event {
		p := want[host]
		ev := udp(host, ns)
		ev.InIfindex = p.in
		ev.EventFields = datapath.EventFields{FIBIfindex: p.out, FIBNextHop: p.gw}
		return ev
	}
	var evs []datapath.Event
	for host := byte(1); host <= 5; host++ {
		evs = append(evs, event(host, 10))
	}
	// A later packet of host 1 with another answer changes nothing.
	later := udp(1, 11)
	later.InIfindex = 9
	later.EventFields = datapath.EventFields{FIBIfindex: 8, FIBNextHop: gwB}
	evs = append(evs, later)
	tab.UpdateBatch(evs)

	check := func(what string, recs []Record, n int) {
		t.Helper()
		if len(recs) != n {
			t.Fatalf("%s: %d records, want %d", what, len(recs), n)
		}
		for _, r := range recs {
			host := r.Src[15]
			if got := (path{r.InIfindex, r.OutIfindex, r.NextHop}); got != want[host] {
				t.Errorf("%s: host %d: in %d, out %d via %v; want %+v", what, host, got.in, got.out,
					netip.AddrFrom16(got.gw), want[host])
			}
		}
	}
	check("Top", tab.Top(0, nil, nil), 5)
	if n := tab.bgpDst.len(); n != 3 { // no labels: destination sides differ by path only
		t.Errorf("%d paths held for 5 flows with 3 distinct non-zero paths", n)
	}
	tab.Flush(EndForced)
	check("flushed", sink.take(), 5)
	if n := tab.bgpDst.len(); n != 0 {
		t.Errorf("%d paths held after every flow ended", n)
	}

	// Paths freed and taken again, in another order.
	want[6] = path{6, 2, gwB}
	tab.UpdateBatch([]datapath.Event{event(6, 20), event(3, 20), event(1, 20)})
	check("Top after reuse", tab.Top(0, nil, nil), 3)
	tab.Flush(EndForced)
	check("flushed after reuse", sink.take(), 3)
}
