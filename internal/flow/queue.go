// SPDX-License-Identifier: AGPL-3.0-only

package flow

// ageQueue orders flows for eviction when the table is full. It is a
// 4-ary min-heap keyed by the last-seen time a flow had when it was
// (re)queued, with lazy re-keying:
//
//   - Update never touches the queue; it only moves the entry's lastBootNs
//     forward, so a queued key is always <= the flow's real last-seen.
//   - To find the oldest flow, look at the root: if the flow was updated
//     since it was queued (last > key), re-key it to last and sift it
//     down; otherwise its last-seen is <= every other key <= every other
//     last-seen, so it is exactly the oldest. Each re-key consumes at
//     least one update, so the cost is amortised over updates and is
//     paid only when something is evicted.
//   - Flows removed outside the queue (Flush, FlushInterface) leave stale
//     items behind; an item carries the slot version it was queued with
//     and a mismatch marks it stale, to be dropped when it surfaces.
//
// A plain FIFO with lazy re-append (the first design) is not exact: a flow
// re-appended with its older last-seen lands behind flows created after
// that time, so a later eviction can pick a younger flow and an idle flow
// can hide behind busy ones for up to another idle timeout. The heap costs
// O(log n) per eviction instead of O(1), and nothing per update.
//
// The queue exists only while the table is at or near its limit: the
// first eviction of a full table builds it from the flows' last-seen
// (O(flows), under the lock, once per fill: 0.6 ms at 65,536 flows and
// 16 ms at 1M in BenchmarkStartAging), new flows join it from then on, and a sweep that leaves the
// table under three quarters full drops it. Below the limit nothing is
// evicted for room, and the idle timeout is found by the sweep's scan
// (Table.expire), so a table that is not full saves its 16 bytes per
// flow; a full one with churn pays them as before.
type ageQueue struct {
	items []queueItem
}

type queueItem struct {
	at  int64  // last-seen of the flow when it was (re)queued, boot ns
	idx int32  // arena slot
	ver uint32 // slot version when queued; differs once the slot is freed
}

func (q *ageQueue) len() int { return len(q.items) }

func (q *ageQueue) push(it queueItem) {
	if len(q.items) == cap(q.items) {
		// Double: append grows a large slice by a quarter at a time,
		// which leaves about four times the final size behind as
		// garbage on the way to a full table (and resident until the
		// runtime reuses or returns it).
		grown := make([]queueItem, len(q.items), max(2*cap(q.items), 256))
		copy(grown, q.items)
		q.items = grown
	}
	q.items = append(q.items, it)
	q.up(len(q.items) - 1)
}

// popRoot removes the minimum.
func (q *ageQueue) popRoot() {
	n := len(q.items) - 1
	q.items[0] = q.items[n]
	q.items = q.items[:n]
	if n > 0 {
		q.down(0)
	}
}

// rekeyRoot raises the key of the minimum and restores heap order.
func (q *ageQueue) rekeyRoot(at int64) {
	q.items[0].at = at
	q.down(0)
}

func (q *ageQueue) up(i int) {
	items := q.items
	it := items[i]
	for i > 0 {
		p := (i - 1) / 4
		if items[p].at <= it.at {
			break
		}
		items[i] = items[p]
		i = p
	}
	items[i] = it
}

func (q *ageQueue) down(i int) {
	items := q.items
	n := len(items)
	it := items[i]
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m := c
		end := min(c+4, n)
		for j := c + 1; j < end; j++ {
			if items[j].at < items[m].at {
				m = j
			}
		}
		if items[m].at >= it.at {
			break
		}
		items[i] = items[m]
		i = m
	}
	items[i] = it
}

// rebuild keeps only the items for which keep returns true and restores
// heap order in O(n).
func (q *ageQueue) rebuild(keep func(queueItem) bool) {
	kept := q.items[:0]
	for _, it := range q.items {
		if keep(it) {
			kept = append(kept, it)
		}
	}
	clear(q.items[len(kept):])
	q.items = kept
	q.heapify()
}

// heapify restores heap order over all items in O(n).
func (q *ageQueue) heapify() {
	for i := (len(q.items) - 2) / 4; i >= 0; i-- {
		q.down(i)
	}
}

func (q *ageQueue) reset() { q.items = q.items[:0] }
