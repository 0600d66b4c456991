// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

func loadProgram(t testing.TB) *Program {
	t.Helper()
	requireRoot(t)
	p, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// TestRuleKinds: each kind of condition drops what it names and nothing
// else, IPv4 and IPv6. Expectations are written out by hand.
func TestRuleKinds(t *testing.T) {
	p := loadProgram(t)
	udp, tcp := uint8(17), uint8(6)
	cases := []struct {
		name string
		rule Rule
		drop [][]byte
		pass [][]byte
	}{
		{"src v4", Rule{Src: pfx("198.18.1.0/24"), Proto: AnyProto},
			[][]byte{ipv4Frame("198.18.1.9", "198.19.0.1", udp, 0, l4(1, 2, 10)), ipv4Frame("198.18.1.255", "198.19.0.1", 1, 0, make([]byte, 8))},
			[][]byte{ipv4Frame("198.18.2.9", "198.19.0.1", udp, 0, l4(1, 2, 10)), ipv4Frame("198.19.0.1", "198.18.1.9", udp, 0, l4(1, 2, 10))}},
		{"dst v6", Rule{Dst: pfx("2001:db8:1::/48"), Proto: AnyProto},
			[][]byte{ipv6Frame("2001:db8:2::1", "2001:db8:1::5", udp, -1, l4(1, 2, 10))},
			[][]byte{ipv6Frame("2001:db8:1::5", "2001:db8:2::1", udp, -1, l4(1, 2, 10)), ipv6Frame("2001:db8:2::1", "2001:db8:3::5", udp, -1, l4(1, 2, 10))}},
		{"proto", Rule{Proto: int(tcp)},
			[][]byte{ipv4Frame("198.18.0.1", "198.18.0.2", tcp, 0, l4(1, 2, 20)), ipv6Frame("2001:db8::1", "2001:db8::2", tcp, -1, l4(1, 2, 20))},
			[][]byte{ipv4Frame("198.18.0.1", "198.18.0.2", udp, 0, l4(1, 2, 20)), ipv6Frame("2001:db8::1", "2001:db8::2", udp, -1, l4(1, 2, 20))}},
		{"src port", Rule{Proto: int(udp), SrcPorts: []PortRange{{123, 123}}},
			[][]byte{ipv4Frame("198.18.0.1", "198.18.0.2", udp, 0, l4(123, 5000, 10)), ipv6Frame("2001:db8::1", "2001:db8::2", udp, -1, l4(123, 5000, 10))},
			[][]byte{ipv4Frame("198.18.0.1", "198.18.0.2", udp, 0, l4(5000, 123, 10)), ipv4Frame("198.18.0.1", "198.18.0.2", tcp, 0, l4(123, 5000, 20)), ipv6Frame("2001:db8::1", "2001:db8::2", udp, -1, l4(124, 5000, 10))}},
		{"dst port range", Rule{Proto: AnyProto, DstPorts: []PortRange{{1000, 1999}}},
			[][]byte{ipv4Frame("198.18.0.1", "198.18.0.2", udp, 0, l4(1, 1000, 10)), ipv4Frame("198.18.0.1", "198.18.0.2", tcp, 0, l4(1, 1999, 20)), ipv6Frame("2001:db8::1", "2001:db8::2", tcp, -1, l4(1, 1500, 20))},
			[][]byte{ipv4Frame("198.18.0.1", "198.18.0.2", udp, 0, l4(1, 999, 10)), ipv4Frame("198.18.0.1", "198.18.0.2", udp, 0, l4(1, 2000, 10)), ipv4Frame("198.18.0.1", "198.18.0.2", 1, 0, make([]byte, 8))}},
		// A later fragment has no ports: port conditions do not apply and
		// it is matched by its addresses and protocol.
		{"later fragments", Rule{Src: pfx("198.18.5.0/24", "2001:db8:5::/48"), Proto: int(udp), SrcPorts: []PortRange{{123, 123}}},
			[][]byte{ipv4Frame("198.18.5.1", "198.18.0.2", udp, 0, l4(123, 9, 10)), ipv4Frame("198.18.5.1", "198.18.0.2", udp, 100, make([]byte, 40)), ipv6Frame("2001:db8:5::1", "2001:db8::2", udp, 100, make([]byte, 40))},
			[][]byte{ipv4Frame("198.18.6.1", "198.18.0.2", udp, 100, make([]byte, 40)), ipv6Frame("2001:db8:6::1", "2001:db8::2", udp, 100, make([]byte, 40)), ipv4Frame("198.18.5.1", "198.18.0.2", udp, 0, l4(124, 9, 10))}},
	}
	for _, c := range cases {
		c.rule.Name, c.rule.Action = "r", ActionDrop
		if err := p.SetRules([]Rule{c.rule}); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for _, f := range c.drop {
			if got := runFrame(t, p.Prog(), f); got != xdpDrop {
				t.Errorf("%s: frame %x: verdict %d, want drop", c.name, f, got)
			}
		}
		for _, f := range c.pass {
			if got := runFrame(t, p.Prog(), f); got != xdpPass {
				t.Errorf("%s: frame %x: verdict %d, want pass", c.name, f, got)
			}
		}
	}
}

// TestFirstMatchWins: a pass rule before a drop rule covering the same
// packets lets them through; the order is the config order, not the
// prefix length.
func TestFirstMatchWins(t *testing.T) {
	p := loadProgram(t)
	rules := []Rule{
		{Name: "allow-host", Action: ActionPass, Src: pfx("198.18.0.7/32"), Proto: AnyProto},
		{Name: "drop-net", Action: ActionDrop, Src: pfx("198.18.0.0/16"), Proto: AnyProto},
		{Name: "allow-after", Action: ActionPass, Src: pfx("198.18.9.0/24"), Proto: AnyProto},
	}
	if err := p.SetRules(rules); err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]uint32{"198.18.0.7": xdpPass, "198.18.0.8": xdpDrop, "198.18.9.1": xdpDrop, "198.19.0.1": xdpPass} {
		if got := runFrame(t, p.Prog(), ipv4Frame(src, "198.19.9.9", 17, 0, l4(1, 2, 4))); got != want {
			t.Errorf("src %s: verdict %d, want %d", src, got, want)
		}
	}
}

// TestRandomRulesAgainstReference compiles random rule sets and checks
// the program's verdict on random packets against refMatch, which walks
// the rules one by one.
func TestRandomRulesAgainstReference(t *testing.T) {
	p := loadProgram(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for set := 0; set < 30; set++ {
		rules := randomRules(rng, 1+rng.IntN(MaxRules))
		if err := p.SetRules(rules); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 300; i++ {
			f := randomFrame(rng)
			ref := refParse(f)
			want := uint32(xdpPass)
			if ref.ok {
				if idx := refMatch(rules, ref); idx >= 0 && rules[idx].Action == ActionDrop {
					want = xdpDrop
				}
			}
			if got := runFrame(t, p.Prog(), f); got != want {
				t.Fatalf("set %d: frame %x: verdict %d, want %d (rule %d)", set, f, got, want, refMatch(rules, ref))
			}
		}
	}
}

// Addresses drawn from a few small pools so rules and packets meet.
var (
	pool4 = []string{"198.18.0.0", "198.18.1.0", "198.18.128.0", "198.19.255.0"}
	pool6 = []string{"2001:db8::", "2001:db8:1::", "2001:db8:ffff::", "2001:db8:0:1::"}
)

func randomAddr(rng *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		a := netip.MustParseAddr(pool6[rng.IntN(len(pool6))]).As16()
		a[15] = byte(rng.IntN(4))
		a[6] = byte(rng.IntN(2))
		return netip.AddrFrom16(a)
	}
	a := netip.MustParseAddr(pool4[rng.IntN(len(pool4))]).As4()
	a[3] = byte(rng.IntN(4))
	a[2] ^= byte(rng.IntN(2))
	return netip.AddrFrom4(a)
}

func randomPrefixes(rng *rand.Rand) []netip.Prefix {
	var out []netip.Prefix
	for range rng.IntN(3) {
		v6 := rng.IntN(2) == 0
		bits := rng.IntN(33)
		if v6 {
			bits = rng.IntN(129)
		}
		pf, _ := randomAddr(rng, v6).Prefix(bits)
		out = append(out, pf)
	}
	return out
}

func randomPorts(rng *rand.Rand) []PortRange {
	var out []PortRange
	for range rng.IntN(3) {
		lo := uint16(rng.IntN(8))
		out = append(out, PortRange{lo, lo + uint16(rng.IntN(3))})
	}
	return out
}

func randomRules(rng *rand.Rand, n int) []Rule {
	protos := []int{AnyProto, 6, 17, 1, 58}
	rules := make([]Rule, n)
	for i := range rules {
		r := Rule{Name: "r" + string(rune('A'+i%26)) + string(rune('a'+i/26)), Proto: protos[rng.IntN(len(protos))],
			Src: randomPrefixes(rng), Dst: randomPrefixes(rng)}
		if r.Proto == AnyProto || HasPorts(uint8(r.Proto)) {
			r.SrcPorts, r.DstPorts = randomPorts(rng), randomPorts(rng)
		}
		r.Action = []Action{ActionPass, ActionDrop}[rng.IntN(2)]
		rules[i] = r
	}
	return rules
}

func randomFrame(rng *rand.Rand) []byte {
	protos := []uint8{6, 17, 1, 58}
	proto := protos[rng.IntN(len(protos))]
	var payload []byte
	if HasPorts(proto) {
		payload = l4(uint16(rng.IntN(10)), uint16(rng.IntN(10)), 16)
	} else {
		payload = make([]byte, 8)
	}
	if rng.IntN(2) == 0 {
		frag := -1
		if rng.IntN(8) == 0 {
			frag = rng.IntN(3)
		}
		return ipv6Frame(randomAddr(rng, true).String(), randomAddr(rng, true).String(), proto, frag, payload)
	}
	frag := uint16(0)
	if rng.IntN(8) == 0 {
		frag = uint16(rng.IntN(3))
	}
	return ipv4Frame(randomAddr(rng, false).String(), randomAddr(rng, false).String(), proto, frag, payload)
}

// TestRateLimitKeys: a rate_limit bucket is per source /32 (IPv4) and
// /64 (IPv6), per rule. At 1 packet/s the first packet of a source
// passes and the next one within the second is dropped.
func TestRateLimitKeys(t *testing.T) {
	p := loadProgram(t)
	if err := p.SetRules([]Rule{{Name: "one-per-second", Action: ActionRateLimit, PPS: 1, Proto: AnyProto}}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		src  string
		want uint32
	}{
		{"2001:db8::1", xdpPass},
		{"2001:db8::2", xdpDrop},      // same /64
		{"2001:db8:0:1::1", xdpPass},  // another /64
		{"198.18.0.1", xdpPass},       // IPv4: per address
		{"198.18.0.2", xdpPass},       //
		{"198.18.0.1", xdpDrop},       // its second packet
		{"2001:db8:0:1::99", xdpDrop}, // the second /64's second packet
	}
	for _, s := range steps {
		var f []byte
		if netip.MustParseAddr(s.src).Is4() {
			f = ipv4Frame(s.src, "198.19.0.1", 17, 0, l4(1, 2, 4))
		} else {
			f = ipv6Frame(s.src, "2001:db8:ffff::1", 17, -1, l4(1, 2, 4))
		}
		if got := runFrame(t, p.Prog(), f); got != s.want {
			t.Errorf("source %s: verdict %d, want %d", s.src, got, s.want)
		}
	}
}

// TestRuleSwapIsAtomic alternates two rule sets while packets run. A
// packet from 198.18.0.1 to port 2000 passes under both (set X wants
// port 1000, set Y another source); only a packet that saw X's prefixes
// with Y's ports would be dropped. None may be.
func TestRuleSwapIsAtomic(t *testing.T) {
	p := loadProgram(t)
	x := []Rule{{Name: "a", Action: ActionDrop, Proto: 17, Src: pfx("198.18.0.1/32"), DstPorts: []PortRange{{1000, 1000}}}}
	y := []Rule{{Name: "a", Action: ActionDrop, Proto: 17, Src: pfx("198.18.0.2/32"), DstPorts: []PortRange{{2000, 2000}}}}
	frame := ipv4Frame("198.18.0.1", "198.19.0.1", 17, 0, l4(5, 2000, 8))
	stop := make(chan struct{})
	drops := make(chan int, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				drops <- n
				return
			default:
			}
			ret, err := p.Prog().Run(&ebpf.RunOptions{Data: frame, Repeat: 100})
			if err == nil && ret == xdpDrop {
				n++
			}
		}
	}()
	for i := 0; i < 200; i++ {
		rules := x
		if i%2 == 1 {
			rules = y
		}
		if err := p.SetRules(rules); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if n := <-drops; n != 0 {
		t.Errorf("%d test runs dropped a packet neither rule set drops", n)
	}
}
