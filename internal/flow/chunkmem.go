// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// chunkBytes is the size of one arena chunk's mapping (a whole number of
// pages: 80 KiB).
const chunkBytes = int(unsafe.Sizeof(arenaChunk{}))

// chunkMem owns the mappings of an arena's chunks. The arena holds it by
// pointer; when the arena's owner becomes unreachable a cleanup unmaps
// them, so tables that are dropped (tests make many) do not leak.
type chunkMem struct {
	maps *chunkMaps
}

type chunkMaps struct {
	mu   sync.Mutex
	list map[*arenaChunk][]byte // nil value: a chunk on the Go heap
}

// newChunk returns a zeroed chunk, mapped outside the Go heap; on the
// heap if the kernel refuses the mapping (as new would then fail too,
// this only keeps the table working where mmap is restricted).
func (a *arena) newChunk() *arenaChunk {
	if a.mem == nil {
		a.mem = &chunkMem{maps: &chunkMaps{list: map[*arenaChunk][]byte{}}}
		runtime.AddCleanup(a.mem, (*chunkMaps).unmapAll, a.mem.maps)
	}
	b, err := unix.Mmap(-1, 0, chunkBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	var c *arenaChunk
	if err != nil {
		b, c = nil, new(arenaChunk)
	} else {
		c = (*arenaChunk)(unsafe.Pointer(unsafe.SliceData(b)))
	}
	m := a.mem.maps
	m.mu.Lock()
	m.list[c] = b
	m.mu.Unlock()
	return c
}

// release gives c's pages back to the kernel; c stays mapped and reads
// as zeros, ready to be used again.
func (m *chunkMem) release(c *arenaChunk) {
	if m == nil {
		return
	}
	m.maps.mu.Lock()
	b := m.maps.list[c]
	m.maps.mu.Unlock()
	if b != nil {
		_ = unix.Madvise(b, unix.MADV_DONTNEED)
	} else {
		*c = arenaChunk{}
	}
}

// mappedBytes is the size of every chunk mapped outside the Go heap.
func (m *chunkMem) mappedBytes() int {
	if m == nil {
		return 0
	}
	m.maps.mu.Lock()
	defer m.maps.mu.Unlock()
	n := 0
	for _, b := range m.maps.list {
		n += len(b)
	}
	return n
}

func (m *chunkMaps) unmapAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for c, b := range m.list {
		if b != nil {
			_ = unix.Munmap(b)
		}
		delete(m.list, c)
	}
}
