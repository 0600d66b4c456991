// SPDX-License-Identifier: AGPL-3.0-only

package ifwatch

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vishvananda/netlink"
)

func TestStartAttachesExistingLinks(t *testing.T) {
	ns, h := testNetns(t)
	addVeth(t, h, "ta0", "tb0")
	addVeth(t, h, "xa0", "xb0")
	rec := newRecorder()
	match := glob("t*")
	w := start(t, ns, rec, match)
	// Start attaches before returning: no polling.
	want := presentLinks(t, h, match)
	if len(want) != 2 {
		t.Fatalf("expected ta0 and tb0 present, got %v", want)
	}
	if got := rec.Set(); !slices.Equal(got, want) {
		t.Errorf("after Start the agent has %v, want %v", got, want)
	}
	if got := w.Attached(); !slices.Equal(got, want) {
		t.Errorf("Attached() = %v, want %v", got, want)
	}
}

func TestLoopback(t *testing.T) {
	ns, h := testNetns(t)
	all := func(string) bool { return true }
	lo := Link{Index: linkByName(t, h, "lo").Attrs().Index, Name: "lo"}

	rec := newRecorder()
	start(t, ns, rec, all, func(o *Options) { o.SkipLoopback = true })
	if slices.Contains(rec.Set(), lo) {
		t.Errorf("SkipLoopback: lo attached: %v", rec.Set())
	}

	rec2 := newRecorder()
	start(t, ns, rec2, all)
	if !slices.Contains(rec2.Set(), lo) {
		t.Errorf("without SkipLoopback Match decides alone, and it selected lo: got %v", rec2.Set())
	}

	// Select: "*" means every non-loopback, a named lo is still allowed.
	addVeth(t, h, "ta0", "tb0")
	rec3 := newRecorder()
	star := func(_ string, loopback bool) bool { return !loopback }
	w := start(t, ns, rec3, nil, func(o *Options) { o.Select = star })
	if want := presentLinks(t, h, glob("t*")); !slices.Equal(rec3.Set(), want) {
		t.Errorf("Select without loopback: agent has %v, want %v", rec3.Set(), want)
	}
	w.SetSelect(func(name string, _ bool) bool { return name == "lo" })
	if got := rec3.Set(); !slices.Equal(got, []Link{lo}) {
		t.Errorf("SetSelect(lo): agent has %v, want only %v", got, lo)
	}
	w.SetMatch(glob("t*"))
	if want := presentLinks(t, h, glob("t*")); !slices.Equal(rec3.Set(), want) {
		t.Errorf("SetMatch after Select: agent has %v, want %v", rec3.Set(), want)
	}
}

func TestCreateAndDelete(t *testing.T) {
	ns, h := testNetns(t)
	rec := newRecorder()
	match := glob("t*")
	w := start(t, ns, rec, match)
	if got := rec.Set(); len(got) != 0 {
		t.Fatalf("nothing should be attached yet, got %v", got)
	}

	addVeth(t, h, "ta0", "tb0")
	waitSet(t, w, rec, func() []Link { return presentLinks(t, h, match) })
	if n := len(rec.Set()); n != 2 {
		t.Fatalf("want both veth ends attached, got %v", rec.Set())
	}
	first := rec.Set()

	delLink(t, h, "ta0") // takes tb0 with it
	waitSet(t, w, rec, func() []Link { return nil })
	calls := rec.Calls()
	for _, l := range first {
		if !slices.Contains(calls, call{Detach: true, Link: l}) {
			t.Errorf("no detach of %v in %v", l, calls)
		}
	}

	// A named interface that returns (with a new index) is attached again.
	addVeth(t, h, "ta0", "tb0")
	waitSet(t, w, rec, func() []Link { return presentLinks(t, h, match) })
}

func TestRename(t *testing.T) {
	ns, h := testNetns(t)
	addVeth(t, h, "ta0", "xb0")
	idx := linkByName(t, h, "ta0").Attrs().Index
	rec := newRecorder()
	match := glob("t*")
	w := start(t, ns, rec, match)
	want := func() []Link { return presentLinks(t, h, match) }
	if got := rec.Set(); !slices.Equal(got, []Link{{idx, "ta0"}}) {
		t.Fatalf("attached %v, want ta0/%d", got, idx)
	}

	renameLink(t, h, "ta0", "xa0")
	waitSet(t, w, rec, want)
	renameLink(t, h, "xa0", "ta0")
	waitSet(t, w, rec, want)
	renameLink(t, h, "ta0", "ta9") // still matches: re-attached under the new name
	waitSet(t, w, rec, want)

	wantCalls := []call{
		{Link: Link{idx, "ta0"}},
		{Detach: true, Link: Link{idx, "ta0"}},
		{Link: Link{idx, "ta0"}},
		{Detach: true, Link: Link{idx, "ta0"}},
		{Link: Link{idx, "ta9"}},
	}
	if got := rec.Calls(); !slices.Equal(got, wantCalls) {
		t.Errorf("calls %v, want %v", got, wantCalls)
	}
}

func TestUpDownDoesNotDetach(t *testing.T) {
	ns, h := testNetns(t)
	addVeth(t, h, "ta0", "tb0")
	rec := newRecorder()
	w := start(t, ns, rec, glob("t*"))
	before := rec.Calls()
	for range 3 {
		for _, name := range []string{"ta0", "tb0"} {
			if err := h.LinkSetUp(linkByName(t, h, name)); err != nil {
				t.Fatalf("setting %s up: %v", name, err)
			}
		}
		if err := h.LinkSetDown(linkByName(t, h, "ta0")); err != nil {
			t.Fatalf("setting ta0 down: %v", err)
		}
	}
	barrier(t, w, rec, h, "tz0")
	got := rec.Calls()[len(before):]
	for _, c := range got {
		if !strings.HasPrefix(c.Link.Name, "tz0") {
			t.Errorf("link up/down caused %v", c)
		}
	}
}

func TestSetMatch(t *testing.T) {
	ns, h := testNetns(t)
	addVeth(t, h, "ta0", "tb0")
	addVeth(t, h, "ua0", "ub0")
	rec := newRecorder()
	w := start(t, ns, rec, glob("[tu]*"))
	check := func(what string, match func(string) bool) {
		t.Helper()
		// SetMatch applies before returning: no polling.
		want := presentLinks(t, h, match)
		if got := rec.Set(); !slices.Equal(got, want) {
			t.Errorf("%s: agent has %v, want %v", what, got, want)
		}
		if got := w.Attached(); !slices.Equal(got, want) {
			t.Errorf("%s: Attached() = %v, want %v", what, got, want)
		}
	}
	check("start", glob("[tu]*"))
	w.SetMatch(glob("ta0"))
	check("narrowed to ta0", glob("ta0"))
	w.SetMatch(glob("u*"))
	check("switched to u*", glob("u*"))
	w.SetMatch(glob("*a0"))
	check("widened to *a0", glob("*a0"))

	// The new selection also governs later links.
	addVeth(t, h, "va0", "vb0")
	waitSet(t, w, rec, func() []Link { return presentLinks(t, h, glob("*a0")) })
}

func TestChurn(t *testing.T) {
	ns, h := testNetns(t)
	rec := newRecorder()
	match := glob("c*")
	w := start(t, ns, rec, match)
	for i := range 50 {
		a, b := fmt.Sprintf("ca%d", i), fmt.Sprintf("cb%d", i)
		addVeth(t, h, a, b)
		switch {
		case i%3 != 0:
			delLink(t, h, a)
		case i%6 == 0:
			renameLink(t, h, b, fmt.Sprintf("xb%d", i))
		}
	}
	waitSet(t, w, rec, func() []Link { return presentLinks(t, h, match) })
	if n := len(rec.Set()); n == 0 {
		t.Fatal("churn left nothing attached; the test expects some survivors")
	}
}

func TestAttachErrorRetried(t *testing.T) {
	ns, h := testNetns(t)
	addVeth(t, h, "ta0", "xb0")
	rec := newRecorder()
	var mu sync.Mutex
	failing := true
	rec.fail = func(l Link) error {
		mu.Lock()
		defer mu.Unlock()
		if failing && l.Name == "ta0" {
			return errors.New("injected attach failure")
		}
		return nil
	}
	var logs syncBuffer
	w := start(t, ns, rec, glob("t*"), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	})
	if got := rec.Set(); len(got) != 0 {
		t.Fatalf("failed attach must leave ta0 unattached, got %v", got)
	}
	// Changes while it keeps failing: retried, but warned about once.
	for range 3 {
		if err := h.LinkSetUp(linkByName(t, h, "ta0")); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetDown(linkByName(t, h, "ta0")); err != nil {
			t.Fatal(err)
		}
	}
	barrier(t, w, rec, h, "tz0")
	if n := strings.Count(logs.String(), "interface=ta0"); n != 1 {
		t.Errorf("want exactly one warning about ta0, got %d:\n%s", n, logs.String())
	}
	if v := errorsTotal(t, w); v < 4 {
		t.Errorf("rfm_errors_total{subsystem=ifwatch} = %v, want the initial and each retried failure (>= 4)", v)
	}

	mu.Lock()
	failing = false
	mu.Unlock()
	if err := h.LinkSetUp(linkByName(t, h, "ta0")); err != nil {
		t.Fatal(err)
	}
	waitSet(t, w, rec, func() []Link { return presentLinks(t, h, glob("t*")) })
}

func TestMoveToOtherNamespace(t *testing.T) {
	ns, h := testNetns(t)
	other, _ := testNetns(t)
	addVeth(t, h, "ta0", "tb0")
	rec := newRecorder()
	match := glob("t*")
	w := start(t, ns, rec, match)
	moved := Link{Index: linkByName(t, h, "ta0").Attrs().Index, Name: "ta0"}
	if err := h.LinkSetNsFd(linkByName(t, h, "ta0"), int(other)); err != nil {
		t.Fatalf("moving ta0 to another netns: %v", err)
	}
	waitSet(t, w, rec, func() []Link { return presentLinks(t, h, match) })
	if !slices.Contains(rec.Calls(), call{Detach: true, Link: moved}) {
		t.Errorf("no detach of the moved link: %v", rec.Calls())
	}
}

// Removing a port from a bridge sends an AF_BRIDGE RTM_DELLINK for a link
// that still exists; it must not detach.
func TestBridgePortRemovalKeepsLink(t *testing.T) {
	ns, h := testNetns(t)
	addVeth(t, h, "ta0", "tb0")
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		t.Skipf("skipping: this kernel cannot create a bridge: %v", err)
	}
	rec := newRecorder()
	w := start(t, ns, rec, glob("t*"))
	before := len(rec.Calls())
	if err := h.LinkSetMaster(linkByName(t, h, "tb0"), linkByName(t, h, "br0")); err != nil {
		t.Fatalf("enslaving tb0: %v", err)
	}
	if err := h.LinkSetNoMaster(linkByName(t, h, "tb0")); err != nil {
		t.Fatalf("releasing tb0: %v", err)
	}
	barrier(t, w, rec, h, "tz0")
	for _, c := range rec.Calls()[before:] {
		if !strings.HasPrefix(c.Link.Name, "tz0") {
			t.Errorf("bridge port change caused %v", c)
		}
	}
}

// With a tiny socket buffer and the event goroutine stuck in a callback,
// the kernel drops notifications (ENOBUFS); the watcher must notice,
// subscribe again and re-list, ending with the exact set.
func TestOverflowResyncs(t *testing.T) {
	ns, h := testNetns(t)
	rec := newRecorder()
	release := make(chan struct{})
	blocked := make(chan struct{})
	var once sync.Once
	rec.fail = func(l Link) error {
		if l.Name == "oa0" {
			once.Do(func() { close(blocked); <-release })
		}
		return nil
	}
	match := glob("o*")
	w := start(t, ns, rec, match, func(o *Options) {
		o.socketBuffer = 1 // the kernel rounds up to its minimum
		o.updateBacklog = 1
	})
	addVeth(t, h, "oa0", "ob0")
	<-blocked
	for i := range 40 {
		addVeth(t, h, fmt.Sprintf("oc%d", i), fmt.Sprintf("od%d", i))
		if i%2 == 0 {
			delLink(t, h, fmt.Sprintf("oc%d", i))
		}
	}
	close(release)
	waitSet(t, w, rec, func() []Link { return presentLinks(t, h, match) })
	if v := errorsTotal(t, w); v == 0 {
		t.Error("expected the overflow to be counted in rfm_errors_total{subsystem=ifwatch}")
	}
	// The new subscription keeps working.
	addVeth(t, h, "oe0", "of0")
	waitSet(t, w, rec, func() []Link { return presentLinks(t, h, match) })
}

func TestCloseStopsCallbacks(t *testing.T) {
	ns, h := testNetns(t)
	addVeth(t, h, "ta0", "tb0")
	rec := newRecorder()
	w := start(t, ns, rec, glob("t*"))
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	n := len(rec.Calls())
	delLink(t, h, "ta0")
	addVeth(t, h, "tc0", "td0")
	w.SetMatch(glob("*")) // no-op after Close, must not block
	if got := rec.Calls(); len(got) != n {
		t.Errorf("callbacks after Close: %v", got[n:])
	}
	if len(w.Attached()) != 2 {
		t.Errorf("Close must not detach: Attached() = %v", w.Attached())
	}
}

func TestStartValidates(t *testing.T) {
	if _, err := Start(Options{Match: glob("*")}); err == nil {
		t.Error("Start without Attach succeeded")
	}
	if _, err := Start(Options{Attach: func(Link) error { return nil }}); err == nil {
		t.Error("Start without Match or Select succeeded")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// errorsTotal reads rfm_errors_total{subsystem="ifwatch"} from w.
func errorsTotal(t *testing.T, w prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 4)
	w.Collect(ch)
	close(ch)
	var total float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatalf("reading metric: %v", err)
		}
		total += pb.GetCounter().GetValue()
	}
	return total
}
