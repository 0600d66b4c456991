// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/test/lab"
)

// TestICMPTypeCodeFlows sends, from the client through the router, an
// echo request (ping), a UDP datagram with TTL/hop limit 1 (the router
// answers time exceeded, as to a traceroute probe) and a UDP datagram to
// a closed port of the server (the server answers port unreachable), in
// IPv4 and IPv6, and reads rfm's IPFIX export with nfcapd and nfdump.
// Must hold: each ICMP message is its own flow, with source port 0 and
// destination port type*256+code, which nfdump shows as its ICMP type
// and code; with the ICMP type left out of the key they were one flow.
func TestICMPTypeCodeFlows(t *testing.T) {
	l := newRouted(t)
	nf := startNfcapd(t, l.r)
	a := startAgent(t, l.r, []string{l.rIn, l.rOut}, 1, ipfixConfig())

	type probe struct {
		name       string
		v6         bool
		src, dst   netip.Addr
		iface, dir string // where the router sees the ICMP message
		typ, code  uint8
	}
	probes := []probe{
		{"echo request", false, l.clientV4, l.srvV4, l.rIn, "ingress", 8, 0},
		{"echo reply", false, l.srvV4, l.clientV4, l.rOut, "ingress", 0, 0},
		{"time exceeded", false, netip.MustParseAddr("198.18.0.1"), l.clientV4, l.rIn, "egress", 11, 0},
		{"port unreachable", false, l.srvV4, l.clientV4, l.rOut, "ingress", 3, 3},
		{"echo request v6", true, l.clientV6, l.srvV6, l.rIn, "ingress", 128, 0},
		{"echo reply v6", true, l.srvV6, l.clientV6, l.rOut, "ingress", 129, 0},
		{"time exceeded v6", true, netip.MustParseAddr("2001:db8:c::1"), l.clientV6, l.rIn, "egress", 3, 0},
		{"port unreachable v6", true, l.srvV6, l.clientV6, l.rOut, "ingress", 1, 4},
	}

	for _, v6 := range []bool{false, true} {
		srv, cli := l.srvV4, l.clientV4
		if v6 {
			srv, cli = l.srvV6, l.clientV6
		}
		ping(t, l.c, cli, srv)
		// A probe that expires at the router, then one to a closed port.
		expiring := lab.UDPConn(t, l.c, netip.AddrPortFrom(cli, 40001).String(), netip.AddrPortFrom(srv, 33434).String())
		setHopLimit(t, expiring, v6, 1)
		closed := lab.UDPConn(t, l.c, netip.AddrPortFrom(cli, 40002).String(), netip.AddrPortFrom(srv, 33435).String())
		for _, c := range []*net.UDPConn{expiring, closed} {
			if _, err := c.Write([]byte("probe")); err != nil {
				t.Fatalf("sending probe: %v", err)
			}
			// The ICMP error comes back as ECONNREFUSED or EHOSTUNREACH on
			// the connected socket: wait for it, so it has crossed the router.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 64)); err == nil {
				t.Fatalf("probe from %s got a datagram, want an ICMP error", c.LocalAddr())
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("no ICMP error for the probe from %s within 5s", c.LocalAddr())
			}
		}
	}
	for _, p := range probes {
		a.settledFlow(t, flowKey{p.iface, p.dir, icmpProto(p.v6), addrPort(p.src.String(), 0),
			addrPort(p.dst.String(), uint16(p.typ)<<8|uint16(p.code))}, 200*time.Millisecond, 10*time.Second)
	}

	recs := nf.records(t, a)
	for _, p := range probes {
		srcKey, dstKey := "src4_addr", "dst4_addr"
		if p.v6 {
			srcKey, dstKey = "src6_addr", "dst6_addr"
		}
		var got []string
		for _, r := range recs {
			if r[srcKey] != p.src.String() || r[dstKey] != p.dst.String() || jsonNumber(r, "proto") != uint64(icmpProto(p.v6)) {
				continue
			}
			got = append(got, fmt.Sprintf("%d.%d", jsonNumber(r, "icmp_type"), jsonNumber(r, "icmp_code")))
		}
		want := fmt.Sprintf("%d.%d", p.typ, p.code)
		found := false
		for _, g := range got {
			found = found || g == want
		}
		if !found {
			t.Errorf("%s %s -> %s: nfdump shows ICMP %v, want %s among them", p.name, p.src, p.dst, got, want)
		}
	}
	if t.Failed() {
		t.Logf("nfdump records:\n%v", recs)
	}
}

func icmpProto(v6 bool) uint8 {
	if v6 {
		return 58
	}
	return 1
}

// setHopLimit sets the TTL (IPv4) or hop limit (IPv6) of c's datagrams
// and has ICMP errors reported on c.
func setHopLimit(t testing.TB, c *net.UDPConn, v6 bool, n int) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		// RECVERR: Linux reports time exceeded, a soft error, on a UDP
		// socket only when asked to.
		if v6 {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, n),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1))
		} else {
			serr = errors.Join(unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, n),
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVERR, 1))
		}
	})
	if err != nil || serr != nil {
		t.Fatalf("setting hop limit %d: %v %v", n, err, serr)
	}
}

// ping sends one echo request from src to dst over a raw ICMP socket in
// ns and waits for the reply.
func ping(t testing.TB, ns string, src, dst netip.Addr) {
	t.Helper()
	network, req, replyType := "ip4:icmp", []byte{8, 0, 0, 0, 0x52, 0x46, 0, 1}, byte(0)
	if dst.Is6() {
		// The kernel fills in the ICMPv6 checksum of raw ICMPv6 sockets.
		network, req, replyType = "ip6:ipv6-icmp", []byte{128, 0, 0, 0, 0x52, 0x46, 0, 1}, 129
	} else {
		cs := checksum(0, req)
		req[2], req[3] = byte(cs>>8), byte(cs)
	}
	var c net.PacketConn
	err := lab.InNetns(ns, func() (err error) {
		c, err = net.ListenPacket(network, src.String())
		return err
	})
	if err != nil {
		t.Fatalf("raw ICMP socket in %s: %v", ns, err)
	}
	defer c.Close()
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		t.Fatalf("echo request to %s: %v", dst, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no echo reply from %s: %v", dst, err)
		}
		if n >= 8 && buf[0] == replyType && from.String() == dst.String() {
			return
		}
	}
}
