// SPDX-License-Identifier: AGPL-3.0-only

// Package flow aggregates sampled packet events into flows, ends them
// (idle timeout, table full, shutdown) and hands ended flows to sinks.
package flow

import (
	"net/netip"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// Key identifies a flow. Addresses are 16 bytes, IPv4 v4-mapped, so one
// key type serves both families and is comparable without allocation.
type Key struct {
	Src     [16]byte
	Dst     [16]byte
	Ifindex uint32
	SrcPort uint16
	DstPort uint16
	Proto   uint8
	Dir     datapath.Direction
	// Dropped: packets the XDP fast path dropped on arrival, a flow of
	// their own next to the same packets that passed.
	Dropped bool
	// Optional key fields (agent.bpf.fields), zero when not selected, so
	// a flow is keyed as without them.
	TOS       uint8  // DSCP << 2 (dscp)
	VLANOuter uint16 // outer VLAN id (vlan)
	VLANInner uint16 // inner VLAN id (vlan)
}

// SrcAddr returns the source address, unmapped for IPv4.
func (k *Key) SrcAddr() netip.Addr { return netip.AddrFrom16(k.Src).Unmap() }

// DstAddr returns the destination address, unmapped for IPv4.
func (k *Key) DstAddr() netip.Addr { return netip.AddrFrom16(k.Dst).Unmap() }

// IsIPv4 reports whether the key holds v4-mapped addresses.
func (k *Key) IsIPv4() bool { return netip.AddrFrom16(k.Src).Is4In6() }

// EndReason says why a flow ended. Values are the IANA flowEndReason
// codes (IPFIX IE 136) so exporters can use them as they are.
type EndReason uint8

const (
	EndIdleTimeout     EndReason = 1 // idle longer than eviction_timeout
	EndActiveTimeout   EndReason = 2 // a delta record of a flow that goes on
	EndOfFlow          EndReason = 3
	EndForced          EndReason = 4 // agent shutdown, interface gone, or the sample rate changed
	EndLackOfResources EndReason = 5 // evicted because the table was full
)

func (r EndReason) String() string {
	switch r {
	case EndIdleTimeout:
		return "idle_timeout"
	case EndActiveTimeout:
		return "active_timeout"
	case EndOfFlow:
		return "end_of_flow"
	case EndForced:
		return "forced_end"
	case EndLackOfResources:
		return "lack_of_resources"
	}
	return "unknown"
}

// Labels are the enrichment results attached to a flow. Zero ASN and
// empty city mean "unknown".
type Labels struct {
	SrcASN  uint32
	DstASN  uint32
	SrcCity string
	DstCity string
	// BGP is the context of the RIB routes chosen for the addresses;
	// zero without a route (MMDB-only labels).
	BGP BGP
}

// BGP is what the RIB's best routes for a flow's source and destination
// say about it, for IPFIX export.
type BGP struct {
	// NextHop is the destination route's BGP next hop (IPv4 v4-mapped);
	// zero when unknown.
	NextHop [16]byte
	// NextAS is the first AS of the destination route's path (the
	// neighbour AS traffic to it leaves through), PrevAS that of the
	// source route (the neighbour AS it arrives from); 0 when unknown.
	NextAS, PrevAS uint32
	// SrcPrefixLen and DstPrefixLen are the lengths of the matched
	// prefixes; 0 without a route (or for a default route).
	SrcPrefixLen, DstPrefixLen uint8
	// Communities and LargeCommunities are the destination route's
	// standard (4 bytes each) and large (12 bytes each) communities,
	// big endian as in BGP; strings so that BGP stays comparable.
	Communities, LargeCommunities string
}

// Record is a flow record as handed to a Sink. Packets and Bytes are the
// sampled counts, as observed; the estimate is each times SampleRate.
//
// A flow that lasts longer than the active timeout is handed over in
// several records: every active timeout a delta record (Reason
// EndActiveTimeout) with the packets since the previous record, and at its
// end one with the rest. Each record's Start is the previous record's End,
// so the records of a flow tile its lifetime, and their counts add up to
// the flow. A flow whose last record was a delta and that got no packet
// since ends without another record.
type Record struct {
	Key
	Start   time.Time // first sampled packet, or the previous record's End; wall clock
	End     time.Time // last sampled packet, wall clock
	Packets uint64
	Bytes   uint64
	// SampleRate is the 1-in-N rate that sampled every packet counted
	// here: a flow never mixes rates (an event of another rate ends it).
	SampleRate uint32
	// InIfindex is the interface the flow's first sampled packet arrived
	// on: for an egress flow of forwarded packets the receiving
	// interface, 0 for locally originated ones; Ifindex at ingress.
	InIfindex uint32
	// Optional fields (agent.bpf.fields), zero when not selected: the OR
	// of the TCP flags and the lowest and highest TTL (hop limit) of the
	// flow's sampled packets, over the whole flow so far.
	TCPFlags       uint8
	MinTTL, MaxTTL uint8
	// OutIfindex and NextHop are where a FIB lookup (agent.bpf.fib_lookup)
	// routed the flow's first sampled packet: the egress interface and
	// the gateway (IPv4 v4-mapped; zero for an on-link destination). Zero
	// for egress flows and when the lookup is off or found no route.
	OutIfindex uint32
	NextHop    [16]byte
	Labels
	Reason EndReason
}

// Sink receives flow records. ExportFlows is called from the collector
// goroutine and must not block: a sink that talks to the network queues
// and returns. The slice is reused after the call returns.
type Sink interface {
	ExportFlows(recs []Record)
}

// PacedSink is a Sink that can also take the records of a flush (Flush,
// FlushInterface, SetMaxFlows), which may be far more than its queue
// holds: ExportFlowsPaced waits, within a bound of its choosing, for room
// instead of dropping. It is not called from the collector goroutine and
// may run concurrently with ExportFlows.
type PacedSink interface {
	Sink
	ExportFlowsPaced(recs []Record)
}

// Enricher labels flow addresses (ASN, city). Lookups must be safe for
// concurrent use and never block behind writers.
type Enricher interface {
	Enrich(src, dst netip.Addr) Labels
	// Generation changes whenever the answers may have changed (a RIB
	// update, a reopened database), so cached labels can be refreshed.
	Generation() uint64
}
