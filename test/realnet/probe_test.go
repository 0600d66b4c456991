// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/stepbrobd/rfm/test/lab"
)

// probeBuckets is the number of linear-length buckets; the last one
// holds every length of probeBuckets-1 bytes or more.
const probeBuckets = 2049

// Offsets in struct __sk_buff (include/uapi/linux/bpf.h).
const (
	skbData    = 76
	skbDataEnd = 80
)

// linearProbe is an independent TCX program that histograms each
// packet's linear length (skb->data_end - skb->data): a monitor that
// pulls or linearises packets changes this histogram for every program
// after it on the hook and for the rest of the stack.
type linearProbe struct {
	prog *ebpf.Program
	hist *ebpf.Map
	link link.Link
}

// newLinearProbe builds the probe with cilium/ebpf's assembler (no
// clang). Subtracting two packet pointers needs CAP_PERFMON (root).
func newLinearProbe(t testing.TB) *linearProbe {
	t.Helper()
	hist, err := ebpf.NewMap(&ebpf.MapSpec{Name: "rfmt_linear", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: probeBuckets})
	if err != nil {
		t.Fatalf("probe map: %v", err)
	}
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, skbData, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, skbDataEnd, asm.Word),
		asm.Sub.Reg(asm.R3, asm.R2),
		asm.JLE.Imm(asm.R3, probeBuckets-1, "store"),
		asm.Mov.Imm(asm.R3, probeBuckets-1),
		asm.StoreMem(asm.RFP, -4, asm.R3, asm.Word).WithSymbol("store"),
		asm.LoadMapPtr(asm.R1, hist.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("out"), // TCX_NEXT
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "rfmt_linear", Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
	if err != nil {
		hist.Close()
		t.Fatalf("probe program: %v", err)
	}
	p := &linearProbe{prog: prog, hist: hist}
	t.Cleanup(func() {
		if p.link != nil {
			p.link.Close()
		}
		prog.Close()
		hist.Close()
	})
	return p
}

// attach puts the probe last on dev's hook in ns (after rfm, if rfm is
// there) and checks it is last.
func (p *linearProbe) attach(t testing.TB, ns, dev string, at ebpf.AttachType) {
	t.Helper()
	idx := ifindexIn(t, ns, dev)
	err := lab.InNetns(ns, func() error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: p.prog, Attach: at, Anchor: link.Tail()})
		if err != nil {
			return err
		}
		p.link = l
		res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: at})
		if err != nil {
			return err
		}
		info, err := p.prog.Info()
		if err != nil {
			return err
		}
		id, _ := info.ID()
		if n := len(res.Programs); n == 0 || res.Programs[n-1].ID != id {
			return fmt.Errorf("probe is not the last program: %+v", res.Programs)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("attaching linear-length probe to %s %v in %s: %v", dev, at, ns, err)
	}
}

func (p *linearProbe) detach(t testing.TB) {
	t.Helper()
	if err := p.link.Close(); err != nil {
		t.Fatalf("detaching probe: %v", err)
	}
	p.link = nil
}

// histogram reads and clears the counts: linear length -> packets.
func (p *linearProbe) histogram(t testing.TB) map[int]uint64 {
	t.Helper()
	h := map[int]uint64{}
	for k := uint32(0); k < probeBuckets; k++ {
		var v uint64
		if err := p.hist.Lookup(k, &v); err != nil {
			t.Fatalf("probe histogram %d: %v", k, err)
		}
		if v != 0 {
			h[int(k)] = v
			if err := p.hist.Put(k, uint64(0)); err != nil {
				t.Fatalf("clearing probe histogram: %v", err)
			}
		}
	}
	return h
}

// formatHistogram renders length:count pairs in length order.
func formatHistogram(h map[int]uint64) string {
	keys := make([]int, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%d:%d ", k, h[k])
	}
	return strings.TrimSpace(b.String())
}
