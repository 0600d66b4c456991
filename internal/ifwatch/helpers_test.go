// SPDX-License-Identifier: AGPL-3.0-only

package ifwatch

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

var nsCounter atomic.Int64

// testNetns creates a network namespace for one test, removed at cleanup,
// and returns its handle and a netlink handle bound to it.
func testNetns(t *testing.T) (netns.NsHandle, *netlink.Handle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and veths")
	}
	name := fmt.Sprintf("rfm-ifw-%d-%d", os.Getpid(), nsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, bytes.TrimSpace(out))
		}
	})
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("opening netns %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in netns %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	return ns, h
}

func addVeth(t *testing.T, h *netlink.Handle, name, peer string) {
	t.Helper()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		t.Fatalf("adding veth %s/%s: %v", name, peer, err)
	}
}

func linkByName(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("looking up %s: %v", name, err)
	}
	return l
}

func delLink(t *testing.T, h *netlink.Handle, name string) {
	t.Helper()
	if err := h.LinkDel(linkByName(t, h, name)); err != nil {
		t.Fatalf("deleting %s: %v", name, err)
	}
}

func renameLink(t *testing.T, h *netlink.Handle, from, to string) {
	t.Helper()
	if err := h.LinkSetName(linkByName(t, h, from), to); err != nil {
		t.Fatalf("renaming %s to %s: %v", from, to, err)
	}
}

// presentLinks lists the namespace's links that match, as the watcher
// should have them attached.
func presentLinks(t *testing.T, h *netlink.Handle, match func(string) bool) []Link {
	t.Helper()
	links, err := h.LinkList()
	if err != nil {
		t.Fatalf("listing links: %v", err)
	}
	var out []Link
	for _, l := range links {
		if a := l.Attrs(); match(a.Name) {
			out = append(out, Link{Index: a.Index, Name: a.Name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

func glob(pattern string) func(string) bool {
	return func(name string) bool {
		ok, _ := path.Match(pattern, name)
		return ok
	}
}

// call is one callback the recorder saw.
type call struct {
	Detach bool
	Link   Link
}

func (c call) String() string {
	if c.Detach {
		return fmt.Sprintf("detach %s/%d", c.Link.Name, c.Link.Index)
	}
	return fmt.Sprintf("attach %s/%d", c.Link.Name, c.Link.Index)
}

// recorder implements the agent's side: it records every callback, keeps
// the set the agent would have attached, and notes protocol violations
// (concurrent callbacks, detaching what was never attached).
type recorder struct {
	mu       sync.Mutex
	calls    []call
	attached map[int]Link
	problems []string
	inFlight atomic.Int32
	// fail, if set, decides whether an attach fails.
	fail func(Link) error
}

func newRecorder() *recorder { return &recorder{attached: map[int]Link{}} }

func (r *recorder) enter() {
	if r.inFlight.Add(1) != 1 {
		r.mu.Lock()
		r.problems = append(r.problems, "callbacks ran concurrently")
		r.mu.Unlock()
	}
}

func (r *recorder) Attach(l Link) error {
	r.enter()
	defer r.inFlight.Add(-1)
	r.mu.Lock()
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		if err := fail(l); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.attached[l.Index]; ok {
		r.problems = append(r.problems, fmt.Sprintf("attach of already attached index %d (%s)", l.Index, l.Name))
	}
	r.calls = append(r.calls, call{Link: l})
	r.attached[l.Index] = l
	return nil
}

func (r *recorder) Detach(l Link) {
	r.enter()
	defer r.inFlight.Add(-1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if got, ok := r.attached[l.Index]; !ok || got != l {
		r.problems = append(r.problems, fmt.Sprintf("detach of %s/%d which was not attached", l.Name, l.Index))
	}
	r.calls = append(r.calls, call{Detach: true, Link: l})
	delete(r.attached, l.Index)
}

func (r *recorder) Calls() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// Set returns what the agent has attached, by index.
func (r *recorder) Set() []Link {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Link, 0, len(r.attached))
	for _, l := range r.attached {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		t.Error(p)
	}
}

// start runs a watcher in ns with rec as the agent, closed at cleanup.
func start(t *testing.T, ns netns.NsHandle, rec *recorder, match func(string) bool, opts ...func(*Options)) *Watcher {
	t.Helper()
	o := Options{
		Match:     match,
		Attach:    rec.Attach,
		Detach:    rec.Detach,
		Namespace: ns,
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range opts {
		f(&o)
	}
	w, err := Start(o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		rec.check(t)
	})
	return w
}

// testWriter sends log lines to the test log (shown with -v or on failure).
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// eventually polls cond until it returns nil, for at most 5 s.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	lab.Eventually(t, 5*time.Second, what, cond)
}

// waitSet waits until both the agent's set and Attached() equal want.
func waitSet(t *testing.T, w *Watcher, rec *recorder, want func() []Link) {
	t.Helper()
	eventually(t, "attached set", func() error {
		wl := want()
		if got := rec.Set(); !slices.Equal(got, wl) {
			return fmt.Errorf("agent has %v, want %v", got, wl)
		}
		if got := w.Attached(); !slices.Equal(got, wl) {
			return fmt.Errorf("Attached() = %v, want %v", got, wl)
		}
		return nil
	})
}

// barrier creates a matching sentinel link and waits for its attach;
// callbacks run in event order, so every earlier change has been handled
// when it returns. The sentinel pair is removed again (and its detach
// awaited), so it must be the only matching part of name/name+"p" or
// both must match.
func barrier(t *testing.T, w *Watcher, rec *recorder, h *netlink.Handle, name string) {
	t.Helper()
	// A veth, since this kernel has no dummy driver.
	addVeth(t, h, name, name+"p")
	idx := linkByName(t, h, name).Attrs().Index
	has := func() bool { return slices.Contains(rec.Set(), Link{Index: idx, Name: name}) }
	eventually(t, "sentinel "+name+" attached", func() error {
		if !has() {
			return fmt.Errorf("not attached yet")
		}
		return nil
	})
	delLink(t, h, name)
	eventually(t, "sentinel "+name+" detached", func() error {
		if has() {
			return fmt.Errorf("still attached")
		}
		return nil
	})
}
