// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Sampled packets wait in a per-CPU batch until the batch is full or its
// flush timer fires (bpf/rfm.c). These functions empty the batches from
// userspace, for shutdown and for tests that read events synchronously.

// flushFrame is the smallest packet BPF_PROG_TEST_RUN accepts for a TC
// program; rfm_flush does not look at it.
var flushFrame = make([]byte, 14)

// FlushBatches writes every CPU's partial batch to the ring now, by
// running rfm_flush on a thread pinned to each CPU in turn. A CPU this
// process may not run on (a restricted cpuset) is left to its timer;
// WaitBatches covers those.
func (d *Datapath) FlushBatches() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		return fmt.Errorf("flush batches: read CPU affinity: %w", err)
	}
	// Restore the thread's CPUs before it goes back to the Go scheduler.
	defer unix.SchedSetaffinity(0, &was)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("flush batches: %w", err)
	}
	for cpu := range cpus {
		var one unix.CPUSet
		one.Set(cpu)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			continue // offline or not ours: its timer flushes it
		}
		// 1 means a program on this CPU was mid-batch; it was preempted
		// by us, so it resumes when we yield.
		for try := 0; ; try++ {
			ret, err := d.flush.Run(&ebpf.RunOptions{Data: flushFrame})
			if err != nil {
				return fmt.Errorf("flush batch of CPU %d: %w", cpu, err)
			}
			if ret == 0 {
				break
			}
			if try == 100 {
				return fmt.Errorf("flush batch of CPU %d: still busy", cpu)
			}
			runtime.Gosched()
		}
	}
	return nil
}

// WaitBatches waits up to timeout for every CPU's batch to be empty, as
// it is once the programs are detached and the batches flushed or their
// timers fired.
func (d *Datapath) WaitBatches(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, d.batches.ValueSize())
	for {
		waiting := 0
		for cpu := uint32(0); cpu < d.batches.MaxEntries(); cpu++ {
			if err := d.batches.Lookup(cpu, buf); err != nil {
				return fmt.Errorf("read batch of CPU %d: %w", cpu, err)
			}
			waiting += int(binary.NativeEndian.Uint32(buf[0:4])) // rfm_batch.n
		}
		if waiting == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d sampled packets still in per-CPU batches after %s", waiting, timeout)
		}
		time.Sleep(min(d.batchFlush/4, 10*time.Millisecond))
	}
}
