package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Injector runs crafted frames through an unattached program pair with
// BPF_PROG_TEST_RUN, so events and counters come from the real program
// without a network. Used by tests and benchmarks; its slot is taken
// from the pool like an attachment's.
type Injector struct {
	d     *Datapath
	slot  uint32
	coll  *ebpf.Collection
	progs [2]*ebpf.Program
}

// NewInjector loads a program pair for injection.
func (d *Datapath) NewInjector() (*Injector, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.freeSlots) == 0 {
		return nil, fmt.Errorf("injector: all interface slots in use")
	}
	slot := d.freeSlots[len(d.freeSlots)-1]
	coll, err := d.instance(slot)
	if err != nil {
		return nil, fmt.Errorf("injector: %w", err)
	}
	d.freeSlots = d.freeSlots[:len(d.freeSlots)-1]
	return &Injector{d: d, slot: slot, coll: coll,
		progs: [2]*ebpf.Program{coll.Programs[rfmProgRfmIngress], coll.Programs[rfmProgRfmEgress]}}, nil
}

// Run passes frame through the dir program repeat times.
func (in *Injector) Run(dir Direction, frame []byte, repeat int) error {
	if _, err := in.progs[dir].Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(repeat)}); err != nil {
		return fmt.Errorf("inject %d-byte frame: %w", len(frame), err)
	}
	return nil
}

// Close releases the programs and the slot.
func (in *Injector) Close() {
	in.coll.Close()
	in.d.mu.Lock()
	in.d.freeSlots = append(in.d.freeSlots, in.slot)
	in.d.mu.Unlock()
}
