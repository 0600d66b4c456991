// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// bgpEnricher gives every flow the BGP context the test sets for its
// destination, and the source half for its source.
type bgpEnricher struct {
	mu  sync.Mutex
	dst map[netip.Addr]BGP
	gen atomic.Uint64
}

func (b *bgpEnricher) Enrich(src, dst netip.Addr) Labels {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := Labels{BGP: b.dst[dst]}
	l.BGP.PrevAS, l.BGP.SrcPrefixLen = 64999, 15
	return l
}

func (b *bgpEnricher) Generation() uint64 { return b.gen.Load() }

func TestBGPContextSharedAndFreed(t *testing.T) {
	ctxA := BGP{NextHop: netip.MustParseAddr("::ffff:192.0.2.1").As16(), NextAS: 65001, DstPrefixLen: 16,
		Communities: "\x00\x01\x00\x02", LargeCommunities: "\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03"}
	ctxB := ctxA
	ctxB.NextAS = 65002
	enr := &bgpEnricher{dst: map[netip.Addr]BGP{
		netip.MustParseAddr("198.19.0.1"): ctxA,
		netip.MustParseAddr("198.19.0.2"): ctxA,
	}}
	enr.gen.Store(1)
	sink := &recSink{}
	tab := NewTable(Options{Enricher: enr, Sinks: []Sink{sink}})
	one, two := udp(1, 1), udp(2, 1)
	two.Dst[15] = 2
	tab.UpdateBatch([]datapath.Event{one, two, udp(3, 1)})
	if n, m := tab.bgpDst.len(), tab.bgpSrc.len(); n != 1 || m != 1 {
		t.Fatalf("%d destination and %d source contexts held for flows sharing one of each, want 1 and 1", n, m)
	}

	// The RIB changes: the flows to 198.19.0.1 take the new context, the
	// old one stays for the flow to .2 only.
	enr.mu.Lock()
	enr.dst[netip.MustParseAddr("198.19.0.1")] = ctxB
	enr.mu.Unlock()
	enr.gen.Add(1)
	tab.Sweep(10)
	if n := tab.bgpDst.len(); n != 2 {
		t.Fatalf("%d contexts after a relabel, want 2", n)
	}

	tab.Flush(EndForced)
	recs := sink.take()
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	for _, r := range recs {
		want := ctxB
		if r.Dst[15] == 2 {
			want = ctxA
		}
		want.PrevAS, want.SrcPrefixLen = 64999, 15
		if r.BGP != want {
			t.Errorf("record to %v: BGP %+v, want %+v", netip.AddrFrom16(r.Dst), r.BGP, want)
		}
	}
	if n, m := tab.bgpDst.len(), tab.bgpSrc.len(); n != 0 || m != 0 {
		t.Errorf("%d destination and %d source contexts held after every flow ended, want 0", n, m)
	}
}
