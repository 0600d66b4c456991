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
