// SPDX-License-Identifier: AGPL-3.0-only

// Command sender offers UDP load for bench/e2e.sh: IPv4 packets with many
// distinct 5-tuples (source addresses and ports in 198.18.0.0/16), built
// once and sent in sendmmsg batches over a raw socket, rate-limited per
// batch. With -listen it instead binds a UDP socket and holds it open, so
// the receiving namespace does not answer with ICMP port unreachable.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSize is how many packets one sendmmsg call carries.
const batchSize = 64

// mmsghdr mirrors struct mmsghdr; x/sys/unix has no sendmmsg wrapper.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

func main() {
	dst := flag.String("dst", "198.19.255.2:9", "destination address:port (must be in 198.18.0.0/15)")
	rate := flag.Int("rate", 0, "packets per second to offer; 0 sends as fast as possible")
	duration := flag.Duration("duration", 5*time.Second, "how long to send")
	flows := flag.Int("flows", 4096, "distinct 5-tuples (source address and port vary)")
	payload := flag.Int("payload", 22, "UDP payload bytes (22 makes a 64-byte Ethernet frame)")
	workers := flag.Int("workers", 1, "sending threads, each with its own socket and an equal share of -rate")
	listen := flag.String("listen", "", "bind a UDP socket on address:port and hold it until SIGTERM (no sending)")
	flag.Parse()
	var err error
	if *listen != "" {
		err = hold(*listen)
	} else {
		err = send(*dst, *rate, *duration, *flows, *payload, *workers)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sender:", err)
		os.Exit(1)
	}
}

func hold(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("-listen %q: want an IPv4 address:port", addr)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return fmt.Errorf("udp socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		return fmt.Errorf("bind %s: %w", addr, err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

// packet builds one IPv4/UDP packet; the kernel fills in the IP checksum
// and total length on a raw socket, and a zero UDP checksum means none.
func packet(src, dst netip.Addr, sport, dport uint16, payload int) []byte {
	p := make([]byte, 20+8+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = unix.IPPROTO_UDP
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+payload))
	return p
}

func send(dstStr string, rate int, duration time.Duration, flows, payload, workers int) error {
	dst, err := netip.ParseAddrPort(dstStr)
	testNet := netip.MustParsePrefix("198.18.0.0/15")
	if err != nil || !testNet.Contains(dst.Addr()) {
		return fmt.Errorf("-dst %q: want an address:port inside %s", dstStr, testNet)
	}
	if flows < 1 || flows > 1<<20 {
		return fmt.Errorf("-flows %d: want 1 to %d", flows, 1<<20)
	}
	if payload < 0 || payload > 1400 {
		return fmt.Errorf("-payload %d: want 0 to 1400", payload)
	}
	if workers < 1 || workers > 64 {
		return fmt.Errorf("-workers %d: want 1 to 64", workers)
	}

	// Flow i: source 198.18.0.0 + 1 + i/64, source port 1024 + i%64.
	base := binary.BigEndian.Uint32([]byte{198, 18, 0, 0})
	pkts := make([][]byte, flows)
	for i := range pkts {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base+1+uint32(i/64))
		pkts[i] = packet(netip.AddrFrom4(a), dst.Addr(), uint16(1024+i%64), dst.Port(), payload)
	}

	var name unix.RawSockaddrInet4
	name.Family = unix.AF_INET
	name.Addr = dst.Addr().As4()
	// Batches are laid out once per flow offset; batch k covers flows
	// k*64 .. k*64+63 (mod flows), so every flow gets the same share.
	nBatches := (flows + batchSize - 1) / batchSize
	iovs := make([][batchSize]unix.Iovec, nBatches)
	msgs := make([][batchSize]mmsghdr, nBatches)
	for b := range msgs {
		for j := range batchSize {
			p := pkts[(b*batchSize+j)%flows]
			iovs[b][j].Base = &p[0]
			iovs[b][j].SetLen(len(p))
			m := &msgs[b][j].hdr
			m.Name = (*byte)(unsafe.Pointer(&name))
			m.Namelen = unix.SizeofSockaddrInet4
			m.Iov = &iovs[b][j]
			m.SetIovlen(1)
		}
	}

	start := time.Now()
	end := start.Add(duration)
	sent := make([]uint64, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			runtime.LockOSThread()
			sent[w], errs[w] = sendLoop(msgs, w, workers, float64(rate)/float64(workers), start, end)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	var total uint64
	for _, n := range sent {
		total += n
	}
	runtime.KeepAlive(pkts)
	runtime.KeepAlive(iovs)
	secs := time.Since(start).Seconds()
	// Own CPU time, so the benchmark can tell the sender's share apart.
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return fmt.Errorf("getrusage: %w", err)
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	fmt.Printf("sent=%d seconds=%.3f pps=%.0f cpu=%.2f\n", total, secs, float64(total)/secs, cpu)
	return nil
}

// sendLoop is one worker: its own raw socket, batches w, w+workers, ...,
// paced to rate packets/s (0 = unpaced) until end.
func sendLoop(msgs [][batchSize]mmsghdr, w, workers int, rate float64, start, end time.Time) (uint64, error) {
	// IPPROTO_RAW implies IP_HDRINCL: we write the whole IP header, so
	// every packet can carry its own source address and port.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return 0, fmt.Errorf("raw socket (needs root): %w", err)
	}
	defer unix.Close(fd)
	var sent uint64
	for b := w % len(msgs); ; b = (b + workers) % len(msgs) {
		now := time.Now()
		if !now.Before(end) {
			return sent, nil
		}
		if rate > 0 {
			// Rate limit per batch: wait until this batch is due.
			due := start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
			if d := due.Sub(now); d > 0 {
				time.Sleep(d)
			}
		}
		msg := &msgs[b]
		for off := 0; off < batchSize; {
			n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd),
				uintptr(unsafe.Pointer(&msg[off])), uintptr(batchSize-off), 0, 0, 0)
			if errno != 0 {
				if errno == unix.EINTR || errno == unix.ENOBUFS || errno == unix.EAGAIN {
					continue
				}
				return sent, fmt.Errorf("sendmmsg: %w", errno)
			}
			off += int(n)
			sent += uint64(n)
		}
	}
}
