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
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
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

// DefaultMaxInterfaces bounds how many interfaces can be attached at once;
// each one uses a slot of the per-CPU counter array.
const DefaultMaxInterfaces = 1024

// MaxBatchEvents is the most events one ring record carries (RFM_BATCH).
const MaxBatchEvents = 64

// DefaultBatchFlush is how long an event may wait in its CPU's partial
// batch before the datapath writes the batch to the ring.
const DefaultBatchFlush = 10 * time.Millisecond

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
}

// Config is what the programs read from the rfm_config map on every packet.
type Config struct {
	SampleRate uint32 // 1-in-N; 0 turns sampling off
	// Exclude, when valid, names one UDP socket tuple (the IPFIX
	// exporter's own) whose packets are never reported as events.
	Exclude Tuple
	// ExcludeAlso is a second such tuple, for the moment a reload has an
	// old and a new exporter sending at once.
	ExcludeAlso Tuple
}

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
	Exclude      [2]rawExclude
	WakeupBytes  uint32
	BatchEvents  uint32
	BatchFlushNs uint64
}

const (
	cfgExclude  = 1
	cfgExclude2 = 2
)

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
}

type attachment struct {
	Interface
	slot  uint32
	coll  *ebpf.Collection
	links [2]link.Link
}

// Datapath owns the shared maps and one program pair per attached
// interface. Every program instance has its interface slot compiled in as
// a constant, so the per-packet path indexes an array instead of hashing.
type Datapath struct {
	spec     *ebpf.CollectionSpec
	btfCache *btf.Cache
	shared   map[string]*ebpf.Map
	counters *ebpf.Map
	stats    *ebpf.Map
	config   *ebpf.Map
	batches  *ebpf.Map
	flush    *ebpf.Program // rfm_flush, loaded once
	reader   *ringbuf.Reader
	rec      ringbuf.Record // reused by ReadBatch (single consumer)
	recOff   int            // bytes of rec already decoded
	recNew   bool           // rec was just read and is not checked yet
	pending  error          // reader error held back behind a partial batch

	mu        sync.Mutex
	attached  map[int]*attachment
	freeSlots []uint32

	decodeErrors atomic.Uint64
	wakeupBytes  uint32
	batchEvents  uint32
	batchFlush   time.Duration
}

// Load creates the shared maps (config, counters, stats, ring buffer) and
// prepares programs. Nothing is attached yet.
func Load(opts Options) (*Datapath, error) {
	if opts.MaxInterfaces <= 0 {
		opts.MaxInterfaces = DefaultMaxInterfaces
	}
	spec, err := loadRfm()
	if err != nil {
		return nil, fmt.Errorf("load BPF object: %w", err)
	}
	if err := probeKernel(spec); err != nil {
		return nil, err
	}
	// The floor program exists only for benchmarks, the probe for
	// probeKernel.
	delete(spec.Programs, rfmProgRfmFloor)
	delete(spec.Programs, rfmProgRfmProbeTimerPin)
	delete(spec.Maps, rfmMapRfmProbeTimers)
	if opts.RingBufSize > 0 {
		spec.Maps[rfmMapRfmEvents].MaxEntries = uint32(opts.RingBufSize)
	}
	spec.Maps[rfmMapRfmCounters].MaxEntries = uint32(opts.MaxInterfaces * 2)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible CPUs: %w", err)
	}
	spec.Maps[rfmMapRfmBatches].MaxEntries = uint32(cpus)
	ringSize := int(spec.Maps[rfmMapRfmEvents].MaxEntries)
	if opts.BatchEvents <= 0 {
		opts.BatchEvents = min(MaxBatchEvents, max(1, ringSize/16/EventSize))
	}
	if opts.BatchEvents > MaxBatchEvents {
		return nil, fmt.Errorf("batch of %d events: at most %d", opts.BatchEvents, MaxBatchEvents)
	}
	if opts.BatchFlush <= 0 {
		opts.BatchFlush = DefaultBatchFlush
	}
	// rfm_flush is loaded once, below; attachments load the rest.
	flushSpec := spec.Copy()
	delete(spec.Programs, rfmProgRfmFlush)
	for name := range flushSpec.Programs {
		if name != rfmProgRfmFlush {
			delete(flushSpec.Programs, name)
		}
	}

	d := &Datapath{
		spec:        spec,
		btfCache:    btf.NewCache(),
		shared:      map[string]*ebpf.Map{},
		attached:    map[int]*attachment{},
		batchEvents: uint32(opts.BatchEvents),
		batchFlush:  opts.BatchFlush,
	}
	for _, name := range []string{rfmMapRfmConfig, rfmMapRfmCounters, rfmMapRfmDpStats, rfmMapRfmSampler, rfmMapRfmEvents, rfmMapRfmBatches} {
		m, err := ebpf.NewMap(spec.Maps[name])
		if err != nil {
			d.closeShared()
			return nil, fmt.Errorf("create BPF map %s: %w", name, err)
		}
		d.shared[name] = m
	}
	d.counters = d.shared[rfmMapRfmCounters]
	d.stats = d.shared[rfmMapRfmDpStats]
	d.config = d.shared[rfmMapRfmConfig]
	d.batches = d.shared[rfmMapRfmBatches]
	flushColl, err := ebpf.NewCollectionWithOptions(flushSpec, ebpf.CollectionOptions{MapReplacements: d.shared, Cache: d.btfCache})
	if err != nil {
		d.closeShared()
		return nil, fmt.Errorf("load BPF program %s: %w", rfmProgRfmFlush, err)
	}
	d.flush = flushColl.Programs[rfmProgRfmFlush]
	// The collection's maps are d.shared; only the program is its own.
	delete(flushColl.Programs, rfmProgRfmFlush)
	flushColl.Close()
	d.reader, err = ringbuf.NewReader(d.shared[rfmMapRfmEvents])
	if err != nil {
		d.closeShared()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	d.wakeupBytes = spec.Maps[rfmMapRfmEvents].MaxEntries / 8
	for s := opts.MaxInterfaces - 1; s >= 0; s-- {
		d.freeSlots = append(d.freeSlots, uint32(s))
	}
	return d, nil
}

// SetConfig rewrites the config map; programs see it on their next packet.
func (d *Datapath) SetConfig(c Config) error {
	raw := rawConfig{SampleRate: c.SampleRate, WakeupBytes: d.wakeupBytes,
		BatchEvents: d.batchEvents, BatchFlushNs: uint64(d.batchFlush.Nanoseconds())}
	if c.Exclude.valid() {
		raw.Flags |= cfgExclude
		raw.Exclude[0] = c.Exclude.raw()
	}
	if c.ExcludeAlso.valid() {
		raw.Flags |= cfgExclude2
		raw.Exclude[1] = c.ExcludeAlso.raw()
	}
	if err := d.config.Put(uint32(0), &raw); err != nil {
		return fmt.Errorf("write BPF config map: %w", err)
	}
	return nil
}

// instance loads one ingress/egress program pair bound to slot, for
// links whose packets start as kind says.
func (d *Datapath) instance(slot uint32, kind LinkKind) (*ebpf.Collection, error) {
	spec := d.spec.Copy()
	if err := spec.Variables[rfmVarRfmSlot].Set(slot); err != nil {
		return nil, err
	}
	if err := spec.Variables[rfmVarRfmL3Link].Set(uint32(kind)); err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		MapReplacements: d.shared,
		Cache:           d.btfCache,
	})
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

// Attach loads a program pair for the interface and links it at TCX
// ingress (first in line, so it sees every arriving packet) and egress
// (last in line, so it sees what actually leaves). Programs return
// TCX_NEXT: whatever else is attached keeps running.
func (d *Datapath) Attach(ifindex int, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.attached[ifindex]; ok {
		return nil
	}
	if len(d.freeSlots) == 0 {
		return fmt.Errorf("attach %s: all %d interface slots in use", name, cap(d.freeSlots))
	}
	arphrd, err := linkType(ifindex)
	if err != nil {
		return fmt.Errorf("attach %s: %w", name, err)
	}
	kind, err := linkKindOf(arphrd)
	if err != nil {
		return fmt.Errorf("attach %s: %w", name, err)
	}
	slot := d.freeSlots[len(d.freeSlots)-1]
	if err := d.zeroSlot(slot); err != nil {
		return fmt.Errorf("attach %s: %w", name, err)
	}
	coll, err := d.instance(slot, kind)
	if err != nil {
		return fmt.Errorf("attach %s: %w", name, err)
	}
	a := &attachment{Interface: Interface{Index: ifindex, Name: name, Kind: kind}, slot: slot, coll: coll}
	hooks := []struct {
		prog   string
		attach ebpf.AttachType
		anchor link.Anchor
	}{
		{rfmProgRfmIngress, ebpf.AttachTCXIngress, link.Head()},
		{rfmProgRfmEgress, ebpf.AttachTCXEgress, link.Tail()},
	}
	for i, h := range hooks {
		l, err := link.AttachTCX(link.TCXOptions{
			Interface: ifindex,
			Program:   coll.Programs[h.prog],
			Attach:    h.attach,
			Anchor:    h.anchor,
		})
		if err != nil {
			a.close()
			return fmt.Errorf("attach %s %s: %w", name, Direction(i), err)
		}
		a.links[i] = l
	}
	d.freeSlots = d.freeSlots[:len(d.freeSlots)-1]
	d.attached[ifindex] = a
	return nil
}

func (a *attachment) close() {
	for i, l := range a.links {
		if l != nil {
			_ = l.Close()
			a.links[i] = nil
		}
	}
	if a.coll != nil {
		a.coll.Close()
		a.coll = nil
	}
}

// Detach removes the interface's programs. Detaching an interface that is
// not attached is not an error.
func (d *Datapath) Detach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.attached[ifindex]
	if !ok {
		return nil
	}
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
	a.close()
	delete(d.attached, ifindex)
	d.freeSlots = append(d.freeSlots, a.slot)
	return errors.Join(errs...)
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

func (d *Datapath) zeroSlot(slot uint32) error {
	zero := make([]rawCounters, ebpf.MustPossibleCPU())
	for dir := uint32(0); dir < 2; dir++ {
		if err := d.counters.Put(slot*2+dir, zero); err != nil {
			return fmt.Errorf("reset counters of slot %d: %w", slot, err)
		}
	}
	return nil
}

// Counters reads the per-CPU interface counters of every attached
// interface and sums them.
func (d *Datapath) Counters() ([]Counters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Counters, 0, 2*len(d.attached))
	var perCPU []rawCounters
	for _, a := range d.attached {
		for dir := uint32(0); dir < 2; dir++ {
			if err := d.counters.Lookup(a.slot*2+dir, &perCPU); err != nil {
				return nil, fmt.Errorf("read counters of %s: %w", a.Name, err)
			}
			c := Counters{Interface: a.Interface, Dir: Direction(dir)}
			for _, v := range perCPU {
				for f := 0; f < numFamilies; f++ {
					c.Packets[f] += v.Packets[f]
					c.Bytes[f] += v.Bytes[f]
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
	return s, nil
}

// DecodeErrors counts ring records that were not valid events.
func (d *Datapath) DecodeErrors() uint64 { return d.decodeErrors.Load() }

// ErrFlushed is returned by ReadBatch after Drain once the ring is empty.
var ErrFlushed = ringbuf.ErrFlushed

// ReadBatch blocks until at least one event is available, then decodes
// as many as are ready, up to len(evs). It must be called from a single
// goroutine. After Close it returns an error wrapping os.ErrClosed; after
// Drain it returns the remaining events and then ErrFlushed.
func (d *Datapath) ReadBatch(evs []Event) (int, error) {
	if len(evs) == 0 {
		return 0, nil
	}
	if err := d.pending; err != nil {
		d.pending = nil
		return 0, err
	}
	// Block for the first record only. The datapath wakes us when the
	// ring fills past wakeupBytes; the poll interval bounds how long a
	// trickle of events waits.
	n := d.decodeRecord(evs)
	for n == 0 {
		d.reader.SetDeadline(time.Now().Add(PollInterval))
		if err := d.nextRecord(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return 0, err
		}
		n = d.decodeRecord(evs)
	}
	// Then take what is ready. A past deadline makes the reader return
	// instead of waiting once the ring holds nothing more.
	d.reader.SetDeadline(pastDeadline)
	m, err := d.readReady(evs[n:])
	return n + m, err
}

// readReady decodes events until the ring is empty or evs is full; the
// reader's deadline must already be in the past.
func (d *Datapath) readReady(evs []Event) (int, error) {
	n := d.decodeRecord(evs)
	for n < len(evs) {
		if err := d.nextRecord(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return n, nil
			}
			if n > 0 {
				d.pending = err // report it on the next call
				return n, nil
			}
			return 0, err
		}
		n += d.decodeRecord(evs[n:])
	}
	return n, nil
}

// nextRecord reads the next ring record into d.rec.
func (d *Datapath) nextRecord() error {
	if err := d.reader.ReadInto(&d.rec); err != nil {
		return err
	}
	d.recOff, d.recNew = 0, true
	return nil
}

// decodeRecord decodes events of the current record that evs has room
// for, from where the last call stopped. A record is a batch of one or
// more whole events; one of another length is counted as a decode error
// and skipped.
func (d *Datapath) decodeRecord(evs []Event) int {
	raw := d.rec.RawSample
	if d.recNew {
		d.recNew = false
		if len(raw) == 0 || len(raw)%EventSize != 0 {
			d.decodeErrors.Add(1)
			d.recOff = len(raw)
		}
	}
	n := 0
	for n < len(evs) && d.recOff+EventSize <= len(raw) {
		err := evs[n].Decode(raw[d.recOff : d.recOff+EventSize])
		d.recOff += EventSize
		if err != nil {
			d.decodeErrors.Add(1)
			continue
		}
		n++
	}
	return n
}

var pastDeadline = time.Unix(1, 0)

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
	return errors.Join(append(errs, d.reader.Flush())...)
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
	if d.reader != nil {
		errs = append(errs, d.reader.Close())
	}
	d.closeShared()
	return errors.Join(errs...)
}

// closeShared releases what all attachments share: maps and rfm_flush.
func (d *Datapath) closeShared() {
	if d.flush != nil {
		d.flush.Close()
		d.flush = nil
	}
	for name, m := range d.shared {
		m.Close()
		delete(d.shared, name)
	}
}
