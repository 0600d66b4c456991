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
