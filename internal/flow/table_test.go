// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

func TestAggregationByFullKey(t *testing.T) {
	base := evt{src: "198.18.0.1", dst: "198.19.0.1", sport: 40000, dport: 443, proto: 6, ifindex: 2, dir: datapath.Ingress}
	tests := []struct {
		name     string
		other    evt
		separate bool
	}{
		{"same key", base, false},
		{"src port", func() evt { e := base; e.sport++; return e }(), true},
		{"dst port", func() evt { e := base; e.dport++; return e }(), true},
		{"direction", func() evt { e := base; e.dir = datapath.Egress; return e }(), true},
		{"ifindex", func() evt { e := base; e.ifindex = 3; return e }(), true},
		{"protocol", func() evt { e := base; e.proto = 17; return e }(), true},
		{"src address", func() evt { e := base; e.src = "198.18.0.2"; return e }(), true},
		{"dst address", func() evt { e := base; e.dst = "198.19.0.2"; return e }(), true},
		{"swapped addresses", func() evt { e := base; e.src, e.dst = e.dst, e.src; return e }(), true},
		{"ipv6 with the same low bytes", func() evt { e := base; e.src = "2001:db8::c612:1"; return e }(), true},
		{"ipv6 v4-compatible form", func() evt { e := base; e.src = "::c612:1"; return e }(), true},
		{"packet length only", func() evt { e := base; e.len = 1500; return e }(), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := NewTable(Options{})
			a, b := base, tc.other
			a.ns, a.len = 1000, 100
			b.ns = 2000
			if b.len == 0 {
				b.len = 200
			}
			tab.UpdateBatch([]datapath.Event{a.event(), b.event()})
			want := 1
			if tc.separate {
				want = 2
			}
			if got := tab.Active(); got != want {
				t.Fatalf("Active() = %d, want %d", got, want)
			}
			var pk, by uint64
			for _, r := range active(t, tab) {
				pk += r.Packets
				by += r.Bytes
			}
			if pk != 2 || by != uint64(a.len+b.len) {
				t.Fatalf("total packets/bytes = %d/%d, want 2/%d", pk, by, a.len+b.len)
			}
		})
	}
}

func TestIPv4AndIPv6Keys(t *testing.T) {
	tab := NewTable(Options{})
	v4 := evt{src: "198.18.0.1", dst: "198.19.0.1", sport: 1, dport: 2, ns: 10}.event()
	v6 := evt{src: "2001:db8::1", dst: "2001:db8::2", sport: 1, dport: 2, ns: 10}.event()
	tab.UpdateBatch([]datapath.Event{v4, v6, v4})
	flows := active(t, tab)
	if len(flows) != 2 {
		t.Fatalf("got %d flows, want 2", len(flows))
	}
	for k, r := range flows {
		k := k
		switch {
		case k.IsIPv4():
			if k.SrcAddr() != netip.MustParseAddr("198.18.0.1") || r.Packets != 2 {
				t.Errorf("IPv4 flow %v: src %v, %d packets; want 198.18.0.1, 2", k, k.SrcAddr(), r.Packets)
			}
		default:
			if k.DstAddr() != netip.MustParseAddr("2001:db8::2") || r.Packets != 1 {
				t.Errorf("IPv6 flow %v: dst %v, %d packets; want 2001:db8::2, 1", k, k.DstAddr(), r.Packets)
			}
		}
	}
}

func TestCounters(t *testing.T) {
	tab := NewTable(Options{})
	var evs []datapath.Event
	for i, l := range []uint32{60, 1500, 40, 9000} {
		e := udp(1, uint64(100+i))
		e.Len = l
		evs = append(evs, e)
	}
	tab.UpdateBatch(evs[:2])
	tab.Update(&evs[2])
	tab.Update(&evs[3])
	r := tab.Top(0, nil, nil)
	if len(r) != 1 || r[0].Packets != 4 || r[0].Bytes != 60+1500+40+9000 {
		t.Fatalf("flows = %+v, want one with 4 packets, 10600 bytes", r)
	}
}

func TestIdleEvictionExact(t *testing.T) {
	const timeout = 10 * time.Second
	s := uint64(time.Second)
	tests := []struct {
		name    string
		events  []datapath.Event
		sweeps  []int64  // sweep times (boot ns), in order
		evicted [][]byte // source hosts evicted by each sweep
	}{
		{
			name:    "idle exactly the timeout stays, one ns more goes",
			events:  []datapath.Event{udp(1, 5*s)},
			sweeps:  []int64{int64(15 * s), int64(15*s + 1)},
			evicted: [][]byte{nil, {1}},
		},
		{
			name:    "touched flow idle exactly the timeout stays",
			events:  []datapath.Event{udp(1, 1*s), udp(1, 5*s)},
			sweeps:  []int64{int64(15 * s), int64(15*s + 1)},
			evicted: [][]byte{nil, {1}},
		},
		{
			name:    "later packet keeps the flow",
			events:  []datapath.Event{udp(1, 1*s), udp(2, 2*s), udp(1, 9*s)},
			sweeps:  []int64{int64(12*s + 1), int64(19 * s), int64(19*s + 1)},
			evicted: [][]byte{{2}, nil, {1}},
		},
		{
			// A flow touched once after creation is re-queued at the
			// first sweep behind flows created later; a FIFO would then
			// hide it behind them for up to another timeout.
			name: "re-queued flow is not hidden behind younger ones",
			events: []datapath.Event{
				udp(1, 0), udp(1, 1*s), // queued at 0, last 1s
				udp(2, 5*s), udp(3, 9*s),
			},
			sweeps:  []int64{int64(10*s + s/2), int64(11*s + 1), int64(15*s + 1), int64(19*s + 1)},
			evicted: [][]byte{nil, {1}, {2}, {3}},
		},
		{
			name:    "everything idle at once",
			events:  []datapath.Event{udp(1, 1), udp(2, 2), udp(3, 3), udp(4, 4)},
			sweeps:  []int64{int64(timeout) + 2, int64(timeout) + 5},
			evicted: [][]byte{{1}, {2, 3, 4}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recSink{}
			tab := NewTable(Options{IdleTimeout: timeout, Sinks: []Sink{sink}})
			tab.UpdateBatch(tc.events)
			var total uint64
			for i, now := range tc.sweeps {
				tab.Sweep(now)
				recs := sink.take()
				if got := srcHosts(recs); !slices.Equal(got, tc.evicted[i]) {
					t.Fatalf("sweep at %v evicted hosts %v, want %v", time.Duration(now), got, tc.evicted[i])
				}
				for _, r := range recs {
					if r.Reason != EndIdleTimeout {
						t.Errorf("reason = %v, want idle_timeout", r.Reason)
					}
				}
				total += uint64(len(recs))
			}
			if got := tab.IdleEvictions(); got != total {
				t.Errorf("IdleEvictions() = %d, want %d", got, total)
			}
			if tab.ForcedEvictions() != 0 {
				t.Errorf("ForcedEvictions() = %d, want 0", tab.ForcedEvictions())
			}
		})
	}
}

func TestIdleEvictionInChunks(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{IdleTimeout: time.Second, Sinks: []Sink{sink}})
	const n = 3*endChunk + 5
	evs := make([]datapath.Event, n)
	for i := range evs {
		evs[i] = udp(byte(i), uint64(i))
		evs[i].SrcPort = uint16(i)
	}
	again := evs[1]
	again.BootNs = uint64(time.Second)
	evs = append(evs, again) // re-touch one flow
	tab.UpdateBatch(evs)
	tab.Sweep(int64(time.Second) + n)
	if got := len(sink.take()); got != n-1 || tab.Active() != 1 || tab.IdleEvictions() != n-1 {
		t.Fatalf("evicted %d, active %d, counted %d; want %d, 1, %d", got, tab.Active(), tab.IdleEvictions(), n-1, n-1)
	}
}

func TestForcedEvictionPicksOldestLastSeen(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		events  []datapath.Event
		evicted []byte // in eviction order
	}{
		{
			name:    "plain order",
			max:     2,
			events:  []datapath.Event{udp(1, 1), udp(2, 2), udp(3, 3), udp(4, 4)},
			evicted: []byte{1, 2},
		},
		{
			name:    "re-touched flow survives",
			max:     2,
			events:  []datapath.Event{udp(1, 1), udp(2, 2), udp(1, 3), udp(3, 4)},
			evicted: []byte{2},
		},
		{
			// A FIFO that re-appends a touched flow at the tail would
			// evict 3 here (queued after 1 was re-appended), although 1
			// was last seen earlier.
			name: "re-queued flow still goes first once oldest",
			max:  3,
			events: []datapath.Event{
				udp(1, 1), udp(2, 2), udp(1, 3), udp(3, 4),
				udp(4, 5), // evicts 2; 1 is re-queued with last-seen 3
				udp(5, 6), // 1 (last 3) is older than 3 (last 4)
			},
			evicted: []byte{2, 1},
		},
		{
			name:    "out-of-order timestamp does not move last-seen back",
			max:     2,
			events:  []datapath.Event{udp(1, 10), udp(2, 20), udp(1, 30), udp(1, 5), udp(3, 40)},
			evicted: []byte{2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sink := &recSink{}
			tab := NewTable(Options{MaxFlows: tc.max, Sinks: []Sink{sink}})
			for i := range tc.events {
				tab.Update(&tc.events[i])
			}
			recs := sink.take()
			var got []byte
			for _, r := range recs {
				got = append(got, r.Src[15])
				if r.Reason != EndLackOfResources {
					t.Errorf("reason = %v, want lack_of_resources", r.Reason)
				}
			}
			if !slices.Equal(got, tc.evicted) {
				t.Fatalf("evicted %v, want %v", got, tc.evicted)
			}
			if tab.ForcedEvictions() != uint64(len(tc.evicted)) {
				t.Errorf("ForcedEvictions() = %d, want %d", tab.ForcedEvictions(), len(tc.evicted))
			}
			if tab.Active() != tc.max {
				t.Errorf("Active() = %d, want %d", tab.Active(), tc.max)
			}
		})
	}
}

// TestForcedEvictionMatchesModel drives a small table with random traffic
// and checks every forced eviction against a brute-force search for the
// oldest last-seen.
func TestForcedEvictionMatchesModel(t *testing.T) {
	for _, size := range []int{1, 2, 7, 64} {
		rng := rand.New(rand.NewPCG(uint64(size), 7))
		sink := &recSink{}
		tab := NewTable(Options{MaxFlows: size, Sinks: []Sink{sink}})
		model := map[byte]uint64{} // host -> last seen
		for i := range 5000 {
			ns := uint64(1000 + i)
			host := byte(rng.IntN(3 * size))
			ev := udp(host, ns)
			if _, ok := model[host]; !ok && len(model) == size {
				oldest, oldestNs := byte(0), uint64(1<<63)
				for h, last := range model {
					if last < oldestNs {
						oldest, oldestNs = h, last
					}
				}
				tab.Update(&ev)
				recs := sink.take()
				if len(recs) != 1 || recs[0].Src[15] != oldest {
					t.Fatalf("size %d step %d: evicted %v, want host %d", size, i, srcHosts(recs), oldest)
				}
				delete(model, oldest)
			} else {
				tab.Update(&ev)
				if recs := sink.take(); len(recs) != 0 {
					t.Fatalf("size %d step %d: unexpected eviction of %v", size, i, srcHosts(recs))
				}
			}
			model[host] = ns
		}
		if tab.Active() != len(model) {
			t.Fatalf("size %d: Active() = %d, want %d", size, tab.Active(), len(model))
		}
	}
}

func TestUnlimited(t *testing.T) {
	tab := NewTable(Options{MaxFlows: 0})
	const n = 20000
	evs := make([]datapath.Event, n)
	for i := range evs {
		evs[i] = udp(byte(i), uint64(i))
		evs[i].DstPort = uint16(i / 256)
	}
	tab.UpdateBatch(evs)
	if tab.Active() != n || tab.ForcedEvictions() != 0 || tab.Capacity() != MaxFlowsCeiling {
		t.Fatalf("Active/Forced/Capacity = %d/%d/%d, want %d/0/%d", tab.Active(), tab.ForcedEvictions(), tab.Capacity(), n, MaxFlowsCeiling)
	}
}

func TestSetMaxFlows(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{MaxFlows: 100, Sinks: []Sink{sink}})
	for i := range 100 {
		ev := udp(byte(i), uint64(1000-i)) // host 99 is the oldest
		tab.Update(&ev)
	}
	tab.SetMaxFlows(10)
	if tab.Active() != 10 || tab.Capacity() != 10 || tab.ForcedEvictions() != 90 {
		t.Fatalf("Active/Capacity/Forced = %d/%d/%d, want 10/10/90", tab.Active(), tab.Capacity(), tab.ForcedEvictions())
	}
	if got, want := srcHosts(sink.take()), makeRange(10, 100); !slices.Equal(got, want) {
		t.Fatalf("evicted %v, want hosts 10..99", got)
	}
	tab.SetMaxFlows(0)
	for i := 100; i < 200; i++ {
		ev := udp(byte(i), 2000)
		tab.Update(&ev)
	}
	if tab.Active() != 110 {
		t.Fatalf("after growing to unlimited: Active() = %d, want 110", tab.Active())
	}
}

func makeRange(from, to int) []byte {
	var b []byte
	for i := from; i < to; i++ {
		b = append(b, byte(i))
	}
	return b
}

func TestFlush(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{Sinks: []Sink{sink}})
	for i := range 10000 {
		ev := udp(byte(i), uint64(i))
		ev.DstPort = uint16(i)
		tab.Update(&ev)
	}
	tab.Flush(EndForced)
	recs := sink.take()
	if len(recs) != 10000 || tab.Active() != 0 {
		t.Fatalf("flushed %d records, Active() = %d; want 10000, 0", len(recs), tab.Active())
	}
	for _, r := range recs {
		if r.Reason != EndForced {
			t.Fatalf("reason = %v, want forced_end", r.Reason)
		}
	}
	if tab.ForcedEvictions() != 0 {
		t.Errorf("Flush counted %d forced evictions, want 0", tab.ForcedEvictions())
	}
	// The table works as before after being emptied.
	ev := udp(1, 5)
	tab.Update(&ev)
	tab.Sweep(int64(5 + DefaultIdleTimeout + 1))
	if got := srcHosts(sink.take()); !slices.Equal(got, []byte{1}) {
		t.Fatalf("after Flush, sweep evicted %v, want [1]", got)
	}
}

func TestFlushInterface(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{MaxFlows: 4, IdleTimeout: time.Second, Sinks: []Sink{sink}})
	var evs []datapath.Event
	for i, ifindex := range []uint32{2, 3, 2, 3} {
		ev := udp(byte(i+1), uint64(i+1))
		ev.Ifindex = ifindex
		evs = append(evs, ev)
	}
	tab.UpdateBatch(evs)
	tab.FlushInterface(2)
	recs := sink.take()
	if got := srcHosts(recs); !slices.Equal(got, []byte{1, 3}) {
		t.Fatalf("FlushInterface(2) ended %v, want [1 3]", got)
	}
	for _, r := range recs {
		if r.Reason != EndForced || r.Ifindex != 2 {
			t.Fatalf("record %+v: want reason forced_end on ifindex 2", r)
		}
	}
	if tab.Active() != 2 {
		t.Fatalf("Active() = %d, want 2", tab.Active())
	}
	// Stale queue entries of the flushed flows must not confuse later
	// evictions: fill the table again and force one out (ifindex 2 is
	// attached again, see TestFlushInterfaceRefusesLateEvents).
	tab.AllowInterface(2)
	more := []datapath.Event{udp(5, 10), udp(6, 11), udp(7, 12)}
	tab.UpdateBatch(more)
	if got := srcHosts(sink.take()); !slices.Equal(got, []byte{2}) {
		t.Fatalf("forced eviction after FlushInterface took %v, want [2]", got)
	}
	tab.Sweep(int64(12 + time.Second + 1))
	if got := srcHosts(sink.take()); !slices.Equal(got, []byte{4, 5, 6, 7}) {
		t.Fatalf("idle sweep took %v, want [4 5 6 7]", got)
	}
}

func TestWallClock(t *testing.T) {
	var c wallClock
	c.offset.Store(1_700_000_000_000_000_000)
	if got, want := c.wall(5_000_000_123), time.Unix(1_700_000_005, 123); !got.Equal(want) {
		t.Fatalf("wall = %v, want %v", got, want)
	}

	c.refresh()
	before := time.Now()
	w := c.wall(BootNow())
	after := time.Now()
	// Allow for the offset being measured a moment before.
	if w.Before(before.Add(-50*time.Millisecond)) || w.After(after.Add(50*time.Millisecond)) {
		t.Fatalf("wall(BootNow()) = %v, want between %v and %v", w, before, after)
	}
}

func TestBootNowAdvances(t *testing.T) {
	a := BootNow()
	deadline := time.Now().Add(5 * time.Second)
	for BootNow() <= a {
		if time.Now().After(deadline) {
			t.Fatal("BootNow did not advance")
		}
	}
	if a <= 0 {
		t.Fatalf("BootNow() = %d, want > 0", a)
	}
}

func TestSinkRecords(t *testing.T) {
	enr := newFakeEnricher()
	enr.set("198.18.0.1", 64500, "Amsterdam")
	enr.set("2001:db8::2", 64501, "Zürich")
	s1, s2 := &recSink{}, &recSink{}
	tab := NewTable(Options{Sinks: []Sink{s1, s2}, Enricher: enr, IdleTimeout: time.Second})
	tab.clock.offset.Store(1_000_000_000_000_000_000) // fixed for the test
	e1 := evt{src: "198.18.0.1", dst: "2001:db8::2", sport: 5000, dport: 443, proto: 6, ifindex: 7,
		dir: datapath.Egress, ns: 2_000_000_000, len: 1000}.event()
	e2 := e1
	e2.BootNs, e2.Len = 2_500_000_000, 500
	tab.UpdateBatch([]datapath.Event{e1, e2})
	tab.clock.offset.Store(1_000_000_000_000_000_000)
	tab.expire(3_500_000_001-int64(time.Second), math.MinInt64) // Sweep would re-measure the clock
	want := Record{
		Key:     keyOfEvent(&e1),
		Start:   time.Unix(1_000_000_002, 0),
		End:     time.Unix(1_000_000_002, 500_000_000),
		Packets: 2,
		Bytes:   1500,
		Labels:  Labels{SrcASN: 64500, DstASN: 64501, SrcCity: "Amsterdam", DstCity: "Zürich"},
		Reason:  EndIdleTimeout,
	}
	for i, s := range []*recSink{s1, s2} {
		recs := s.take()
		if len(recs) != 1 {
			t.Fatalf("sink %d got %d records, want 1", i, len(recs))
		}
		r := recs[0]
		if r.Key != want.Key || !r.Start.Equal(want.Start) || !r.End.Equal(want.End) ||
			r.Packets != want.Packets || r.Bytes != want.Bytes || r.Labels != want.Labels || r.Reason != want.Reason {
			t.Fatalf("sink %d got\n%+v\nwant\n%+v", i, r, want)
		}
	}
}

// Events reach the table out of order when CPUs flush their batches at
// different moments: the record spans the oldest to the newest event,
// whatever order they came in.
func TestOutOfOrderEventsSpanFlow(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{Sinks: []Sink{sink}})
	tab.clock.offset.Store(1_000_000_000_000_000_000)
	base := evt{src: "198.18.0.1", dst: "198.19.0.1", sport: 5000, dport: 53, proto: 17, ifindex: 3, len: 100}
	var evs []datapath.Event
	for _, ns := range []uint64{2_000_000_000, 1_990_000_000, 2_005_000_000, 1_995_000_000, 2_001_000_000} {
		e := base
		e.ns = ns
		evs = append(evs, e.event())
	}
	tab.UpdateBatch(evs)
	tab.clock.offset.Store(1_000_000_000_000_000_000)
	tab.Flush(EndForced)
	recs := sink.take()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	r := recs[0]
	if want := time.Unix(1_000_000_001, 990_000_000); !r.Start.Equal(want) {
		t.Errorf("start %v, want %v (the oldest event)", r.Start, want)
	}
	if want := time.Unix(1_000_000_002, 5_000_000); !r.End.Equal(want) {
		t.Errorf("end %v, want %v (the newest event)", r.End, want)
	}
	if r.Packets != 5 || r.Bytes != 500 {
		t.Errorf("%d packets %d bytes, want 5, 500", r.Packets, r.Bytes)
	}
}

func TestEnrichmentAtCreationAndRefresh(t *testing.T) {
	enr := newFakeEnricher()
	enr.set("198.18.0.1", 64500, "Amsterdam")
	tab := NewTable(Options{Enricher: enr})
	evs := []datapath.Event{udp(1, 1), udp(1, 2), udp(1, 3)}
	tab.UpdateBatch(evs)
	if n := enr.calls.Load(); n != 1 {
		t.Fatalf("Enrich called %d times for one flow, want 1", n)
	}
	r := tab.Top(0, nil, nil)[0]
	if r.SrcASN != 64500 || r.SrcCity != "Amsterdam" {
		t.Fatalf("labels at creation = %+v", r.Labels)
	}

	// Same generation: a sweep does not re-enrich.
	tab.Sweep(10)
	if n := enr.calls.Load(); n != 1 {
		t.Fatalf("Enrich called %d times after a sweep with no new generation, want 1", n)
	}

	// New answers with a new generation are picked up by the next sweep.
	enr.set("198.18.0.1", 64999, "Berlin")
	enr.gen.Add(1)
	tab.Sweep(20)
	r = tab.Top(0, nil, nil)[0]
	if r.SrcASN != 64999 || r.SrcCity != "Berlin" {
		t.Fatalf("labels after refresh = %+v, want 64999 Berlin", r.Labels)
	}
	if n := enr.calls.Load(); n != 2 {
		t.Fatalf("Enrich called %d times, want 2", n)
	}
}

func TestEnrichmentRefreshIsBounded(t *testing.T) {
	enr := newFakeEnricher()
	tab := NewTable(Options{Enricher: enr})
	const n = refreshBudget + refreshBudget/2
	evs := make([]datapath.Event, n)
	for i := range evs {
		evs[i] = udp(byte(i), 1)
		evs[i].SrcPort = uint16(i)
	}
	tab.UpdateBatch(evs)
	enr.calls.Store(0)
	enr.gen.Add(1)
	tab.Sweep(2)
	first := enr.calls.Load()
	if first < refreshBudget || first >= n {
		t.Fatalf("first sweep refreshed %d flows, want at least %d and fewer than %d", first, refreshBudget, n)
	}
	tab.Sweep(3)
	if got := enr.calls.Load(); got != n {
		t.Fatalf("two sweeps refreshed %d flows, want all %d", got, n)
	}
	tab.Sweep(4)
	if got := enr.calls.Load(); got != n {
		t.Fatalf("third sweep refreshed again: %d calls, want %d", got, n)
	}
}

func TestRollup(t *testing.T) {
	enr := newFakeEnricher()
	enr.set("198.18.0.1", 64500, "Amsterdam")
	enr.set("198.18.0.2", 64500, "Amsterdam")
	enr.set("198.18.0.3", 64501, "")
	tab := NewTable(Options{Enricher: enr})
	mk := func(src string, sport uint16, dir datapath.Direction, proto uint8, l uint32) datapath.Event {
		return evt{src: src, dst: "198.19.0.1", sport: sport, dport: 80, proto: proto, dir: dir, ns: 1, len: l}.event()
	}
	tab.UpdateBatch([]datapath.Event{
		mk("198.18.0.1", 1, datapath.Ingress, 6, 100),
		mk("198.18.0.1", 1, datapath.Ingress, 6, 100), // same flow
		mk("198.18.0.1", 2, datapath.Ingress, 6, 300), // other port, same group
		mk("198.18.0.2", 1, datapath.Ingress, 6, 50),  // other address, same labels
		mk("198.18.0.1", 1, datapath.Egress, 6, 7),    // other direction
		mk("198.18.0.1", 1, datapath.Ingress, 17, 9),  // other protocol
		mk("198.18.0.3", 1, datapath.Ingress, 6, 11),  // other ASN, no city
	})
	type sums struct{ p, b uint64 }
	got := map[RollupKey]sums{}
	tab.Rollup(func(k RollupKey, c RollupCounts) {
		if _, dup := got[k]; dup {
			t.Errorf("group %+v reported twice", k)
		}
		if c.Packets != c.SampledPackets || c.Bytes != c.SampledBytes {
			t.Errorf("group %+v: estimates %d/%d at rate 1, sampled %d/%d", k, c.Packets, c.Bytes, c.SampledPackets, c.SampledBytes)
		}
		got[k] = sums{c.SampledPackets, c.SampledBytes}
	})
	ams := RollupKey{Ifindex: 2, Dir: datapath.Ingress, Proto: 6, SrcASN: 64500, SrcCity: "Amsterdam"}
	egr, udpk := ams, ams
	egr.Dir = datapath.Egress
	udpk.Proto = 17
	want := map[RollupKey]sums{
		ams:  {4, 550},
		egr:  {1, 7},
		udpk: {1, 9},
		{Ifindex: 2, Dir: datapath.Ingress, Proto: 6, SrcASN: 64501}: {1, 11},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d groups %v, want %d", len(got), got, len(want))
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("group %+v = %v, want %v", k, got[k], w)
		}
	}
}

func TestRollupManyChunks(t *testing.T) {
	tab := NewTable(Options{})
	const n = 3*rollupChunk + 17
	evs := make([]datapath.Event, n)
	for i := range evs {
		evs[i] = udp(byte(i), 1)
		evs[i].SrcPort = uint16(i)
		evs[i].Len = 10
	}
	tab.UpdateBatch(evs)
	var p, b uint64
	groups := 0
	tab.Rollup(func(_ RollupKey, c RollupCounts) { groups++; p += c.SampledPackets; b += c.SampledBytes })
	if groups != 1 || p != n || b != 10*n {
		t.Fatalf("groups/packets/bytes = %d/%d/%d, want 1/%d/%d", groups, p, b, n, 10*n)
	}
}

func TestTop(t *testing.T) {
	tab := NewTable(Options{})
	for i := range 50 {
		ev := udp(byte(i), uint64(i))
		ev.Len = uint32(1000 + (i*37)%50) // distinct sizes in scrambled order
		ev.Ifindex = uint32(2 + i%2)
		tab.Update(&ev)
	}
	byBytes := func(a, b *Record) bool { return a.Bytes > b.Bytes }
	onIf3 := func(k *Key) bool { return k.Ifindex == 3 }

	all := tab.Top(0, byBytes, nil)
	if len(all) != 50 || !sort.SliceIsSorted(all, func(i, j int) bool { return byBytes(&all[i], &all[j]) }) {
		t.Fatalf("Top(0) returned %d flows or unsorted", len(all))
	}
	top5 := tab.Top(5, byBytes, nil)
	if len(top5) != 5 {
		t.Fatalf("Top(5) returned %d flows", len(top5))
	}
	for i := range top5 {
		if top5[i].Key != all[i].Key {
			t.Fatalf("Top(5)[%d] = %v, want %v", i, top5[i].Key, all[i].Key)
		}
	}
	filtered := tab.Top(3, byBytes, onIf3)
	var want []Record
	for _, r := range all {
		if r.Ifindex == 3 {
			want = append(want, r)
		}
	}
	for i := range filtered {
		if filtered[i].Key != want[i].Key {
			t.Fatalf("filtered Top(3)[%d] = %v, want %v", i, filtered[i].Key, want[i].Key)
		}
	}
	if got := tab.Top(7, nil, nil); len(got) != 7 {
		t.Fatalf("Top(7, nil, nil) returned %d flows", len(got))
	}
}

func TestSetIdleTimeout(t *testing.T) {
	tab := NewTable(Options{IdleTimeout: time.Minute})
	if tab.IdleTimeout() != time.Minute || tab.SweepInterval() != time.Second {
		t.Fatalf("IdleTimeout/SweepInterval = %v/%v", tab.IdleTimeout(), tab.SweepInterval())
	}
	tab.SetIdleTimeout(2 * time.Second)
	if tab.SweepInterval() != 500*time.Millisecond {
		t.Fatalf("SweepInterval = %v, want 500ms", tab.SweepInterval())
	}
	ev := udp(1, 0)
	tab.Update(&ev)
	tab.Sweep(int64(2*time.Second) + 1)
	if tab.Active() != 0 {
		t.Fatalf("flow survived a sweep past the new timeout")
	}
	tab.SetIdleTimeout(0)
	if tab.IdleTimeout() != DefaultIdleTimeout {
		t.Fatalf("IdleTimeout after SetIdleTimeout(0) = %v, want default", tab.IdleTimeout())
	}
}

func TestQueueCompaction(t *testing.T) {
	tab := NewTable(Options{})
	// Many interface flushes leave stale queue items behind; a sweep
	// compacts them.
	for round := range 20 {
		evs := make([]datapath.Event, 500)
		for i := range evs {
			evs[i] = udp(byte(i), uint64(round*1000+i))
			evs[i].SrcPort = uint16(i)
			evs[i].Ifindex = uint32(2 + i%2)
		}
		tab.UpdateBatch(evs)
		tab.FlushInterface(2)
	}
	tab.Sweep(1)
	tab.mu.Lock()
	qlen, live := tab.queue.len(), tab.index.count
	tab.mu.Unlock()
	if qlen > 2*live+1024 {
		t.Fatalf("queue holds %d items for %d flows after a sweep", qlen, live)
	}
	if live != 250 {
		t.Fatalf("active = %d, want 250", live)
	}
}

// Sampled packets of an interface still in flight when it went away do
// not start its flows again; a re-attached interface starts flows anew.
func TestFlushInterfaceRefusesLateEvents(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{MaxFlows: 16, IdleTimeout: time.Second, Sinks: []Sink{sink}})
	on := func(ifindex uint32, host byte, ns uint64) datapath.Event {
		ev := udp(host, ns)
		ev.Ifindex = ifindex
		return ev
	}
	tab.UpdateBatch([]datapath.Event{on(7, 1, 1), on(8, 2, 2)})
	tab.FlushInterface(7)
	if got := srcHosts(sink.take()); !slices.Equal(got, []byte{1}) {
		t.Fatalf("FlushInterface(7) ended %v, want [1]", got)
	}
	// Late: the same flow and a new one on the gone interface, the new
	// one an event carrying a run of 3 packets.
	run := on(7, 3, 4)
	run.Segs = 3
	tab.UpdateBatch([]datapath.Event{on(7, 1, 3), run, on(8, 2, 5)})
	if tab.Active() != 1 || tab.LateEvents() != 4 {
		t.Fatalf("after late events: %d active, %d late; want 1 (ifindex 8), 4 packets", tab.Active(), tab.LateEvents())
	}
	tab.Flush(EndForced)
	if recs := sink.take(); len(recs) != 1 || recs[0].Ifindex != 8 {
		t.Fatalf("records after the interface went: %+v, want only ifindex 8's flow", recs)
	}
	tab.AllowInterface(7)
	tab.UpdateBatch([]datapath.Event{on(7, 4, 6)})
	if tab.Active() != 1 {
		t.Fatalf("re-attached interface: %d active flows, want 1", tab.Active())
	}
	// The mark also lapses on its own once late packets cannot arrive.
	tab.FlushInterface(7)
	tab.Sweep(BootNow() + int64(goneHold) + 1)
	tab.UpdateBatch([]datapath.Event{on(7, 5, uint64(BootNow()))})
	if tab.LateEvents() != 4 || tab.Active() != 1 {
		t.Fatalf("after goneHold: %d late, %d active; want 4, 1", tab.LateEvents(), tab.Active())
	}
}

// The label sets (and so the rate-able counters) of a detached interface
// leave with it.
func TestFlushInterfaceDropsLabelSets(t *testing.T) {
	tab := NewTable(Options{MaxFlows: 16, IdleTimeout: time.Second})
	ev := udp(1, 1)
	ev.Ifindex = 7
	other := udp(2, 2)
	other.Ifindex = 8
	tab.UpdateBatch([]datapath.Event{ev, other})
	tab.FlushInterface(7)
	var ifindexes []uint32
	tab.LabelSets(func(r *LabelSetRow) { ifindexes = append(ifindexes, r.Key.Ifindex) })
	if !slices.Equal(ifindexes, []uint32{8}) {
		t.Fatalf("label sets after FlushInterface(7) are on ifindexes %v, want [8]", ifindexes)
	}
}
