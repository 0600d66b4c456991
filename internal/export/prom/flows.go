// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"bufio"
	"io"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/stepbrobd/rfm/internal/flow"
)

// The rfm_flow_* families can hold tens of thousands of series. Building
// a client_golang metric per series cost about 900 ns each; rendering the
// text format straight from the rollup is several times cheaper.

type flowFamily struct {
	name, help string
	value      func(r *flowRow) uint64
}

var flowFamilies = []flowFamily{
	{"rfm_flow_bytes", "Estimated L3 bytes of active flows (sampled bytes times the sample rate of each flow).",
		func(r *flowRow) uint64 { return r.Bytes }},
	{"rfm_flow_packets", "Estimated packets of active flows (sampled packets times the sample rate of each flow).",
		func(r *flowRow) uint64 { return r.Packets }},
	{"rfm_flow_sampled_bytes", "Sampled L3 bytes of active flows, before scaling.",
		func(r *flowRow) uint64 { return r.SampledBytes }},
	{"rfm_flow_sampled_packets", "Sampled packets of active flows, before scaling.",
		func(r *flowRow) uint64 { return r.SampledPackets }},
}

type flowRow struct {
	labels []byte // rendered `{ifname="..",...}`
	flow.RollupCounts
}

// WriteFlows writes the four rfm_flow_* families in the Prometheus text
// format (version 0.0.4).
func (c *Collector) WriteFlows(w io.Writer) error {
	names := map[uint32]string{}
	for _, i := range c.dp.Interfaces() {
		names[uint32(i.Index)] = i.Name
	}
	var rows []flowRow
	var labels []byte // one buffer for every row's labels
	c.flows.Rollup(func(k flow.RollupKey, counts flow.RollupCounts) {
		name, ok := names[k.Ifindex]
		if !ok {
			name = strconv.FormatUint(uint64(k.Ifindex), 10)
		}
		start := len(labels)
		labels = appendLabel(labels, `{ifname="`, name)
		labels = appendLabel(labels, `",direction="`, k.Dir.String())
		labels = appendLabel(labels, `",proto="`, ProtoName(k.Proto))
		labels = append(labels, `",src_asn="`...)
		if k.SrcASN != 0 {
			labels = strconv.AppendUint(labels, uint64(k.SrcASN), 10)
		}
		labels = append(labels, `",dst_asn="`...)
		if k.DstASN != 0 {
			labels = strconv.AppendUint(labels, uint64(k.DstASN), 10)
		}
		labels = appendLabel(labels, `",src_city="`, k.SrcCity)
		labels = appendLabel(labels, `",dst_city="`, k.DstCity)
		labels = append(labels, `"} `...)
		rows = append(rows, flowRow{labels: labels[start:len(labels):len(labels)], RollupCounts: counts})
	})
	bw := bufio.NewWriterSize(w, 64<<10)
	var line []byte
	for _, f := range flowFamilies {
		bw.WriteString("# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " gauge\n")
		for i := range rows {
			line = append(line[:0], f.name...)
			line = append(line, rows[i].labels...)
			line = strconv.AppendUint(line, f.value(&rows[i]), 10)
			line = append(line, '\n')
			bw.Write(line)
		}
	}
	return bw.Flush()
}

// appendLabel appends prefix and v escaped for a label value.
func appendLabel(b []byte, prefix, v string) []byte {
	b = append(b, prefix...)
	for i := 0; i < len(v); i++ {
		switch ch := v[i]; ch {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, ch)
		}
	}
	return b
}

// Handler serves the registry in the text format followed by the flow
// families of c.
func Handler(reg prometheus.Gatherer, c *Collector, onError func(error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fams, err := reg.Gather()
		if err != nil && onError != nil {
			onError(err) // partial results are still served
		}
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		bw := bufio.NewWriterSize(w, 64<<10)
		enc := expfmt.NewEncoder(bw, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, f := range fams {
			if err := enc.Encode(f); err != nil {
				if onError != nil {
					onError(err)
				}
				return
			}
		}
		if err := c.WriteFlows(bw); err == nil {
			_ = bw.Flush() // a client gone mid-response is not our error
		}
	})
}
