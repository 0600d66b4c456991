// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestConsumerWakeups checks when the datapath wakes a reader sleeping
// on the ring: once when a record makes the backlog cross wakeup_bytes,
// not for the records that follow it, and again after
// RFM_REWAKE_RECORDS (16) of one CPU's records above the threshold. An
// edge-triggered epoll on the ring reports exactly the wakeups:
// readiness alone (data in the ring) does not wake it again. The flush
// timer is set far out, so every record is a full batch.
func TestConsumerWakeups(t *testing.T) {
	const (
		ringSize = 1 << 20
		batch    = MaxBatchEvents
		record   = batch*EventSize + 8 // ring bytes per record, with its header
		rewake   = 16                  // RFM_REWAKE_RECORDS
	)
	tb := newTestbedOpts(t, 1, Options{RingBufSize: ringSize, BatchEvents: batch, BatchFlush: time.Hour})
	below := int(tb.d.wakeupBytes) / record // records that stay below wakeup_bytes

	// Batches and the per-CPU rewake count only add up on one CPU.
	pinToFirstCPU(t)

	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(epfd)
	ringFD := tb.d.shared[rfmMapRfmEvents].FD()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(ringFD)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, ringFD, &ev); err != nil {
		t.Fatal(err)
	}
	// wakeups waits up to timeout for a wakeup and reports whether one came.
	wakeups := func(timeout time.Duration) bool {
		evs := make([]unix.EpollEvent, 1)
		for {
			n, err := unix.EpollWait(epfd, evs, int(timeout.Milliseconds()))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			return n > 0
		}
	}
	// inject adds records full batches of events on this CPU, each
	// packet of another flow than the two before (one event each).
	flow := 0
	inject := func(records int) {
		for range records * batch {
			tb.run(t, Ingress, udpFlowFrame(flow%3), 1) // one run per event: the library restarts interrupted multi-repeat runs
			flow++
		}
	}

	inject(below)
	if wakeups(100 * time.Millisecond) {
		t.Fatalf("woken below the threshold (%d records)", below)
	}
	if got := tb.d.ring.availableBytes(); got != below*record {
		t.Fatalf("ring holds %d bytes, want %d full-batch records of %d", got, below, record)
	}
	inject(1)
	if !wakeups(5 * time.Second) {
		t.Fatalf("not woken when the backlog crossed the threshold (%d records)", below+1)
	}
	inject(rewake - 1)
	if wakeups(100 * time.Millisecond) {
		t.Fatalf("woken again within %d records above the threshold", rewake-1)
	}
	inject(1)
	if !wakeups(5 * time.Second) {
		t.Fatalf("not woken again after %d records above the threshold", rewake)
	}
	if got, want := len(tb.events(t)), (below+1+rewake)*batch; got != want {
		t.Fatalf("ring holds %d events, want %d", got, want)
	}
}
