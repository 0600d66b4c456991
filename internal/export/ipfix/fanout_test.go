// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// closedUDPPort returns a loopback address nothing listens on: sends to
// it fail with ECONNREFUSED from the ICMP port unreachable they cause.
func closedUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// stallWrites makes e's sender block in its next send until the returned
// function is called, as a send stuck on a full path would.
func stallWrites(e *Exporter) (release func()) {
	gate := make(chan struct{})
	real := e.write
	e.write = func(b []byte) (int, error) {
		<-gate
		return real(b)
	}
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

// One collector whose sender is stuck and one that refuses every
// datagram must not cost a healthy collector a single record, neither on
// the live path (queues that fill) nor in a flush far larger than the
// queues (which waits for room).
func TestFanoutSlowCollectorDelaysNoOther(t *testing.T) {
	good := startCollector(t, "udp4", "127.0.0.1:0")
	stuckSink := startCollector(t, "udp4", "127.0.0.1:0")
	const queue = 64
	mk := func(name, addr string) *Exporter {
		e, err := New(Config{Collector: addr, Name: name, QueueSize: queue, Deferred: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	healthy := mk("healthy", good.addr.String())
	stuck := mk("stuck", stuckSink.addr.String())
	refused := mk("refused", closedUDPPort(t))
	release := stallWrites(stuck)
	// The stuck exporter must still be waiting when the healthy one is
	// done, however slow the machine: only the release ends its wait.
	stuck.pacedWait = time.Hour
	// The stuck one first: handing the flush over one exporter after the
	// other would hold the healthy one behind it.
	f := NewFanout(stuck, healthy, refused)
	f.Start()
	t.Cleanup(func() { release(); f.Close() })

	// Live path: more records than any queue holds, in queue-sized calls
	// the healthy sender keeps up with.
	live := testRecords(3 * queue)
	for i := 0; i < len(live); i += queue {
		f.ExportFlows(live[i : i+queue])
		// Wait for the healthy collector between calls so its own queue
		// never overflows; the stuck one's does.
		want := i + queue
		good.waitFor(t, 10*time.Second, "live records", func(m []decodedMessage) bool { return countFlows(m) >= want })
	}

	// A flush of 20 queues' worth: the healthy collector gets all of it
	// while the call is still blocked on the stuck exporter.
	flush := testRecords(20 * queue)
	for i := range flush {
		flush[i].SrcPort += 20000 // apart from the live records
	}
	done := make(chan struct{})
	go func() { defer close(done); f.ExportFlowsPaced(flush) }()
	total := len(live) + len(flush)
	good.waitFor(t, 20*time.Second, "every record", func(m []decodedMessage) bool { return countFlows(m) >= total })
	select {
	case <-done:
		t.Fatal("the flush returned while one exporter's sender was stuck; the test proves nothing")
	default:
	}
	release()
	<-done

	msgs, _, _ := good.snapshot()
	if n := countFlows(msgs); n != total {
		t.Errorf("healthy collector decoded %d flow records, want %d", n, total)
	}
	if d := healthy.Stats().Dropped; d != 0 {
		t.Errorf("healthy exporter dropped %d records", d)
	}
	if d := stuck.Stats().Dropped; d == 0 {
		t.Error("stuck exporter dropped nothing on the live path; its queue never filled")
	}

	// Metrics: one series per collector, the sum of failed sends as the
	// subsystem error count.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(f)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byCollector := map[string]float64{}
	var subsystemErrors float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "rfm_ipfix_records_total":
				byCollector[label(m, "collector")] = m.GetCounter().GetValue()
			case "rfm_errors_total":
				subsystemErrors = m.GetCounter().GetValue()
			}
		}
	}
	if byCollector["healthy"] != float64(total) {
		t.Errorf("rfm_ipfix_records_total by collector %v, want healthy = %d", byCollector, total)
	}
	if _, ok := byCollector["refused"]; !ok {
		t.Errorf("no series for the refused collector: %v", byCollector)
	}
	want := float64(healthy.Stats().Errors + stuck.Stats().Errors + refused.Stats().Errors)
	if subsystemErrors != want || want == 0 {
		t.Errorf(`rfm_errors_total{subsystem="ipfix"} = %v, want the exporters' %v (> 0: the refused collector fails)`, subsystemErrors, want)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if strings.EqualFold(l.GetName(), name) {
			return l.GetValue()
		}
	}
	return ""
}
