// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Action is what a rule does with the packets it matches.
type Action uint32

// Values match XDP_ACT_* of bpf/xdp.c.
const (
	ActionPass      Action = 0
	ActionDrop      Action = 1
	ActionRateLimit Action = 2
)

func (a Action) String() string {
	switch a {
	case ActionDrop:
		return "drop"
	case ActionRateLimit:
		return "rate_limit"
	}
	return "pass"
}

// ParseAction reads "drop", "pass" or "rate_limit".
func ParseAction(s string) (Action, error) {
	switch s {
	case "pass":
		return ActionPass, nil
	case "drop":
		return ActionDrop, nil
	case "rate_limit":
		return ActionRateLimit, nil
	}
	return 0, fmt.Errorf("%q: want drop, pass or rate_limit", s)
}

// Limits of a rule set, fixed by the maps of bpf/xdp.c.
const (
	// MaxRules is how many rules a set holds: one bit each in the masks.
	MaxRules = 64
	// MaxPrefixesPerRule bounds src and dst of one rule, each.
	MaxPrefixesPerRule = 1024
	// MaxPrefixes bounds the distinct prefixes of a rule set (sources and
	// destinations, both families); two sets share a trie of 65536.
	MaxPrefixes = 16384
	// MaxPortRangesPerRule bounds src_ports and dst_ports of one rule, each.
	MaxPortRangesPerRule = 64
	// MaxPPS bounds a rate_limit rule's packets per second.
	MaxPPS = 1_000_000_000
)

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// ParsePortRange reads "123" or "1024-65535".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("%q: want a port 0..65535 or a range lo-hi", s)
	}
	if a > b {
		return PortRange{}, fmt.Errorf("%q: range starts after it ends", s)
	}
	return PortRange{uint16(a), uint16(b)}, nil
}

// protoNames are the protocol names a rule may use besides numbers.
var protoNames = map[string]uint8{
	"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
	"icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "udplite": 136,
}

// ParseProto reads a protocol name (tcp, udp, icmp, icmpv6, …) or a
// number 0..255.
func ParseProto(s string) (uint8, error) {
	if p, ok := protoNames[strings.ToLower(s)]; ok {
		return p, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("%q: want a protocol name (tcp, udp, icmp, icmpv6, sctp, …) or a number 0..255", s)
	}
	return uint8(n), nil
}

// HasPorts says whether packets of proto carry ports the program reads.
func HasPorts(proto uint8) bool { return proto == 6 || proto == 17 || proto == 132 || proto == 136 }

// Rule is one entry of the ordered rule set. Empty fields match
// anything; a packet matches when every set field matches.
type Rule struct {
	Name     string
	Action   Action
	Src, Dst []netip.Prefix
	// Proto is the IP protocol (after IPv6 extension headers); AnyProto
	// matches every protocol.
	Proto              int
	SrcPorts, DstPorts []PortRange
	// PPS is the rate a rate_limit rule lets through per source /32
	// (IPv4) or /64 (IPv6); the excess is dropped.
	PPS uint64
}

// AnyProto in Rule.Proto matches every protocol.
const AnyProto = -1

// Check returns the first thing wrong with the rule set, naming the
// rule and the field.
func Check(rules []Rule) error {
	if len(rules) > MaxRules {
		return fmt.Errorf("%d rules: at most %d", len(rules), MaxRules)
	}
	names := map[string]bool{}
	total := 0
	for i, r := range rules {
		where := fmt.Sprintf("rule %d (%q)", i+1, r.Name)
		if r.Name == "" {
			return fmt.Errorf("rule %d: name missing", i+1)
		}
		if r.Name == RowBlocklist || r.Name == RowBlackhole {
			return fmt.Errorf("%s: name %q is reserved for the blocklist counters", where, r.Name)
		}
		if names[r.Name] {
			return fmt.Errorf("%s: name used twice", where)
		}
		names[r.Name] = true
		if len(r.Src) > MaxPrefixesPerRule || len(r.Dst) > MaxPrefixesPerRule {
			return fmt.Errorf("%s: more than %d prefixes in src or dst", where, MaxPrefixesPerRule)
		}
		total += len(r.Src) + len(r.Dst)
		if len(r.SrcPorts) > MaxPortRangesPerRule || len(r.DstPorts) > MaxPortRangesPerRule {
			return fmt.Errorf("%s: more than %d port ranges in src_ports or dst_ports", where, MaxPortRangesPerRule)
		}
		if r.Proto > 255 || r.Proto < AnyProto {
			return fmt.Errorf("%s: proto %d: want 0..255", where, r.Proto)
		}
		if (len(r.SrcPorts) > 0 || len(r.DstPorts) > 0) && r.Proto != AnyProto && !HasPorts(uint8(r.Proto)) {
			return fmt.Errorf("%s: ports given but protocol %d has none (want tcp, udp, sctp or udplite)", where, r.Proto)
		}
		switch r.Action {
		case ActionRateLimit:
			if r.PPS == 0 || r.PPS > MaxPPS {
				return fmt.Errorf("%s: pps %d: a rate_limit rule needs 1..%d", where, r.PPS, MaxPPS)
			}
		case ActionPass, ActionDrop:
			if r.PPS != 0 {
				return fmt.Errorf("%s: pps is for rate_limit rules only", where)
			}
		default:
			return fmt.Errorf("%s: action %d unknown", where, r.Action)
		}
		for _, p := range slices.Concat(r.Src, r.Dst) {
			if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				return fmt.Errorf("%s: prefix %s: want an IPv4 or IPv6 prefix", where, p)
			}
		}
	}
	if total > MaxPrefixes {
		return fmt.Errorf("%d prefixes in all rules: at most %d", total, MaxPrefixes)
	}
	return nil
}

// Row names of the counters that are not rules.
const (
	RowBlocklist = "blocklist"
	RowBlackhole = "blackhole"
)

// compiled is a rule set as the maps of bpf/xdp.c hold it.
type compiled struct {
	gen      rawGen
	rules    [MaxRules]rawRule
	ports    [2][65536]uint64 // by side: 0 source, 1 destination
	prefixes map[rawRuleKey]uint64
	block16  [2][65536]rawBlock16 // IPv4 by side and /16 (xdp_pfx16)
}

// Mirrors struct xdp_block16.
type rawBlock16 struct {
	Full, Part uint64
}

// Mirrors struct xdp_gen.
type rawGen struct {
	Valid, SrcAny, DstAny, SportAny, DportAny uint64
	Drop, RateLimit                           uint64    // the rules by action
	Pfx4, Pfx6                                [2]uint64 // rules with IPv4 / IPv6 prefixes, by side
	Proto                                     [256]uint64
}

// Mirrors struct xdp_rule.
type rawRule struct {
	Action  uint32
	Pad     uint32
	CostNs  uint64
	BurstNs uint64
}

// Mirrors struct xdp_rule_key.
type rawRuleKey struct {
	Prefixlen uint32
	Gen       uint8
	Side      uint8
	Fam       uint8
	Pad       uint8
	Addr      [16]byte
}

const (
	famIPv4 = 1
	famIPv6 = 2
)

// burstTime is how far ahead of now a source's bucket may run: a source
// idle for a while may send this long's worth of packets at once.
const burstTime = 100_000_000 // ns

// compile turns rules (already Checked) into the tables of generation
// gen: per field, the set of rules that field allows.
func compile(rules []Rule, gen uint8) *compiled {
	c := &compiled{prefixes: map[rawRuleKey]uint64{}}
	for i, r := range rules {
		bit := uint64(1) << i
		c.gen.Valid |= bit
		c.rules[i] = rawRule{Action: uint32(r.Action)}
		switch r.Action {
		case ActionDrop:
			c.gen.Drop |= bit
		case ActionRateLimit:
			c.gen.RateLimit |= bit
		}
		if r.Action == ActionRateLimit {
			cost := uint64(1e9) / r.PPS
			c.rules[i].CostNs = max(cost, 1)
			c.rules[i].BurstNs = max(c.rules[i].CostNs, burstTime)
		}
		for p := range c.gen.Proto {
			if r.Proto == AnyProto || r.Proto == p {
				c.gen.Proto[p] |= bit
			}
		}
		for side, ranges := range [2][]PortRange{r.SrcPorts, r.DstPorts} {
			if len(ranges) == 0 {
				if side == 0 {
					c.gen.SportAny |= bit
				} else {
					c.gen.DportAny |= bit
				}
				for p := range c.ports[side] {
					c.ports[side][p] |= bit
				}
				continue
			}
			for _, pr := range ranges {
				for p := int(pr.Lo); p <= int(pr.Hi); p++ {
					c.ports[side][p] |= bit
				}
			}
		}
		if len(r.Src) == 0 {
			c.gen.SrcAny |= bit
		}
		if len(r.Dst) == 0 {
			c.gen.DstAny |= bit
		}
		for side, list := range [2][]netip.Prefix{r.Src, r.Dst} {
			for _, p := range list {
				if p.Addr().Is4() {
					c.gen.Pfx4[side] |= bit
				} else {
					c.gen.Pfx6[side] |= bit
				}
			}
		}
	}
	// Each prefix's entry holds its own rules and those of every prefix
	// covering it: the trie answers with the longest match only.
	for side := uint8(0); side < 2; side++ {
		own := map[netip.Prefix]uint64{}
		for i, r := range rules {
			list := r.Src
			if side == 1 {
				list = r.Dst
			}
			for _, p := range list {
				own[p.Masked()] |= uint64(1) << i
			}
		}
		for p, bits := range own {
			var all uint64
			for b := 0; b <= p.Bits(); b++ {
				anc, _ := p.Addr().Prefix(b)
				all |= own[anc]
			}
			c.prefixes[ruleKey(gen, side, p)] = all
			if !p.Addr().Is4() {
				continue
			}
			// The /16 blocks: a prefix of /16 or shorter covers
			// 2^(16-len) of them whole (distinct prefixes of one length
			// cover distinct blocks, so this stays under 17 * 65536
			// steps); a longer one is part of one block.
			a := p.Addr().As4()
			first := int(a[0])<<8 | int(a[1])
			if p.Bits() <= 16 {
				for blk := first; blk < first+1<<(16-p.Bits()); blk++ {
					c.block16[side][blk].Full |= bits
				}
			} else {
				c.block16[side][first].Part |= bits
			}
		}
	}
	return c
}

func ruleKey(gen, side uint8, p netip.Prefix) rawRuleKey {
	k := rawRuleKey{Gen: gen, Side: side}
	if p.Addr().Is4() {
		k.Fam = famIPv4
		a := p.Addr().As4()
		copy(k.Addr[:], a[:])
	} else {
		k.Fam = famIPv6
		k.Addr = p.Addr().As16()
	}
	k.Prefixlen = 32 + uint32(p.Bits())
	return k
}
