// SPDX-License-Identifier: AGPL-3.0-only

// Package bmp is a BGP Monitoring Protocol station (RFC 7854, Loc-RIB
// from RFC 9069) that feeds routes from monitored routers into a RIB.
//
// Each router session has two goroutines: one reads the socket into a
// bounded queue, the other decodes and applies batches of messages to
// the RIB, so a slow RIB write (a peer's full table being flushed) does
// not stop the socket being read. Messages are parsed with gobgp's
// packet/bmp and packet/bgp.
//
// A session is closed, with one log line and the others unaffected,
// when its router is not in the allow list, when max_sessions are
// already open, or when its byte stream breaks: not BMP version 3, a
// declared length under the header size or over max_message_size, or a
// message cut short. A message that frames correctly but does not
// decode is counted and skipped, as are address families other than
// IPv4/IPv6 unicast and Adj-RIB-Out monitoring.
package bmp

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepbrobd/rfm/internal/enrich/rd"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

// Defaults for zero Config fields (and for the config file's keys).
const (
	DefaultMaxSessions    = 64
	DefaultMaxMessageSize = 1 << 20
)

// Config configures a Station. The config file's [agent.enrich.rib.bmp]
// keys are parsed into it (internal/config), with ParseAllow for allow.
type Config struct {
	Host string
	Port int
	// Allow lists the router prefixes allowed to connect; empty allows
	// all. A router's address is unmapped and stripped of its zone before
	// it is compared.
	Allow            []netip.Prefix
	MaxSessions      int      // 0: DefaultMaxSessions
	MaxMessageSize   int      // bytes; 0: DefaultMaxMessageSize
	MaxRoutesPerPeer int      // 0: no limit
	LabelVRFs        []uint64 // route distinguishers whose VRF routes label flows
}

// InitiationTimeout is how long a new session may go without sending
// its Initiation message, which RFC 7854 (4.3) requires first: a
// connection that sends none would otherwise hold one of max_sessions
// for good. Routers send it as soon as they connect.
const InitiationTimeout = 30 * time.Second

const (
	// queueBudget is how many bytes of messages a session may have
	// waiting for the RIB (one message of any size always fits).
	queueBudget = 8 << 20
	// batchMessages is the most messages applied in one RIB transaction.
	// During a table dump every transaction copies the shards it
	// touches, so larger batches copy less: on an IPv6 table, where
	// shards hold a few routes each, 32768 halves the allocations of
	// 8192 and ingests about 1.5 times as fast (BenchmarkDecodeApply,
	// fast/batch8192 vs fast/batch32768), and still commits within
	// about 40 ms. A session with little queued applies what is there.
	batchMessages = 32768
)

// Station accepts BMP sessions and applies them to a RIB.
type Station struct {
	rib         *rib.RIB
	log         *slog.Logger
	ln          net.Listener
	allow       []netip.Prefix
	maxSessions int
	maxMessage  int
	maxRoutes   int           // per peer, 0: no limit
	initTimeout time.Duration // InitiationTimeout; tests shorten it
	c           counters

	mu       sync.Mutex
	sessions map[*session]struct{}
	closed   bool
	wg       sync.WaitGroup

	// tap, if set, receives a copy of every byte read from a router
	// (tests record fixtures with it).
	tap func(router netip.AddrPort) io.Writer
}

// Listen validates cfg and binds the listening socket. Errors are one
// line naming the config key and the bad value.
func Listen(cfg Config, r *rib.RIB, log *slog.Logger) (*Station, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Station{
		rib:         r,
		log:         log,
		maxSessions: cmp.Or(cfg.MaxSessions, DefaultMaxSessions), // 0: the default
		maxMessage:  cmp.Or(cfg.MaxMessageSize, DefaultMaxMessageSize),
		maxRoutes:   cfg.MaxRoutesPerPeer,
		initTimeout: InitiationTimeout,
		sessions:    make(map[*session]struct{}),
	}
	if s.maxSessions < 0 {
		return nil, fmt.Errorf("agent.enrich.rib.bmp.max_sessions: %d: must be positive", cfg.MaxSessions)
	}
	if s.maxMessage < MinMessageSize || s.maxMessage > MaxMessageSize {
		return nil, fmt.Errorf("agent.enrich.rib.bmp.max_message_size: %d: must be between %d and %d", cfg.MaxMessageSize, MinMessageSize, MaxMessageSize)
	}
	if s.maxRoutes < 0 {
		return nil, fmt.Errorf("agent.enrich.rib.bmp.max_routes_per_peer: %d: must be 0 (no limit) or positive", cfg.MaxRoutesPerPeer)
	}
	s.allow = cfg.Allow
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent.enrich.rib.bmp: %w", err)
	}
	s.ln = ln
	if len(cfg.LabelVRFs) > 0 {
		r.SetLabelVRFs(cfg.LabelVRFs)
	}
	return s, nil
}

// Bounds of Config.MaxMessageSize: the largest BGP message without the
// extended message capability (RFC 8654, 4096 bytes) must fit, which
// also covers the largest fixed part of a message (common and per-peer
// headers, a BGP header, Peer Up's addresses and ports); 16 MiB - 1 caps
// what one router can make us buffer.
const (
	MinMessageSize = 4096
	MaxMessageSize = 1<<24 - 1
)

// ParseAllow reads one allow entry: a prefix, or a single address taken
// as a full-length prefix. The result is masked and, since routers are
// compared by their unmapped address, an IPv4-mapped IPv6 address stands
// for its IPv4 address. Zones are refused: they never match.
func ParseAllow(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, false
		}
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

// Addr is the listening address.
func (s *Station) Addr() net.Addr { return s.ln.Addr() }

// Sessions is the number of open BMP sessions.
func (s *Station) Sessions() int { return int(s.c.sessions.Load()) }

// Serve accepts sessions until ctx is done or Close is called, then
// closes every session and returns once they have ended.
func (s *Station) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.Close)
	defer stop()
	defer s.wg.Wait()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: wait, retry.
			s.c.errors.Add(1)
			s.log.Warn("bmp: accept failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.accept(conn)
	}
}

// Close stops accepting and closes all sessions. Their routes stay in
// the RIB for the keep period.
func (s *Station) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.ln.Close()
	for ss := range s.sessions {
		ss.conn.Close()
	}
}

func (s *Station) allowed(a netip.Addr) bool {
	if len(s.allow) == 0 {
		return true
	}
	for _, p := range s.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (s *Station) accept(conn net.Conn) {
	var remote netip.AddrPort
	if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		remote = ta.AddrPort()
	}
	// Zones never match a prefix; routers are told apart by address.
	remote = netip.AddrPortFrom(remote.Addr().Unmap().WithZone(""), remote.Port())
	reject := func(reason string) {
		s.c.errors.Add(1)
		s.log.Warn("bmp: session rejected", "router", remote, "reason", reason)
		conn.Close()
	}
	if !s.allowed(remote.Addr()) {
		reject("address not in agent.enrich.rib.bmp.allow")
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	if len(s.sessions) >= s.maxSessions {
		s.mu.Unlock()
		reject("max_sessions (" + strconv.Itoa(s.maxSessions) + ") reached")
		return
	}
	ss := &session{st: s, conn: conn, remote: remote, q: newQueue(max(queueBudget, s.maxMessage))}
	s.sessions[ss] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go ss.run()
}

// session is one router's BMP connection.
type session struct {
	st     *Station
	conn   net.Conn
	remote netip.AddrPort
	q      *queue
	rs     *rib.Session // nil until the first message is applied
}

func (ss *session) run() {
	st := ss.st
	defer st.wg.Done()
	st.c.sessions.Add(1)
	st.log.Info("bmp: session opened", "router", ss.remote)
	done := make(chan error, 1)
	go func() { done <- ss.process() }()
	readErr := ss.read()
	ss.q.close()
	procErr := <-done
	ss.conn.Close()
	st.mu.Lock()
	delete(st.sessions, ss)
	closing := st.closed
	st.mu.Unlock()
	st.c.sessions.Add(-1)

	switch {
	case procErr != nil:
		st.log.Info("bmp: session closed", "router", ss.remote, "reason", procErr.Error())
	case readErr == nil || errors.Is(readErr, io.EOF):
		st.log.Info("bmp: session closed", "router", ss.remote, "reason", "connection closed by router")
	case closing && errors.Is(readErr, net.ErrClosed):
		st.log.Info("bmp: session closed", "router", ss.remote, "reason", "station shutting down")
	default:
		st.c.errors.Add(1)
		st.log.Warn("bmp: session closed", "router", ss.remote, "reason", readErr.Error())
	}
}

var errTruncated = errors.New("message cut short by end of stream")

// read frames messages off the socket into the queue until the stream
// ends or breaks. io.EOF means a clean end between messages.
func (ss *session) read() error {
	var src io.Reader = ss.conn
	if tap := ss.st.tap; tap != nil {
		src = io.TeeReader(src, tap(ss.remote))
	}
	fr := newFramer(src, ss.st.maxMessage)
	d := ss.st.initTimeout
	waiting := d > 0 // for Initiation
	if waiting {
		ss.conn.SetReadDeadline(time.Now().Add(d))
	}
	for {
		msg, err := fr.next()
		if err != nil {
			if waiting && errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("no Initiation message within %s (RFC 7854 requires it first)", d)
			}
			return err
		}
		if waiting && msg[5] == typeInitiation {
			waiting = false
			ss.conn.SetReadDeadline(time.Time{})
		}
		if !ss.q.push(msg) {
			return nil // the processor stopped
		}
	}
}

// framer splits a BMP byte stream into messages.
type framer struct {
	r    *bufio.Reader
	max  int
	slab []byte  // Route Monitoring messages are cut from here
	hdr  [6]byte // here, not on the stack: io.ReadFull would move it to the heap
}

// slabSize is the chunk Route Monitoring messages are cut from: one
// allocation for many small messages. Only they share chunks, because
// nothing keeps a reference into them once decoded (other messages,
// such as Peer Up, may be kept for the life of a peer).
const slabSize = 64 << 10

func newFramer(r io.Reader, maxMessage int) *framer {
	return &framer{r: bufio.NewReaderSize(r, 64<<10), max: maxMessage}
}

func (f *framer) next() ([]byte, error) {
	hdr := &f.hdr
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errTruncated
		}
		return nil, err
	}
	if hdr[0] != 3 {
		return nil, fmt.Errorf("not BMP version 3 (version byte %d)", hdr[0])
	}
	n := binary.BigEndian.Uint32(hdr[1:5])
	switch {
	case n < 6:
		return nil, fmt.Errorf("declared message length %d is under the 6-byte header", n)
	case n > uint32(f.max):
		return nil, fmt.Errorf("declared message length %d is over max_message_size %d", n, f.max)
	}
	var msg []byte
	if hdr[5] == typeRouteMonitoring && n <= slabSize/4 {
		if cap(f.slab)-len(f.slab) < int(n) {
			f.slab = make([]byte, 0, slabSize)
		}
		k := len(f.slab)
		f.slab = f.slab[:k+int(n)]
		msg = f.slab[k : k+int(n) : k+int(n)]
	} else {
		msg = make([]byte, n)
	}
	copy(msg, hdr[:])
	if _, err := io.ReadFull(f.r, msg[6:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errTruncated
		}
		return nil, err
	}
	return msg, nil
}

// process decodes queued messages and applies them to the RIB in
// batches, until the queue is closed and drained or the router sends
// Termination. It disconnects the session from the RIB when it ends.
func (ss *session) process() error {
	dec := newDecoder(&ss.st.c)
	var msgs [][]byte
	var ops []op
	for {
		var open bool
		msgs, open = ss.q.pop(msgs[:0], batchMessages)
		ops = opsFor(ops, len(msgs))
		var err error
		for _, m := range msgs {
			if ops, err = dec.decode(m, ops); err != nil {
				break
			}
		}
		clear(msgs)
		final := err != nil || !open
		ss.apply(ops, final)
		if len(msgs) < batchMessages/64 && cap(ops) > 4*batchMessages/64 {
			// The table dump is over: do not keep its buffers for the
			// trickle of updates that follows.
			msgs, ops = nil, nil
		}
		if err != nil {
			// Termination: the router closes the connection next.
			ss.q.close()
			ss.conn.Close()
			return err
		}
		if !open {
			return nil
		}
	}
}

// opsFor empties ops for a batch of n messages, making room for one op
// per message at once: a table dump's first batch would otherwise grow
// the slice a dozen times.
func opsFor(ops []op, n int) []op {
	if cap(ops) < n {
		return make([]op, 0, n)
	}
	return ops[:0]
}

// apply runs ops in one RIB transaction; final also ends the session.
func (ss *session) apply(ops []op, final bool) {
	if len(ops) == 0 && (!final || ss.rs == nil) {
		return
	}
	tx := ss.st.rib.Begin()
	defer tx.Commit()
	for i := range ops {
		o := &ops[i]
		if ss.rs == nil {
			ss.rs = tx.Connect(rib.RouterKey{Addr: ss.remote.Addr(), Name: o.name}, o.descr)
			if o.kind == opConnect {
				continue
			}
		}
		if o.kind >= opAnnounce && o.peer.peer == nil {
			// Its Peer Up op was lost to a message that failed to decode.
			o.peer.peer = tx.PeerUp(ss.rs, o.peer.key, o.peer.asn, o.peer.bgpID)
		}
		switch o.kind {
		case opPeerUp:
			o.peer.peer = tx.PeerUp(ss.rs, o.peer.key, o.peer.asn, o.peer.bgpID)
		case opPeerDown:
			tx.PeerDown(o.peer.peer)
		case opAnnounce:
			tx.Announce(o.peer.peer, o.view, o.prefix, o.pathID, o.path)
			if lim := ss.st.maxRoutes; lim > 0 && o.peer.peer.Routes() > lim {
				ss.overLimit(tx, o.peer.peer)
			}
		case opWithdraw:
			tx.Withdraw(o.peer.peer, o.view, o.prefix, o.pathID)
		case opEndOfRIB:
			tx.EndOfRIB(o.peer.peer, o.view, o.ipv6)
		}
	}
	if final && ss.rs != nil {
		tx.Disconnect(ss.rs)
	}
}

// overLimit drops the routes of a peer over max_routes_per_peer. The
// peer's handle is gone after that, so the rest of its routes are
// ignored until the router reports it up again (a new Peer Up).
func (ss *session) overLimit(tx *rib.Tx, p *rib.Peer) {
	st := ss.st
	st.c.routeLimit.Add(1)
	k := p.Key()
	st.log.Warn("bmp: peer over agent.enrich.rib.bmp.max_routes_per_peer: its routes dropped until it comes up again",
		"router", ss.remote.Addr(), "router_name", p.Router().Name, "peer", k.Addr, "peer_type", k.Type,
		"rd", rd.Format(k.Distinguisher), "limit", st.maxRoutes)
	tx.PeerDown(p)
}

// queue holds framed messages between the reader and the processor,
// bounded by their total size.
type queue struct {
	mu       sync.Mutex
	notEmpty sync.Cond
	notFull  sync.Cond
	msgs     [][]byte
	head     int
	bytes    int
	budget   int
	closed   bool
}

func newQueue(budget int) *queue {
	q := &queue{budget: budget}
	q.notEmpty.L = &q.mu
	q.notFull.L = &q.mu
	return q
}

// push adds msg, waiting while the queue is over budget. It reports
// false once the queue is closed.
func (q *queue) push(msg []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.closed && q.bytes > 0 && q.bytes+len(msg) > q.budget {
		q.notFull.Wait()
	}
	if q.closed {
		return false
	}
	q.msgs = append(q.msgs, msg)
	q.bytes += len(msg)
	q.notEmpty.Signal()
	return true
}

// pop appends up to n messages to dst, waiting for at least one. open
// is false when the queue is closed and nothing is left after these.
func (q *queue) pop(dst [][]byte, n int) (out [][]byte, open bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.closed && q.head == len(q.msgs) {
		q.notEmpty.Wait()
	}
	k := min(n, len(q.msgs)-q.head)
	for _, m := range q.msgs[q.head : q.head+k] {
		q.bytes -= len(m)
	}
	dst = append(dst, q.msgs[q.head:q.head+k]...)
	clear(q.msgs[q.head : q.head+k])
	q.head += k
	if q.head == len(q.msgs) {
		q.msgs, q.head = q.msgs[:0], 0
	} else if q.head > 1024 && 2*q.head > len(q.msgs) {
		// The reader keeps up: move the rest to the front so the
		// slice does not grow forever.
		n := copy(q.msgs, q.msgs[q.head:])
		clear(q.msgs[n:])
		q.msgs, q.head = q.msgs[:n], 0
	}
	q.notFull.Broadcast()
	return dst, !(q.closed && q.head == len(q.msgs))
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.notEmpty.Broadcast()
	q.notFull.Broadcast()
}

// counters are the station's metrics.
type counters struct {
	sessions atomic.Int64
	messages [numTypes]atomic.Uint64
	skipped  [numSkips]atomic.Uint64
	errors   atomic.Uint64
	// routeLimit counts peers whose routes were dropped for going over
	// max_routes_per_peer.
	routeLimit atomic.Uint64
}

func (c *counters) message(typ byte) {
	if int(typ) >= numTypes-1 {
		typ = numTypes - 1
	}
	c.messages[typ].Add(1)
}

// skip counts a skipped message or part; malformed input is an error.
func (c *counters) skip(reason int) {
	c.skipped[reason].Add(1)
	if reason == skipMalformed {
		c.errors.Add(1)
	}
}
