// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

const (
	// DefaultIdleTimeout applies when Options.IdleTimeout is not positive
	// (the agent.collector.eviction_timeout default).
	DefaultIdleTimeout = 30 * time.Second
	// DefaultActiveTimeout applies when Options.ActiveTimeout is not
	// positive (the agent.collector.active_timeout default).
	DefaultActiveTimeout = 60 * time.Second

	// MaxFlowsCeiling bounds the table whatever MaxFlows says: with
	// MaxFlows 0 ("no limit") a flood of spoofed sources would otherwise
	// grow memory without bound. At about 210 bytes per flow (a 144-byte
	// arena entry, index slots at most half full, two queue items) it is
	// some 850 MiB.
	MaxFlowsCeiling = 1 << 22

	// endChunk bounds the work one lock hold does when ending many flows
	// (sweep, flush, shrink): the collector waits for the lock at most
	// about a millisecond, which a default ring buffer absorbs.
	endChunk = 4096
	// scanChunk bounds the arena slots one lock hold looks at when
	// scanning (flush of one interface, label refresh).
	scanChunk = 1 << 16
	// refreshBudget bounds label refreshes per sweep, so a RIB that
	// changes all the time costs a bounded amount of enricher work.
	refreshBudget = 16384
	// refreshChunk is how many flows are re-enriched per lock round.
	// The enricher runs between rounds, without the table lock.
	refreshChunk = 1024

	// preallocFlows caps what NewTable allocates up front; a larger table
	// grows on demand.
	preallocFlows = 1 << 16
)

// flowCeiling is MaxFlowsCeiling; tests lower it to flood a small table.
var flowCeiling = MaxFlowsCeiling

// Options configure a Table.
type Options struct {
	MaxFlows    int           // most active flows; 0 or more than MaxFlowsCeiling = MaxFlowsCeiling
	IdleTimeout time.Duration // end flows idle this long; <= 0 means DefaultIdleTimeout
	// ActiveTimeout is how often a flow that goes on is exported as a
	// delta record; <= 0 means DefaultActiveTimeout.
	ActiveTimeout time.Duration
	Sinks         []Sink       // receive ended flows, in this order
	Enricher      Enricher     // labels new flows; may be nil
	Logger        *slog.Logger // nil discards
	// MaxLabelSets and LabelSetExpiry bound the label sets (see
	// labelsets.go); <= 0 selects DefaultMaxLabelSets and
	// DefaultLabelSetExpiry.
	MaxLabelSets   int
	LabelSetExpiry time.Duration
}

// entry is one active flow in the arena. Neither it nor the index holds
// pointers, so the garbage collector never scans the flow table however
// large it grows.
type entry struct {
	// Read or written by every update: the key (compared by the index
	// lookup), the rate and the counters, together in the first 80 bytes.
	key     Key
	ver     uint32 // bumped when the slot is freed; stale queue items compare it
	rate    uint32 // 1-in-N rate of every packet counted in this flow
	last    int64  // boot ns of the newest sampled packet
	packets uint64 // sampled, since the current record started
	bytes   uint64
	set     int32 // label set (Table.sets) the flow counts in

	first int64 // boot ns of the first sampled packet
	// Set by the first active-timeout export: where the current record
	// starts (the previous record's End, wall ns, kept as it was handed
	// out so that records tile exactly even when the boot-to-wall offset
	// is re-measured in between) and what earlier records held.
	recStartWall           int64
	prevPackets, prevBytes uint64
	gen                    uint64 // Enricher.Generation() the labels came from
	srcASN                 uint32
	dstASN                 uint32
	srcCity                uint32 // ids in Table.cities; 0 = unknown
	dstCity                uint32
	nextFree               int32 // free-list link while the slot is unused
	inIfindex              uint32
	live                   bool
}

// Table aggregates sampled packet events into flows keyed by Key, ends
// them on idle timeout, when the table is full (oldest last-seen first)
// and on Flush, and hands ended flows to the sinks. All methods are safe
// for concurrent use; the collector takes the lock once per batch.
type Table struct {
	mu       sync.Mutex
	entries  []entry    // arena; slots are reused through freeHead
	index    flowIndex  // flow key -> arena slot
	freeHead int32      // first free slot, -1 if none
	queue    ageQueue   // eviction order, by last-seen
	due      ageQueue   // active-timeout order, by start of the current record
	cities   *cityTable // city names behind entry.srcCity/dstCity
	sets     labelSets  // Prometheus label sets and their totals
	maxFlows int        // 0 = unlimited (up to flowCeiling)
	hint     int        // flows NewTable sized for; shrinking stops there
	ended    []Record   // flows ended under mu, not yet delivered
	forced   uint64     // lack-of-resources evictions
	idle     uint64     // idle-timeout evictions
	touched  uint64     // sink for prefetch loads, see updateGroup
	gone     goneInterfaces

	// Scratch space of updateGroup, kept here so it is not zeroed per
	// group.
	groupKeys   [prefetchGroup]Key
	groupHashes [prefetchGroup]uint64
	pub         struct {
		active       int64
		forced, idle uint64
	} // last published values

	// Published at the end of every lock hold for lock-free readers.
	activeA       atomic.Int64
	forcedA       atomic.Uint64
	idleA         atomic.Uint64
	lateA         atomic.Uint64 // events of interfaces gone, dropped
	capacityA     atomic.Int64
	idleTimeout   atomic.Int64 // ns
	activeTimeout atomic.Int64 // ns

	enricher Enricher
	sinks    []Sink
	log      *slog.Logger
	clock    wallClock

	sinkMu sync.Mutex // sinks are called by one goroutine at a time
	bufMu  sync.Mutex
	bufs   [][]Record // delivered record buffers, for reuse

	sweepMu       sync.Mutex // one Sweep at a time; guards the fields below
	refreshCursor int
	refreshBuf    []refreshItem

	rollupMu sync.Mutex // one LabelSets at a time; guards the buffers below
	setSums  []setSum
	setRows  []LabelSetRow
}

// NewTable returns an empty flow table.
func NewTable(o Options) *Table {
	maxFlows := max(o.MaxFlows, 0)
	hint := 1024
	if maxFlows > 0 {
		hint = min(maxFlows, preallocFlows)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Table{
		entries:  make([]entry, 0, hint),
		index:    newFlowIndex(hint),
		freeHead: -1,
		queue:    ageQueue{items: make([]queueItem, 0, hint)},
		due:      ageQueue{items: make([]queueItem, 0, hint)},
		cities:   newCityTable(),
		maxFlows: maxFlows,
		hint:     hint,
		enricher: o.Enricher,
		sinks:    append([]Sink(nil), o.Sinks...),
		log:      log,
		sets:     newLabelSets(o.MaxLabelSets, o.LabelSetExpiry),
	}
	t.capacityA.Store(int64(t.limit()))
	t.SetIdleTimeout(o.IdleTimeout)
	t.SetActiveTimeout(o.ActiveTimeout)
	t.clock.refresh()
	return t
}

// SetActiveTimeout changes how often a flow that goes on is exported as
// a delta record; it applies from the next sweep. A value <= 0 selects
// DefaultActiveTimeout.
func (t *Table) SetActiveTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultActiveTimeout
	}
	t.activeTimeout.Store(int64(d))
}

// ActiveTimeout returns the current active timeout.
func (t *Table) ActiveTimeout() time.Duration { return time.Duration(t.activeTimeout.Load()) }

// SetIdleTimeout changes the idle timeout; it applies from the next
// sweep. A value <= 0 selects DefaultIdleTimeout.
func (t *Table) SetIdleTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultIdleTimeout
	}
	t.idleTimeout.Store(int64(d))
}

// IdleTimeout returns the current idle timeout.
func (t *Table) IdleTimeout() time.Duration { return time.Duration(t.idleTimeout.Load()) }

// SetMaxFlows changes the table size (0 = unlimited). Shrinking below the
// number of active flows ends the oldest ones (EndLackOfResources, counted
// as forced evictions) before it returns.
func (t *Table) SetMaxFlows(n int) {
	n = max(n, 0)
	t.mu.Lock()
	t.maxFlows = n
	t.capacityA.Store(int64(t.limit()))
	t.mu.Unlock()
	for {
		t.mu.Lock()
		for k := 0; k < endChunk && t.overLimit(); k++ {
			t.evictOldest()
		}
		more := t.overLimit()
		ended := t.finishLocked()
		t.mu.Unlock()
		t.deliverPaced(ended)
		if !more {
			return
		}
	}
}

func (t *Table) overLimit() bool { return t.index.count > t.limit() }

// limit is the most flows the table holds: maxFlows, at most flowCeiling.
func (t *Table) limit() int {
	if t.maxFlows == 0 || t.maxFlows > flowCeiling {
		return flowCeiling
	}
	return t.maxFlows
}

// Active returns the number of active flows.
func (t *Table) Active() int { return int(t.activeA.Load()) }

// Capacity returns the most flows the table holds: MaxFlows, or
// MaxFlowsCeiling when MaxFlows is 0 or above it.
func (t *Table) Capacity() int { return int(t.capacityA.Load()) }

// ForcedEvictions counts flows ended because the table was full
// (including a shrink by SetMaxFlows). Flush does not count here.
func (t *Table) ForcedEvictions() uint64 { return t.forcedA.Load() }

// IdleEvictions counts flows ended by the idle timeout.
func (t *Table) IdleEvictions() uint64 { return t.idleA.Load() }

// UpdateBatch adds sampled packets under one lock hold. For flows already
// in the table it does not allocate.
func (t *Table) UpdateBatch(evs []datapath.Event) {
	t.mu.Lock()
	for len(evs) > 0 {
		n := min(len(evs), prefetchGroup)
		t.updateGroup(evs[:n])
		evs = evs[n:]
	}
	ended := t.finishLocked()
	t.mu.Unlock()
	t.deliver(ended)
}

// prefetchGroup is how many events updateGroup looks up side by side.
const prefetchGroup = 16

// updateGroup applies up to prefetchGroup events in three passes. Random
// flows at 64k+ do not fit in the L2 cache, and one at a time every
// lookup waits for two dependent cache misses (index slot, then entry).
// The first two passes only load what the third will need, with no
// dependency between events, so the CPU overlaps all those misses; the
// third pass then finds everything in cache. The loads are summed into
// t.touched so the compiler cannot drop them.
func (t *Table) updateGroup(evs []datapath.Event) {
	keys, hashes := &t.groupKeys, &t.groupHashes
	evs = evs[:min(len(evs), prefetchGroup)]
	slots, mask := t.index.slots, t.index.mask
	var touched uint64
	for j := range evs {
		keys[j] = keyOf(&evs[j])
		hashes[j] = t.index.hash(&keys[j])
		touched += slots[(hashes[j]>>32)&mask]
	}
	for j := range evs {
		if w := slots[(hashes[j]>>32)&mask]; w != 0 {
			// First and last word of the part an update reads (key
			// to bytes, 80 bytes), which spans two cache lines.
			e := &t.entries[uint32(w)-1]
			touched += uint64(e.key.Src[0]) + e.bytes
		}
	}
	for j := range evs {
		t.apply(&evs[j], &keys[j], hashes[j])
	}
	t.touched += touched
}

// Update adds one sampled packet. Prefer UpdateBatch, which takes the lock
// once for many events and overlaps their cache misses.
func (t *Table) Update(ev *datapath.Event) {
	k := keyOf(ev)
	t.mu.Lock()
	t.apply(ev, &k, t.index.hash(&k))
	ended := t.finishLocked()
	t.mu.Unlock()
	t.deliver(ended)
}

func keyOf(ev *datapath.Event) Key {
	return Key{
		Src:     ev.Src,
		Dst:     ev.Dst,
		Ifindex: ev.Ifindex,
		SrcPort: ev.SrcPort,
		DstPort: ev.DstPort,
		Proto:   ev.Proto,
		Dir:     ev.Dir,
	}
}

// rateOf is the rate that sampled ev; events that carry none (tests,
// older datapaths) count as 1 in 1.
func rateOf(ev *datapath.Event) uint32 { return max(ev.SampleRate, 1) }

// apply adds ev, whose key k has hash h, to its flow.
func (t *Table) apply(ev *datapath.Event, k *Key, h uint64) {
	if i := t.index.find(h, k, t.entries); i >= 0 {
		e := &t.entries[i]
		if e.rate != rateOf(ev) {
			// Estimates multiply a flow's counts by its one rate: the
			// flow sampled at the old rate ends here (forced end) and
			// a new one starts with this event.
			t.endFlow(i, EndForced)
			t.create(k, h, ev)
			return
		}
		if e.packets == 0 {
			// The previous record went out on the active timeout and
			// none is pending: this packet opens the next one, which
			// starts where that one ended (e.last, not yet moved).
			t.due.push(queueItem{at: e.last, idx: i, ver: e.ver})
		}
		// Each CPU batches its events for up to 10 ms, so events of
		// different CPUs reach the table out of order: last-seen only
		// moves forward, first-seen only back (rarely, so the second
		// cache line of the entry is seldom touched).
		if ns := int64(ev.BootNs); ns > e.last {
			e.last = ns
		} else if ns < e.first {
			e.first = ns
		}
		e.packets += segments(ev)
		e.bytes += uint64(ev.Len)
		t.countEvent(e, ev)
		return
	}
	t.create(k, h, ev)
}

// create adds a new flow, first making room when the table is full.
func (t *Table) create(k *Key, h uint64, ev *datapath.Event) {
	if t.gone.refuses(k.Ifindex) {
		t.lateA.Add(1)
		return
	}
	if t.index.count >= t.limit() {
		t.evictOldest()
	}
	i := t.allocSlot()
	e := &t.entries[i]
	ns := int64(ev.BootNs)
	*e = entry{
		last:      ns,
		packets:   segments(ev),
		bytes:     uint64(ev.Len),
		key:       *k,
		first:     ns,
		ver:       e.ver,
		rate:      rateOf(ev),
		inIfindex: ev.InIfindex,
		live:      true,
	}
	if t.enricher != nil {
		// Read the generation first: if it changes while Enrich runs,
		// the next sweep sees a mismatch and refreshes.
		e.gen = t.enricher.Generation()
		l := t.enricher.Enrich(k.SrcAddr(), k.DstAddr())
		t.setLabels(e, &l)
	}
	t.attachSet(e, ns)
	t.countEvent(e, ev)
	t.index.insert(h, i)
	t.queue.push(queueItem{at: ns, idx: i, ver: e.ver})
	t.due.push(queueItem{at: ns, idx: i, ver: e.ver})
}

func (t *Table) setLabels(e *entry, l *Labels) {
	e.srcASN = l.SrcASN
	e.dstASN = l.DstASN
	e.srcCity = t.cities.id(l.SrcCity)
	e.dstCity = t.cities.id(l.DstCity)
}

func (t *Table) allocSlot() int32 {
	if i := t.freeHead; i >= 0 {
		t.freeHead = t.entries[i].nextFree
		return i
	}
	t.entries = append(t.entries, entry{})
	return int32(len(t.entries) - 1)
}

// endFlow removes the flow in slot i and records the rest of it for the
// sinks (nothing when its last delta record holds everything).
func (t *Table) endFlow(i int32, reason EndReason) {
	e := &t.entries[i]
	if len(t.sinks) > 0 && e.packets > 0 {
		t.ended = append(t.ended, t.record(e, reason))
	}
	t.index.remove(t.index.hash(&e.key), i)
	t.detachSet(e)
	e.live = false
	e.ver++
	e.nextFree = t.freeHead
	t.freeHead = i
}

// evictOldest ends the flow with the oldest last-seen. The table must not
// be empty.
func (t *Table) evictOldest() {
	t.endFlow(t.popOldest(), EndLackOfResources)
	t.forced++
}

// popOldest removes the oldest flow from the queue and returns its slot;
// see ageQueue for why the answer is exact.
func (t *Table) popOldest() int32 {
	for {
		top := t.queue.items[0]
		e := &t.entries[top.idx]
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

// record converts the current record of an entry to a Record.
func (t *Table) record(e *entry, reason EndReason) Record {
	start := t.clock.wall(e.first)
	if e.prevPackets > 0 {
		start = time.Unix(0, e.recStartWall)
	}
	return Record{
		Key:        e.key,
		Start:      start,
		End:        t.clock.wall(e.last),
		Packets:    e.packets,
		Bytes:      e.bytes,
		SampleRate: e.rate,
		InIfindex:  e.inIfindex,
		Labels: Labels{
			SrcASN:  e.srcASN,
			DstASN:  e.dstASN,
			SrcCity: t.cities.name(e.srcCity),
			DstCity: t.cities.name(e.dstCity),
		},
		Reason: reason,
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

// compactLocked drops stale queue items once they outnumber live flows,
// and resets the arena when the table is empty so scans stay short after
// a burst.
func (t *Table) compactLocked() {
	if t.index.count == 0 {
		t.entries = t.entries[:0]
		t.freeHead = -1
		t.queue.reset()
		t.due.reset()
		return
	}
	current := func(it queueItem) bool { return t.entries[it.idx].ver == it.ver }
	if t.queue.len() > 2*t.index.count+1024 {
		t.queue.rebuild(current)
	}
	if t.due.len() > 2*t.index.count+1024 {
		t.due.rebuild(current)
	}
}

// shrinkLocked gives memory back after a flood: once the arena or the
// index is more than four times the size the active flows need (and
// larger than NewTable made it), the flows move to a new arena sized for
// twice their number, and the index and queues are rebuilt. That costs
// one pass over the old arena under the lock, which only a table that
// lost three quarters of its flows pays, once.
func (t *Table) shrinkLocked() {
	n := t.index.count
	want := max(2*n, t.hint)
	if cap(t.entries) <= 4*want && len(t.index.slots) <= 4*slotsFor(want) {
		return
	}
	old := t.entries
	t.entries = make([]entry, 0, want)
	x := newFlowIndex(want)
	x.seed = t.index.seed // keep the seed: hashes stay valid
	t.index = x
	t.queue.items = make([]queueItem, 0, want)
	t.due.items = make([]queueItem, 0, want)
	for i := range old {
		e := &old[i]
		if !e.live {
			continue
		}
		j := int32(len(t.entries))
		t.entries = append(t.entries, *e)
		t.index.insert(t.index.hash(&e.key), j)
		// Pushing in arena order and then restoring heap order would be
		// O(n) instead of O(n log n); these run once per flood.
		t.queue.push(queueItem{at: e.last, idx: j, ver: e.ver})
		if e.packets > 0 {
			// The boot time of a later record's start is not kept; its
			// last-seen is at or after it, so the record is at worst
			// exported a little late.
			at := e.first
			if e.prevPackets > 0 {
				at = e.last
			}
			t.due.push(queueItem{at: at, idx: j, ver: e.ver})
		}
	}
	t.freeHead = -1
	t.refreshCursor = 0
}

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
	t.evictIdle(nowBoot - t.idleTimeout.Load())
	t.exportActive(nowBoot - t.activeTimeout.Load())
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

// evictIdle ends every flow whose last-seen is before cutoff.
func (t *Table) evictIdle(cutoff int64) {
	for {
		t.mu.Lock()
		done := t.evictIdleLocked(cutoff, endChunk)
		if done {
			t.compactLocked()
			t.shrinkLocked()
		}
		ended := t.finishLocked()
		t.mu.Unlock()
		t.deliver(ended)
		if done {
			return
		}
	}
}

// evictIdleLocked works through the queue front while its key is before
// cutoff. Keys never exceed last-seen, so once the front key is at or
// after cutoff no flow is idle. It returns false when budget ran out.
func (t *Table) evictIdleLocked(cutoff int64, budget int) bool {
	for n := 0; t.queue.len() > 0; n++ {
		if n == budget {
			return false
		}
		top := t.queue.items[0]
		if top.at >= cutoff {
			return true
		}
		e := &t.entries[top.idx]
		switch {
		case e.ver != top.ver:
			t.queue.popRoot()
		case e.last >= cutoff:
			t.queue.rekeyRoot(e.last)
		default:
			t.queue.popRoot()
			t.endFlow(top.idx, EndIdleTimeout)
			t.idle++
		}
	}
	return true
}

// exportActive hands the sinks a delta record (EndActiveTimeout) of every
// flow whose current record started at or before cutoff, and starts the
// next record where that one ends. The flows stay in the table.
func (t *Table) exportActive(cutoff int64) {
	for {
		t.mu.Lock()
		done := t.exportActiveLocked(cutoff, endChunk)
		recs := t.finishLocked()
		t.mu.Unlock()
		t.deliver(recs)
		if done {
			return
		}
	}
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
		e := &t.entries[top.idx]
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
	gen := t.enricher.Generation()
	scanned, refreshed := 0, 0
	for refreshed < refreshBudget {
		t.mu.Lock()
		n := len(t.entries)
		if scanned >= n {
			t.mu.Unlock()
			break
		}
		buf := t.refreshBuf[:0]
		for look := 0; len(buf) < refreshChunk && scanned < n && look < scanChunk; look++ {
			if t.refreshCursor >= n {
				t.refreshCursor = 0
			}
			e := &t.entries[t.refreshCursor]
			if e.live && e.gen != gen {
				buf = append(buf, refreshItem{idx: int32(t.refreshCursor), key: e.key})
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
			if int(it.idx) >= len(t.entries) {
				continue // the arena was reset (table emptied) meanwhile
			}
			if e := &t.entries[it.idx]; e.live && sameKey(&e.key, &it.key) {
				t.setLabels(e, &it.labels)
				e.gen = gen
				t.detachSet(e) // counted so far stays in the old set
				t.attachSet(e, e.last)
			}
		}
		t.mu.Unlock()
		refreshed += len(buf)
	}
	return refreshed
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

func (t *Table) endMatching(reason EndReason, ifindex uint32, byIfindex bool) {
	t.mu.Lock()
	end := len(t.entries)
	t.mu.Unlock()
	for cursor := 0; ; {
		t.mu.Lock()
		end = min(end, len(t.entries)) // compactLocked may have emptied the arena
		for ended, look := 0, 0; cursor < end && ended < endChunk && look < scanChunk; cursor, look = cursor+1, look+1 {
			e := &t.entries[cursor]
			if !e.live || (byIfindex && e.key.Ifindex != ifindex) {
				continue
			}
			t.endFlow(int32(cursor), reason)
			ended++
		}
		done := cursor >= end
		if done {
			t.compactLocked()
		}
		recs := t.finishLocked()
		t.mu.Unlock()
		t.deliverPaced(recs)
		if done {
			return
		}
	}
}

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
}

// rollKey is RollupKey with city ids: cheaper to hash and pointer-free.
type rollKey struct {
	ifindex, srcASN, dstASN, srcCity, dstCity uint32
	proto                                     uint8
	dir                                       datapath.Direction
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

// topChunk is how many arena slots Top copies per lock hold.
const topChunk = 8192

// topLockHeld, when set (by a benchmark), is told how long each of Top's
// lock holds lasted.
var topLockHeld func(time.Duration)

// Top returns snapshot copies of up to n active flows (all when n <= 0)
// that pass filter (nil passes all), ordered by less (nil: arena order).
// A copy describes the whole flow so far (all its records): Packets and
// Bytes are sampled counts at SampleRate; Reason is 0.
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
	chunk := make([]entry, 0, topChunk)
	var cities []string
	for start := 0; ; start += topChunk {
		t.mu.Lock()
		var locked time.Time
		if topLockHeld != nil {
			locked = time.Now()
		}
		end := min(start+topChunk, len(t.entries))
		chunk = chunk[:0]
		for i := start; i < end; i++ {
			if t.entries[i].live {
				chunk = append(chunk, t.entries[i])
			}
		}
		// City names are only ever appended, so the elements this
		// slice header covers never change: safe to read unlocked.
		cities = t.cities.names
		done := end >= len(t.entries)
		t.mu.Unlock()
		if topLockHeld != nil {
			topLockHeld(time.Since(locked))
		}

		for i := range chunk {
			e := &chunk[i]
			if filter != nil && !filter(&e.key) {
				continue
			}
			r := t.snapshot(e, cities)
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

// snapshot converts a copied entry to a Record of the whole flow.
func (t *Table) snapshot(e *entry, cities []string) Record {
	name := func(id uint32) string {
		if int(id) < len(cities) {
			return cities[id]
		}
		return ""
	}
	return Record{
		Key:        e.key,
		Start:      t.clock.wall(e.first),
		End:        t.clock.wall(e.last),
		Packets:    e.prevPackets + e.packets,
		Bytes:      e.prevBytes + e.bytes,
		SampleRate: e.rate,
		InIfindex:  e.inIfindex,
		Labels: Labels{
			SrcASN:  e.srcASN,
			DstASN:  e.dstASN,
			SrcCity: name(e.srcCity),
			DstCity: name(e.dstCity),
		},
	}
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

// segments is how many packets an event stands for: a GSO/GRO skb is
// sampled once but carries several wire packets.
func segments(ev *datapath.Event) uint64 {
	if ev.Segs > 1 {
		return uint64(ev.Segs)
	}
	return 1
}
