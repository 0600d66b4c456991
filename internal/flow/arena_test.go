// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"reflect"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// A new table allocates room for a few flows, not for max_flows: room
// allocated up front counts as live heap, and the garbage collector lets
// as much garbage again accumulate before it collects.
func TestNewTableAllocatesLittle(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tab := NewTable(Options{MaxFlows: 1 << 16})
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(tab)
	// A 64k-flow table takes about 12 MiB once full; the start-up
	// allocation must be a small fraction of that.
	if got := after.TotalAlloc - before.TotalAlloc; got > 256<<10 {
		t.Fatalf("NewTable(MaxFlows: 65536) allocated %d bytes, want at most 256 KiB", got)
	}
}

// Slots keep their address while the arena grows, freed slots are reused
// before new ones, and reset keeps only the chunks asked for.
func TestArena(t *testing.T) {
	var a arena
	first := a.alloc()
	p := a.at(first)
	p.rate = 7
	for range 3 * chunkLen {
		a.alloc()
	}
	if a.at(first) != p || p.rate != 7 {
		t.Fatal("slot 0 moved or changed while the arena grew")
	}
	if a.len() != 3*chunkLen+1 || a.capacity() != 4*chunkLen {
		t.Fatalf("len/capacity = %d/%d, want %d/%d", a.len(), a.capacity(), 3*chunkLen+1, 4*chunkLen)
	}
	a.release(5)
	a.release(9)
	if got := a.alloc(); got != 9 {
		t.Fatalf("alloc after releasing 5 and 9 = %d, want 9", got)
	}
	if got := a.alloc(); got != 5 {
		t.Fatalf("second alloc = %d, want 5", got)
	}
	if got := a.alloc(); got != 3*chunkLen+1 {
		t.Fatalf("alloc with nothing free = %d, want %d", got, 3*chunkLen+1)
	}
	a.reset(chunkLen + 1)
	if a.len() != 0 || a.capacity() != 2*chunkLen {
		t.Fatalf("after reset(chunkLen+1): len/capacity = %d/%d, want 0/%d", a.len(), a.capacity(), 2*chunkLen)
	}
	if got := a.alloc(); got != 0 || a.at(0) != p {
		t.Fatalf("first alloc after reset = %d (same memory: %v), want 0 in the kept chunk", got, a.at(0) == p)
	}
}

// The entry's fields are ordered so that padding costs less than one
// alignment unit (a field added to Key or entry should keep it so).
func TestEntryPadding(t *testing.T) {
	typ := reflect.TypeFor[entry]()
	var fields uintptr
	for i := range typ.NumField() {
		fields += typ.Field(i).Type.Size()
	}
	align := uintptr(typ.Align())
	if want := (fields + align - 1) / align * align; typ.Size() != want {
		t.Errorf("entry is %d bytes; its fields take %d, %d with the tail padded", typ.Size(), fields, want)
	}
}

// An update reads and writes one cache line of the arena: the hot part
// is 64 bytes (and a chunk's hot array starts on a page, so each entry
// is one line); the cold part is 16.
func TestEntrySizes(t *testing.T) {
	if got := unsafe.Sizeof(entry{}); got != 64 {
		t.Errorf("entry is %d bytes, want 64 (one cache line)", got)
	}
	if got := unsafe.Sizeof(entryCold{}); got != 16 {
		t.Errorf("entryCold is %d bytes, want 16", got)
	}
	var a arena
	a.alloc()
	if addr := uintptr(unsafe.Pointer(a.at(0))); addr%64 != 0 {
		t.Errorf("a chunk's first entry is at %#x, not on a cache line", addr)
	}
}

// Chunks live outside the Go heap, where the collector does not look:
// nothing in them may be a pointer.
func TestArenaChunkHoldsNoPointers(t *testing.T) {
	var walk func(reflect.Type) bool
	walk = func(typ reflect.Type) bool {
		switch typ.Kind() {
		case reflect.Pointer, reflect.UnsafePointer, reflect.Slice, reflect.Map, reflect.Chan,
			reflect.Func, reflect.Interface, reflect.String:
			return true
		case reflect.Array:
			return walk(typ.Elem())
		case reflect.Struct:
			for i := range typ.NumField() {
				if walk(typ.Field(i).Type) {
					return true
				}
			}
		}
		return false
	}
	if walk(reflect.TypeFor[arenaChunk]()) {
		t.Fatal("arenaChunk holds a pointer, string, slice, map or interface: it must not live outside the Go heap")
	}
}

// A full table's chunks are mapped, not on the heap; reset gives their
// pages back but keeps them for reuse; a dropped table's mappings go.
func TestArenaChunksMapped(t *testing.T) {
	var a arena
	for range 4 * chunkLen {
		a.alloc()
	}
	if got, want := a.mem.mappedBytes(), 4*chunkBytes; got != want {
		t.Fatalf("mapped %d bytes for 4 chunks, want %d", got, want)
	}
	a.at(3 * chunkLen).rate = 9
	a.reset(chunkLen)
	if a.capacity() != chunkLen || len(a.spare) != 3 {
		t.Fatalf("after reset: capacity %d, %d spare chunks; want %d and 3", a.capacity(), len(a.spare), chunkLen)
	}
	for range 4 * chunkLen {
		a.alloc()
	}
	if got, want := a.mem.mappedBytes(), 4*chunkBytes; got != want {
		t.Fatalf("mapped %d bytes after refilling, want %d (spare chunks reused)", got, want)
	}
	for i := int32(chunkLen); i < 4*chunkLen; i++ {
		if a.at(i).rate != 0 {
			t.Fatalf("slot %d of a reused chunk reads rate %d, want a zeroed chunk", i, a.at(i).rate)
		}
	}

	maps := a.mem.maps
	a = arena{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		maps.mu.Lock()
		left := len(maps.list)
		maps.mu.Unlock()
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d chunk mappings still there after the arena was dropped", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
