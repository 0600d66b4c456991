// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/flow"
)

// Fanout hands flow records to several exporters, one per collector.
// Each exporter has its own socket, templates, sequence numbers, queue
// and sender goroutine, so a slow or absent collector costs only its own
// records: ExportFlows queues to each without waiting, and
// ExportFlowsPaced waits for every exporter in parallel, so one whose
// sender is stuck delays no other's delivery. A Fanout is immutable; a
// reload builds a new one, keeping the exporters of unchanged collectors.
type Fanout struct {
	exporters []*Exporter

	errorsDesc *prometheus.Desc
}

var _ flow.PacedSink = (*Fanout)(nil)

// NewFanout returns a Fanout over exps, which it does not copy.
func NewFanout(exps ...*Exporter) *Fanout {
	return &Fanout{
		exporters: exps,
		errorsDesc: prometheus.NewDesc("rfm_errors_total", "Errors by subsystem.",
			nil, prometheus.Labels{"subsystem": "ipfix"}),
	}
}

// Exporters returns the exporters, in the order given to NewFanout.
func (f *Fanout) Exporters() []*Exporter {
	if f == nil {
		return nil
	}
	return f.exporters
}

// ExportFlows queues recs to every exporter; none blocks.
func (f *Fanout) ExportFlows(recs []flow.Record) {
	for _, e := range f.exporters {
		e.ExportFlows(recs)
	}
}

// ExportFlowsPaced hands a flush to every exporter at once and returns
// when each has queued it (or given up, see Exporter.ExportFlowsPaced).
func (f *Fanout) ExportFlowsPaced(recs []flow.Record) {
	if len(f.exporters) == 1 {
		f.exporters[0].ExportFlowsPaced(recs)
		return
	}
	var wg sync.WaitGroup
	for _, e := range f.exporters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.ExportFlowsPaced(recs)
		}()
	}
	wg.Wait()
}

// SetInterfaces sends the interface options records to every collector.
func (f *Fanout) SetInterfaces(ifaces []Interface) {
	for _, e := range f.exporters {
		e.SetInterfaces(ifaces)
	}
}

// Start runs the senders of deferred exporters.
func (f *Fanout) Start() {
	for _, e := range f.exporters {
		e.Start()
	}
}

// Close closes every exporter; they flush in parallel.
func (f *Fanout) Close() error {
	errs := make([]error, len(f.exporters))
	var wg sync.WaitGroup
	for i, e := range f.exporters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.Close()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Describe implements prometheus.Collector.
func (f *Fanout) Describe(ch chan<- *prometheus.Desc) {
	ch <- f.errorsDesc
	for _, e := range f.exporters {
		e.Describe(ch)
	}
}

// Collect implements prometheus.Collector: each exporter's series under
// its collector label, and the failed sends of all of them as
// rfm_errors_total{subsystem="ipfix"}.
func (f *Fanout) Collect(ch chan<- prometheus.Metric) {
	var errs uint64
	for _, e := range f.exporters {
		e.Collect(ch)
		errs += e.errs.Load()
	}
	ch <- prometheus.MustNewConstMetric(f.errorsDesc, prometheus.CounterValue, float64(errs))
}
