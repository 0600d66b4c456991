// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Injector runs crafted frames through the Ethernet program pair with
// BPF_PROG_TEST_RUN, so events and counters come from the real programs
// without a network. Used by tests and benchmarks. A test run's packet
// is on loopback (ifindex 1), so the injector takes a counter slot for
// ifindex 1 like an attachment would; loopback cannot be attached
// meanwhile.
type Injector struct {
	d     *Datapath
	a     *attachment
	progs [2]*ebpf.Program
}

// injectIfindex is the interface of BPF_PROG_TEST_RUN's packets.
const injectIfindex = 1

// NewInjector takes a counter slot for injected packets.
func (d *Datapath) NewInjector() (*Injector, error) {
	d.attachMu.Lock()
	defer d.attachMu.Unlock()
	if d.isAttached(injectIfindex) {
		return nil, fmt.Errorf("injector: loopback is attached")
	}
	a, err := d.addSlot(injectIfindex, "inject", LinkEthernet)
	if err != nil {
		return nil, fmt.Errorf("injector: %w", err)
	}
	return &Injector{d: d, a: a, progs: d.progs[LinkEthernet]}, nil
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

// Close releases the slot.
func (in *Injector) Close() {
	in.d.attachMu.Lock()
	defer in.d.attachMu.Unlock()
	_ = in.d.removeSlot(in.a)
}
