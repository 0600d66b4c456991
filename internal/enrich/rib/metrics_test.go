// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	f := newFixture(t)
	s := f.connect(router1())
	a := f.peerUp(s, peerA, 65001)
	f.peerUp(s, peerB, 65002)
	f.announce(a, PrePolicy, "198.18.0.0/24", 0, seq(65001, 64500))
	f.announce(a, PostPolicy, "198.18.0.0/24", 0, seq(65001, 64500))
	f.announce(a, PrePolicy, "2001:db8::/32", 0, seq(65001, 64500))
	// CollectAndCompare gathers through a pedantic registry, which also
	// checks the collector's descriptions against what it emits.
	const want = `
# HELP rfm_rib_peers BGP peer sessions in the RIB, including stale ones kept after their router disconnected.
# TYPE rfm_rib_peers gauge
rfm_rib_peers 2
# HELP rfm_rib_routes Routes in the RIB (one per peer, view and path id), by address family.
# TYPE rfm_rib_routes gauge
rfm_rib_routes{family="ipv4"} 2
rfm_rib_routes{family="ipv6"} 1
`
	if err := testutil.CollectAndCompare(f.rib, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
