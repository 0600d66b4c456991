// SPDX-License-Identifier: AGPL-3.0-only

package flow

import "testing"

// Interfaces marked gone are forgotten after the hold, and once none is
// left the map itself goes: a Go map keeps its buckets when emptied, so
// a burst of a thousand deleted interfaces would otherwise cost memory
// for the life of the agent.
func TestGoneInterfacesReleased(t *testing.T) {
	var g goneInterfaces
	for i := range uint32(1000) {
		g.mark(i+1, 100)
	}
	g.mark(5000, 300)
	g.expire(200)
	if !g.refuses(5000) || g.refuses(1) || len(g.since) != 1 {
		t.Fatalf("after expire(200): refuses(5000)=%v refuses(1)=%v len=%d, want true false 1", g.refuses(5000), g.refuses(1), len(g.since))
	}
	g.expire(301)
	if g.since != nil || g.refuses(5000) {
		t.Fatalf("after every interface expired: map %v (nil wanted), refuses(5000)=%v", g.since, g.refuses(5000))
	}
	g.mark(7, 400) // usable again
	if !g.refuses(7) {
		t.Fatal("refuses(7) = false after mark(7)")
	}
}
