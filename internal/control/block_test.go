// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath/xdp"
)

// blockingAgent is fakeAgent with a real xdp.Blocklist whose kernel side
// is a set.
type blockingAgent struct {
	fakeAgent
	list *xdp.Blocklist
	trie map[netip.Prefix]bool
}

func newBlockingAgent(t *testing.T) *blockingAgent {
	a := &blockingAgent{trie: map[netip.Prefix]bool{}}
	l, err := xdp.OpenBlocklist(filepath.Join(t.TempDir(), "bl.json"), func(p netip.Prefix, on bool) error {
		a.trie[p] = on
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	a.list = l
	return a
}

func (a *blockingAgent) BlockList(context.Context) (Blocklist, error) {
	out := Blocklist{Entries: []BlockEntry{}}
	for _, e := range a.list.List() {
		out.Entries = append(out.Entries, EntryOf(e))
	}
	return out, nil
}

func (a *blockingAgent) BlockAdd(_ context.Context, args BlockAddArgs) (BlockEntry, error) {
	e, err := a.list.Add(args.Prefix, args.For, args.Reason)
	return EntryOf(e), err
}

func (a *blockingAgent) BlockDel(_ context.Context, p netip.Prefix) (BlockDelResult, error) {
	ok, err := a.list.Del(p)
	return BlockDelResult{Prefix: p.String(), Removed: ok}, err
}

func TestBlocklistPaths(t *testing.T) {
	a := newBlockingAgent(t)
	_, path := startServer(t, a)
	c := NewClient(path)
	defer c.Close()
	bg := context.Background()
	var e BlockEntry
	if err := c.Do(bg, BlockAddCall(netip.MustParsePrefix("198.18.0.0/24"), 10*time.Minute, "scan"), &e); err != nil {
		t.Fatal(err)
	}
	if e.Prefix != "198.18.0.0/24" || e.Expires == nil || e.Reason != "scan" {
		t.Errorf("added %+v", e)
	}
	if d := time.Until(*e.Expires); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("expires in %s, want about 10m", d)
	}
	var e6 BlockEntry
	if err := c.Do(bg, BlockAddCall(netip.MustParsePrefix("2001:db8::/32"), 0, ""), &e6); err != nil || e6.Expires != nil {
		t.Fatalf("add v6: %+v %v", e6, err)
	}
	l, err := c.BlockList(bg)
	if err != nil || len(l.Entries) != 2 {
		t.Fatalf("list: %+v %v", l, err)
	}
	var d BlockDelResult
	if err := c.Do(bg, BlockDelCall(netip.MustParsePrefix("198.18.0.0/24")), &d); err != nil || !d.Removed {
		t.Fatalf("del: %+v %v", d, err)
	}
	var d2 BlockDelResult
	if err := c.Do(bg, BlockDelCall(netip.MustParsePrefix("198.18.0.0/24")), &d2); err != nil || d2.Removed {
		t.Fatalf("second del: %+v %v", d2, err)
	}
	if a.trie[netip.MustParsePrefix("198.18.0.0/24")] || !a.trie[netip.MustParsePrefix("2001:db8::/32")] {
		t.Errorf("kernel side %v", a.trie)
	}

	bad := []struct {
		call Call
		want string
	}{
		{Call{Method: "POST", Path: PathBlocklistAdd, Body: map[string]string{"prefix": "198.18.0.1/24"}}, `blocklist add: prefix "198.18.0.1/24": bits set past the prefix length (did you mean 198.18.0.0/24?)`},
		{Call{Method: "POST", Path: PathBlocklistAdd, Body: map[string]string{"prefix": "198.18.0.0/24", "for": "forever"}}, `blocklist add: for "forever": want a positive duration such as "10m" or "1h"`},
		{Call{Method: "POST", Path: PathBlocklistAdd, Body: map[string]string{"prefx": "198.18.0.0/24"}}, `blocklist add: unknown field "prefx" (want [prefix for reason])`},
		{Call{Method: "POST", Path: PathBlocklistDel, Body: map[string]string{}}, `blocklist del: prefix missing (want {"prefix": "198.18.0.0/24"})`},
		{Call{Method: "POST", Path: PathBlocklistAdd, Body: map[string]any{"prefix": 5}}, `blocklist add: prefix 5: want a string`},
	}
	for _, b := range bad {
		err := c.Do(bg, b.call, nil)
		var ce *Error
		if !errors.As(err, &ce) || ce.Status != 400 || ce.Message != b.want {
			t.Errorf("%v: %v, want 400 %q", b.call.Body, err, b.want)
		}
	}
}

func TestBlocklistWithoutXDP(t *testing.T) {
	_, path := startServer(t, &fakeAgent{})
	c := NewClient(path)
	defer c.Close()
	_, err := c.BlockList(context.Background())
	var ce *Error
	if !errors.As(err, &ce) || ce.Status != 400 || ce.Message != "blocklist: the XDP fast path is off (agent.xdp.interfaces is empty)" {
		t.Errorf("got %v", err)
	}
}
