// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/netsampler/goflow2/v2/decoders/netflow"
	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/test/lab"
)

// goflowCollector receives IPFIX on a UDP socket and decodes it with
// goflow2's decoder, keeping each flow data record as its elements.
type goflowCollector struct {
	mu   sync.Mutex
	recs []map[uint16][]byte
	errs []error
}

func startGoflowCollector(t *testing.T, ns string) *goflowCollector {
	t.Helper()
	conn := lab.UDPConn(t, ns, fmt.Sprintf("127.0.0.1:%d", collectorPort), "")
	c := &goflowCollector{}
	templates := netflow.CreateTemplateSystem()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return // closed at the end of the test
			}
			var v9 netflow.NFv9Packet
			var pkt netflow.IPFIXPacket
			err = netflow.DecodeMessageVersion(bytes.NewBuffer(append([]byte(nil), buf[:n]...)), templates, &v9, &pkt)
			c.mu.Lock()
			if err != nil {
				c.errs = append(c.errs, err)
			}
			for _, fs := range pkt.FlowSets {
				if s, ok := fs.(netflow.DataFlowSet); ok {
					for _, r := range s.Records {
						m := map[uint16][]byte{}
						for _, v := range r.Values {
							if b, ok := v.Value.([]byte); ok {
								m[v.Type] = b
							}
						}
						c.recs = append(c.recs, m)
					}
				}
			}
			c.mu.Unlock()
		}
	}()
	return c
}

// find returns the first record for which match holds, waiting for it.
func (c *goflowCollector) find(t *testing.T, what string, match func(map[uint16][]byte) bool) map[uint16][]byte {
	t.Helper()
	var found map[uint16][]byte
	lab.Eventually(t, 10*time.Second, what, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, r := range c.recs {
			if match(r) {
				found = r
				return nil
			}
		}
		return fmt.Errorf("%d records, none matches; decode errors %v; records:\n%v", len(c.recs), c.errs, c.recs)
	})
	return found
}

func be(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

func ieAddr(b []byte) netip.Addr { a, _ := netip.AddrFromSlice(b); return a }

// TestOptionalFieldsExport runs the agent on the router sampling ingress
// only, with every optional field and the FIB lookup, and decodes its
// IPFIX with goflow2. The client tags its frames with VLAN 10 (the router
// takes the tag off after rfm), marks DSCP EF and sends with two TTLs;
// one destination is behind a gateway (the server, 198.19.0.2 /
// 2001:db8:5::2), one on-link. Must hold: each record carries the TCP
// flags, DSCP, TTL range, VLAN id, the router's egress interface and the
// gateway (zero for the on-link destination) that the traffic had.
func TestOptionalFieldsExport(t *testing.T) {
	l := newRouted(t)
	// 198.19.1.5 and 2001:db8:6::5 live on the server, routed through it.
	lab.Run(t, "ip", "-n", l.s, "addr", "add", "198.19.1.5/32", "dev", l.sDev)
	lab.Run(t, "ip", "-n", l.s, "addr", "add", "2001:db8:6::5/128", "dev", l.sDev, "nodad")
	lab.Run(t, "ip", "-n", l.r, "route", "add", "198.19.1.0/24", "via", "198.19.0.2")
	lab.Run(t, "ip", "-n", l.r, "-6", "route", "add", "2001:db8:6::/64", "via", "2001:db8:5::2")
	lab.Run(t, "ip", "-n", l.c, "route", "add", "198.19.1.0/24", "via", "198.18.0.1")
	lab.Run(t, "ip", "-n", l.c, "-6", "route", "add", "2001:db8:6::/64", "via", "2001:db8:c::1")
	// bpf_fib_lookup answers IPv6 only for an input interface with
	// forwarding on; the lab's force_forwarding is not enough for it.
	sysctl(t, l.r, "net.ipv6.conf."+l.rIn+".forwarding=1")
	col := startGoflowCollector(t, l.r)
	a := startAgentWith(t, l.r, []string{l.rIn, l.rOut}, 1, `directions = ["ingress"]
fields = ["tcp_flags", "dscp", "icmp", "ttl", "vlan"]
fib_lookup = true`, ipfixConfig())
	push, pop := vlanProgram(t, true, 10), vlanProgram(t, false, 0)
	attachTCX(t, l.c, l.cDev, ebpf.AttachTCXEgress, link.Tail(), push)
	attachTCX(t, l.r, l.rIn, ebpf.AttachTCXIngress, link.Tail(), pop)

	for _, v6 := range []bool{false, true} {
		src, dst := "198.18.0.2:40000", "198.19.1.5:5001"
		if v6 {
			src, dst = "[2001:db8:c::2]:40000", "[2001:db8:6::5]:5001"
		}
		sink := lab.UDPConn(t, l.s, dst, "")
		c := lab.UDPConn(t, l.c, src, dst)
		setTOS(t, c, v6, 0xb8|1) // EF, ECT(1): the ECN bits are not part of DSCP
		for _, ttl := range []int{64, 20} {
			setHopLimitOnly(t, c, v6, ttl)
			if _, err := c.Write(make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
		}
		sink.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := 0; i < 2; i++ {
			if _, err := sink.Read(make([]byte, 2048)); err != nil {
				t.Fatalf("server got %d of 2 datagrams to %s: %v", i, dst, err)
			}
		}
	}
	tcp := l.tcpTransfer(t, false, 5002, 64<<10)
	// rfm flows lists the key fields.
	f := a.settledFlow(t, flowKey{l.rIn, "ingress", 17, "198.18.0.2:40000", "198.19.1.5:5001"}, 200*time.Millisecond, 10*time.Second)
	if f.DSCP != 46 || f.VLAN != 10 || f.InnerVLAN != 0 {
		t.Errorf("rfm flows: DSCP %d VLAN %d inner %d, want 46 (EF), 10, 0", f.DSCP, f.VLAN, f.InnerVLAN)
	}
	// Records leave when the agent stops.
	if _, err := a.Stop(10 * time.Second); err != nil {
		t.Fatalf("stopping agent: %v", err)
	}

	in, out := uint64(ifindexIn(t, l.r, l.rIn)), uint64(ifindexIn(t, l.r, l.rOut))
	for _, tc := range []struct {
		name      string
		src, dst  string
		srcIE     uint16
		dstIE     uint16
		nextHopIE uint16
		nextHop   string
	}{
		{"ipv4 udp via a gateway", "198.18.0.2", "198.19.1.5", 8, 12, 15, "198.19.0.2"},
		{"ipv6 udp via a gateway", "2001:db8:c::2", "2001:db8:6::5", 27, 28, 62, "2001:db8:5::2"},
	} {
		r := col.find(t, tc.name, func(r map[uint16][]byte) bool {
			return ieAddr(r[tc.srcIE]).String() == tc.src && ieAddr(r[tc.dstIE]).String() == tc.dst
		})
		want := map[uint16]uint64{10: in, 14: out, 5: 0xb8, 52: 20, 53: 64, 243: 10, 245: 0, 6: 0, 2: 2}
		for ie, w := range want {
			if got := be(r[ie]); got != w {
				t.Errorf("%s: IE %d = %d, want %d", tc.name, ie, got, w)
			}
		}
		if got := ieAddr(r[tc.nextHopIE]).String(); got != tc.nextHop {
			t.Errorf("%s: next hop (IE %d) %s, want %s", tc.name, tc.nextHopIE, got, tc.nextHop)
		}
	}
	r := col.find(t, "tcp to an on-link server", func(r map[uint16][]byte) bool {
		return ieAddr(r[8]).String() == "198.18.0.2" && be(r[7]) == uint64(tcp.clientPort)
	})
	if flags := be(r[6]); flags&0x13 != 0x13 {
		t.Errorf("tcp flow: tcpControlBits %#x, want SYN, ACK and FIN (0x13) among them", flags)
	}
	if be(r[14]) != out || !ieAddr(r[15]).IsUnspecified() || be(r[243]) != 10 || be(r[52]) != 64 {
		t.Errorf("tcp flow: egress %d next hop %v VLAN %d min TTL %d, want %d, 0.0.0.0 (on-link), 10, 64",
			be(r[14]), ieAddr(r[15]), be(r[243]), be(r[52]), out)
	}
	col.mu.Lock()
	for _, r := range col.recs {
		if be(r[61]) != 0 {
			t.Errorf("egress record with directions = [\"ingress\"]: %v", r)
			break
		}
	}
	col.mu.Unlock()
}

// setTOS sets the IPv4 TOS / IPv6 traffic class of c's datagrams.
func setTOS(t testing.TB, c *net.UDPConn, v6 bool, tos int) {
	t.Helper()
	sockopt(t, c, func(fd int) error {
		if v6 {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tos)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tos)
	})
}

// setHopLimitOnly sets the TTL / hop limit of c's datagrams.
func setHopLimitOnly(t testing.TB, c *net.UDPConn, v6 bool, n int) {
	t.Helper()
	sockopt(t, c, func(fd int) error {
		if v6 {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, n)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, n)
	})
}

func sockopt(t testing.TB, c *net.UDPConn, set func(fd int) error) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = set(int(fd)) }); err != nil || serr != nil {
		t.Fatalf("setsockopt: %v %v", err, serr)
	}
}
