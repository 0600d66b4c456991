// SPDX-License-Identifier: AGPL-3.0-only

package lab

import (
	"fmt"
	"net"
	"testing"

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
