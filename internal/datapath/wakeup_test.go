package datapath

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestConsumerWakeups checks when the datapath wakes a reader sleeping
// on the ring: once when the backlog crosses wakeup_bytes, not for the
// events that follow it, and again after RFM_REWAKE_EVENTS (1024) of
// one CPU's events above the threshold. An edge-triggered epoll on the
// ring reports exactly the wakeups: readiness alone (data in the ring)
// does not wake it again.
func TestConsumerWakeups(t *testing.T) {
	const (
		ringSize = 1 << 20
		slot     = 64   // ring bytes per event: 56-byte event + 8-byte header
		window   = 4    // events above the threshold that still wake (RFM_WAKEUP_WINDOW)
		rewake   = 1024 // RFM_REWAKE_EVENTS
	)
	tb := newTestbedRing(t, 1, ringSize)
	threshold := int(tb.d.wakeupBytes) / slot // events that reach wakeup_bytes
	frame := benchFrames()[0].frame           // IPv4 UDP: one event per run

	// The per-CPU rewake count only adds up on one CPU.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var was, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &was); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &was)
	for cpu := 0; cpu < 1024; cpu++ {
		if was.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}

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
	inject := func(n int) {
		for range n {
			tb.run(t, Ingress, frame, 1) // one run per event: the library restarts interrupted multi-repeat runs
		}
	}

	inject(threshold - 1)
	if wakeups(100 * time.Millisecond) {
		t.Fatalf("woken below the threshold (%d events)", threshold-1)
	}
	inject(1)
	if !wakeups(5 * time.Second) {
		t.Fatalf("not woken when the backlog reached the threshold (%d events)", threshold)
	}
	// The rest of the window also wakes; take those wakeups.
	inject(window)
	for wakeups(200 * time.Millisecond) {
	}
	// One event of this CPU above the window is already counted.
	inject(rewake - 2)
	if wakeups(100 * time.Millisecond) {
		t.Fatalf("woken again within %d events above the threshold", rewake-1)
	}
	inject(1)
	if !wakeups(5 * time.Second) {
		t.Fatalf("not woken again after %d events above the threshold", rewake)
	}
	if got := len(tb.events(t)); got != threshold+window+rewake-1 {
		t.Fatalf("ring holds %d events, want %d", got, threshold+window+rewake-1)
	}
}
