// SPDX-License-Identifier: AGPL-3.0-only

// Package ifwatch follows the host's network interfaces over netlink and
// tells the agent which ones to attach its programs to and detach them
// from: links that appear, vanish, are renamed or moved to another network
// namespace, and changes of the configured selection.
package ifwatch

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Link is a network interface the agent should monitor.
type Link struct {
	Index int
	Name  string
}

// Options configures a Watcher.
type Options struct {
	// Match reports whether an interface name is selected by the config.
	Match func(name string) bool
	// SkipLoopback leaves links with IFF_LOOPBACK unattached whatever
	// Match says.
	SkipLoopback bool
	// Select, if set, replaces Match and SkipLoopback: it decides from the
	// name and whether the link has IFF_LOOPBACK, so a selection where
	// "*" excludes loopback but a named "lo" includes it is expressed
	// without the agent looking the link up itself.
	Select func(name string, loopback bool) bool
	// Attach is called for a link that appeared or now matches. An error
	// is logged and the attach is retried on the next change of that link
	// (any RTM_NEWLINK for it), on SetMatch and on a resync.
	Attach func(Link) error
	// Detach is called when an attached link vanished (deleted, renamed
	// so it no longer matches, moved to another namespace) or no longer
	// matches after SetMatch. May be nil.
	Detach func(Link)
	// Logger receives the watcher's logs; nil discards them.
	Logger *slog.Logger
	// Namespace is the network namespace to watch; zero means the
	// caller's current one. Meant for tests.
	Namespace netns.NsHandle

	// Test knobs: the netlink socket's receive buffer and the update
	// channel's capacity (zero picks the defaults).
	socketBuffer  int
	updateBacklog int
}

const (
	defaultSocketBuffer  = 1 << 20
	defaultUpdateBacklog = 256
	// How often listing is retried when the kernel reports the dump was
	// interrupted by a concurrent change.
	dumpRetries = 5
	// Bounds for retrying a failed subscription or listing.
	minRetry = 100 * time.Millisecond
	maxRetry = 10 * time.Second
)

// Watcher follows links and calls Options.Attach and Options.Detach, all
// from one goroutine, in order, never concurrently.
type Watcher struct {
	opts Options
	log  *slog.Logger
	nl   *netlink.Handle // for listing links in the watched namespace

	// Owned by the event goroutine (and by Start before it runs).
	sel     selection
	present map[int]candidate // every link of the namespace, as last seen
	// attached is written only by the event goroutine, under mu, so
	// that goroutine reads it without mu and Attached reads it with.
	attached map[int]Link
	warned   map[int]string // index -> name whose attach failure was already logged at Warn
	sub      *subscription

	mu sync.Mutex

	errors atomic.Uint64

	resync    chan struct{} // a subscription error asks for a re-list
	setMatch  chan matchRequest
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// matchRequest is a SetMatch or SetSelect for the event goroutine.
type matchRequest struct {
	sel  selection
	done chan struct{}
}

// subscription is one netlink link subscription; netlink closes updates
// when its socket fails, after which a new one is needed.
type subscription struct {
	updates chan netlink.LinkUpdate
	done    chan struct{}
	closing atomic.Bool
}

// close stops the subscription and drains its channel so netlink's reader
// goroutine, possibly blocked on a send, can exit.
func (s *subscription) close() {
	if s.closing.Swap(true) {
		return
	}
	close(s.done)
	for range s.updates {
	}
}

var errorsDesc = prometheus.NewDesc("rfm_errors_total", "Errors by subsystem.", nil, prometheus.Labels{"subsystem": "ifwatch"})

// Start subscribes to link changes, then lists the existing links and
// attaches every one that matches (so no link created in between is
// missed), and returns; later changes are handled in a goroutine until
// Close.
func Start(o Options) (*Watcher, error) {
	if o.Attach == nil {
		return nil, errors.New("ifwatch: Options.Attach is nil")
	}
	if o.Match == nil && o.Select == nil {
		return nil, errors.New("ifwatch: neither Options.Match nor Options.Select is set")
	}
	if o.socketBuffer == 0 {
		o.socketBuffer = defaultSocketBuffer
	}
	if o.updateBacklog == 0 {
		o.updateBacklog = defaultUpdateBacklog
	}
	w := &Watcher{
		opts:     o,
		log:      o.Logger,
		sel:      selection{match: o.Match, skipLoopback: o.SkipLoopback, sel: o.Select},
		present:  map[int]candidate{},
		attached: map[int]Link{},
		warned:   map[int]string{},
		resync:   make(chan struct{}, 1),
		setMatch: make(chan matchRequest),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if o.Namespace != 0 {
		w.nl, err = netlink.NewHandleAt(o.Namespace)
	} else {
		w.nl, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("ifwatch: opening netlink handle: %w", err)
	}
	w.sub, err = w.subscribe()
	if err != nil {
		w.nl.Close()
		return nil, err
	}
	links, err := w.list()
	if err != nil {
		w.sub.close()
		w.nl.Close()
		return nil, err
	}
	w.replacePresent(links)
	go w.run()
	return w, nil
}

// SetMatch replaces the selection (config reload): links that no longer
// match are detached and links that now match are attached before it
// returns. It keeps Options.SkipLoopback and drops a Select. It must not
// be called from Attach or Detach. After Close it does nothing.
func (w *Watcher) SetMatch(match func(string) bool) {
	w.replaceSelection(selection{match: match, skipLoopback: w.opts.SkipLoopback})
}

// SetSelect is SetMatch for a selection that sees the loopback flag (see
// Options.Select).
func (w *Watcher) SetSelect(sel func(name string, loopback bool) bool) {
	w.replaceSelection(selection{sel: sel})
}

func (w *Watcher) replaceSelection(sel selection) {
	req := matchRequest{sel: sel, done: make(chan struct{})}
	select {
	case w.setMatch <- req:
		<-req.done
	case <-w.done:
	}
}

// Attached lists the links currently attached, by index.
func (w *Watcher) Attached() []Link {
	w.mu.Lock()
	out := make([]Link, 0, len(w.attached))
	for _, l := range w.attached {
		out = append(out, l)
	}
	w.mu.Unlock()
	slices.SortFunc(out, func(a, b Link) int { return cmp.Compare(a.Index, b.Index) })
	return out
}

// Close stops following links. It does not detach anything: the agent
// does that at shutdown.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done
		w.nl.Close()
	})
	return nil
}

// Describe implements prometheus.Collector.
func (w *Watcher) Describe(ch chan<- *prometheus.Desc) { ch <- errorsDesc }

// Collect implements prometheus.Collector: failed attaches and netlink
// subscription or listing errors.
func (w *Watcher) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(errorsDesc, prometheus.CounterValue, float64(w.errors.Load()))
}

func (w *Watcher) subscribe() (*subscription, error) {
	s := &subscription{
		updates: make(chan netlink.LinkUpdate, w.opts.updateBacklog),
		done:    make(chan struct{}),
	}
	opts := netlink.LinkSubscribeOptions{
		ReceiveBufferSize: w.opts.socketBuffer,
		// Called from netlink's reader goroutine; on a receive error
		// (ENOBUFS when the kernel dropped events) the reader also closes
		// updates, which the event loop answers with a new subscription.
		ErrorCallback: func(err error) {
			if s.closing.Load() {
				return
			}
			w.errors.Add(1)
			w.log.Warn("ifwatch: netlink link subscription error, re-listing links", "err", err)
			select {
			case w.resync <- struct{}{}:
			default:
			}
		},
	}
	if w.opts.Namespace != 0 {
		ns := w.opts.Namespace
		opts.Namespace = &ns
	}
	if err := netlink.LinkSubscribeWithOptions(s.updates, s.done, opts); err != nil {
		return nil, fmt.Errorf("ifwatch: subscribing to netlink link changes: %w", err)
	}
	return s, nil
}

// list dumps the namespace's links, retrying while the kernel reports
// that a concurrent change interrupted the dump.
func (w *Watcher) list() ([]candidate, error) {
	var links []netlink.Link
	var err error
	for range dumpRetries {
		links, err = w.nl.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	switch {
	case errors.Is(err, netlink.ErrDumpInterrupted):
		// Use the possibly stale dump: the events that interrupted it are
		// queued on the subscription and correct it.
		w.log.Debug("ifwatch: link dump still interrupted after retries", "retries", dumpRetries)
	case err != nil:
		w.errors.Add(1)
		return nil, fmt.Errorf("ifwatch: listing links: %w", err)
	}
	out := make([]candidate, 0, len(links))
	for _, l := range links {
		out = append(out, toCandidate(l.Attrs()))
	}
	return out, nil
}

func toCandidate(a *netlink.LinkAttrs) candidate {
	return candidate{Link: Link{Index: a.Index, Name: a.Name}, Loopback: a.Flags&net.FlagLoopback != 0}
}

// replacePresent makes links the complete set of present links and
// brings the attached set in line with it.
func (w *Watcher) replacePresent(links []candidate) {
	w.present = make(map[int]candidate, len(links))
	for _, c := range links {
		w.present[c.Index] = c
	}
	for idx := range w.warned {
		if _, ok := w.present[idx]; !ok {
			delete(w.warned, idx)
		}
	}
	w.apply(diff(w.attached, w.sel.wanted(w.present)))
}

func (w *Watcher) run() {
	defer close(w.done)
	var retry <-chan time.Time // set while a re-subscribe or re-list is pending
	backoff := minRetry
	for {
		var updates chan netlink.LinkUpdate
		if w.sub != nil {
			updates = w.sub.updates
		}
		select {
		case <-w.stop:
			if w.sub != nil {
				w.sub.close()
			}
			return
		case u, ok := <-updates:
			if ok {
				w.handle(u)
				continue
			}
			// netlink's reader stopped (receive error): whatever happened
			// meanwhile is only known from a fresh subscription and list.
			w.sub.close()
			w.sub = nil
			if w.recover() {
				backoff = minRetry
			} else {
				retry, backoff = time.After(backoff), min(2*backoff, maxRetry)
			}
		case <-retry:
			retry = nil
			if w.recover() {
				backoff = minRetry
			} else {
				retry, backoff = time.After(backoff), min(2*backoff, maxRetry)
			}
		case <-w.resync:
			if w.sub == nil {
				continue // the pending recover lists anyway
			}
			if links, err := w.list(); err != nil {
				w.log.Warn("ifwatch: re-listing links failed, retrying", "err", err)
				retry, backoff = time.After(backoff), min(2*backoff, maxRetry)
			} else {
				w.replacePresent(links)
			}
		case req := <-w.setMatch:
			w.sel = req.sel
			w.apply(diff(w.attached, w.sel.wanted(w.present)))
			close(req.done)
		}
	}
}

// recover subscribes again if needed and re-lists; false means retry later.
func (w *Watcher) recover() bool {
	if w.sub == nil {
		s, err := w.subscribe()
		if err != nil {
			w.errors.Add(1)
			w.log.Warn("ifwatch: netlink re-subscribe failed, retrying", "err", err)
			return false
		}
		w.sub = s
	}
	links, err := w.list()
	if err != nil {
		w.log.Warn("ifwatch: re-listing links failed, retrying", "err", err)
		return false
	}
	w.replacePresent(links)
	return true
}

// handle applies one link notification.
func (w *Watcher) handle(u netlink.LinkUpdate) {
	// AF_BRIDGE notifications are about bridge port state (a port leaving
	// its bridge is an RTM_DELLINK of the port), not the link itself.
	if u.IfInfomsg.Family != unix.AF_UNSPEC {
		return
	}
	c := toCandidate(u.Link.Attrs())
	c.Index = int(u.IfInfomsg.Index)
	var want bool
	switch u.Header.Type {
	case unix.RTM_NEWLINK:
		w.present[c.Index] = c
		want = w.sel.wants(c)
	case unix.RTM_DELLINK:
		delete(w.present, c.Index)
		delete(w.warned, c.Index)
	default:
		return
	}
	cur, curOK := w.attached[c.Index]
	w.apply(reconcile(cur, curOK, c.Link, want))
}

// apply makes the callbacks and records their outcome.
func (w *Watcher) apply(acts []action) {
	if len(acts) == 0 {
		return
	}
	for _, a := range acts {
		l := a.link
		if a.detach {
			w.mu.Lock()
			delete(w.attached, l.Index)
			w.mu.Unlock()
			w.log.Debug("ifwatch: detaching", "interface", l.Name, "ifindex", l.Index)
			if w.opts.Detach != nil {
				w.opts.Detach(l)
			}
			continue
		}
		w.log.Debug("ifwatch: attaching", "interface", l.Name, "ifindex", l.Index)
		if err := w.opts.Attach(l); err != nil {
			w.errors.Add(1)
			// One Warn per link; the retries on each of its changes would
			// otherwise repeat it.
			if w.warned[l.Index] == l.Name {
				w.log.Debug("ifwatch: attach failed again", "interface", l.Name, "ifindex", l.Index, "err", err)
			} else {
				w.warned[l.Index] = l.Name
				w.log.Warn("ifwatch: attach failed; retrying on the interface's next change", "interface", l.Name, "ifindex", l.Index, "err", err)
			}
			continue
		}
		delete(w.warned, l.Index)
		// No sorted copy is kept up to date here: with a thousand
		// interfaces coming and going, copying the list per change was
		// quadratic work and garbage; Attached builds it when asked.
		w.mu.Lock()
		w.attached[l.Index] = l
		w.mu.Unlock()
	}
}
