// SPDX-License-Identifier: AGPL-3.0-only

// Handing ended flows' records to the sinks, outside the table lock.

package flow

import (
	"time"
)

// flowCopy is a flow with what its ids name resolved (key, record
// state, labels, path): a copy that stays true after the table lock is
// released, when the ids may name something else.
type flowCopy struct {
	e    entry
	c    entryCold
	key  Key
	rec  recordState // first only, unless e.kind has kindRec
	src  srcSide
	dst  dstSide
	path flowPath
}

// copyFlow copies the flow in slot i into fc; the caller holds t.mu.
func (t *Table) copyFlow(i int32, fc *flowCopy) {
	fc.e, fc.c = *t.arena.at(i), *t.arena.cold(i)
	fc.key = storedKey(&fc.e, &t.v6)
	fc.rec = recordState{first: fc.c.firstOrRec}
	if fc.e.kind&kindRec != 0 {
		fc.rec = t.recs.states[fc.c.recID()]
	}
	fc.src, fc.dst = t.bgpSrc.get(fc.c.src), t.bgpDst.get(fc.c.dst)
	fc.path = fc.dst.path
}

// record converts the current record of the flow in slot i to a Record.
func (t *Table) record(i int32, reason EndReason) Record {
	var fc flowCopy
	t.copyFlow(i, &fc)
	start := t.clock.wall(fc.rec.first)
	if fc.e.kind&kindRec != 0 {
		start = time.Unix(0, fc.rec.startWall)
	}
	r := t.recordOf(&fc, start, fc.e.packets, fc.e.bytes, t.cities.name)
	r.Reason = reason
	return r
}

// recordOf is the Record of fc from start on, with these totals and city
// names from cityName.
func (t *Table) recordOf(fc *flowCopy, start time.Time, packets, bytes uint64, cityName func(uint32) string) Record {
	e := &fc.e
	return Record{
		Key:        fc.key,
		Start:      start,
		End:        t.clock.wall(e.last),
		Packets:    packets,
		Bytes:      bytes,
		SampleRate: e.rate,
		InIfindex:  fc.path.in,
		TCPFlags:   e.tcpFlags,
		MinTTL:     e.ttlMin,
		MaxTTL:     e.ttlMax,
		OutIfindex: fc.path.out,
		NextHop:    fc.path.nextHop,
		Labels: Labels{
			SrcASN:  fc.src.asn,
			DstASN:  fc.dst.asn,
			SrcCity: cityName(fc.src.city),
			DstCity: cityName(fc.dst.city),
			BGP:     bgpOf(fc.dst, fc.src),
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
