// SPDX-License-Identifier: AGPL-3.0-only

// The XDP fast path as one component of the agent: the program, its
// rules, the live blocklist and the blackholes from the RIB, attached to
// the interfaces agent.xdp.interfaces selects.

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/datapath/xdp"
	"github.com/stepbrobd/rfm/internal/enrich/bmp"
	"github.com/stepbrobd/rfm/internal/ifwatch"
)

// blackholeSyncInterval is how often the blackhole list is compared
// with the RIB (only when the RIB or the station's list changed).
const blackholeSyncInterval = 250 * time.Millisecond

// xdpPath is the XDP component. Its methods are safe for concurrent use.
type xdpPath struct {
	log     *slog.Logger
	prog    *xdp.Program
	dp      *datapath.Datapath // adds prog's drops to its rx counters
	block   *xdp.Blocklist
	station *bmp.Station // nil without BMP

	mu         sync.Mutex
	sel        config.InterfaceSelector
	mode       xdp.Mode
	rules      []xdp.Rule
	blackholes bool                  // agent.xdp.blackhole_from_rib
	holes      map[netip.Prefix]bool // in the kernel's blackhole list
	failed     map[int]string        // ifindex -> why attaching failed
	stopped    bool

	stopSync context.CancelFunc
	syncDone chan struct{}
	watch    linkWatcher // follows agent.xdp.interfaces (hotplug)

	// reloadMu is held from a reload's prepare (reconfigure) to its
	// commit or abort, and by a hotplug attach: an interface appearing
	// meanwhile is attached before the prepare looks at what is
	// attached, or after the commit set the new mode, never in the old
	// mode behind the back of a mode change.
	reloadMu sync.Mutex
	// hotplugWaits counts hotplug attaches waiting for a reload (tests).
	hotplugWaits atomic.Int32
}

// startXDP loads the program (sharing the datapath's counters and ring),
// applies the rules and the saved blocklist, and starts following the
// RIB's blackholes. Nothing is attached yet.
func startXDP(c config.XDP, dp *datapath.Datapath, station *bmp.Station, log *slog.Logger) (*xdpPath, error) {
	rules, e := c.XDPRules()
	if e != nil {
		return nil, e
	}
	prog, err := xdp.Load(xdp.Options{Shared: dp.SharedMaps(), Fields: uint32(dp.Fields())})
	if err != nil {
		return nil, fmt.Errorf("agent.xdp: %w", err)
	}
	// From here on its drops count in rfm_interface_rx_*.
	if err := dp.SetIngressSource(prog); err != nil {
		prog.Close()
		return nil, fmt.Errorf("agent.xdp: %w", err)
	}
	x := &xdpPath{log: log, prog: prog, dp: dp, station: station, sel: config.NewInterfaceSelector(c.Interfaces),
		mode: c.XDPMode(), rules: rules, blackholes: c.BlackholeFromRIB,
		holes: map[netip.Prefix]bool{}, failed: map[int]string{}}
	if err := prog.SetRules(rules); err != nil {
		x.release()
		return nil, fmt.Errorf("agent.xdp.rules: %w", err)
	}
	x.block, err = xdp.OpenBlocklistBatch(c.StateFile, func(p netip.Prefix, on bool) error {
		return prog.SetPrefix(xdp.ListBlock, p, on)
	}, func(ps []netip.Prefix) error { return prog.AddPrefixes(xdp.ListBlock, ps) })
	if err != nil {
		x.release()
		return nil, fmt.Errorf("agent.xdp.state_file: %w", err)
	}
	if c.BlackholeFromRIB && station == nil {
		log.Warn("agent.xdp.blackhole_from_rib is set but the BMP station is off (agent.enrich.rib.bmp): no blackholes")
	}
	ctx, cancel := context.WithCancel(context.Background())
	x.stopSync, x.syncDone = cancel, make(chan struct{})
	go x.syncBlackholes(ctx)
	return x, nil
}

// wants reports whether agent.xdp.interfaces selects the interface.
func (x *xdpPath) wants(name string, loopback bool) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.sel.Match(name, loopback)
}

// attachAll attaches the selected interfaces of ifaces. An interface
// named in agent.xdp.interfaces that cannot be attached (another XDP
// program holds it) stops the start, as a TC attach failure does; one a
// pattern selected is logged, shown in rfm status, and left alone.
func (x *xdpPath) attachAll(ifaces []net.Interface) error {
	x.mu.Lock()
	named := x.sel.Named()
	x.mu.Unlock()
	for _, ifc := range ifaces {
		if !x.wants(ifc.Name, ifc.Flags&net.FlagLoopback != 0) {
			continue
		}
		if err := x.attach(ifc.Index, ifc.Name); err != nil {
			if slices.Contains(named, ifc.Name) {
				return err
			}
			x.log.Warn("xdp attach", "interface", ifc.Name, "err", err)
		}
	}
	return nil
}

// attach attaches one interface in the mode in effect and logs the mode
// it got.
func (x *xdpPath) attach(ifindex int, name string) error {
	x.mu.Lock()
	mode := x.mode
	x.mu.Unlock()
	return x.attachMode(ifindex, name, mode)
}

func (x *xdpPath) attachMode(ifindex int, name string, mode xdp.Mode) error {
	x.mu.Lock()
	stopped := x.stopped
	x.mu.Unlock()
	if stopped || x.holds(ifindex) {
		return nil
	}
	got, err := x.prog.Attach(ifindex, name, mode)
	x.mu.Lock()
	defer x.mu.Unlock()
	if err != nil {
		x.failed[ifindex] = err.Error()
		return err
	}
	delete(x.failed, ifindex)
	x.log.Info("xdp attached", "interface", name, "ifindex", ifindex, "mode", got)
	if err := x.prog.GSOCounting(); got == xdp.ModeGeneric && err != nil {
		x.log.Warn("xdp generic mode: a dropped GRO/GSO super-packet counts as 1 packet in the rx counters", "interface", name, "err", err)
	}
	return nil
}

// hotplugAttach attaches an interface the watcher reports, once no
// reload is between prepare and commit.
func (x *xdpPath) hotplugAttach(l ifwatch.Link) error {
	x.hotplugWaits.Add(1)
	x.reloadMu.Lock()
	x.hotplugWaits.Add(-1)
	defer x.reloadMu.Unlock()
	return x.attach(l.Index, l.Name)
}

// holds reports whether the program is attached to the interface.
func (x *xdpPath) holds(ifindex int) bool {
	return slices.ContainsFunc(x.prog.Attached(), func(a xdp.Attachment) bool { return a.Index == ifindex })
}

// detach removes the program from an interface (gone, renamed away or
// no longer selected).
func (x *xdpPath) detach(ifindex int, name string) {
	x.mu.Lock()
	delete(x.failed, ifindex)
	x.mu.Unlock()
	if err := x.prog.Detach(ifindex); err != nil {
		x.log.Warn("xdp detach", "interface", name, "ifindex", ifindex, "err", err)
	}
}

// reconfigure prepares a new [agent.xdp] while the fast path runs and
// stays on. Every step that can fail runs here and is undone on error:
// changed rules are written next to the ones in effect; a changed mode
// re-attaches the interfaces in it; interfaces agent.xdp.interfaces now
// names get the program (a named one that cannot be attached rejects the
// reload, as it stops a start). commit switches to the new rules with one
// map write and applies the selection (interfaces no longer selected are
// detached; new pattern matches attached, failures logged) and the
// blackhole switch. abort takes the attachments and mode changes back.
// A changed state file gets the running blocklist written to it, used
// from commit on. Hotplug attaches wait from here to commit or abort
// (reloadMu).
func (x *xdpPath) reconfigure(cur, next *config.Config) (reconfig, error) {
	x.reloadMu.Lock()
	rc, setSelect, err := x.prepare(cur, next)
	if err != nil || rc.commit == nil {
		x.reloadMu.Unlock()
		return rc, err
	}
	commit, abort := rc.commit, rc.abort
	rc.commit = func() []string {
		applied := commit()
		x.reloadMu.Unlock()
		// After the unlock: the watcher runs the attaches of a new
		// selection itself, and one may be waiting for the lock.
		if setSelect != nil {
			setSelect()
		}
		return applied
	}
	rc.abort = func() {
		abort()
		x.reloadMu.Unlock()
	}
	return rc, nil
}

// prepare is reconfigure under reloadMu. setSelect, when not nil, hands
// the new selection to the watcher after commit.
func (x *xdpPath) prepare(cur, next *config.Config) (rc reconfig, setSelect func(), err error) {
	c, n := &cur.Agent.XDP, &next.Agent.XDP
	rulesChanged := !slices.EqualFunc(c.Rules, n.Rules, sameRule)
	var rules []xdp.Rule
	if rulesChanged {
		var e *config.Error
		if rules, e = n.XDPRules(); e != nil {
			return reconfig{}, nil, e
		}
		if err := x.prog.PrepareRules(rules); err != nil {
			return reconfig{}, nil, fmt.Errorf("agent.xdp.rules: %w", err)
		}
	}
	var changed keyChanges
	changed.add("agent.xdp.rules", rulesChanged)
	fileChanged := changed.add("agent.xdp.state_file", c.StateFile != n.StateFile)
	modeChanged := changed.add("agent.xdp.mode", c.Mode != n.Mode)
	selChanged := changed.add("agent.xdp.interfaces", !slices.Equal(c.Interfaces, n.Interfaces))
	bhChanged := changed.add("agent.xdp.blackhole_from_rib", c.BlackholeFromRIB != n.BlackholeFromRIB)
	if len(changed) == 0 {
		return rc, nil, nil
	}
	mode := n.XDPMode()
	var undo []func()
	rollback := func() {
		for _, u := range slices.Backward(undo) {
			u()
		}
		if rulesChanged {
			x.prog.DiscardRules()
		}
	}
	// The running blocklist moves to the new file (see
	// Blocklist.PrepareMove): written there now, used from commit on.
	var move *xdp.Move
	if fileChanged {
		var err error
		if move, err = x.block.PrepareMove(n.StateFile); err != nil {
			rollback()
			return reconfig{}, nil, fmt.Errorf("agent.xdp.state_file = %q: cannot keep the blocklist there: %w", n.StateFile, err)
		}
		undo = append(undo, move.Abort)
	}
	if modeChanged {
		oldMode := c.XDPMode()
		for _, a := range x.prog.Attached() {
			got, err := x.prog.SetMode(a.Index, mode)
			if err != nil {
				rollback()
				return reconfig{}, nil, fmt.Errorf("agent.xdp.mode = %q: %w", n.Mode, err)
			}
			if got != a.Mode {
				x.log.Info("xdp mode changed", "interface", a.Name, "from", a.Mode, "to", got)
				undo = append(undo, func() {
					if _, err := x.prog.SetMode(a.Index, oldMode); err != nil {
						x.log.Error("xdp: restoring the mode after a rejected reload failed", "interface", a.Name, "err", err)
					}
				})
			}
		}
	}
	if selChanged {
		added, err := x.attachNamed(n.Interfaces, mode)
		if err != nil {
			rollback()
			return reconfig{}, nil, err
		}
		for _, l := range added {
			undo = append(undo, func() { x.detach(l.Index, l.Name) })
		}
	}
	sel := config.NewInterfaceSelector(n.Interfaces)
	blackholes := n.BlackholeFromRIB
	rc.abort = rollback
	rc.commit = func() []string {
		if fileChanged {
			if err := move.Commit(); err != nil {
				x.log.Error("xdp: moving the blocklist failed; it stays in the old state file", "from", c.StateFile, "err", err)
				changed = slices.DeleteFunc(changed, func(k string) bool { return k == "agent.xdp.state_file" })
			} else {
				x.log.Info("xdp blocklist moved", "from", c.StateFile, "to", n.StateFile)
			}
		}
		if rulesChanged {
			if err := x.prog.SwitchRules(); err != nil {
				x.log.Error("xdp: switching to the new rules failed; the old ones stay", "err", err)
			}
		}
		x.mu.Lock()
		if rulesChanged {
			x.rules = rules
		}
		x.mode = mode
		if selChanged {
			x.sel = sel
		}
		if bhChanged {
			x.blackholes = blackholes
		}
		x.mu.Unlock()
		return changed
	}
	if selChanged && x.watch != nil {
		setSelect = func() { x.watch.SetSelect(x.wants) }
	}
	return rc, setSelect, nil
}

// attachNamed attaches, in mode, the interfaces that list names (not
// patterns) and the program is not on yet. A name that does not exist or
// cannot be attached is an error, after what it attached is detached
// again. Returns what it attached.
func (x *xdpPath) attachNamed(list []string, mode xdp.Mode) ([]ifwatch.Link, error) {
	var added []ifwatch.Link
	fail := func(err error) ([]ifwatch.Link, error) {
		for _, l := range added {
			x.detach(l.Index, l.Name)
		}
		return nil, err
	}
	for i, name := range list {
		if config.IsInterfacePattern(name) {
			continue
		}
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return fail(fmt.Errorf("agent.xdp.interfaces[%d] = %q: no such interface on this system", i, name))
		}
		if x.holds(ifc.Index) {
			continue
		}
		if err := x.attachMode(ifc.Index, ifc.Name, mode); err != nil {
			return fail(fmt.Errorf("agent.xdp.interfaces[%d] = %q: %w", i, name, err))
		}
		added = append(added, ifwatch.Link{Index: ifc.Index, Name: ifc.Name})
	}
	return added, nil
}

func sameRule(a, b config.XDPRule) bool {
	return a.Name == b.Name && a.Action == b.Action && slices.Equal(a.Src, b.Src) && slices.Equal(a.Dst, b.Dst) &&
		a.Proto == b.Proto && slices.Equal(a.SrcPorts, b.SrcPorts) && slices.Equal(a.DstPorts, b.DstPorts) && a.PPS == b.PPS
}

// syncBlackholes keeps the kernel's blackhole list equal to the
// prefixes of the RIB's BLACKHOLE routes, checking when the RIB or the
// station's list changed.
func (x *xdpPath) syncBlackholes(ctx context.Context) {
	defer close(x.syncDone)
	if x.station == nil {
		return
	}
	t := time.NewTicker(blackholeSyncInterval)
	defer t.Stop()
	var lastGen, lastVersion uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, version := x.station.BlackholeRoutes()
		gen := x.station.RIB().Generation()
		x.mu.Lock()
		on := x.blackholes
		x.mu.Unlock()
		if on && gen == lastGen && version == lastVersion {
			continue
		}
		lastGen, lastVersion = gen, version
		want := map[netip.Prefix]bool{}
		if on {
			want = x.station.BlackholePrefixes()
		}
		x.applyBlackholes(want)
	}
}

// applyBlackholes makes the kernel list equal to want.
func (x *xdpPath) applyBlackholes(want map[netip.Prefix]bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for p := range x.holes {
		if !want[p] {
			if err := x.prog.SetPrefix(xdp.ListBlackhole, p, false); err != nil {
				x.log.Warn("xdp blackhole remove", "prefix", p, "err", err)
				continue
			}
			delete(x.holes, p)
			x.log.Info("xdp blackhole removed", "prefix", p)
		}
	}
	for p := range want {
		if !x.holes[p] {
			if err := x.prog.SetPrefix(xdp.ListBlackhole, p, true); err != nil {
				x.log.Warn("xdp blackhole add", "prefix", p, "err", err)
				continue
			}
			x.holes[p] = true
			x.log.Info("xdp blackhole added", "prefix", p)
		}
	}
}

// close detaches every interface and releases the program; later calls
// do nothing.
func (x *xdpPath) close() error {
	if x == nil {
		return nil
	}
	x.mu.Lock()
	was := x.stopped
	x.stopped = true
	x.mu.Unlock()
	if was {
		return nil
	}
	// The watcher first: no attach may race the detaches of Close.
	if x.watch != nil {
		_ = x.watch.Close()
	}
	x.stopSync()
	<-x.syncDone
	x.block.Close()
	return x.release()
}

// release detaches the program everywhere, hands its last drop counts
// to the datapath's rx counters and closes it.
func (x *xdpPath) release() error {
	err := x.prog.DetachAll()
	if serr := x.dp.SetIngressSource(nil); serr != nil {
		x.log.Warn("xdp: its last drops are missing from rfm_interface_rx_*", "err", serr)
	}
	return errors.Join(err, x.prog.Close())
}

// status is what rfm status shows of the XDP fast path.
func (x *xdpPath) status() *control.XDPStatus {
	if x == nil {
		return nil
	}
	x.mu.Lock()
	stopped := x.stopped
	x.mu.Unlock()
	if stopped {
		return nil
	}
	st := &control.XDPStatus{Rules: len(x.rulesNow())}
	counters, err := x.prog.Counters()
	if err != nil {
		x.log.Warn("xdp counters", "err", err)
	}
	byIface := map[int]*control.XDPInterfaceStatus{}
	for _, a := range x.prog.Attached() {
		st.Interfaces = append(st.Interfaces, control.XDPInterfaceStatus{Name: a.Name, Index: a.Index, Mode: a.Mode.String(), Attached: x.prog.Holds(a.Index)})
	}
	for i := range st.Interfaces {
		byIface[st.Interfaces[i].Index] = &st.Interfaces[i]
	}
	for _, c := range counters {
		s := byIface[c.Ifindex]
		if s == nil || c.Packets == 0 {
			continue
		}
		s.Hits = append(s.Hits, control.XDPRuleHits{Rule: c.Rule, Action: c.Action, Packets: c.Packets, Bytes: c.Bytes})
	}
	x.mu.Lock()
	for idx, why := range x.failed {
		// The watcher reports no detach for a link it never attached.
		if _, err := net.InterfaceByIndex(idx); err != nil {
			delete(x.failed, idx)
			continue
		}
		st.Failed = append(st.Failed, control.XDPFailure{Index: idx, Error: why})
	}
	st.Blackholes = len(x.holes)
	x.mu.Unlock()
	sort.Slice(st.Failed, func(i, j int) bool { return st.Failed[i].Index < st.Failed[j].Index })
	st.Blocklist, _ = x.prog.ListEntries()
	return st
}

func (x *xdpPath) rulesNow() []xdp.Rule {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.rules
}

// errXDPOff answers blocklist requests when XDP is not configured.
var errXDPOff = &control.Error{Status: 400, Message: "blocklist: the XDP fast path is off (agent.xdp.interfaces is empty)"}

func (x *xdpPath) blockList() (control.Blocklist, error) {
	if x == nil {
		return control.Blocklist{}, errXDPOff
	}
	out := control.Blocklist{Entries: []control.BlockEntry{}}
	for _, e := range x.block.List() {
		out.Entries = append(out.Entries, control.EntryOf(e))
	}
	return out, nil
}

func (x *xdpPath) blockAdd(args control.BlockAddArgs) (control.BlockEntry, error) {
	if x == nil {
		return control.BlockEntry{}, errXDPOff
	}
	e, err := x.block.Add(args.Prefix, args.For, args.Reason)
	if err != nil {
		return control.BlockEntry{}, fmt.Errorf("blocklist add %s: %w", args.Prefix, err)
	}
	x.log.Info("blocklist add", "prefix", args.Prefix, "for", args.For, "reason", args.Reason)
	return control.EntryOf(e), nil
}

func (x *xdpPath) blockDel(p netip.Prefix) (control.BlockDelResult, error) {
	if x == nil {
		return control.BlockDelResult{}, errXDPOff
	}
	ok, err := x.block.Del(p)
	if err != nil {
		return control.BlockDelResult{}, fmt.Errorf("blocklist del %s: %w", p, err)
	}
	if ok {
		x.log.Info("blocklist del", "prefix", p)
	}
	return control.BlockDelResult{Prefix: p.String(), Removed: ok}, nil
}

// xdpStage is the XDP fast path as a stage of the agent (a.xdp): it
// follows agent.xdp.interfaces with a watcher of its own, so an
// interface may run XDP without TC or TC without XDP. A reload turns it
// on and off.
type xdpStage struct {
	a *agent
	x *xdpPath // nil while off; changed only by start, commit and stop
}

func (a *agent) newXDP() (component, error) { return &xdpStage{a: a}, nil }

func (s *xdpStage) name() string { return "xdp" }

// start loads the program when agent.xdp.interfaces is set and attaches
// it to the interfaces present that it selects. A named interface that
// does not exist, or that another XDP program holds, stops the start.
func (s *xdpStage) start() error {
	c := s.a.cfg.Agent.XDP
	if !c.Enabled() {
		return nil
	}
	x, err := s.open(c)
	if err != nil {
		return err
	}
	s.publish(x)
	return nil
}

// open loads the program, applies the rules and the saved blocklist,
// attaches the selected interfaces present and starts following
// interface changes. On error it has released everything it made.
func (s *xdpStage) open(c config.XDP) (*xdpPath, error) {
	a := s.a
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("agent.xdp.interfaces: listing interfaces: %w", err)
	}
	for i, name := range c.Interfaces {
		if config.IsInterfacePattern(name) {
			continue
		}
		if !slices.ContainsFunc(all, func(ifc net.Interface) bool { return ifc.Name == name }) {
			return nil, fmt.Errorf("agent.xdp.interfaces[%d] = %q: no such interface on this system", i, name)
		}
	}
	x, err := startXDP(c, a.dp, a.station, a.log)
	if err != nil {
		return nil, err
	}
	if err := x.attachAll(all); err != nil {
		x.close()
		return nil, err
	}
	w, err := ifwatch.Start(ifwatch.Options{
		Select: x.wants,
		Attach: x.hotplugAttach,
		Detach: func(l ifwatch.Link) { x.detach(l.Index, l.Name) },
		Logger: a.log,
	})
	if err != nil {
		x.close()
		return nil, fmt.Errorf("agent.xdp.interfaces: following interface changes: %w", err)
	}
	x.watch = w
	return x, nil
}

// publish makes a running fast path the agent's: its metrics, its
// locked memory, the blocklist commands and rfm status.
func (s *xdpStage) publish(x *xdpPath) {
	a := s.a
	s.x = x
	a.reg.MustRegister(x.prog)
	// rfm_memory_bpf_locked_bytes: the XDP maps are the agent's too.
	a.memory.useBPFLocked(func() (uint64, error) {
		d, err := a.dp.LockedMemory()
		if err != nil {
			return 0, err
		}
		m, err := x.prog.LockedMemory()
		return d + m, err
	})
	a.xdp.Store(x)
}

// unpublish undoes publish and closes the fast path: XDP is detached
// everywhere, so from here on nothing is dropped and TC counts every
// packet.
func (s *xdpStage) unpublish() error {
	x := s.x
	if x == nil {
		return nil
	}
	a := s.a
	a.xdp.Store(nil)
	s.x = nil
	a.reg.Unregister(x.prog)
	a.memory.useBPFLocked(a.dp.LockedMemory)
	return x.close()
}

// reconfigure turns the fast path on (everything start does, prepared
// here: abort closes it again) or off (at commit), or hands the change
// to the running one.
func (s *xdpStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	on, want := s.x != nil, next.Agent.XDP.Enabled()
	switch {
	case on && want:
		return s.x.reconfigure(cur, next)
	case !on && !want:
		return reconfig{}, nil
	case on:
		return reconfig{commit: func() []string {
			if err := s.unpublish(); err != nil {
				s.a.log.Warn("xdp: turning off", "err", err)
			}
			s.a.log.Info("xdp off")
			return []string{"agent.xdp.interfaces"}
		}}, nil
	}
	x, err := s.open(next.Agent.XDP)
	if err != nil {
		return reconfig{}, err
	}
	return reconfig{
		commit: func() []string {
			s.publish(x)
			s.a.log.Info("xdp on", "interfaces", next.Agent.XDP.Interfaces)
			return []string{"agent.xdp.interfaces"}
		},
		abort: func() { x.close() },
	}, nil
}

// stop detaches XDP everywhere: it runs before the interfaces stage
// detaches TC, so from here on nothing is dropped.
func (s *xdpStage) stop() error {
	return s.unpublish()
}

func (c controlAgent) BlockList(context.Context) (control.Blocklist, error) {
	return c.a.xdp.Load().blockList()
}

func (c controlAgent) BlockAdd(_ context.Context, args control.BlockAddArgs) (control.BlockEntry, error) {
	return c.a.xdp.Load().blockAdd(args)
}

func (c controlAgent) BlockDel(_ context.Context, p netip.Prefix) (control.BlockDelResult, error) {
	return c.a.xdp.Load().blockDel(p)
}
