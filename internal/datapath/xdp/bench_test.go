// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/test/lab"
)

// Mirrors struct xdp_md for BPF_PROG_TEST_RUN's context.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// benchRules are 64 rules a UDP packet from 198.19.x to port 53 gets
// through all field tables of before it misses on the destination (an
// IPv6 prefix): the most work a packet that matches nothing can cause.
func benchRules() []Rule {
	rules := make([]Rule, MaxRules)
	for i := range rules {
		rules[i] = Rule{Name: fmt.Sprintf("r%d", i), Action: ActionDrop, Proto: 17,
			Src:      pfx("198.19.0.0/16"),
			Dst:      []netip.Prefix{netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i)}), 48)},
			DstPorts: []PortRange{{53, 53}}}
	}
	return rules
}

// benchBlocklist puts n /32s of 198.18.0.0/15 on the blocklist, from
// 198.18.0.0 up.
func benchBlocklist(b *testing.B, p *Program, n int) {
	for i := range n {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], 198<<24|18<<16+uint32(i))
		if err := p.SetPrefix(ListBlock, netip.PrefixFrom(netip.AddrFrom4(a), 32), true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkXDP reports ns per packet through BPF_PROG_TEST_RUN: the
// empty XDP program (the floor), the pass path under 100k blocklist
// prefixes and 64 rules, and the drop paths (blocklist, last rule), each
// also as ns over the floor measured in the same run. The program runs
// as the agent runs it: attached to a veth next to the TC datapath
// (sample rate 100), so a drop is counted in its rule's row (which the
// datapath adds to the rx counters) and offered to the sampler. With RFM_XDP_FILTER=1 the same frames go
// through xdp-filter (Debian's xdp-tools) loaded on another veth with
// the equivalent rules.
func BenchmarkXDP(b *testing.B) {
	requireRoot(b)
	ns := fmt.Sprintf("rfmxbench%d", os.Getpid())
	run := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("netns", "add", ns)
	b.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "link", "add", "xbench0", "type", "veth", "peer", "name", "xbench1")
	run("-n", ns, "link", "add", "xfilt0", "type", "veth", "peer", "name", "xfilt1")
	for _, d := range []string{"xbench0", "xbench1", "xfilt0", "xfilt1"} {
		run("-n", ns, "link", "set", d, "up")
	}
	// pass's addresses are in a /24 no blocklisted address is in (the
	// usual case with a blocklist of scattered addresses); passNear's
	// /24 holds blocklisted addresses (the list's last, up to
	// 198.19.134.159), so both its addresses are looked up in the hash.
	pass := ipv4Frame("198.19.255.1", "198.19.255.2", 17, 0, l4(40000, 53, 64))
	passNear := ipv4Frame("198.19.134.200", "198.19.134.201", 17, 0, l4(40000, 53, 64))
	dropBlock := ipv4Frame("198.18.0.7", "198.19.255.2", 17, 0, l4(40000, 53, 64))
	drop64 := ipv4Frame("198.19.255.1", "198.19.255.2", 17, 0, l4(40000, 53, 64))
	var floor, prog *ebpf.Program
	var x *Program
	var ifindex int
	if err := lab.InNetns(ns, func() error {
		l, err := netlink.LinkByName("xbench0")
		if err != nil {
			return err
		}
		ifindex = l.Attrs().Index
		d, err := datapath.Load(datapath.Options{MaxInterfaces: 4})
		if err != nil {
			return err
		}
		b.Cleanup(func() { d.Close() })
		if err := d.SetConfig(datapath.Config{SampleRate: 100}); err != nil {
			return err
		}
		if err := d.Attach(ifindex, "xbench0"); err != nil {
			return err
		}
		p, err := Load(Options{Shared: d.SharedMaps()})
		if err != nil {
			return err
		}
		b.Cleanup(func() { p.Close() })
		if err := d.SetIngressSource(p); err != nil {
			return err
		}
		if err := p.SetRules(benchRules()); err != nil {
			return err
		}
		n := 100_000
		if s := os.Getenv("RFM_XDP_BENCH_BLOCKLIST"); s != "" {
			fmt.Sscan(s, &n)
		}
		benchBlocklist(b, p, n)
		if _, err := p.Attach(ifindex, "xbench0", ModeNative); err != nil {
			return err
		}
		floor, prog, x = p.Floor(), p.Prog(), p
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	// timeRun returns the wall time per run and the kernel's own figure,
	// which leaves out the time the runner was scheduled away (this
	// machine's other jobs).
	timeRun := func(b *testing.B, c benchCase) (time.Duration, time.Duration) {
		var d, kd time.Duration
		inNS, idx := ns, ifindex
		if c.netns != "" {
			inNS, idx = c.netns, c.ifindex
		}
		err := lab.InNetns(inNS, func() error {
			ctx := xdpMD{DataEnd: uint32(len(c.frame)), IngressIfindex: uint32(idx)}
			ret, err := c.prog.Run(&ebpf.RunOptions{Data: c.frame, Context: ctx})
			if err != nil {
				return err
			}
			if ret != c.want {
				return fmt.Errorf("%s: verdict %d, want %d", c.name, ret, c.want)
			}
			b.ResetTimer()
			start := time.Now()
			k, err := testRunDuration(c.prog, c.frame, ctx, uint32(b.N))
			if err != nil {
				return err
			}
			d, kd = time.Since(start)/time.Duration(b.N), k
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return d, kd
	}
	var filterCases []benchCase
	if fns := os.Getenv("RFM_XDP_FILTER_NETNS"); fns != "" {
		filterCases = xdpFilterCases(b, fns, pass, dropBlock)
	}
	cases := []benchCase{
		{name: "floor", prog: floor, frame: pass, want: xdpPass},
		{name: "pass-100k-blocklist-64-rules", prog: prog, frame: pass, want: xdpPass},
		{name: "pass-100k-blocklist-64-rules-listed-24", prog: prog, frame: passNear, want: xdpPass},
		{name: "drop-blocklist", prog: prog, frame: dropBlock, want: xdpDrop},
		{name: "drop-rule-64", prog: prog, frame: drop64, want: xdpDrop, setup: func() error {
			rules := benchRules()
			rules[MaxRules-1].Dst = nil // only the 64th rule matches drop64
			return x.SetRules(rules)
		}},
	}
	for _, c := range append(cases, filterCases...) {
		if c.setup != nil {
			if err := c.setup(); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(c.name, func(b *testing.B) {
			d, kd := timeRun(b, c)
			ns, kns := float64(d.Nanoseconds()), float64(kd.Nanoseconds())
			if c.name != "floor" {
				// The floor again, right after, with as many runs: this
				// machine's speed drifts between sub-benchmarks.
				fd, fkd := timeRun(b, cases[0])
				b.ReportMetric(ns-float64(fd.Nanoseconds()), "over-floor-ns")
				b.ReportMetric(kns-float64(fkd.Nanoseconds()), "kernel-over-floor-ns")
			}
			b.ReportMetric(ns, "ns/packet")
			b.ReportMetric(kns, "kernel-ns/packet")
		})
	}
}

// benchCase is one program and frame of BenchmarkXDP.
type benchCase struct {
	name  string
	prog  *ebpf.Program
	frame []byte
	want  uint32
	setup func() error
	// netns and ifindex of the interface the program is on, when not
	// the benchmark's own.
	netns   string
	ifindex int
}

// xdpFilterCases find xdp-filter (xdp-tools) on interface xf0 of netns,
// loaded by bench/xdp.sh with "-f ipv4,udp", source 198.18.0.7 denied
// and UDP port 9999 denied, and fill its IPv4 table up to its 10,000
// entries with more denied sources (as the blocklist holds 100,000):
// the pass and drop frames then take the same lookups through it.
func xdpFilterCases(b *testing.B, netns string, pass, drop []byte) []benchCase {
	var cases []benchCase
	err := lab.InNetns(netns, func() error {
		l, err := netlink.LinkByName("xf0")
		if err != nil {
			return err
		}
		x := l.Attrs().Xdp
		if x == nil || x.ProgId == 0 {
			return fmt.Errorf("no XDP program on xf0 in %s", netns)
		}
		prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
		if err != nil {
			return err
		}
		b.Cleanup(func() { prog.Close() })
		info, err := prog.Info()
		if err != nil {
			return err
		}
		ids, _ := info.MapIDs()
		for _, id := range ids {
			m, err := ebpf.NewMapFromID(id)
			if err != nil {
				return err
			}
			mi, _ := m.Info()
			if mi.Name != "filter_ipv4" {
				m.Close()
				continue
			}
			var val []uint64
			if err := m.Lookup([4]byte{198, 18, 0, 7}, &val); err != nil {
				return fmt.Errorf("xdp-filter's entry for 198.18.0.7: %w", err)
			}
			for i := 1; i < int(mi.MaxEntries); i++ {
				var a [4]byte
				binary.BigEndian.PutUint32(a[:], 198<<24|18<<16+uint32(i)+100)
				if err := m.Update(a, val, ebpf.UpdateAny); err != nil {
					return fmt.Errorf("fill xdp-filter's table: %w", err)
				}
			}
			m.Close()
		}
		cases = []benchCase{
			{name: "xdp-filter-pass-10k-ipv4", prog: prog, frame: pass, want: xdpPass, netns: netns, ifindex: l.Attrs().Index},
			{name: "xdp-filter-drop-ipv4", prog: prog, frame: drop, want: xdpDrop, netns: netns, ifindex: l.Attrs().Index},
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return cases
}

// testRunDuration runs prog repeat times on frame through
// BPF_PROG_TEST_RUN and returns the kernel's mean time per run, which
// cilium/ebpf's Program.Run does not return. The kernel stops its clock
// while the runner yields the CPU.
func testRunDuration(prog *ebpf.Program, frame []byte, ctx xdpMD, repeat uint32) (time.Duration, error) {
	ctxBytes, err := binary.Append(nil, binary.NativeEndian, ctx)
	if err != nil {
		return 0, err
	}
	// union bpf_attr's test member (linux/bpf.h).
	var attr struct {
		ProgFD, Retval, DataSizeIn, DataSizeOut uint32
		DataIn, DataOut                         uint64
		Repeat, Duration                        uint32
		CtxSizeIn, CtxSizeOut                   uint32
		CtxIn, CtxOut                           uint64
		Flags, CPU, BatchSize, _                uint32
	}
	attr.ProgFD = uint32(prog.FD())
	attr.DataSizeIn = uint32(len(frame))
	attr.DataIn = uint64(uintptr(unsafe.Pointer(&frame[0])))
	attr.Repeat = repeat
	attr.CtxSizeIn = uint32(len(ctxBytes))
	attr.CtxIn = uint64(uintptr(unsafe.Pointer(&ctxBytes[0])))
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(frame)
		runtime.KeepAlive(ctxBytes)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
		}
		return time.Duration(attr.Duration), nil
	}
}
