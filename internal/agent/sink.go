// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/export/ipfix"
	"github.com/stepbrobd/rfm/internal/flow"
)

// ipfixSink hands ended flows to the current IPFIX exporter, which a
// reload may start, replace or stop; without one, flows end unexported.
// It also forwards the exporter's metrics.
type ipfixSink struct {
	cur atomic.Pointer[ipfix.Exporter]
}

var _ flow.PacedSink = (*ipfixSink)(nil)

func (s *ipfixSink) ExportFlows(recs []flow.Record) {
	if e := s.cur.Load(); e != nil {
		e.ExportFlows(recs)
	}
}

// ExportFlowsPaced takes the records of a flush, waiting for the
// exporter's queue rather than dropping.
func (s *ipfixSink) ExportFlowsPaced(recs []flow.Record) {
	if e := s.cur.Load(); e != nil {
		e.ExportFlowsPaced(recs)
	}
}

// Describe sends nothing: the exporter behind it comes and goes, so the
// registry treats this as an unchecked collector.
func (s *ipfixSink) Describe(chan<- *prometheus.Desc) {}

func (s *ipfixSink) Collect(ch chan<- prometheus.Metric) {
	if e := s.cur.Load(); e != nil {
		ipfix.NewFanout(e).Collect(ch)
	}
}

func (s *ipfixSink) setInterfaces(in []datapath.Interface) {
	e := s.cur.Load()
	if e == nil {
		return
	}
	out := make([]ipfix.Interface, len(in))
	for i, ifc := range in {
		out[i] = ipfix.Interface{Index: uint32(ifc.Index), Name: ifc.Name}
	}
	e.SetInterfaces(out)
}
