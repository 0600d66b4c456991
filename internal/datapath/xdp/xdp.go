// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Mode is how the program is attached to an interface.
type Mode uint8

const (
	// ModeAuto tries native and falls back to generic.
	ModeAuto Mode = iota
	// ModeNative runs in the driver, before an skb exists.
	ModeNative
	// ModeGeneric runs on the skb, for drivers without XDP support.
	ModeGeneric
)

// DefaultMode is what agent.xdp.mode defaults to.
const DefaultMode = ModeAuto

func (m Mode) String() string {
	switch m {
	case ModeNative:
		return "native"
	case ModeGeneric:
		return "generic"
	}
	return "auto"
}

// ParseMode reads "auto", "native" or "generic".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto":
		return ModeAuto, nil
	case "native":
		return ModeNative, nil
	case "generic":
		return ModeGeneric, nil
	}
	return 0, fmt.Errorf("%q: want auto, native or generic", s)
}

// MaxInterfaces is how many interfaces the program can be attached to at
// once (XDP_MAX_IFACES: counter rows are allocated for them).
const MaxInterfaces = 64

const rows = 66 // XDP_ROWS: MaxRules, then blocklist and blackhole

const (
	rowBlocklist = 64
	rowBlackhole = 65
)

// xdp_cfg.flags
const (
	cfgBlock4 = 1
	cfgBlock6 = 2
	cfgHole4  = 4
	cfgHole6  = 8
	cfgCount  = 16
	cfgHost4  = 32
	cfgHost6  = 64
)

// Mirrors struct xdp_cfg.
type rawCfg struct {
	Gen   uint32
	Flags uint32
}

// Mirrors struct xdp_counter: column 0 passed, 1 dropped IPv4, 2
// dropped IPv6 (the datapath's family numbers).
type rawCounter struct {
	Packets [3]uint64
	Bytes   [3]uint64
}

func (c *rawCounter) add(o rawCounter) {
	for i := range c.Packets {
		c.Packets[i] += o.Packets[i]
		c.Bytes[i] += o.Bytes[i]
	}
}

// dropped is what the counter dropped, and passed what it passed.
func (c rawCounter) dropped() (packets, bytes uint64) {
	return c.Packets[1] + c.Packets[2], c.Bytes[1] + c.Bytes[2]
}

// Options configure Load.
type Options struct {
	// Shared are the maps of the TC datapath (datapath.SharedMaps). With
	// them, dropped packets are counted in the interface rx counters and
	// sampled into the flow events; without them (tests, benchmarks) the
	// program has maps of its own that nobody reads.
	Shared map[string]*ebpf.Map
	// Fields are the optional fields (datapath.Fields) the TC datapath
	// was loaded with: a dropped packet's event must have the layout the
	// ring's reader expects.
	Fields uint32
}

// Program is the loaded XDP program and its maps, shared by every
// interface it is attached to.
type Program struct {
	prog    *ebpf.Program // native mode
	generic *ebpf.Program // generic mode: also counts GRO/GSO super-packets as their segments
	floor   *ebpf.Program // an empty XDP program, for benchmarks
	// skb records each received skb's GSO segments for generic mode
	// (rfm_xdp_skb in bpf/xdp.c); nil when the kernel refused to load it
	// (skbErr says why): generic mode then counts a super-packet as one.
	skb    *ebpf.Program
	skbErr error
	maps   map[string]*ebpf.Map
	own    []*ebpf.Map // maps created here (not Shared)

	mu       sync.Mutex
	skbLink  link.Link // rfm_xdp_skb on its tracepoint while an interface runs in generic mode
	cfg      rawCfg
	names    [2][]string // rule names per generation, by row
	attached map[int]*attachment
	slotUsed [MaxInterfaces]bool
	// totals are counts of retired generations, folded by rule name so
	// they survive a reload; by ifindex.
	totals map[int]map[string]rawCounter
	// detached are the drops by family of interfaces since detached, by
	// ifindex: they stay in IngressCounts, which must never go back,
	// until the interface is gone.
	detached map[int]rawCounter
	entries  [6]int // entries in block4, block6, hole4, hole6, host4, host6
	// hostBits counts the blocklisted single addresses on each bit of
	// xdp_host_filter that has any.
	hostBits map[uint32]uint32
	errors   atomic.Uint64 // counter reads that failed (rfm_errors_total)
	// prepared: PrepareRules wrote the generation not in use.
	prepared bool
}

type attachment struct {
	index int
	name  string
	mode  Mode
	slot  uint32
	link  link.Link
	// detaching: Detach is taking it off; it stays in attached, and its
	// counts readable, until its last drops are in detached.
	detaching bool
}

// Load creates the maps and loads the program. Nothing is attached and
// the rule set is empty.
func Load(opts Options) (*Program, error) {
	spec, err := loadXdpobj()
	if err != nil {
		return nil, fmt.Errorf("load XDP object: %w", err)
	}
	delete(spec.Maps, xdpobjMapRfmCounterChunkSpec)
	if err := spec.Variables[xdpobjVarRfmFields].Set(opts.Fields); err != nil {
		return nil, fmt.Errorf("load XDP object: %w", err)
	}
	replace := map[string]*ebpf.Map{}
	for name, m := range opts.Shared {
		ms, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("load XDP object: shared map %s unknown", name)
		}
		// The ring buffer's size is the agent's choice.
		ms.MaxEntries = m.MaxEntries()
		if name == xdpobjMapRfmConfig {
			// bpf/xdp.c reads only sample_rate, the first member of
			// bpf/rfm.c's config; the rest is the TC datapath's.
			ms.ValueSize = m.ValueSize()
		}
		replace[name] = m
	}
	p := &Program{maps: map[string]*ebpf.Map{}, attached: map[int]*attachment{}, totals: map[int]map[string]rawCounter{},
		detached: map[int]rawCounter{}, hostBits: map[uint32]uint32{}}
	for name, ms := range spec.Maps {
		if strings.HasPrefix(name, ".") {
			continue // .rodata: the collection makes and freezes it
		}
		if m, ok := replace[name]; ok {
			p.maps[name] = m
			continue
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			p.closeMaps()
			return nil, fmt.Errorf("create BPF map %s: %w", name, err)
		}
		p.maps[name] = m
		p.own = append(p.own, m)
	}
	// The tracing program is loaded on its own: a kernel that refuses it
	// (no BTF, lockdown, no CAP_PERFMON) still runs the XDP program.
	skbSpec := spec.Programs[xdpobjProgRfmXdpSkb]
	delete(spec.Programs, xdpobjProgRfmXdpSkb)
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: p.maps})
	if err != nil {
		p.closeMaps()
		hint := ""
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			hint = " (needs CAP_BPF and CAP_NET_ADMIN, or root)"
		}
		return nil, fmt.Errorf("load XDP program: %w%s", err, hint)
	}
	p.prog = coll.Programs[xdpobjProgRfmXdp]
	p.generic = coll.Programs[xdpobjProgRfmXdpGeneric]
	p.floor = coll.Programs[xdpobjProgRfmXdpFloor]
	delete(coll.Programs, xdpobjProgRfmXdp)
	delete(coll.Programs, xdpobjProgRfmXdpGeneric)
	delete(coll.Programs, xdpobjProgRfmXdpFloor)
	coll.Close() // its maps are p.maps, which stay open
	p.skb, p.skbErr = loadSkbProgram(skbSpec, p.maps[xdpobjMapXdpSkbGso])
	if p.skbErr != nil {
		p.errors.Add(1) // rfm_errors_total{subsystem="xdp"}; the agent logs it at a generic attach
	}
	if opts.Shared != nil {
		p.cfg.Flags |= cfgCount
	}
	if err := p.writeCfg(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// loadSkbProgram loads rfm_xdp_skb with its map.
func loadSkbProgram(spec *ebpf.ProgramSpec, gso *ebpf.Map) (*ebpf.Program, error) {
	spec = spec.Copy()
	if err := spec.Instructions.AssociateMap(xdpobjMapXdpSkbGso, gso); err != nil {
		return nil, fmt.Errorf("load the skb GSO recorder: %w", err)
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, fmt.Errorf("load the skb GSO recorder: %w", err)
	}
	return prog, nil
}

// GSOCounting reports whether generic mode counts a GRO/GSO super-packet
// as its segments (nil), or why it cannot and counts it as one packet.
func (p *Program) GSOCounting() error { return p.skbErr }

// syncSkbLink attaches rfm_xdp_skb while an interface runs (or is about
// to run, generic) in generic mode, and detaches it otherwise: it runs
// for every skb the host receives. The caller holds mu.
func (p *Program) syncSkbLinkLocked(generic bool) {
	for _, a := range p.attached {
		generic = generic || a.mode == ModeGeneric
	}
	switch {
	case generic && p.skbLink == nil && p.skb != nil:
		l, err := link.AttachTracing(link.TracingOptions{Program: p.skb})
		if err != nil {
			p.skbErr = fmt.Errorf("attach the skb GSO recorder: %w", err)
			p.errors.Add(1)
			return
		}
		p.skbLink = l
	case !generic && p.skbLink != nil:
		p.skbLink.Close()
		p.skbLink = nil
	}
}

func (p *Program) writeCfg() error {
	if err := p.maps[xdpobjMapXdpCfg].Put(uint32(0), p.cfg); err != nil {
		return fmt.Errorf("write XDP config map: %w", err)
	}
	return nil
}

func (p *Program) closeMaps() {
	for _, m := range p.own {
		m.Close()
	}
	p.own = nil
}

// DetachAll detaches every interface; the counts stay readable
// (IngressCounts) until Close.
func (p *Program) DetachAll() error {
	p.mu.Lock()
	var idx []int
	for i := range p.attached {
		idx = append(idx, i)
	}
	p.mu.Unlock()
	var errs []error
	for _, i := range idx {
		errs = append(errs, p.Detach(i))
	}
	return errors.Join(errs...)
}

// Close detaches every interface and releases the program and its maps.
func (p *Program) Close() error {
	errs := []error{p.DetachAll()}
	p.mu.Lock()
	p.syncSkbLinkLocked(false)
	p.mu.Unlock()
	if p.prog != nil {
		p.prog.Close()
		p.generic.Close()
		p.floor.Close()
	}
	if p.skb != nil {
		p.skb.Close()
	}
	p.closeMaps()
	return errors.Join(errs...)
}

// SetRules replaces the rule set at once: the new set is written to the
// generation not in use, then one store to xdp_cfg switches every
// packet after it to the new set.
func (p *Program) SetRules(rules []Rule) error {
	if err := p.PrepareRules(rules); err != nil {
		return err
	}
	return p.SwitchRules()
}

// PrepareRules writes rules into the generation not in use, where no
// packet looks; SwitchRules makes them the rules in effect. Preparing
// again replaces what was prepared.
func (p *Program) PrepareRules(rules []Rule) error {
	if err := Check(rules); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	gen := uint8(p.cfg.Gen&1) ^ 1
	c := compile(rules, gen)
	// The target generation last ran two sets ago: keep its counts under
	// its rule names, then empty its rows.
	if err := p.foldGen(gen); err != nil {
		return err
	}
	p.names[gen] = nil
	if err := p.clearGenPrefixes(gen); err != nil {
		return err
	}
	for k, v := range c.prefixes {
		if err := p.maps[xdpobjMapXdpRulePfx].Put(k, v); err != nil {
			return fmt.Errorf("write XDP rule prefix: %w", err)
		}
	}
	for side := range 2 {
		if err := putArray(p.maps[xdpobjMapXdpPorts], (uint32(gen)*2+uint32(side))*65536, c.ports[side][:]); err != nil {
			return fmt.Errorf("write XDP port table: %w", err)
		}
	}
	for side := range 2 {
		if err := putArray(p.maps[xdpobjMapXdpPfx16], (uint32(gen)*2+uint32(side))*65536, c.block16[side][:]); err != nil {
			return fmt.Errorf("write XDP prefix block table: %w", err)
		}
	}
	if err := putArray(p.maps[xdpobjMapXdpRules], uint32(gen)*MaxRules, c.rules[:]); err != nil {
		return fmt.Errorf("write XDP rules: %w", err)
	}
	if err := p.maps[xdpobjMapXdpGens].Put(uint32(gen), c.gen); err != nil {
		return fmt.Errorf("write XDP rule set: %w", err)
	}
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.Name
	}
	p.names[gen] = names
	p.prepared = true
	return nil
}

// SwitchRules puts the prepared rules in effect with one map write; no
// packet sees part of one set and part of the other.
func (p *Program) SwitchRules() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.prepared {
		return errors.New("xdp: no rules prepared")
	}
	p.prepared = false
	p.cfg.Gen ^= 1
	return p.writeCfg()
}

// DiscardRules forgets what PrepareRules wrote (a rejected reload): the
// rules in effect stay, and SwitchRules has nothing to switch to.
func (p *Program) DiscardRules() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prepared {
		// Its rows counted nothing; its names would turn up as rules
		// when the generation is folded next.
		p.names[(p.cfg.Gen&1)^1] = nil
	}
	p.prepared = false
}

// putArray writes vals to an array map from index first, in one batch.
func putArray[T any](m *ebpf.Map, first uint32, vals []T) error {
	keys := make([]uint32, len(vals))
	for i := range keys {
		keys[i] = first + uint32(i)
	}
	_, err := m.BatchUpdate(keys, vals, nil)
	return err
}

func (p *Program) clearGenPrefixes(gen uint8) error {
	m := p.maps[xdpobjMapXdpRulePfx]
	var k rawRuleKey
	var v uint64
	var stale []rawRuleKey
	it := m.Iterate()
	for it.Next(&k, &v) {
		if k.Gen == gen {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read XDP rule prefixes: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear XDP rule prefix: %w", err)
		}
	}
	return nil
}

// Attach attaches the program to an interface with an XDP link, so it
// goes away with the process. An interface that already has an XDP
// program (someone else's) is refused, naming that program: rfm never
// replaces it. Returns the mode the program runs in.
func (p *Program) Attach(ifindex int, name string, mode Mode) (Mode, error) {
	p.mu.Lock()
	if a, ok := p.attached[ifindex]; ok {
		p.mu.Unlock()
		return a.mode, nil
	}
	slot := slices.Index(p.slotUsed[:], false)
	if slot < 0 {
		p.mu.Unlock()
		return 0, fmt.Errorf("xdp %s: all %d XDP interface slots in use", name, MaxInterfaces)
	}
	p.slotUsed[slot] = true
	p.mu.Unlock()
	a, err := p.attach(ifindex, name, mode, uint32(slot))
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.slotUsed[slot] = false
		p.syncSkbLinkLocked(false)
		return 0, err
	}
	p.attached[ifindex] = a
	p.syncSkbLinkLocked(false)
	return a.mode, nil
}

func (p *Program) attach(ifindex int, name string, mode Mode, slot uint32) (*attachment, error) {
	if other, err := foreignProgram(ifindex); err != nil {
		return nil, fmt.Errorf("xdp %s: %w", name, err)
	} else if other != "" {
		return nil, fmt.Errorf("xdp %s: %s already holds XDP on this interface; rfm does not replace it", name, other)
	}
	if err := p.zeroRows(slot); err != nil {
		return nil, fmt.Errorf("xdp %s: %w", name, err)
	}
	l, got, err := p.link(ifindex, slot, mode)
	if err == nil {
		return &attachment{index: ifindex, name: name, mode: got, slot: slot, link: l}, nil
	}
	p.clearIfaceSlot(ifindex)
	// Someone may have attached between the check and the attach.
	if other, _ := foreignProgram(ifindex); other != "" {
		return nil, fmt.Errorf("xdp %s: %s already holds XDP on this interface; rfm does not replace it", name, other)
	}
	return nil, fmt.Errorf("xdp %s: %w", name, err)
}

// SetMode re-attaches the program to an attached interface in another
// mode, keeping its counter slot and counts. The kernel runs one XDP mode
// per device at a time, so the old link goes first: packets arriving
// between the two pass unfiltered (and are counted by TC as passed).
// When the new mode fails the old one is attached again. Returns the
// mode the program runs in.
func (p *Program) SetMode(ifindex int, mode Mode) (Mode, error) {
	p.mu.Lock()
	a, ok := p.attached[ifindex]
	p.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("xdp: interface %d is not attached", ifindex)
	}
	if mode == a.mode || (mode == ModeAuto && a.mode == ModeNative) {
		return a.mode, nil
	}
	if err := a.link.Close(); err != nil {
		return 0, fmt.Errorf("xdp %s: detach for the mode change: %w", a.name, err)
	}
	l, got, err := p.link(ifindex, a.slot, mode)
	if err != nil {
		old, oldMode, rerr := p.link(ifindex, a.slot, a.mode)
		if rerr != nil {
			// Neither mode: the interface is left without the program,
			// and forgotten so a later attach starts clean.
			p.mu.Lock()
			p.retireLocked(a)
			p.slotUsed[a.slot] = false
			p.syncSkbLinkLocked(false)
			p.mu.Unlock()
			p.clearIfaceSlot(ifindex)
			return 0, fmt.Errorf("xdp %s: %s: %w; back to %s: %w", a.name, mode, err, a.mode, rerr)
		}
		p.mu.Lock()
		a.link, a.mode = old, oldMode
		p.syncSkbLinkLocked(false)
		p.mu.Unlock()
		return 0, fmt.Errorf("xdp %s: %w", a.name, err)
	}
	p.mu.Lock()
	a.link, a.mode = l, got
	p.syncSkbLinkLocked(false)
	p.mu.Unlock()
	return got, nil
}

// link attaches the program to ifindex in mode (auto: native, else
// generic) and returns the link and the mode it got. Generic mode gets
// the build of the program that counts GRO/GSO super-packets as their
// segments, with the skb GSO recorder attached first so the first
// packet is counted right.
func (p *Program) link(ifindex int, slot uint32, mode Mode) (link.Link, Mode, error) {
	if err := p.putIfaceSlot(ifindex, slot); err != nil {
		return nil, 0, fmt.Errorf("write interface slot: %w", err)
	}
	try := []Mode{mode}
	if mode == ModeAuto {
		try = []Mode{ModeNative, ModeGeneric}
	}
	var errs []error
	for _, m := range try {
		flags, prog := link.XDPDriverMode, p.prog
		if m == ModeGeneric {
			flags, prog = link.XDPGenericMode, p.generic
			p.mu.Lock()
			p.syncSkbLinkLocked(true)
			p.mu.Unlock()
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
		if err == nil {
			return l, m, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", m, err))
	}
	return nil, 0, fmt.Errorf("attach: %w", errors.Join(errs...))
}

// foreignProgram names the XDP program attached to the interface, if any
// ("program NAME (id N)"); "" when there is none.
func foreignProgram(ifindex int) (string, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("read interface: %w", err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return "", nil
	}
	// Reading the name takes CAP_SYS_ADMIN, which the running agent has
	// dropped (hotplug, reload): then the id alone names it.
	if prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId)); err == nil {
		defer prog.Close()
		if info, err := prog.Info(); err == nil {
			return fmt.Sprintf("XDP program %q (id %d)", info.Name, x.ProgId), nil
		}
	}
	return fmt.Sprintf("XDP program id %d", x.ProgId), nil
}

// Detach removes the program from the interface and forgets its counts
// but its drops by family (IngressCounts).
func (p *Program) Detach(ifindex int) error {
	p.mu.Lock()
	a, ok := p.attached[ifindex]
	ok = ok && !a.detaching
	if ok {
		a.detaching = true
	}
	p.mu.Unlock()
	if !ok {
		return nil
	}
	err := a.link.Close()
	// Its rows are final once the link is gone.
	p.mu.Lock()
	p.retireLocked(a)
	p.mu.Unlock()
	p.clearIfaceSlot(ifindex)
	p.mu.Lock()
	p.slotUsed[a.slot] = false
	p.syncSkbLinkLocked(false)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("xdp %s: detach: %w", a.name, err)
	}
	return nil
}

// retireLocked forgets an attachment whose program is off the
// interface, keeping its drops by family in detached, and forgets the
// drops of interfaces that no longer exist. The caller holds mu.
func (p *Program) retireLocked(a *attachment) {
	if sum, err := p.dropsLocked(a); err == nil {
		d := p.detached[a.index]
		d.add(sum)
		p.detached[a.index] = d
	} else {
		p.errors.Add(1) // rfm_errors_total{subsystem="xdp"}: the interface's rx counters lose its drops
	}
	delete(p.attached, a.index)
	delete(p.totals, a.index)
	for idx := range p.detached {
		if _, err := netlink.LinkByIndex(idx); err != nil && errors.As(err, new(netlink.LinkNotFoundError)) {
			delete(p.detached, idx)
		}
	}
}

// dropsLocked is what the program dropped on an attached interface, by
// family (column 0, passes, left at zero). The caller holds mu.
func (p *Program) dropsLocked(a *attachment) (rawCounter, error) {
	var sum rawCounter
	for _, c := range p.totals[a.index] {
		sum.add(c)
	}
	for gen := range uint8(2) {
		cur, err := p.readRows(a.slot, gen)
		if err != nil {
			return rawCounter{}, err
		}
		for _, c := range cur {
			sum.add(c)
		}
	}
	sum.Packets[0], sum.Bytes[0] = 0, 0
	return sum, nil
}

// IngressCounts is, by ifindex and family, what the program dropped
// since it was loaded (datapath.IngressSource): packets that never
// reach the TC ingress counters, to which the datapath adds them. It
// never goes back for an interface that exists.
func (p *Program) IngressCounts() (map[int]datapath.IngressCount, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int]datapath.IngressCount, len(p.attached)+len(p.detached))
	add := func(idx int, c rawCounter) {
		o := out[idx]
		for f := range c.Packets {
			o.Packets[f] += c.Packets[f]
			o.Bytes[f] += c.Bytes[f]
		}
		out[idx] = o
	}
	for idx, c := range p.detached {
		add(idx, c)
	}
	for _, a := range p.attached {
		c, err := p.dropsLocked(a)
		if err != nil {
			return nil, err
		}
		add(a.index, c)
	}
	return out, nil
}

// Attachment is an interface the program is attached to.
type Attachment struct {
	Index int
	Name  string
	Mode  Mode
}

// Attached lists the interfaces the program is attached to, by name.
func (p *Program) Attached() []Attachment {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Attachment, 0, len(p.attached))
	for _, a := range p.attached {
		out = append(out, Attachment{Index: a.index, Name: a.name, Mode: a.mode})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Counter is what one rule (or the blocklist or blackhole list) did on
// one interface since it was attached.
type Counter struct {
	Ifindex int
	Ifname  string
	Rule    string // rule name, RowBlocklist or RowBlackhole
	Action  string // what happened to the packets: "pass" or "drop"
	Packets uint64
	Bytes   uint64
}

func rowName(names []string, row int) string {
	switch row {
	case rowBlocklist:
		return RowBlocklist
	case rowBlackhole:
		return RowBlackhole
	}
	if row < len(names) {
		return names[row]
	}
	return ""
}

// readRows sums over CPUs the rows of one interface slot and generation.
func (p *Program) readRows(slot uint32, gen uint8) ([rows]rawCounter, error) {
	var out [rows]rawCounter
	var percpu []rawCounter
	for row := range rows {
		k := (slot*2+uint32(gen))*rows + uint32(row)
		if err := p.maps[xdpobjMapXdpCounters].Lookup(k, &percpu); err != nil {
			return out, fmt.Errorf("read XDP counters: %w", err)
		}
		for _, c := range percpu {
			out[row].add(c)
		}
	}
	return out, nil
}

// foldGen adds generation gen's rows of every interface to the totals
// under their rule names and zeroes them. The caller holds mu.
func (p *Program) foldGen(gen uint8) error {
	for _, a := range p.attached {
		cur, err := p.readRows(a.slot, gen)
		if err != nil {
			return err
		}
		t := p.totals[a.index]
		if t == nil {
			t = map[string]rawCounter{}
			p.totals[a.index] = t
		}
		for row, c := range cur {
			name := rowName(p.names[gen], row)
			if name == "" {
				continue
			}
			sum := t[name]
			sum.add(c)
			t[name] = sum
		}
		if err := p.zeroGen(a.slot, gen); err != nil {
			return err
		}
	}
	return nil
}

func (p *Program) zeroGen(slot uint32, gen uint8) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	zero := make([]rawCounter, cpus)
	keys := make([]uint32, rows)
	vals := make([]rawCounter, 0, rows*cpus)
	for row := range rows {
		keys[row] = (slot*2+uint32(gen))*rows + uint32(row)
		vals = append(vals, zero...)
	}
	if _, err := p.maps[xdpobjMapXdpCounters].BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("zero XDP counters: %w", err)
	}
	return nil
}

func (p *Program) zeroRows(slot uint32) error {
	for gen := range uint8(2) {
		if err := p.zeroGen(slot, gen); err != nil {
			return err
		}
	}
	return nil
}

// Counters returns per interface the counts of every rule of the
// current set, the blocklist and the blackhole list, and of rules of
// earlier sets that counted something; both actions, zeros included
// for the current rules.
func (p *Program) Counters() ([]Counter, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Counter
	for _, a := range p.attached {
		sums := map[string]rawCounter{}
		for name, c := range p.totals[a.index] {
			sums[name] = c
		}
		for gen := range uint8(2) {
			cur, err := p.readRows(a.slot, gen)
			if err != nil {
				return nil, err
			}
			for row, c := range cur {
				name := rowName(p.names[gen], row)
				if name == "" {
					continue
				}
				// Current rules and the lists show up even at zero.
				if c == (rawCounter{}) && gen != uint8(p.cfg.Gen) && row < MaxRules {
					continue
				}
				s := sums[name]
				s.add(c)
				sums[name] = s
			}
		}
		for name, c := range sums {
			dp, db := c.dropped()
			out = append(out,
				Counter{Ifindex: a.index, Ifname: a.name, Rule: name, Action: "pass", Packets: c.Packets[0], Bytes: c.Bytes[0]},
				Counter{Ifindex: a.index, Ifname: a.name, Rule: name, Action: "drop", Packets: dp, Bytes: db})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Ifname != b.Ifname {
			return a.Ifname < b.Ifname
		}
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		return a.Action < b.Action
	})
	return out, nil
}

// Mirrors struct xdp_block4_key and xdp_block6_key.
type rawKey4 struct {
	Prefixlen uint32
	Addr      [4]byte
}

type rawKey6 struct {
	Prefixlen uint32
	Addr      [16]byte
}

// List names one of the two prefix lists.
type List uint8

const (
	// ListBlock drops packets whose source or destination is in it.
	ListBlock List = 0
	// ListBlackhole drops packets whose destination is in it.
	ListBlackhole List = 1
)

// SetPrefix adds (on) or removes (off) a prefix in a list. Removing a
// prefix that is not there is not an error. Single addresses of the
// blocklist go to a hash map, the rest to a trie (see bpf/xdp.c).
func (p *Program) SetPrefix(list List, prefix netip.Prefix, on bool) error {
	prefix = prefix.Masked()
	if !prefix.IsValid() || prefix.Addr().Is4In6() || prefix.Addr().Zone() != "" {
		return fmt.Errorf("prefix %s: not a prefix", prefix)
	}
	v4 := prefix.Addr().Is4()
	host := list == ListBlock && prefix.IsSingleIP()
	var idx int
	var flag uint32
	var name string
	var key any
	switch {
	case host && v4:
		idx, flag, name, key = 4, cfgHost4, xdpobjMapXdpHost4, prefix.Addr().As4()
	case host:
		idx, flag, name, key = 5, cfgHost6, xdpobjMapXdpHost6, prefix.Addr().As16()
	case v4:
		idx, flag, name = 0, cfgBlock4, xdpobjMapXdpBlock4
		if list == ListBlackhole {
			idx, flag, name = 2, cfgHole4, xdpobjMapXdpHole4
		}
		key = rawKey4{Prefixlen: uint32(prefix.Bits()), Addr: prefix.Addr().As4()}
	default:
		idx, flag, name = 1, cfgBlock6, xdpobjMapXdpBlock6
		if list == ListBlackhole {
			idx, flag, name = 3, cfgHole6, xdpobjMapXdpHole6
		}
		key = rawKey6{Prefixlen: uint32(prefix.Bits()), Addr: prefix.Addr().As16()}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.maps[name]
	if on {
		// The filter bit goes first: a packet must never find the
		// address hashed but its bit clear.
		bit := hostFilterBit(prefix.Addr())
		if host && p.hostBits[bit] == 0 {
			if err := p.setHostFilterBit(bit, true); err != nil {
				return fmt.Errorf("add %s to the XDP %s: %w", prefix, listName(list), err)
			}
		}
		err := m.Update(key, uint8(1), ebpf.UpdateNoExist)
		if errors.Is(err, ebpf.ErrKeyExist) {
			return nil
		}
		if err != nil {
			if host && p.hostBits[bit] == 0 {
				p.setHostFilterBit(bit, false) // best effort; a stray bit only costs a lookup
			}
			return fmt.Errorf("add %s to the XDP %s: %w", prefix, listName(list), err)
		}
		if host {
			p.hostBits[bit]++
		}
		p.entries[idx]++
		if p.cfg.Flags&flag == 0 {
			p.cfg.Flags |= flag
			return p.writeCfg()
		}
		return nil
	}
	err := m.Delete(key)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s from the XDP %s: %w", prefix, listName(list), err)
	}
	if host {
		bit := hostFilterBit(prefix.Addr())
		if p.hostBits[bit]--; p.hostBits[bit] == 0 {
			delete(p.hostBits, bit)
			if err := p.setHostFilterBit(bit, false); err != nil {
				return fmt.Errorf("remove %s from the XDP %s: %w", prefix, listName(list), err)
			}
		}
	}
	p.entries[idx]--
	if p.entries[idx] == 0 {
		p.cfg.Flags &^= flag
		return p.writeCfg()
	}
	return nil
}

// AddPrefixes adds prefixes to a list as SetPrefix does, with batched
// map updates (BPF_MAP_UPDATE_BATCH: one syscall per map and 65,536
// prefixes instead of one per prefix), for loading the saved blocklist
// at start. The kernel's batch update takes no BPF_NOEXIST, so it would
// not say which prefixes were there already: only maps still empty are
// loaded in batches, prefixes for the others go one by one.
func (p *Program) AddPrefixes(list List, prefixes []netip.Prefix) error {
	var host4 [][4]byte
	var host6 [][16]byte
	var pfx4 []rawKey4
	var pfx6 []rawKey6
	seen := make(map[netip.Prefix]bool, len(prefixes))
	for _, prefix := range prefixes {
		prefix = prefix.Masked()
		if seen[prefix] {
			continue
		}
		seen[prefix] = true
		switch {
		case !prefix.IsValid() || prefix.Addr().Is4In6() || prefix.Addr().Zone() != "":
			return fmt.Errorf("prefix %s: not a prefix", prefix)
		case list == ListBlock && prefix.IsSingleIP() && prefix.Addr().Is4():
			host4 = append(host4, prefix.Addr().As4())
		case list == ListBlock && prefix.IsSingleIP():
			host6 = append(host6, prefix.Addr().As16())
		case prefix.Addr().Is4():
			pfx4 = append(pfx4, rawKey4{Prefixlen: uint32(prefix.Bits()), Addr: prefix.Addr().As4()})
		default:
			pfx6 = append(pfx6, rawKey6{Prefixlen: uint32(prefix.Bits()), Addr: prefix.Addr().As16()})
		}
	}
	type batch struct {
		name  string
		idx   int // in p.entries
		flag  uint32
		count int
		keys  func(from, to int) any
		// prefix is key i as a prefix, for SetPrefix.
		prefix func(i int) netip.Prefix
	}
	batches := []batch{
		{xdpobjMapXdpHost4, 4, cfgHost4, len(host4), func(f, t int) any { return host4[f:t] },
			func(i int) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4(host4[i]), 32) }},
		{xdpobjMapXdpHost6, 5, cfgHost6, len(host6), func(f, t int) any { return host6[f:t] },
			func(i int) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom16(host6[i]), 128) }},
		{xdpobjMapXdpBlock4, 0, cfgBlock4, len(pfx4), func(f, t int) any { return pfx4[f:t] },
			func(i int) netip.Prefix {
				return netip.PrefixFrom(netip.AddrFrom4(pfx4[i].Addr), int(pfx4[i].Prefixlen))
			}},
		{xdpobjMapXdpBlock6, 1, cfgBlock6, len(pfx6), func(f, t int) any { return pfx6[f:t] },
			func(i int) netip.Prefix {
				return netip.PrefixFrom(netip.AddrFrom16(pfx6[i].Addr), int(pfx6[i].Prefixlen))
			}},
	}
	if list == ListBlackhole {
		batches[2].name, batches[2].idx, batches[2].flag = xdpobjMapXdpHole4, 2, cfgHole4
		batches[3].name, batches[3].idx, batches[3].flag = xdpobjMapXdpHole6, 3, cfgHole6
	}
	var rest []netip.Prefix
	if err := func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		ones := make([]uint8, min(addBatch, len(prefixes)))
		for i := range ones {
			ones[i] = 1
		}
		for bi, b := range batches {
			if b.count == 0 {
				continue
			}
			if p.entries[b.idx] != 0 {
				for i := range b.count {
					rest = append(rest, b.prefix(i))
				}
				continue
			}
			host := bi < 2
			if host {
				// The filter bits first: a packet must never find an
				// address hashed but its bit clear. A bit set for an
				// address that then fails to go in costs only a lookup.
				bits := map[uint32]uint32{}
				for i := range b.count {
					bits[hostFilterBit(b.prefix(i).Addr())]++
				}
				if err := p.setHostFilterBitsLocked(bits); err != nil {
					return err
				}
				defer func() {
					// Counted once the addresses are in (below).
					for bit, n := range bits {
						p.hostBits[bit] += n
					}
				}()
			}
			m := p.maps[b.name]
			for from := 0; from < b.count; from += addBatch {
				to := min(from+addBatch, b.count)
				if _, err := m.BatchUpdate(b.keys(from, to), ones[:to-from], nil); err != nil {
					// What went in stays, as the map does not say which
					// did: the whole map is rebuilt by the next start.
					return fmt.Errorf("batch update: %w", err)
				}
			}
			p.entries[b.idx] = b.count
			p.cfg.Flags |= b.flag
		}
		return p.writeCfg()
	}(); err != nil {
		return fmt.Errorf("add %d prefixes to the XDP %s: %w", len(prefixes), listName(list), err)
	}
	for _, prefix := range rest {
		if err := p.SetPrefix(list, prefix, true); err != nil {
			return err
		}
	}
	return nil
}

// addBatch is how many prefixes one BPF_MAP_UPDATE_BATCH carries.
const addBatch = 65536

// setHostFilterBitsLocked sets bits of xdp_host_filter, writing the
// words they are in with batched updates.
func (p *Program) setHostFilterBitsLocked(bits map[uint32]uint32) error {
	if len(bits) == 0 {
		return nil
	}
	words := map[uint32]uint64{}
	for bit := range bits {
		words[bit/64] |= 1 << (bit % 64)
	}
	keys := make([]uint32, 0, len(words))
	for k := range words {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	m := p.maps[xdpobjMapXdpHostFilter]
	for from := 0; from < len(keys); from += addBatch {
		ks := keys[from:min(from+addBatch, len(keys))]
		vals := make([]uint64, len(ks))
		// An array map has no batch lookup by key list: read word by
		// word only those that may hold bits already (any listed host).
		for i, k := range ks {
			if len(p.hostBits) > 0 {
				if err := m.Lookup(k, &vals[i]); err != nil {
					return fmt.Errorf("read XDP host filter word %d: %w", k, err)
				}
			}
			vals[i] |= words[k]
		}
		if _, err := m.BatchUpdate(ks, vals, nil); err != nil {
			return fmt.Errorf("write XDP host filter: %w", err)
		}
	}
	return nil
}

// hostFilterBits is XDP_HOST_FILTER_BITS: bits per family in xdp_host_filter.
const hostFilterBits = 1 << 24

// hostFilterBit is the bit of xdp_host_filter a single address falls on,
// as bpf/xdp.c's xdp_host_maybe computes it: Fibonacci hashing of the
// address read as little-endian words, IPv6's two halves folded first.
func hostFilterBit(a netip.Addr) uint32 {
	b := a.As16()
	const k = 0x9e3779b97f4a7c15
	if a.Is4() {
		return uint32((uint64(binary.LittleEndian.Uint32(b[12:])) * k) >> 40)
	}
	hi, lo := binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])
	return hostFilterBits + uint32(((hi^(lo*k))*k)>>40)
}

// setHostFilterBit sets or clears one bit of xdp_host_filter. Only
// userspace writes it, under p.mu.
func (p *Program) setHostFilterBit(bit uint32, on bool) error {
	m := p.maps[xdpobjMapXdpHostFilter]
	k := bit / 64
	var w uint64
	if err := m.Lookup(k, &w); err != nil {
		return fmt.Errorf("read XDP host filter word %d: %w", k, err)
	}
	if on {
		w |= 1 << (bit % 64)
	} else {
		w &^= 1 << (bit % 64)
	}
	if err := m.Put(k, w); err != nil {
		return fmt.Errorf("write XDP host filter word %d: %w", k, err)
	}
	return nil
}

func listName(l List) string {
	if l == ListBlackhole {
		return "blackhole list"
	}
	return "blocklist"
}

// LockedMemory is the memlock the kernel reports for the maps the
// program created itself (not the datapath's it shares); maps it reports
// none for (the LPM tries) count as 0.
func (p *Program) LockedMemory() (uint64, error) {
	var total uint64
	for _, m := range p.own {
		info, err := m.Info()
		if err != nil {
			return 0, fmt.Errorf("locked memory of map %s: %w", m, err)
		}
		// The kernel reports none for some map types (the tries here):
		// counted as 0.
		if memlock, ok := info.Memlock(); ok {
			total += memlock
		}
	}
	return total, nil
}

// Prog is the XDP program of native mode, for BPF_PROG_TEST_RUN in
// tests and benchmarks.
func (p *Program) Prog() *ebpf.Program { return p.prog }

// GenericProg is the XDP program of generic mode.
func (p *Program) GenericProg() *ebpf.Program { return p.generic }

// Floor is an empty XDP program: the cost floor in benchmarks.
func (p *Program) Floor() *ebpf.Program { return p.floor }

// ifaceTable is XDP_IFACE_TABLE of bpf/xdp.c.
const ifaceTable = 4096

// Mirrors struct xdp_iface.
type rawIface struct {
	Ifindex uint32
	Slot    uint32
}

// putIfaceSlot writes where the program finds the interface's counter
// slot: its xdp_ifaces entry, or the spill hash when another interface
// holds that entry.
func (p *Program) putIfaceSlot(ifindex int, slot uint32) error {
	entry := uint32(ifindex) % ifaceTable
	var cur rawIface
	if err := p.maps[xdpobjMapXdpIfaces].Lookup(entry, &cur); err != nil {
		return err
	}
	if cur.Ifindex != 0 && cur.Ifindex != uint32(ifindex) {
		return p.maps[xdpobjMapXdpIfacesSpill].Put(uint32(ifindex), slot)
	}
	return p.maps[xdpobjMapXdpIfaces].Put(entry, rawIface{Ifindex: uint32(ifindex), Slot: slot})
}

// clearIfaceSlot removes what putIfaceSlot wrote.
func (p *Program) clearIfaceSlot(ifindex int) {
	entry := uint32(ifindex) % ifaceTable
	var cur rawIface
	if err := p.maps[xdpobjMapXdpIfaces].Lookup(entry, &cur); err == nil && cur.Ifindex == uint32(ifindex) {
		p.maps[xdpobjMapXdpIfaces].Put(entry, rawIface{})
	}
	p.maps[xdpobjMapXdpIfacesSpill].Delete(uint32(ifindex))
}
