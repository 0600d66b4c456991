// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// lockedByDescriptors is what the kernel charges for the BPF maps among
// the process's file descriptors, each map once: an independent way to
// the figure LockedMemory computes from the datapath's own maps.
func lockedByDescriptors(t *testing.T) uint64 {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var total uint64
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err != nil || target != "anon_inode:bpf-map" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue
		}
		var id, memlock string
		for line := range bytes.Lines(info) {
			k, v, _ := bytes.Cut(bytes.TrimSpace(line), []byte(":"))
			switch string(k) {
			case "map_id":
				id = string(bytes.TrimSpace(v))
			case "memlock":
				memlock = string(bytes.TrimSpace(v))
			}
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		n, err := strconv.ParseUint(memlock, 10, 64)
		if err != nil {
			t.Fatalf("fd %s: memlock %q", e.Name(), memlock)
		}
		total += n
	}
	return total
}

// LockedMemory counts every map the datapath holds, shared maps and
// counter chunks, as the kernel charges them: the same figure as the
// scan of all descriptors, after loading and with three chunks of
// interfaces attached, and the chunks' memory gone again once detached.
func TestLockedMemoryMatchesDescriptors(t *testing.T) {
	requireRoot(t)
	inNewNetns(t, func() {
		before := lockedByDescriptors(t)
		d, err := Load(Options{RingBufSize: 1 << 16})
		if err != nil {
			panic(err)
		}
		defer d.Close()
		check := func(when string) uint64 {
			got, err := d.LockedMemory()
			if err != nil {
				panic(fmt.Sprintf("%s: %v", when, err))
			}
			if want := lockedByDescriptors(t) - before; got != want {
				panic(fmt.Sprintf("%s: LockedMemory %d, descriptors say %d", when, got, want))
			}
			return got
		}
		loaded := check("after Load")
		links, err := addVeths("lm", 3*ChunkInterfaces/2, 0) // 96 pairs: 192 interfaces, 3 chunks
		if err != nil {
			panic(err)
		}
		for _, l := range links {
			if err := d.Attach(l.Attrs().Index, l.Attrs().Name); err != nil {
				panic(err)
			}
		}
		if attached := check("with 192 interfaces"); attached <= loaded {
			panic(fmt.Sprintf("locked memory %d with 3 chunks, not above %d after Load", attached, loaded))
		}
		for _, l := range links {
			if err := d.Detach(l.Attrs().Index); err != nil {
				panic(err)
			}
		}
		check("after detaching all")
	})
}
