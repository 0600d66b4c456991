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
	EndActiveTimeout   EndReason = 2
	EndOfFlow          EndReason = 3
	EndForced          EndReason = 4 // agent shutdown or interface gone
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
}

// Record is an ended flow as handed to a Sink. Packets and Bytes are the
// sampled counts, as observed (not scaled by the sample rate).
type Record struct {
	Key
	Start   time.Time // first sampled packet, wall clock
	End     time.Time // last sampled packet, wall clock
	Packets uint64
	Bytes   uint64
	Labels
	Reason EndReason
}

// Sink receives ended flows. ExportFlows is called from the collector
// goroutine and must not block: a sink that talks to the network queues
// and returns. The slice is reused after the call returns.
type Sink interface {
	ExportFlows(recs []Record)
}

// Enricher labels flow addresses (ASN, city). Lookups must be safe for
// concurrent use and never block behind writers.
type Enricher interface {
	Enrich(src, dst netip.Addr) Labels
	// Generation changes whenever the answers may have changed (a RIB
	// update, a reopened database), so cached labels can be refreshed.
	Generation() uint64
}
