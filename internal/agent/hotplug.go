// SPDX-License-Identifier: AGPL-3.0-only

// Hotplug: following interfaces as they appear, are renamed and vanish.

package agent

import (
	"fmt"
	"sync"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/ifwatch"
)

// linkWatcher is the part of ifwatch.Watcher the agent uses.
type linkWatcher interface {
	SetSelect(func(name string, loopback bool) bool)
	Close() error
}

// linkState is what the hotplug callbacks share. They run on the
// watcher's goroutine; ifMu orders them against shutdown.
type linkState struct {
	ifMu     sync.Mutex
	selector config.InterfaceSelector
	stopped  bool
}

// startWatch follows interfaces as they come and go, attaching those
// agent.interfaces selects.
func (a *agent) startWatch() error {
	a.links.ifMu.Lock()
	a.links.selector = config.NewInterfaceSelector(a.cfg.Agent.Interfaces)
	a.links.stopped = false
	a.links.ifMu.Unlock()
	w, err := ifwatch.Start(ifwatch.Options{
		Select: func(name string, loopback bool) bool { return a.links.currentSelector().Match(name, loopback) },
		Attach: a.attachLink,
		Detach: a.detachLink,
		Logger: a.log,
	})
	if err != nil {
		return fmt.Errorf("agent.interfaces: following interface changes: %w", err)
	}
	a.watch = w
	a.reg.MustRegister(w)
	return nil
}

func (l *linkState) currentSelector() config.InterfaceSelector {
	l.ifMu.Lock()
	defer l.ifMu.Unlock()
	return l.selector
}

func (a *agent) stopWatch() {
	a.links.ifMu.Lock()
	a.links.stopped = true
	a.links.ifMu.Unlock()
	if a.watch != nil {
		_ = a.watch.Close()
		a.watch = nil
	}
}

// attachLink is the watcher's Attach callback: a link appeared, was
// renamed, or the selection now includes it.
func (a *agent) attachLink(l ifwatch.Link) error {
	a.links.ifMu.Lock()
	defer a.links.ifMu.Unlock()
	if a.links.stopped {
		return nil
	}
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
func (a *agent) detachLink(l ifwatch.Link) {
	a.links.ifMu.Lock()
	defer a.links.ifMu.Unlock()
	if a.links.stopped {
		return
	}
	if err := a.dp.Detach(l.Index); err != nil {
		a.log.Warn("detach", "interface", l.Name, "ifindex", l.Index, "err", err)
	}
	a.table.FlushInterface(uint32(l.Index))
	a.ipfix.refreshInterfaces(a.dp.Interfaces)
	a.log.Info("detached", "interface", l.Name, "ifindex", l.Index)
}
