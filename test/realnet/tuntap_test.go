// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/test/lab"
)

// openTun creates a tun or tap device named name inside ns (a tun device
// belongs to the namespace /dev/net/tun was opened in) and returns its
// file; closing the file removes the device. flags: unix.IFF_TUN or
// unix.IFF_TAP, with IFF_NO_PI and IFF_VNET_HDR as wanted.
func openTun(t testing.TB, ns, name string, flags uint16) *os.File {
	t.Helper()
	var f *os.File
	err := lab.InNetns(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		t.Fatalf("creating %s in %s: %v", name, ns, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// checksum is the Internet checksum of b folded onto sum.
func checksum(sum uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// pseudoSum is the sum of the IPv4/IPv6 pseudo header for an L4 segment
// of l4Len bytes.
func pseudoSum(src, dst netip.Addr, proto uint8, l4Len int) uint32 {
	var b []byte
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	return sum + uint32(proto) + uint32(l4Len)
}

// ipPacket builds an IPv4 or IPv6 packet (no options, no extension
// headers) around an L4 segment whose checksum field sits at csumOff;
// fullCsum false leaves the pseudo-header sum there instead of the full
// checksum, as a sender that asks for checksum offload does.
func ipPacket(src, dst netip.Addr, proto uint8, l4 []byte, csumOff int, fullCsum bool) []byte {
	ps := pseudoSum(src, dst, proto, len(l4))
	binary.BigEndian.PutUint16(l4[csumOff:], 0)
	if fullCsum {
		binary.BigEndian.PutUint16(l4[csumOff:], checksum(ps, l4))
	} else {
		for ps > 0xffff {
			ps = ps&0xffff + ps>>16
		}
		binary.BigEndian.PutUint16(l4[csumOff:], uint16(ps))
	}
	if src.Is4() {
		h := make([]byte, 20, 20+len(l4))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		h[6] = 0x40 // DF
		h[8] = 64
		h[9] = proto
		copy(h[12:], src.AsSlice())
		copy(h[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(h[10:], checksum(0, h))
		return append(h, l4...)
	}
	h := make([]byte, 40, 40+len(l4))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6] = proto
	h[7] = 64
	copy(h[8:], src.AsSlice())
	copy(h[24:], dst.AsSlice())
	return append(h, l4...)
}

// udpPacket builds an IP/UDP packet with a correct checksum.
func udpPacket(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	l4 := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint16(l4[4:], uint16(8+len(payload)))
	l4 = append(l4, payload...)
	return ipPacket(src, dst, unix.IPPROTO_UDP, l4, 6, true)
}

// ipHeaderLen is the IP header length of an addr's family (no options).
func ipHeaderLen(a netip.Addr) int {
	if a.Is4() {
		return 20
	}
	return 40
}

// TestTunL3Device exchanges IPv4 and IPv6 UDP through a tun device
// (IFF_TUN, no packet information: no L2 header, like WireGuard and
// Tailscale): packets written into the fd arrive on the tun (rx), packets
// routed to the tun leave it (tx) and are read from the fd. Must hold:
// exact rx/tx packets and IP bytes per family, nothing counted as
// "other", and exactly the flows sent, with their 5-tuples.
func TestTunL3Device(t *testing.T) {
	ns := newNamespace(t, "u")
	const dev = "rfmtun0"
	tun := openTun(t, ns, dev, unix.IFF_TUN|unix.IFF_NO_PI)
	local4, peer4 := netip.MustParseAddr("198.18.8.1"), netip.MustParseAddr("198.18.8.2")
	local6, peer6 := netip.MustParseAddr("2001:db8:800:4500::1"), netip.MustParseAddr("2001:db8:800:4500::11")
	lab.Run(t, "ip", "-n", ns, "addr", "add", local4.String()+"/24", "dev", dev)
	lab.Run(t, "ip", "-n", ns, "addr", "add", local6.String()+"/64", "dev", dev, "nodad")
	lab.Run(t, "ip", "-n", ns, "link", "set", dev, "up")
	sink := lab.UDPConn(t, ns, "[::]:5001", "") // dual-stack: no ICMP port unreachable back into the tun
	a := startAgent(t, ns, []string{dev}, 1)

	const n, payloadLen = 25, 100
	payload := make([]byte, payloadLen)
	type stream struct {
		src, dst   netip.Addr
		sport      uint16
		dport      uint16
		intoTun    bool // written into the fd: rx on the tun; else sent by a socket: tx
		family     string
		count      int
		packetSize int
	}
	streams := []stream{
		{peer4, local4, 40000, 5001, true, "ipv4", n, 20 + 8 + payloadLen},
		{peer6, local6, 40001, 5001, true, "ipv6", n + 1, 40 + 8 + payloadLen},
		{local4, peer4, 40002, 6000, false, "ipv4", n + 2, 20 + 8 + payloadLen},
		{local6, netip.MustParseAddr("2001:db8:800:4500::12"), 40003, 6000, false, "ipv6", n + 3, 40 + 8 + payloadLen},
	}
	m0 := a.mustScrape(t)
	for _, s := range streams {
		if s.intoTun {
			pkt := udpPacket(s.src, s.dst, s.sport, s.dport, payload)
			for i := 0; i < s.count; i++ {
				if _, err := tun.Write(pkt); err != nil {
					t.Fatalf("writing into %s: %v", dev, err)
				}
			}
			continue
		}
		c := lab.UDPConn(t, ns, netip.AddrPortFrom(s.src, s.sport).String(), netip.AddrPortFrom(s.dst, s.dport).String())
		for i := 0; i < s.count; i++ {
			if _, err := c.Write(payload); err != nil {
				t.Fatalf("sending %v -> %v: %v", s.src, s.dst, err)
			}
		}
	}
	// Everything the sockets sent left through the tun: read it back.
	readTun(t, tun, streams[2].count+streams[3].count)
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	for i := 0; i < streams[0].count+streams[1].count; i++ {
		if _, err := sink.Read(buf); err != nil {
			t.Fatalf("the stack delivered %d of the %d datagrams written into the tun: %v", i, streams[0].count+streams[1].count, err)
		}
	}

	m1 := a.mustScrape(t)
	want := map[string]ifaceCounts{}
	for _, s := range streams {
		c := want[s.family]
		if s.intoTun {
			c.rxPackets += float64(s.count)
			c.rxBytes += float64(s.count * s.packetSize)
		} else {
			c.txPackets += float64(s.count)
			c.txBytes += float64(s.count * s.packetSize)
		}
		want[s.family] = c
	}
	for _, family := range []string{"ipv4", "ipv6", "other"} {
		if got := m1.iface(dev, family).minus(m0.iface(dev, family)); got != want[family] {
			t.Errorf("%s family %s: counted %+v, want %+v (L3 device: IP bytes, no L2 header)", dev, family, got, want[family])
		}
	}

	lab.Eventually(t, 10*time.Second, "exactly the four flows sent", func() error {
		fl := a.flows(t)
		var missing []string
		for _, s := range streams {
			dir := "egress"
			if s.intoTun {
				dir = "ingress"
			}
			k := flowKey{dev, dir, unix.IPPROTO_UDP, netip.AddrPortFrom(s.src, s.sport).String(), netip.AddrPortFrom(s.dst, s.dport).String()}
			f, ok := findFlow(fl, k)
			if !ok || f.Packets != uint64(s.count) || f.Bytes != uint64(s.count*s.packetSize) {
				missing = append(missing, fmt.Sprintf("%+v with %d packets, %d bytes (listed: %v %+v)", k, s.count, s.count*s.packetSize, ok, f))
			}
		}
		if len(missing) > 0 || len(fl.Flows) != len(streams) {
			return fmt.Errorf("want %v and nothing else; flows: %+v", missing, fl.Flows)
		}
		return nil
	})
}

// readTun reads n packets from a tun/tap file, failing after 5s.
func readTun(t testing.TB, f *os.File, n int) {
	t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatalf("tun read deadline: %v", err)
	}
	buf := make([]byte, 65536)
	for i := 0; i < n; i++ {
		if _, err := f.Read(buf); err != nil {
			t.Fatalf("read %d of %d packets from the tun: %v", i, n, err)
		}
	}
}

// virtio_net_hdr (include/uapi/linux/virtio_net.h), as a tap with
// IFF_VNET_HDR expects it before every frame: 10 bytes, little-endian on
// this (x86/arm64) host.
const (
	vnetHdrLen         = 10
	vnetFlagNeedsCsum  = 1
	vnetGSOTCPv4       = 1
	vnetGSOTCPv6       = 4
	tcpHeaderNoOptions = 20
)

// gsoFrame is one untrusted TCP GSO super-frame for a tap: a virtio-net
// header (gso_size, checksum offload) and an Ethernet frame carrying one
// IP/TCP header and payloadLen bytes, which the kernel would cut into
// ceil(payloadLen/gsoSize) segments.
func gsoFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, gsoSize, payloadLen int) []byte {
	l4 := make([]byte, tcpHeaderNoOptions, tcpHeaderNoOptions+payloadLen)
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint32(l4[4:], 1) // sequence
	binary.BigEndian.PutUint32(l4[8:], 1) // ack
	l4[12] = tcpHeaderNoOptions / 4 << 4
	l4[13] = 0x10 // ACK
	binary.BigEndian.PutUint16(l4[14:], 65535)
	l4 = append(l4, make([]byte, payloadLen)...)
	ip := ipPacket(src, dst, unix.IPPROTO_TCP, l4, 16, false)

	gsoType, ethertype := byte(vnetGSOTCPv4), uint16(0x0800)
	if src.Is6() {
		gsoType, ethertype = vnetGSOTCPv6, 0x86dd
	}
	l3Start := 14
	b := make([]byte, vnetHdrLen, vnetHdrLen+14+len(ip))
	b[0] = vnetFlagNeedsCsum
	b[1] = gsoType
	binary.LittleEndian.PutUint16(b[2:], uint16(l3Start+ipHeaderLen(src)+tcpHeaderNoOptions)) // hdr_len
	binary.LittleEndian.PutUint16(b[4:], uint16(gsoSize))
	binary.LittleEndian.PutUint16(b[6:], uint16(l3Start+ipHeaderLen(src))) // csum_start
	binary.LittleEndian.PutUint16(b[8:], 16)                               // csum_offset: TCP checksum
	b = append(b, dstMAC...)
	b = append(b, srcMAC...)
	b = binary.BigEndian.AppendUint16(b, ethertype)
	return append(b, ip...)
}

// TestTapUntrustedGSO writes TCP GSO super-frames into a tap with
// IFF_VNET_HDR, as a KVM guest's TSO traffic reaches the host: the skb has
// gso_size set and gso_segs 0 (untrusted). Must hold: the tap's rx
// counters and the flows count each super-frame as its segments,
// ceil(payload / gso_size), with each segment's own headers in the bytes
// (frame bytes on the interface, L3 bytes in the flow).
func TestTapUntrustedGSO(t *testing.T) {
	ns := newNamespace(t, "v")
	const dev = "rfmtap0"
	tapMAC := lab.MustMAC("02:52:4e:00:07:01")
	guestMAC := lab.MustMAC("02:52:4e:00:07:02")
	tap := openTun(t, ns, dev, unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR)
	lab.Run(t, "ip", "-n", ns, "link", "set", dev, "address", tapMAC.String(), "arp", "off")
	// Destinations on the tap's subnets, not local, forwarding off: the
	// stack drops the frames silently after TC has seen them (no ICMP,
	// no RST back out through the tap).
	lab.Run(t, "ip", "-n", ns, "addr", "add", "198.18.7.1/24", "dev", dev)
	lab.Run(t, "ip", "-n", ns, "addr", "add", "2001:db8:7::1/64", "dev", dev, "nodad")
	lab.Run(t, "ip", "-n", ns, "link", "set", dev, "up")
	a := startAgent(t, ns, []string{dev}, 1)

	const gsoSize = 1000
	type superFrame struct {
		src, dst   netip.Addr
		sport      uint16
		payloadLen int
		count      int
	}
	frames := []superFrame{
		{netip.MustParseAddr("198.18.7.2"), netip.MustParseAddr("198.18.7.99"), 40000, 44 * gsoSize, 3},   // 44 full segments
		{netip.MustParseAddr("198.18.7.2"), netip.MustParseAddr("198.18.7.99"), 40001, 43*gsoSize + 1, 2}, // 43 full and 1 byte
		{netip.MustParseAddr("2001:db8:7::2"), netip.MustParseAddr("2001:db8:7::99"), 40002, 44 * gsoSize, 3},
		{netip.MustParseAddr("2001:db8:7::2"), netip.MustParseAddr("2001:db8:7::99"), 40003, 30*gsoSize + 500, 2},
	}
	m0 := a.mustScrape(t)
	want := map[string]ifaceCounts{}
	for _, f := range frames {
		frame := gsoFrame(tapMAC, guestMAC, f.src, f.dst, f.sport, 5001, gsoSize, f.payloadLen)
		for i := 0; i < f.count; i++ {
			if _, err := tap.Write(frame); err != nil {
				t.Fatalf("writing a %d-byte GSO frame into %s: %v", len(frame), dev, err)
			}
		}
		family := "ipv4"
		if f.src.Is6() {
			family = "ipv6"
		}
		segs := (f.payloadLen + gsoSize - 1) / gsoSize
		c := want[family]
		c.rxPackets += float64(f.count * segs)
		c.rxBytes += float64(f.count * (segs*(ethHeader+ipHeaderLen(f.src)+tcpHeaderNoOptions) + f.payloadLen))
		want[family] = c
	}
	m1 := a.mustScrape(t)
	for _, family := range []string{"ipv4", "ipv6"} {
		if got := m1.iface(dev, family).minus(m0.iface(dev, family)); got != want[family] {
			t.Errorf("%s family %s: counted %+v, want %+v", dev, family, got, want[family])
		}
	}
	lab.Eventually(t, 10*time.Second, "the GSO flows", func() error {
		fl := a.flows(t)
		var errs []error
		for _, f := range frames {
			segs := (f.payloadLen + gsoSize - 1) / gsoSize
			k := flowKey{dev, "ingress", unix.IPPROTO_TCP, netip.AddrPortFrom(f.src, f.sport).String(), netip.AddrPortFrom(f.dst, 5001).String()}
			wantPkts, wantBytes := uint64(f.count*segs), uint64(f.count*(segs*(ipHeaderLen(f.src)+tcpHeaderNoOptions)+f.payloadLen))
			got, ok := findFlow(fl, k)
			if !ok || got.Packets != wantPkts || got.Bytes != wantBytes {
				errs = append(errs, fmt.Errorf("flow %+v: want %d packets, %d bytes; listed %v: %d packets, %d bytes", k, wantPkts, wantBytes, ok, got.Packets, got.Bytes))
			}
		}
		return errors.Join(errs...)
	})
}
