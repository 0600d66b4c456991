// SPDX-License-Identifier: AGPL-3.0-only

package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
	"golang.org/x/sys/unix"
)

// labCounter makes namespace names, MACs and subnets unique per lab within
// one test binary; the pid keeps concurrent binaries apart.
var labCounter atomic.Uint32

// labOptions shapes one lab.
type labOptions struct {
	// txVLANOffload leaves tx-vlan insertion offload on for both veth ends.
	txVLANOffload bool
}

// testbed is two network namespaces, "a" (where the agent runs) and "b",
// joined by a veth pair with one end in each. Traffic goes between ipA/ipB
// (IPv4) and ip6A/ip6B (IPv6), on top of optional VLAN devices.
type testbed struct {
	t            *testing.T
	nsA, nsB     string
	vethA, vethB string // the veth ends; the agent attaches to vethA
	macA, macB   net.HardwareAddr
	ipA, ipB     netip.Addr
	ip6A, ip6B   netip.Addr
}

// newLab builds a quiet two-namespace lab and removes it when the test ends.
// Quiet means nothing but the test's own traffic crosses the veth: no DAD,
// RA, RS, link-local addresses, ARP/ND (permanent neighbours, NOARP, which
// also keeps the kernel from joining solicited-node groups and sending MLD
// reports) and no ICMP errors (the receiver binds the port).
func newLab(t *testing.T, opts labOptions) *testbed {
	t.Helper()
	n := labCounter.Add(1)
	if n > 200 {
		t.Fatalf("too many labs in one run: %d", n)
	}
	pid := os.Getpid()
	l := &testbed{
		t:     t,
		nsA:   fmt.Sprintf("rfmt-%d-%d-a", pid, n),
		nsB:   fmt.Sprintf("rfmt-%d-%d-b", pid, n),
		vethA: fmt.Sprintf("rfma%d", n),
		vethB: fmt.Sprintf("rfmb%d", n),
		macA:  net.HardwareAddr{0x02, 0x52, 0x46, 0x4d, byte(n), 0x01},
		macB:  net.HardwareAddr{0x02, 0x52, 0x46, 0x4d, byte(n), 0x02},
		ipA:   netip.AddrFrom4([4]byte{198, 18, byte(n), 1}),
		ipB:   netip.AddrFrom4([4]byte{198, 18, byte(n), 2}),
		ip6A:  netip.MustParseAddr(fmt.Sprintf("2001:db8:%x::1", n)),
		ip6B:  netip.MustParseAddr(fmt.Sprintf("2001:db8:%x::2", n)),
	}
	offload := lab.Off
	if opts.txVLANOffload {
		offload = lab.On
	}
	lab.NewPair(t, lab.PairOptions{
		NsA: l.nsA, NsB: l.nsB, DevA: l.vethA, DevB: l.vethB, MACA: l.macA, MACB: l.macB,
		TxVLANOffload: offload,
		StrictCleanup: true,
		Addrs: [][2]netip.Prefix{
			{netip.PrefixFrom(l.ipA, 24), netip.PrefixFrom(l.ipB, 24)},
			{netip.PrefixFrom(l.ip6A, 64), netip.PrefixFrom(l.ip6B, 64)},
		},
	})
	return l
}

// ifindex returns the index of dev inside ns.
func ifindex(t testing.TB, ns, dev string) int {
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

// receiver counts UDP datagrams arriving on one dual-stack port in a
// namespace. Binding the port also keeps ICMP port-unreachable off the wire.
type receiver struct {
	conn  *net.UDPConn
	count atomic.Int64
	wg    sync.WaitGroup
}

func listenUDP(t *testing.T, ns string, port int) *receiver {
	t.Helper()
	r := &receiver{}
	err := lab.InNetns(ns, func() error {
		c, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
		if err != nil {
			return err
		}
		r.conn = c
		// A loaded CI machine may not schedule the reader before a
		// burst arrives: a large buffer (root may exceed rmem_max) keeps
		// the count exact.
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		}); err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		t.Fatalf("listening on udp port %d in %s: %v", port, ns, err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 65536)
		for {
			if _, _, err := r.conn.ReadFromUDP(buf); err != nil {
				return
			}
			r.count.Add(1)
		}
	}()
	t.Cleanup(func() { r.conn.Close(); r.wg.Wait() })
	return r
}

// waitCount polls until the receiver has seen want datagrams.
func (r *receiver) waitCount(t testing.TB, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.count.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("receiver got %d datagrams, want %d: the lab drops traffic", r.count.Load(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// udpSender is a connected UDP socket created inside a namespace.
type udpSender struct{ conn *net.UDPConn }

// dialUDP opens a socket in ns from src:srcPort (0 = ephemeral) to dst:dstPort.
// noDF clears the IPv4 don't-fragment behaviour so oversized datagrams are
// fragmented locally (IPv6 always fragments at the source).
func dialUDP(t *testing.T, ns string, src, dst netip.Addr, srcPort, dstPort int, noDF bool) *udpSender {
	t.Helper()
	s := &udpSender{}
	err := lab.InNetns(ns, func() error {
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, uint16(srcPort))),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(dstPort))))
		if err != nil {
			return err
		}
		s.conn = c
		if !noDF {
			return nil
		}
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		err = raw.Control(func(fd uintptr) {
			if src.Is4() {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT)
			}
		})
		if err != nil {
			return err
		}
		return serr
	})
	if err != nil {
		t.Fatalf("dialing udp %s -> %s in %s: %v", src, dst, ns, err)
	}
	t.Cleanup(func() { s.conn.Close() })
	return s
}

// send writes count datagrams of payloadLen bytes.
func (s *udpSender) send(t testing.TB, count, payloadLen int) {
	t.Helper()
	payload := bytes.Repeat([]byte{0xab}, payloadLen)
	for i := 0; i < count; i++ {
		if _, err := s.conn.Write(payload); err != nil {
			t.Fatalf("sending datagram %d: %v", i, err)
		}
	}
}

// testEthertype is the IEEE local experimental ethertype: no stack parses it.
const testEthertype = 0x88b5

// nonIPFrameLen is the size of the frames sendNonIP writes (minimum Ethernet
// frame without FCS).
const nonIPFrameLen = 60

// sendNonIP writes count raw Ethernet frames with a non-IP ethertype from
// dev in ns to dstMAC.
func sendNonIP(t testing.TB, ns, dev string, srcMAC, dstMAC net.HardwareAddr, count int) {
	t.Helper()
	frame := make([]byte, nonIPFrameLen)
	copy(frame[0:6], dstMAC)
	copy(frame[6:12], srcMAC)
	binary.BigEndian.PutUint16(frame[12:14], testEthertype)
	sendFrames(t, ns, dev, frame, count)
}

// sendFrames writes frame count times on dev in ns through a packet
// socket, bypassing the IP stack (tags stay in the packet data).
func sendFrames(t testing.TB, ns, dev string, frame []byte, count int) {
	t.Helper()
	idx := ifindex(t, ns, dev)
	var fd int
	err := lab.InNetns(ns, func() error {
		var err error
		// Protocol 0: a send-only packet socket that receives nothing.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		return err
	})
	if err != nil {
		t.Fatalf("opening packet socket in %s: %v", ns, err)
	}
	defer unix.Close(fd)
	addr := &unix.SockaddrLinklayer{Ifindex: idx, Halen: 6}
	copy(addr.Addr[:], frame[0:6])
	for i := 0; i < count; i++ {
		if err := unix.Sendto(fd, frame, 0, addr); err != nil {
			t.Fatalf("sending raw frame %d on %s: %v", i, dev, err)
		}
	}
}

// vlanTag is one 802.1Q/802.1ad tag: its TPID and VLAN ID.
type vlanTag struct {
	tpid uint16
	vid  uint16
}

// taggedUDP4Frame builds an Ethernet frame carrying tags (outermost first)
// and an IPv4/UDP datagram with payloadLen bytes of payload.
func taggedUDP4Frame(dstMAC, srcMAC net.HardwareAddr, tags []vlanTag, src, dst netip.Addr, srcPort, dstPort uint16, payloadLen int) []byte {
	var b []byte
	b = append(b, dstMAC...)
	b = append(b, srcMAC...)
	for _, tag := range tags {
		b = binary.BigEndian.AppendUint16(b, tag.tpid)
		b = binary.BigEndian.AppendUint16(b, tag.vid)
	}
	b = binary.BigEndian.AppendUint16(b, 0x0800)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+payloadLen))
	ip[8] = 64 // TTL
	ip[9] = 17 // UDP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i : i+2]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:12], ^uint16(sum))
	b = append(b, ip...)
	b = binary.BigEndian.AppendUint16(b, srcPort)
	b = binary.BigEndian.AppendUint16(b, dstPort)
	b = binary.BigEndian.AppendUint16(b, uint16(8+payloadLen))
	b = binary.BigEndian.AppendUint16(b, 0) // no UDP checksum (allowed for IPv4)
	return append(b, make([]byte, payloadLen)...)
}

// udpIPLen is the IP total length of one unfragmented UDP datagram.
func udpIPLen(addr netip.Addr, payloadLen int) int {
	if addr.Is4() {
		return 20 + 8 + payloadLen
	}
	return 40 + 8 + payloadLen
}

// fragmentCount is how many fragments one UDP datagram of payloadLen
// bytes becomes on a link with the given MTU.
func fragmentCount(addr netip.Addr, payloadLen, mtu int) int {
	l4 := 8 + payloadLen
	var perFragment int
	if addr.Is4() {
		perFragment = (mtu - 20) &^ 7
	} else {
		perFragment = (mtu - 40 - 8) &^ 7 // fragment header takes 8 bytes
	}
	return (l4 + perFragment - 1) / perFragment
}
