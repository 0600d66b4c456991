// SPDX-License-Identifier: AGPL-3.0-only

// Reporting views of the active flows: Prometheus rollup and top-N
// snapshots.

package flow

import (
	"slices"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// RollupKey is what the Prometheus flow gauges are rolled up by.
type RollupKey struct {
	Ifindex uint32
	Dir     datapath.Direction
	Proto   uint8
	SrcASN  uint32
	DstASN  uint32
	SrcCity string
	DstCity string
	// Overflow marks the overflow set of Ifindex and Dir, which takes
	// the flows whose own label set did not fit under the limit; the
	// other fields are zero.
	Overflow bool
	// Dropped: flows of packets the XDP fast path dropped.
	Dropped bool
}

// rollKey is RollupKey with city ids: cheaper to hash and pointer-free.
type rollKey struct {
	ifindex, srcASN, dstASN, srcCity, dstCity uint32
	proto                                     uint8
	dir                                       datapath.Direction
	dropped                                   bool
}

// RollupCounts are the summed counts of the whole active flows of one
// group (every record so far, not only the current one): as sampled, and
// estimated with each flow's own sample rate.
type RollupCounts struct {
	SampledPackets, SampledBytes uint64
	Packets, Bytes               uint64
}

// rollupChunk is how many arena slots Rollup aggregates per lock hold.
const rollupChunk = 8192

// Rollup sums the packets and bytes of the active flows by label set and
// calls fn once per set with active flows, after the table lock is
// released. The arena is aggregated a chunk at a time under the lock, so
// the collector never waits for a whole scan; a flow that starts or ends
// meanwhile may or may not be counted, as if it had happened just before
// or after the scrape. fn must not call Rollup.
func (t *Table) Rollup(fn func(k RollupKey, c RollupCounts)) {
	t.LabelSets(func(r *LabelSetRow) {
		if r.ActiveFlows > 0 {
			fn(r.Key, r.Active)
		}
	})
}

// topChunk is how many arena slots Top copies per lock hold. A copy
// resolves the flow's ids (key, labels, path, record state), about 330
// bytes each: 4,096 of them keep a hold near 0.2 ms, as 8,192 copies of
// the 152-byte entries did before the table stored flows compactly.
const topChunk = 4096

// topLockHeld, when set (by a benchmark), is told how long each of Top's
// lock holds lasted.
var topLockHeld func(time.Duration)

// Top returns snapshot copies of up to n active flows (all when n <= 0)
// that pass filter (nil passes all), ordered by less (nil: arena order).
// A copy describes the whole flow so far (all its records): Packets and
// Bytes are sampled counts at SampleRate, the labels include the BGP
// context; Reason is 0.
//
// The table lock is held only to copy a chunk of the arena at a time;
// filter, less and the selection run without it, so the collector never
// waits for a sort, and filter and less may call the Table. As with
// Rollup, a flow that starts or ends meanwhile may or may not be listed.
func (t *Table) Top(n int, less func(a, b *Record) bool, filter func(*Key) bool) []Record {
	var out []Record
	if n <= 0 {
		out = make([]Record, 0, t.Active())
	}
	// Each flow of a chunk is copied with what its ids name (key,
	// labels, path, record state) under the lock, since an id freed
	// after it may name something else.
	chunk := make([]flowCopy, 0, min(topChunk, t.arenaLen()))
	var cities []string
	for start := 0; ; start += topChunk {
		t.mu.Lock()
		var locked time.Time
		if topLockHeld != nil {
			locked = time.Now()
		}
		end := min(start+topChunk, t.arena.len())
		chunk = chunk[:0]
		for i := start; i < end; i++ {
			if t.arena.at(int32(i)).live() {
				chunk = append(chunk, flowCopy{})
				t.copyFlow(int32(i), &chunk[len(chunk)-1])
			}
		}
		// City names are only ever appended, so the elements this
		// slice header covers never change: safe to read unlocked.
		cities = t.cities.names
		done := end >= t.arena.len()
		t.mu.Unlock()
		if topLockHeld != nil {
			topLockHeld(time.Since(locked))
		}

		for i := range chunk {
			fc := &chunk[i]
			if filter != nil && !filter(&fc.key) {
				continue
			}
			r := t.snapshot(fc, cities)
			switch {
			case less == nil || n <= 0:
				out = append(out, r)
			case len(out) < n:
				out = append(out, r)
				heapUp(out, less, len(out)-1)
			case less(&r, &out[0]):
				out[0] = r
				heapDown(out, less, 0)
			}
			if less == nil && n > 0 && len(out) == n {
				return out
			}
		}
		if done {
			break
		}
	}
	if less != nil {
		out = sortRecords(out, less)
	}
	return out
}

// sortRecords sorts stably by less. It sorts positions and then moves
// each record once: a stable sort that swapped the records themselves
// would move each about log n times.
func sortRecords(recs []Record, less func(a, b *Record) bool) []Record {
	order := make([]int32, len(recs))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(i, j int32) int {
		switch {
		case less(&recs[i], &recs[j]):
			return -1
		case less(&recs[j], &recs[i]):
			return 1
		}
		return 0
	})
	sorted := make([]Record, len(recs))
	for i, j := range order {
		sorted[i] = recs[j]
	}
	return sorted
}

// arenaLen is the arena's length, read under the lock.
func (t *Table) arenaLen() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.arena.len()
}

// snapshot converts a copied flow to a Record of the whole flow.
func (t *Table) snapshot(fc *flowCopy, cities []string) Record {
	name := func(id uint32) string {
		if int(id) < len(cities) {
			return cities[id]
		}
		return ""
	}
	return t.recordOf(fc, t.clock.wall(fc.rec.first), fc.rec.prevPackets+fc.e.packets, fc.rec.prevBytes+fc.e.bytes, name)
}

// heapUp and heapDown keep the best n records in a heap whose root is the
// worst of them (by less), so Top's memory is O(n) however many flows
// there are.
func heapUp(h []Record, less func(a, b *Record) bool, c int) {
	for c > 0 {
		p := (c - 1) / 2
		if !less(&h[p], &h[c]) {
			break
		}
		h[c], h[p] = h[p], h[c]
		c = p
	}
}

func heapDown(h []Record, less func(a, b *Record) bool, p int) {
	for {
		w, l, r := p, 2*p+1, 2*p+2
		if l < len(h) && less(&h[w], &h[l]) {
			w = l
		}
		if r < len(h) && less(&h[w], &h[r]) {
			w = r
		}
		if w == p {
			return
		}
		h[p], h[w] = h[w], h[p]
		p = w
	}
}
