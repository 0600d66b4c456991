// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/stepbrobd/rfm/test/lab"
)

// Real traffic over a veth at sample rate 1: a burst of one UDP flow
// arrives as events that each carry a run of its packets (far fewer
// events than packets), and a stream alternating between two flows
// packet by packet as one event per packet; either way the events' Segs
// and Len add up to exactly the datagrams sent and their IP bytes.
func TestMergeOnVeth(t *testing.T) {
	requireRoot(t)
	id := fmt.Sprintf("%d%d", os.Getpid()%10000, time.Now().UnixNano()%1000)
	nsA, nsB, devB := "rfmma"+id, "rfmmb"+id, "mb0"
	lab.NewPair(t, lab.PairOptions{
		NsA: nsA, NsB: nsB, DevA: "ma0", DevB: devB,
		MACA: lab.MustMAC("02:00:00:00:0c:01"), MACB: lab.MustMAC("02:00:00:00:0d:01"),
		StrictCleanup: true,
		Addrs:         [][2]netip.Prefix{{netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("198.18.0.2/24")}},
	})
	var d *Datapath
	if err := lab.InNetns(nsB, func() error {
		link, err := netlink.LinkByName(devB)
		if err != nil {
			return err
		}
		if d, err = Load(Options{RingBufSize: 1 << 22, MaxInterfaces: 4}); err != nil {
			return err
		}
		if err := d.SetConfig(Config{SampleRate: 1}); err != nil {
			return err
		}
		return d.Attach(link.Attrs().Index, devB)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	const (
		dst      = "198.18.0.2:7000"
		payload  = 120
		chunk    = 100 // back to back, under a veth's queue
		burst    = 10 * chunk
		perFlow  = 5 * chunk
		ipPacket = 20 + 8 + payload
	)
	sink := lab.UDPConn(t, nsB, dst, "")
	one := []*net.UDPConn{lab.UDPConn(t, nsA, "198.18.0.1:41000", dst)}
	two := []*net.UDPConn{lab.UDPConn(t, nsA, "198.18.0.1:41001", dst), lab.UDPConn(t, nsA, "198.18.0.1:41002", dst)}
	// One sending CPU: a datagram crosses the hook in its sender's
	// write (the veth hands it to the receive path there), so the burst's
	// packets follow one another in that CPU's batch.
	pinToFirstCPU(t)
	lab.SendChunks(t, one, sink, burst/chunk, chunk, payload)
	lab.SendChunks(t, two, sink, 2*perFlow/chunk, chunk, payload)

	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	type sums struct{ events, packets, bytes uint64 }
	got := map[uint16]sums{}
	evs := make([]Event, 256)
	for {
		n, err := d.ReadBatch(evs)
		for _, e := range evs[:n] {
			if e.Dir != Ingress || e.Proto != 17 || e.DstPort != 7000 {
				continue
			}
			s := got[e.SrcPort]
			s.events++
			s.packets += uint64(e.Segs)
			s.bytes += uint64(e.Len)
			got[e.SrcPort] = s
		}
		if errors.Is(err, ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for port, n := range map[uint16]uint64{41000: burst, 41001: perFlow, 41002: perFlow} {
		if s := got[port]; s.packets != n || s.bytes != n*ipPacket {
			t.Errorf("flow from port %d: %d packets, %d bytes in %d events; want %d and %d", port, s.packets, s.bytes, s.events, n, n*ipPacket)
		}
	}
	// Runs of the burst share events.
	if s := got[41000]; s.events > burst/2 {
		t.Errorf("the burst of %d packets of one flow came as %d events: runs were not merged", burst, s.events)
	}
	t.Logf("burst: %d packets in %d events; interleaved: %d and %d events for %d packets each",
		burst, got[41000].events, got[41001].events, got[41002].events, perFlow)
	if st, err := d.Stats(); err != nil || st.RingDrops != 0 {
		t.Errorf("ring drops %d (%v), want 0", st.RingDrops, err)
	}
}
