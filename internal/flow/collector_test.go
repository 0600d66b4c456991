// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// chanSource hands out the batches sent on its channel; once the channel
// is closed and drained it reports os.ErrClosed, as the ring buffer
// reader does.
type chanSource struct {
	batches chan []datapath.Event
	err     error // returned instead of os.ErrClosed when set
}

func (s *chanSource) ReadBatch(evs []datapath.Event) (int, error) {
	b, ok := <-s.batches
	if !ok {
		if s.err != nil {
			return 0, s.err
		}
		return 0, fmt.Errorf("ringbuffer: %w", os.ErrClosed)
	}
	return copy(evs, b), nil
}

// closingSource blocks until Close is called, like a ring buffer reader
// with no traffic.
type closingSource struct {
	once   sync.Once
	closed chan struct{}
}

func (s *closingSource) ReadBatch([]datapath.Event) (int, error) {
	<-s.closed
	return 0, os.ErrClosed
}

func (s *closingSource) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestRunUntilSourceClosed(t *testing.T) {
	tab := NewTable(Options{})
	src := &chanSource{batches: make(chan []datapath.Event)}
	done := make(chan error, 1)
	go func() { done <- tab.Run(context.Background(), src) }()
	src.batches <- []datapath.Event{udp(1, 1), udp(2, 2)}
	src.batches <- []datapath.Event{udp(1, 3)}
	close(src.batches)
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run returned %v after the source closed, want nil", err)
	}
	flows := active(t, tab)
	if len(flows) != 2 {
		t.Fatalf("got %d flows, want 2", len(flows))
	}
	ev := udp(1, 0)
	if r := flows[keyOfEvent(&ev)]; r.Packets != 2 {
		t.Fatalf("flow 1 has %d packets, want 2", r.Packets)
	}
}

func TestRunReturnsReadError(t *testing.T) {
	tab := NewTable(Options{})
	boom := errors.New("boom")
	src := &chanSource{batches: make(chan []datapath.Event), err: boom}
	close(src.batches)
	err := tab.Run(context.Background(), src)
	if !errors.Is(err, boom) {
		t.Fatalf("Run returned %v, want it to wrap %v", err, boom)
	}
}

func TestRunStopsOnContextAndClosesSource(t *testing.T) {
	tab := NewTable(Options{})
	src := &closingSource{closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tab.Run(ctx, src) }()
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

func TestRunSweeper(t *testing.T) {
	sink := &recSink{}
	tab := NewTable(Options{IdleTimeout: 40 * time.Millisecond, Sinks: []Sink{sink}})
	ev := udp(1, uint64(BootNow()))
	tab.Update(&ev)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tab.RunSweeper(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for tab.Active() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("sweeper did not evict the idle flow")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if recs := sink.take(); len(recs) != 1 || recs[0].Reason != EndIdleTimeout {
		t.Fatalf("sink got %+v, want one idle_timeout record", recs)
	}
}

// TestConcurrentUse runs the collector path against every reader and
// maintenance call at once; run with -race.
func TestConcurrentUse(t *testing.T) {
	sink := &recSink{}
	enr := newFakeEnricher()
	enr.set("198.18.0.1", 64500, "Amsterdam")
	tab := NewTable(Options{MaxFlows: 500, IdleTimeout: time.Second, Sinks: []Sink{sink}, Enricher: enr})
	const rounds = 200
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // collector
		defer wg.Done()
		defer close(stop)
		evs := make([]datapath.Event, BatchSize)
		for r := range rounds {
			for i := range evs {
				evs[i] = udp(byte(i), uint64(r*BatchSize+i))
				evs[i].SrcPort = uint16(i + r%3)
			}
			tab.UpdateBatch(evs)
			if r%50 == 0 {
				tab.FlushInterface(2)
			}
		}
	}()
	readers := []func(){
		func() { tab.Rollup(func(RollupKey, RollupCounts) {}) },
		func() { _ = tab.Top(10, func(a, b *Record) bool { return a.Bytes > b.Bytes }, nil) },
		func() { _, _, _, _ = tab.Active(), tab.Capacity(), tab.ForcedEvictions(), tab.IdleEvictions() },
		func() { enr.gen.Add(1); tab.Sweep(int64(time.Second) + rounds*BatchSize/2) },
		func() { tab.SetMaxFlows(300 + int(BootNow()%400)) },
		func() { _ = sink.take() },
	}
	for _, read := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					read()
				}
			}
		}()
	}
	wg.Wait()
	tab.Flush(EndForced)
	if tab.Active() != 0 {
		t.Fatalf("Active() = %d after Flush", tab.Active())
	}
}
