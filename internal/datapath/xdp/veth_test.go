// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/test/lab"
)

// vethLab is a sender namespace A and a receiver namespace B joined by a
// veth pair; the XDP program goes on B's end.
type vethLab struct {
	nsA, nsB string
	devB     string
	idxB     int
}

func newVethLab(t *testing.T) *vethLab {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Skip("needs ethtool")
	}
	id := fmt.Sprintf("%d%d", os.Getpid()%10000, time.Now().UnixNano()%1000)
	l := &vethLab{nsA: "rfmxa" + id, nsB: "rfmxb" + id, devB: "xb0"}
	lab.NewPair(t, lab.PairOptions{
		NsA: l.nsA, NsB: l.nsB, DevA: "xa0", DevB: l.devB,
		MACA: lab.MustMAC("02:00:00:00:0a:01"), MACB: lab.MustMAC("02:00:00:00:0b:01"),
		StrictCleanup: true,
		Addrs: [][2]netip.Prefix{
			{netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("198.18.0.2/24")},
			{netip.MustParsePrefix("198.18.0.5/24"), netip.MustParsePrefix("198.18.0.6/24")},
			{netip.MustParsePrefix("2001:db8::1/64"), netip.MustParsePrefix("2001:db8::2/64")},
		},
	})
	if err := lab.InNetns(l.nsB, func() error {
		link, err := netlink.LinkByName(l.devB)
		if err != nil {
			return err
		}
		l.idxB = link.Attrs().Index
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

// inB runs fn in namespace B, failing the test on error.
func (l *vethLab) inB(t testing.TB, fn func() error) {
	t.Helper()
	if err := lab.InNetns(l.nsB, fn); err != nil {
		t.Fatal(err)
	}
}

// receiver counts datagrams arriving on a UDP socket in B.
type receiver struct {
	conn *net.UDPConn
	n    chan int
}

func (l *vethLab) receiver(t *testing.T, addr string) *receiver {
	c := lab.UDPConn(t, l.nsB, addr, "")
	// A loaded machine may run the reader late: room for every datagram
	// a test sends, so none is lost to a full socket.
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{conn: c, n: make(chan int, 1)}
	go func() {
		buf := make([]byte, 2048)
		n := 0
		for {
			if _, err := c.Read(buf); err != nil {
				r.n <- n
				return
			}
			n++
		}
	}()
	return r
}

// count closes the socket once want datagrams could have arrived (the
// sender's packets are on the wire when send returns, and B's queue is
// drained when a deadline read times out) and returns how many did.
func (r *receiver) count() int {
	r.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	return <-r.n
}

func send(t *testing.T, ns, local, remote string, n, payload int) {
	t.Helper()
	c := lab.UDPConn(t, ns, local, remote)
	defer c.Close() // the next send may bind the same port
	buf := make([]byte, payload)
	for i := 0; i < n; i++ {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("send %s -> %s: %v", local, remote, err)
		}
	}
}

// TestVethDropsCountedOnce sends IPv4 and IPv6 UDP to two ports over a
// veth with native XDP dropping one of them, and checks: what arrives,
// the rule's counters, the interface rx counters (every packet once,
// dropped or not, with its frame bytes) and the sampled events (the
// dropped ones flagged).
func TestVethDropsCountedOnce(t *testing.T) {
	l := newVethLab(t)
	d, x := l.startWithXDP(t, 1, Rule{Name: "no-9001", Action: ActionDrop, Proto: 17, DstPorts: []PortRange{{9001, 9001}}}, ModeNative)

	const nPass, nDrop, payload = 200, 150, 64
	recv := []*receiver{
		l.receiver(t, "198.18.0.2:9000"), l.receiver(t, "198.18.0.2:9001"),
		l.receiver(t, "[2001:db8::2]:9000"), l.receiver(t, "[2001:db8::2]:9001"),
	}
	send(t, l.nsA, "198.18.0.1:5000", "198.18.0.2:9000", nPass, payload)
	send(t, l.nsA, "198.18.0.1:5001", "198.18.0.2:9001", nDrop, payload)
	send(t, l.nsA, "[2001:db8::1]:5000", "[2001:db8::2]:9000", nPass, payload)
	send(t, l.nsA, "[2001:db8::1]:5001", "[2001:db8::2]:9001", nDrop, payload)

	// Independent of the code: frame = Ethernet 14 + IP header + UDP 8 + payload.
	frame4, frame6 := uint64(14+20+8+payload), uint64(14+40+8+payload)
	lab.Eventually(t, 5*time.Second, "rx counters", func() error {
		cs, err := d.Counters()
		if err != nil {
			return err
		}
		for _, c := range cs {
			if c.Index != l.idxB || c.Dir != datapath.Ingress {
				continue
			}
			want := [3]uint64{0, nPass + nDrop, nPass + nDrop}
			wantB := [3]uint64{0, (nPass + nDrop) * frame4, (nPass + nDrop) * frame6}
			if c.Packets != want || c.Bytes != wantB {
				return fmt.Errorf("ingress packets %v bytes %v, want %v %v", c.Packets, c.Bytes, want, wantB)
			}
			return nil
		}
		return errors.New("interface not in counters")
	})
	for i, want := range []int{nPass, 0, nPass, 0} {
		if got := recv[i].count(); got != want {
			t.Errorf("receiver %d got %d datagrams, want %d", i, got, want)
		}
	}
	cs, err := x.Counters()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Counter{}
	for _, c := range cs {
		got[c.Rule+"/"+c.Action] = c
	}
	if c := got["no-9001/drop"]; c.Packets != 2*nDrop || c.Bytes != nDrop*(frame4+frame6) {
		t.Errorf("rule no-9001 drop: %d packets %d bytes, want %d and %d", c.Packets, c.Bytes, 2*nDrop, nDrop*(frame4+frame6))
	}
	if c := got["no-9001/pass"]; c.Packets != 0 {
		t.Errorf("rule no-9001 pass: %d packets, want 0", c.Packets)
	}

	// Sampling at rate 1: every packet sampled (an event carries a run
	// of one flow's packets: count its Segs, as the flow table does);
	// the dropped ones are flagged and are exactly those to port 9001.
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	evs := make([]datapath.Event, 256)
	dropped, passed := 0, 0
	for {
		n, err := d.ReadBatch(evs)
		for _, e := range evs[:n] {
			if e.Dir != datapath.Ingress {
				continue
			}
			if e.Dropped != (e.DstPort == 9001) {
				t.Fatalf("event to port %d has Dropped %v", e.DstPort, e.Dropped)
			}
			if e.Dropped {
				dropped += int(e.Segs)
			} else {
				passed += int(e.Segs)
			}
		}
		if errors.Is(err, datapath.ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if dropped != 2*nDrop || passed != 2*nPass {
		t.Errorf("sampled packets: %d dropped, %d passed; want %d and %d", dropped, passed, 2*nDrop, 2*nPass)
	}
}

// TestVethBlocklistAndBlackhole: a blocklisted prefix drops by source and
// by destination, a blackholed one by destination only; removing either
// lets the next packet through.
func TestVethBlocklistAndBlackhole(t *testing.T) {
	l := newVethLab(t)
	var x *Program
	l.inB(t, func() error {
		var err error
		if x, err = Load(Options{}); err != nil {
			return err
		}
		_, err = x.Attach(l.idxB, l.devB, ModeAuto)
		return err
	})
	t.Cleanup(func() { x.Close() })
	try := func(what, local, remote string, want int) {
		t.Helper()
		r := l.receiver(t, remote)
		send(t, l.nsA, local, remote, 10, 16)
		if got := r.count(); got != want {
			t.Errorf("%s: %d of 10 datagrams arrived, want %d", what, got, want)
		}
	}
	set := func(list List, p string, on bool) {
		t.Helper()
		if err := x.SetPrefix(list, netip.MustParsePrefix(p), on); err != nil {
			t.Fatal(err)
		}
	}
	set(ListBlock, "198.18.0.1/32", true)
	try("blocked source", "198.18.0.1:6000", "198.18.0.2:7000", 0)
	try("other source", "198.18.0.5:6000", "198.18.0.2:7001", 10)
	set(ListBlock, "198.18.0.1/32", false)
	try("unblocked source", "198.18.0.1:6000", "198.18.0.2:7002", 10)
	set(ListBlock, "198.18.0.0/31", true) // a prefix, not an address: the trie
	try("blocked source prefix", "198.18.0.1:6000", "198.18.0.2:7008", 0)
	try("outside the blocked prefix", "198.18.0.5:6000", "198.18.0.2:7009", 10)
	set(ListBlock, "198.18.0.0/31", false)
	set(ListBlock, "2001:db8::2/128", true)
	try("blocked destination v6", "[2001:db8::1]:6000", "[2001:db8::2]:7003", 0)
	set(ListBlock, "2001:db8::2/128", false)
	set(ListBlackhole, "198.18.0.0/30", true) // holds .1 and .2
	try("blackholed destination", "198.18.0.5:6000", "198.18.0.2:7004", 0)
	set(ListBlackhole, "198.18.0.2/32", true)
	set(ListBlackhole, "198.18.0.0/30", false) // the /32 still holds .2
	try("blackholed /32 after the /30 went", "198.18.0.5:6000", "198.18.0.2:7005", 0)
	set(ListBlackhole, "198.18.0.2/32", false)
	try("blackhole removed", "198.18.0.5:6000", "198.18.0.2:7006", 10)
	set(ListBlackhole, "2001:db8::1/128", true) // a source: not dropped
	try("blackhole matches destinations only", "[2001:db8::1]:6000", "[2001:db8::2]:7007", 10)
	set(ListBlackhole, "2001:db8::/126", true) // holds ::2, the destination
	try("blackholed IPv6 destination", "[2001:db8::1]:6000", "[2001:db8::2]:7010", 0)

	cs, err := x.Counters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"blocklist/drop": 30, "blackhole/drop": 30}
	for _, c := range cs {
		if w, ok := want[c.Rule+"/"+c.Action]; ok && c.Packets != w {
			t.Errorf("%s %s: %d packets, want %d", c.Rule, c.Action, c.Packets, w)
		}
	}
}

// TestVethRateLimit: a rate_limit rule lets through pps per source
// address, each source on its own bucket. Tolerance: the bucket starts
// full (burstTime's worth of packets) and then refills at pps, so over a
// send lasting T the count is burst + pps*T; the check allows 15% for
// clock reads around the send and the race between CPUs on one bucket.
func TestVethRateLimit(t *testing.T) {
	l := newVethLab(t)
	const pps = 2000
	var x *Program
	l.inB(t, func() error {
		var err error
		if x, err = Load(Options{}); err != nil {
			return err
		}
		if err := x.SetRules([]Rule{{Name: "limit", Action: ActionRateLimit, PPS: pps, Proto: 17, DstPorts: []PortRange{{8000, 8001}}}}); err != nil {
			return err
		}
		_, err = x.Attach(l.idxB, l.devB, ModeNative)
		return err
	})
	t.Cleanup(func() { x.Close() })
	r1, r2 := l.receiver(t, "198.18.0.2:8000"), l.receiver(t, "198.18.0.2:8001")
	c1 := lab.UDPConn(t, l.nsA, "198.18.0.1:5000", "198.18.0.2:8000")
	c2 := lab.UDPConn(t, l.nsA, "198.18.0.5:5000", "198.18.0.2:8001")
	buf := make([]byte, 16)
	start := time.Now()
	sent := 0
	for time.Since(start) < 700*time.Millisecond {
		c1.Write(buf)
		c2.Write(buf)
		sent++
	}
	elapsed := time.Since(start)
	if float64(sent) < 3*pps*elapsed.Seconds() {
		t.Skipf("sender too slow to test a limit: %d packets in %s", sent, elapsed)
	}
	want := float64(pps)*burstTime/1e9 + pps*elapsed.Seconds()
	for i, r := range []*receiver{r1, r2} {
		got := float64(r.count())
		if got < 0.85*want || got > 1.15*want {
			t.Errorf("source %d: %.0f of %d datagrams passed in %s, want %.0f ± 15%%", i+1, got, sent, elapsed, want)
		}
	}
}

// TestForeignProgramLeftAlone: an XDP program someone else attached is
// named in the refusal and still attached afterwards.
func TestForeignProgramLeftAlone(t *testing.T) {
	l := newVethLab(t)
	foreign, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "foreign_fw", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	info, _ := foreign.Info()
	id, _ := info.ID()
	var x *Program
	l.inB(t, func() error {
		link, err := netlink.LinkByIndex(l.idxB)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetXdpFd(link, foreign.FD()); err != nil {
			return err
		}
		if x, err = Load(Options{}); err != nil {
			return err
		}
		_, err = x.Attach(l.idxB, l.devB, ModeAuto)
		if err == nil {
			return errors.New("attach over a foreign XDP program succeeded")
		}
		if !strings.Contains(err.Error(), `"foreign_fw"`) || !strings.Contains(err.Error(), l.devB) {
			return fmt.Errorf("refusal %q does not name the program and the interface", err)
		}
		t.Logf("refused: %v", err)
		link, err = netlink.LinkByIndex(l.idxB)
		if err != nil {
			return err
		}
		if xd := link.Attrs().Xdp; xd == nil || xd.ProgId != uint32(id) {
			return fmt.Errorf("foreign program no longer attached: %+v", xd)
		}
		return nil
	})
	x.Close()
}

// TestSIGKILLLeavesNothing: a process holding the XDP link dies by
// SIGKILL; the interface has no XDP program afterwards.
func TestSIGKILLLeavesNothing(t *testing.T) {
	if os.Getenv("RFM_XDP_CHILD_IFINDEX") != "" {
		return // the child's own run of this test; see xdpChild
	}
	l := newVethLab(t)
	cmd := exec.Command("ip", "netns", "exec", l.nsB, os.Args[0], "-test.run=^TestXDPChild$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("RFM_XDP_CHILD_IFINDEX=%d", l.idxB))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := out.Read(b)
		ready <- string(b[:n])
	}()
	select {
	case s := <-ready:
		if !strings.Contains(s, "attached") {
			cmd.Process.Kill()
			t.Fatalf("child: %q", s)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("child did not attach within 20 s")
	}
	progID := func() uint32 {
		var id uint32
		l.inB(t, func() error {
			link, err := netlink.LinkByIndex(l.idxB)
			if err == nil && link.Attrs().Xdp != nil {
				id = link.Attrs().Xdp.ProgId
			}
			return err
		})
		return id
	}
	if progID() == 0 {
		t.Fatal("no XDP program while the child runs")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	lab.Eventually(t, 5*time.Second, "XDP program gone", func() error {
		if id := progID(); id != 0 {
			return fmt.Errorf("program %d still attached", id)
		}
		return nil
	})
}

// TestXDPChild attaches and waits to be killed; it runs only as the
// child of TestSIGKILLLeavesNothing.
func TestXDPChild(t *testing.T) {
	var idx int
	if _, err := fmt.Sscan(os.Getenv("RFM_XDP_CHILD_IFINDEX"), &idx); err != nil {
		t.Skip("only run by TestSIGKILLLeavesNothing")
	}
	x, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Attach(idx, "child", ModeAuto); err != nil {
		t.Fatal(err)
	}
	fmt.Println("attached")
	time.Sleep(time.Minute)
}

// TestDetachedBehindOurBack: when another process detaches the link
// (BPF_LINK_DETACH), Holds turns false, which rfm_xdp_attached reports.
func TestDetachedBehindOurBack(t *testing.T) {
	l := newVethLab(t)
	var x *Program
	l.inB(t, func() error {
		var err error
		if x, err = Load(Options{}); err != nil {
			return err
		}
		if _, err := x.Attach(l.idxB, l.devB, ModeNative); err != nil {
			return err
		}
		if !x.Holds(l.idxB) {
			return errors.New("Holds false right after Attach")
		}
		x.mu.Lock()
		lk := x.attached[l.idxB].link
		x.mu.Unlock()
		if err := lk.Detach(); err != nil {
			return fmt.Errorf("detach the link as another process would: %w", err)
		}
		if x.Holds(l.idxB) {
			return errors.New("Holds still true after the link was detached")
		}
		return nil
	})
	x.Close()
}

// TestVethGenericMode: in generic (skb) mode the rules act the same.
func TestVethGenericMode(t *testing.T) {
	l := newVethLab(t)
	var x *Program
	l.inB(t, func() error {
		var err error
		if x, err = Load(Options{}); err != nil {
			return err
		}
		if err := x.SetRules([]Rule{{Name: "no-7300", Action: ActionDrop, Proto: 17, DstPorts: []PortRange{{7300, 7300}}}}); err != nil {
			return err
		}
		mode, err := x.Attach(l.idxB, l.devB, ModeGeneric)
		if err == nil && mode != ModeGeneric {
			err = fmt.Errorf("mode %s, want generic", mode)
		}
		return err
	})
	t.Cleanup(func() { x.Close() })
	for port, want := range map[int]int{7300: 0, 7301: 10} {
		r := l.receiver(t, fmt.Sprintf("198.18.0.2:%d", port))
		send(t, l.nsA, "198.18.0.1:6000", fmt.Sprintf("198.18.0.2:%d", port), 10, 16)
		if got := r.count(); got != want {
			t.Errorf("generic mode, port %d: %d of 10 arrived, want %d", port, got, want)
		}
	}
}

// TestSpilledInterfaceSlot: an interface whose xdp_ifaces entry another
// ifindex holds (equal modulo 4096) is counted through the spill hash.
func TestSpilledInterfaceSlot(t *testing.T) {
	l := newVethLab(t)
	var x *Program
	l.inB(t, func() error {
		var err error
		if x, err = Load(Options{}); err != nil {
			return err
		}
		occupant := rawIface{Ifindex: uint32(l.idxB) + ifaceTable, Slot: MaxInterfaces - 1}
		if err := x.maps[xdpobjMapXdpIfaces].Put(uint32(l.idxB)%ifaceTable, occupant); err != nil {
			return err
		}
		if err := x.SetRules([]Rule{{Name: "no-7400", Action: ActionDrop, Proto: 17, DstPorts: []PortRange{{7400, 7400}}}}); err != nil {
			return err
		}
		if _, err = x.Attach(l.idxB, l.devB, ModeNative); err != nil {
			return err
		}
		var kept rawIface
		var slot uint32
		if err := x.maps[xdpobjMapXdpIfaces].Lookup(uint32(l.idxB)%ifaceTable, &kept); err != nil || kept != occupant {
			return fmt.Errorf("the occupant's entry became %+v (%v)", kept, err)
		}
		return x.maps[xdpobjMapXdpIfacesSpill].Lookup(uint32(l.idxB), &slot)
	})
	t.Cleanup(func() { x.Close() })
	send(t, l.nsA, "198.18.0.1:6000", "198.18.0.2:7400", 10, 16)
	lab.Eventually(t, 5*time.Second, "the spilled interface's drops counted", func() error {
		cs, err := x.Counters()
		if err != nil {
			return err
		}
		for _, c := range cs {
			if c.Rule == "no-7400" && c.Action == "drop" && c.Packets == 10 {
				return nil
			}
		}
		return fmt.Errorf("counters %+v", cs)
	})
}

// TestCountersFollowRuleNames: a rule's counters continue across rule
// set changes while its name stays, wherever it moves in the list, also
// once its old generation is reused.
func TestCountersFollowRuleNames(t *testing.T) {
	l := newVethLab(t)
	var x *Program
	drop := Rule{Name: "no-7500", Action: ActionDrop, Proto: 17, DstPorts: []PortRange{{7500, 7500}}}
	other := Rule{Name: "other", Action: ActionPass, Proto: 6}
	l.inB(t, func() error {
		var err error
		if x, err = Load(Options{}); err != nil {
			return err
		}
		if err := x.SetRules([]Rule{drop}); err != nil {
			return err
		}
		_, err = x.Attach(l.idxB, l.devB, ModeNative)
		return err
	})
	t.Cleanup(func() { x.Close() })
	dropped := func() uint64 {
		cs, err := x.Counters()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Rule == "no-7500" && c.Action == "drop" {
				return c.Packets
			}
		}
		return 0
	}
	want := uint64(0)
	for i, rules := range [][]Rule{{drop}, {other, drop}, {drop, other}, {other, drop}} {
		if err := x.SetRules(rules); err != nil {
			t.Fatal(err)
		}
		send(t, l.nsA, "198.18.0.1:6000", "198.18.0.2:7500", 5, 16)
		want += 5
		lab.Eventually(t, 5*time.Second, "drops counted", func() error {
			if got := dropped(); got != want {
				return fmt.Errorf("set %d: no-7500 dropped %d, want %d", i, got, want)
			}
			return nil
		})
	}
}

// TestVethDroppedEventsWithFields: with the datapath's optional fields
// on, a dropped packet's event has the same layout as the others and
// carries the fields XDP can know (TTL here; no FIB lookup).
func TestVethDroppedEventsWithFields(t *testing.T) {
	l := newVethLab(t)
	var d *datapath.Datapath
	var x *Program
	l.inB(t, func() error {
		var err error
		fields := datapath.FieldTTL | datapath.FieldDSCP | datapath.FieldVLAN | datapath.FieldTCPFlags
		if d, err = datapath.Load(datapath.Options{RingBufSize: 1 << 20, MaxInterfaces: 4, Fields: fields}); err != nil {
			return err
		}
		if err := d.SetConfig(datapath.Config{SampleRate: 1}); err != nil {
			return err
		}
		if err := d.Attach(l.idxB, l.devB); err != nil {
			return err
		}
		if x, err = Load(Options{Shared: d.SharedMaps(), Fields: uint32(d.Fields())}); err != nil {
			return err
		}
		if err := x.SetRules([]Rule{{Name: "no-7700", Action: ActionDrop, Proto: 17, DstPorts: []PortRange{{7700, 7700}}}}); err != nil {
			return err
		}
		_, err = x.Attach(l.idxB, l.devB, ModeNative)
		return err
	})
	t.Cleanup(func() { x.Close(); d.Close() })
	send(t, l.nsA, "198.18.0.1:6000", "198.18.0.2:7700", 10, 16)
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	evs := make([]datapath.Event, 64)
	dropped := 0
	for {
		n, err := d.ReadBatch(evs)
		for _, e := range evs[:n] {
			if e.Dropped {
				dropped += int(e.Segs) // packets the event stands for
				if e.TTL != 64 || e.DstPort != 7700 {
					t.Errorf("dropped event: TTL %d port %d, want 64 and 7700", e.TTL, e.DstPort)
				}
			}
		}
		if errors.Is(err, datapath.ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if dropped != 10 || d.DecodeErrors() != 0 {
		t.Errorf("%d dropped packets in events, %d decode errors; want 10 and 0", dropped, d.DecodeErrors())
	}
}

// sendGSO sends from namespace ns, out of dev, one TCP super-packet of
// payload bytes to be cut into mss-sized segments, the way a VM or a
// tap writer hands the kernel a GSO packet (a virtio_net_hdr in front,
// PACKET_VNET_HDR): the veth passes it on whole, so the other end
// receives one skb of payload/mss segments.
func sendGSO(t *testing.T, ns, dev string, src, dst netip.Addr, dport uint16, payload, mss int) {
	t.Helper()
	if err := lab.InNetns(ns, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return err
		}
		var ip []byte
		var etype uint16
		gsoType := uint8(1) // VIRTIO_NET_HDR_GSO_TCPV4
		if src.Is4() {
			etype = 0x0800
			ip = make([]byte, 20)
			ip[0] = 0x45
			tot := 20 + 20 + payload
			ip[2], ip[3] = byte(tot>>8), byte(tot)
			ip[6] = 0x40 // DF
			ip[8], ip[9] = 64, 6
			s, d := src.As4(), dst.As4()
			copy(ip[12:], s[:])
			copy(ip[16:], d[:])
			var sum uint32
			for i := 0; i < 20; i += 2 {
				sum += uint32(ip[i])<<8 | uint32(ip[i+1])
			}
			for sum > 0xffff {
				sum = sum&0xffff + sum>>16
			}
			ip[10], ip[11] = byte(^sum>>8), byte(^sum)
		} else {
			etype, gsoType = 0x86dd, 4 // VIRTIO_NET_HDR_GSO_TCPV6
			ip = make([]byte, 40)
			ip[0] = 0x60
			pl := 20 + payload
			ip[4], ip[5] = byte(pl>>8), byte(pl)
			ip[6], ip[7] = 6, 64
			s, d := src.As16(), dst.As16()
			copy(ip[8:], s[:])
			copy(ip[24:], d[:])
		}
		tcp := make([]byte, 20)
		tcp[0], tcp[1] = 0x9c, 0x40 // source port 40000
		tcp[2], tcp[3] = byte(dport>>8), byte(dport)
		tcp[12] = 5 << 4
		tcp[13] = 0x18 // PSH ACK
		tcp[14], tcp[15] = 0xff, 0xff
		eth := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0x0a, 0x01, byte(etype >> 8), byte(etype)}
		hdrLen := len(eth) + len(ip) + len(tcp)
		// struct virtio_net_hdr: flags NEEDS_CSUM, gso_type, hdr_len,
		// gso_size, csum_start, csum_offset (host order).
		vnet := make([]byte, 10)
		vnet[0], vnet[1] = 1, gsoType
		binary.NativeEndian.PutUint16(vnet[2:], uint16(hdrLen))
		binary.NativeEndian.PutUint16(vnet[4:], uint16(mss))
		binary.NativeEndian.PutUint16(vnet[6:], uint16(len(eth)+len(ip)))
		binary.NativeEndian.PutUint16(vnet[8:], 16)
		frame := slices.Concat(vnet, eth, ip, tcp, make([]byte, payload))
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6,
			Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
	}); err != nil {
		t.Fatalf("send a GSO packet: %v", err)
	}
}

// TestVethGenericGSODropCounted: in generic mode XDP runs on the skb,
// after GRO, and a TCP super-packet is one frame to it. Dropped, it must
// still count as the segments it is on the wire, as TC counts them: the
// interface rx counters and the rule's counters get every segment, with
// its own headers. The super-packets are written with a virtio_net_hdr,
// so the expected segments and bytes follow from what was sent.
func TestVethGenericGSODropCounted(t *testing.T) {
	l := newVethLab(t)
	lab.Run(t, "ip", "netns", "exec", l.nsA, "ethtool", "-K", "xa0", "tso", "on", "gso", "on", "tx-checksumming", "on")
	lab.Run(t, "ip", "netns", "exec", l.nsB, "ethtool", "-K", l.devB, "gro", "on")
	d, x := l.startWithXDP(t, 1, Rule{Name: "no-9100", Action: ActionDrop, Proto: 6, DstPorts: []PortRange{{9100, 9100}}}, ModeGeneric)

	// 10,000 bytes in 1,000-byte segments: 10 segments; 10,500 in 1,000:
	// 11, the last 500 bytes.
	const n = 5
	cases := []struct {
		src, dst     netip.Addr
		payload, mss int
		segs         uint64
		hdr          uint64 // Ethernet + IP + TCP, repeated per segment
	}{
		{netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), 10000, 1000, 10, 14 + 20 + 20},
		{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), 10500, 1000, 11, 14 + 40 + 20},
	}
	var want4, want6 [2]uint64 // packets, bytes
	for i, c := range cases {
		for range n {
			sendGSO(t, l.nsA, "xa0", c.src, c.dst, 9100, c.payload, c.mss)
		}
		w := &want4
		if i == 1 {
			w = &want6
		}
		w[0] += n * c.segs
		w[1] += n * (uint64(c.payload) + c.segs*c.hdr)
	}
	lab.Eventually(t, 5*time.Second, "rx counters", func() error {
		cs, err := d.Counters()
		if err != nil {
			return err
		}
		for _, c := range cs {
			if c.Index != l.idxB || c.Dir != datapath.Ingress {
				continue
			}
			if c.Packets[1] != want4[0] || c.Bytes[1] != want4[1] || c.Packets[2] != want6[0] || c.Bytes[2] != want6[1] {
				return fmt.Errorf("ingress packets %v bytes %v, want IPv4 %v IPv6 %v (packets, bytes)", c.Packets, c.Bytes, want4, want6)
			}
			return nil
		}
		return errors.New("interface not in counters")
	})
	cs, err := x.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Rule == "no-9100" && c.Action == "drop" && (c.Packets != want4[0]+want6[0] || c.Bytes != want4[1]+want6[1]) {
			t.Errorf("rule no-9100 drop: %d packets %d bytes, want %d and %d", c.Packets, c.Bytes, want4[0]+want6[0], want4[1]+want6[1])
		}
	}

	// Sampled at rate 1, each dropped super-packet is one event standing
	// for its segments, with the L3 bytes of all of them.
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	var segs, l3 [2]uint64 // IPv4, IPv6
	evs := make([]datapath.Event, 64)
	for {
		k, err := d.ReadBatch(evs)
		for _, e := range evs[:k] {
			if !e.Dropped || e.DstPort != 9100 {
				continue
			}
			f := 0
			if !netip.AddrFrom16(e.Src).Unmap().Is4() {
				f = 1
			}
			segs[f] += uint64(e.Segs)
			l3[f] += uint64(e.Len)
		}
		if errors.Is(err, datapath.ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cases {
		wantL3 := n * (uint64(c.payload) + c.segs*(c.hdr-14))
		if segs[i] != n*c.segs || l3[i] != wantL3 {
			t.Errorf("%s: sampled drops stand for %d packets, %d L3 bytes; want %d and %d", c.src, segs[i], l3[i], n*c.segs, wantL3)
		}
	}
}

// TestVethGROStreamCounted: a TCP stream over a veth with TSO at the
// sender and GRO at the receiver, XDP in generic or native mode with a
// pass rule for it. The rule's counters must agree with the TC ingress
// counters of bpf/rfm.c, which count each super-packet as its segments:
// same packets, same bytes. (In native mode the veth turns its peer's
// GSO off, so XDP sees single segments.)
func TestVethGROStreamCounted(t *testing.T) {
	for _, mode := range []Mode{ModeGeneric, ModeNative} {
		t.Run(mode.String(), func(t *testing.T) { testGROStream(t, mode) })
	}
}

func testGROStream(t *testing.T, mode Mode) {
	l := newVethLab(t)
	lab.Run(t, "ip", "netns", "exec", l.nsA, "ethtool", "-K", "xa0", "tso", "on", "gso", "on", "tx-checksumming", "on")
	lab.Run(t, "ip", "netns", "exec", l.nsB, "ethtool", "-K", l.devB, "gro", "on")
	d, x := l.startWithXDP(t, 0, Rule{Name: "stream", Action: ActionPass, Proto: 6, DstPorts: []PortRange{{9200, 9200}}}, mode)
	var ln net.Listener
	l.inB(t, func() (err error) {
		ln, err = net.Listen("tcp", "198.18.0.2:9200")
		return err
	})
	t.Cleanup(func() { ln.Close() })
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	const size = 8 << 20
	if err := lab.InNetns(l.nsA, func() error {
		c, err := net.Dial("tcp", "198.18.0.2:9200")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(make([]byte, size))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != size {
		t.Fatalf("received %d bytes, sent %d", n, size)
	}
	lab.Eventually(t, 5*time.Second, "XDP and TC agree", func() error {
		cs, err := d.Counters()
		if err != nil {
			return err
		}
		var tcP, tcB uint64
		for _, c := range cs {
			if c.Index == l.idxB && c.Dir == datapath.Ingress {
				tcP, tcB = c.Packets[1], c.Bytes[1]
			}
		}
		xs, err := x.Counters()
		if err != nil {
			return err
		}
		var xP, xB uint64
		for _, c := range xs {
			if c.Rule == "stream" && c.Action == "pass" {
				xP, xB = c.Packets, c.Bytes
			}
		}
		// 8 MiB in segments of at most 1448 bytes: at least 5,794 packets.
		if tcP < size/1448 {
			return fmt.Errorf("TC counted %d packets, fewer than the stream's %d segments", tcP, size/1448)
		}
		if xP != tcP || xB != tcB {
			return fmt.Errorf("XDP rule counted %d packets %d bytes, TC ingress %d packets %d bytes", xP, xB, tcP, tcB)
		}
		return nil
	})
}

// startWithXDP loads the TC datapath in B's namespace (sampling at rate,
// if not 0) on B's veth, then the XDP program with the one rule, attached
// in mode; both are closed when the test ends.
func (l *vethLab) startWithXDP(t *testing.T, rate uint32, rule Rule, mode Mode) (*datapath.Datapath, *Program) {
	t.Helper()
	var d *datapath.Datapath
	var x *Program
	l.inB(t, func() error {
		var err error
		if d, err = datapath.Load(datapath.Options{RingBufSize: 1 << 22, MaxInterfaces: 4}); err != nil {
			return err
		}
		if rate > 0 {
			if err := d.SetConfig(datapath.Config{SampleRate: rate}); err != nil {
				return err
			}
		}
		if err := d.Attach(l.idxB, l.devB); err != nil {
			return err
		}
		if x, err = Load(Options{Shared: d.SharedMaps()}); err != nil {
			return err
		}
		// XDP's drops reach the rx counters through the datapath.
		if err := d.SetIngressSource(x); err != nil {
			return err
		}
		if err := x.SetRules([]Rule{rule}); err != nil {
			return err
		}
		if got, err := x.Attach(l.idxB, l.devB, mode); err != nil || got != mode {
			return fmt.Errorf("attach %s: got %s, %v", mode, got, err)
		}
		return nil
	})
	t.Cleanup(func() {
		if x != nil {
			x.Close()
		}
		if d != nil {
			d.Close()
		}
	})
	return d, x
}

// TestVethRxKeepsDropsAfterDetach: the rx counters, to which the
// datapath adds XDP's drops, keep them when the program leaves the
// interface and when it is closed (its last counts handed over), and
// count on from there.
func TestVethRxKeepsDropsAfterDetach(t *testing.T) {
	l := newVethLab(t)
	d, x := l.startWithXDP(t, 0, Rule{Name: "no-9001", Action: ActionDrop, Proto: 17, DstPorts: []PortRange{{9001, 9001}}}, ModeNative)
	const n, payload = 40, 32
	frame := uint64(14 + 20 + 8 + payload)
	rxIs := func(what string, packets uint64) {
		t.Helper()
		lab.Eventually(t, 5*time.Second, what, func() error {
			cs, err := d.Counters()
			if err != nil {
				return err
			}
			for _, c := range cs {
				if c.Index == l.idxB && c.Dir == datapath.Ingress {
					if c.Packets[1] != packets || c.Bytes[1] != packets*frame {
						return fmt.Errorf("rx IPv4 %d packets %d bytes, want %d and %d", c.Packets[1], c.Bytes[1], packets, packets*frame)
					}
					return nil
				}
			}
			return errors.New("interface not in counters")
		})
	}
	r := l.receiver(t, "198.18.0.2:9001")
	send(t, l.nsA, "198.18.0.1:5001", "198.18.0.2:9001", n, payload)
	rxIs("rx counts the drops", n)
	if err := x.Detach(l.idxB); err != nil {
		t.Fatal(err)
	}
	rxIs("rx after the detach", n)
	send(t, l.nsA, "198.18.0.1:5001", "198.18.0.2:9001", n, payload)
	rxIs("rx counts on at TC", 2*n)
	if got := r.count(); got != n {
		t.Errorf("%d datagrams arrived, want the %d sent after the detach", got, n)
	}
	// Attached again: its new drops add to what it dropped before.
	var err error
	l.inB(t, func() error { _, err = x.Attach(l.idxB, l.devB, ModeNative); return err })
	send(t, l.nsA, "198.18.0.1:5001", "198.18.0.2:9001", n, payload)
	rxIs("rx after a second attach", 3*n)
	if err := x.DetachAll(); err != nil {
		t.Fatal(err)
	}
	if err := d.SetIngressSource(nil); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	rxIs("rx with the program closed", 3*n)
}
