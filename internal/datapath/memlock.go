// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// LockedMemory is the memlock the kernel reports for the BPF maps the
// datapath holds, each map once: kernel memory that only closing them
// gives back. Finding the same figure by scanning the process's file
// descriptors costs a readlink per descriptor, and every attached
// interface holds two (its TCX links): at 2,000 interfaces that scan
// was most of a scrape's CPU. This costs a few calls per map instead.
//
// It holds mu, as Counters does, so that no chunk is closed under it
// (dropEmptyChunks takes a chunk out under mu before closing it).
func (d *Datapath) LockedMemory() (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := make(map[ebpf.MapID]bool, len(d.shared)+len(d.chunks))
	var total uint64
	add := func(m *ebpf.Map) error {
		info, err := m.Info()
		if err != nil {
			return fmt.Errorf("locked memory of map %s: %w", m, err)
		}
		id, ok := info.ID()
		if !ok {
			return fmt.Errorf("locked memory of map %s: the kernel reports no id", m)
		}
		if seen[id] {
			return nil
		}
		seen[id] = true
		memlock, ok := info.Memlock()
		if !ok {
			return fmt.Errorf("locked memory of map %s: the kernel reports no memlock", m)
		}
		total += memlock
		return nil
	}
	for _, m := range d.shared {
		if err := add(m); err != nil {
			return 0, err
		}
	}
	for _, m := range d.chunks {
		if err := add(m); err != nil {
			return 0, err
		}
	}
	if d.spill != nil {
		if err := d.spill.withCurrent(add); err != nil {
			return 0, err
		}
	}
	return total, nil
}
