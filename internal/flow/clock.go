// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// BootNow returns CLOCK_BOOTTIME in nanoseconds, the clock the datapath
// stamps events with (bpf_ktime_get_boot_ns). Unlike CLOCK_MONOTONIC it
// keeps counting while the machine is suspended, so the two never drift.
func BootNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		// CLOCK_BOOTTIME exists on every kernel that can run the
		// datapath; 0 makes every idle cutoff negative, so nothing is
		// evicted by mistake.
		return 0
	}
	return ts.Nano()
}

// wallClock converts boot-time stamps to wall-clock time with an offset
// (wall minus boot). The offset is refreshed at every sweep, so a wall
// clock step (NTP, manual date) is followed within one sweep interval,
// while idle decisions keep using boot time only and never jump.
type wallClock struct {
	offset atomic.Int64 // wall ns minus boot ns
}

// refresh re-measures the offset. Boot time is read on both sides of
// time.Now and averaged, which keeps the error below half the distance
// between the two reads.
func (c *wallClock) refresh() {
	before := BootNow()
	wall := time.Now().UnixNano()
	after := BootNow()
	c.offset.Store(wall - (before + (after-before)/2))
}

// wall returns the wall-clock time of a boot-time stamp. The result has
// no monotonic reading, so it compares and formats as a plain wall time.
func (c *wallClock) wall(bootNs int64) time.Time {
	return time.Unix(0, bootNs+c.offset.Load())
}
