// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

func blackholed(st *Station) []string {
	var out []string
	for _, p := range slices.SortedFunc(maps.Keys(st.BlackholePrefixes()), func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) }) {
		out = append(out, p.String())
	}
	return out
}

// TestBlackholeRoutes: a route carrying 65535:666 is listed while the
// RIB holds it; withdraw, a re-announce without the community and Peer
// Down end it; another community does not count. Both decoders.
func TestBlackholeRoutes(t *testing.T) {
	for _, gobgpOnly := range []bool{false, true} {
		h := newHarness(t)
		h.dec.gobgpOnly = gobgpOnly
		bh := []bgp.PathAttributeInterface{bgp.NewPathAttributeCommunities([]uint32{65000<<16 | 1, 0xFFFF029A})}
		other := []bgp.PathAttributeInterface{bgp.NewPathAttributeCommunities([]uint32{65535<<16 | 667})}
		peer := "192.0.2.7"
		if err := h.feed(initiationMsg(t, "r1"), peerUpMsg(t, peer, 64500, peerUpOpts{}),
			announceMsg(t, peer, 64500, 0, route{announce: []string{"198.18.5.0/24", "2001:db8:5::/48"}, path: []uint32{64500}, extraAttr: bh}),
			announceMsg(t, peer, 64500, 0, route{announce: []string{"198.18.6.0/24"}, path: []uint32{64500}, extraAttr: other}),
			announceMsg(t, peer, 64500, 0, route{announce: []string{"198.18.7.0/24"}, path: []uint32{64500}}),
		); err != nil {
			t.Fatal(err)
		}
		check := func(step string, want ...string) {
			t.Helper()
			if got := blackholed(h.st); !slices.Equal(got, want) {
				t.Errorf("gobgpOnly=%v %s: blackholed %v, want %v", gobgpOnly, step, got, want)
			}
		}
		check("announced", "198.18.5.0/24", "2001:db8:5::/48")
		h.feed(announceMsg(t, peer, 64500, 0, route{withdraw: []string{"2001:db8:5::/48"}}))
		check("v6 withdrawn", "198.18.5.0/24")
		h.feed(announceMsg(t, peer, 64500, 0, route{announce: []string{"198.18.5.0/24"}, path: []uint32{64500}}))
		check("re-announced without the community")
		h.feed(announceMsg(t, peer, 64500, 0, route{announce: []string{"198.18.5.0/24"}, path: []uint32{64500}, extraAttr: bh}))
		check("announced again", "198.18.5.0/24")
		h.feed(peerDownMsg(t, peer, 64500))
		check("peer down")
	}
}
