// SPDX-License-Identifier: AGPL-3.0-only

// Package ipfix exports ended flows to IPFIX collectors over UDP (RFC
// 7011), with an encoder of our own: templates for IPv4 and IPv6 flows,
// an options record carrying the sampling rate and options records naming
// the attached interfaces. An Exporter serves one collector; a Fanout
// hands records to several, each with its own socket, queue and sender.
package ipfix

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepbrobd/rfm/internal/flow"
)

// Defaults applied to zero Config fields.
const (
	DefaultObservationDomainID = 1
	DefaultTemplateRefresh     = 60 * time.Second
	DefaultMaxMessageSize      = 1400
	DefaultQueueSize           = 65536
)

const (
	// flushInterval bounds how long a record waits in a partly filled
	// message before it is sent.
	flushInterval = time.Second
	// writeTimeout bounds one send, so a full socket buffer costs an
	// error instead of a stalled sender.
	writeTimeout = time.Second
	// closeTimeout bounds the final flush in Close.
	closeTimeout = 2 * time.Second
	// pacedWait bounds how long ExportFlowsPaced waits for the sender to
	// take the queue; only a sender stuck that long makes it drop.
	pacedWait = 5 * time.Second
	// warnInterval spaces out warnings about failing sends.
	warnInterval = time.Minute
)

// Config configures an Exporter. Zero fields take the defaults above.
type Config struct {
	Collector string // collector host:port, resolved once in New
	// Name is the collector label of the exporter's metrics; "" uses
	// Collector as written.
	Name                string
	Bind                string // local host:port for the socket; "" lets the kernel choose
	ObservationDomainID uint32
	TemplateRefresh     time.Duration // templates and options are resent this often
	MaxMessageSize      int           // bytes per UDP payload, 512..65507
	// SampleRate is the 1-in-N rate announced before the first record,
	// and the rate of records whose SampleRate is 0; 0 means 1.
	SampleRate uint32
	QueueSize  int // records waiting for the sender before drops
	// Deferred leaves the sender stopped until Start, so the caller can
	// first exclude the exporter's socket from sampling (its templates
	// go out as soon as the sender runs).
	Deferred bool
	// ReusePort binds with SO_REUSEPORT, so a replacement exporter can
	// bind the same fixed port while this one flushes (reuseport.go).
	ReusePort bool
	// Fields are the optional elements the flow templates carry
	// (fields.go).
	Fields Fields
	// Optional names the groups of optional information elements the
	// flow templates carry after Fields (GroupBGP, GroupBGPCommunities;
	// optional.go).
	Optional []string
}

// Interface names one attached interface for the interface options record.
type Interface struct {
	Index       uint32
	Name        string
	Description string
}

// Exporter sends flow records to one IPFIX collector. It implements
// flow.Sink and prometheus.Collector. ExportFlows only queues; one sender
// goroutine encodes and sends.
type Exporter struct {
	log  *slog.Logger
	name string
	conn *net.UDPConn
	// write sends one message; conn.Write except in tests that make a
	// collector's sends stall.
	write     func([]byte) (int, error)
	pacedWait time.Duration
	local     netip.AddrPort
	remote    netip.AddrPort
	domainID  uint32
	refresh   time.Duration
	limit     int

	defaultRate uint32 // Config.SampleRate
	communities bool   // GroupBGPCommunities enabled

	mu            sync.Mutex
	queue         []flowEntry   // records waiting for the sender, at most limit
	queueComms    communityList // their communities (flowEntry.communities)
	taken         chan struct{} // closed when the sender takes the queue
	closed        bool
	interfaces    []Interface // replaced, never modified in place
	ifacesChanged bool

	wake      chan struct{} // capacity 1: something is waiting for the sender
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	startOnce sync.Once
	closeErr  error

	records  atomic.Uint64
	messages atomic.Uint64
	dropped  atomic.Uint64
	errs     atomic.Uint64

	// Owned by the sender goroutine.
	msg           *message
	spare         []flowEntry
	spareComms    communityList
	sequence      uint32 // data records sent before the current message
	templatesDue  bool
	announced     uint32 // rate of the last sampling options record
	nextRefresh   time.Time
	lastWarn      time.Time
	errsSinceWarn uint64

	recordsDesc, messagesDesc, droppedDesc, errorsDesc *prometheus.Desc
}

var _ flow.Sink = (*Exporter)(nil)

// New resolves the collector, opens the exporter's UDP socket (its source
// port stays the same for the life of the Exporter, since collectors key
// templates by exporter address and port) and starts the sender.
func New(cfg Config, log *slog.Logger) (*Exporter, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// A zero field takes its default.
	cfg.ObservationDomainID = cmp.Or(cfg.ObservationDomainID, DefaultObservationDomainID)
	cfg.TemplateRefresh = cmp.Or(cfg.TemplateRefresh, DefaultTemplateRefresh)
	cfg.MaxMessageSize = cmp.Or(cfg.MaxMessageSize, DefaultMaxMessageSize)
	cfg.SampleRate = cmp.Or(cfg.SampleRate, 1)
	if cfg.TemplateRefresh < 0 {
		return nil, fmt.Errorf("ipfix: template_refresh %s must be positive", cfg.TemplateRefresh)
	}
	if cfg.MaxMessageSize < MinMessageSize || cfg.MaxMessageSize > MaxMessageSize {
		return nil, fmt.Errorf("ipfix: max_message_size %d out of range %d..%d", cfg.MaxMessageSize, MinMessageSize, MaxMessageSize)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Fields&^fieldsAll != 0 {
		return nil, fmt.Errorf("ipfix: unknown optional fields %#x", uint32(cfg.Fields&^fieldsAll))
	}

	lay, err := newLayout(newFlowLayout(cfg.Fields), cfg.Optional)
	if err != nil {
		return nil, err
	}
	// Templates and options go in one message, and a data record fits
	// in any message after one sampling options record.
	if need := headerLen + lay.templatesLen() + setHeaderLen + samplingRecordLen + setHeaderLen + interfaceRecordLen; need > cfg.MaxMessageSize {
		return nil, fmt.Errorf("ipfix: max_message_size %d cannot hold the templates (%d bytes)", cfg.MaxMessageSize, need)
	}
	if need := headerLen + 2*setHeaderLen + samplingRecordLen + max(lay.max4, lay.max6); need > cfg.MaxMessageSize {
		return nil, fmt.Errorf("ipfix: max_message_size %d cannot hold a flow record (%d bytes)", cfg.MaxMessageSize, need)
	}

	raddr, err := net.ResolveUDPAddr("udp", cfg.Collector)
	if err != nil {
		return nil, fmt.Errorf("ipfix: collector %q: %w", cfg.Collector, err)
	}
	if raddr.IP == nil || raddr.IP.IsUnspecified() || raddr.Port == 0 {
		return nil, fmt.Errorf("ipfix: collector %q: need a host and a non-zero port", cfg.Collector)
	}
	var laddr *net.UDPAddr
	if cfg.Bind != "" {
		laddr, err = net.ResolveUDPAddr("udp", cfg.Bind)
		if err != nil {
			return nil, fmt.Errorf("ipfix: bind %q: %w", cfg.Bind, err)
		}
	}
	// A connected socket fixes the 4-tuple (so the datapath can exclude
	// exactly it) and reports ICMP port unreachable as ECONNREFUSED on a
	// later send, which tells us a collector may have lost our templates.
	conn, err := dialUDP(laddr, raddr, cfg.ReusePort)
	if err != nil {
		return nil, fmt.Errorf("ipfix: socket from bind %q to collector %q: %w", cfg.Bind, cfg.Collector, err)
	}

	name := cfg.Name
	if name == "" {
		name = cfg.Collector
	}
	labels := prometheus.Labels{"collector": name}
	e := &Exporter{
		log:         log,
		name:        name,
		conn:        conn,
		write:       conn.Write,
		pacedWait:   pacedWait,
		local:       addrPort(conn.LocalAddr()),
		remote:      addrPort(conn.RemoteAddr()),
		domainID:    cfg.ObservationDomainID,
		refresh:     cfg.TemplateRefresh,
		limit:       cfg.QueueSize,
		defaultRate: cfg.SampleRate,
		announced:   cfg.SampleRate,
		taken:       make(chan struct{}),
		wake:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		msg:         newMessageLayout(cfg.MaxMessageSize, lay),
		communities: slices.Contains(cfg.Optional, GroupBGPCommunities),
		recordsDesc: prometheus.NewDesc("rfm_ipfix_records_total",
			"Flow records sent to the IPFIX collector.", nil, labels),
		messagesDesc: prometheus.NewDesc("rfm_ipfix_messages_total",
			"IPFIX messages sent to the collector.", nil, labels),
		droppedDesc: prometheus.NewDesc("rfm_ipfix_dropped_records_total",
			"Flow records not exported because the queue was full or the send failed.", nil, labels),
		errorsDesc: prometheus.NewDesc("rfm_ipfix_send_errors_total",
			"Failed sends to the IPFIX collector.", nil, labels),
	}
	e.templatesDue = true
	if !cfg.Deferred {
		e.Start()
	}
	log.Debug("ipfix exporter started", "local", e.local, "collector", e.remote, "observation_domain_id", e.domainID)
	return e, nil
}

func addrPort(a net.Addr) netip.AddrPort {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := u.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Stats are the exporter's running totals.
type Stats struct {
	Records  uint64 // data records sent
	Messages uint64 // IPFIX messages sent
	Dropped  uint64 // records dropped because the queue was full
	Errors   uint64 // send errors
}

// Stats reads the running totals.
func (e *Exporter) Stats() Stats {
	return Stats{Records: e.records.Load(), Messages: e.messages.Load(), Dropped: e.dropped.Load(), Errors: e.errs.Load()}
}

// Name is the collector label of the exporter's metrics.
func (e *Exporter) Name() string { return e.name }

// LocalAddr is the socket's source address and port (IPv4 unmapped).
func (e *Exporter) LocalAddr() netip.AddrPort { return e.local }

// RemoteAddr is the collector's resolved address and port (IPv4 unmapped).
func (e *Exporter) RemoteAddr() netip.AddrPort { return e.remote }

// ExportFlows queues records for the sender and never blocks: records that
// do not fit in the queue are dropped and counted. This is the live path
// (flows ended while traffic flows), where only an overload drops.
func (e *Exporter) ExportFlows(recs []flow.Record) {
	if len(recs) == 0 {
		return
	}
	n, _ := e.enqueue(recs, e.limit)
	if n < len(recs) {
		e.dropped.Add(uint64(len(recs) - n))
	}
}

// ExportFlowsPaced queues records like ExportFlows, but when the queue is
// full it waits for the sender to take it, so a flush of any size (shutdown,
// rate change, interface removal, table shrink) is delivered whole. It
// fills the queue to three quarters only, leaving the rest to the records
// the collector ends meanwhile, which a flush must not crowd out. Records
// are dropped (and counted) only once the exporter is closed or the sender
// has taken nothing for pacedWait.
func (e *Exporter) ExportFlowsPaced(recs []flow.Record) {
	timer := time.NewTimer(e.pacedWait)
	defer timer.Stop()
	for len(recs) > 0 {
		n, taken := e.enqueue(recs, e.limit-e.limit/4)
		recs = recs[n:]
		if len(recs) == 0 {
			return
		}
		if taken == nil {
			break // closed
		}
		if n > 0 {
			timer.Reset(e.pacedWait)
		}
		select {
		case <-taken:
		case <-timer.C:
			e.log.Warn("ipfix: the sender took no records for a while; dropping the rest of a flush",
				"collector", e.remote, "dropped", len(recs), "waited", e.pacedWait)
			e.dropped.Add(uint64(len(recs)))
			return
		}
	}
	e.dropped.Add(uint64(len(recs)))
}

// enqueue appends as many of recs as fit below limit records queued and
// wakes the sender. It returns how many it took and, unless the exporter
// is closed, a channel closed when the sender next takes the queue.
func (e *Exporter) enqueue(recs []flow.Record, limit int) (int, <-chan struct{}) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return 0, nil
	}
	n := max(0, min(len(recs), limit-len(e.queue)))
	for i := range n {
		e.queue = append(e.queue, e.entryWithCommunities(&recs[i], &e.queueComms))
	}
	taken := e.taken
	e.mu.Unlock()
	if n > 0 {
		e.notify()
	}
	return n, taken
}

// SetInterfaces replaces the attached interfaces and sends their options
// records at once; they are resent with every template refresh.
func (e *Exporter) SetInterfaces(ifaces []Interface) {
	list := append([]Interface(nil), ifaces...)
	e.mu.Lock()
	e.interfaces = list
	e.ifacesChanged = true
	e.mu.Unlock()
	e.notify()
}

func (e *Exporter) notify() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Close sends what is queued, then closes the socket. The final flush is
// bounded by a short timeout.
// Start runs the sender of an exporter created with Config.Deferred;
// otherwise New has already started it. Calling it again does nothing.
func (e *Exporter) Start() { e.startOnce.Do(func() { go e.run() }) }

func (e *Exporter) Close() error {
	e.Start() // the sender does the final flush and closes done
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		close(e.stop)
		select {
		case <-e.done:
		case <-time.After(closeTimeout):
			e.log.Warn("ipfix: final flush timed out", "collector", e.remote)
		}
		// Closing the socket also ends a send stuck past the timeout.
		if err := e.conn.Close(); err != nil {
			e.closeErr = fmt.Errorf("ipfix: close socket to %s: %w", e.remote, err)
		}
		<-e.done
	})
	return e.closeErr
}

func (e *Exporter) run() {
	defer close(e.done)
	tick := time.NewTicker(flushInterval)
	defer tick.Stop()
	e.step(time.Now(), true) // templates and options go out at start
	for {
		select {
		case <-e.wake:
			e.step(time.Now(), false)
		case now := <-tick.C:
			e.step(now, true)
		case <-e.stop:
			e.step(time.Now(), true)
			return
		}
	}
}

// step takes what was queued, sends options that changed, encodes the
// queued records and, when flush is set, sends the partly filled message.
func (e *Exporter) step(now time.Time, flush bool) {
	e.mu.Lock()
	batch := e.queue
	e.queue = e.spare[:0]
	e.msg.comms, e.queueComms = e.queueComms, e.spareComms[:0]
	if len(batch) > 0 {
		close(e.taken)
		e.taken = make(chan struct{})
	}
	ifaces, ifacesChanged := e.interfaces, e.ifacesChanged
	e.ifacesChanged = false
	e.mu.Unlock()

	refreshDue := !now.Before(e.nextRefresh)
	switch {
	case refreshDue || (ifacesChanged && e.templatesDue):
		e.sendTemplates(now, ifaces)
	case ifacesChanged:
		e.send()
		e.addInterfaces(ifaces)
		e.send()
	}

	// By rate (the one announced last first), then IPv4 before IPv6: a
	// message then holds at most two data sets instead of a new set each
	// time the family changes, and the sampling options record is resent
	// only when the rate really changes.
	if !sameRate(batch, e.announced) {
		announced := e.announced
		slices.SortStableFunc(batch, func(a, b flowEntry) int {
			return cmp.Or(cmp.Compare(b2i(a.rate != announced), b2i(b.rate != announced)), cmp.Compare(a.rate, b.rate))
		})
	}
	for start := 0; start < len(batch); {
		end := start + 1
		for end < len(batch) && batch[end].rate == batch[start].rate {
			end++
		}
		for _, v4 := range [2]bool{true, false} {
			for i := start; i < end; i++ {
				if batch[i].v4 == v4 {
					e.addFlow(now, &batch[i], ifaces)
				}
			}
		}
		start = end
	}
	e.spare = batch[:0]
	// The strings go with the batch: clear them so the spare list does
	// not keep RIB paths alive.
	clear(e.msg.comms)
	e.spareComms, e.msg.comms = e.msg.comms[:0], nil

	if flush {
		e.send()
	}
}

func sameRate(batch []flowEntry, rate uint32) bool {
	for i := range batch {
		if batch[i].rate != rate {
			return false
		}
	}
	return true
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sendTemplates sends what is in the current message, then all templates
// and options records in messages of their own. Data records never share a
// message with them, so a data record always fits in the next message.
// The sampling options record carries the rate announced last, the one
// the next data record was sampled at (addFlow announces a new one first).
func (e *Exporter) sendTemplates(now time.Time, ifaces []Interface) {
	e.send()
	e.templatesDue = false
	e.nextRefresh = now.Add(e.refresh)
	e.msg.addTemplates()
	e.msg.addSampling(e.domainID, e.announced)
	e.addInterfaces(ifaces)
	e.send()
}

func (e *Exporter) addInterfaces(ifaces []Interface) {
	for i := range ifaces {
		if !e.msg.addInterface(&ifaces[i]) {
			e.send()
			e.msg.addInterface(&ifaces[i])
		}
	}
}

// addFlow adds one record, sending the current message when it is full.
// Before a new data message, templates and options go out if they are
// due: by the refresh interval, or after a send error (the collector may
// have restarted and forgotten them). Checking only there bounds resends
// to one templates message per data message while a collector is absent.
//
// A record sampled at another rate than the one announced last starts a
// new message that opens with the sampling options record of its rate:
// collectors (goflow2, nfacctd) apply the sampling options they know when
// a message has been read to all of its records, so records of two rates
// never share a message.
func (e *Exporter) addFlow(now time.Time, f *flowEntry, ifaces []Interface) {
	newRate := f.rate != e.announced
	if newRate {
		e.send()
		e.announced = f.rate
	} else if !e.msg.empty() {
		if e.msg.addFlow(f) {
			return
		}
		e.send()
	}
	if e.templatesDue || !now.Before(e.nextRefresh) {
		e.sendTemplates(now, ifaces)
	} else if newRate {
		e.msg.addSampling(e.domainID, e.announced)
	}
	e.msg.addFlow(f) // fits: the message holds at most one options record
}

// send finishes and sends the current message, if it holds anything. The
// sequence number advances even when the send fails: those records are
// lost, and the gap tells the collector so.
func (e *Exporter) send() {
	if e.msg.empty() {
		return
	}
	now := time.Now()
	b := e.msg.finish(uint32(now.Unix()), e.sequence, e.domainID)
	e.sequence += e.msg.dataRecords
	flows := uint64(e.msg.flowRecords)
	err := e.conn.SetWriteDeadline(now.Add(writeTimeout))
	if err == nil {
		_, err = e.write(b)
	}
	e.msg.reset()
	if err != nil {
		e.errs.Add(1)
		e.dropped.Add(flows)
		// Whatever the cause, the collector may be new and know no
		// templates: send them before the next data.
		e.templatesDue = true
		// An absent collector fails every other send (ECONNREFUSED comes
		// from the ICMP the previous datagram caused): warn once a minute
		// at most, the counter tells the rest.
		e.errsSinceWarn++
		if now.Sub(e.lastWarn) >= warnInterval {
			e.log.Warn("ipfix: sending to the collector failed",
				"collector", e.remote, "err", err, "failures", e.errsSinceWarn)
			e.lastWarn = now
			e.errsSinceWarn = 0
		}
		return
	}
	e.messages.Add(1)
	e.records.Add(flows)
}

// Describe implements prometheus.Collector. The series carry the
// collector label; rfm_errors_total{subsystem="ipfix"} is the Fanout's
// sum over its exporters.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	ch <- e.recordsDesc
	ch <- e.messagesDesc
	ch <- e.droppedDesc
	ch <- e.errorsDesc
}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(e.recordsDesc, prometheus.CounterValue, float64(e.records.Load()))
	ch <- prometheus.MustNewConstMetric(e.messagesDesc, prometheus.CounterValue, float64(e.messages.Load()))
	ch <- prometheus.MustNewConstMetric(e.droppedDesc, prometheus.CounterValue, float64(e.dropped.Load()))
	ch <- prometheus.MustNewConstMetric(e.errorsDesc, prometheus.CounterValue, float64(e.errs.Load()))
}
