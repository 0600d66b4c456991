// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
)

// flowIndex maps flow keys to arena slots. It replaces map[Key]int32 on
// the hot path: at 64k random flows BenchmarkUpdateBatch went from about
// 230 ns per event with the map to about 100 ns with this index, and to
// about 40 ns with the look-ahead of Table.updateGroup, which a Go map
// does not allow (its slot addresses are not visible).
//
//   - Open addressing with linear probing over a []uint32, at most half
//     full. A slot holds 9 hash bits (the tag) and the arena index + 1
//     (23 bits); 0 is empty. At 64k flows the slots take 512 KiB and a
//     lookup reads one cache line of them, then the one arena entry it
//     points to, where the full key is compared; a slot whose tag
//     matches by chance (1 in 512) costs a look at another entry. A Go
//     map with a 44-byte key reads a control word, a 48-byte slot and
//     then the entry: one more miss.
//   - The probe start (home) comes from other hash bits. Deletion shifts
//     later slots back (no tombstones) and growing rehashes: both find
//     a slot's home by hashing the key of its entry again, a few per
//     deletion. 8-byte slots holding 32 hash bits needed no such look,
//     and cost 8 bytes more per flow.
//   - The hash is seeded per table from the runtime's random source, so
//     colliding traffic cannot be computed in advance (the keys are
//     chosen by whoever sends packets through the router).
//
// It holds no pointers, so the garbage collector never scans it.
type flowIndex struct {
	slots []uint32
	mask  uint64 // len(slots) - 1; len is a power of two
	count int
	seed  [6]uint64
	// testHash, when set (by a test), is the hash keys were inserted
	// under, used instead of hash to find a slot's home again.
	testHash func(*Key) uint64
}

const (
	minIndexSlots = 1024
	idxBits       = 23 // arena index + 1 in a slot
	idxMask       = 1<<idxBits - 1
)

// Every arena slot of a full table must fit in a slot word.
const _ = uint(idxMask - MaxFlowsCeiling - 1)

func newFlowIndex(flows int) flowIndex {
	x := flowIndex{}
	for i := range x.seed {
		x.seed[i] = rand.Uint64() | 1
	}
	x.alloc(slotsFor(flows))
	return x
}

// slotsFor returns the table size that keeps flows at most half full.
func slotsFor(flows int) int {
	n := minIndexSlots
	for n/2 < flows {
		n *= 2
	}
	return n
}

func (x *flowIndex) alloc(n int) {
	x.slots = make([]uint32, n)
	x.mask = uint64(n - 1)
}

// homeHash is what an entry keeps of its key's hash h: the bits its home
// slot comes from.
func homeHash(h uint64) uint32 { return uint32(h >> 32) }

// slotWord is the slot content for arena slot idx under hash h.
func slotWord(h uint64, idx int32) uint32 { return uint32(h)>>idxBits<<idxBits | uint32(idx+1) }

// slotIdx is the arena slot of a non-empty slot word.
func slotIdx(w uint32) int32 { return int32(w&idxMask) - 1 }

// mix is the 64x64->128 multiply folded to 64 bits: a fast mixer whose
// output depends on every input bit.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hash returns a seeded 64-bit hash of the key fields: its upper 32 bits
// give the probe start, bits 23 to 31 the tag.
func (x *flowIndex) hash(k *Key) uint64 {
	s := &x.seed
	le := binary.LittleEndian
	meta := uint64(k.Ifindex) | uint64(k.SrcPort)<<32 | uint64(k.DstPort)<<48
	tail := uint64(k.Proto) | uint64(k.Dir)<<8 | uint64(k.TOS)<<16 | uint64(k.VLANOuter)<<24 | uint64(k.VLANInner)<<40 |
		uint64(b2u(k.Dropped))<<56
	h := mix(le.Uint64(k.Src[0:8])^s[0], le.Uint64(k.Src[8:16])^s[1]) ^
		mix(le.Uint64(k.Dst[0:8])^s[2], le.Uint64(k.Dst[8:16])^s[3]) ^
		mix(meta^s[4], tail^s[5])
	return mix(h, s[0]^s[5])
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// home is the first slot probed for a key whose homeHash is hh.
func (x *flowIndex) home(hh uint32) uint64 { return uint64(hh) & x.mask }

// find returns the arena slot holding key k with hash h, or -1.
func (x *flowIndex) find(h uint64, k *Key, a *arena, v6 *addrPairs) int32 {
	tag := uint32(h) >> idxBits
	for i := x.home(homeHash(h)); ; i = (i + 1) & x.mask {
		s := x.slots[i]
		if s == 0 {
			return -1
		}
		if s>>idxBits == tag {
			idx := slotIdx(s)
			if matches(a.at(idx), k, v6) {
				return idx
			}
		}
	}
}

// homeOf returns the homeHash of the key in the entry a slot word names.
func (x *flowIndex) homeOf(w uint32, a *arena, v6 *addrPairs) uint32 {
	k := storedKey(a.at(slotIdx(w)), v6)
	if x.testHash != nil {
		escapes := k // k itself stays on the stack
		return homeHash(x.testHash(&escapes))
	}
	return homeHash(x.hash(&k))
}

// insert adds arena slot idx under hash h. The key must not be present
// and is already stored in the slot (growing rehashes it).
func (x *flowIndex) insert(h uint64, idx int32, a *arena, v6 *addrPairs) {
	if (x.count+1)*2 > len(x.slots) {
		x.grow(a, v6)
	}
	x.put(slotWord(h, idx), homeHash(h))
	x.count++
}

func (x *flowIndex) put(word, hh uint32) {
	i := x.home(hh)
	for x.slots[i] != 0 {
		i = (i + 1) & x.mask
	}
	x.slots[i] = word
}

func (x *flowIndex) grow(a *arena, v6 *addrPairs) {
	old := x.slots
	x.alloc(2 * len(old))
	for _, w := range old {
		if w != 0 {
			x.put(w, x.homeOf(w, a, v6))
		}
	}
}

// remove deletes arena slot idx stored under hash h, shifting the rest of
// its probe run back so lookups never need tombstones.
func (x *flowIndex) remove(h uint64, idx int32, a *arena, v6 *addrPairs) {
	want := slotWord(h, idx)
	i := x.home(homeHash(h))
	for x.slots[i] != want {
		if x.slots[i] == 0 {
			return // not present; cannot happen for a consistent table
		}
		i = (i + 1) & x.mask
	}
	x.count--
	for {
		x.slots[i] = 0
		j := i
		for {
			j = (j + 1) & x.mask
			w := x.slots[j]
			if w == 0 {
				return
			}
			// The word at j may move to i only if its home is not in
			// the cyclic range (i, j]: a lookup starting from a home
			// in that range begins after i and would miss it.
			hm := x.home(x.homeOf(w, a, v6))
			if (j-hm)&x.mask >= (j-i)&x.mask {
				x.slots[i] = w
				i = j
				break
			}
		}
	}
}
