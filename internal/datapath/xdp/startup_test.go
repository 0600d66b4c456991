// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBlocklistStartup1M measures how long the agent takes at start to
// load a saved blocklist of 1,048,576 entries into a freshly loaded
// program, as before (one map update per prefix, the snapshot rewritten
// at every start) and now (batched map updates, the snapshot left alone
// when there is no journal to fold), alternating, three rounds each.
// Only with RFM_BENCH_BLOCKLIST=1 (about two minutes, 1 GiB).
func TestBlocklistStartup1M(t *testing.T) {
	if os.Getenv("RFM_BENCH_BLOCKLIST") == "" {
		t.Skip("set RFM_BENCH_BLOCKLIST=1 to measure")
	}
	requireRoot(t)
	// 75% IPv4 /32, 15% IPv6 /128, 8% IPv4 /24, 2% IPv6 /48: mostly
	// single addresses, as blocklists fed from scanners' sources are.
	rng := rand.New(rand.NewPCG(1, 2))
	set := map[netip.Prefix]bool{}
	for len(set) < MaxBlocklistEntries {
		var pf netip.Prefix
		switch r := rng.IntN(100); {
		case r < 75:
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], 100<<24|64<<16+rng.Uint32N(1<<22)) // 100.64.0.0/10
			pf = netip.PrefixFrom(netip.AddrFrom4(a), 32)
		case r < 90:
			a := netip.MustParseAddr("2001:db8::").As16()
			binary.BigEndian.PutUint64(a[8:], rng.Uint64())
			binary.BigEndian.PutUint16(a[4:], uint16(rng.IntN(1<<16)))
			pf = netip.PrefixFrom(netip.AddrFrom16(a), 128)
		case r < 98:
			var a [4]byte
			binary.BigEndian.PutUint32(a[:], 100<<24|64<<16+rng.Uint32N(1<<14)<<8) // 100.64.0.0/10 in /24s
			pf = netip.PrefixFrom(netip.AddrFrom4(a), 24)
		default:
			a := netip.MustParseAddr("2001:db8::").As16()
			binary.BigEndian.PutUint16(a[4:], uint16(rng.IntN(1<<16)))
			pf = netip.PrefixFrom(netip.AddrFrom16(a), 48)
		}
		set[pf] = true
	}
	st := stateFile{Version: stateVersion}
	added := time.Now().UTC().Truncate(time.Second)
	for pf := range set {
		st.Entries = append(st.Entries, Entry{Prefix: pf, Added: added, Reason: "bench"})
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "blocklist.json")
	for round := range 3 {
		for _, batched := range []bool{false, true} {
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			p, err := Load(Options{})
			if err != nil {
				t.Fatal(err)
			}
			loaded := time.Now()
			var apply time.Duration
			var b *Blocklist
			if batched {
				b, err = OpenBlocklistBatch(path, nil, func(ps []netip.Prefix) error {
					t0 := time.Now()
					defer func() { apply += time.Since(t0) }()
					return p.AddPrefixes(ListBlock, ps)
				})
			} else {
				b, err = OpenBlocklist(path, func(pf netip.Prefix, on bool) error {
					t0 := time.Now()
					defer func() { apply += time.Since(t0) }()
					return p.SetPrefix(ListBlock, pf, on)
				})
				if err == nil {
					// As before: the snapshot rewritten at every start.
					b.mu.Lock()
					err = b.compactLocked()
					b.mu.Unlock()
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			total := time.Since(start)
			if n, _ := p.ListEntries(); n != len(set) {
				t.Fatalf("%d entries in the maps, want %d", n, len(set))
			}
			b.Close()
			p.Close()
			how := "before (one by one, snapshot rewritten)"
			if batched {
				how = "now (batched, snapshot kept)           "
			}
			t.Logf("round %d %s: start-up %6.0f ms (program %4.0f ms, map updates %6.0f ms, state file and the rest %5.0f ms)",
				round, how, ms(total), ms(loaded.Sub(start)), ms(apply), ms(total-loaded.Sub(start)-apply))
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
