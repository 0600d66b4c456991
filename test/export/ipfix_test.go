// SPDX-License-Identifier: AGPL-3.0-only

package export

import (
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

const (
	collectorPort = 4739
	protoUDP      = 17
)

// receivers binds the destination ports in B so that no ICMP port
// unreachable comes back into the monitored interface.
func receivers(t *testing.T, l *testbed, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		lab.UDPConn(t, l.B, a, "")
	}
}

// allowFragments clears DF so the kernel fragments a datagram larger than the MTU.
func allowFragments(t *testing.T, c *net.UDPConn) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DONT)
	}); err != nil || serr != nil {
		t.Fatalf("IP_MTU_DISCOVER: %v %v", err, serr)
	}
}

func expectFlow(t *testing.T, flows []nfFlow, src, dst string, sport, dport int, packets, bytes uint64) {
	t.Helper()
	got := findFlows(flows, src, dst, sport, dport, protoUDP)
	if len(got) != 1 {
		t.Errorf("flow udp %s:%d -> %s:%d: want 1 record, got %d; all flows:\n%s", src, sport, dst, dport, len(got), dumpFlows(flows))
		return
	}
	if got[0].packets != packets || got[0].bytes != bytes {
		t.Errorf("flow udp %s:%d -> %s:%d: got %d packets %d bytes, want %d packets %d bytes; record %s",
			src, sport, dst, dport, got[0].packets, got[0].bytes, packets, bytes, got[0])
	}
}

// TestIPFIXToNfcapd sends exact traffic through the monitored interface
// and checks what nfdump decodes from rfm's export, including that rfm's
// own export packets are excluded while other traffic to the collector is not.
func TestIPFIXToNfcapd(t *testing.T) {
	l := newLab(t)
	col := startCollector(t, l, collectorPort)
	receivers(t, l, addrB4+":5001", "["+addrB6+"]:5002", addrB4+":5003")
	agent := startAgent(t, l, agentConfig{sampleRate: 1, collectorPort: collectorPort})

	s4 := lab.UDPConn(t, l.A, addrA4+":40001", addrB4+":5001")
	s6 := lab.UDPConn(t, l.A, "["+addrA6+"]:40002", "["+addrB6+"]:5002")
	frag := lab.UDPConn(t, l.A, addrA4+":40003", addrB4+":5003")
	allowFragments(t, frag)
	other := lab.UDPConn(t, l.A, addrA4+":40004", addrB4+":4739")

	send(t, s4, 20, 100)   // 20 x (20 + 8 + 100) bytes
	send(t, s6, 10, 100)   // 10 x (40 + 8 + 100) bytes
	send(t, frag, 1, 3000) // 3008-byte UDP datagram: 1500 + 1500 + 68 bytes of IP
	send(t, other, 3, 4)   // 3 x (20 + 8 + 4) bytes; nfcapd ignores the junk

	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	flows := col.finish(t, l)

	expectFlow(t, flows, addrA4, addrB4, 40001, 5001, 20, 20*128)
	expectFlow(t, flows, addrA6, addrB6, 40002, 5002, 10, 10*148)
	expectFlow(t, flows, addrA4, addrB4, 40003, 5003, 1, 1500)
	expectFlow(t, flows, addrA4, addrB4, 0, 0, 2, 1500+68)
	expectFlow(t, flows, addrA4, addrB4, 40004, collectorPort, 3, 3*32)

	// Egress flows on devA: flowDirection 1, egressInterface = its ifindex.
	ifindex := l.ifindexA(t)
	for _, f := range flows {
		if f.src.String() != addrA4 && f.src.String() != addrA6 {
			continue
		}
		if f.direction != 1 || f.inIf != 0 || f.outIf != ifindex {
			t.Errorf("want direction 1, input 0, output %d: %s", ifindex, f)
		}
	}

	// Self-exclusion: the only flow towards the collector port is ours.
	for _, f := range flows {
		if f.dport == collectorPort && f.sport != 40004 {
			t.Errorf("exporter's own packets were exported as a flow: %s", f)
		}
	}
}

// TestIPFIXSamplingInterval checks that nfcapd learns the sampling
// interval from rfm's options record.
func TestIPFIXSamplingInterval(t *testing.T) {
	l := newLab(t)
	col := startCollector(t, l, collectorPort)
	receivers(t, l, addrB4+":5001")
	agent := startAgent(t, l, agentConfig{sampleRate: 10, collectorPort: collectorPort})

	s4 := lab.UDPConn(t, l.A, addrA4+":40001", addrB4+":5001")
	send(t, s4, 500, 100)

	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	flows := col.finish(t, l)
	got := findFlows(flows, addrA4, addrB4, 40001, 5001, protoUDP)
	if len(got) != 1 {
		t.Fatalf("want 1 sampled flow, got %d; all flows:\n%s", len(got), dumpFlows(flows))
	}
	// nfcapd multiplies sampled counts by the interval it learned.
	if got[0].packets == 0 || got[0].packets%10 != 0 || got[0].bytes != got[0].packets*128 {
		t.Errorf("want packets scaled by 10 and 128 bytes each, got %s", got[0])
	}
	for _, file := range col.files(t) {
		out, err := exec.Command("nfdump", "-E", file).CombinedOutput()
		if err != nil {
			t.Fatalf("nfdump -E %s: %v: %s", file, err, out)
		}
		if !strings.Contains(string(out), "packet interval: 1, packet space: 9") {
			t.Errorf("nfdump -E does not show sampling interval 10:\n%s", out)
		}
	}
}
