// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestBlocklistHostsAgainstReference adds and removes blocklisted single
// addresses that crowd a few IPv4 /24s and IPv6 /64s (so they share
// xdp_host_filter bits), and checks after every change that a packet is
// dropped exactly when its source or destination is listed, against a
// plain set of the listed addresses.
func TestBlocklistHostsAgainstReference(t *testing.T) {
	p := loadProgram(t)
	rng := rand.New(rand.NewPCG(3, 4))
	pool := func(v6 bool) netip.Addr {
		if v6 {
			a := netip.MustParseAddr([]string{"2001:db8::", "2001:db8:0:1::", "2001:db8:1::"}[rng.IntN(3)]).As16()
			a[15] = byte(rng.IntN(8))
			return netip.AddrFrom16(a)
		}
		a := netip.MustParseAddr([]string{"198.18.0.0", "198.18.1.0", "198.19.255.0"}[rng.IntN(3)]).As4()
		a[3] = byte(rng.IntN(8))
		return netip.AddrFrom4(a)
	}
	listed := map[netip.Addr]bool{}
	for step := 0; step < 400; step++ {
		a := pool(rng.IntN(2) == 0)
		on := rng.IntN(3) != 0
		if err := p.SetPrefix(ListBlock, netip.PrefixFrom(a, a.BitLen()), on); err != nil {
			t.Fatal(err)
		}
		if on {
			listed[a] = true
		} else {
			delete(listed, a)
		}
		for range 8 {
			v6 := rng.IntN(2) == 0
			src, dst := pool(v6), pool(v6)
			var f []byte
			if v6 {
				f = ipv6Frame(src.String(), dst.String(), 17, -1, l4(1, 2, 16))
			} else {
				f = ipv4Frame(src.String(), dst.String(), 17, 0, l4(1, 2, 16))
			}
			want := uint32(xdpPass)
			if listed[src] || listed[dst] {
				want = xdpDrop
			}
			if got := runFrame(t, p.Prog(), f); got != want {
				t.Fatalf("step %d: %s -> %s: verdict %d, want %d (listed %v)", step, src, dst, got, want, listed)
			}
		}
	}
}

// TestAddPrefixesAgainstReference loads a list with AddPrefixes (batched
// map updates) over one that SetPrefix already holds part of, and checks
// verdicts against a plain set, the entry count, and that removing every
// prefix one by one leaves nothing (so the filter bits were counted).
func TestAddPrefixesAgainstReference(t *testing.T) {
	// Into empty maps (batched), and into maps SetPrefix already holds
	// some of (one by one).
	for _, before := range []bool{false, true} {
		t.Run(map[bool]string{false: "empty", true: "listed-before"}[before], func(t *testing.T) {
			testAddPrefixes(t, before)
		})
	}
}

func testAddPrefixes(t *testing.T, before bool) {
	p := loadProgram(t)
	rng := rand.New(rand.NewPCG(5, 6))
	addr := func(v6 bool) netip.Addr {
		if v6 {
			a := netip.MustParseAddr("2001:db8::").As16()
			a[5], a[15] = byte(rng.IntN(4)), byte(rng.IntN(16))
			return netip.AddrFrom16(a)
		}
		a := netip.MustParseAddr("198.18.0.0").As4()
		a[2], a[3] = byte(rng.IntN(8)), byte(rng.IntN(16))
		return netip.AddrFrom4(a)
	}
	set := map[netip.Prefix]bool{}
	var batch []netip.Prefix
	for range 300 {
		a := addr(rng.IntN(2) == 0)
		bits := a.BitLen()
		if rng.IntN(4) == 0 { // a shorter prefix, to the trie
			bits -= 2 + rng.IntN(3)
		}
		pf, _ := a.Prefix(bits)
		if before && rng.IntN(5) == 0 && !set[pf] { // already listed before the batch
			if err := p.SetPrefix(ListBlock, pf, true); err != nil {
				t.Fatal(err)
			}
		}
		set[pf] = true
		batch = append(batch, pf) // duplicates within the batch too
	}
	if err := p.AddPrefixes(ListBlock, batch); err != nil {
		t.Fatal(err)
	}
	if n, _ := p.ListEntries(); n != len(set) {
		t.Errorf("ListEntries = %d after AddPrefixes, want %d", n, len(set))
	}
	listed := func(a netip.Addr) bool {
		for pf := range set {
			if pf.Contains(a) {
				return true
			}
		}
		return false
	}
	check := func(when string) {
		for range 400 {
			v6 := rng.IntN(2) == 0
			src, dst := addr(v6), addr(v6)
			var f []byte
			if v6 {
				f = ipv6Frame(src.String(), dst.String(), 17, -1, l4(1, 2, 16))
			} else {
				f = ipv4Frame(src.String(), dst.String(), 17, 0, l4(1, 2, 16))
			}
			want := uint32(xdpPass)
			if listed(src) || listed(dst) {
				want = xdpDrop
			}
			if got := runFrame(t, p.Prog(), f); got != want {
				t.Fatalf("%s: %s -> %s: verdict %d, want %d", when, src, dst, got, want)
			}
		}
	}
	check("after AddPrefixes")
	for pf := range set {
		if err := p.SetPrefix(ListBlock, pf, false); err != nil {
			t.Fatal(err)
		}
		delete(set, pf)
	}
	check("after removing all")
	if n, _ := p.ListEntries(); n != 0 {
		t.Errorf("ListEntries = %d after removing all", n)
	}
	if len(p.hostBits) != 0 {
		t.Errorf("%d host filter bits still counted", len(p.hostBits))
	}
}

// TestHostFilterSharedBit: two listed addresses whose hashes share a
// bit of xdp_host_filter; removing one keeps the other dropped (the bit
// stays), removing both lets both through.
func TestHostFilterSharedBit(t *testing.T) {
	p := loadProgram(t)
	pair := func(base netip.Addr) (netip.Addr, netip.Addr) {
		seen := map[uint32]netip.Addr{}
		for a := base; ; a = a.Next() {
			bit := hostFilterBit(a)
			if b, ok := seen[bit]; ok {
				return b, a
			}
			seen[bit] = a
		}
	}
	for _, base := range []string{"198.18.0.0", "2001:db8::"} {
		a, b := pair(netip.MustParseAddr(base))
		frame := func(src netip.Addr) []byte {
			if src.Is4() {
				return ipv4Frame(src.String(), "198.19.255.2", 17, 0, l4(1, 2, 16))
			}
			return ipv6Frame(src.String(), "2001:db8:ffff::2", 17, -1, l4(1, 2, 16))
		}
		for _, x := range []netip.Addr{a, b} {
			if err := p.SetPrefix(ListBlock, netip.PrefixFrom(x, x.BitLen()), true); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.SetPrefix(ListBlock, netip.PrefixFrom(a, a.BitLen()), false); err != nil {
			t.Fatal(err)
		}
		if got := runFrame(t, p.Prog(), frame(b)); got != xdpDrop {
			t.Errorf("%s (sharing its filter bit with the removed %s): verdict %d, want drop", b, a, got)
		}
		if got := runFrame(t, p.Prog(), frame(a)); got != xdpPass {
			t.Errorf("removed %s: verdict %d, want pass", a, got)
		}
		if err := p.SetPrefix(ListBlock, netip.PrefixFrom(b, b.BitLen()), false); err != nil {
			t.Fatal(err)
		}
		if got := runFrame(t, p.Prog(), frame(b)); got != xdpPass {
			t.Errorf("removed %s: verdict %d, want pass", b, got)
		}
	}
}
