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

// Event flags (rfm_event.flags).
const (
	evFlagEgress    = 1
	evFlagTruncated = 2
)

// Event is one sampled skb as reported by the datapath: one packet, or a
// GSO/GRO super-packet standing for Segs packets on the wire.
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
	Segs    uint16 // packets this event stands for (GSO/GRO segments, >= 1)
	// SampleRate is the 1-in-N rate that sampled this packet (>= 1). An
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
	e.BootNs = binary.LittleEndian.Uint64(b[0:8])
	copy(e.Src[:], b[8:24])
	copy(e.Dst[:], b[24:40])
	e.Ifindex = binary.LittleEndian.Uint32(b[40:44])
	e.InIfindex = binary.LittleEndian.Uint32(b[44:48])
	e.Len = binary.LittleEndian.Uint32(b[48:52])
	e.SampleRate = binary.LittleEndian.Uint32(b[52:56])
	e.SrcPort = binary.LittleEndian.Uint16(b[56:58])
	e.DstPort = binary.LittleEndian.Uint16(b[58:60])
	e.Segs = binary.LittleEndian.Uint16(b[60:62])
	e.Proto = b[62]
	flags := b[63]
	e.Dir = Ingress
	if flags&evFlagEgress != 0 {
		e.Dir = Egress
	}
	e.Truncated = flags&evFlagTruncated != 0
	return nil
}
