// SPDX-License-Identifier: AGPL-3.0-only

package accuracy

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// ifaceCounters mirrors struct rfm_iface_counters (per CPU).
type ifaceCounters struct {
	Packets [3]uint64 // by datapath.Family
	Bytes   [3]uint64
}

// countersMap is the datapath's rfm_counters map, reached by map id.
// datapath.Counters only reports attached interfaces, not an injector's
// slot, so the test finds the map among this process's own BPF map file
// descriptors (never another process's rfm).
type countersMap struct{ m *ebpf.Map }

func openCounters() (*countersMap, error) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list /proc/self/fd: %w", err)
	}
	var found *ebpf.Map
	var foundID ebpf.MapID
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil || target != "anon_inode:bpf-map" {
			continue
		}
		id, ok := mapID(filepath.Join("/proc/self/fdinfo", fd.Name()))
		if !ok {
			continue
		}
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		info, err := m.Info()
		if err != nil || info.Name != "rfm_counters" {
			m.Close()
			continue
		}
		if found == nil {
			found, foundID = m, id
			continue
		}
		m.Close()
		if id != foundID { // not just another descriptor of the same map
			found.Close()
			return nil, fmt.Errorf("find rfm_counters: more than one datapath loaded in this process")
		}
	}
	if found == nil {
		return nil, fmt.Errorf("find rfm_counters: no such BPF map among this process's file descriptors")
	}
	return &countersMap{m: found}, nil
}

func mapID(fdinfo string) (ebpf.MapID, bool) {
	f, err := os.Open(fdinfo)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "map_id:"); ok {
			id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			return ebpf.MapID(id), err == nil
		}
	}
	return 0, false
}

// read sums the injector's counters (slot 0) over CPUs.
func (c *countersMap) read(dir datapath.Direction) (ifaceCounters, error) {
	var perCPU []ifaceCounters
	if err := c.m.Lookup(uint32(dir), &perCPU); err != nil {
		return ifaceCounters{}, fmt.Errorf("read rfm_counters slot 0 %s: %w", dir, err)
	}
	var sum ifaceCounters
	for _, v := range perCPU {
		for f := range sum.Packets {
			sum.Packets[f] += v.Packets[f]
			sum.Bytes[f] += v.Bytes[f]
		}
	}
	return sum, nil
}

func (c *countersMap) close() { c.m.Close() }
