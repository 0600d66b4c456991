// SPDX-License-Identifier: AGPL-3.0-only

// Package datapath loads the BPF programs of bpf/rfm.c, attaches them to
// interfaces with TCX links, writes their config map and reads what they
// produce: per-interface counters and sampled packet events.
package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Family indexes interface counters; values match enum rfm_family.
type Family uint8

const (
	FamilyOther Family = 0
	FamilyIPv4  Family = 1
	FamilyIPv6  Family = 2
	numFamilies        = 3
)

func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "ipv4"
	case FamilyIPv6:
		return "ipv6"
	}
	return "other"
}

// Interface slots are allocated in chunks of ChunkInterfaces; the
// per-CPU counters of a chunk are created when its first slot is used.
const ChunkInterfaces = 64

// maxChunks is RFM_MAX_CHUNKS of bpf/rfm.c.
const maxChunks = 4096

// DefaultMaxInterfaces bounds how many interfaces can be attached at once
// when Options.MaxInterfaces is 0: what the chunk table holds. Memory is
// taken per chunk as interfaces are attached, not for this bound.
const DefaultMaxInterfaces = ChunkInterfaces * maxChunks

// ifaceTable is RFM_IFACE_TABLE of bpf/rfm.c: entries of rfm_iface_slots.
const ifaceTable = 16384

// MaxBatchEvents is the most events one ring record carries (RFM_BATCH).
const MaxBatchEvents = 64

// DefaultBatchFlush is how long an event may wait in its CPU's partial
// batch before the datapath writes the batch to the ring. Every event of
// a batch carries the time the batch opened (refreshed at each clock
// tick), so this also bounds how much earlier than its packet an event's
// time can be: 1 ms keeps flow times right to the millisecond IPFIX
// carries them in.
const DefaultBatchFlush = time.Millisecond

// Options configure Load.
type Options struct {
	RingBufSize   int // bytes, a power of two >= page size
	MaxInterfaces int // 0 = DefaultMaxInterfaces
	// BatchEvents is how many events a CPU collects before writing them
	// to the ring as one record, 1..MaxBatchEvents. 0 picks the most
	// that keeps a record within 1/16 of the ring.
	BatchEvents int
	// BatchFlush bounds how long an event waits in a partial batch;
	// 0 = DefaultBatchFlush.
	BatchFlush time.Duration
	// Fields are the optional header fields sampled packets report. A
	// load-time constant of the programs: none keeps the 64-byte event
	// and its cost; any makes every event FieldsEventSize bytes.
	Fields Fields
}

// Config is what the programs read from the rfm_config map on every packet.
type Config struct {
	SampleRate uint32 // 1-in-N; 0 turns sampling off
	// Exclude names UDP socket tuples (the IPFIX exporters' own) whose
	// packets are never reported as events: one per collector, and
	// during a reload the old and the new ones. At most MaxExclude;
	// invalid (zero) tuples are skipped.
	Exclude []Tuple
	// Unsampled, by Direction, turns sampling off at that hook: its
	// packets are counted but never reported as events, so a forwarded
	// packet is not reported at both routers' interfaces.
	Unsampled [2]bool
}

// MaxExclude is how many tuples Config.Exclude holds (RFM_MAX_EXCLUDE).
const MaxExclude = 16

// Tuple is a UDP source/destination address pair. The zero value means
// "no exclusion".
type Tuple struct {
	Src netip.AddrPort
	Dst netip.AddrPort
}

func (t Tuple) valid() bool { return t.Src.IsValid() && t.Dst.IsValid() }

// Mirrors struct rfm_exclude.
type rawExclude struct {
	Src   [16]byte
	Dst   [16]byte
	Sport uint16
	Dport uint16
}

// Mirrors struct rfm_config.
type rawConfig struct {
	SampleRate   uint32
	Flags        uint32
	NExclude     uint32
	Exclude      [MaxExclude]rawExclude
	WakeupBytes  uint32
	BatchEvents  uint32
	Pad          uint32
	BatchFlushNs uint64
}

// cfgUnsampled is RFM_CFG_UNSAMPLED, shifted by the Direction.
const cfgUnsampled = 4

func (t Tuple) raw() rawExclude {
	return rawExclude{Src: t.Src.Addr().As16(), Dst: t.Dst.Addr().As16(), Sport: t.Src.Port(), Dport: t.Dst.Port()}
}

// Mirrors struct rfm_iface_counters.
type rawCounters struct {
	Packets [numFamilies]uint64
	Bytes   [numFamilies]uint64
}

// Mirrors struct rfm_dp_stats.
type rawStats struct {
	RingDrops   uint64
	Malformed   uint64
	Truncated   uint64
	TimerErrors uint64
}

// Interface is an attached interface.
type Interface struct {
	Index int
	Name  string
	Kind  LinkKind // where its packets' IP header starts
}

// Counters are the packets and bytes seen on one interface in one
// direction, per family, summed over CPUs.
type Counters struct {
	Interface
	Dir     Direction
	Packets [numFamilies]uint64
	Bytes   [numFamilies]uint64
}

// Stats are datapath-wide counters summed over CPUs.
type Stats struct {
	RingDrops uint64 // sampled packets lost because the ring was full
	Malformed uint64 // sampled packets with truncated or invalid headers
	// Truncated counts sampled IPv6 packets whose transport header lay
	// past the extension headers walked; they are reported without ports.
	Truncated uint64
	// TimerErrors counts batch flush timers that could not be armed; the
	// batch was written out at once instead.
	TimerErrors uint64
	// InterfaceLimitRefusals counts attaches refused because
	// MaxInterfaces interfaces were attached.
	InterfaceLimitRefusals uint64
}

type attachment struct {
	Interface
	slot    uint32
	spilled bool // found through rfm_iface_spill, not rfm_iface_slots
	links   [2]link.Link
	// The ingress source's count for this interface when its slot was
	// zeroed, and what earlier sources counted since: Counters adds
	// source now - base + retired to the kernel's ingress counters.
	ingressBase, ingressRetired IngressCount
}

// IngressCount is, by family, packets and bytes that arrived on an
// interface.
type IngressCount struct {
	Packets [numFamilies]uint64
	Bytes   [numFamilies]uint64
}

func (c *IngressCount) add(o IngressCount) {
	for f := range c.Packets {
		c.Packets[f] += o.Packets[f]
		c.Bytes[f] += o.Bytes[f]
	}
}

func (c *IngressCount) sub(o IngressCount) {
	for f := range c.Packets {
		c.Packets[f] -= o.Packets[f]
		c.Bytes[f] -= o.Bytes[f]
	}
}

// IngressSource counts packets that arrive on interfaces but never reach
// the TC ingress programs: the XDP fast path's drops. Its counts are
// cumulative by ifindex and never go back for an interface that exists.
type IngressSource interface {
	IngressCounts() (map[int]IngressCount, error)
}

// Datapath owns the maps and one program pair per link kind, shared by
// every attached interface of that kind. The programs find an
// interface's counter slot by its ifindex in an array (a hash only for
// the few whose array entry another interface holds), so attaching an
// interface loads nothing: it writes the slot into the maps and creates two
// TCX links.
type Datapath struct {
	shared    map[string]*ebpf.Map
	stats     *ebpf.Map
	config    *ebpf.Map
	batches   *ebpf.Map
	slots     *ebpf.Map // rfm_iface_slots
	spill     *spillTable
	chunkDir  *ebpf.Map // rfm_counters: chunk index -> per-CPU counter array
	chunkSpec *ebpf.MapSpec
	progs     [2][2]*ebpf.Program // by LinkKind, then Direction
	flush     *ebpf.Program       // rfm_flush
	ring      *ringReader
	// rec is the ring record being decoded, in the ring's mapping: it
	// goes back to the producers (ring.release) once decoded whole.
	rec     []byte
	recHeld bool  // rec is a record of the ring not released yet
	recOff  int   // bytes of rec already decoded
	recNew  bool  // rec was just read and is not checked yet
	pending error // reader error held back behind a partial batch

	// attachMu orders Attach and Detach (the kernel calls they make);
	// readers never take it.
	attachMu sync.Mutex
	// ingressMu orders reads of the ingress source (Counters, Attach)
	// against SetIngressSource, so a count is never read from one
	// source and set off against another's base. Taken before mu.
	ingressMu sync.Mutex
	ingress   IngressSource
	// mu guards the fields below. Attach and Detach hold it only to
	// update them, never across a kernel call; Counters holds it while
	// it reads the counters, so no slot is reused under a scrape.
	mu        sync.Mutex
	attached  map[int]*attachment
	slotUsed  []bool         // by slot; len = slots of the chunks created
	chunks    []*ebpf.Map    // per-CPU counter arrays, by chunk index
	direct    map[uint32]int // rfm_iface_slots entry -> ifindex holding it
	maxIfaces int
	readBuf   []rawCounters // Counters' batch buffer, one chunk
	readKeys  []uint32

	decodeErrors atomic.Uint64
	// limitRefusals counts attaches refused at maxIfaces.
	limitRefusals atomic.Uint64
	eventSize     int // bytes per event in a ring record; 0 means EventSize
	fields        Fields
	wakeupBytes   uint32
	batchEvents   uint32
	batchFlush    time.Duration
}

// Load creates the maps (config, interface slots, counters, stats, ring
// buffer) and loads the programs: one pair per link kind. Nothing is
// attached yet.
func Load(opts Options) (*Datapath, error) {
	if opts.MaxInterfaces <= 0 {
		opts.MaxInterfaces = DefaultMaxInterfaces
	}
	if opts.MaxInterfaces > DefaultMaxInterfaces {
		return nil, fmt.Errorf("at most %d interfaces, not %d", DefaultMaxInterfaces, opts.MaxInterfaces)
	}
	spec, err := loadRfm()
	if err != nil {
		return nil, fmt.Errorf("load BPF object: %w", err)
	}
	if err := probeKernel(spec); err != nil {
		return nil, err
	}
	// The floor program exists only for benchmarks, the probe for
	// probeKernel, the chunk map only to describe the chunks in BTF.
	delete(spec.Programs, rfmProgRfmFloor)
	delete(spec.Programs, rfmProgRfmProbeTimerPin)
	delete(spec.Maps, rfmMapRfmProbeTimers)
	delete(spec.Maps, rfmMapRfmCounterChunkSpec)
	if opts.RingBufSize > 0 {
		spec.Maps[rfmMapRfmEvents].MaxEntries = uint32(opts.RingBufSize)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible CPUs: %w", err)
	}
	spec.Maps[rfmMapRfmBatches].MaxEntries = uint32(cpus)
	ringSize := int(spec.Maps[rfmMapRfmEvents].MaxEntries)
	if opts.Fields&^fieldsAll != 0 {
		return nil, fmt.Errorf("unknown optional fields %#x", uint32(opts.Fields&^fieldsAll))
	}
	if err := spec.Variables[rfmVarRfmFields].Set(uint32(opts.Fields)); err != nil {
		return nil, fmt.Errorf("select optional fields: %w", err)
	}
	evSize := opts.Fields.eventSize()
	if opts.BatchEvents <= 0 {
		opts.BatchEvents = min(MaxBatchEvents, max(1, ringSize/16/evSize))
	}
	if opts.BatchEvents > MaxBatchEvents {
		return nil, fmt.Errorf("batch of %d events: at most %d", opts.BatchEvents, MaxBatchEvents)
	}
	if opts.BatchFlush <= 0 {
		opts.BatchFlush = DefaultBatchFlush
	}
	chunkSpec := spec.Maps[rfmMapRfmCounters].InnerMap.Copy()
	chunkSpec.Name = "rfm_counters_c"

	d := &Datapath{
		shared:      map[string]*ebpf.Map{},
		attached:    map[int]*attachment{},
		direct:      map[uint32]int{},
		maxIfaces:   opts.MaxInterfaces,
		chunkSpec:   chunkSpec,
		batchEvents: uint32(opts.BatchEvents),
		eventSize:   evSize,
		fields:      opts.Fields,
		batchFlush:  opts.BatchFlush,
	}
	for _, name := range []string{rfmMapRfmConfig, rfmMapRfmCounters, rfmMapRfmIfaceSlots, rfmMapRfmIfaceSpill,
		rfmMapRfmDpStats, rfmMapRfmSampler, rfmMapRfmEvents, rfmMapRfmBatches} {
		m, err := ebpf.NewMap(spec.Maps[name])
		if err != nil {
			d.closeShared()
			return nil, fmt.Errorf("create BPF map %s: %w", name, err)
		}
		d.shared[name] = m
	}
	d.chunkDir = d.shared[rfmMapRfmCounters]
	d.slots = d.shared[rfmMapRfmIfaceSlots]
	if d.spill, err = newSpillTable(d.shared[rfmMapRfmIfaceSpill], spec.Maps[rfmMapRfmIfaceSpill]); err != nil {
		d.closeShared()
		return nil, err
	}
	d.stats = d.shared[rfmMapRfmDpStats]
	d.config = d.shared[rfmMapRfmConfig]
	d.batches = d.shared[rfmMapRfmBatches]
	if err := d.loadPrograms(spec); err != nil {
		d.closeShared()
		return nil, err
	}
	d.ring, err = newRingReader(d.shared[rfmMapRfmEvents])
	if err != nil {
		d.closeShared()
		return nil, fmt.Errorf("open ring buffer %s: %w", rfmMapRfmEvents, err)
	}
	d.wakeupBytes = spec.Maps[rfmMapRfmEvents].MaxEntries / 8
	return d, nil
}

// loadPrograms loads rfm_flush and, for each link kind, the
// ingress/egress pair with rfm_l3_link set for that kind.
func (d *Datapath) loadPrograms(spec *ebpf.CollectionSpec) error {
	only := func(names ...string) *ebpf.CollectionSpec {
		c := spec.Copy()
		for name := range c.Programs {
			if !slices.Contains(names, name) {
				delete(c.Programs, name)
			}
		}
		return c
	}
	btfCache := btf.NewCache()
	load := func(c *ebpf.CollectionSpec) (*ebpf.Collection, error) {
		coll, err := ebpf.NewCollectionWithOptions(c, ebpf.CollectionOptions{MapReplacements: d.shared, Cache: btfCache})
		if err != nil {
			hint := ""
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
				hint = " (needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, or root)"
			}
			// A VerifierError prints its last line only; the whole log is
			// for developers, not for the one-line start-up error.
			return nil, fmt.Errorf("load BPF programs: %w%s", err, hint)
		}
		return coll, nil
	}
	// take moves a program out of its collection, whose maps are
	// d.shared and stay open.
	take := func(coll *ebpf.Collection, name string) *ebpf.Program {
		p := coll.Programs[name]
		delete(coll.Programs, name)
		return p
	}
	coll, err := load(only(rfmProgRfmFlush))
	if err != nil {
		return err
	}
	d.flush = take(coll, rfmProgRfmFlush)
	coll.Close()
	for _, kind := range []LinkKind{LinkEthernet, LinkIP} {
		c := only(rfmProgRfmIngress, rfmProgRfmEgress)
		if err := c.Variables[rfmVarRfmL3Link].Set(uint32(kind)); err != nil {
			return err
		}
		coll, err := load(c)
		if err != nil {
			return err
		}
		d.progs[kind] = [2]*ebpf.Program{take(coll, rfmProgRfmIngress), take(coll, rfmProgRfmEgress)}
		coll.Close()
	}
	return nil
}

// SetConfig rewrites the config map; programs see it on their next packet.
func (d *Datapath) SetConfig(c Config) error {
	raw := rawConfig{SampleRate: c.SampleRate, WakeupBytes: d.wakeupBytes,
		BatchEvents: d.batchEvents, BatchFlushNs: uint64(d.batchFlush.Nanoseconds())}
	for _, t := range c.Exclude {
		if !t.valid() {
			continue
		}
		if raw.NExclude == MaxExclude {
			return fmt.Errorf("write BPF config map: more than %d sockets to exclude from sampling", MaxExclude)
		}
		raw.Exclude[raw.NExclude] = t.raw()
		raw.NExclude++
	}
	for dir, off := range c.Unsampled {
		if off {
			raw.Flags |= cfgUnsampled << dir
		}
	}
	if err := d.config.Put(uint32(0), &raw); err != nil {
		return fmt.Errorf("write BPF config map: %w", err)
	}
	return nil
}

// SetMaxInterfaces changes how many interfaces may be attached at once
// (0: DefaultMaxInterfaces). Lowering it detaches nothing; it only
// refuses attaches until fewer are attached.
func (d *Datapath) SetMaxInterfaces(n int) error {
	if n <= 0 {
		n = DefaultMaxInterfaces
	}
	if n > DefaultMaxInterfaces {
		return fmt.Errorf("at most %d interfaces, not %d", DefaultMaxInterfaces, n)
	}
	d.mu.Lock()
	d.maxIfaces = n
	d.mu.Unlock()
	return nil
}

// ErrInterfaceLimit is returned by Attach when every interface slot
// (Options.MaxInterfaces) is in use.
var ErrInterfaceLimit = errors.New("interface limit reached")

// Mirrors struct rfm_iface_slot.
type rawIfaceSlot struct {
	Ifindex uint32
	Slot    uint32
}

// isAttached reports whether ifindex holds a counter slot (an
// attachment or the injector's). Caller holds attachMu, so the answer
// holds until it releases attachMu.
func (d *Datapath) isAttached(ifindex int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.attached[ifindex]
	return ok
}

// Attach links the program pair of the interface's link kind at TCX
// ingress (first in line, so it sees every arriving packet) and egress
// (last in line, so it sees what actually leaves). Programs return
// TCX_NEXT: whatever else is attached keeps running. Readers (Counters,
// Interfaces) wait for Attach only while it updates its bookkeeping,
// never while it talks to the kernel.
func (d *Datapath) Attach(ifindex int, name string) error {
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	if d.isAttached(ifindex) {
		return nil
	}
	arphrd, err := linkType(ifindex)
	if err != nil {
		return fmt.Errorf("attach %s: %w", name, err)
	}
	kind, err := linkKindOf(arphrd)
	if err != nil {
		return fmt.Errorf("attach %s: %w", name, err)
	}
	a, err := d.addSlot(ifindex, name, kind)
	if err != nil {
		return fmt.Errorf("attach %s: %w", name, err)
	}
	// Counting starts here, with the kernel's counters just zeroed.
	d.ingressMu.Lock()
	if all, err := d.ingressCountsLocked(); err == nil {
		a.ingressBase = all[ifindex]
	}
	d.ingressMu.Unlock()
	hooks := []struct {
		attach ebpf.AttachType
		anchor link.Anchor
	}{
		{ebpf.AttachTCXIngress, link.Head()},
		{ebpf.AttachTCXEgress, link.Tail()},
	}
	for dir, h := range hooks {
		l, err := link.AttachTCX(link.TCXOptions{
			Interface: ifindex,
			Program:   d.progs[kind][dir],
			Attach:    h.attach,
			Anchor:    h.anchor,
		})
		if err != nil {
			closeLinks(a)
			d.removeSlot(a)
			return fmt.Errorf("attach %s %s: %w", name, Direction(dir), err)
		}
		a.links[dir] = l
	}
	d.mu.Lock()
	d.attached[ifindex] = a
	d.mu.Unlock()
	return nil
}

// addSlot gives the interface a counter slot, zeroed, and writes where
// the programs find it. The caller holds attachMu.
func (d *Datapath) addSlot(ifindex int, name string, kind LinkKind) (*attachment, error) {
	d.mu.Lock()
	slot := slices.Index(d.slotUsed, false)
	if slot < 0 {
		slot = len(d.slotUsed)
	}
	if len(d.attached) >= d.maxIfaces || slot >= d.maxIfaces {
		max := d.maxIfaces
		d.mu.Unlock()
		d.limitRefusals.Add(1)
		return nil, fmt.Errorf("%w: %d interfaces attached (agent.bpf.max_interfaces = %d)", ErrInterfaceLimit, len(d.attached), max)
	}
	d.mu.Unlock()
	chunk := slot / ChunkInterfaces
	if chunk >= len(d.chunks) {
		// Only Attach appends, under attachMu.
		m, err := d.newChunk(chunk)
		if err != nil {
			return nil, err
		}
		d.mu.Lock()
		d.chunks = append(d.chunks, m)
		d.slotUsed = append(d.slotUsed, make([]bool, ChunkInterfaces)...)
		d.mu.Unlock()
	} else if err := d.zeroSlot(uint32(slot)); err != nil {
		return nil, err
	}
	a := &attachment{Interface: Interface{Index: ifindex, Name: name, Kind: kind}, slot: uint32(slot)}
	entry := uint32(ifindex) % ifaceTable
	d.mu.Lock()
	_, taken := d.direct[entry]
	d.mu.Unlock()
	var err error
	if taken {
		a.spilled = true
		err = d.spill.put(uint32(ifindex), a.slot)
	} else {
		err = d.slots.Put(entry, rawIfaceSlot{Ifindex: uint32(ifindex), Slot: a.slot})
	}
	if err != nil {
		return nil, fmt.Errorf("write interface slot: %w", err)
	}
	d.mu.Lock()
	d.slotUsed[slot] = true
	if !taken {
		d.direct[entry] = ifindex
	}
	d.mu.Unlock()
	return a, nil
}

// removeSlot clears where the programs find a's slot and frees it; a's
// links are closed. The caller holds attachMu.
func (d *Datapath) removeSlot(a *attachment) error {
	var err error
	entry := uint32(a.Index) % ifaceTable
	if a.spilled {
		err = d.spill.delete(uint32(a.Index))
	} else {
		err = d.slots.Put(entry, rawIfaceSlot{})
	}
	if err != nil {
		// The slot stays taken: it is still found by ifindex.
		return fmt.Errorf("clear interface slot of %s: %w", a.Name, err)
	}
	d.mu.Lock()
	if !a.spilled {
		delete(d.direct, entry)
	}
	d.slotUsed[a.slot] = false
	d.mu.Unlock()
	return d.dropEmptyChunks()
}

// dropEmptyChunks frees the last chunks while none of their slots is
// used, so locked memory shrinks again when interfaces go (slots are
// taken lowest first, so the last chunks empty first). The caller holds
// attachMu.
func (d *Datapath) dropEmptyChunks() error {
	for {
		d.mu.Lock()
		last := len(d.chunks) - 1
		if last < 0 || slices.Contains(d.slotUsed[last*ChunkInterfaces:], true) {
			d.mu.Unlock()
			return nil
		}
		d.mu.Unlock()
		// The programs stop finding the chunk first; no slot of it is
		// in use, so none of them looks for it.
		if err := d.chunkDir.Delete(uint32(last)); err != nil {
			return fmt.Errorf("free counters of interface slots %d-%d: %w", last*ChunkInterfaces, (last+1)*ChunkInterfaces-1, err)
		}
		d.mu.Lock()
		m := d.chunks[last]
		d.chunks = d.chunks[:last]
		d.slotUsed = d.slotUsed[:last*ChunkInterfaces]
		d.mu.Unlock()
		m.Close()
	}
}

// newChunk creates the per-CPU counter array of chunk i (zeroed) and
// puts it in rfm_counters.
func (d *Datapath) newChunk(i int) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(d.chunkSpec)
	if err != nil {
		return nil, fmt.Errorf("create counters of interfaces %d-%d: %w", i*ChunkInterfaces, (i+1)*ChunkInterfaces-1, err)
	}
	if err := d.chunkDir.Put(uint32(i), m); err != nil {
		m.Close()
		return nil, fmt.Errorf("add counters of interfaces %d-%d: %w", i*ChunkInterfaces, (i+1)*ChunkInterfaces-1, err)
	}
	return m, nil
}

func closeLinks(a *attachment) error {
	var errs []error
	for i, l := range a.links {
		if l == nil {
			continue
		}
		// An interface that vanished took its links with it.
		if err := l.Close(); err != nil && !errors.Is(err, errNoDevice) {
			errs = append(errs, fmt.Errorf("detach %s %s: %w", a.Name, Direction(i), err))
		}
		a.links[i] = nil
	}
	return errors.Join(errs...)
}

// Detach removes the interface's links; its counters leave Counters at
// once. Detaching an interface that is not attached is not an error.
func (d *Datapath) Detach(ifindex int) error {
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	d.mu.Lock()
	a, ok := d.attached[ifindex]
	delete(d.attached, ifindex)
	d.mu.Unlock()
	if !ok {
		return nil
	}
	err := closeLinks(a)
	return errors.Join(err, d.removeSlot(a))
}

// Interfaces lists attached interfaces by ifindex.
func (d *Datapath) Interfaces() []Interface {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Interface, 0, len(d.attached))
	for _, a := range d.attached {
		out = append(out, a.Interface)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// zeroSlot resets a reused slot's counters in both directions.
func (d *Datapath) zeroSlot(slot uint32) error {
	d.mu.Lock()
	m := d.chunks[slot/ChunkInterfaces]
	d.mu.Unlock()
	zero := make([]rawCounters, ebpf.MustPossibleCPU())
	for dir := uint32(0); dir < 2; dir++ {
		if err := m.Put(slot%ChunkInterfaces*2+dir, zero); err != nil {
			return fmt.Errorf("reset counters of slot %d: %w", slot, err)
		}
	}
	return nil
}

// SetIngressSource makes src (nil: none) the source of the packets that
// arrive without reaching TC ingress, whose counts Counters adds to the
// ingress counters. What the source it replaces counted stays in them:
// call it after that source's last count (the XDP program detached
// everywhere). All of a new source's counts are added, also those from
// before this call.
func (d *Datapath) SetIngressSource(src IngressSource) error {
	// Not while an Attach is between its base and its bookkeeping.
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	d.ingressMu.Lock()
	defer d.ingressMu.Unlock()
	old, err := d.ingressCountsLocked()
	if err != nil {
		return fmt.Errorf("read the last ingress counts: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for idx, a := range d.attached {
		if c, ok := old[idx]; ok {
			c.sub(a.ingressBase)
			a.ingressRetired.add(c)
		}
		a.ingressBase = IngressCount{}
	}
	d.ingress = src
	return nil
}

// ingressCountsLocked reads the ingress source's counts (none without a
// source); the caller holds ingressMu.
func (d *Datapath) ingressCountsLocked() (map[int]IngressCount, error) {
	if d.ingress == nil {
		return nil, nil
	}
	return d.ingress.IngressCounts()
}

// Counters reads the per-CPU interface counters of every attached
// interface and sums them. Each chunk of ChunkInterfaces interfaces is
// one BPF_MAP_LOOKUP_BATCH. Ingress includes the ingress source's counts
// (SetIngressSource).
func (d *Datapath) Counters() ([]Counters, error) {
	d.ingressMu.Lock()
	defer d.ingressMu.Unlock()
	extra, err := d.ingressCountsLocked()
	if err != nil {
		return nil, fmt.Errorf("read ingress counts: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	bySlot := make([]*attachment, len(d.slotUsed))
	for _, a := range d.attached {
		bySlot[a.slot] = a
	}
	cpus := ebpf.MustPossibleCPU()
	const entries = ChunkInterfaces * 2
	if len(d.readBuf) != entries*cpus {
		d.readBuf = make([]rawCounters, entries*cpus)
		d.readKeys = make([]uint32, entries)
	}
	out := make([]Counters, 0, 2*len(d.attached))
	for ci, m := range d.chunks {
		used := false
		for _, a := range bySlot[ci*ChunkInterfaces : (ci+1)*ChunkInterfaces] {
			used = used || a != nil
		}
		if !used {
			continue
		}
		var cursor ebpf.MapBatchCursor
		n, err := m.BatchLookup(&cursor, d.readKeys, d.readBuf, nil)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("read counters of interface slots %d-%d: %w", ci*ChunkInterfaces, (ci+1)*ChunkInterfaces-1, err)
		}
		for i := 0; i < n; i++ {
			key := d.readKeys[i]
			if key >= entries {
				continue
			}
			a := bySlot[ci*ChunkInterfaces+int(key/2)]
			if a == nil {
				continue
			}
			c := Counters{Interface: a.Interface, Dir: Direction(key % 2)}
			for _, v := range d.readBuf[i*cpus : (i+1)*cpus] {
				for f := 0; f < numFamilies; f++ {
					c.Packets[f] += v.Packets[f]
					c.Bytes[f] += v.Bytes[f]
				}
			}
			if c.Dir == Ingress {
				x := a.ingressRetired
				if e, ok := extra[a.Index]; ok {
					e.sub(a.ingressBase)
					x.add(e)
				}
				for f := range x.Packets {
					c.Packets[f] += x.Packets[f]
					c.Bytes[f] += x.Bytes[f]
				}
			}
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Index != out[j].Index {
			return out[i].Index < out[j].Index
		}
		return out[i].Dir < out[j].Dir
	})
	return out, nil
}

// Stats sums the per-CPU datapath statistics.
func (d *Datapath) Stats() (Stats, error) {
	var perCPU []rawStats
	if err := d.stats.Lookup(uint32(0), &perCPU); err != nil {
		return Stats{}, fmt.Errorf("read datapath stats: %w", err)
	}
	var s Stats
	for _, v := range perCPU {
		s.RingDrops += v.RingDrops
		s.Malformed += v.Malformed
		s.Truncated += v.Truncated
		s.TimerErrors += v.TimerErrors
	}
	s.InterfaceLimitRefusals = d.limitRefusals.Load()
	return s, nil
}

// DecodeErrors counts ring records that were not valid events.
func (d *Datapath) DecodeErrors() uint64 { return d.decodeErrors.Load() }

// ReadBatch blocks until at least one event is available, then decodes
// as many as are ready, up to len(evs). It must be called from a single
// goroutine. After Close it returns an error wrapping os.ErrClosed; after
// Drain it returns the remaining events and then ErrFlushed.
func (d *Datapath) ReadBatch(evs []Event) (int, error) {
	if len(evs) == 0 {
		return 0, nil
	}
	r := d.ring
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return 0, errRingClosed
	}
	if err := d.pending; err != nil {
		d.pending = nil
		return 0, err
	}
	for spins := 0; ; spins++ {
		n, state, err := d.readReady(evs)
		if err != nil {
			if n > 0 {
				d.pending = err // report it on the next call
				return n, nil
			}
			return 0, err
		}
		if n > 0 {
			return n, nil
		}
		switch {
		case state == ringBusy:
			// A producer is between reserving and committing a record,
			// a matter of microseconds unless it was preempted.
			if r.closed.Load() {
				return 0, errRingClosed
			}
			if spins < 16 {
				runtime.Gosched()
			} else {
				time.Sleep(50 * time.Microsecond)
			}
		case r.flushing:
			r.flushing = false
			return 0, ErrFlushed
		case r.flushReq.Swap(false):
			r.flushing = true // look once more before reporting it
		default:
			// The datapath wakes us when the ring fills past
			// wakeupBytes; the poll interval bounds how long a trickle
			// of events waits.
			err := r.wait(time.Now().Add(PollInterval))
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, err
			}
			spins = 0
		}
	}
}

// readReady decodes events from the record in hand and the committed
// records after it until evs is full or the ring has no committed
// record at the consumer position (state says which: empty or busy). It
// never blocks. The caller holds d.ring.mu.
func (d *Datapath) readReady(evs []Event) (int, ringState, error) {
	n := 0
	for {
		n += d.decodeRecord(evs[n:])
		if d.recOff < len(d.rec) {
			return n, ringRecord, nil // evs is full
		}
		if d.recHeld {
			d.ring.release()
			d.recHeld = false
		}
		if n == len(evs) {
			return n, ringRecord, nil
		}
		rec, state, err := d.ring.next()
		if state != ringRecord || err != nil {
			d.rec, d.recOff = nil, 0
			return n, state, err
		}
		d.rec, d.recHeld, d.recOff, d.recNew = rec, true, 0, true
	}
}

// decodeRecord decodes events of the current record that evs has room
// for, from where the last call stopped. A record is a batch of one or
// more whole events; one of another length is counted as a decode error
// and skipped.
func (d *Datapath) decodeRecord(evs []Event) int {
	raw := d.rec
	size := d.eventSize
	if size == 0 {
		size = EventSize
	}
	if d.recNew {
		d.recNew = false
		if len(raw) == 0 || len(raw)%size != 0 {
			d.decodeErrors.Add(1)
			d.recOff = len(raw)
		}
	}
	n := 0
	for n < len(evs) && d.recOff+size <= len(raw) {
		var err error
		if size == FieldsEventSize {
			err = evs[n].DecodeFields(raw[d.recOff : d.recOff+size])
		} else {
			err = evs[n].Decode(raw[d.recOff : d.recOff+size])
		}
		d.recOff += size
		if err != nil {
			d.decodeErrors.Add(1)
			continue
		}
		n++
	}
	return n
}

// PollInterval is the longest a sampled packet waits in the ring before
// the collector reads it (on top of up to BatchFlush in its CPU's batch).
const PollInterval = 20 * time.Millisecond

// Drain writes the per-CPU batches to the ring and makes ReadBatch
// return what is left in it, then ErrFlushed. Used at shutdown after
// detaching, so no sampled packet is lost.
func (d *Datapath) Drain() error {
	var errs []error
	if err := d.FlushBatches(); err != nil {
		errs = append(errs, err)
	}
	// A CPU FlushBatches could not run on is flushed by its timer; the
	// wait is capped so shutdown stays well within its 5 s.
	if err := d.WaitBatches(min(2*d.batchFlush+100*time.Millisecond, 2*time.Second)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append(errs, d.ring.Flush())...)
}

// Close detaches every interface and releases all maps and programs.
func (d *Datapath) Close() error {
	d.mu.Lock()
	ifindexes := make([]int, 0, len(d.attached))
	for i := range d.attached {
		ifindexes = append(ifindexes, i)
	}
	d.mu.Unlock()
	var errs []error
	for _, i := range ifindexes {
		errs = append(errs, d.Detach(i))
	}
	if d.ring != nil {
		errs = append(errs, d.ring.Close())
	}
	d.closeShared()
	return errors.Join(errs...)
}

// closeShared releases the programs and maps.
func (d *Datapath) closeShared() {
	if d.flush != nil {
		d.flush.Close()
		d.flush = nil
	}
	for kind := range d.progs {
		for dir, p := range d.progs[kind] {
			if p != nil {
				p.Close()
				d.progs[kind][dir] = nil
			}
		}
	}
	for _, m := range d.chunks {
		m.Close()
	}
	d.chunks = nil
	if d.spill != nil {
		d.spill.close()
	}
	for name, m := range d.shared {
		m.Close()
		delete(d.shared, name)
	}
}
