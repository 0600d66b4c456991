// SPDX-License-Identifier: AGPL-3.0-only

// The periodic sweep and the memory upkeep that follows ending flows.

package flow

import (
	"time"
)

// Sweep ends flows idle for longer than the idle timeout at nowBoot
// (CLOCK_BOOTTIME ns, see BootNow), exports a delta record of every flow
// whose current record started an active timeout ago or earlier,
// refreshes the labels of up to refreshBudget flows whose enricher
// generation is outdated, and re-measures the boot-to-wall clock offset.
func (t *Table) Sweep(nowBoot int64) {
	t.sweepMu.Lock()
	defer t.sweepMu.Unlock()
	t.clock.refresh()
	started := time.Now()
	idleBefore := t.IdleEvictions()
	t.expire(nowBoot-t.idleTimeout.Load(), nowBoot-t.activeTimeout.Load())
	t.mu.Lock()
	t.gone.expire(nowBoot - int64(goneHold))
	t.mu.Unlock()
	refreshed := t.refreshLabels()
	t.expireSets(nowBoot)
	if evicted := t.IdleEvictions() - idleBefore; evicted > 0 || refreshed > 0 {
		t.log.Debug("flow table swept", "idle_evicted", evicted, "relabelled", refreshed,
			"active", t.Active(), "took", time.Since(started))
	}
}

type refreshItem struct {
	idx    int32
	key    Key
	labels Labels
}

// refreshLabels re-enriches flows labelled under an older enricher
// generation, continuing where the previous sweep stopped. The enricher
// runs without the table lock; a result is applied only if the slot still
// holds the same flow. It returns how many flows were relabelled.
func (t *Table) refreshLabels() int {
	if t.enricher == nil {
		return 0
	}
	gen := uint32(t.enricher.Generation())
	scanned, refreshed := 0, 0
	for refreshed < refreshBudget {
		t.mu.Lock()
		n := t.arena.len()
		if scanned >= n {
			t.mu.Unlock()
			break
		}
		buf := t.refreshBuf[:0]
		for look := 0; len(buf) < refreshChunk && scanned < n && look < scanChunk; look++ {
			if t.refreshCursor >= n {
				t.refreshCursor = 0
			}
			i := int32(t.refreshCursor)
			if e := t.arena.at(i); e.live() && t.bgpDst.get(t.arena.cold(i).dst).gen != gen {
				buf = append(buf, refreshItem{idx: i, key: storedKey(e, &t.v6)})
			}
			t.refreshCursor++
			scanned++
		}
		t.mu.Unlock()
		t.refreshBuf = buf
		if len(buf) == 0 {
			continue
		}
		for i := range buf {
			buf[i].labels = t.enricher.Enrich(buf[i].key.SrcAddr(), buf[i].key.DstAddr())
		}
		t.mu.Lock()
		for i := range buf {
			it := &buf[i]
			if int(it.idx) >= t.arena.len() {
				continue // the arena was reset (table emptied) meanwhile
			}
			if e := t.arena.at(it.idx); e.live() && matches(e, &it.key, &t.v6) {
				c := t.arena.cold(it.idx)
				t.setLabels(c, &it.labels, gen)
				t.detachSet(e) // counted so far stays in the old set
				t.attachSet(e, c, e.last)
			}
		}
		t.mu.Unlock()
		refreshed += len(buf)
	}
	return refreshed
}

// compactLocked drops stale queue items once they outnumber live flows,
// and resets the arena when the table is empty so scans stay short after
// a burst.
func (t *Table) compactLocked() {
	if t.index.count == 0 {
		t.arena.reset(t.hint)
		t.stopAging()
		// Every id is free: give the side tables' memory back.
		t.v6, t.recs = addrPairs{}, recordStates{}
		return
	}
	if t.aging && t.index.count < t.limit()*3/4 {
		// Nothing will be evicted for room for a while; a table that
		// fills again builds the queue again (at least limit/4 new
		// flows later, so the O(flows) build is amortised over them).
		t.stopAging()
	}
	current := func(it queueItem) bool { return t.arena.at(it.idx).ver == it.ver }
	if t.queue.len() > 2*t.index.count+1024 {
		t.queue.rebuild(current)
	}
}

// shrinkLocked gives memory back after a flood: once the arena or the
// index is more than four times the size the active flows need (and
// larger than NewTable made it), the flows move to a new arena sized for
// twice their number, and the index and queue are rebuilt. That costs
// one pass over the old arena under the lock, which only a table that
// lost three quarters of its flows pays, once.
func (t *Table) shrinkLocked() {
	n := t.index.count
	want := max(2*n, t.hint)
	if t.arena.capacity() <= 4*want && len(t.index.slots) <= 4*slotsFor(want) {
		return
	}
	old := t.arena
	t.arena = arena{}
	x := newFlowIndex(want)
	x.seed = t.index.seed // keep the seed: hashes stay valid
	t.index = x
	aging := t.aging
	t.stopAging()
	for i := range old.len() {
		e := old.at(int32(i))
		if !e.live() {
			continue
		}
		j := t.arena.alloc()
		// The side tables' ids (IPv6 addresses, record state) move
		// with the entry.
		*t.arena.at(j), *t.arena.cold(j) = *e, *old.cold(int32(i))
		k := storedKey(e, &t.v6)
		t.index.insert(t.index.hash(&k), j, &t.arena, &t.v6)
	}
	if aging {
		t.startAging()
	}
	t.refreshCursor = 0
}
