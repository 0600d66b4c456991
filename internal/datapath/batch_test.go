// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pinTo runs the calling goroutine on one CPU until the test ends, so
// every BPF_PROG_TEST_RUN it makes fills that CPU's batch. It returns
// false if the process may not run there.
func pinTo(t *testing.T, cpu int) bool {
	t.Helper()
	var one unix.CPUSet
	one.Set(cpu)
	return unix.SchedSetaffinity(0, &one) == nil
}

// lockThread locks the test goroutine to its thread and restores the
// thread's CPUs when the test ends; it returns the CPUs allowed.
func lockThread(t *testing.T) unix.CPUSet {
	t.Helper()
	runtime.LockOSThread()
	var was unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.SchedSetaffinity(0, &was)
		runtime.UnlockOSThread()
	})
	return was
}

// pinToFirstCPU runs the test goroutine on the first CPU it may use,
// until the test ends, and returns that CPU.
func pinToFirstCPU(t *testing.T) int {
	t.Helper()
	allowed := lockThread(t)
	for cpu := 0; cpu < 1024; cpu++ {
		if allowed.IsSet(cpu) && pinTo(t, cpu) {
			return cpu
		}
	}
	t.Fatal("cannot pin the test to a CPU")
	return -1
}

// fillEveryCPU runs count(cpu) packets through the dir program on each
// CPU the test may use, each of another flow (so each is an event of
// its own), and returns how many it ran in all.
func fillEveryCPU(t *testing.T, tb *testbed, dir Direction, count func(cpu int) int) int {
	t.Helper()
	allowed := lockThread(t)
	total := 0
	for cpu := 0; cpu < 1024; cpu++ {
		if !allowed.IsSet(cpu) || !pinTo(t, cpu) {
			continue
		}
		for i := range count(cpu) {
			tb.run(t, dir, udpFlowFrame(i), 1)
		}
		total += count(cpu)
	}
	return total
}

// readAll reads events with ReadBatch into a buffer of bufLen until want
// have arrived or the deadline passes.
func readAll(t *testing.T, d *Datapath, want, bufLen int, deadline time.Duration) []Event {
	t.Helper()
	var out []Event
	buf := make([]Event, bufLen)
	end := time.Now().Add(deadline)
	for len(out) < want && time.Now().Before(end) {
		n, err := d.readNow(buf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:n]...)
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

// A full batch goes to the ring at once, as one record; a partial one
// does not until it is flushed. The consumer hands a record's events out
// across calls when its buffer is smaller than the batch. (Each packet
// is another flow: packets of one flow in a row share an event.)
func TestBatchFullWritesOneRecord(t *testing.T) {
	const batch = 16
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 16, BatchEvents: batch, BatchFlush: time.Hour})
	pinToFirstCPU(t)
	for i := range batch - 1 {
		tb.run(t, Ingress, udpFlowFrame(i), 1)
	}
	if got := tb.d.ring.availableBytes(); got != 0 {
		t.Fatalf("ring holds %d bytes before the batch is full, want 0", got)
	}
	tb.run(t, Ingress, udpFlowFrame(batch-1), 1)
	if got, want := tb.d.ring.availableBytes(), batch*EventSize+8; got != want {
		t.Fatalf("ring holds %d bytes after a full batch, want one record of %d", got, want)
	}
	evs := readAll(t, tb.d, batch, 5, time.Second) // 5 does not divide 16
	if len(evs) != batch {
		t.Fatalf("read %d events, want %d", len(evs), batch)
	}
	for i, e := range evs {
		if e.SrcPort != uint16(40000+i) || e.DstPort != 53 || e.Proto != 17 || e.Dir != Ingress || e.Segs != 1 {
			t.Fatalf("event %d: %+v", i, e)
		}
		if i > 0 && e.BootNs < evs[i-1].BootNs {
			t.Fatalf("event %d is older than event %d", i, i-1)
		}
	}
	if n := tb.d.DecodeErrors(); n != 0 {
		t.Fatalf("%d decode errors", n)
	}
}

// The flush timer writes a partial batch out by itself.
func TestBatchTimerFlushesPartialBatch(t *testing.T) {
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 16, BatchFlush: 5 * time.Millisecond})
	pinToFirstCPU(t)
	for i := range 3 {
		tb.run(t, Ingress, udp6FlowFrame(i), 1)
	}
	if evs := readAll(t, tb.d, 3, 64, 5*time.Second); len(evs) != 3 {
		t.Fatalf("%d of 3 events reached the ring without a flush from userspace", len(evs))
	}
	// Once the timer has fired, the batch is empty and the timer can be
	// armed again.
	for i := range 2 {
		tb.run(t, Egress, udp6FlowFrame(i), 1)
	}
	if evs := readAll(t, tb.d, 2, 64, 5*time.Second); len(evs) != 2 || evs[0].Dir != Egress {
		t.Fatalf("second partial batch: %d events, want 2 egress", len(evs))
	}
}

// FlushBatches empties every CPU's batch at once, each event exactly
// once, and WaitBatches then finds nothing waiting.
func TestFlushBatchesEveryCPU(t *testing.T) {
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 20, BatchFlush: time.Hour})
	want := fillEveryCPU(t, tb, Ingress, func(cpu int) int { return cpu + 3 }) // a different count per CPU
	if got := tb.d.ring.availableBytes(); got != 0 {
		t.Fatalf("ring holds %d bytes before the flush, want 0", got)
	}
	if err := tb.d.WaitBatches(10 * time.Millisecond); err == nil {
		t.Fatal("WaitBatches found the batches empty before the flush")
	}
	if err := tb.d.FlushBatches(); err != nil {
		t.Fatal(err)
	}
	if err := tb.d.WaitBatches(0); err != nil {
		t.Fatal(err)
	}
	if evs := readAll(t, tb.d, want+1, 64, 100*time.Millisecond); len(evs) != want {
		t.Fatalf("%d events after the flush, want %d", len(evs), want)
	}
}

// Drain, as at shutdown, hands out every event still in a batch and then
// ErrFlushed, without waiting for the flush timers.
func TestDrainEmptiesBatches(t *testing.T) {
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 16, BatchFlush: time.Hour})
	want := fillEveryCPU(t, tb, Egress, func(int) int { return 5 })
	if err := tb.d.Drain(); err != nil {
		t.Fatal(err)
	}
	got := 0
	evs := make([]Event, 3)
	for {
		n, err := tb.d.ReadBatch(evs)
		got += n
		if errors.Is(err, ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if got != want {
		t.Fatalf("%d events after Drain, want %d", got, want)
	}
}

// While a CPU's batch is busy (another program of that CPU interrupted
// in the middle of it), an event goes to the ring on its own instead of
// into the batch.
func TestBusyBatchFallsBackToSingleEvents(t *testing.T) {
	tb := newTestbedOpts(t, 1, Options{RingBufSize: 1 << 16, BatchFlush: time.Hour})
	cpu := pinToFirstCPU(t)
	setBusy := func(busy uint32) {
		t.Helper()
		// The whole element is rewritten, which also frees its timer;
		// timer_ready = 0 makes the next event set it up again.
		v := make([]byte, tb.d.batches.ValueSize())
		binary.NativeEndian.PutUint32(v[4:8], busy) // rfm_batch.busy
		if err := tb.d.batches.Put(uint32(cpu), v); err != nil {
			t.Fatal(err)
		}
	}
	setBusy(1)
	for i := range 3 {
		tb.run(t, Ingress, udpFlowFrame(i), 1)
	}
	if got, want := tb.d.ring.availableBytes(), 3*(EventSize+8); got != want {
		t.Fatalf("ring holds %d bytes with the batch busy, want %d (3 single-event records)", got, want)
	}
	setBusy(0)
	for i := range 2 {
		tb.run(t, Ingress, udpFlowFrame(3+i), 1)
	}
	if got, want := tb.d.ring.availableBytes(), 3*(EventSize+8); got != want {
		t.Fatalf("ring holds %d bytes, want the batch to keep the 2 new events", got)
	}
	if evs := tb.events(t); len(evs) != 5 {
		t.Fatalf("%d events, want 5", len(evs))
	}
}
