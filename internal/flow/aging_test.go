// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"math/rand/v2"
	"testing"
	"time"
)

// A full table evicts exactly the flow with the oldest last-seen, against
// a model (a map of last-seen per flow), while the age queue is built on
// the first eviction, dropped by sweeps that leave the table under three
// quarters full and built again: events arrive out of order (last-seen
// is the newest event, not the latest to arrive), flows are IPv4 and
// IPv6, sweeps end idle flows (the model drops those older than the
// cutoff) and export active records in between.
func TestEvictionWithAgingMatchesModel(t *testing.T) {
	for _, size := range []int{1, 3, 16, 100} {
		rng := rand.New(rand.NewPCG(uint64(size), 11))
		tab := NewTable(Options{MaxFlows: size, IdleTimeout: time.Duration(40 << 16), ActiveTimeout: time.Duration(10 << 16)})
		model := map[Key]int64{}
		starts, stops := 0, 0
		for i := range 6000 {
			// Unique times, up to two steps out of order.
			ns := int64(i+8-rng.IntN(3))<<16 | int64(i)
			// Busy phases fill the table; in quiet ones most flows
			// idle out, so sweeps drop the age queue.
			hosts := 3 * size
			if i/500%2 == 1 {
				hosts = size/4 + 1
			}
			host := byte(rng.IntN(hosts))
			ev := udp(host, uint64(ns))
			if host%4 == 0 {
				ev.Src, ev.Dst = v6doc(uint64(host)), v6doc(1)
			}
			k := keyOfEvent(&ev)
			wasAging := tab.aging
			if _, ok := model[k]; !ok && len(model) == size {
				var oldest Key
				oldestNs := int64(1 << 62)
				for mk, last := range model {
					if last < oldestNs {
						oldest, oldestNs = mk, last
					}
				}
				delete(model, oldest)
			}
			model[k] = max(model[k], ns)
			tab.Update(&ev)
			if !wasAging && tab.aging {
				starts++
			}
			if i%97 == 96 {
				now := int64(i+8) << 16
				tab.Sweep(now)
				for mk, last := range model {
					if last < now-int64(tab.IdleTimeout()) {
						delete(model, mk)
					}
				}
				if wasAging && !tab.aging {
					stops++
				}
			}
			got := active(t, tab)
			if len(got) != len(model) {
				t.Fatalf("size %d step %d: %d active flows, model has %d", size, i, len(got), len(model))
			}
			for mk, last := range model {
				r, ok := got[mk]
				if !ok {
					t.Fatalf("size %d step %d: flow %v (last-seen %d) missing", size, i, mk, last)
				}
				if want := tab.clock.wall(last); !r.End.Equal(want) {
					t.Fatalf("size %d step %d: flow %v ends %v, want %v", size, i, mk, r.End, want)
				}
			}
		}
		if starts < 1 || (size >= 3 && (starts < 2 || stops < 1)) {
			t.Errorf("size %d: age queue built %d times and dropped %d: the test missed the transitions", size, starts, stops)
		}
	}
}

// The side tables hand out ids that stay valid until released and are
// reused after, against a model.
func TestSideTablesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	var pairs addrPairs
	var recs recordStates
	heldPairs := map[uint32][2][16]byte{}
	heldRecs := map[uint32]recordState{}
	for step := range 20000 {
		switch rng.IntN(4) {
		case 0:
			src, dst := v6doc(rng.Uint64()), v6doc(rng.Uint64())
			id := pairs.add(src, dst)
			if _, dup := heldPairs[id]; dup {
				t.Fatalf("step %d: pair id %d handed out twice", step, id)
			}
			heldPairs[id] = [2][16]byte{src, dst}
		case 1:
			for id := range heldPairs {
				pairs.release(id)
				delete(heldPairs, id)
				break
			}
		case 2:
			id := recs.add()
			if _, dup := heldRecs[id]; dup || id == 0 {
				t.Fatalf("step %d: record state id %d handed out twice or 0", step, id)
			}
			if recs.states[id] != (recordState{}) {
				t.Fatalf("step %d: record state %d not zero when handed out", step, id)
			}
			rs := recordState{startBoot: int64(step), prevPackets: uint64(step)}
			recs.states[id] = rs
			heldRecs[id] = rs
		case 3:
			for id := range heldRecs {
				recs.release(id)
				delete(heldRecs, id)
				break
			}
		}
		for id, want := range heldPairs {
			p := pairs.pairs[id]
			if [16]byte(p[:16]) != want[0] || [16]byte(p[16:]) != want[1] {
				t.Fatalf("step %d: pair %d changed", step, id)
			}
		}
		for id, want := range heldRecs {
			if recs.states[id] != want {
				t.Fatalf("step %d: record state %d changed", step, id)
			}
		}
	}
}
