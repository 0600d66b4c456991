// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// MaxBlocklistEntries bounds the live blocklist: what the kernel tries
// hold (each family's trie holds 1M).
const MaxBlocklistEntries = 1 << 20

// MaxReasonLen bounds an entry's reason, in bytes.
const MaxReasonLen = 256

// Entry is one prefix of the live blocklist.
type Entry struct {
	Prefix netip.Prefix `json:"prefix"`
	Added  time.Time    `json:"added"`
	// Expires is when the entry removes itself; zero: never.
	Expires time.Time `json:"expires,omitzero"`
	Reason  string    `json:"reason,omitempty"`
}

// stateFile is the blocklist's file format.
type stateFile struct {
	Version int     `json:"version"`
	Entries []Entry `json:"entries"`
}

const stateVersion = 1

// Blocklist is the live blocklist: entries added and removed while the
// agent runs, each written to the XDP program's blocklist maps, removed
// when it expires, and kept in a state file (a snapshot and a journal of
// the changes since) so a restart finds them again. Safe for concurrent
// use.
type Blocklist struct {
	path  string
	apply func(netip.Prefix, bool) error // writes the kernel trie
	now   func() time.Time

	mu      sync.Mutex
	entries map[netip.Prefix]Entry
	timer   *time.Timer // fires at the earliest expiry
	closed  bool
	// journaled counts the changes in the journal since the snapshot.
	journaled int
	// changes counts changes to entries (a Move prepared before the
	// last one writes its snapshot again).
	changes uint64
}

// OpenBlocklist reads the state at path (a missing file is an empty
// list): the snapshot, then the changes journaled after it. It drops
// what expired meanwhile, applies the rest with apply (prefix, true to
// add / false to remove) and, when the journal held changes or entries
// expired, compacts the journal into a new snapshot.
func OpenBlocklist(path string, apply func(netip.Prefix, bool) error) (*Blocklist, error) {
	return OpenBlocklistBatch(path, apply, nil)
}

// OpenBlocklistBatch is OpenBlocklist that hands the saved entries to
// addAll at once (Program.AddPrefixes: batched map updates) instead of
// to apply one by one; with 1M entries that is most of the start-up.
func OpenBlocklistBatch(path string, apply func(netip.Prefix, bool) error, addAll func([]netip.Prefix) error) (*Blocklist, error) {
	b := &Blocklist{path: path, apply: apply, now: time.Now, entries: map[netip.Prefix]Entry{}}
	// Outside systemd (which makes StateDirectory) the directory may not
	// exist yet.
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("blocklist %s: %w", path, err)
	}
	if err := b.load(); err != nil {
		return nil, err
	}
	now := b.now()
	live := make([]netip.Prefix, 0, len(b.entries))
	expired := 0
	for p, e := range b.entries {
		if !e.Expires.IsZero() && !e.Expires.After(now) {
			delete(b.entries, p)
			expired++
			continue
		}
		live = append(live, p)
	}
	if addAll != nil {
		if err := addAll(live); err != nil {
			return nil, fmt.Errorf("blocklist %s: %w", path, err)
		}
	} else {
		for _, p := range live {
			if err := apply(p, true); err != nil {
				return nil, fmt.Errorf("blocklist %s: %w", path, err)
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.scheduleLocked()
	// A snapshot with no journal and nothing expired is the list as it
	// is: rewriting it would cost seconds with 1M entries for nothing.
	if b.journaled > 0 || expired > 0 {
		if err := b.compactLocked(); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// load reads the snapshot and replays the journal into b.entries. A
// journal line cut short by a crash (the last one) is ignored.
func (b *Blocklist) load() error {
	data, err := os.ReadFile(b.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("blocklist %s: %w", b.path, err)
	default:
		var st stateFile
		if err := json.Unmarshal(data, &st); err != nil {
			return fmt.Errorf("blocklist %s: not a blocklist state file: %w", b.path, err)
		}
		if st.Version != stateVersion {
			return fmt.Errorf("blocklist %s: version %d, this agent reads %d", b.path, st.Version, stateVersion)
		}
		for _, e := range st.Entries {
			if !e.Prefix.IsValid() || e.Prefix != e.Prefix.Masked() {
				return fmt.Errorf("blocklist %s: entry %q is not a prefix", b.path, e.Prefix)
			}
			b.entries[e.Prefix] = e
		}
	}
	journal, err := os.ReadFile(b.journalPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("blocklist %s: %w", b.journalPath(), err)
	}
	if len(journal) > 0 {
		// Even a journal of only a cut-short line must go: a change
		// appended after it would make it a line in the middle.
		b.journaled++
	}
	lines := strings.Split(string(journal), "\n")
	for i, line := range lines {
		if line == "" {
			continue
		}
		var c change
		if err := json.Unmarshal([]byte(line), &c); err != nil || !c.Entry.Prefix.IsValid() || c.Entry.Prefix != c.Entry.Prefix.Masked() {
			if i == len(lines)-1 {
				break // a write the agent did not finish
			}
			return fmt.Errorf("blocklist %s: line %d is not a change", b.journalPath(), i+1)
		}
		if c.Del {
			delete(b.entries, c.Entry.Prefix)
		} else {
			b.entries[c.Entry.Prefix] = c.Entry
		}
		b.journaled++
	}
	return nil
}

// change is one line of the journal.
type change struct {
	Del   bool  `json:"del,omitempty"`
	Entry Entry `json:"entry"`
}

func (b *Blocklist) journalPath() string { return b.path + ".journal" }

// recordLocked appends one change to the journal and syncs it: a change
// costs one short write however long the list is. Past journalMax lines
// and half as many as the list has entries, the journal is folded into a
// new snapshot: a snapshot's cost, O(entries), comes once per that many
// changes.
func (b *Blocklist) recordLocked(c change) error {
	line, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("blocklist %s: %w", b.path, err)
	}
	f, err := os.OpenFile(b.journalPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("blocklist %s: %w", b.journalPath(), err)
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blocklist %s: %w", b.journalPath(), err)
	}
	b.journaled++
	if b.journaled > max(journalMax, len(b.entries)/2) {
		return b.compactLocked()
	}
	return nil
}

// journalMax is how many changes the journal holds at least before it
// is folded into the snapshot.
const journalMax = 1024

// compactLocked writes the snapshot, then empties the journal. A crash
// between the two leaves a journal whose changes the snapshot already
// holds; replaying them gives the same list.
func (b *Blocklist) compactLocked() error {
	if err := b.saveLocked(); err != nil {
		return err
	}
	if err := os.Remove(b.journalPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blocklist %s: %w", b.journalPath(), err)
	}
	b.journaled = 0
	return nil
}

// ParsePrefix reads a prefix or a single address (as a /32 or /128);
// host bits past the length are refused, so a typo is not widened.
func ParsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: not an IP prefix or address", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write IPv4 as IPv4, not IPv4-mapped IPv6", s)
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q: bits set past the prefix length (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// Add puts a prefix on the list for d (0: until removed) and returns the
// entry. Adding a prefix again replaces its expiry and reason.
func (b *Blocklist) Add(p netip.Prefix, d time.Duration, reason string) (Entry, error) {
	if d < 0 {
		return Entry{}, fmt.Errorf("duration %s: must not be negative", d)
	}
	if len(reason) > MaxReasonLen {
		return Entry{}, fmt.Errorf("reason of %d bytes: at most %d", len(reason), MaxReasonLen)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return Entry{}, errors.New("blocklist closed")
	}
	old, had := b.entries[p]
	if !had && len(b.entries) >= MaxBlocklistEntries {
		return Entry{}, fmt.Errorf("blocklist full: %d entries", MaxBlocklistEntries)
	}
	now := b.now()
	e := Entry{Prefix: p, Added: now.UTC().Truncate(time.Second), Reason: reason}
	if had {
		e.Added = old.Added
	}
	if d > 0 {
		e.Expires = now.Add(d).UTC()
	}
	if err := b.apply(p, true); err != nil {
		return Entry{}, err
	}
	b.entries[p] = e
	b.changes++
	b.scheduleLocked()
	return e, b.recordLocked(change{Entry: e})
}

// Del removes a prefix; it reports whether the prefix was on the list.
func (b *Blocklist) Del(p netip.Prefix) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.entries[p]; !ok {
		return false, nil
	}
	if err := b.apply(p, false); err != nil {
		return false, err
	}
	delete(b.entries, p)
	b.changes++
	b.scheduleLocked()
	return true, b.recordLocked(change{Del: true, Entry: Entry{Prefix: p}})
}

// List returns the entries by prefix.
func (b *Blocklist) List() []Entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Entry, 0, len(b.entries))
	for _, e := range b.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(x, y Entry) int {
		if c := x.Prefix.Addr().Compare(y.Prefix.Addr()); c != 0 {
			return c
		}
		return x.Prefix.Bits() - y.Prefix.Bits()
	})
	return out
}

// Close stops the expiry timer. The kernel entries stay: they go with
// the program's maps.
func (b *Blocklist) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
	}
}

// scheduleLocked arms the timer for the earliest expiry.
func (b *Blocklist) scheduleLocked() {
	var next time.Time
	for _, e := range b.entries {
		if !e.Expires.IsZero() && (next.IsZero() || e.Expires.Before(next)) {
			next = e.Expires
		}
	}
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if next.IsZero() || b.closed {
		return
	}
	b.timer = time.AfterFunc(max(next.Sub(b.now()), 0), b.expire)
}

// expire removes the entries whose time has come.
func (b *Blocklist) expire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	now := b.now()
	for p, e := range b.entries {
		if e.Expires.IsZero() || e.Expires.After(now) {
			continue
		}
		if err := b.apply(p, false); err != nil {
			continue // stays listed; tried again at the next expiry
		}
		delete(b.entries, p)
		b.changes++
		// Should the record fail, the entry is dropped again as
		// expired when the list is next loaded.
		b.recordLocked(change{Del: true, Entry: Entry{Prefix: p}})
	}
	b.scheduleLocked()
}

// saveLocked writes the state file atomically: a temporary file in the
// same directory, synced, renamed over the old one, the directory synced.
func (b *Blocklist) saveLocked() error {
	tmp, err := b.writeTempLocked(filepath.Dir(b.path))
	if err != nil {
		return fmt.Errorf("blocklist %s: %w", b.path, err)
	}
	if err := renameSynced(tmp, b.path); err != nil {
		return fmt.Errorf("blocklist %s: %w", b.path, err)
	}
	return nil
}

// renameSynced renames tmp to path and syncs the directory; on error
// tmp is removed.
func renameSynced(tmp, path string) error {
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// writeTempLocked writes the snapshot to a new temporary file in dir,
// synced, and returns its name.
func (b *Blocklist) writeTempLocked(dir string) (string, error) {
	st := stateFile{Version: stateVersion, Entries: make([]Entry, 0, len(b.entries))}
	for _, e := range b.entries {
		st.Entries = append(st.Entries, e)
	}
	slices.SortFunc(st.Entries, func(x, y Entry) int { return x.Prefix.Addr().Compare(y.Prefix.Addr()) })
	data, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".blocklist-*")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// Move is a prepared move of the state file (PrepareMove).
type Move struct {
	b       *Blocklist
	path    string
	tmp     string // the snapshot written at prepare, in path's directory
	changes uint64 // b.changes when tmp was written
}

// PrepareMove prepares keeping the list at path instead (a reload that
// changes agent.xdp.state_file): the running list is written to a
// temporary file next to path, which shows path's directory can take it.
// A file already at path is not read: the list in effect is what
// `rfm block list` shows, and another host's file taken in would block
// what it blocked, here. Commit puts the list at path and keeps it
// there from then on; Abort leaves everything as it was. The old file
// is left where it is, no longer written.
func (b *Blocklist) PrepareMove(path string) (*Move, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.New("blocklist closed")
	}
	tmp, err := b.writeTempLocked(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	return &Move{b: b, path: path, tmp: tmp, changes: b.changes}, nil
}

// Commit makes path the state file: the list as it is now (written
// again if it changed since PrepareMove) replaces what was at path, a
// journal there is removed first so it is not replayed onto it, and
// later changes are journaled next to it. On error the list stays at
// the old path.
func (m *Move) Commit() error {
	b := m.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changes != m.changes {
		os.Remove(m.tmp)
		tmp, err := b.writeTempLocked(filepath.Dir(m.path))
		if err != nil {
			return fmt.Errorf("blocklist %s: %w", m.path, err)
		}
		m.tmp = tmp
	}
	if err := os.Remove(m.path + ".journal"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		os.Remove(m.tmp)
		return fmt.Errorf("blocklist %s: %w", m.path, err)
	}
	if err := renameSynced(m.tmp, m.path); err != nil {
		return fmt.Errorf("blocklist %s: %w", m.path, err)
	}
	b.path = m.path
	b.journaled = 0
	return nil
}

// Abort removes what PrepareMove wrote.
func (m *Move) Abort() { os.Remove(m.tmp) }

// Path is where the list is kept.
func (b *Blocklist) Path() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.path
}
