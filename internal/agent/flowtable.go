// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/export/prom"
	"github.com/stepbrobd/rfm/internal/flow"
)

// shutdownGrace bounds how long the reader gets to take what the ring
// still holds at exit.
const shutdownGrace = 3 * time.Second

// flowTableStage is the flow table (a.table), the goroutine that reads
// the datapath's events into it and the sweeper that ends idle flows.
type flowTableStage struct {
	a           *agent
	runDone     chan error // nil until started; the reader's result
	stopSweeper context.CancelFunc
	sweeper     sync.WaitGroup
}

func (a *agent) newFlowTable() (component, error) {
	c := a.cfg.Agent
	a.table = flow.NewTable(flow.Options{
		MaxFlows:      c.Collector.MaxFlows,
		IdleTimeout:   c.Collector.EvictionTimeout.Duration,
		ActiveTimeout: c.Collector.ActiveTimeout.Duration,
		Sinks:         []flow.Sink{a.ipfix},
		Enricher:      a.enricher,
		Logger:        a.log,

		MaxLabelSets:   c.Prometheus.MaxLabelSets,
		LabelSetExpiry: c.Prometheus.LabelSetExpiry.Duration,
	})
	return &flowTableStage{a: a}, nil
}

func (t *flowTableStage) name() string { return "flow table" }

func (t *flowTableStage) start() error {
	a := t.a
	t.runDone = make(chan error, 1)
	go func() {
		err := a.table.Run(context.Background(), a.dp)
		a.readerDone.Store(true)
		if err != nil && !errors.Is(err, datapath.ErrFlushed) {
			a.log.Error("datapath reader stopped", "err", err)
		}
		t.runDone <- err
	}()
	ctx, cancel := context.WithCancel(context.Background())
	t.stopSweeper = cancel
	t.sweeper.Add(1)
	go func() { defer t.sweeper.Done(); a.table.RunSweeper(ctx) }()
	return nil
}

func (t *flowTableStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	c, n := cur.Agent.Collector, next.Agent.Collector
	var keys keyChanges
	maxFlows := keys.add("agent.collector.max_flows", c.MaxFlows != n.MaxFlows)
	idle := keys.add("agent.collector.eviction_timeout", c.EvictionTimeout != n.EvictionTimeout)
	active := keys.add("agent.collector.active_timeout", c.ActiveTimeout != n.ActiveTimeout)
	return reconfig{commit: func() []string {
		if maxFlows {
			t.a.table.SetMaxFlows(n.MaxFlows)
		}
		if idle {
			t.a.table.SetIdleTimeout(n.EvictionTimeout.Duration)
		}
		if active {
			t.a.table.SetActiveTimeout(n.ActiveTimeout.Duration)
		}
		return keys
	}}, nil
}

// stop runs after the interfaces are detached: the reader takes what
// the ring still holds, then every flow ends, so the exporters (stopped
// next) see them all.
func (t *flowTableStage) stop() error {
	if t.runDone == nil {
		return nil
	}
	a := t.a
	var errs []error
	if err := a.dp.Drain(); err != nil {
		errs = append(errs, fmt.Errorf("drain ring buffer: %w", err))
	}
	select {
	case err := <-t.runDone:
		if err != nil && !errors.Is(err, datapath.ErrFlushed) {
			errs = append(errs, err)
		}
	case <-time.After(shutdownGrace):
		errs = append(errs, errors.New("ring buffer drain timed out"))
	}
	a.table.Flush(flow.EndForced)
	t.stopSweeper()
	t.sweeper.Wait()
	t.runDone = nil
	return errors.Join(errs...)
}

// collectorStage is the Prometheus collector of the datapath counters
// and the flow table (a.core); its label sets live in the table.
type collectorStage struct{ a *agent }

func (a *agent) newCollector() (component, error) { return &collectorStage{a: a}, nil }

func (p *collectorStage) name() string { return "Prometheus collector" }

func (p *collectorStage) start() error {
	a := p.a
	a.core = prom.New(a.dp, a.table, a.sampleRate.Load)
	a.reg.MustRegister(a.core)
	return nil
}

func (p *collectorStage) reconfigure(cur, next *config.Config) (reconfig, error) {
	c, n := cur.Agent.Prometheus, next.Agent.Prometheus
	var keys keyChanges
	keys.add("agent.prometheus.max_label_sets", c.MaxLabelSets != n.MaxLabelSets)
	keys.add("agent.prometheus.label_set_expiry", c.LabelSetExpiry != n.LabelSetExpiry)
	if len(keys) == 0 {
		return reconfig{}, nil
	}
	return reconfig{commit: func() []string {
		p.a.table.SetLabelSetLimits(n.MaxLabelSets, n.LabelSetExpiry.Duration)
		return keys
	}}, nil
}

func (p *collectorStage) stop() error { return nil }
