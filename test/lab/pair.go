// SPDX-License-Identifier: AGPL-3.0-only

package lab

import (
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// PairOptions names and shapes one namespace pair.
type PairOptions struct {
	NsA, NsB      string
	DevA, DevB    string // the veth ends, DevA in NsA
	MACA, MACB    net.HardwareAddr
	MTU           int   // 0 leaves the veth default
	TxVLANOffload *bool // nil leaves tx-vlan offloads untouched; else on/off
	KeepARP       bool  // leave ARP on (default: NOARP, which also stops MLD)
	// StrictCleanup fails the test if a namespace cannot be removed;
	// otherwise the failure is only logged.
	StrictCleanup bool
	// Addrs are address pairs (A side, B side); each side gets a
	// permanent neighbour entry for the other.
	Addrs [][2]netip.Prefix
}

// Pair is two network namespaces joined by a veth pair.
type Pair struct{ PairOptions }

// NewPair builds a quiet two-namespace lab and removes it when the test
// ends. Quiet: no DAD, RA, RS or link-local addresses, permanent
// neighbours, GRO/GSO/TSO off so packet counts are exact.
func NewPair(t *testing.T, o PairOptions) *Pair {
	t.Helper()
	for _, ns := range []string{o.NsA, o.NsB} {
		Run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				if o.StrictCleanup {
					t.Errorf("removing namespace %s: %v: %s", ns, err, out)
				} else {
					t.Logf("removing namespace %s: %v: %s", ns, err, out)
				}
			}
		})
		// Before any link exists, so new devices inherit conf/default.
		for _, conf := range []string{"all", "default"} {
			for _, kv := range []string{"accept_dad=0", "accept_ra=0", "router_solicitations=0", "addr_gen_mode=1"} {
				key, value, _ := strings.Cut(kv, "=")
				SetSysctl(t, ns, "net.ipv6.conf."+conf+"."+key, value)
			}
		}
		Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	Run(t, "ip", "link", "add", o.DevA, "netns", o.NsA, "address", o.MACA.String(), "type", "veth",
		"peer", "name", o.DevB, "netns", o.NsB, "address", o.MACB.String())
	type side struct {
		ns, dev string
		peerMAC net.HardwareAddr
		a       int // index of this side in each address pair
	}
	for _, s := range []side{{o.NsA, o.DevA, o.MACB, 0}, {o.NsB, o.DevB, o.MACA, 1}} {
		if o.MTU != 0 {
			Run(t, "ip", "-n", s.ns, "link", "set", s.dev, "mtu", strconv.Itoa(o.MTU))
		}
		ethtool := []string{"netns", "exec", s.ns, "ethtool", "-K", s.dev, "gro", "off", "gso", "off", "tso", "off"}
		if o.TxVLANOffload != nil {
			v := "off"
			if *o.TxVLANOffload {
				v = "on"
			}
			ethtool = append(ethtool, "txvlan", v, "tx-vlan-stag-hw-insert", v)
		}
		Run(t, "ip", ethtool...)
		if !o.KeepARP {
			Run(t, "ip", "-n", s.ns, "link", "set", s.dev, "arp", "off")
		}
		for _, ap := range o.Addrs {
			own, peer := ap[s.a], ap[1-s.a]
			args := []string{"-n", s.ns, "addr", "add", own.String(), "dev", s.dev}
			if own.Addr().Is6() {
				args = append(args, "nodad")
			}
			Run(t, "ip", args...)
			Run(t, "ip", "-n", s.ns, "neigh", "replace", peer.Addr().String(), "lladdr", s.peerMAC.String(),
				"dev", s.dev, "nud", "permanent")
		}
		Run(t, "ip", "-n", s.ns, "link", "set", s.dev, "up")
	}
	return &Pair{o}
}

// Off and On are addressable values for PairOptions.TxVLANOffload.
var (
	Off = func() *bool { b := false; return &b }()
	On  = func() *bool { b := true; return &b }()
)
