package flow

import (
	"log/slog"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

const (
	// DefaultIdleTimeout applies when Options.IdleTimeout is not positive
	// (the agent.collector.eviction_timeout default).
	DefaultIdleTimeout = 30 * time.Second

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
	// maxArena keeps arena indexes within int32 even when unlimited.
	maxArena = math.MaxInt32
)

// Options configure a Table.
type Options struct {
	MaxFlows    int           // most active flows; 0 = unlimited
	IdleTimeout time.Duration // end flows idle this long; <= 0 means DefaultIdleTimeout
	Sinks       []Sink        // receive ended flows, in this order
	Enricher    Enricher      // labels new flows; may be nil
	Logger      *slog.Logger  // nil discards
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
	// lookup) and the counters, together in the first 72 bytes.
	key     Key
	ver     uint32 // bumped when the slot is freed; stale queue items compare it
	last    int64  // boot ns of the newest sampled packet
	packets uint64
	bytes   uint64
	set     int32 // label set (Table.sets) the flow counts in

	first    int64  // boot ns of the first sampled packet
	gen      uint64 // Enricher.Generation() the labels came from
	srcASN   uint32
	dstASN   uint32
	srcCity  uint32 // ids in Table.cities; 0 = unknown
	dstCity  uint32
	nextFree int32 // free-list link while the slot is unused
	live     bool
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
	queue    ageQueue   // eviction order
	cities   *cityTable // city names behind entry.srcCity/dstCity
	sets     labelSets  // Prometheus label sets and their totals
	maxFlows int        // 0 = unlimited
	ended    []Record   // flows ended under mu, not yet delivered
	forced   uint64     // lack-of-resources evictions
	idle     uint64     // idle-timeout evictions
	touched  uint64     // sink for prefetch loads, see updateGroup

	// Scratch space of updateGroup, kept here so it is not zeroed per
	// group.
	groupKeys   [prefetchGroup]Key
	groupHashes [prefetchGroup]uint64
	pub         struct {
		active       int64
		forced, idle uint64
	} // last published values

	// Published at the end of every lock hold for lock-free readers.
	activeA     atomic.Int64
	forcedA     atomic.Uint64
	idleA       atomic.Uint64
	capacityA   atomic.Int64
	idleTimeout atomic.Int64 // ns

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
		cities:   newCityTable(),
		maxFlows: maxFlows,
		enricher: o.Enricher,
		sinks:    append([]Sink(nil), o.Sinks...),
		log:      log,
		sets:     newLabelSets(o.MaxLabelSets, o.LabelSetExpiry),
	}
	t.capacityA.Store(int64(maxFlows))
	t.SetIdleTimeout(o.IdleTimeout)
	t.clock.refresh()
	return t
}

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
	t.capacityA.Store(int64(n))
	t.mu.Unlock()
	for {
		t.mu.Lock()
		for k := 0; k < endChunk && t.overLimit(); k++ {
			t.evictOldest()
		}
		more := t.overLimit()
		ended := t.finishLocked()
		t.mu.Unlock()
		t.deliver(ended)
		if !more {
			return
		}
	}
}

func (t *Table) overLimit() bool { return t.maxFlows > 0 && t.index.count > t.maxFlows }

// Active returns the number of active flows.
func (t *Table) Active() int { return int(t.activeA.Load()) }

// Capacity returns the configured maximum number of flows (0 = unlimited).
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
			// to bytes, 72 bytes), which spans two cache lines.
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

// apply adds ev, whose key k has hash h, to its flow.
func (t *Table) apply(ev *datapath.Event, k *Key, h uint64) {
	if i := t.index.find(h, k, t.entries); i >= 0 {
		e := &t.entries[i]
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
	limit := t.maxFlows
	if limit == 0 || limit > maxArena {
		limit = maxArena
	}
	if t.index.count >= limit {
		t.evictOldest()
	}
	i := t.allocSlot()
	e := &t.entries[i]
	ns := int64(ev.BootNs)
	*e = entry{
		last:    ns,
		packets: segments(ev),
		bytes:   uint64(ev.Len),
		key:     *k,
		first:   ns,
		ver:     e.ver,
		live:    true,
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

// endFlow removes the flow in slot i and records it for the sinks.
func (t *Table) endFlow(i int32, reason EndReason) {
	e := &t.entries[i]
	if len(t.sinks) > 0 {
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

// record converts an entry to a Record. Active flows have Reason 0.
func (t *Table) record(e *entry, reason EndReason) Record {
	return Record{
		Key:     e.key,
		Start:   t.clock.wall(e.first),
		End:     t.clock.wall(e.last),
		Packets: e.packets,
		Bytes:   e.bytes,
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
		return
	}
	if t.queue.len() > 2*t.index.count+1024 {
		t.queue.rebuild(func(it queueItem) bool { return t.entries[it.idx].ver == it.ver })
	}
}

// Sweep ends flows idle for longer than the idle timeout at nowBoot
// (CLOCK_BOOTTIME ns, see BootNow), refreshes the labels of up to
// refreshBudget flows whose enricher generation is outdated, and
// re-measures the boot-to-wall clock offset.
func (t *Table) Sweep(nowBoot int64) {
	t.sweepMu.Lock()
	defer t.sweepMu.Unlock()
	t.clock.refresh()
	started := time.Now()
	idleBefore := t.IdleEvictions()
	t.evictIdle(nowBoot - t.idleTimeout.Load())
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
func (t *Table) FlushInterface(ifindex uint32) { t.endMatching(EndForced, ifindex, true) }

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
		t.deliver(recs)
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

// rollupChunk is how many arena slots Rollup aggregates per lock hold.
const rollupChunk = 8192

// Rollup sums the sampled packets and bytes of the active flows by label
// set and calls fn once per set with active flows, after the table lock
// is released. The arena is aggregated a chunk at a time under the lock,
// so the collector never waits for a whole scan; a flow that starts or
// ends meanwhile may or may not be counted, as if it had happened just
// before or after the scrape. fn must not call Rollup.
func (t *Table) Rollup(fn func(k RollupKey, sampledPackets, sampledBytes uint64)) {
	t.LabelSets(func(r *LabelSetRow) {
		if r.ActiveFlows > 0 {
			fn(r.Key, r.SampledPackets, r.SampledBytes)
		}
	})
}

// Top returns snapshot copies of up to n active flows (all when n <= 0)
// that pass filter (nil passes all), ordered by less (nil: arena order).
// Reason is 0 in the copies. filter and less run under the table lock and
// must not call back into the Table.
func (t *Table) Top(n int, less func(a, b *Record) bool, filter func(*Key) bool) []Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Record
	if n <= 0 || less == nil {
		for i := range t.entries {
			e := &t.entries[i]
			if !e.live || (filter != nil && !filter(&e.key)) {
				continue
			}
			out = append(out, t.record(e, 0))
			if less == nil && n > 0 && len(out) == n {
				return out
			}
		}
		if less != nil {
			sort.SliceStable(out, func(i, j int) bool { return less(&out[i], &out[j]) })
		}
		return out
	}
	// Keep the best n in a heap whose root is the worst of them, so the
	// memory used is O(n) however many flows there are.
	worse := func(i, j int) bool { return less(&out[j], &out[i]) }
	for i := range t.entries {
		e := &t.entries[i]
		if !e.live || (filter != nil && !filter(&e.key)) {
			continue
		}
		r := t.record(e, 0)
		if len(out) < n {
			out = append(out, r)
			for c := len(out) - 1; c > 0; {
				p := (c - 1) / 2
				if !worse(c, p) {
					break
				}
				out[c], out[p] = out[p], out[c]
				c = p
			}
			continue
		}
		if !less(&r, &out[0]) {
			continue
		}
		out[0] = r
		for p := 0; ; {
			w, l, rt := p, 2*p+1, 2*p+2
			if l < len(out) && worse(l, w) {
				w = l
			}
			if rt < len(out) && worse(rt, w) {
				w = rt
			}
			if w == p {
				break
			}
			out[p], out[w] = out[w], out[p]
			p = w
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return less(&out[i], &out[j]) })
	return out
}

// segments is how many packets an event stands for: a GSO/GRO skb is
// sampled once but carries several wire packets.
func segments(ev *datapath.Event) uint64 {
	if ev.Segs > 1 {
		return uint64(ev.Segs)
	}
	return 1
}
