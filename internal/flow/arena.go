// SPDX-License-Identifier: AGPL-3.0-only

package flow

// arena holds the flow entries in fixed-size chunks, allocated as the
// table fills. One slice sized up front for the default 65,536 flows
// was resident only as far as it was touched, but the garbage collector
// counted all of it as live heap and let that much garbage pile up
// before collecting: the agent's anonymous memory then grew by up to the
// table's full size under allocation-heavy work such as interface churn
// (see docs/performance.md). Growing one slice by append instead would
// copy the whole table under the lock and briefly hold both copies.
// Chunks are never moved, so a slot's address is stable.
//
// A slot is two parts in two arrays of its chunk: the 64-byte entry that
// every update reads and writes (one cache line: a chunk's arrays are
// page aligned, being larger than 32 KiB) and the 16-byte entryCold that
// creating, ending and reporting a flow use. One 80-byte struct would
// put the hot part of three entries in four across two lines.
//
// Slot i is chunks[i>>chunkShift].hot[i&chunkMask]: the chunk pointers
// of a 64k-flow table fit in one cache line pair, so the lookup costs
// one L1 load more than a flat slice.
//
// Chunks are mapped outside the Go heap (chunkmem.go). They hold no
// pointers, so the collector has nothing to find in them, and on its heap
// they only raised its goal: at GOGC 50 the heap may grow to 1.5 times
// what is live before a collection, so a 5 MiB table let 2.5 MiB of
// garbage from scrapes stay resident next to it. Mapped, the table costs
// exactly its pages.
type arena struct {
	chunks []*arenaChunk
	n      int     // slots handed out so far; slots >= n are unused
	free   []int32 // slots given back, reused before n grows
	// spare are chunks reset dropped, their pages given back to the
	// kernel (they read as zeros again), reused before new ones are
	// mapped.
	spare []*arenaChunk
	mem   *chunkMem // every chunk's mapping; unmapped with the arena
}

type arenaChunk struct {
	hot  [chunkLen]entry
	cold [chunkLen]entryCold
}

const (
	chunkShift = 10
	chunkLen   = 1 << chunkShift // 1024 slots, 80 KiB
	chunkMask  = chunkLen - 1
)

// at returns the hot part of slot i, which must be below len.
func (a *arena) at(i int32) *entry { return &a.chunks[uint32(i)>>chunkShift].hot[uint32(i)&chunkMask] }

// cold returns the cold part of slot i, which must be below len.
func (a *arena) cold(i int32) *entryCold {
	return &a.chunks[uint32(i)>>chunkShift].cold[uint32(i)&chunkMask]
}

// len is the number of slots handed out, live or free; scans go up to it.
func (a *arena) len() int { return a.n }

// alloc returns a free slot, reusing given-back ones first.
func (a *arena) alloc() int32 {
	if n := len(a.free); n > 0 {
		i := a.free[n-1]
		a.free = a.free[:n-1]
		return i
	}
	if a.n == len(a.chunks)*chunkLen {
		var c *arenaChunk
		if k := len(a.spare); k > 0 {
			c = a.spare[k-1]
			a.spare = a.spare[:k-1]
		} else {
			c = a.newChunk()
		}
		a.chunks = append(a.chunks, c)
	}
	a.n++
	return int32(a.n - 1)
}

// release gives slot i back for reuse.
func (a *arena) release(i int32) { a.free = append(a.free, i) }

// reset forgets every slot, keeping the chunks that hold the first keep
// slots (a table that emptied after a flood gives the rest's pages back).
func (a *arena) reset(keep int) {
	k := min((keep+chunkLen-1)/chunkLen, len(a.chunks))
	for _, c := range a.chunks[k:] {
		a.mem.release(c)
		a.spare = append(a.spare, c)
	}
	clear(a.chunks[k:])
	a.chunks = a.chunks[:k]
	a.n = 0
	a.free = nil
}

// capacity is the number of slots the chunks in use hold.
func (a *arena) capacity() int { return len(a.chunks) * chunkLen }
