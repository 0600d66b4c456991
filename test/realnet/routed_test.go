// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/test/lab"
)

// routed is client -- router -- server: three namespaces joined by two
// veth pairs, with every offload the kernel turns on by default left on
// and GRO turned on as well (a veth leaves it off by default). rfm runs in
// the router and watches both of its interfaces.
type routed struct {
	c, r, s         string // namespaces
	clientV4, srvV4 netip.Addr
	clientV6, srvV6 netip.Addr
	rIn, rOut       string // router's interface towards the client, towards the server
	cDev, sDev      string
	gsoMaxSize      int // the largest GSO/GRO super-packet the veths allow, in bytes
}

func newRouted(t *testing.T) *routed {
	t.Helper()
	l := &routed{
		c: newNamespace(t, "c"), r: newNamespace(t, "r"), s: newNamespace(t, "s"),
		clientV4: netip.MustParseAddr("198.18.0.2"), srvV4: netip.MustParseAddr("198.19.0.2"),
		clientV6: netip.MustParseAddr("2001:db8:c::2"), srvV6: netip.MustParseAddr("2001:db8:5::2"),
		rIn: "r0", rOut: "r1", cDev: "c0", sDev: "s0",
	}
	sysctl(t, l.r, "net.ipv4.ip_forward=1")
	// Per-interface IPv6 forwarding routes without making the namespace
	// a router: conf/all/forwarding would join ff02::2 on every interface
	// and send MLD reports into the measurement.
	if _, err := os.Stat("/proc/sys/net/ipv6/conf/default/force_forwarding"); err != nil {
		t.Fatalf("this lab needs net.ipv6.conf.*.force_forwarding (Linux 6.17 or newer): %v", err)
	}
	sysctl(t, l.r, "net.ipv6.conf.default.force_forwarding=1")
	// SACK off at the endpoints: every segment's TCP options then follow
	// from the handshake alone (timestamps stay on, as on real hosts); with
	// SACK, ACKs after a reordering or loss would carry blocks of unknown
	// size.
	for _, ns := range []string{l.c, l.s} {
		sysctl(t, ns, "net.ipv4.tcp_sack=0")
	}
	vethPair(t, vethEnd{l.c, l.cDev, "02:52:4e:00:00:01", "198.18.0.2/24", "2001:db8:c::2/64"},
		vethEnd{l.r, l.rIn, "02:52:4e:00:00:02", "198.18.0.1/24", "2001:db8:c::1/64"})
	vethPair(t, vethEnd{l.s, l.sDev, "02:52:4e:00:01:01", "198.19.0.2/24", "2001:db8:5::2/64"},
		vethEnd{l.r, l.rOut, "02:52:4e:00:01:02", "198.19.0.1/24", "2001:db8:5::1/64"})
	lab.Run(t, "ip", "-n", l.c, "route", "add", "198.19.0.0/24", "via", "198.18.0.1")
	lab.Run(t, "ip", "-n", l.c, "-6", "route", "add", "2001:db8:5::/64", "via", "2001:db8:c::1")
	lab.Run(t, "ip", "-n", l.s, "route", "add", "198.18.0.0/24", "via", "198.19.0.1")
	lab.Run(t, "ip", "-n", l.s, "-6", "route", "add", "2001:db8:c::/64", "via", "2001:db8:5::1")
	for _, d := range [][2]string{{l.c, l.cDev}, {l.r, l.rIn}, {l.r, l.rOut}, {l.s, l.sDev}} {
		l.gsoMaxSize = max(l.gsoMaxSize, gsoMaxSize(t, d[0], d[1]))
	}
	return l
}

// vethEnd is one end of a veth pair: its namespace, name, MAC and
// addresses (prefix notation).
type vethEnd struct{ ns, dev, mac, v4, v6 string }

// vethPair joins a and b with a quiet veth pair: NOARP with permanent
// neighbours, no DAD; offloads left on (TSO and GSO are on by default)
// and GRO turned on.
func vethPair(t *testing.T, a, b vethEnd) {
	t.Helper()
	lab.Run(t, "ip", "link", "add", a.dev, "netns", a.ns, "address", a.mac, "type", "veth",
		"peer", "name", b.dev, "netns", b.ns, "address", b.mac)
	for _, e := range [][2]vethEnd{{a, b}, {b, a}} {
		own, peer := e[0], e[1]
		lab.Run(t, "ip", "netns", "exec", own.ns, "ethtool", "-K", own.dev, "gro", "on")
		lab.Run(t, "ip", "-n", own.ns, "link", "set", own.dev, "arp", "off")
		lab.Run(t, "ip", "-n", own.ns, "addr", "add", own.v4, "dev", own.dev)
		lab.Run(t, "ip", "-n", own.ns, "addr", "add", own.v6, "dev", own.dev, "nodad")
		for _, p := range []string{peer.v4, peer.v6} {
			lab.Run(t, "ip", "-n", own.ns, "neigh", "replace", strings.Split(p, "/")[0], "lladdr", peer.mac, "dev", own.dev, "nud", "permanent")
		}
		lab.Run(t, "ip", "-n", own.ns, "link", "set", own.dev, "up")
		requireOffloads(t, own.ns, own.dev)
	}
}

// requireOffloads fails unless TSO, GSO and GRO are on for dev: the
// point of this package is to count with them on.
func requireOffloads(t testing.TB, ns, dev string) {
	t.Helper()
	out := lab.Run(t, "ip", "netns", "exec", ns, "ethtool", "-k", dev)
	for _, want := range []string{"tcp-segmentation-offload: on", "generic-segmentation-offload: on", "generic-receive-offload: on"} {
		if !strings.Contains(out, want) {
			t.Fatalf("%s in %s: want %q in ethtool -k:\n%s", dev, ns, want, out)
		}
	}
}

// gsoMaxSize reads the largest super-packet dev may carry: the largest of
// its GSO and GRO limits, IPv4 ones included (with BIG TCP they may exceed
// 64 KiB).
func gsoMaxSize(t testing.TB, ns, dev string) int {
	t.Helper()
	var links []struct {
		GSOMaxSize     int `json:"gso_max_size"`
		GROMaxSize     int `json:"gro_max_size"`
		GSOIPv4MaxSize int `json:"gso_ipv4_max_size"`
		GROIPv4MaxSize int `json:"gro_ipv4_max_size"`
	}
	out := lab.Run(t, "ip", "-n", ns, "-d", "-j", "link", "show", "dev", dev)
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -d -j link show %s in %s: %v: %s", dev, ns, err, out)
	}
	if links[0].GSOMaxSize == 0 {
		t.Fatalf("%s in %s: no gso_max_size in %s", dev, ns, out)
	}
	k := links[0]
	return max(k.GSOMaxSize, k.GROMaxSize, k.GSOIPv4MaxSize, k.GROIPv4MaxSize, 65536)
}

// kernelLinkStats reads dev's kernel counters in ns (ip -s -j link).
func kernelLinkStats(t testing.TB, ns, dev string) (rx, tx map[string]uint64) {
	t.Helper()
	var links []struct {
		Stats struct {
			RX map[string]uint64 `json:"rx"`
			TX map[string]uint64 `json:"tx"`
		} `json:"stats64"`
	}
	out, err := exec.Command("ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev).Output()
	if err != nil {
		t.Fatalf("ip -s -j link show %s in %s: %v", dev, ns, err)
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show %s in %s: %v: %s", dev, ns, err, out)
	}
	return links[0].Stats.RX, links[0].Stats.TX
}

// ifindexIn returns the index of dev inside ns.
func ifindexIn(t testing.TB, ns, dev string) int {
	t.Helper()
	var idx int
	err := lab.InNetns(ns, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		idx = ifc.Index
		return nil
	})
	if err != nil {
		t.Fatalf("ifindex of %s in %s: %v", dev, ns, err)
	}
	return idx
}

// tcpResult is what both ends of one finished TCP connection say about
// it, read with TCP_INFO once each end's socket reached TCP_CLOSE (every
// segment of the connection, FINs and their ACKs included, has been sent
// and counted).
type tcpResult struct {
	client, server unix.TCPInfo
	clientPort     uint16
}

// tcpTransfer sends nbytes from the client to the server over one TCP
// connection, closes it cleanly from both sides and returns TCP_INFO.
func (l *routed) tcpTransfer(t *testing.T, v6 bool, port uint16, nbytes int64) tcpResult {
	t.Helper()
	srv, cli := l.srvV4, l.clientV4
	if v6 {
		srv, cli = l.srvV6, l.clientV6
	}
	var ln *net.TCPListener
	err := lab.InNetns(l.s, func() error {
		var err error
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(srv, port)))
		return err
	})
	if err != nil {
		t.Fatalf("listening on %v:%d in %s: %v", srv, port, l.s, err)
	}
	defer ln.Close()
	type served struct {
		info unix.TCPInfo
		n    int64
		err  error
	}
	done := make(chan served, 1)
	go func() {
		var r served
		defer func() { done <- r }()
		c, err := ln.AcceptTCP()
		if err != nil {
			r.err = err
			return
		}
		defer c.Close()
		if r.n, r.err = io.Copy(io.Discard, c); r.err != nil {
			return
		}
		if r.err = c.CloseWrite(); r.err != nil {
			return
		}
		r.info, r.err = waitClosed(c)
	}()
	var c *net.TCPConn
	err = lab.InNetns(l.c, func() error {
		var err error
		c, err = net.DialTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(cli, 0)), net.TCPAddrFromAddrPort(netip.AddrPortFrom(srv, port)))
		return err
	})
	if err != nil {
		t.Fatalf("connecting to %v:%d from %s: %v", srv, port, l.c, err)
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	for sent := int64(0); sent < nbytes; {
		n := min(int64(len(buf)), nbytes-sent)
		if _, err := c.Write(buf[:n]); err != nil {
			t.Fatalf("sending: %v", err)
		}
		sent += n
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("shutdown(SHUT_WR): %v", err)
	}
	if n, err := c.Read(buf); err != io.EOF {
		t.Fatalf("client read %d bytes, %v; want EOF", n, err)
	}
	clientInfo, err := waitClosed(c)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	var r served
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("server did not finish within 30s")
	}
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if r.n != nbytes {
		t.Fatalf("server received %d bytes, want %d", r.n, nbytes)
	}
	return tcpResult{client: clientInfo, server: r.info, clientPort: uint16(c.LocalAddr().(*net.TCPAddr).Port)}
}

// tcpClose is TCP_CLOSE in tcpi_state.
const tcpClose = 7

// waitClosed polls TCP_INFO until the socket is in TCP_CLOSE.
func waitClosed(c *net.TCPConn) (unix.TCPInfo, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return unix.TCPInfo{}, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var info *unix.TCPInfo
		var serr error
		if err := raw.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
			return unix.TCPInfo{}, err
		}
		if serr != nil {
			return unix.TCPInfo{}, fmt.Errorf("TCP_INFO: %w", serr)
		}
		if info.State == tcpClose {
			return *info, nil
		}
		if time.Now().After(deadline) {
			return *info, fmt.Errorf("socket in TCP state %d after 10s, want TCP_CLOSE", info.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
