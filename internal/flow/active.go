// SPDX-License-Identifier: AGPL-3.0-only

// The sweep's pass over the flows: idle timeout and active-timeout
// export.

package flow

// expire ends every flow whose last-seen is before idleCutoff (reason
// idle timeout), and hands the sinks a delta record (EndActiveTimeout)
// of every other flow whose current record holds packets and started at
// or before activeCutoff, starting its next record where that one ends.
//
// It scans the arena, scanChunk slots and at most endChunk records per
// lock hold, instead of keeping the flows in queues: an age queue and a
// queue by record start cost 16 bytes per flow each. The scan reads the
// hot part of every entry (and the cold part of those with packets) once
// per sweep, about 1 ms per 65,536 flows (BenchmarkExpireScan, see
// docs/performance.md). Records of one sweep come in arena order. The
// age queue exists only while the table is full (see ageQueue).
func (t *Table) expire(idleCutoff, activeCutoff int64) {
	cursor := 0
	t.inChunks(false, func() bool {
		end := t.arena.len() // may have shrunk (compactLocked) since the last hold
		for ended, look := 0, 0; cursor < end && ended < endChunk && look < scanChunk; cursor, look = cursor+1, look+1 {
			i := int32(cursor)
			e := t.arena.at(i)
			if !e.live() {
				continue
			}
			if e.last < idleCutoff {
				t.endFlow(i, EndIdleTimeout)
				t.idle++
				ended++
				continue
			}
			if e.packets == 0 {
				continue
			}
			c := t.arena.cold(i)
			// The current record starts at the first packet, or where
			// the previous record ended.
			start := c.firstOrRec
			if e.kind&kindRec != 0 {
				start = t.recs.states[c.recID()].startBoot
			}
			if start > activeCutoff {
				continue
			}
			t.exportRecord(i, e, c)
			ended++
		}
		done := cursor >= end
		if done {
			t.compactLocked()
			t.shrinkLocked()
		}
		return done
	})
}

// exportRecord hands out the current record of the flow in slot i as a
// delta record and starts the next one.
func (t *Table) exportRecord(i int32, e *entry, c *entryCold) {
	end := t.clock.wall(e.last).UnixNano()
	if len(t.sinks) > 0 {
		r := t.record(i, EndActiveTimeout)
		end = r.End.UnixNano()
		t.ended = append(t.ended, r)
	}
	if e.kind&kindRec == 0 {
		id := t.recs.add()
		t.recs.states[id].first = c.firstOrRec
		c.firstOrRec = int64(id)
		e.kind |= kindRec
	}
	rs := &t.recs.states[c.recID()]
	rs.prevPackets += e.packets
	rs.prevBytes += e.bytes
	e.packets, e.bytes = 0, 0
	// The next record starts where this one ends, e.last: the next
	// packet may move last-seen, not the start.
	rs.startWall, rs.startBoot = end, e.last
}
