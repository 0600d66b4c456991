// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/stepbrobd/rfm/internal/flow"
)

// The rfm_flow_* families can hold tens of thousands of series. Building
// a client_golang metric per series cost about 900 ns each; rendering the
// text format straight from the rollup is several times cheaper.

type flowFamily struct {
	name, typ, help string
	active          bool // only label sets with active flows (the gauges)
	value           func(r *flowRow) uint64
}

// The gauges are the spec's: sums over the flows active right now, so
// they fall whenever a flow ends. The counters are running totals per
// label set (see flow.LabelSets) for rate(); their names differ from the
// gauges' so that no family name collides in OpenMetrics, where a
// counter family rfm_flow_bytes would be exposed as rfm_flow_bytes_total.
var flowFamilies = []flowFamily{
	{"rfm_flow_bytes", "gauge", "Estimated L3 bytes of active flows (sampled bytes times the sample rate of each flow).", true,
		func(r *flowRow) uint64 { return r.Active.Bytes }},
	{"rfm_flow_packets", "gauge", "Estimated packets of active flows (sampled packets times the sample rate of each flow).", true,
		func(r *flowRow) uint64 { return r.Active.Packets }},
	{"rfm_flow_sampled_bytes", "gauge", "Sampled L3 bytes of active flows, before scaling.", true,
		func(r *flowRow) uint64 { return r.Active.SampledBytes }},
	{"rfm_flow_sampled_packets", "gauge", "Sampled packets of active flows, before scaling.", true,
		func(r *flowRow) uint64 { return r.Active.SampledPackets }},
	{"rfm_flow_estimated_bytes_total", "counter", "Estimated L3 bytes of all flows of the label set, ended ones included (each sampled packet times the rate that sampled it).", false,
		func(r *flowRow) uint64 { return r.bytes }},
	{"rfm_flow_estimated_packets_total", "counter", "Estimated packets of all flows of the label set, ended ones included (each sampled packet times the rate that sampled it).", false,
		func(r *flowRow) uint64 { return r.packets }},
}

type flowRow struct {
	labels         []byte // rendered `{ifname="..",...} `
	active         bool
	Active         flow.RollupCounts
	packets, bytes uint64
}

// OverflowLabel is the value of every label but ifname and direction in
// the series of an overflow label set.
const OverflowLabel = "overflow"

// WriteFlows writes the rfm_flow_* families in the Prometheus text
// format (version 0.0.4).
func (c *Collector) WriteFlows(w io.Writer) error {
	sc := scratchPool.Get().(*flowScratch)
	defer scratchPool.Put(sc)
	names := map[uint32]string{}
	for _, i := range c.dp.Interfaces() {
		names[uint32(i.Index)] = i.Name
	}
	rows := sc.rows[:0]
	labels := sc.labels[:0] // one buffer for every row's labels
	c.flows.LabelSets(func(r *flow.LabelSetRow) {
		k := &r.Key
		name, ok := names[k.Ifindex]
		if !ok {
			name = strconv.FormatUint(uint64(k.Ifindex), 10)
		}
		start := len(labels)
		labels = appendLabel(labels, `{ifname="`, name)
		labels = appendLabel(labels, `",direction="`, k.Dir.String())
		if k.Overflow {
			for _, l := range []string{`",proto="`, `",src_asn="`, `",dst_asn="`, `",src_city="`, `",dst_city="`} {
				labels = appendLabel(labels, l, OverflowLabel)
			}
		} else {
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
		}
		if k.Dropped {
			// Packets the XDP fast path dropped; the label is absent on
			// every other series.
			labels = append(labels, `",xdp="dropped`...)
		}
		labels = append(labels, `"} `...)
		rows = append(rows, flowRow{
			labels: labels[start:len(labels):len(labels)], active: r.ActiveFlows > 0,
			Active: r.Active, packets: r.Packets, bytes: r.Bytes,
		})
	})
	// Buffered by the caller when it can be (Handler's buffer).
	bw, ok := w.(*bufio.Writer)
	if !ok {
		bw = bufio.NewWriterSize(w, scrapeBufferSize)
	}
	line := sc.line[:0]
	for _, f := range flowFamilies {
		bw.WriteString("# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.typ + "\n")
		for i := range rows {
			if f.active && !rows[i].active {
				continue
			}
			line = append(line[:0], f.name...)
			line = append(line, rows[i].labels...)
			line = strconv.AppendUint(line, f.value(&rows[i]), 10)
			line = append(line, '\n')
			bw.Write(line)
		}
	}
	// Keep the buffers for the next scrape, unless a burst made them
	// much larger than usual.
	if cap(labels) <= 8<<20 {
		sc.rows, sc.labels, sc.line = rows[:0], labels[:0], line[:0]
	}
	return bw.Flush()
}

// flowScratch holds WriteFlows' buffers between scrapes. A pool rather
// than one set per Collector: WriteFlows writes to the network, and a
// client that reads slowly must not hold up other scrapes.
type flowScratch struct {
	rows   []flowRow
	labels []byte
	line   []byte
}

var scratchPool = sync.Pool{New: func() any { return new(flowScratch) }}

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

// scrapeBuffers are the output buffers of one scrape: the text goes
// through bw, then through gz when the client accepts gzip.
type scrapeBuffers struct {
	bw *bufio.Writer
	gz *gzipWriter // made at the first scrape that asks for gzip
}

// scrapeBufferSize is bw's size. The encoders write a line or a family
// at a time; 16 KiB of them make few writes to the connection or the
// compressor.
const scrapeBufferSize = 16 << 10

// Handler serves the registry in the text format followed by the flow
// families of c, gzip-compressed when the client accepts it (Prometheus
// always does). The flow series repeat their label strings, which LZ77
// alone compresses about 25-fold.
//
// One set of buffers, the compressor's included, is kept for as long as
// the handler lives and used by one scrape at a time; a scrape that
// overlaps it (two Prometheus servers at once) makes its own. Kept in a
// sync.Pool they would be dropped at every garbage collection and made
// again by the next scrape.
func Handler(reg prometheus.Gatherer, c *Collector, onError func(error)) http.Handler {
	var (
		kept     scrapeBuffers
		keptBusy sync.Mutex
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fams, err := reg.Gather()
		if err != nil && onError != nil {
			onError(err) // partial results are still served
		}
		buf := &scrapeBuffers{}
		if keptBusy.TryLock() {
			defer keptBusy.Unlock()
			buf = &kept
		}
		h := w.Header()
		h.Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		h.Add("Vary", "Accept-Encoding")
		var out io.Writer = w
		if acceptsGzip(r.Header.Values("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			if buf.gz == nil {
				buf.gz = newGzipWriter()
			}
			gz := buf.gz
			gz.Reset(w)
			defer func() {
				_ = gz.Close() // a client gone mid-response is not our error
				gz.Reset(nil)
			}()
			out = gz
		}
		if buf.bw == nil {
			buf.bw = bufio.NewWriterSize(out, scrapeBufferSize)
		}
		bw := buf.bw
		bw.Reset(out)
		defer bw.Reset(nil)
		enc := expfmt.NewEncoder(bw, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, f := range fams {
			if err := enc.Encode(f); err != nil {
				if onError != nil {
					onError(err)
				}
				return
			}
		}
		if err := c.writeInterfaces(bw); err != nil {
			return
		}
		if err := c.WriteFlows(bw); err == nil {
			_ = bw.Flush()
		}
	})
}

// acceptsGzip reads Accept-Encoding headers (RFC 9110 12.5.3): gzip or
// "*" listed without q=0.
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(item, ";")
			coding = strings.ToLower(strings.TrimSpace(coding))
			if coding != "gzip" && coding != "x-gzip" && coding != "*" {
				continue
			}
			q := 1.0
			for _, p := range strings.Split(params, ";") {
				name, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(name), "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
						q = f
					}
				}
			}
			if q > 0 {
				return true
			}
		}
	}
	return false
}
