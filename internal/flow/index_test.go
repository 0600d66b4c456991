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
			// Homes are 1021..1023 and 0 of a 1024-slot table: long
			// runs that wrap. Tags (bits 23-31) differ with the
			// source port's low bits, so some keys share a tag.
			home := uint64(k.SrcPort)<<10 | uint64(1021+int(k.SrcPort)%4)&1023
			return home<<32 | uint64(k.SrcPort%64)<<idxBits
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 5))
			x := newFlowIndex(0)
			x.testHash = func(k *Key) uint64 { return tc.hash(&x, k) }
			var entries arena
			var v6 addrPairs
			model := map[Key]int32{}
			for step := range 20000 {
				k := Key{SrcPort: uint16(rng.IntN(450)), Proto: 17}
				k.Src[15] = byte(rng.IntN(2))
				if rng.IntN(2) == 0 { // IPv4, stored with 4-byte addresses
					k.Src, k.Dst = v4mapped(198, 18, 0, k.Src[15]), v4mapped(198, 19, 0, 1)
				}
				h := tc.hash(&x, &k)
				got := x.find(h, &k, &entries, &v6)
				want, ok := model[k]
				if !ok {
					want = -1
				}
				if got != want {
					t.Fatalf("step %d: find(%v) = %d, want %d", step, k, got, want)
				}
				if ok {
					x.remove(h, want, &entries, &v6)
					delete(model, k)
					entries.release(want)
					continue
				}
				idx := entries.alloc()
				storeKey(entries.at(idx), &k, &v6)
				x.insert(h, idx, &entries, &v6)
				model[k] = idx
				if x.count != len(model) {
					t.Fatalf("step %d: count = %d, want %d", step, x.count, len(model))
				}
			}
			for k, want := range model {
				if got := x.find(tc.hash(&x, &k), &k, &entries, &v6); got != want {
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

// A stored key matches exactly the key it was stored from, and storing
// and rebuilding gives the key back, for IPv4 (4-byte addresses), IPv6
// and mixed or v4-compatible forms (16-byte addresses).
func TestStoredKeyMatches(t *testing.T) {
	v4 := Key{Ifindex: 2, SrcPort: 3, DstPort: 4, Proto: 6, Dir: 1, TOS: 0xb8, VLANOuter: 10, VLANInner: 20}
	v4.Src, v4.Dst = v4mapped(198, 18, 0, 1), v4mapped(198, 19, 0, 2)
	v6 := v4
	v6.Src, v6.Dst = v6doc(1), v6doc(2)
	mixed := v4
	mixed.Dst = v6doc(2)
	compat := v4
	compat.Src[10], compat.Src[11] = 0, 0 // ::198.18.0.1, not v4-mapped
	variants := []func(*Key){
		func(k *Key) { k.Src[0]++ }, func(k *Key) { k.Src[15]++ },
		func(k *Key) { k.Dst[7]++ }, func(k *Key) { k.Dst[8]++ }, func(k *Key) { k.Dst[15]++ },
		func(k *Key) { k.Src[11] = 0 }, func(k *Key) { k.Dst[10] = 0 },
		func(k *Key) { k.Ifindex++ }, func(k *Key) { k.SrcPort++ }, func(k *Key) { k.DstPort++ },
		func(k *Key) { k.Proto++ }, func(k *Key) { k.Dir ^= 1 }, func(k *Key) { k.Dropped = !k.Dropped },
		func(k *Key) { k.TOS++ }, func(k *Key) { k.VLANOuter++ }, func(k *Key) { k.VLANInner++ },
		func(k *Key) { k.Src, k.Dst = k.Dst, k.Src },
	}
	var pairs addrPairs
	for _, base := range []Key{v4, v6, mixed, compat, {}} {
		for _, dropped := range []bool{false, true} {
			base.Dropped = dropped
			var e entry
			storeKey(&e, &base, &pairs)
			if got := storedKey(&e, &pairs); got != base {
				t.Fatalf("stored %+v, rebuilt %+v", base, got)
			}
			if !matches(&e, &base, &pairs) {
				t.Fatalf("%+v does not match itself", base)
			}
			for i, mutate := range variants {
				o := base
				mutate(&o)
				if o != base && matches(&e, &o, &pairs) {
					t.Errorf("key %+v variant %d (%+v) matches", base, i, o)
				}
			}
		}
	}
}
