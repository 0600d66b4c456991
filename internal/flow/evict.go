// SPDX-License-Identifier: AGPL-3.0-only

// Ending flows: the oldest when the table is full, idle ones, and all
// or one interface's on a flush.

package flow

// endFlow removes the flow in slot i and records the rest of it for the
// sinks (nothing when its last delta record holds everything).
func (t *Table) endFlow(i int32, reason EndReason) {
	e, c := t.arena.at(i), t.arena.cold(i)
	if len(t.sinks) > 0 && e.packets > 0 {
		t.ended = append(t.ended, t.record(i, reason))
	}
	k := storedKey(e, &t.v6)
	t.index.remove(t.index.hash(&k), i, &t.arena, &t.v6)
	t.detachSet(e)
	t.bgpDst.release(c.dst)
	t.bgpSrc.release(c.src)
	if e.kind&kindV6 != 0 {
		t.v6.release(uint32(e.addrs))
	}
	if e.kind&kindRec != 0 {
		t.recs.release(c.recID())
	}
	*c = entryCold{}
	e.kind = 0
	e.ver++
	t.arena.release(i)
}

// evictOldest ends the flow with the oldest last-seen. The table must not
// be empty.
func (t *Table) evictOldest() {
	t.endFlow(t.popOldest(), EndLackOfResources)
	t.forced++
}

// popOldest removes the oldest flow from the age queue, building the
// queue first if the table has none, and returns its slot; see ageQueue
// for why the answer is exact.
func (t *Table) popOldest() int32 {
	if !t.aging {
		t.startAging()
	}
	for {
		top := t.queue.items[0]
		e := t.arena.at(top.idx)
		switch {
		case e.ver != top.ver: // flow already gone
			t.queue.popRoot()
		case e.last > top.at: // updated since queued
			t.queue.rekeyRoot(e.last)
		default:
			t.queue.popRoot()
			return top.idx
		}
	}
}

// startAging builds the age queue from the live flows, keyed by their
// last-seen, in O(flows); from now on new flows join it.
func (t *Table) startAging() {
	t.queue.items = make([]queueItem, 0, max(t.index.count, 256))
	for i := range t.arena.len() {
		if e := t.arena.at(int32(i)); e.live() {
			t.queue.items = append(t.queue.items, queueItem{at: e.last, idx: int32(i), ver: e.ver})
		}
	}
	t.queue.heapify()
	t.aging = true
}

// stopAging drops the age queue, and its memory.
func (t *Table) stopAging() {
	t.queue = ageQueue{}
	t.aging = false
}

// Flush ends every active flow with reason (EndForced at shutdown). Flows
// are ended in chunks so the collector is never stalled for long.
func (t *Table) Flush(reason EndReason) { t.endMatching(reason, 0, false) }

// FlushInterface ends every flow seen on ifindex (EndForced), for an
// interface that went away.
//
// Sampled packets of the interface still on their way to the table do not
// start new flows afterwards (for a while; see AllowInterface): the
// interface's last records stay its last.
func (t *Table) FlushInterface(ifindex uint32) {
	t.mu.Lock()
	t.gone.mark(ifindex, BootNow())
	t.mu.Unlock()
	t.endMatching(EndForced, ifindex, true)
	t.dropInterfaceSets(ifindex)
}

// endMatching ends every live flow (only those of ifindex when byIfindex)
// with reason, scanning the arena at most scanChunk slots per lock hold.
func (t *Table) endMatching(reason EndReason, ifindex uint32, byIfindex bool) {
	t.mu.Lock()
	end := t.arena.len()
	t.mu.Unlock()
	cursor := 0
	t.inChunks(true, func() bool {
		end = min(end, t.arena.len()) // compactLocked may have emptied the arena
		for ended, look := 0, 0; cursor < end && ended < endChunk && look < scanChunk; cursor, look = cursor+1, look+1 {
			e := t.arena.at(int32(cursor))
			if !e.live() || (byIfindex && e.ifindex != ifindex) {
				continue
			}
			t.endFlow(int32(cursor), reason)
			ended++
		}
		done := cursor >= end
		if done {
			t.compactLocked()
		}
		return done
	})
}
