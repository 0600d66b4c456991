// SPDX-License-Identifier: AGPL-3.0-only

package flow

import "time"

// goneHold is how long events of a detached interface are still refused.
// Sampled packets wait at most the datapath's batch flush interval plus
// the collector's poll interval (tens of milliseconds) before they reach
// the table; the margin covers a collector that fell behind.
const goneHold = 10 * time.Second

// goneInterfaces remembers interfaces whose flows were ended because the
// interface went away, so that their sampled packets still on the way
// (in per-CPU batches or the ring) do not bring the flows back as
// nameless series and records after the interface's last record.
type goneInterfaces struct {
	since map[uint32]int64 // ifindex -> boot ns it was marked
}

// refuses reports whether a new flow on ifindex must not be created; the
// caller holds t.mu. It costs a map lookup only while some interface left
// in the last goneHold, and only for events that start a flow.
func (g *goneInterfaces) refuses(ifindex uint32) bool {
	if len(g.since) == 0 {
		return false
	}
	_, ok := g.since[ifindex]
	return ok
}

func (g *goneInterfaces) mark(ifindex uint32, now int64) {
	if g.since == nil {
		g.since = map[uint32]int64{}
	}
	g.since[ifindex] = now
}

// expire forgets interfaces marked before cutoff.
func (g *goneInterfaces) expire(cutoff int64) {
	for i, at := range g.since {
		if at < cutoff {
			delete(g.since, i)
		}
	}
	if len(g.since) == 0 {
		// A Go map keeps its buckets when emptied: after a burst of
		// interface deletions it would hold room for all of them for
		// good.
		g.since = nil
	}
}

// AllowInterface lets flows on ifindex start again: the interface was
// attached (again) after FlushInterface.
func (t *Table) AllowInterface(ifindex uint32) {
	t.mu.Lock()
	delete(t.gone.since, ifindex)
	t.mu.Unlock()
}

// LateEvents counts sampled packets that arrived for an interface after
// its flows were ended by FlushInterface, and were dropped.
func (t *Table) LateEvents() uint64 { return t.lateA.Load() }
