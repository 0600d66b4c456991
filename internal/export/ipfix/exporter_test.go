// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// udpCollector is a UDP listener that decodes every datagram with goflow2,
// like a collector keeping templates per exporter.
type udpCollector struct {
	conn *net.UDPConn
	addr netip.AddrPort

	mu   sync.Mutex
	gf   *goflowCollector
	msgs []decodedMessage
	from []netip.AddrPort
	errs []error
}

func startCollector(t *testing.T, network, addr string) *udpCollector {
	t.Helper()
	laddr, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP(network, laddr)
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	c := &udpCollector{conn: conn, addr: addrPort(conn.LocalAddr()), gf: newGoflowCollector()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			b := append([]byte(nil), buf[:n]...)
			c.mu.Lock()
			m, err := c.gf.decode(b)
			c.msgs = append(c.msgs, m)
			c.from = append(c.from, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()))
			if err != nil {
				c.errs = append(c.errs, fmt.Errorf("message %d: %w", len(c.msgs)-1, err))
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return c
}

func (c *udpCollector) snapshot() ([]decodedMessage, []netip.AddrPort, []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]decodedMessage(nil), c.msgs...), append([]netip.AddrPort(nil), c.from...), append([]error(nil), c.errs...)
}

// waitFor polls until cond holds for the messages received so far.
func (c *udpCollector) waitFor(t *testing.T, timeout time.Duration, what string, cond func([]decodedMessage) bool) []decodedMessage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, _, errs := c.snapshot()
		if len(errs) > 0 {
			t.Fatalf("decode errors: %v", errs)
		}
		if cond(msgs) {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s not seen in %d messages", timeout, what, len(msgs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func countFlows(msgs []decodedMessage) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Flows)
	}
	return n
}

func hasTemplates(m decodedMessage) bool {
	return len(m.Templates) == 2 && len(m.OptionsTemplates) == 2
}

func newTestExporter(t *testing.T, cfg Config) *Exporter {
	t.Helper()
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// metricValues gathers the exporter's metrics through a pedantic registry,
// which also checks Describe against Collect.
func metricValues(t *testing.T, e *Exporter) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "collector" {
					continue // one exporter: its own label
				}
				name += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			out[name] = m.GetCounter().GetValue()
		}
	}
	return out
}

const errorsMetric = "rfm_ipfix_send_errors_total"

func TestExporterDelivers(t *testing.T) {
	tests := []struct{ name, network, addr string }{
		{"IPv4 loopback", "udp4", "127.0.0.1:0"},
		{"IPv6 loopback", "udp6", "[::1]:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := startCollector(t, tt.network, tt.addr)
			start := time.Now()
			e := newTestExporter(t, Config{
				Collector:           col.addr.String(),
				ObservationDomainID: 9,
				SampleRate:          100,
			})
			if e.RemoteAddr() != col.addr {
				t.Errorf("RemoteAddr %v, collector listens on %v", e.RemoteAddr(), col.addr)
			}
			ifaces := []Interface{{Index: 2, Name: "eth0", Description: "uplink"}, {Index: 3, Name: "wg0"}}
			e.SetInterfaces(ifaces)
			recs := testRecords(300)
			e.ExportFlows(recs[:150])
			e.ExportFlows(recs[150:])

			msgs := col.waitFor(t, 5*time.Second, "300 flows", func(m []decodedMessage) bool { return countFlows(m) >= 300 })
			_, from, _ := col.snapshot()
			end := time.Now()

			if !hasTemplates(msgs[0]) {
				t.Errorf("first message has templates %v and options templates %v; want all four before any data",
					msgs[0].Templates, msgs[0].OptionsTemplates)
			}
			var seq uint32
			got := map[uint16]decodedFlow{}
			var sampling []decodedSampling
			var gotIfaces []Interface
			for i, m := range msgs {
				if from[i] != e.LocalAddr() {
					t.Errorf("message %d came from %v, LocalAddr says %v", i, from[i], e.LocalAddr())
				}
				if len(m.Raw) > DefaultMaxMessageSize {
					t.Errorf("message %d is %d bytes", i, len(m.Raw))
				}
				if m.Sequence != seq {
					t.Errorf("message %d: sequence %d, want %d data records sent before it", i, m.Sequence, seq)
				}
				seq += uint32(m.DataRecords)
				if m.DomainID != 9 {
					t.Errorf("message %d: observation domain %d, want 9", i, m.DomainID)
				}
				if et := int64(m.ExportTime); et < start.Unix() || et > end.Unix() {
					t.Errorf("message %d: export time %d outside [%d, %d]", i, et, start.Unix(), end.Unix())
				}
				if m.Undecodable > 0 {
					t.Errorf("message %d: data set before its template", i)
				}
				for _, f := range m.Flows {
					got[f.SrcPort] = f
				}
				sampling = append(sampling, m.Sampling...)
				gotIfaces = append(gotIfaces, m.Interfaces...)
			}
			if len(got) != len(recs) {
				t.Fatalf("%d distinct flows, want %d", len(got), len(recs))
			}
			for i := range recs {
				if want := wantFlow(&recs[i]); got[recs[i].SrcPort] != want {
					t.Errorf("flow %d:\n got %+v\nwant %+v", i, got[recs[i].SrcPort], want)
				}
			}
			if len(sampling) == 0 || sampling[0] != (decodedSampling{DomainID: 9, Interval: 100, Algorithm: 2, RandomInterval: 100}) {
				t.Errorf("sampling options %+v", sampling)
			}
			wantIfaces := map[uint32]Interface{
				2: {Index: 2, Name: "eth0", Description: "uplink"},
				3: {Index: 3, Name: "wg0", Description: "wg0"},
			}
			for _, ifc := range gotIfaces {
				if wantIfaces[ifc.Index] != ifc {
					t.Errorf("interface options %+v, want %+v", ifc, wantIfaces[ifc.Index])
				}
			}
			if len(gotIfaces) == 0 {
				t.Error("no interface options records")
			}

			// 300 records of alternating families in 150-record batches:
			// IPv4 and IPv6 go in separate sets, so full messages carry 21
			// IPv4 or 15 IPv6 records, or a mix filling the same space.
			dataMsgs := 0
			for _, m := range msgs {
				if len(m.Flows) > 0 {
					dataMsgs++
				}
			}
			if dataMsgs > 20 {
				t.Errorf("%d data messages for 300 records; want messages filled to the limit", dataMsgs)
			}

			mv := metricValues(t, e)
			if mv["rfm_ipfix_records_total"] != 300 || mv["rfm_ipfix_dropped_records_total"] != 0 || mv[errorsMetric] != 0 {
				t.Errorf("metrics %v", mv)
			}
			if mv["rfm_ipfix_messages_total"] < float64(len(msgs)) {
				t.Errorf("messages_total %v, collector got %d", mv["rfm_ipfix_messages_total"], len(msgs))
			}
		})
	}
}

func TestExporterFlushesPartialMessage(t *testing.T) {
	col := startCollector(t, "udp4", "127.0.0.1:0")
	e := newTestExporter(t, Config{Collector: col.addr.String()})
	col.waitFor(t, 2*time.Second, "templates", func(m []decodedMessage) bool { return len(m) > 0 })
	e.ExportFlows(testRecords(1))
	// One record never fills a message; only the flush timer sends it.
	col.waitFor(t, flushInterval+time.Second, "the flushed record", func(m []decodedMessage) bool { return countFlows(m) == 1 })
}

func TestExporterRefreshesTemplates(t *testing.T) {
	col := startCollector(t, "udp4", "127.0.0.1:0")
	e := newTestExporter(t, Config{Collector: col.addr.String(), TemplateRefresh: 200 * time.Millisecond, SampleRate: 7})
	e.SetInterfaces([]Interface{{Index: 5, Name: "eth5"}})
	msgs := col.waitFor(t, 5*time.Second, "three template messages", func(msgs []decodedMessage) bool {
		n := 0
		for _, m := range msgs {
			if hasTemplates(m) {
				n++
			}
		}
		return n >= 3
	})
	for i, m := range msgs {
		if !hasTemplates(m) {
			continue
		}
		if len(m.Sampling) != 1 || m.Sampling[0].Interval != 7 {
			t.Errorf("message %d: templates without the sampling record: %+v", i, m.Sampling)
		}
		if i > 0 && (len(m.Interfaces) != 1 || m.Interfaces[0].Name != "eth5") {
			t.Errorf("message %d: refresh without the interface record: %+v", i, m.Interfaces)
		}
	}
}

func samplingSeen(msgs []decodedMessage, interval uint32) bool {
	for _, m := range msgs {
		for _, s := range m.Sampling {
			if s.Interval == interval && s.RandomInterval == interval && s.Algorithm == 2 {
				return true
			}
		}
	}
	return false
}

func TestExporterSetInterfacesSpansMessages(t *testing.T) {
	col := startCollector(t, "udp4", "127.0.0.1:0")
	e := newTestExporter(t, Config{Collector: col.addr.String(), MaxMessageSize: 512, TemplateRefresh: time.Hour})
	col.waitFor(t, 2*time.Second, "templates", func(m []decodedMessage) bool { return len(m) > 0 })
	var ifaces []Interface
	for i := range 40 {
		ifaces = append(ifaces, Interface{Index: uint32(i + 1), Name: fmt.Sprintf("veth%d", i)})
	}
	e.SetInterfaces(ifaces)
	msgs := col.waitFor(t, 2*time.Second, "40 interface records", func(msgs []decodedMessage) bool {
		n := 0
		for _, m := range msgs {
			n += len(m.Interfaces)
		}
		return n >= 40
	})
	seen := map[uint32]string{}
	for _, m := range msgs {
		if len(m.Raw) > 512 {
			t.Errorf("message of %d bytes, limit 512", len(m.Raw))
		}
		for _, ifc := range m.Interfaces {
			seen[ifc.Index] = ifc.Name
		}
	}
	for _, ifc := range ifaces {
		if seen[ifc.Index] != ifc.Name {
			t.Errorf("interface %d: got name %q, want %q", ifc.Index, seen[ifc.Index], ifc.Name)
		}
	}
}

func TestExporterQueueFullDrops(t *testing.T) {
	col := startCollector(t, "udp4", "127.0.0.1:0")
	e := newTestExporter(t, Config{Collector: col.addr.String(), QueueSize: 10})
	e.ExportFlows(testRecords(100))
	if got := metricValues(t, e)["rfm_ipfix_dropped_records_total"]; got != 90 {
		t.Errorf("dropped %v records, want 90 (queue of 10)", got)
	}
	col.waitFor(t, 3*time.Second, "10 flows", func(m []decodedMessage) bool { return countFlows(m) == 10 })
}

func TestExporterCloseFlushes(t *testing.T) {
	col := startCollector(t, "udp6", "[::1]:0")
	e, err := New(Config{Collector: col.addr.String()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.ExportFlows(testRecords(50))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, 2*time.Second, "50 flows", func(m []decodedMessage) bool { return countFlows(m) == 50 })
	e.ExportFlows(testRecords(5)) // after Close: dropped, no panic
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := metricValues(t, e)["rfm_ipfix_dropped_records_total"]; got != 5 {
		t.Errorf("dropped %v after Close, want 5", got)
	}
}

// TestExporterCollectorAbsentThenAppears sends to a port nobody listens on
// (ICMP port unreachable, ECONNREFUSED on the connected socket), then
// starts a collector there. Errors are counted, the sender keeps going, and
// a collector that never saw the first templates decodes later records.
func TestExporterCollectorAbsentThenAppears(t *testing.T) {
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	target := addrPort(probe.LocalAddr())
	probe.Close()

	e := newTestExporter(t, Config{Collector: target.String(), TemplateRefresh: time.Hour})
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; metricValues(t, e)[errorsMetric] < 3; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no send errors counted while the collector is absent: %v", metricValues(t, e))
		}
		e.ExportFlows(testRecords(30))
		time.Sleep(20 * time.Millisecond)
	}
	before := metricValues(t, e)
	if before["rfm_ipfix_dropped_records_total"] == 0 {
		t.Errorf("records in failed sends not counted as dropped: %v", before)
	}

	col := startCollector(t, "udp4", target.String())
	deadline = time.Now().Add(10 * time.Second)
	for countFlows(snapshotMsgs(col)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("restarted collector decoded no flows: %v", metricValues(t, e))
		}
		e.ExportFlows(testRecords(30))
		time.Sleep(20 * time.Millisecond)
	}
	msgs, from, errs := col.snapshot()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for i := range msgs {
		if from[i] != e.LocalAddr() {
			t.Errorf("message %d from %v; the source must stay %v", i, from[i], e.LocalAddr())
		}
	}
}

func snapshotMsgs(c *udpCollector) []decodedMessage {
	m, _, _ := c.snapshot()
	return m
}

func TestExporterBind(t *testing.T) {
	col := startCollector(t, "udp4", "127.0.0.1:0")
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	bind := addrPort(probe.LocalAddr())
	probe.Close()
	e := newTestExporter(t, Config{Collector: col.addr.String(), Bind: bind.String()})
	if e.LocalAddr() != bind {
		t.Errorf("LocalAddr %v, want the bind address %v", e.LocalAddr(), bind)
	}
	e.ExportFlows(testRecords(1))
	col.waitFor(t, 3*time.Second, "one flow", func(m []decodedMessage) bool { return countFlows(m) == 1 })
	_, from, _ := col.snapshot()
	if from[0] != bind {
		t.Errorf("sent from %v, want %v", from[0], bind)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing port", Config{Collector: "127.0.0.1"}, `collector "127.0.0.1"`},
		{"zero port", Config{Collector: "127.0.0.1:0"}, `collector "127.0.0.1:0"`},
		{"unspecified host", Config{Collector: ":4739"}, `collector ":4739"`},
		{"message too small", Config{Collector: "127.0.0.1:4739", MaxMessageSize: 100}, "max_message_size 100"},
		{"message too large", Config{Collector: "127.0.0.1:4739", MaxMessageSize: 70000}, "max_message_size 70000"},
		{"negative refresh", Config{Collector: "127.0.0.1:4739", TemplateRefresh: -time.Second}, "template_refresh -1s"},
		{"bad bind", Config{Collector: "127.0.0.1:4739", Bind: "127.0.0.1:x"}, `bind "127.0.0.1:x"`},
		{"bind family mismatch", Config{Collector: "127.0.0.1:4739", Bind: "[::1]:0"}, `bind "[::1]:0"`},
	}
	for _, tt := range tests {
		e, err := New(tt.cfg, nil)
		if err == nil {
			e.Close()
			t.Errorf("%s: no error", tt.name)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q; want one line containing %q", tt.name, err, tt.want)
		}
	}
}
