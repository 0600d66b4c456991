// SPDX-License-Identifier: AGPL-3.0-only

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
	coll, err := d.instance(slot, LinkEthernet)
	if err != nil {
		return nil, fmt.Errorf("injector: %w", err)
	}
	d.freeSlots = d.freeSlots[:len(d.freeSlots)-1]
	return &Injector{d: d, slot: slot, coll: coll,
		progs: [2]*ebpf.Program{coll.Programs[rfmProgRfmIngress], coll.Programs[rfmProgRfmEgress]}}, nil
}

// Run passes frame through the dir program exactly repeat times. Its
// sampled events wait in the running CPU's batch like any others: they
// reach the ring within the batch flush interval, or at once after
// FlushBatches or Drain. It runs one repetition per BPF_PROG_TEST_RUN
// call: a multi-repetition call interrupted by a signal (the Go
// runtime's preemption, under load) is restarted from the beginning by
// the library, which would run some repetitions twice and break exact
// counts.
func (in *Injector) Run(dir Direction, frame []byte, repeat int) error {
	opts := &ebpf.RunOptions{Data: frame, Repeat: 1}
	for i := 0; i < repeat; i++ {
		if _, err := in.progs[dir].Run(opts); err != nil {
			return fmt.Errorf("inject %d-byte frame: %w", len(frame), err)
		}
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
