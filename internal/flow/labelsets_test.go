// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"sync"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// totals reads every label set's totals by key.
func totals(t *testing.T, tab *Table) map[RollupKey][2]uint64 {
	t.Helper()
	m := map[RollupKey][2]uint64{}
	tab.LabelSets(func(r *LabelSetRow) {
		if _, dup := m[r.Key]; dup {
			t.Errorf("label set %+v reported twice", r.Key)
		}
		m[r.Key] = [2]uint64{r.Packets, r.Bytes}
	})
	return m
}

// TestLabelSetTotalsNeverDecrease reads the totals over and over while
// flows start, end (idle timeout, table full, flush, table shrink) and
// are relabelled, and requires every total to only grow; at the end
// each set's totals equal what was sent to it, computed here from the
// events.
func TestLabelSetTotalsNeverDecrease(t *testing.T) {
	enr := newFakeEnricher()
	enr.set("198.18.0.1", 64500, "Amsterdam")
	enr.set("198.18.0.2", 64501, "Berlin")
	tab := NewTable(Options{MaxFlows: 64, Enricher: enr, IdleTimeout: time.Second})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		prev := map[RollupKey][2]uint64{}
		for reads := 0; ; reads++ {
			select {
			case <-stop:
				if reads < 10 {
					readErr = append(readErr, "reader ran fewer than 10 times")
				}
				return
			default:
			}
			cur := totals(t, tab)
			for k, p := range prev {
				if c, ok := cur[k]; ok && (c[0] < p[0] || c[1] < p[1]) {
					readErr = append(readErr, "totals of a label set went down")
				}
			}
			prev = cur
		}
	}()

	want := map[RollupKey][2]uint64{}
	ns := uint64(1)
	for round := range 300 {
		evs := make([]datapath.Event, 0, 100)
		for i := range 100 {
			host := byte(1 + i%2)
			ev := udp(host, ns)
			ev.SrcPort = uint16(round*7 + i) // new flows push old ones out of the 64-flow table
			ev.Len = uint32(40 + i)
			ev.SampleRate = uint32(1 + round%3) // the rate changes as the rounds go
			evs = append(evs, ev)
			asn, city := uint32(64500), "Amsterdam"
			if host == 2 {
				asn, city = 64501, "Berlin"
			}
			// Relabelled flows count in their new set from the sweep on;
			// this test relabels only to the same labels (generation bump).
			k := RollupKey{Ifindex: 2, Dir: datapath.Ingress, Proto: 17, SrcASN: asn, SrcCity: city}
			w := want[k]
			w[0] += uint64(ev.SampleRate)
			w[1] += uint64(ev.Len) * uint64(ev.SampleRate)
			want[k] = w
			ns += 1000
		}
		tab.UpdateBatch(evs)
		switch round % 5 {
		case 0:
			tab.Sweep(int64(ns) + int64(2*time.Second)) // idle timeout ends them all
		case 1:
			enr.gen.Add(1)
			tab.Sweep(int64(ns))
		case 2:
			tab.Flush(EndForced)
		case 3:
			tab.SetMaxFlows(8) // ends all but the newest 8
			tab.SetMaxFlows(64)
		}
	}
	close(stop)
	wg.Wait()
	for _, e := range readErr {
		t.Error(e)
	}
	got := totals(t, tab)
	if len(got) != len(want) {
		t.Fatalf("label sets %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("label set %+v totals %v, want %v", k, got[k], w)
		}
	}
}

// TestLabelSetRelabelKeepsTotals: a flow whose labels change keeps what
// it counted in the old set; new packets count in the new one.
func TestLabelSetRelabelKeepsTotals(t *testing.T) {
	enr := newFakeEnricher()
	enr.set("198.18.0.1", 64500, "")
	tab := NewTable(Options{Enricher: enr})
	ev := udp(1, 1)
	tab.Update(&ev)
	enr.set("198.18.0.1", 64999, "")
	enr.gen.Add(1)
	tab.Sweep(2)
	ev.BootNs = 3
	tab.Update(&ev)
	got := totals(t, tab)
	old := RollupKey{Ifindex: 2, Dir: datapath.Ingress, Proto: 17, SrcASN: 64500}
	cur := old
	cur.SrcASN = 64999
	if got[old] != [2]uint64{1, 100} || got[cur] != [2]uint64{1, 100} || len(got) != 2 {
		t.Fatalf("totals %v, want 1 packet/100 bytes in each of %+v and %+v", got, old, cur)
	}
}

// TestLabelSetOverflow: with a limit of 2 sets, the third label set's
// flows go to the overflow set of their interface and direction, and
// are counted.
func TestLabelSetOverflow(t *testing.T) {
	enr := newFakeEnricher()
	for i, a := range []string{"198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"} {
		enr.set(a, 64500+uint32(i), "")
	}
	tab := NewTable(Options{Enricher: enr, MaxLabelSets: 2})
	for host := byte(1); host <= 4; host++ {
		ev := udp(host, uint64(host))
		tab.Update(&ev)
	}
	ev := udp(1, 10) // an existing set still takes its flows
	ev.SrcPort = 9
	tab.Update(&ev)
	got := totals(t, tab)
	ovf := RollupKey{Ifindex: 2, Dir: datapath.Ingress, Overflow: true}
	want := map[RollupKey][2]uint64{
		{Ifindex: 2, Dir: datapath.Ingress, Proto: 17, SrcASN: 64500}: {2, 200},
		{Ifindex: 2, Dir: datapath.Ingress, Proto: 17, SrcASN: 64501}: {1, 100},
		ovf: {2, 200},
	}
	if len(got) != len(want) {
		t.Fatalf("label sets %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%+v = %v, want %v", k, got[k], w)
		}
	}
	st := tab.LabelSetStats()
	if st.Overflowed != 2 || st.Sets != 3 || st.Max != 2 {
		t.Errorf("stats %+v, want 2 overflowed flows, 3 sets, max 2", st)
	}
	var gauges int
	tab.Rollup(func(k RollupKey, c RollupCounts) {
		gauges++
		if k == ovf && (c.SampledPackets != 2 || c.SampledBytes != 200) {
			t.Errorf("overflow gauge %d/%d, want 2/200", c.SampledPackets, c.SampledBytes)
		}
	})
	if gauges != 3 {
		t.Errorf("Rollup reported %d groups, want 3", gauges)
	}
}

// TestLabelSetExpiry: a set without active flows expires once its last
// packet is older than the expiry; one with an active flow never does.
func TestLabelSetExpiry(t *testing.T) {
	enr := newFakeEnricher()
	enr.set("198.18.0.1", 64500, "")
	enr.set("198.18.0.2", 64501, "")
	tab := NewTable(Options{Enricher: enr, IdleTimeout: time.Hour, LabelSetExpiry: time.Minute, MaxLabelSets: 1})
	a := udp(1, uint64(time.Second))
	tab.Update(&a)
	tab.Flush(EndForced) // a's set has no flow left
	b := udp(2, uint64(time.Second))
	tab.Update(&b) // over the limit: overflow set
	if st := tab.LabelSetStats(); st.Sets != 2 || st.Overflowed != 1 {
		t.Fatalf("before expiry: %+v", st)
	}
	tab.Sweep(int64(time.Second + time.Minute)) // exactly the expiry: kept
	if st := tab.LabelSetStats(); st.Sets != 2 || st.Expired != 0 {
		t.Fatalf("at the expiry: %+v", st)
	}
	tab.Sweep(int64(time.Second+time.Minute) + 1)
	st := tab.LabelSetStats()
	if st.Sets != 1 || st.Expired != 1 {
		t.Fatalf("after the expiry: %+v, want the overflow set (active flow) kept and one set expired", st)
	}
	// Room again: a new label set is a normal one.
	c := udp(1, uint64(2*time.Minute))
	c.SrcPort = 7
	tab.Update(&c)
	got := totals(t, tab)
	if got[RollupKey{Ifindex: 2, Dir: datapath.Ingress, Proto: 17, SrcASN: 64500}] != [2]uint64{1, 100} {
		t.Fatalf("totals after re-creation %v", got)
	}
}
