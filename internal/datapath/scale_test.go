// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNewNetns runs fn on a thread of its own in a new network namespace,
// which goes away with the thread (it is never handed back to the Go
// scheduler). Attach, linkType and test runs with an ifindex all act in
// the calling thread's namespace.
func inNewNetns(t testing.TB, fn func()) {
	t.Helper()
	done := make(chan any)
	go func() {
		defer func() { done <- recover() }()
		runtime.LockOSThread() // never unlocked: the thread dies with the namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("new network namespace: %v", err))
		}
		fn()
	}()
	if p := <-done; p != nil {
		t.Fatal(p)
	}
}

// addVeths creates n veth pairs <prefix><i>a/<prefix><i>b (up) in the calling
// thread's namespace; with firstIndex > 0 the ifindex of veth<i>a is
// firstIndex+i (the kernel picks its peer's).
func addVeths(prefix string, n, firstIndex int) ([]netlink.Link, error) {
	var out []netlink.Link
	for i := 0; i < n; i++ {
		la := netlink.NewLinkAttrs()
		la.Name = fmt.Sprintf("%s%da", prefix, i)
		if firstIndex > 0 {
			la.Index = firstIndex + i
		}
		v := &netlink.Veth{LinkAttrs: la, PeerName: fmt.Sprintf("%s%db", prefix, i)}
		if err := netlink.LinkAdd(v); err != nil {
			return nil, fmt.Errorf("add %s: %w", la.Name, err)
		}
		for _, name := range []string{v.Name, v.PeerName} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return nil, err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return nil, err
			}
			out = append(out, l)
		}
	}
	return out, nil
}

// skbOn is a test-run context placing the packet on ifindex.
func skbOn(ifindex int) *skbContext {
	var c skbContext
	binary.LittleEndian.PutUint32(c[40:], uint32(ifindex)) // __sk_buff.ifindex
	return &c
}

// TestSharedProgramsCountPerInterface attaches interfaces whose
// ifindexes fall on the same rfm_iface_slots entry (ifindex modulo the
// table size), so some are found through the spill hash, and checks
// that packets run on each interface land in that interface's counters
// only, also after others were detached and their slots reused.
func TestSharedProgramsCountPerInterface(t *testing.T) {
	requireRoot(t)
	// A spill hash of one entry, so the spilled interfaces make it grow
	// (1 -> 2 -> 4) while the others count.
	defer func(n int) { spillStart = n }(spillStart)
	spillStart = 1
	inNewNetns(t, func() {
		d, err := Load(Options{RingBufSize: 1 << 16})
		if err != nil {
			panic(err)
		}
		defer d.Close()
		// veth0a at ifindex 100, 100+table, 100+2*table: each collides
		// with the ones before it.
		var links []netlink.Link
		for k := 0; k < 3; k++ {
			l, err := addVeths(fmt.Sprintf("v%d-", k), 1, 100+k*ifaceTable)
			if err != nil {
				panic(err)
			}
			links = append(links, l...)
		}
		for _, l := range links {
			if err := d.Attach(l.Attrs().Index, l.Attrs().Name); err != nil {
				panic(err)
			}
		}
		spilled := 0
		for _, a := range d.attached {
			if a.spilled {
				spilled++
			}
		}
		if spilled < 2 {
			panic(fmt.Sprintf("%d interfaces found through the spill hash, want at least 2", spilled))
		}
		if d.spill.size() < spilled {
			panic(fmt.Sprintf("spill hash holds %d entries for %d spilled interfaces", d.spill.size(), spilled))
		}
		frame := append(ethHeader(0x0800), ipv4Packet(v4a, v4b, 17, v4opts{}, l4Header(17, 1, 2, 10))...)
		// Interface i gets i+1 packets in, 2(i+1) out.
		run := func(ls []netlink.Link) {
			for i, l := range ls {
				for dir, n := range []int{i + 1, 2 * (i + 1)} {
					p := d.progs[LinkEthernet][dir]
					if _, err := p.Run(&ebpf.RunOptions{Data: frame, Context: skbOn(l.Attrs().Index), Repeat: uint32(n)}); err != nil {
						panic(err)
					}
				}
			}
		}
		check := func(ls []netlink.Link) {
			got, err := d.Counters()
			if err != nil {
				panic(err)
			}
			if len(got) != 2*len(ls) {
				panic(fmt.Sprintf("%d counter rows, want %d", len(got), 2*len(ls)))
			}
			want := map[string][2]uint64{}
			for i, l := range ls {
				want[l.Attrs().Name] = [2]uint64{uint64(i + 1), uint64(2 * (i + 1))}
			}
			for _, c := range got {
				w, ok := want[c.Name]
				if !ok {
					panic(fmt.Sprintf("counters of %s, which is not attached", c.Name))
				}
				// Only IPv4 is checked: the kernel's own IPv6 traffic on
				// the veths (router solicitations, MLD) is counted too.
				if c.Packets[FamilyIPv4] != w[c.Dir] || c.Bytes[FamilyIPv4] != w[c.Dir]*uint64(len(frame)) {
					panic(fmt.Sprintf("%s %s: %d packets %d bytes, want %d packets of %d bytes", c.Name, c.Dir,
						c.Packets[FamilyIPv4], c.Bytes[FamilyIPv4], w[c.Dir], len(frame)))
				}
			}
		}
		run(links)
		check(links)
		// Detach the first pair (holding the direct entries) and one
		// spilled interface; the rest keep counting, reattached ones
		// start from zero in reused slots.
		for _, l := range []netlink.Link{links[0], links[1], links[3]} {
			if err := d.Detach(l.Attrs().Index); err != nil {
				panic(err)
			}
		}
		rest := []netlink.Link{links[2], links[4], links[5]}
		for _, c := range mustCounters(d) {
			if c.Name == links[0].Attrs().Name || c.Name == links[3].Attrs().Name {
				panic(c.Name + " still reported after detach")
			}
		}
		// A packet on a detached interface counts nowhere.
		if _, err := d.progs[LinkEthernet][Ingress].Run(&ebpf.RunOptions{Data: frame, Context: skbOn(links[0].Attrs().Index)}); err != nil {
			panic(err)
		}
		for _, l := range []netlink.Link{links[3], links[0]} {
			if err := d.Attach(l.Attrs().Index, l.Attrs().Name); err != nil {
				panic(err)
			}
			rest = append(rest, l)
		}
		zeroAll(d)
		run(rest)
		check(rest)
	})
}

func mustCounters(d *Datapath) []Counters {
	c, err := d.Counters()
	if err != nil {
		panic(err)
	}
	return c
}

// zeroAll resets every used slot, so a test can count from zero.
func zeroAll(d *Datapath) {
	for slot, used := range d.slotUsed {
		if used {
			if err := d.zeroSlot(uint32(slot)); err != nil {
				panic(err)
			}
		}
	}
}

// TestDetachLeavesNothing attaches and detaches interfaces and checks
// with BPF_PROG_QUERY that no TCX program of ours stays on them.
func TestDetachLeavesNothing(t *testing.T) {
	requireRoot(t)
	inNewNetns(t, func() {
		d, err := Load(Options{RingBufSize: 1 << 16})
		if err != nil {
			panic(err)
		}
		defer d.Close()
		links, err := addVeths("veth", 3, 0)
		if err != nil {
			panic(err)
		}
		// Scrapes run all along (for the race detector).
		stop, scraped := make(chan struct{}), make(chan error)
		go func() {
			for {
				select {
				case <-stop:
					scraped <- nil
					return
				default:
				}
				if _, err := d.Counters(); err != nil {
					scraped <- err
					return
				}
				d.Interfaces()
			}
		}()
		defer func() {
			close(stop)
			if err := <-scraped; err != nil {
				panic(fmt.Sprintf("counters during attach and detach: %v", err))
			}
		}()
		for round := 0; round < 2; round++ {
			for _, l := range links {
				if err := d.Attach(l.Attrs().Index, l.Attrs().Name); err != nil {
					panic(err)
				}
			}
			for _, l := range links {
				if n := tcxPrograms(l.Attrs().Index); n != 2 {
					panic(fmt.Sprintf("%s: %d TCX programs attached, want 2", l.Attrs().Name, n))
				}
			}
			for _, l := range links {
				if err := d.Detach(l.Attrs().Index); err != nil {
					panic(err)
				}
				if n := tcxPrograms(l.Attrs().Index); n != 0 {
					panic(fmt.Sprintf("%s: %d TCX programs left after detach", l.Attrs().Name, n))
				}
			}
		}
		if len(d.direct) != 0 || len(d.attached) != 0 || len(d.chunks) != 0 {
			panic(fmt.Sprintf("after detaching all: %d direct slot entries, %d attached, %d counter chunks",
				len(d.direct), len(d.attached), len(d.chunks)))
		}
		var next uint32
		if err := d.spill.current.NextKey(nil, &next); err == nil || len(d.spill.entries) != 0 {
			panic(fmt.Sprintf("spill entry for ifindex %d left (%d known)", next, len(d.spill.entries)))
		}
	})
}

// tcxPrograms counts the programs at TCX ingress and egress of ifindex.
func tcxPrograms(ifindex int) int {
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		r, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
		if err != nil {
			panic(err)
		}
		n += len(r.Programs)
	}
	return n
}

// BenchmarkAttach reports the time to attach one interface (both
// directions) with 2,000 interfaces attaching, then to scrape their
// counters and to detach one.
//
//	go test -run x -bench Attach -benchtime 1x ./internal/datapath
func BenchmarkAttach(b *testing.B) {
	requireRoot(b)
	const pairs = 1000
	inNewNetns(b, func() {
		d, err := Load(Options{RingBufSize: 1 << 16})
		if err != nil {
			panic(err)
		}
		defer d.Close()
		t0 := time.Now()
		links, err := addVeths("veth", pairs, 0)
		if err != nil {
			panic(err)
		}
		create := time.Since(t0)
		for i := 0; i < b.N; i++ {
			t1 := time.Now()
			each := make([]time.Duration, 0, len(links))
			for _, l := range links {
				t := time.Now()
				if err := d.Attach(l.Attrs().Index, l.Attrs().Name); err != nil {
					panic(err)
				}
				each = append(each, time.Since(t))
			}
			attach := time.Since(t1)
			slices.Sort(each)
			t2 := time.Now()
			const scrapes = 20
			for s := 0; s < scrapes; s++ {
				c, err := d.Counters()
				if err != nil || len(c) != 4*pairs {
					panic(fmt.Sprintf("counters: %d rows, %v", len(c), err))
				}
			}
			scrape := time.Since(t2) / scrapes
			t3 := time.Now()
			for _, l := range links {
				if err := d.Detach(l.Attrs().Index); err != nil {
					panic(err)
				}
			}
			detach := time.Since(t3)
			b.ReportMetric(float64(attach.Microseconds())/float64(len(links)), "us/attach")
			b.ReportMetric(float64(each[len(each)/2].Microseconds()), "us/p50-attach")
			b.ReportMetric(float64(each[len(each)*99/100].Microseconds()), "us/p99-attach")
			b.ReportMetric(float64(each[len(each)-1].Microseconds()), "us/max-attach")
			b.ReportMetric(float64(scrape.Microseconds()), "us/counters-read")
			b.ReportMetric(float64(detach.Microseconds())/float64(len(links)), "us/detach")
			b.ReportMetric(float64(create.Microseconds())/float64(len(links)), "us/veth-create")
			b.ReportMetric(float64(len(links)), "interfaces")
		}
	})
}

// TestInterfaceLimit: attaches past MaxInterfaces are refused with
// ErrInterfaceLimit and counted; raising the limit live lets them in.
func TestInterfaceLimit(t *testing.T) {
	requireRoot(t)
	inNewNetns(t, func() {
		d, err := Load(Options{RingBufSize: 1 << 16, MaxInterfaces: 2})
		if err != nil {
			panic(err)
		}
		defer d.Close()
		links, err := addVeths("lim", 2, 0)
		if err != nil {
			panic(err)
		}
		for _, l := range links[:2] {
			if err := d.Attach(l.Attrs().Index, l.Attrs().Name); err != nil {
				panic(err)
			}
		}
		for i, l := range links[2:] {
			err := d.Attach(l.Attrs().Index, l.Attrs().Name)
			if !errors.Is(err, ErrInterfaceLimit) || !strings.Contains(err.Error(), "agent.bpf.max_interfaces = 2") {
				panic(fmt.Sprintf("attach %s over the limit: %v", l.Attrs().Name, err))
			}
			if st, err := d.Stats(); err != nil || st.InterfaceLimitRefusals != uint64(i+1) {
				panic(fmt.Sprintf("refusals %d (%v), want %d", st.InterfaceLimitRefusals, err, i+1))
			}
		}
		if err := d.SetMaxInterfaces(4); err != nil {
			panic(err)
		}
		for _, l := range links[2:] {
			if err := d.Attach(l.Attrs().Index, l.Attrs().Name); err != nil {
				panic(err)
			}
		}
		if n := len(d.Interfaces()); n != 4 {
			panic(fmt.Sprintf("%d interfaces attached, want 4", n))
		}
	})
}
