// SPDX-License-Identifier: AGPL-3.0-only

package realnet

import (
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/test/lab"
)

// vlanTag is the 802.1Q tag each frame carries between the namespaces.
const vlanTag = 4

// Helper ids of bpf_skb_vlan_push and bpf_skb_vlan_pop
// (include/uapi/linux/bpf.h).
const (
	fnSkbVlanPush = asm.BuiltinFunc(18)
	fnSkbVlanPop  = asm.BuiltinFunc(19)
)

// vlanProgram builds a TCX program that tags every packet with VLAN vid
// (push) or removes its tag (pop), then lets the next program run. The
// helpers keep the tag in skb metadata, as a NIC with VLAN offload does.
func vlanProgram(t testing.TB, push bool, vid int32) *ebpf.Program {
	t.Helper()
	var insns asm.Instructions
	if push {
		insns = asm.Instructions{
			asm.Mov.Imm(asm.R2, 0x0081), // htons(ETH_P_8021Q)
			asm.Mov.Imm(asm.R3, vid),
			fnSkbVlanPush.Call(),
		}
	} else {
		insns = asm.Instructions{fnSkbVlanPop.Call()}
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, -1), asm.Return()) // TCX_NEXT
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "rfmt_vlan", Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatalf("VLAN program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// attachTCX attaches prog to dev in ns at anchor; detached when the test
// ends.
func attachTCX(t testing.TB, ns, dev string, at ebpf.AttachType, anchor link.Anchor, prog *ebpf.Program) {
	t.Helper()
	idx := ifindexIn(t, ns, dev)
	err := lab.InNetns(ns, func() error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: at, Anchor: anchor})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("attaching to %s %v in %s: %v", dev, at, ns, err)
	}
}

// TestVLANTaggedTCPOffloadsOn carries a TCP bulk transfer (TSO, GSO, GRO
// on) through the router with every frame 802.1Q-tagged on both links, the
// tag in skb metadata as a VLAN-offloading NIC delivers it. This kernel
// has no 8021q module and its bridge no VLAN filtering, so small TCX
// programs tag and untag: each endpoint pushes at egress and pops at
// ingress; the router pops at ingress after rfm and pushes at egress
// before rfm, so rfm sees every packet tagged. Must hold: interface
// counters count each segment with its Ethernet header and its 4-byte
// tag; flows count segments and L3 bytes exactly (rate 1).
func TestVLANTaggedTCPOffloadsOn(t *testing.T) {
	l := newRouted(t)
	push, pop := vlanProgram(t, true, 10), vlanProgram(t, false, 0)
	for _, end := range [][2]string{{l.c, l.cDev}, {l.s, l.sDev}} {
		attachTCX(t, end[0], end[1], ebpf.AttachTCXEgress, link.Tail(), push)
		attachTCX(t, end[0], end[1], ebpf.AttachTCXIngress, link.Tail(), pop)
	}
	a := startAgent(t, l.r, []string{l.rIn, l.rOut}, 1)
	for _, dev := range []string{l.rIn, l.rOut} {
		attachTCX(t, l.r, dev, ebpf.AttachTCXEgress, link.Head(), push)
		attachTCX(t, l.r, dev, ebpf.AttachTCXIngress, link.Tail(), pop)
	}
	m0 := a.mustScrape(t)
	res := l.tcpTransfer(t, false, 5001, 64<<20)
	m1 := a.mustScrape(t)
	fwd, rev := tcpTruth(t, res, false)
	t.Logf("forward %v segments, %v L3 bytes; reverse %v segments, %v L3 bytes", fwd.segments, fwd.l3Bytes, rev.segments, rev.l3Bytes)
	frame := func(d tcpDirection) float64 { return d.l3Bytes + (ethHeader+vlanTag)*d.segments }
	in := m1.iface(l.rIn, "ipv4").minus(m0.iface(l.rIn, "ipv4"))
	out := m1.iface(l.rOut, "ipv4").minus(m0.iface(l.rOut, "ipv4"))
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
			t.Errorf("ipv4 %s = %.0f, want %.0f (%+.2f %%)", c.what, c.got, c.want, 100*(c.got-c.want)/c.want)
		}
	}
	fwdSrc, fwdDst := fmt.Sprintf("198.18.0.2:%d", res.clientPort), "198.19.0.2:5001"
	flows := []struct {
		key   flowKey
		truth tcpDirection
	}{
		{flowKey{l.rIn, "ingress", unix.IPPROTO_TCP, fwdSrc, fwdDst}, fwd},
		{flowKey{l.rOut, "egress", unix.IPPROTO_TCP, fwdSrc, fwdDst}, fwd},
		{flowKey{l.rOut, "ingress", unix.IPPROTO_TCP, fwdDst, fwdSrc}, rev},
		{flowKey{l.rIn, "egress", unix.IPPROTO_TCP, fwdDst, fwdSrc}, rev},
	}
	var keys []flowKey
	for _, f := range flows {
		keys = append(keys, f.key)
	}
	settled := a.settledFlows(t, keys, 500*time.Millisecond, 20*time.Second)
	for _, f := range flows {
		got := settled[f.key]
		checkEstimate(t, fmt.Sprintf("flow %v packets", f.key), 1, float64(got.Packets), f.truth.segments, 0)
		checkEstimate(t, fmt.Sprintf("flow %v bytes", f.key), 1, float64(got.Bytes), f.truth.l3Bytes, 0)
	}
}
