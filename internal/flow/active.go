// SPDX-License-Identifier: AGPL-3.0-only

// Active-timeout export: delta records of flows that go on.

package flow

// exportActive hands the sinks a delta record (EndActiveTimeout) of every
// flow whose current record started at or before cutoff, and starts the
// next record where that one ends. The flows stay in the table.
func (t *Table) exportActive(cutoff int64) {
	t.inChunks(false, func() bool { return t.exportActiveLocked(cutoff, endChunk) })
}

// exportActiveLocked works through the due queue front while its key is
// at or before cutoff. A flow is in the queue only while its current
// record holds packets (apply queues it again with the next packet), and
// its key changes only here, where it leaves the queue, so the front is
// exactly the oldest record. It returns false when budget ran out.
func (t *Table) exportActiveLocked(cutoff int64, budget int) bool {
	for n := 0; t.due.len() > 0; n++ {
		if n == budget {
			return false
		}
		top := t.due.items[0]
		if top.at > cutoff {
			return true
		}
		t.due.popRoot()
		e := t.arena.at(top.idx)
		if e.ver != top.ver || e.packets == 0 {
			continue // flow gone, or its slot reused
		}
		end := t.clock.wall(e.last).UnixNano()
		if len(t.sinks) > 0 {
			r := t.record(e, EndActiveTimeout)
			end = r.End.UnixNano()
			t.ended = append(t.ended, r)
		}
		e.prevPackets += e.packets
		e.prevBytes += e.bytes
		e.packets, e.bytes = 0, 0
		e.recStartWall = end
	}
	return true
}
