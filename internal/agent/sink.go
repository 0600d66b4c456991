// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/export/ipfix"
	"github.com/stepbrobd/rfm/internal/flow"
)

// ipfixSink hands ended flows to the current IPFIX exporters, one per
// collector, which a reload may start, replace or stop; without any,
// flows end unexported. It also forwards the exporters' metrics.
type ipfixSink struct {
	cur atomic.Pointer[ipfix.Fanout]
}

var _ flow.PacedSink = (*ipfixSink)(nil)

func (s *ipfixSink) ExportFlows(recs []flow.Record) {
	if f := s.cur.Load(); f != nil {
		f.ExportFlows(recs)
	}
}

// ExportFlowsPaced takes the records of a flush, waiting for the
// exporters' queues rather than dropping.
func (s *ipfixSink) ExportFlowsPaced(recs []flow.Record) {
	if f := s.cur.Load(); f != nil {
		f.ExportFlowsPaced(recs)
	}
}

// Describe sends nothing: the exporters behind it come and go, so the
// registry treats this as an unchecked collector.
func (s *ipfixSink) Describe(chan<- *prometheus.Desc) {}

func (s *ipfixSink) Collect(ch chan<- prometheus.Metric) {
	if f := s.cur.Load(); f != nil {
		f.Collect(ch)
	}
}

// exporters returns the running exporters (none when export is off).
func (s *ipfixSink) exporters() []*ipfix.Exporter { return s.cur.Load().Exporters() }

func (s *ipfixSink) setInterfaces(in []datapath.Interface) {
	f := s.cur.Load()
	if f == nil {
		return
	}
	f.SetInterfaces(exportInterfaces(in))
}

func exportInterfaces(in []datapath.Interface) []ipfix.Interface {
	out := make([]ipfix.Interface, len(in))
	for i, ifc := range in {
		out[i] = ipfix.Interface{Index: uint32(ifc.Index), Name: ifc.Name}
	}
	return out
}

// excludeTuples names the exporters' sockets for the datapath, which
// never samples them.
func excludeTuples(exps ...[]*ipfix.Exporter) []datapath.Tuple {
	var out []datapath.Tuple
	for _, list := range exps {
		for _, e := range list {
			out = append(out, datapath.Tuple{Src: e.LocalAddr(), Dst: e.RemoteAddr()})
		}
	}
	return out
}
