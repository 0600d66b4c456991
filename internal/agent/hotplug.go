// SPDX-License-Identifier: AGPL-3.0-only

// Hotplug: following interfaces as they appear, are renamed and vanish.

package agent

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/ifwatch"
)

// linkWatcher is the part of ifwatch.Watcher the agent uses.
type linkWatcher interface {
	SetSelect(func(name string, loopback bool) bool)
	Close() error
}

// interfacesStage attaches the interfaces agent.interfaces selects at
// start and follows them as they come and go (hotplug).
type interfacesStage struct {
	a     *agent
	watch linkWatcher

	// ifMu orders the hotplug callbacks, which run on the watcher's
	// goroutine, against reload and shutdown.
	ifMu     sync.Mutex
	selector config.InterfaceSelector
	stopped  bool
}

func (a *agent) newInterfaces() (component, error) {
	return &interfacesStage{a: a, selector: config.NewInterfaceSelector(a.cfg.Agent.Interfaces)}, nil
}

func (s *interfacesStage) name() string { return "interfaces" }

func (s *interfacesStage) start() error {
	a := s.a
	for _, ifc := range a.ifaces {
		if err := a.dp.Attach(ifc.Index, ifc.Name); err != nil {
			return err // stop detaches what was attached
		}
		a.log.Debug("attached", "interface", ifc.Name, "ifindex", ifc.Index)
	}
	a.ipfix.setInterfaces(a.dp.Interfaces())
	w, err := ifwatch.Start(ifwatch.Options{
		Select: func(name string, loopback bool) bool { return s.currentSelector().Match(name, loopback) },
		Attach: s.attachLink,
		Detach: s.detachLink,
		Logger: a.log,
	})
	if err != nil {
		return fmt.Errorf("agent.interfaces: following interface changes: %w", err)
	}
	s.watch = w
	a.reg.MustRegister(w)
	return nil
}

func (s *interfacesStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	if slices.Equal(cur.Agent.Interfaces, next.Agent.Interfaces) {
		return reconfig{}, nil
	}
	return reconfig{commit: func() []string {
		s.ifMu.Lock()
		s.selector = config.NewInterfaceSelector(next.Agent.Interfaces)
		s.ifMu.Unlock()
		if s.watch != nil {
			sel := s.currentSelector()
			s.watch.SetSelect(sel.Match)
		}
		return []string{"agent.interfaces"}
	}}, nil
}

// stop stops following links and detaches every interface.
func (s *interfacesStage) stop() error {
	s.ifMu.Lock()
	s.stopped = true
	s.ifMu.Unlock()
	if s.watch != nil {
		_ = s.watch.Close()
		s.watch = nil
	}
	if s.a.dp == nil {
		return nil
	}
	var errs []error
	for _, ifc := range s.a.dp.Interfaces() {
		errs = append(errs, s.a.dp.Detach(ifc.Index))
	}
	return errors.Join(errs...)
}

func (s *interfacesStage) currentSelector() config.InterfaceSelector {
	s.ifMu.Lock()
	defer s.ifMu.Unlock()
	return s.selector
}

// attachLink is the watcher's Attach callback: a link appeared, was
// renamed, or the selection now includes it.
func (s *interfacesStage) attachLink(l ifwatch.Link) error {
	s.ifMu.Lock()
	defer s.ifMu.Unlock()
	if s.stopped {
		return nil
	}
	a := s.a
	if err := a.dp.Attach(l.Index, l.Name); err != nil {
		return err
	}
	// An interface detached before (or its ifindex reused) may start
	// flows again.
	a.table.AllowInterface(uint32(l.Index))
	a.ipfix.refreshInterfaces(a.dp.Interfaces)
	a.log.Info("attached", "interface", l.Name, "ifindex", l.Index)
	return nil
}

// detachLink is the watcher's Detach callback: the link vanished, was
// renamed away, or left the selection. Its active flows end now
// (exported with reason forced end) so no series of it lingers.
func (s *interfacesStage) detachLink(l ifwatch.Link) {
	s.ifMu.Lock()
	defer s.ifMu.Unlock()
	if s.stopped {
		return
	}
	a := s.a
	if err := a.dp.Detach(l.Index); err != nil {
		a.log.Warn("detach", "interface", l.Name, "ifindex", l.Index, "err", err)
	}
	a.table.FlushInterface(uint32(l.Index))
	a.ipfix.refreshInterfaces(a.dp.Interfaces)
	a.log.Info("detached", "interface", l.Name, "ifindex", l.Index)
}
