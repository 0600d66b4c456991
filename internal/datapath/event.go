// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"encoding/binary"
	"errors"
)

// Direction is the TC hook a packet was seen on.
type Direction uint8

const (
	Ingress Direction = 0
	Egress  Direction = 1
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// EventSize is the size of one event written by bpf/rfm.c (struct
// rfm_event); a ring record holds a batch of them. The layout is fixed so
// decoding is a handful of loads.
const EventSize = 64

// FieldsEventSize is the size of struct rfm_event_x, what the datapath
// writes when it was loaded with optional fields (Options.Fields): the
// event, then struct rfm_fields.
const FieldsEventSize = 96

// fieldsVersion is RFM_FIELDS_VERSION: the layout of struct rfm_fields
// this decoder reads. An event of another version is a decode error.
const fieldsVersion = 1

// Fields selects optional header fields the datapath reports (the RFM_F_*
// bits of bpf/rfm.c). None keeps the 64-byte event.
type Fields uint32

const (
	FieldTCPFlags Fields = 1 << iota // OR of TCP flags
	FieldDSCP                        // DSCP, part of the flow key
	FieldTTL                         // TTL / hop limit
	FieldVLAN                        // outer and inner VLAN ids, part of the flow key
	FieldFIB                         // egress interface and next hop of a FIB lookup, ingress only
	fieldsAll     = FieldFIB<<1 - 1
)

// eventSize is the size of the events a datapath loaded with f writes.
func (f Fields) eventSize() int {
	if f == 0 {
		return EventSize
	}
	return FieldsEventSize
}

// Byte offsets of struct rfm_event_x; a test checks them against the
// generated struct.
const (
	offBootNs     = 0
	offSrc        = 8
	offDst        = 24
	offIfindex    = 40
	offInIfindex  = 44
	offLen        = 48
	offRate       = 52
	offSport      = 56
	offDport      = 58
	offSegs       = 60
	offProto      = 62
	offFlags      = 63
	offFVersion   = 64
	offFTCPFlags  = 65
	offFTOS       = 66
	offFTTL       = 67
	offFVLANOuter = 68
	offFVLANInner = 70
	offFFIBIndex  = 72
	offFFIBFlags  = 76
	offFFIBNH     = 80
)

// fibNextHop is RFM_FIB_NEXTHOP: rfm_fields.fib_nexthop holds a gateway.
const fibNextHop = 1

// EventFields are the optional fields of an event; all zero when the
// datapath was loaded without them.
type EventFields struct {
	TCPFlags  uint8  // TCP flags of the packet (byte 13 of the TCP header)
	TOS       uint8  // DSCP << 2: the IPv4 TOS or IPv6 traffic class byte without ECN
	TTL       uint8  // IPv4 TTL or IPv6 hop limit
	VLANOuter uint16 // outer VLAN id, 0 if untagged
	VLANInner uint16 // inner VLAN id (QinQ), 0 if none
	// FIBIfindex is the egress interface a FIB lookup from the ingress
	// interface chose (ingress events only), 0 if the lookup found none.
	FIBIfindex uint32
	// FIBNextHop is the gateway of that route, IPv4 v4-mapped; zero when
	// the destination is on-link or there was no lookup.
	FIBNextHop [16]byte
}

var errFieldsVersion = errors.New("event fields of an unknown layout version")

// Event flags (rfm_event.flags).
const (
	evFlagEgress    = 1
	evFlagTruncated = 2
	// Set by the XDP fast path (bpf/xdp.c) on the packets it dropped.
	evFlagDropped = 4
)

// Event is what the datapath reports of sampled packets: one skb (one
// packet, or a GSO/GRO super-packet standing for Segs packets on the
// wire), or sampled skbs of one flow merged on one CPU within one kernel
// tick (a packet joins one of its CPU's last two events when it is of
// that event's flow): Segs and Len are then their sums. Either way the
// event stands for Segs packets sampled at SampleRate.
// IPv4 addresses are stored v4-mapped (::ffff:a.b.c.d).
type Event struct {
	BootNs  uint64   // CLOCK_BOOTTIME when its CPU's batch opened (<= 1 ms before the hook), ns
	Src     [16]byte // source address, IPv4 v4-mapped
	Dst     [16]byte // destination address, IPv4 v4-mapped
	Ifindex uint32
	Len     uint32 // L3 bytes (IP header + payload) of all Segs packets
	SrcPort uint16 // 0 for non-initial fragments and port-less protocols
	DstPort uint16
	Proto   uint8 // IP protocol number after IPv6 extension headers
	Dir     Direction
	Segs    uint16 // packets this event stands for (GSO/GRO segments of every skb in it, >= 1)
	// SampleRate is the 1-in-N rate that sampled its packets (>= 1). An
	// estimate multiplies this event's packets and bytes by it; events of
	// two rates must never share one scale factor.
	SampleRate uint32
	// InIfindex is the interface the packet arrived on (skb->ingress_ifindex):
	// equal to Ifindex at ingress, the receiving interface for a forwarded
	// packet at egress, 0 for locally originated packets at egress.
	InIfindex uint32
	// Truncated marks a packet whose transport header lay beyond what the
	// datapath parses (a long IPv6 extension chain): Proto is the last next
	// header seen and the ports are 0.
	Truncated bool
	// Dropped marks a packet the XDP fast path dropped on arrival: it was
	// sampled like any other, but never reached the stack.
	Dropped bool
	EventFields
}

var errShortEvent = errors.New("ring buffer record shorter than an event")

// Decode fills e from one raw event using fixed offsets (no reflection,
// no allocation). The event is in host byte order except ports, which
// the datapath already converted to host order.
func (e *Event) Decode(b []byte) error {
	if len(b) < EventSize {
		return errShortEvent
	}
	_ = b[EventSize-1]
	e.BootNs = binary.LittleEndian.Uint64(b[offBootNs:])
	copy(e.Src[:], b[offSrc:offSrc+16])
	copy(e.Dst[:], b[offDst:offDst+16])
	e.Ifindex = binary.LittleEndian.Uint32(b[offIfindex:])
	e.InIfindex = binary.LittleEndian.Uint32(b[offInIfindex:])
	e.Len = binary.LittleEndian.Uint32(b[offLen:])
	e.SampleRate = binary.LittleEndian.Uint32(b[offRate:])
	e.SrcPort = binary.LittleEndian.Uint16(b[offSport:])
	e.DstPort = binary.LittleEndian.Uint16(b[offDport:])
	e.Segs = binary.LittleEndian.Uint16(b[offSegs:])
	e.Proto = b[offProto]
	flags := b[offFlags]
	e.Dir = Ingress
	if flags&evFlagEgress != 0 {
		e.Dir = Egress
	}
	e.Truncated = flags&evFlagTruncated != 0
	e.Dropped = flags&evFlagDropped != 0
	e.EventFields = EventFields{}
	return nil
}

// DecodeFields fills e from one event with optional fields (struct
// rfm_event_x, FieldsEventSize bytes).
func (e *Event) DecodeFields(b []byte) error {
	if len(b) < FieldsEventSize {
		return errShortEvent
	}
	_ = b[FieldsEventSize-1]
	if b[offFVersion] != fieldsVersion {
		return errFieldsVersion
	}
	if err := e.Decode(b); err != nil {
		return err
	}
	f := &e.EventFields
	f.TCPFlags = b[offFTCPFlags]
	f.TOS = b[offFTOS]
	f.TTL = b[offFTTL]
	f.VLANOuter = binary.LittleEndian.Uint16(b[offFVLANOuter:])
	f.VLANInner = binary.LittleEndian.Uint16(b[offFVLANInner:])
	f.FIBIfindex = binary.LittleEndian.Uint32(b[offFFIBIndex:])
	if b[offFFIBFlags]&fibNextHop != 0 {
		copy(f.FIBNextHop[:], b[offFFIBNH:offFFIBNH+16])
	}
	return nil
}
