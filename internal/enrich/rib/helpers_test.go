// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// manualClock runs timers when the test advances it.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	c       *manualClock
	at      time.Time
	f       func()
	stopped bool
}

func newManualClock() *manualClock {
	return &manualClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves the clock and runs the timers that came due, in order.
// It must not be called inside a transaction.
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*manualTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	slices.SortFunc(due, func(a, b *manualTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.c.mu.Lock()
		stopped := t.stopped
		t.stopped = true
		t.c.mu.Unlock()
		if !stopped {
			t.f()
		}
	}
}

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func router1() RouterKey { return RouterKey{Addr: addr("127.0.0.1"), Name: "r1"} }
func router2() RouterKey { return RouterKey{Addr: addr("127.0.0.2"), Name: "r2"} }

func peerKey(a string) PeerKey { return PeerKey{Addr: addr(a)} }

// fixture is a RIB with a manual clock.
type fixture struct {
	t     *testing.T
	rib   *RIB
	clock *manualClock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	c := newManualClock()
	r := New(Options{Keep: 5 * time.Minute, Clock: c})
	t.Cleanup(r.Close)
	return &fixture{t: t, rib: r, clock: c}
}

func (f *fixture) connect(k RouterKey) *Session {
	var s *Session
	f.rib.Update(func(tx *Tx) { s = tx.Connect(k, "") })
	return s
}

func (f *fixture) peerUp(s *Session, a string, asn uint32) *Peer {
	var p *Peer
	f.rib.Update(func(tx *Tx) { p = tx.PeerUp(s, peerKey(a), asn, addr(a)) })
	return p
}

func (f *fixture) announce(p *Peer, v View, prefix string, pathID uint32, path Path) {
	f.rib.Update(func(tx *Tx) { tx.Announce(p, v, pfx(prefix), pathID, path) })
}

func (f *fixture) withdraw(p *Peer, v View, prefix string, pathID uint32) {
	f.rib.Update(func(tx *Tx) { tx.Withdraw(p, v, pfx(prefix), pathID) })
}

func (f *fixture) none(a string) {
	f.t.Helper()
	if ri, ok := f.rib.LookupRoute(addr(a)); ok {
		f.t.Errorf("LookupRoute(%s) = %s from %s, want no route", a, ri.Prefix, ri.Peer.Addr)
	}
}

func (f *fixture) counts(routes4, routes6, peers int) {
	f.t.Helper()
	c := f.rib.Counts()
	if c.Routes4 != routes4 || c.Routes6 != routes6 || c.Peers != peers {
		f.t.Errorf("counts = %d IPv4 routes, %d IPv6 routes, %d peers; want %d, %d, %d",
			c.Routes4, c.Routes6, c.Peers, routes4, routes6, peers)
	}
}
