// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// kernelNeed is one kernel feature the datapath cannot run without, and
// the Linux release that brought it.
type kernelNeed struct {
	what  string
	since string
	probe func() error
}

// probeKernel checks every kernel feature the datapath uses before
// anything is loaded or attached, so an older kernel fails with one line
// naming what is missing rather than a verifier log or a later
// attach error.
func probeKernel(spec *ebpf.CollectionSpec) error {
	helper := func(fn asm.BuiltinFunc) func() error {
		return func() error { return features.HaveProgramHelper(ebpf.SchedCLS, fn) }
	}
	needs := []kernelNeed{
		{"BPF ring buffer maps", "5.8", func() error { return features.HaveMapType(ebpf.RingBuf) }},
		{"bpf_ktime_get_boot_ns", "5.8", helper(asm.FnKtimeGetBootNs)},
		{"bpf_jiffies64", "5.5", helper(asm.FnJiffies64)},
		{"bpf_ringbuf_output", "5.8", helper(asm.FnRingbufOutput)},
		{"bpf_ringbuf_query", "5.8", helper(asm.FnRingbufQuery)},
		{"bpf_skb_load_bytes", "4.5", helper(asm.FnSkbLoadBytes)},
		{"bpf_timer", "5.15", helper(asm.FnTimerStart)},
		{"TCX links", "6.6", func() error { return probeTCX(spec) }},
		{"bpf_timer_start with BPF_F_TIMER_CPU_PIN", "6.7", func() error { return probeTimerPin(spec) }},
	}
	for _, n := range needs {
		err := n.probe()
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			// Without the privileges a probe cannot tell; loading the
			// datapath next reports what is missing, capabilities first.
			return nil
		}
		if err != nil {
			if errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("kernel lacks %s (Linux %s or newer): %w", n.what, n.since, err)
			}
			return fmt.Errorf("probe kernel for %s: %w", n.what, err)
		}
	}
	return nil
}

// probeTCX attaches the empty floor program to loopback's TCX ingress
// for a moment: the only sure way to know the kernel takes TCX links.
func probeTCX(spec *ebpf.CollectionSpec) error {
	prog, err := ebpf.NewProgram(spec.Programs[rfmProgRfmFloor])
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: 1, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return err
	}
	return l.Close()
}

// probeTimerPin runs rfm_probe_timer_pin, which starts a timer with
// BPF_F_TIMER_CPU_PIN; older kernels refuse the flag at run time.
func probeTimerPin(spec *ebpf.CollectionSpec) error {
	probe := spec.Copy()
	for name := range probe.Programs {
		if name != rfmProgRfmProbeTimerPin {
			delete(probe.Programs, name)
		}
	}
	for name := range probe.Maps {
		// Keep the probe's map and the sections holding the program's
		// constants (.rodata); the datapath's maps are not needed.
		if name != rfmMapRfmProbeTimers && !strings.HasPrefix(name, ".") {
			delete(probe.Maps, name)
		}
	}
	coll, err := ebpf.NewCollection(probe)
	if err != nil {
		return err
	}
	defer coll.Close()
	ret, err := coll.Programs[rfmProgRfmProbeTimerPin].Run(&ebpf.RunOptions{Data: make([]byte, 14)})
	if err != nil {
		return err
	}
	if ret != 0 {
		return fmt.Errorf("step %d refused: %w", ret, ebpf.ErrNotSupported)
	}
	return nil
}
