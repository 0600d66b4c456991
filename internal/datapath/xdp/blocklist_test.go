// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTrie records what the blocklist applies.
type fakeTrie struct {
	mu  sync.Mutex
	set map[netip.Prefix]bool
}

func (f *fakeTrie) apply(p netip.Prefix, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on {
		f.set[p] = true
	} else {
		delete(f.set, p)
	}
	return nil
}

func (f *fakeTrie) has(p string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set[netip.MustParsePrefix(p)]
}

func TestBlocklistPersistsAndExpires(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.json")
	trie := &fakeTrie{set: map[netip.Prefix]bool{}}
	b, err := OpenBlocklist(path, trie.apply)
	if err != nil {
		t.Fatal(err)
	}
	mustAdd := func(s string, d time.Duration, reason string) {
		t.Helper()
		p, err := ParsePrefix(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Add(p, d, reason); err != nil {
			t.Fatal(err)
		}
	}
	mustAdd("198.18.0.0/24", 0, "scanner")
	mustAdd("2001:db8:bad::/48", time.Hour, "")
	mustAdd("198.19.0.7", 300*time.Millisecond, "short")
	if !trie.has("198.19.0.7/32") || !trie.has("198.18.0.0/24") || !trie.has("2001:db8:bad::/48") {
		t.Fatalf("trie %v", trie.set)
	}
	// Expiry: the short entry leaves the trie, the list and the file.
	deadline := time.Now().Add(5 * time.Second)
	for trie.has("198.19.0.7/32") {
		if time.Now().After(deadline) {
			t.Fatal("198.19.0.7/32 did not expire within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(b.List()); n != 2 {
		t.Errorf("%d entries after expiry, want 2", n)
	}
	if ok, err := b.Del(netip.MustParsePrefix("198.18.0.0/24")); !ok || err != nil {
		t.Fatalf("del: %v %v", ok, err)
	}
	if ok, _ := b.Del(netip.MustParsePrefix("198.18.0.0/24")); ok {
		t.Error("second del reported the prefix present")
	}
	b.Close()

	// A restart: a fresh trie gets what the file holds.
	trie2 := &fakeTrie{set: map[netip.Prefix]bool{}}
	b2, err := OpenBlocklist(path, trie2.apply)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	list := b2.List()
	if len(list) != 1 || list[0].Prefix != netip.MustParsePrefix("2001:db8:bad::/48") || list[0].Expires.IsZero() {
		t.Fatalf("after restart: %+v", list)
	}
	if !trie2.has("2001:db8:bad::/48") || len(trie2.set) != 1 {
		t.Errorf("trie after restart %v", trie2.set)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode: %v %v", fi.Mode(), err)
	}
}

func TestBlocklistDropsWhatExpiredWhileDown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.json")
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	os.WriteFile(path, []byte(`{"version":1,"entries":[{"prefix":"198.18.1.0/24","added":"`+past+`","expires":"`+past+`"},{"prefix":"198.18.2.0/24","added":"`+past+`"}]}`), 0o600)
	trie := &fakeTrie{set: map[netip.Prefix]bool{}}
	b, err := OpenBlocklist(path, trie.apply)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if trie.has("198.18.1.0/24") || !trie.has("198.18.2.0/24") {
		t.Errorf("trie %v", trie.set)
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), "198.18.1.0") {
		t.Errorf("state file keeps the expired entry: %s", data)
	}
}

func TestBlocklistRefuses(t *testing.T) {
	for _, s := range []string{"198.18.0.1/24", "::ffff:198.18.0.1", "nonsense", "fe80::1%eth0"} {
		if _, err := ParsePrefix(s); err == nil {
			t.Errorf("ParsePrefix(%q) accepted", s)
		}
	}
	path := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(path, []byte("{"), 0o600)
	if _, err := OpenBlocklist(path, func(netip.Prefix, bool) error { return nil }); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("corrupt state file: %v", err)
	}
}

// TestBlocklistJournal: changes go to a journal that a restart replays,
// a last line cut short by a crash is ignored, and the journal is folded
// into the snapshot once it is long.
func TestBlocklistJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.json")
	trie := &fakeTrie{set: map[netip.Prefix]bool{}}
	b, err := OpenBlocklist(path, trie.apply)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), 32)
		if _, err := b.Add(p, 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	b.Del(netip.MustParsePrefix("198.18.1.0/32"))
	b.Close()
	// A crash in the middle of the next write.
	f, _ := os.OpenFile(path+".journal", os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"entry":{"prefix":"198.18.9.`)
	f.Close()
	b2, err := OpenBlocklist(path, (&fakeTrie{set: map[netip.Prefix]bool{}}).apply)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(b2.List()); n != 9 {
		t.Errorf("after replay: %d entries, want 9", n)
	}
	if _, err := os.Stat(path + ".journal"); !os.IsNotExist(err) {
		t.Errorf("the journal was not folded into the snapshot at start: %v", err)
	}
	for i := range journalMax + 1 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 32)
		if _, err := b2.Add(p, 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(path + ".journal"); !os.IsNotExist(err) {
		t.Errorf("a journal of %d changes was not folded into the snapshot", journalMax+1)
	}
	b2.Close()
	b3, err := OpenBlocklist(path, (&fakeTrie{set: map[netip.Prefix]bool{}}).apply)
	if err != nil {
		t.Fatal(err)
	}
	defer b3.Close()
	if n := len(b3.List()); n != 9+journalMax+1 {
		t.Errorf("after compaction and restart: %d entries, want %d", n, 9+journalMax+1)
	}
	// A bad line that is not the last is an error naming the file.
	os.WriteFile(path+".journal", []byte("nonsense\n{}\n"), 0o600)
	if _, err := OpenBlocklist(path, (&fakeTrie{set: map[netip.Prefix]bool{}}).apply); err == nil || !strings.Contains(err.Error(), ".journal: line 1") {
		t.Errorf("corrupt journal: %v", err)
	}
}

// TestBlocklistOpenWritesOnlyWhenNeeded: a start with a snapshot and no
// journal leaves the snapshot alone (rewriting 1M entries costs
// seconds); a journal of only a line cut short by a crash is still
// folded away, so the next change does not land behind it.
func TestBlocklistOpenWritesOnlyWhenNeeded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blocklist.json")
	b, err := OpenBlocklist(path, (&fakeTrie{set: map[netip.Prefix]bool{}}).apply)
	if err != nil {
		t.Fatal(err)
	}
	b.Add(netip.MustParsePrefix("198.18.1.0/24"), 0, "")
	b.Close()
	b, err = OpenBlocklist(path, (&fakeTrie{set: map[netip.Prefix]bool{}}).apply) // folds the journal
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err = OpenBlocklist(path, (&fakeTrie{set: map[netip.Prefix]bool{}}).apply)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if after, err := os.Stat(path); err != nil || !os.SameFile(before, after) {
		t.Errorf("a start with nothing to fold rewrote the snapshot (%v)", err)
	}
	os.WriteFile(path+".journal", []byte(`{"entry":{"prefix":"198.18.9.`), 0o600)
	b, err = OpenBlocklist(path, (&fakeTrie{set: map[netip.Prefix]bool{}}).apply)
	if err != nil {
		t.Fatal(err)
	}
	b.Add(netip.MustParsePrefix("198.18.2.0/24"), 0, "")
	b.Close()
	b, err = OpenBlocklist(path, (&fakeTrie{set: map[netip.Prefix]bool{}}).apply)
	if err != nil {
		t.Fatalf("after a cut-short journal and a change: %v", err)
	}
	defer b.Close()
	if n := len(b.List()); n != 2 {
		t.Errorf("%d entries, want 2", n)
	}
}

// TestBlocklistMove: a prepared move leaves nothing behind when aborted;
// committed, the list as it is at commit (a change after the prepare
// included) is at the new path, replacing what was there, and later
// changes are journaled there, so opening the new path finds them all.
func TestBlocklistMove(t *testing.T) {
	dir := t.TempDir()
	oldPath, newPath := filepath.Join(dir, "a", "list.json"), filepath.Join(dir, "b", "list.json")
	trie := &fakeTrie{set: map[netip.Prefix]bool{}}
	b, err := OpenBlocklist(oldPath, trie.apply)
	if err != nil {
		t.Fatal(err)
	}
	add := func(s string) {
		t.Helper()
		if _, err := b.Add(netip.MustParsePrefix(s), 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	add("198.18.1.0/24")
	m, err := b.PrepareMove(newPath)
	if err != nil {
		t.Fatal(err)
	}
	m.Abort()
	if ents, _ := os.ReadDir(filepath.Dir(newPath)); len(ents) != 0 {
		t.Fatalf("an aborted move left %d files", len(ents))
	}
	if err := os.WriteFile(newPath+".journal", []byte(`{"entry":{"prefix":"198.18.9.0/24","added":"2026-01-01T00:00:00Z"}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err = b.PrepareMove(newPath); err != nil {
		t.Fatal(err)
	}
	add("198.18.2.0/24") // after the prepare
	if err := m.Commit(); err != nil {
		t.Fatal(err)
	}
	if b.Path() != newPath {
		t.Fatalf("path %s after the move", b.Path())
	}
	add("198.18.3.0/24") // journaled at the new path
	b.Close()
	again := &fakeTrie{set: map[netip.Prefix]bool{}}
	b2, err := OpenBlocklist(newPath, again.apply)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	var got []string
	for _, e := range b2.List() {
		got = append(got, e.Prefix.String())
	}
	if want := "198.18.1.0/24 198.18.2.0/24 198.18.3.0/24"; strings.Join(got, " ") != want {
		t.Errorf("reopened at the new path: %v, want %s", got, want)
	}
	// Not writable: a regular file where the directory would be.
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := b2.PrepareMove(filepath.Join(dir, "file", "list.json")); err == nil {
		t.Error("move under a regular file prepared")
	}
}
