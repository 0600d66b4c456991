// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// Label sets are what the Prometheus flow series are keyed by (interface,
// direction, protocol, ASNs, cities). Each one keeps running totals of
// the estimated traffic of every flow it ever held, added packet by
// packet as events arrive. A total therefore never goes down: not when a
// flow ends, not when a flow is relabelled to another set (what was
// counted stays where it was counted), not when an active timeout
// exports part of a flow, and not when the sample rate changes (each
// packet is scaled by the rate that sampled it). That is what makes
// rate() over the counters meaningful, where the gauges over active
// flows fall every time a flow ends.
//
// The number of sets is bounded: past the limit, a flow that needs a
// new set goes to its interface and direction's overflow set instead.
// Sets without traffic and without active flows for the expiry time are
// dropped, so their series disappear.

const (
	// DefaultMaxLabelSets is the label set limit when Options leave it 0.
	DefaultMaxLabelSets = 10000
	// DefaultLabelSetExpiry is the expiry when Options leave it 0.
	DefaultLabelSetExpiry = time.Hour
)

// setKey is a label set: a rollKey, or an overflow set (only ifindex
// and dir set).
type setKey struct {
	rollKey
	overflow bool
}

type labelSet struct {
	key            setKey
	packets, bytes uint64 // estimated (sampled x sample rate), since the set appeared
	last           int64  // boot ns of the newest event, or of creation
	flows          int32  // active flows attributed to the set
	nextFree       int32  // free-list link while unused
	live           bool
}

// labelSets is the Table's set registry; guarded by Table.mu.
type labelSets struct {
	sets       []labelSet
	index      map[setKey]int32
	freeHead   int32
	normal     int   // live sets that are not overflow sets
	max        int   // most normal sets
	expiry     int64 // ns
	overflowed uint64
	expired    uint64
}

func newLabelSets(max int, expiry time.Duration) labelSets {
	s := labelSets{index: map[setKey]int32{}, freeHead: -1}
	s.setLimits(max, expiry)
	return s
}

func (s *labelSets) setLimits(max int, expiry time.Duration) {
	if max <= 0 {
		max = DefaultMaxLabelSets
	}
	if expiry <= 0 {
		expiry = DefaultLabelSetExpiry
	}
	s.max, s.expiry = max, int64(expiry)
}

// attach finds or creates the set for the key and labels of the flow
// whose parts are e and c, counts it in the set and stores the set's
// index in e.set.
func (t *Table) attachSet(e *entry, c *entryCold, now int64) {
	s := &t.sets
	src, dst := t.bgpSrc.get(c.src), t.bgpDst.get(c.dst)
	dropped := e.kind&kindDropped != 0
	k := setKey{rollKey: rollKey{
		ifindex: e.ifindex,
		srcASN:  src.asn,
		dstASN:  dst.asn,
		srcCity: src.city,
		dstCity: dst.city,
		proto:   e.proto,
		dir:     e.dir,
		dropped: dropped,
	}}
	i, ok := s.index[k]
	if !ok && s.normal >= s.max {
		s.overflowed++
		k = setKey{rollKey: rollKey{ifindex: e.ifindex, dir: e.dir, dropped: dropped}, overflow: true}
		i, ok = s.index[k]
	}
	if !ok {
		if i = s.freeHead; i >= 0 {
			s.freeHead = s.sets[i].nextFree
		} else {
			s.sets = append(s.sets, labelSet{})
			i = int32(len(s.sets) - 1)
		}
		s.sets[i] = labelSet{key: k, last: now, live: true}
		s.index[k] = i
		if !k.overflow {
			s.normal++
		}
	}
	s.sets[i].flows++
	e.set = i
}

// detachSet takes e out of its set's active flows.
func (t *Table) detachSet(e *entry) { t.sets.sets[e.set].flows-- }

// countEvent adds one event of e's flow to its set's totals.
func (t *Table) countEvent(e *entry, ev *datapath.Event) {
	ls := &t.sets.sets[e.set]
	rate := uint64(rateOf(ev))
	ls.packets += segments(ev) * rate
	ls.bytes += uint64(ev.Len) * rate
	if ns := int64(ev.BootNs); ns > ls.last {
		ls.last = ns
	}
}

// expireSets drops sets without active flows whose newest event is
// older than the expiry at nowBoot. Called by Sweep.
func (t *Table) expireSets(nowBoot int64) {
	t.rollupMu.Lock() // a Rollup in progress indexes sets between lock holds
	defer t.rollupMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	cutoff := nowBoot - t.sets.expiry
	t.sets.expired += t.sets.dropWhere(func(ls *labelSet) bool { return ls.flows == 0 && ls.last < cutoff })
}

// dropWhere frees every live set for which drop is true and returns how
// many it freed.
func (s *labelSets) dropWhere(drop func(ls *labelSet) bool) uint64 {
	var n uint64
	for i := range s.sets {
		ls := &s.sets[i]
		if !ls.live || !drop(ls) {
			continue
		}
		delete(s.index, ls.key)
		if !ls.key.overflow {
			s.normal--
		}
		*ls = labelSet{nextFree: s.freeHead}
		s.freeHead = int32(i)
		n++
	}
	return n
}

// SetLabelSetLimits changes the label set limit and expiry (<= 0: the
// defaults). Lowering the limit below the sets in use keeps them until
// they expire; new label sets go to overflow sets meanwhile.
func (t *Table) SetLabelSetLimits(max int, expiry time.Duration) {
	t.mu.Lock()
	t.sets.setLimits(max, expiry)
	t.mu.Unlock()
}

// LabelSetStats describe the label sets.
type LabelSetStats struct {
	Sets       int           // label sets kept, overflow sets included
	Max        int           // limit of label sets (overflow sets not counted)
	Expiry     time.Duration // sets idle this long are dropped
	Overflowed uint64        // flows that went to an overflow set
	Expired    uint64        // sets dropped after the expiry time
}

// LabelSetStats returns the current label set figures.
func (t *Table) LabelSetStats() LabelSetStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.sets
	return LabelSetStats{Sets: len(s.index), Max: s.max, Expiry: time.Duration(s.expiry),
		Overflowed: s.overflowed, Expired: s.expired}
}

// LabelSetRow is one label set as LabelSets reports it.
type LabelSetRow struct {
	Key RollupKey
	// ActiveFlows and Active sum the whole flows in the set right now
	// (what the gauges show).
	ActiveFlows int
	Active      RollupCounts
	// Packets and Bytes are the estimated totals since the set appeared;
	// they never decrease while the set exists.
	Packets, Bytes uint64
}

// LabelSets calls fn once per label set, after the table lock is
// released. Active flows are summed a chunk of the arena at a time (see
// Rollup); the totals are read in one lock hold, so two calls never see
// a total go down. fn must not call back into the Table.
func (t *Table) LabelSets(fn func(r *LabelSetRow)) {
	t.rollupMu.Lock()
	defer t.rollupMu.Unlock()
	// Sets are neither freed (expireSets waits for rollupMu) nor moved
	// while we scan; new ones may appear, so sums grows as needed.
	sums := t.setSums[:0]
	for start := 0; ; start += rollupChunk {
		t.mu.Lock()
		if n := len(t.sets.sets); n > len(sums) {
			sums = append(sums, make([]setSum, n-len(sums))...)
		}
		end := min(start+rollupChunk, t.arena.len())
		for i := start; i < end; i++ {
			e := t.arena.at(int32(i))
			if !e.live() {
				continue
			}
			s := &sums[e.set]
			s.flows++
			p, b := e.packets, e.bytes
			if e.kind&kindRec != 0 {
				rs := &t.recs.states[t.arena.cold(int32(i)).recID()]
				p, b = p+rs.prevPackets, b+rs.prevBytes
			}
			s.c.SampledPackets += p
			s.c.SampledBytes += b
			s.c.Packets += p * uint64(e.rate)
			s.c.Bytes += b * uint64(e.rate)
		}
		done := end >= t.arena.len()
		if done {
			rows := t.setRows[:0]
			for i := range t.sets.sets {
				ls := &t.sets.sets[i]
				if !ls.live {
					continue
				}
				r := LabelSetRow{
					Key: RollupKey{
						Ifindex:  ls.key.ifindex,
						Dir:      ls.key.dir,
						Dropped:  ls.key.dropped,
						Proto:    ls.key.proto,
						SrcASN:   ls.key.srcASN,
						DstASN:   ls.key.dstASN,
						SrcCity:  t.cities.name(ls.key.srcCity),
						DstCity:  t.cities.name(ls.key.dstCity),
						Overflow: ls.key.overflow,
					},
					Packets: ls.packets,
					Bytes:   ls.bytes,
				}
				if i < len(sums) {
					r.ActiveFlows, r.Active = int(sums[i].flows), sums[i].c
				}
				rows = append(rows, r)
			}
			t.setRows = rows
		}
		t.mu.Unlock()
		if done {
			break
		}
	}
	clear(sums)
	t.setSums = sums
	for i := range t.setRows {
		fn(&t.setRows[i])
	}
}

type setSum struct {
	flows int64
	c     RollupCounts
}

// dropInterfaceSets forgets the label sets of an interface that went
// away, once its flows have ended: their series leave /metrics with the
// interface instead of lingering under its bare ifindex until expiry.
func (t *Table) dropInterfaceSets(ifindex uint32) {
	t.rollupMu.Lock() // a Rollup in progress indexes sets between lock holds
	defer t.rollupMu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sets.dropWhere(func(ls *labelSet) bool { return ls.key.ifindex == ifindex && ls.flows == 0 })
}
