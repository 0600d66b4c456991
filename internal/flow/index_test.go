// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"math/rand/v2"
	"testing"
)

// TestFlowIndexModel checks insert, find and remove against a Go map,
// with real hashes (random keys, several grows) and with crafted hashes
// that pile every key onto a few home slots, including the wrap-around at
// the end of the slot array, so backward-shift deletion is exercised.
func TestFlowIndexModel(t *testing.T) {
	tests := []struct {
		name string
		hash func(x *flowIndex, k *Key) uint64
	}{
		{"seeded hash", func(x *flowIndex, k *Key) uint64 { return x.hash(k) }},
		{"colliding homes", func(x *flowIndex, k *Key) uint64 {
			// Tag bits differ per key (src port), homes are 1021..1023
			// and 0 of a 1024-slot table: long runs that wrap.
			tag := uint64(k.SrcPort)<<10 | uint64(1021+int(k.SrcPort)%4)&1023
			return tag << 32
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 5))
			x := newFlowIndex(0)
			var entries arena
			model := map[Key]int32{}
			for step := range 20000 {
				k := Key{SrcPort: uint16(rng.IntN(450)), Proto: 17}
				k.Src[15] = byte(rng.IntN(2))
				h := tc.hash(&x, &k)
				got := x.find(h, &k, &entries)
				want, ok := model[k]
				if !ok {
					want = -1
				}
				if got != want {
					t.Fatalf("step %d: find(%v) = %d, want %d", step, k, got, want)
				}
				if ok {
					x.remove(h, want)
					delete(model, k)
					entries.release(want)
					continue
				}
				idx := entries.alloc()
				entries.at(idx).key = k
				x.insert(h, idx)
				model[k] = idx
				if x.count != len(model) {
					t.Fatalf("step %d: count = %d, want %d", step, x.count, len(model))
				}
			}
			for k, want := range model {
				if got := x.find(tc.hash(&x, &k), &k, &entries); got != want {
					t.Fatalf("final find(%v) = %d, want %d", k, got, want)
				}
			}
		})
	}
}

func TestFlowIndexSeedsDiffer(t *testing.T) {
	a, b := newFlowIndex(0), newFlowIndex(0)
	k := Key{SrcPort: 1}
	if a.hash(&k) == b.hash(&k) {
		t.Fatal("two tables hash a key alike: the seed is not random")
	}
}

func TestSameKey(t *testing.T) {
	base := Key{Ifindex: 2, SrcPort: 3, DstPort: 4, Proto: 6, Dir: 1}
	base.Src[15], base.Dst[15] = 1, 2
	variants := []func(*Key){
		func(k *Key) { k.Src[0]++ }, func(k *Key) { k.Src[15]++ },
		func(k *Key) { k.Dst[7]++ }, func(k *Key) { k.Dst[8]++ },
		func(k *Key) { k.Ifindex++ }, func(k *Key) { k.SrcPort++ }, func(k *Key) { k.DstPort++ },
		func(k *Key) { k.Proto++ }, func(k *Key) { k.Dir = 0 },
	}
	b := base
	if !sameKey(&base, &b) {
		t.Fatal("sameKey(k, k) = false")
	}
	for i, mutate := range variants {
		o := base
		mutate(&o)
		if sameKey(&base, &o) || sameKey(&o, &base) {
			t.Errorf("variant %d: sameKey reports different keys equal", i)
		}
	}
}
