// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// BatchSize is how many events the collector asks its source for at once.
// One lock hold per batch keeps locking off the per-event cost; 512
// events are about 28 KiB of ring buffer.
const BatchSize = 512

// EventSource delivers decoded datapath events (the ring buffer reader).
type EventSource interface {
	// ReadBatch blocks until at least one event is available and returns
	// how many it decoded into evs. Once the source is closed it returns
	// an error wrapping os.ErrClosed (ringbuf.ErrClosed is os.ErrClosed).
	// A source may return os.ErrDeadlineExceeded to let the collector
	// check for cancellation; n events are applied before any error.
	ReadBatch(evs []datapath.Event) (n int, err error)
}

// Run reads event batches from src and applies them to the table until
// src is closed (returns nil) or ctx is done (returns nil). If src also
// implements io.Closer, Run closes it when ctx is done so that a blocked
// ReadBatch returns. Any other read error ends Run with that error.
func (t *Table) Run(ctx context.Context, src EventSource) error {
	if c, ok := src.(io.Closer); ok {
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		defer stop()
	}
	evs := make([]datapath.Event, BatchSize)
	for {
		if ctx.Err() != nil {
			return nil
		}
		n, err := src.ReadBatch(evs)
		if n > 0 {
			t.UpdateBatch(evs[:n])
		}
		switch {
		case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, os.ErrClosed):
			t.log.Debug("flow collector stopped: event source closed")
			return nil
		default:
			return fmt.Errorf("flow collector: read events: %w", err)
		}
	}
}

// SweepInterval returns how often RunSweeper sweeps: a quarter of the
// idle timeout, at most a second, so a flow ends at most that much later
// than its timeout.
func (t *Table) SweepInterval() time.Duration {
	return min(time.Second, max(t.IdleTimeout()/4, 10*time.Millisecond))
}

// RunSweeper calls Sweep every SweepInterval until ctx is done. Changes
// made by SetIdleTimeout take effect from the next interval.
func (t *Table) RunSweeper(ctx context.Context) {
	timer := time.NewTimer(t.SweepInterval())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		t.Sweep(BootNow())
		timer.Reset(t.SweepInterval())
	}
}
