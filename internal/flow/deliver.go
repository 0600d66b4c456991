// SPDX-License-Identifier: AGPL-3.0-only

// Handing ended flows' records to the sinks, outside the table lock.

package flow

import (
	"time"
)

// record converts the current record of an entry to a Record.
func (t *Table) record(e *entry, reason EndReason) Record {
	start := t.clock.wall(e.first)
	if e.prevPackets > 0 {
		start = time.Unix(0, e.recStartWall)
	}
	r := t.recordOf(e, start, e.packets, e.bytes, t.cities.name, t.paths.get(e.path))
	r.Labels.BGP = t.bgpOf(e)
	r.Reason = reason
	return r
}

// recordOf is the Record of e's fields from start on, with these totals,
// city names from cityName and e's path p.
func (t *Table) recordOf(e *entry, start time.Time, packets, bytes uint64, cityName func(uint32) string, p flowPath) Record {
	return Record{
		Key:        e.key,
		Start:      start,
		End:        t.clock.wall(e.last),
		Packets:    packets,
		Bytes:      bytes,
		SampleRate: e.rate,
		InIfindex:  p.in,
		TCPFlags:   e.tcpFlags,
		MinTTL:     e.ttlMin,
		MaxTTL:     e.ttlMax,
		OutIfindex: p.out,
		NextHop:    p.nextHop,
		Labels: Labels{
			SrcASN:  e.srcASN,
			DstASN:  e.dstASN,
			SrcCity: cityName(e.srcCity),
			DstCity: cityName(e.dstCity),
		},
	}
}

// inChunks ends flows in lock holds of bounded work, so the collector
// never waits long: each hold runs step, which ends at most about endChunk
// flows and reports whether it is done, and the records ended in it are
// delivered after unlocking, through deliverPaced when paced (Flush,
// FlushInterface and SetMaxFlows, which may wait for a PacedSink) and
// deliver otherwise (the sweep).
func (t *Table) inChunks(paced bool, step func() (done bool)) {
	for {
		t.mu.Lock()
		done := step()
		recs := t.finishLocked()
		t.mu.Unlock()
		if paced {
			t.deliverPaced(recs)
		} else {
			t.deliver(recs)
		}
		if done {
			return
		}
	}
}

// finishLocked publishes the statistics and takes the records of flows
// ended during this lock hold, to be delivered after unlocking.
func (t *Table) finishLocked() []Record {
	if a := int64(t.index.count); a != t.pub.active {
		t.pub.active = a
		t.activeA.Store(a)
	}
	if t.forced != t.pub.forced {
		t.pub.forced = t.forced
		t.forcedA.Store(t.forced)
	}
	if t.idle != t.pub.idle {
		t.pub.idle = t.idle
		t.idleA.Store(t.idle)
	}
	if len(t.ended) == 0 {
		return nil
	}
	recs := t.ended
	t.bufMu.Lock()
	if n := len(t.bufs); n > 0 {
		t.ended = t.bufs[n-1]
		t.bufs = t.bufs[:n-1]
	} else {
		t.ended = nil
	}
	t.bufMu.Unlock()
	return recs
}

// deliver hands ended flows to every sink, outside the table lock, and
// keeps the buffer for reuse.
func (t *Table) deliver(recs []Record) {
	if len(recs) == 0 {
		return
	}
	t.sinkMu.Lock()
	for _, s := range t.sinks {
		s.ExportFlows(recs)
	}
	t.sinkMu.Unlock()
	t.recycle(recs)
}

// deliverPaced is deliver for flushes: a PacedSink may wait for room, and
// does so without sinkMu, so the collector's own deliveries (evictions)
// never wait behind a flush.
func (t *Table) deliverPaced(recs []Record) {
	if len(recs) == 0 {
		return
	}
	paced := false
	t.sinkMu.Lock()
	for _, s := range t.sinks {
		if _, ok := s.(PacedSink); ok {
			paced = true
			continue
		}
		s.ExportFlows(recs)
	}
	t.sinkMu.Unlock()
	if paced {
		for _, s := range t.sinks {
			if p, ok := s.(PacedSink); ok {
				p.ExportFlowsPaced(recs)
			}
		}
	}
	t.recycle(recs)
}

func (t *Table) recycle(recs []Record) {
	t.bufMu.Lock()
	t.bufs = append(t.bufs, recs[:0])
	t.bufMu.Unlock()
}
