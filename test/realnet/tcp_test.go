// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/test/lab"
)

// TCP option bits of tcpi_options.
const (
	tcpiOptTimestamps = 1
	tcpiOptSACK       = 2
	tcpiOptWscale     = 4
)

// ethHeader is the Ethernet header every segment carries on a veth.
const ethHeader = 14

// tcpDirection is the truth for one direction of a connection: the
// segments that crossed the router and their L3 bytes.
type tcpDirection struct {
	segments float64
	l3Bytes  float64
}

// tcpTruth derives what crossed the router in each direction from the
// endpoints' TCP_INFO alone. Every segment carries an IP header and a TCP
// header whose options follow from the handshake: with timestamps each
// segment has 12 option bytes (NOP, NOP, TS), and the SYN and SYN-ACK
// carry MSS (4) + NOP NOP TS (12) + NOP WS (4) instead; SACK is off in the
// lab so no SACK blocks appear. Payload comes from tcpi_bytes_sent, which
// includes retransmissions.
//
// Forward (client -> server) segments are the client's tcpi_segs_out
// (SYN included); reverse are the client's tcpi_segs_in. The server's own
// counts must agree (the lab lost nothing) or the test stops: the server
// socket's segs_out misses the SYN-ACK, which its request socket sent.
func tcpTruth(t testing.TB, r tcpResult, v6 bool) (fwd, rev tcpDirection) {
	t.Helper()
	c, s := r.client, r.server
	if c.Options&tcpiOptTimestamps == 0 || c.Options&tcpiOptWscale == 0 || c.Options&tcpiOptSACK != 0 {
		t.Fatalf("lab assumption: want timestamps and window scaling on and SACK off, tcpi_options = %#x", c.Options)
	}
	// A retransmission the receiver also got (spurious) is fine: the
	// router carried it and tcpi_bytes_sent counts it.
	if s.Segs_in != c.Segs_out || s.Segs_out+1 != c.Segs_in || s.Bytes_received > c.Bytes_sent+1 {
		t.Fatalf("the lab lost segments, the truth is unknown: client segs_out %d in %d bytes_sent %d, server segs_in %d out %d bytes_received %d (FIN included)",
			c.Segs_out, c.Segs_in, c.Bytes_sent, s.Segs_in, s.Segs_out, s.Bytes_received)
	}
	if c.Total_retrans != 0 {
		t.Logf("%d retransmitted segments (%d bytes), all received: counted in the truth", c.Total_retrans, c.Bytes_retrans)
	}
	ipHeader := 20.0
	if v6 {
		ipHeader = 40
	}
	const tcpHeader = 20 + 12 // NOP NOP timestamps
	const synExtra = 20 - 12  // MSS + TS + WS options instead of TS alone
	fwd = tcpDirection{float64(c.Segs_out), float64(c.Bytes_sent) + float64(c.Segs_out)*(ipHeader+tcpHeader) + synExtra}
	rev = tcpDirection{float64(c.Segs_in), float64(s.Bytes_sent) + float64(c.Segs_in)*(ipHeader+tcpHeader) + synExtra}
	return fwd, rev
}

// TestTCPOffloadsOn runs TCP bulk transfers through a router whose
// interfaces rfm watches, with TSO, GSO and GRO on: the router sees GSO
// super-packets of about 40 segments. Must hold: at every sample rate the
// interface counters count segments and per-segment frame bytes (Ethernet
// header + IP header + TCP header + payload, per segment) exactly; at rate
// 1 every flow's packets and L3 bytes are exact; at rate 10 they are
// within the sampling bound (failure probability 1e-6).
func TestTCPOffloadsOn(t *testing.T) {
	l := newRouted(t)
	a := startAgent(t, l.r, []string{l.rIn, l.rOut}, 1)
	for _, tc := range []struct {
		name   string
		v6     bool
		rate   int
		nbytes int64
		port   uint16
	}{
		{"ipv4 rate 1", false, 1, 64 << 20, 5001},
		{"ipv6 rate 1", true, 1, 64 << 20, 5002},
		// Large enough for a useful bound (about 20 %) on flows whose
		// skbs carry up to ~45 segments each.
		{"ipv4 rate 10", false, 10, 512 << 20, 5003},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a.setSampleRate(t, tc.rate)
			family := "ipv4"
			if tc.v6 {
				family = "ipv6"
			}
			m0 := a.mustScrape(t)
			start := time.Now()
			res := l.tcpTransfer(t, tc.v6, tc.port, tc.nbytes)
			took := time.Since(start)
			m1 := a.mustScrape(t)
			fwd, rev := tcpTruth(t, res, tc.v6)
			kernelRx, _ := kernelLinkStats(t, l.r, l.rIn)
			t.Logf("%d bytes in %s; forward %v segments, %v L3 bytes; reverse %v segments, %v L3 bytes; router %s rx_packets (skbs) %d",
				tc.nbytes, took.Round(time.Millisecond), fwd.segments, fwd.l3Bytes, rev.segments, rev.l3Bytes, l.rIn, kernelRx["packets"])

			// Interface counters are kept for every packet at any rate.
			in := m1.iface(l.rIn, family).minus(m0.iface(l.rIn, family))
			out := m1.iface(l.rOut, family).minus(m0.iface(l.rOut, family))
			frame := func(d tcpDirection) float64 { return d.l3Bytes + ethHeader*d.segments }
			for _, c := range []struct {
				what      string
				got, want float64
			}{
				{l.rIn + " rx packets", in.rxPackets, fwd.segments},
				{l.rIn + " rx bytes", in.rxBytes, frame(fwd)},
				{l.rOut + " tx packets", out.txPackets, fwd.segments},
				{l.rOut + " tx bytes", out.txBytes, frame(fwd)},
				{l.rOut + " rx packets", out.rxPackets, rev.segments},
				{l.rOut + " rx bytes", out.rxBytes, frame(rev)},
				{l.rIn + " tx packets", in.txPackets, rev.segments},
				{l.rIn + " tx bytes", in.txBytes, frame(rev)},
			} {
				if c.got != c.want {
					t.Errorf("%s %s = %.0f, want %.0f (%+.2f %%)", family, c.what, c.got, c.want, 100*(c.got-c.want)/c.want)
				}
			}

			cli, srv := l.clientV4, l.srvV4
			if tc.v6 {
				cli, srv = l.clientV6, l.srvV6
			}
			fwdSrc, fwdDst := addrPort(cli.String(), res.clientPort), addrPort(srv.String(), tc.port)
			// The most one skb adds: forward, a GSO/GRO super-packet of at
			// most gsoMaxSize bytes, so at most ceil(gsoMaxSize/mss)
			// segments and gsoMaxSize payload bytes plus each segment's
			// headers; reverse, one pure ACK (no payload: never GSO'd, never
			// merged by GRO) or the SYN-ACK.
			ipHeader := 20.0
			if tc.v6 {
				ipHeader = 40
			}
			fwdMaxSegs := math.Ceil(float64(l.gsoMaxSize) / float64(res.client.Snd_mss))
			fwdMaxBytes := float64(l.gsoMaxSize) + fwdMaxSegs*(ipHeader+40)
			flows := []struct {
				key                 flowKey
				truth               tcpDirection
				maxSegs, maxL3Bytes float64
			}{
				{flowKey{l.rIn, "ingress", unix.IPPROTO_TCP, fwdSrc, fwdDst}, fwd, fwdMaxSegs, fwdMaxBytes},
				{flowKey{l.rOut, "egress", unix.IPPROTO_TCP, fwdSrc, fwdDst}, fwd, fwdMaxSegs, fwdMaxBytes},
				{flowKey{l.rOut, "ingress", unix.IPPROTO_TCP, fwdDst, fwdSrc}, rev, 1, ipHeader + 40},
				{flowKey{l.rIn, "egress", unix.IPPROTO_TCP, fwdDst, fwdSrc}, rev, 1, ipHeader + 40},
			}
			var keys []flowKey
			for _, f := range flows {
				keys = append(keys, f.key)
			}
			settled := a.settledFlows(t, keys, 500*time.Millisecond, 20*time.Second)
			for _, f := range flows {
				got := settled[f.key]
				checkEstimate(t, fmt.Sprintf("flow %v packets", f.key), tc.rate, float64(got.Packets), f.truth.segments, f.maxSegs)
				checkEstimate(t, fmt.Sprintf("flow %v bytes", f.key), tc.rate, float64(got.Bytes), f.truth.l3Bytes, f.maxL3Bytes)
			}
		})
	}
}

// checkEstimate compares a 1-in-rate estimate with the truth: exact at
// rate 1, within samplingBound otherwise (maxUnit: the most one skb can
// add to the truth).
func checkEstimate(t testing.TB, what string, rate int, got, want, maxUnit float64) {
	t.Helper()
	bound := samplingBound(rate, want, maxUnit)
	if math.Abs(got-want) > bound {
		t.Errorf("%s = %.0f, want %.0f ± %.0f at rate %d (off by %+.2f %%)", what, got, want, bound, rate, 100*(got-want)/want)
		return
	}
	t.Logf("%s = %.0f, want %.0f ± %.0f at rate %d", what, got, want, bound, rate)
}

// TestNoPacketMutation runs the same TCP transfer twice, with an
// independent probe last on each TC hook of the router's two interfaces
// and of the client's interface (locally generated TCP at egress: clones
// whose payload sits in page fragments): first without rfm, then with rfm
// attached at sample rate 1 before the probe (one agent in the router, one
// in the client). Must hold: every linear length (skb->data_end -
// skb->data) the probe sees with rfm attached it also saw without: rfm
// neither pulls nor linearises the packets it watches.
func TestNoPacketMutation(t *testing.T) {
	l := newRouted(t)
	type hook struct {
		ns, dev string
		at      ebpf.AttachType
	}
	hooks := []hook{
		{l.r, l.rIn, ebpf.AttachTCXIngress}, {l.r, l.rOut, ebpf.AttachTCXEgress},
		{l.r, l.rOut, ebpf.AttachTCXIngress}, {l.r, l.rIn, ebpf.AttachTCXEgress},
		{l.c, l.cDev, ebpf.AttachTCXEgress}, {l.c, l.cDev, ebpf.AttachTCXIngress},
	}
	probes := make([]*linearProbe, len(hooks))
	for i, h := range hooks {
		probes[i] = newLinearProbe(t)
		probes[i].attach(t, h.ns, h.dev, h.at)
	}
	l.tcpTransfer(t, false, 5001, 64<<20)
	without := make([]map[int]uint64, len(hooks))
	for i, p := range probes {
		without[i] = p.histogram(t)
		p.detach(t)
	}
	router := startAgent(t, l.r, []string{l.rIn, l.rOut}, 1)
	client := startAgent(t, l.c, []string{l.cDev}, 1)
	for i, h := range hooks {
		// rfm attached first; the probe goes after it and checks so.
		in, eg := lab.AttachedPrograms(t, h.ns, ifindexIn(t, h.ns, h.dev))
		if n := map[ebpf.AttachType]int{ebpf.AttachTCXIngress: in, ebpf.AttachTCXEgress: eg}[h.at]; n != 1 {
			t.Fatalf("%s %v: %d programs before the probe, want rfm's 1", h.dev, h.at, n)
		}
		probes[i].attach(t, h.ns, h.dev, h.at)
	}
	l.tcpTransfer(t, false, 5002, 64<<20)
	for i, p := range probes {
		with := p.histogram(t)
		for length, n := range with {
			if without[i][length] == 0 {
				t.Errorf("%s %v: with rfm %d packets had linear length %d, never seen without rfm\nwithout rfm: %s\nwith rfm:    %s",
					hooks[i].dev, hooks[i].at, n, length, formatHistogram(without[i]), formatHistogram(with))
				break
			}
		}
		t.Logf("%s %v linear lengths (bytes:packets) without rfm %s; with rfm %s", hooks[i].dev, hooks[i].at, formatHistogram(without[i]), formatHistogram(with))
	}
	// The second transfer went through rfm's hooks.
	for _, a := range []*agent{router, client} {
		if fl := a.flows(t); len(fl.Flows) == 0 {
			t.Errorf("rfm in %s saw no flows: %+v", a.ns, fl)
		}
	}
}
