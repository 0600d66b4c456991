// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// evt builds an event; addresses are parsed and stored 16-byte (IPv4
// v4-mapped) as the datapath does.
type evt struct {
	src, dst     string
	sport, dport uint16
	proto        uint8
	ifindex      uint32
	dir          datapath.Direction
	ns           uint64
	len          uint32
}

func (e evt) event() datapath.Event {
	ev := datapath.Event{
		BootNs:  e.ns,
		Src:     netip.MustParseAddr(e.src).As16(),
		Dst:     netip.MustParseAddr(e.dst).As16(),
		Ifindex: e.ifindex,
		Len:     e.len,
		SrcPort: e.sport,
		DstPort: e.dport,
		Proto:   e.proto,
		Dir:     e.dir,
	}
	if ev.Ifindex == 0 {
		ev.Ifindex = 2
	}
	if ev.Proto == 0 {
		ev.Proto = 17
	}
	if ev.Len == 0 {
		ev.Len = 100
	}
	return ev
}

// udp returns a UDP event from 198.18.0.<host>:1000+host to
// 198.19.0.1:53 at ns.
func udp(host byte, ns uint64) datapath.Event {
	ev := evt{src: "198.18.0.1", dst: "198.19.0.1", sport: 1000 + uint16(host), dport: 53, ns: ns}.event()
	ev.Src[15] = host
	return ev
}

// recSink records every Record it is given.
type recSink struct {
	mu   sync.Mutex
	recs []Record
}

func (s *recSink) ExportFlows(recs []Record) {
	s.mu.Lock()
	s.recs = append(s.recs, recs...)
	s.mu.Unlock()
}

// take returns and forgets the records received so far.
func (s *recSink) take() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recs
	s.recs = nil
	return r
}

// srcHosts returns the last source address byte of each record, sorted.
func srcHosts(recs []Record) []byte {
	var h []byte
	for _, r := range recs {
		h = append(h, r.Src[15])
	}
	slices.Sort(h)
	return h
}

// fakeEnricher labels by exact address and counts lookups; its
// generation is set by the test.
type fakeEnricher struct {
	mu     sync.Mutex
	labels map[netip.Addr]struct {
		asn  uint32
		city string
	}
	gen   atomic.Uint64
	calls atomic.Int64
}

func newFakeEnricher() *fakeEnricher {
	f := &fakeEnricher{labels: map[netip.Addr]struct {
		asn  uint32
		city string
	}{}}
	f.gen.Store(1)
	return f
}

func (f *fakeEnricher) set(addr string, asn uint32, city string) {
	f.mu.Lock()
	f.labels[netip.MustParseAddr(addr)] = struct {
		asn  uint32
		city string
	}{asn, city}
	f.mu.Unlock()
}

func (f *fakeEnricher) Enrich(src, dst netip.Addr) Labels {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	s, d := f.labels[src], f.labels[dst]
	return Labels{SrcASN: s.asn, DstASN: d.asn, SrcCity: s.city, DstCity: d.city}
}

func (f *fakeEnricher) Generation() uint64 { return f.gen.Load() }

// active returns a snapshot of the active flows, keyed by flow key.
func active(t *testing.T, tab *Table) map[Key]Record {
	t.Helper()
	m := map[Key]Record{}
	for _, r := range tab.Top(0, nil, nil) {
		if _, dup := m[r.Key]; dup {
			t.Fatalf("flow %v listed twice", r.Key)
		}
		m[r.Key] = r
	}
	if len(m) != tab.Active() {
		t.Fatalf("Top lists %d flows, Active() = %d", len(m), tab.Active())
	}
	return m
}
