// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
)

// spillStart is how many interfaces the first spill hash holds. Entries
// spill only when two attached interfaces' ifindexes are equal modulo
// ifaceTable, so most nodes never use one; 1,024 costs 16 KiB. A
// variable so that a test can make the table grow.
var spillStart = 1024

// spillTable is the ifindex -> slot hash for interfaces whose
// rfm_iface_slots entry another interface holds. It lives in the
// one-element map of maps rfm_iface_spill, so when it is full a copy
// twice its size replaces it in one update: the programs see either the
// old hash or the new one, each holding every spilled interface. The
// caller serialises its use (Datapath.attachMu).
type spillTable struct {
	outer   *ebpf.Map         // rfm_iface_spill
	spec    *ebpf.MapSpec     // the inner hash
	entries map[uint32]uint32 // what current holds, to copy on growth
	// mu guards current against being closed under LockedMemory, which
	// does not take attachMu.
	mu      sync.Mutex
	current *ebpf.Map
}

func newSpillTable(outer *ebpf.Map, outerSpec *ebpf.MapSpec) (*spillTable, error) {
	if outerSpec.InnerMap == nil {
		return nil, errors.New("rfm_iface_spill: no inner map in the BPF object")
	}
	s := &spillTable{outer: outer, spec: outerSpec.InnerMap.Copy(), entries: map[uint32]uint32{}}
	if err := s.replace(spillStart); err != nil {
		return nil, err
	}
	return s, nil
}

// replace installs a new hash of size entries holding s.entries.
func (s *spillTable) replace(size int) error {
	spec := s.spec.Copy()
	spec.MaxEntries = uint32(size)
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("create interface spill table of %d entries: %w", size, err)
	}
	for ifindex, slot := range s.entries {
		if err := m.Put(ifindex, slot); err != nil {
			m.Close()
			return fmt.Errorf("copy into interface spill table: %w", err)
		}
	}
	if err := s.outer.Put(uint32(0), m); err != nil {
		m.Close()
		return fmt.Errorf("install interface spill table of %d entries: %w", size, err)
	}
	s.mu.Lock()
	old := s.current
	s.current = m
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// put adds ifindex, growing the hash first when it is full.
func (s *spillTable) put(ifindex, slot uint32) error {
	if len(s.entries) >= int(s.current.MaxEntries()) {
		if err := s.replace(2 * int(s.current.MaxEntries())); err != nil {
			return err
		}
	}
	if err := s.current.Put(ifindex, slot); err != nil {
		return err
	}
	s.entries[ifindex] = slot
	return nil
}

func (s *spillTable) delete(ifindex uint32) error {
	if err := s.current.Delete(ifindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	delete(s.entries, ifindex)
	return nil
}

// size is how many entries the current hash can hold.
func (s *spillTable) size() int { return int(s.current.MaxEntries()) }

// withCurrent runs f on the current hash, which stays open meanwhile.
func (s *spillTable) withCurrent(f func(*ebpf.Map) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return nil
	}
	return f(s.current)
}

func (s *spillTable) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil {
		s.current.Close()
		s.current = nil
	}
}
