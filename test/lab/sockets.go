// SPDX-License-Identifier: AGPL-3.0-only

package lab

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// UDPConn opens a UDP socket in ns bound to local ("addr:port"),
// connected to remote unless remote is ""; it is closed when the test
// ends.
func UDPConn(t testing.TB, ns, local, remote string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := InNetns(ns, func() error {
		la, err := net.ResolveUDPAddr("udp", local)
		if err != nil {
			return err
		}
		if remote == "" {
			c, err = net.ListenUDP("udp", la)
			return err
		}
		ra, err := net.ResolveUDPAddr("udp", remote)
		if err != nil {
			return err
		}
		c, err = net.DialUDP("udp", la, ra)
		return err
	})
	if err != nil {
		t.Fatalf("UDP socket %s -> %q in namespace %s: %v", local, remote, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// AttachedPrograms counts the TCX programs on ifindex idx in ns, per
// direction (BPF_PROG_QUERY; Debian's bpftool does not list TCX).
func AttachedPrograms(t testing.TB, ns string, idx int) (ingress, egress int) {
	t.Helper()
	err := InNetns(ns, func() error {
		for _, q := range []struct {
			attach ebpf.AttachType
			n      *int
		}{{ebpf.AttachTCXIngress, &ingress}, {ebpf.AttachTCXEgress, &egress}} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: q.attach})
			if err != nil {
				return fmt.Errorf("querying %v: %w", q.attach, err)
			}
			*q.n = len(res.Programs)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("querying TCX programs on ifindex %d in %s: %v", idx, ns, err)
	}
	return ingress, egress
}

// MustMAC parses a MAC address written in the test source.
func MustMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

// SendChunks writes chunks chunks of perChunk datagrams of payload
// bytes, round robin over conns one datagram at a time, and waits for
// each chunk to arrive at sink before the next goes: every datagram has
// crossed the path (and its hooks) before more are sent, and a chunk
// smaller than a veth's queue is never dropped there.
func SendChunks(t testing.TB, conns []*net.UDPConn, sink *net.UDPConn, chunks, perChunk, payload int) {
	t.Helper()
	buf := make([]byte, payload)
	in := make([]byte, 2048)
	for range chunks {
		for i := 0; i < perChunk; i++ {
			if _, err := conns[i%len(conns)].Write(buf); err != nil {
				t.Fatalf("sending: %v", err)
			}
		}
		sink.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i := 0; i < perChunk; i++ {
			if _, err := sink.Read(in); err != nil {
				t.Fatalf("receiver got %d of %d datagrams of a chunk: %v", i, perChunk, err)
			}
		}
	}
}
