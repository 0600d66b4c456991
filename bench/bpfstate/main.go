// SPDX-License-Identifier: AGPL-3.0-only

// Command bpfstate prints what the kernel itself lists, for the leak
// checks of bench/churn.sh: the number of BPF links, programs and maps
// in the whole kernel (BPF_*_GET_NEXT_ID), and for each device named as
// an argument (in the namespace it runs in: use `ip netns exec`), the
// programs attached at its TCX ingress and egress (BPF_PROG_QUERY;
// Debian's bpftool 7.1 does not list TCX).
//
// Output is one "key value" pair a line.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

func main() {
	pid := flag.Int("pid", 0, "also count the kernel's links whose program this process holds, and its program and map ids")
	flag.Parse()
	if err := run(*pid, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "bpfstate:", err)
		os.Exit(1)
	}
}

func run(pid int, devs []string) error {
	var own map[uint64]bool
	if pid != 0 {
		var err error
		if own, err = heldIDs(pid); err != nil {
			return err
		}
	}
	links, ownLinks := 0, 0
	it := new(link.Iterator)
	for it.Next() {
		links++
		if info, err := it.Link.Info(); err == nil && own[uint64(info.Program)|progBit] {
			ownLinks++
		}
		it.Link.Close()
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("listing BPF links: %w", err)
	}
	progs, err := countIDs(func(id ebpf.ProgramID) (ebpf.ProgramID, error) { return ebpf.ProgramGetNextID(id) })
	if err != nil {
		return fmt.Errorf("listing BPF programs: %w", err)
	}
	maps, err := countIDs(func(id ebpf.MapID) (ebpf.MapID, error) { return ebpf.MapGetNextID(id) })
	if err != nil {
		return fmt.Errorf("listing BPF maps: %w", err)
	}
	fmt.Printf("kernel-links %d\nkernel-progs %d\nkernel-maps %d\n", links, progs, maps)
	if pid != 0 {
		nProg, nMap := 0, 0
		for id := range own {
			if id&progBit != 0 {
				nProg++
			} else {
				nMap++
			}
		}
		fmt.Printf("agent-links-in-kernel %d\nagent-prog-ids %d\nagent-map-ids %d\n", ownLinks, nProg, nMap)
	}
	for _, dev := range devs {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return fmt.Errorf("interface %s: %w", dev, err)
		}
		for _, at := range []struct {
			name string
			typ  ebpf.AttachType
		}{{"ingress", ebpf.AttachTCXIngress}, {"egress", ebpf.AttachTCXEgress}} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifi.Index, Attach: at.typ})
			if err != nil {
				return fmt.Errorf("BPF_PROG_QUERY %s %s: %w", dev, at.name, err)
			}
			fmt.Printf("tcx-%s %s %d\n", at.name, dev, len(res.Programs))
		}
	}
	return nil
}

func countIDs[ID ~uint32](next func(ID) (ID, error)) (int, error) {
	n := 0
	var id ID
	for {
		var err error
		id, err = next(id)
		if errors.Is(err, os.ErrNotExist) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// progBit marks a program id in the set heldIDs returns (the rest are
// map ids): the two id spaces overlap.
const progBit = 1 << 32

// heldIDs reads the ids of the BPF programs and maps that pid holds
// open, from /proc/PID/fdinfo (prog_id: and map_id: lines).
func heldIDs(pid int) (map[uint64]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading fds of pid %d: %w", pid, err)
	}
	ids := map[uint64]bool{}
	for _, e := range ents {
		data, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(data), "\n") {
			key, val, ok := strings.Cut(line, ":")
			if !ok || (key != "prog_id" && key != "map_id") {
				continue
			}
			id, err := strconv.ParseUint(strings.TrimSpace(val), 10, 32)
			if err != nil {
				continue
			}
			if key == "prog_id" {
				id |= progBit
			}
			ids[id] = true
		}
	}
	return ids, nil
}
