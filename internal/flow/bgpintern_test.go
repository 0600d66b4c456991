// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"math/rand/v2"
	"testing"
)

// refTable against a model: random acquires and releases of a few values
// (so that ids are freed, reused, and the last-acquired shortcut is hit
// and goes stale), checking after each step that every held value has
// one id, that id gives the value back, no two held values share an id,
// and only held values are counted.
func TestRefTableModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	tab := newRefTable[flowPath]()
	value := func(n int) flowPath { return flowPath{in: uint32(n / 3), out: uint32(n % 3)} } // n 0: the zero path
	held := map[flowPath][]uint32{}                                                          // ids handed out, one per holder
	for step := range 20000 {
		n := rng.IntN(12)
		v := value(n)
		if rng.IntN(2) == 0 || len(held[v]) == 0 {
			id := tab.acquire(v)
			if v == (flowPath{}) {
				if id != 0 {
					t.Fatalf("step %d: the zero value got id %d, want 0", step, id)
				}
				continue
			}
			if ids := held[v]; len(ids) > 0 && ids[0] != id {
				t.Fatalf("step %d: %+v got id %d while held as %d", step, v, id, ids[0])
			}
			held[v] = append(held[v], id)
		} else {
			ids := held[v]
			tab.release(ids[len(ids)-1])
			held[v] = ids[:len(ids)-1]
			if len(held[v]) == 0 {
				delete(held, v)
			}
		}
		owner := map[uint32]flowPath{}
		for hv, ids := range held {
			id := ids[0]
			if id == 0 {
				t.Fatalf("step %d: %+v held under id 0", step, hv)
			}
			if other, ok := owner[id]; ok {
				t.Fatalf("step %d: id %d held by %+v and %+v", step, id, other, hv)
			}
			owner[id] = hv
			if got := tab.get(id); got != hv {
				t.Fatalf("step %d: get(%d) = %+v, want %+v", step, id, got, hv)
			}
		}
		if tab.len() != len(held) {
			t.Fatalf("step %d: len %d, want %d held values", step, tab.len(), len(held))
		}
	}
}
