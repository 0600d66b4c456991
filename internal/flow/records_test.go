// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// A flow that gets a packet more often than the idle timeout must still be
// exported every active timeout, as delta records that tile its lifetime
// and add up to it, while the rollup and Top keep showing the whole flow.
func TestActiveTimeoutDeltaRecords(t *testing.T) {
	sink := &recSink{}
	const (
		active = 10 * time.Second
		idle   = 30 * time.Second
		every  = 3 * time.Second // one sampled packet this often
		until  = 100 * time.Second
	)
	tab := NewTable(Options{Sinks: []Sink{sink}, ActiveTimeout: active, IdleTimeout: idle})
	const t0 = int64(time.Hour) // boot time of the first packet
	var sentPackets, sentBytes uint64
	var recs []Record
	for now := t0; now <= t0+int64(until); now += int64(time.Second) {
		if (now-t0)%int64(every) == 0 {
			ev := udp(1, uint64(now))
			ev.Len = 100 + uint32((now-t0)/int64(time.Second))
			tab.Update(&ev)
			sentPackets++
			sentBytes += uint64(ev.Len)
		}
		tab.Sweep(now)
		recs = append(recs, sink.take()...)

		// The gauges' view is the whole flow, whatever went out.
		var rolled RollupCounts
		tab.Rollup(func(_ RollupKey, c RollupCounts) { rolled = c })
		if rolled.SampledPackets != sentPackets || rolled.SampledBytes != sentBytes {
			t.Fatalf("at +%v: rollup %d packets %d bytes, want the whole flow %d/%d",
				time.Duration(now-t0), rolled.SampledPackets, rolled.SampledBytes, sentPackets, sentBytes)
		}
		if top := tab.Top(1, nil, nil); len(top) != 1 || top[0].Packets != sentPackets || top[0].Bytes != sentBytes {
			t.Fatalf("at +%v: Top %+v, want the whole flow %d/%d", time.Duration(now-t0), top, sentPackets, sentBytes)
		}
	}
	lastPacket := t0 + int64(until) - int64(until)%int64(every)
	if n := len(recs); n < int(until/active)-1 {
		t.Fatalf("%d records over %v with active timeout %v, want one per timeout: %+v", n, until, active, recs)
	}
	// Let it go idle.
	tab.Sweep(lastPacket + int64(idle) + 1)
	recs = append(recs, sink.take()...)
	if tab.Active() != 0 {
		t.Fatalf("flow still active after the idle timeout")
	}

	var packets, bytes uint64
	for i, r := range recs {
		packets += r.Packets
		bytes += r.Bytes
		if r.Packets == 0 {
			t.Errorf("record %d is empty: %+v", i, r)
		}
		if i < len(recs)-1 && r.Reason != EndActiveTimeout {
			t.Errorf("record %d: reason %v, want active_timeout", i, r.Reason)
		}
		if i > 0 && !r.Start.Equal(recs[i-1].End) {
			t.Errorf("record %d starts at %v, previous ended at %v: want equal", i, r.Start, recs[i-1].End)
		}
		if r.End.Before(r.Start) {
			t.Errorf("record %d ends before it starts", i)
		}
		if r.End.Sub(r.Start) > active+every+time.Second {
			t.Errorf("record %d spans %v, more than the active timeout allows", i, r.End.Sub(r.Start))
		}
	}
	if last := recs[len(recs)-1].Reason; last != EndIdleTimeout && last != EndActiveTimeout {
		t.Errorf("last record reason %v", last)
	}
	if packets != sentPackets || bytes != sentBytes {
		t.Fatalf("records add up to %d packets %d bytes, sent %d/%d", packets, bytes, sentPackets, sentBytes)
	}
	// The ends are converted to wall time at different sweeps, whose
	// boot-to-wall offsets differ by the measuring error (well below 1ms).
	span := recs[len(recs)-1].End.Sub(recs[0].Start)
	if want := time.Duration(lastPacket - t0); (span - want).Abs() > time.Millisecond {
		t.Fatalf("records span %v, the flow lasted %v", span, want)
	}
}

// A flow whose last record was a delta and that got no packet since ends
// without an empty record; one that did gets its rest exported.
func TestActiveTimeoutThenEnd(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{Sinks: []Sink{sink}, ActiveTimeout: time.Second, IdleTimeout: time.Minute})
	a, b := udp(1, 0), udp(2, 0)
	tab.UpdateBatch([]datapath.Event{a, b})
	tab.Sweep(int64(time.Second))
	if got := sink.take(); len(got) != 2 || got[0].Reason != EndActiveTimeout {
		t.Fatalf("first sweep: %+v, want two active-timeout records", got)
	}
	b.BootNs = uint64(2 * time.Second)
	tab.Update(&b)
	tab.Flush(EndForced)
	got := sink.take()
	if len(got) != 1 || got[0].Src[15] != 2 || got[0].Packets != 1 || got[0].Reason != EndForced {
		t.Fatalf("flush: %+v, want only flow 2 with its one new packet", got)
	}
}

// Each flow keeps the rate that sampled it: an event of another rate ends
// it and starts a new one, so no record or estimate mixes two rates.
func TestRateChangeStartsNewFlow(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{Sinks: []Sink{sink}})
	ev := udp(1, 10)
	ev.SampleRate = 1
	tab.UpdateBatch([]datapath.Event{ev, ev, ev})
	other := udp(2, 10)
	other.SampleRate = 1
	tab.Update(&other)

	ev.SampleRate, ev.BootNs = 1000, 20
	tab.UpdateBatch([]datapath.Event{ev, ev})
	got := sink.take()
	if len(got) != 1 || got[0].Packets != 3 || got[0].SampleRate != 1 || got[0].Reason != EndForced {
		t.Fatalf("records at the rate change: %+v, want the 3 packets at rate 1, forced end", got)
	}
	var c RollupCounts
	tab.Rollup(func(_ RollupKey, rc RollupCounts) { c = rc })
	// flow 1: 2 packets at 1000; flow 2: 1 packet at 1, 100 bytes each.
	if c.SampledPackets != 3 || c.Packets != 2*1000+1 || c.Bytes != 2*100*1000+100 {
		t.Fatalf("rollup %+v, want 3 sampled, 2001 estimated packets, 200100 bytes", c)
	}
	tab.Flush(EndForced)
	rates := map[byte]uint32{}
	for _, r := range sink.take() {
		rates[r.Src[15]] = r.SampleRate
	}
	if rates[1] != 1000 || rates[2] != 1 {
		t.Fatalf("flushed rates %v, want flow 1 at 1000, flow 2 at 1", rates)
	}
}

// Top copies under the table lock and works without it: filter and less
// run with the lock free.
func TestTopRunsCallbacksUnlocked(t *testing.T) {
	tab := NewTable(Options{})
	const n = 3*topChunk + 5
	evs := make([]datapath.Event, n)
	for i := range evs {
		evs[i] = udp(byte(i), uint64(i))
		evs[i].SrcPort = uint16(i)
		evs[i].Len = uint32(1 + i%1000)
	}
	tab.UpdateBatch(evs)
	locked := 0
	check := func() {
		if !tab.mu.TryLock() {
			locked++
			return
		}
		tab.mu.Unlock()
	}
	less := func(a, b *Record) bool { check(); return a.Bytes > b.Bytes }
	filter := func(k *Key) bool { check(); return k.SrcPort%2 == 0 }
	top := tab.Top(10, less, filter)
	all := tab.Top(0, less, filter)
	if locked != 0 {
		t.Fatalf("filter or less ran %d times under the table lock", locked)
	}
	if len(top) != 10 || len(all) != (n+1)/2 {
		t.Fatalf("Top(10) %d flows, Top(0) %d, want 10 and %d", len(top), len(all), (n+1)/2)
	}
	for i := range top {
		if top[i].Bytes != all[i].Bytes {
			t.Fatalf("Top(10)[%d] has %d bytes, the full sort %d", i, top[i].Bytes, all[i].Bytes)
		}
	}
}

// max_flows = 0 still has a ceiling: a flood of distinct flows stops
// growing the table there.
func TestUnlimitedHasCeiling(t *testing.T) {
	defer func(c int) { flowCeiling = c }(flowCeiling)
	flowCeiling = 1000
	tab := NewTable(Options{MaxFlows: 0})
	evs := make([]datapath.Event, 5000)
	for i := range evs {
		evs[i] = udp(byte(i), uint64(i))
		evs[i].SrcPort = uint16(i)
	}
	tab.UpdateBatch(evs)
	if tab.Active() != 1000 || tab.ForcedEvictions() != 4000 {
		t.Fatalf("Active/Forced = %d/%d, want 1000/4000", tab.Active(), tab.ForcedEvictions())
	}
	big := NewTable(Options{MaxFlows: 1 << 30})
	big.UpdateBatch(evs)
	if big.Active() != 1000 {
		t.Fatalf("max_flows above the ceiling: Active = %d, want 1000", big.Active())
	}
}

// After a flood ends, the arena and the index give their memory back.
func TestTableShrinksAfterFlood(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{Sinks: []Sink{sink}, IdleTimeout: time.Second, ActiveTimeout: time.Hour})
	const flood = 200_000
	evs := make([]datapath.Event, flood)
	for i := range evs {
		evs[i] = udp(byte(i), 1)
		evs[i].SrcPort = uint16(i)
		evs[i].DstPort = uint16(i >> 16)
	}
	tab.UpdateBatch(evs)
	floodSlots := len(tab.index.slots)
	// 100 flows stay busy; the rest go idle.
	keep := evs[:100]
	for i := range keep {
		keep[i].BootNs = uint64(2 * time.Second)
	}
	tab.UpdateBatch(keep)
	tab.Sweep(int64(2*time.Second) + 1)
	if tab.Active() != 100 {
		t.Fatalf("Active = %d after the flood went idle, want 100", tab.Active())
	}
	if got := len(tab.index.slots); got >= floodSlots/4 || tab.arena.capacity() > 4*tab.hint {
		t.Fatalf("index %d slots (flood %d), arena capacity %d: not shrunk", got, floodSlots, tab.arena.capacity())
	}
	// The survivors are intact and reachable.
	sink.take()
	tab.UpdateBatch(keep)
	if tab.Active() != 100 {
		t.Fatalf("updating the survivors created flows: Active = %d", tab.Active())
	}
	for _, r := range tab.Top(0, nil, nil) {
		if r.Packets != 3 {
			t.Fatalf("survivor %v has %d packets, want 3", r.Key, r.Packets)
		}
	}
	tab.Sweep(int64(4*time.Second) + 1)
	if got := len(sink.take()); got != 100 || tab.Active() != 0 {
		t.Fatalf("idle sweep ended %d survivors, Active = %d", got, tab.Active())
	}
}

// pacedSink records what arrives through each path.
type pacedSink struct {
	mu           sync.Mutex
	live, paced  int
	pacedReasons []EndReason
}

func (s *pacedSink) ExportFlows(recs []Record) {
	s.mu.Lock()
	s.live += len(recs)
	s.mu.Unlock()
}

func (s *pacedSink) ExportFlowsPaced(recs []Record) {
	s.mu.Lock()
	s.paced += len(recs)
	for _, r := range recs {
		s.pacedReasons = append(s.pacedReasons, r.Reason)
	}
	s.mu.Unlock()
}

// Flushes go to a PacedSink's waiting path, live evictions never do.
func TestFlushesArePaced(t *testing.T) {
	sink := &pacedSink{}
	tab := NewTable(Options{MaxFlows: 100, Sinks: []Sink{sink}})
	rng := rand.New(rand.NewPCG(1, 2))
	flows := benchFlows(300, rng)
	tab.UpdateBatch(flows) // 200 live evictions
	tab.SetMaxFlows(50)    // 50 by shrinking
	tab.FlushInterface(flows[299].Ifindex)
	tab.Flush(EndForced)
	if sink.live != 200 || sink.paced != 100 {
		t.Fatalf("live/paced = %d/%d, want 200/100", sink.live, sink.paced)
	}
	if slices.Contains(sink.pacedReasons, EndActiveTimeout) || slices.Contains(sink.pacedReasons, EndIdleTimeout) {
		t.Fatalf("paced reasons %v", sink.pacedReasons)
	}
}

func ExampleRecord_deltas() {
	tab := NewTable(Options{ActiveTimeout: time.Minute, Sinks: []Sink{printSink{}}})
	for s := range 150 {
		ev := datapath.Event{BootNs: uint64(s) * uint64(time.Second), SampleRate: 100, Len: 1000,
			Src: v4mapped(198, 18, 0, 1), Dst: v4mapped(198, 19, 0, 1), Proto: 17}
		tab.Update(&ev)
		tab.Sweep(int64(ev.BootNs))
	}
	tab.Flush(EndForced)
	// Output:
	// active_timeout: 61 packets at 1 in 100
	// active_timeout: 60 packets at 1 in 100
	// forced_end: 29 packets at 1 in 100
}

type printSink struct{}

func (printSink) ExportFlows(recs []Record) {
	for _, r := range recs {
		fmt.Printf("%v: %d packets at 1 in %d\n", r.Reason, r.Packets, r.SampleRate)
	}
}
