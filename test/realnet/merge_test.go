// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"net"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// TestMergedRunsExact runs the agent at sample rate 1 on the router and
// sends bursts of one UDP flow, whose packets follow one another on one
// CPU so the datapath carries runs of them in one event, then a stream
// that alternates between two flows packet by packet, so no two packets
// in a row share a flow. Must hold: each flow's sampled packets, packet
// estimate and bytes at both router hooks equal what was sent: packets
// as written, bytes their IP packets (20 + 8 + payload), derived from
// the sockets alone.
func TestMergedRunsExact(t *testing.T) {
	l := newRouted(t)
	a := startAgent(t, l.r, []string{l.rIn, l.rOut}, 1, "")
	const (
		dst      = "198.19.0.2:5003"
		payload  = 200
		chunk    = 100 // datagrams back to back, under a veth's 256-packet queue
		burst    = 20 * chunk
		perFlow  = 10 * chunk // of the interleaved stream, each flow
		ipPacket = 20 + 8 + payload
	)
	sink := lab.UDPConn(t, l.s, dst, "")
	one := lab.UDPConn(t, l.c, "198.18.0.2:41000", dst)
	lab.SendChunks(t, []*net.UDPConn{one}, sink, burst/chunk, chunk, payload)
	two := []*net.UDPConn{lab.UDPConn(t, l.c, "198.18.0.2:41001", dst), lab.UDPConn(t, l.c, "198.18.0.2:41002", dst)}
	lab.SendChunks(t, two, sink, 2*perFlow/chunk, chunk, payload)

	want := map[string]uint64{"198.18.0.2:41000": burst, "198.18.0.2:41001": perFlow, "198.18.0.2:41002": perFlow}
	var keys []flowKey
	for src := range want {
		keys = append(keys, flowKey{l.rIn, "ingress", 17, src, dst}, flowKey{l.rOut, "egress", 17, src, dst})
	}
	got := a.settledFlows(t, keys, 300*time.Millisecond, 20*time.Second)
	for _, k := range keys {
		f, n := got[k], want[k.src]
		if f.Sampled != n || f.Packets != n || f.Bytes != n*ipPacket {
			t.Errorf("%s %s %s: %d sampled, %d packets, %d bytes; want %d, %d, %d",
				k.iface, k.dir, k.src, f.Sampled, f.Packets, f.Bytes, n, n, n*ipPacket)
		}
	}
	if drops := a.mustScrape(t).sum("rfm_collector_dropped_events_total"); drops != 0 {
		t.Errorf("%v sampled packets lost to a full ring", drops)
	}
}
