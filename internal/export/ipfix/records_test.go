// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"bytes"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"
	goflow "github.com/netsampler/goflow2/v2/producer/proto"
	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// producerCollector is goflow2 as a collector runs it: its IPFIX decoder
// and its producer, which attaches to every flow the sampling rate it
// knows for the exporter once the flow's message has been read.
type producerCollector struct {
	conn *net.UDPConn
	addr netip.AddrPort

	mu    sync.Mutex
	flows []producedFlow
	errs  []error
}

type producedFlow struct {
	SrcPort        uint16
	Packets, Bytes uint64
	SamplingRate   uint64
	StartNs, EndNs uint64
}

func startProducerCollector(t *testing.T) *producerCollector {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.1: %v", err)
	}
	// A flush is sent as fast as the socket takes it; a receive buffer
	// that holds all of it keeps the kernel from dropping what the
	// decoder has not read yet, which the exporter could not see.
	if raw, err := conn.SyscallConn(); err == nil {
		var serr error
		_ = raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 256<<20)
		})
		if serr != nil {
			conn.Close()
			t.Skipf("a receive buffer large enough for a whole flush needs CAP_NET_ADMIN: %v", serr)
		}
	}
	c := &producerCollector{conn: conn, addr: addrPort(conn.LocalAddr())}
	templates := netflow.CreateTemplateSystem()
	sampling := goflow.CreateSamplingSystem()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			var v9 netflow.NFv9Packet
			var pkt netflow.IPFIXPacket
			err = netflow.DecodeMessageVersion(bytes.NewBuffer(buf[:n]), templates, &v9, &pkt)
			var produced []producedFlow
			if err == nil {
				msgs, perr := goflow.ProcessMessageIPFIXConfig(&pkt, sampling, nil)
				err = perr
				for _, m := range msgs {
					fm := m.(*goflow.ProtoProducerMessage)
					produced = append(produced, producedFlow{
						SrcPort: uint16(fm.SrcPort), Packets: fm.Packets, Bytes: fm.Bytes,
						SamplingRate: fm.SamplingRate, StartNs: fm.TimeFlowStartNs, EndNs: fm.TimeFlowEndNs,
					})
				}
			}
			c.mu.Lock()
			c.flows = append(c.flows, produced...)
			if err != nil {
				c.errs = append(c.errs, err)
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

// waitFlows polls until at least n flows arrived, then returns them.
func (c *producerCollector) waitFlows(t *testing.T, n int, timeout time.Duration) []producedFlow {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		got, errs := len(c.flows), c.errs
		c.mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("goflow2: %v", errs)
		}
		if got >= n {
			// Anything beyond n would be a duplicate: give it a moment.
			time.Sleep(100 * time.Millisecond)
			c.mu.Lock()
			defer c.mu.Unlock()
			return append([]producedFlow(nil), c.flows...)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d of %d flow records arrived", timeout, got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rateEvent is a sampled UDP packet of flow port, sampled at 1 in rate.
func rateEvent(port uint16, rate uint32, ns uint64) datapath.Event {
	return datapath.Event{
		BootNs:     ns,
		Src:        netip.MustParseAddr("198.18.0.1").As16(),
		Dst:        netip.MustParseAddr("198.19.0.1").As16(),
		Ifindex:    2,
		Len:        100,
		SrcPort:    port,
		DstPort:    53,
		Proto:      17,
		SampleRate: rate,
	}
}

// A sample rate change while flows are active: the flows sampled at 1 end
// when their first packet at 1000 arrives or at the flush, and every
// record must reach goflow2 under the rate that sampled it, whatever
// order the queue holds them in. The exporter starts announcing 1000, the
// new rate, as an agent that has just changed it would.
func TestExporterRecordsKeepTheirRate(t *testing.T) {
	col := startProducerCollector(t)
	e := newTestExporter(t, Config{Collector: col.addr.String(), SampleRate: 1000, TemplateRefresh: time.Hour})
	tab := flow.NewTable(flow.Options{Sinks: []flow.Sink{e}})

	// Ports 1-50 are sampled at 1 (3 packets each); ports 1-10 then get
	// 2 packets at 1000, and ports 101-120 only see rate 1000 (1 packet).
	var evs []datapath.Event
	for p := uint16(1); p <= 50; p++ {
		for range 3 {
			evs = append(evs, rateEvent(p, 1, 1))
		}
	}
	tab.UpdateBatch(evs)
	evs = evs[:0]
	for p := uint16(1); p <= 10; p++ {
		evs = append(evs, rateEvent(p, 1000, 2), rateEvent(p, 1000, 3))
	}
	for p := uint16(101); p <= 120; p++ {
		evs = append(evs, rateEvent(p, 1000, 2))
	}
	tab.UpdateBatch(evs)
	tab.Flush(flow.EndForced)

	flows := col.waitFlows(t, 50+10+20, 5*time.Second)
	type key struct {
		port uint16
		rate uint64
	}
	got := map[key]uint64{} // packets
	for _, f := range flows {
		got[key{f.SrcPort, f.SamplingRate}] += f.Packets
	}
	want := map[key]uint64{}
	for p := uint16(1); p <= 50; p++ {
		want[key{p, 1}] = 3
	}
	for p := uint16(1); p <= 10; p++ {
		want[key{p, 1000}] = 2
	}
	for p := uint16(101); p <= 120; p++ {
		want[key{p, 1000}] = 1
	}
	if len(flows) != len(want) {
		t.Errorf("%d records, want %d", len(flows), len(want))
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("port %d at rate %d: %d packets, want %d", k.port, k.rate, got[k], w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("port %d read back at rate %d: %d packets", k.port, k.rate, got[k])
		}
	}
	var estimated uint64
	for _, f := range flows {
		estimated += f.Packets * f.SamplingRate
	}
	if w := uint64(50*3 + 10*2*1000 + 20*1000); estimated != w {
		t.Errorf("estimated packets %d, want %d", estimated, w)
	}
}

// Active-timeout delta records through the encoder and goflow2: each is
// flowEndReason 2 but the last, they tile time in milliseconds, and they
// add up to the packets sent.
func TestExporterActiveTimeoutDeltas(t *testing.T) {
	col := startCollector(t, "udp4", "127.0.0.1:0")
	e := newTestExporter(t, Config{Collector: col.addr.String(), SampleRate: 10, TemplateRefresh: time.Hour})
	tab := flow.NewTable(flow.Options{Sinks: []flow.Sink{e}, ActiveTimeout: 5 * time.Second, IdleTimeout: time.Minute})
	const t0 = uint64(time.Hour)
	sent := 0
	for s := uint64(0); s < 60; s++ {
		now := t0 + s*uint64(time.Second)
		ev := rateEvent(7, 10, now+uint64(s%3)*uint64(time.Millisecond)) // off the second: ms matter
		tab.Update(&ev)
		sent++
		tab.Sweep(int64(now))
	}
	// One packet after the last sweep: the flush has a rest to end.
	ev := rateEvent(7, 10, t0+60*uint64(time.Second))
	tab.Update(&ev)
	sent++
	tab.Flush(flow.EndForced)
	msgs := col.waitFor(t, 5*time.Second, "the last record", func(m []decodedMessage) bool {
		for _, msg := range m {
			for _, f := range msg.Flows {
				if f.Reason == uint8(flow.EndForced) {
					return true
				}
			}
		}
		return false
	})
	var recs []decodedFlow
	for _, m := range msgs {
		recs = append(recs, m.Flows...)
	}
	if len(recs) < 60/5-1 {
		t.Fatalf("%d records for 60 s at active timeout 5 s", len(recs))
	}
	var packets uint64
	for i, r := range recs {
		packets += r.Packets
		last := i == len(recs)-1
		if want := uint8(flow.EndActiveTimeout); !last && r.Reason != want {
			t.Errorf("record %d: flowEndReason %d, want %d", i, r.Reason, want)
		}
		if i > 0 && r.StartMs != recs[i-1].EndMs {
			t.Errorf("record %d starts at %d ms, the previous ended at %d ms", i, r.StartMs, recs[i-1].EndMs)
		}
	}
	if packets != uint64(sent) {
		t.Fatalf("records add up to %d packets, sent %d", packets, sent)
	}
}

// A flush far larger than the queue (shutdown, rate change, interface
// removal, table shrink) reaches the collector whole.
func TestExporterLargeFlushDropsNothing(t *testing.T) {
	const flows = 250_000
	col := startProducerCollector(t)
	e := newTestExporter(t, Config{Collector: col.addr.String(), SampleRate: 1, MaxMessageSize: 65000})
	tab := flow.NewTable(flow.Options{MaxFlows: flows, Sinks: []flow.Sink{e}})
	evs := make([]datapath.Event, 0, 4096)
	for i := range flows {
		ev := rateEvent(uint16(i), 1, 1)
		ev.DstPort = uint16(i >> 16)
		evs = append(evs, ev)
		if len(evs) == cap(evs) || i == flows-1 {
			tab.UpdateBatch(evs)
			evs = evs[:0]
		}
	}
	if tab.Active() != flows {
		t.Fatalf("table holds %d flows, want %d", tab.Active(), flows)
	}
	tab.Flush(flow.EndForced)
	got := col.waitFlows(t, flows, 60*time.Second)
	if s := e.Stats(); len(got) != flows || s.Dropped != 0 || s.Records != flows {
		t.Fatalf("collector got %d records, exporter sent %d and dropped %d; want %d, %d, 0",
			len(got), s.Records, s.Dropped, flows, flows)
	}
}

// While a flush waits for the queue, records the collector ends live still
// find room: the flush leaves a quarter of the queue to them.
func TestExporterFlushLeavesRoomForLive(t *testing.T) {
	col := startCollector(t, "udp4", "127.0.0.1:0")
	e, err := New(Config{Collector: col.addr.String(), QueueSize: 8, Deferred: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		e.ExportFlowsPaced(testRecords(20)) // the sender is not running yet
	}()
	// Poll until the flush has filled its share and waits.
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.mu.Lock()
		queued := len(e.queue)
		e.mu.Unlock()
		if queued == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flush queued %d records, want 6 of 8", queued)
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.ExportFlows(testRecords(2))
	if d := e.Stats().Dropped; d != 0 {
		t.Fatalf("live records dropped while a flush waits: %d", d)
	}
	e.Start()
	<-flushed
	col.waitFor(t, 5*time.Second, "all 22 records", func(m []decodedMessage) bool { return countFlows(m) == 22 })
	if d := e.Stats().Dropped; d != 0 {
		t.Fatalf("dropped %d", d)
	}
}
