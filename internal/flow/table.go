// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"log/slog"
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
	// grow memory without bound. At 88 bytes per IPv4 flow (an 80-byte
	// arena slot, 4-byte index slots at most half full), 120 per IPv6
	// flow, 16 more for the age queue of a full table and 40 for the
	// active-timeout state of a longer flow, it is some 350-700 MiB.
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

	// shrinkFloor bounds the room for flows that shrinkLocked keeps in
	// a table with a max_flows: min(max_flows, shrinkFloor).
	shrinkFloor = 1 << 16
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

// Table aggregates sampled packet events into flows keyed by Key, ends
// them on idle timeout, when the table is full (oldest last-seen first)
// and on Flush, and hands ended flows to the sinks. All methods are safe
// for concurrent use; the collector takes the lock once per batch.
type Table struct {
	mu       sync.Mutex
	arena    arena              // the flows; free slots are reused
	index    flowIndex          // flow key -> arena slot
	queue    ageQueue           // eviction order, by last-seen, while aging
	aging    bool               // queue is kept: the table filled up
	v6       addrPairs          // addresses of IPv6 flows
	recs     recordStates       // flows an active timeout exported part of
	cities   *cityTable         // city names behind the label ids
	bgpDst   *refTable[dstSide] // destination labels behind entryCold.dst
	bgpSrc   *refTable[srcSide] // and source labels behind entryCold.src
	sets     labelSets          // Prometheus label sets and their totals
	maxFlows int                // 0 = unlimited (up to flowCeiling)
	hint     int                // shrinking stops at room for this many flows
	ended    []Record           // flows ended under mu, not yet delivered
	forced   uint64             // lack-of-resources evictions
	idle     uint64             // idle-timeout evictions
	touched  uint64             // sink for prefetch loads, see updateGroup
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
	lateA         atomic.Uint64 // sampled packets of interfaces gone, dropped
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
	hint := chunkLen
	if maxFlows > 0 {
		hint = min(maxFlows, shrinkFloor)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Nothing is sized for hint up front: the garbage collector paces
	// itself by the live heap, and room for flows that never come would
	// count as live (see arena). Index and queues double as they fill.
	t := &Table{
		index:    newFlowIndex(chunkLen),
		cities:   newCityTable(),
		bgpDst:   newRefTable[dstSide](),
		bgpSrc:   newRefTable[srcSide](),
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
	t.inChunks(true, func() bool {
		for k := 0; k < endChunk && t.overLimit(); k++ {
			t.evictOldest()
		}
		return !t.overLimit()
	})
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
		touched += uint64(slots[uint64(homeHash(hashes[j]))&mask])
	}
	for j := range evs {
		if w := slots[uint64(homeHash(hashes[j]))&mask]; w != 0 {
			// The part an update reads is one cache line.
			touched += uint64(t.arena.at(slotIdx(w)).last)
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
		Dropped: ev.Dropped,

		TOS:       ev.TOS,
		VLANOuter: ev.VLANOuter,
		VLANInner: ev.VLANInner,
	}
}

// rateOf is the rate that sampled ev; events that carry none (tests,
// older datapaths) count as 1 in 1.
func rateOf(ev *datapath.Event) uint32 { return max(ev.SampleRate, 1) }

// apply adds ev, whose key k has hash h, to its flow.
func (t *Table) apply(ev *datapath.Event, k *Key, h uint64) {
	if i := t.index.find(h, k, &t.arena, &t.v6); i >= 0 {
		e := t.arena.at(i)
		if e.rate != rateOf(ev) {
			// Estimates multiply a flow's counts by its one rate: the
			// flow sampled at the old rate ends here (forced end) and
			// a new one starts with this event.
			t.endFlow(i, EndForced)
			t.create(k, h, ev)
			return
		}
		// Each CPU batches its events for up to 10 ms, so events of
		// different CPUs reach the table out of order: last-seen only
		// moves forward, first-seen only back (rarely, so the cold
		// part of the entry is seldom touched; first <= last, so an
		// event at last-seen, such as another of the same batch, needs
		// no look at it).
		if ns := int64(ev.BootNs); ns > e.last {
			e.last = ns
		} else if ns < e.last {
			if first := t.first(e, t.arena.cold(i)); ns < *first {
				*first = ns
			}
		}
		e.packets += segments(ev)
		e.bytes += uint64(ev.Len)
		// No-ops when the datapath reports no optional fields.
		e.tcpFlags |= ev.TCPFlags
		e.ttlMin = min(e.ttlMin, ev.TTL)
		e.ttlMax = max(e.ttlMax, ev.TTL)
		t.countEvent(e, ev)
		return
	}
	t.create(k, h, ev)
}

// create adds a new flow, first making room when the table is full.
func (t *Table) create(k *Key, h uint64, ev *datapath.Event) {
	if t.gone.refuses(k.Ifindex) {
		t.lateA.Add(segments(ev)) // an event may carry a run of packets
		return
	}
	if t.index.count >= t.limit() {
		t.evictOldest()
	}
	i := t.arena.alloc()
	e, c := t.arena.at(i), t.arena.cold(i)
	ns := int64(ev.BootNs)
	*e = entry{
		last:    ns,
		packets: segments(ev),
		bytes:   uint64(ev.Len),
		ver:     e.ver + 1,
		rate:    rateOf(ev),

		tcpFlags: ev.TCPFlags,
		ttlMin:   ev.TTL,
		ttlMax:   ev.TTL,
	}
	storeKey(e, k, &t.v6)
	path := flowPath{nextHop: ev.FIBNextHop, in: ev.InIfindex, out: ev.FIBIfindex}
	*c = entryCold{firstOrRec: ns}
	if t.enricher != nil {
		// Read the generation first: if it changes while Enrich runs,
		// the next sweep sees a mismatch and refreshes.
		gen := uint32(t.enricher.Generation())
		l := t.enricher.Enrich(k.SrcAddr(), k.DstAddr())
		t.setSides(c, &l, path, gen)
	} else {
		c.dst = t.bgpDst.acquire(dstSide{path: path})
	}
	t.attachSet(e, c, ns)
	t.countEvent(e, ev)
	t.index.insert(h, i, &t.arena, &t.v6)
	if t.aging {
		t.queue.push(queueItem{at: ns, idx: i, ver: e.ver})
	}
}

// setLabels gives c the labels l of generation gen, keeping its path.
func (t *Table) setLabels(c *entryCold, l *Labels, gen uint32) {
	t.setSides(c, l, t.bgpDst.get(c.dst).path, gen)
}

// setSides gives c the ids of l's two sides with path and gen,
// releasing those it held.
func (t *Table) setSides(c *entryCold, l *Labels, path flowPath, gen uint32) {
	oldDst, oldSrc := c.dst, c.src
	c.dst = t.bgpDst.acquire(dstSide{asn: l.DstASN, city: t.cities.id(l.DstCity), nextHop: l.BGP.NextHop,
		nextAS: l.BGP.NextAS, prefixLen: l.BGP.DstPrefixLen, communities: l.BGP.Communities,
		largeCommunities: l.BGP.LargeCommunities, path: path, gen: gen})
	c.src = t.bgpSrc.acquire(srcSide{asn: l.SrcASN, city: t.cities.id(l.SrcCity), prevAS: l.BGP.PrevAS,
		prefixLen: l.BGP.SrcPrefixLen})
	t.bgpDst.release(oldDst)
	t.bgpSrc.release(oldSrc)
}

// bgpOf returns the BGP context of a flow's two sides.
func bgpOf(d dstSide, s srcSide) BGP {
	return BGP{NextHop: d.nextHop, NextAS: d.nextAS, PrevAS: s.prevAS, SrcPrefixLen: s.prefixLen,
		DstPrefixLen: d.prefixLen, Communities: d.communities, LargeCommunities: d.largeCommunities}
}

// segments is how many packets an event stands for: a GSO/GRO skb is
// sampled once but carries several wire packets.
func segments(ev *datapath.Event) uint64 {
	if ev.Segs > 1 {
		return uint64(ev.Segs)
	}
	return 1
}
