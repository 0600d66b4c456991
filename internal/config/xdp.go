// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/stepbrobd/rfm/internal/datapath/xdp"
)

// XDP is [agent.xdp], the XDP fast path: a stateless firewall, a live
// blocklist and local blackholing on the interfaces listed.
type XDP struct {
	// Interfaces are names and glob patterns as in agent.interfaces;
	// empty turns XDP off.
	Interfaces []string `toml:"interfaces"`
	// Mode is "native", "generic" or "auto" (native, else generic).
	Mode string `toml:"mode"`
	// BlackholeFromRIB drops traffic to prefixes the BMP RIB carries
	// with the BLACKHOLE community (RFC 7999, 65535:666).
	BlackholeFromRIB bool `toml:"blackhole_from_rib"`
	// StateFile is where the live blocklist persists across restarts.
	StateFile string `toml:"state_file"`
	// Rules are evaluated in order; the first match wins, no match passes.
	Rules []XDPRule `toml:"rules"`
}

// Enabled reports whether XDP is configured on any interface.
func (c XDP) Enabled() bool { return len(c.Interfaces) > 0 }

// XDPRule is one [[agent.xdp.rules]] entry.
type XDPRule struct {
	Name     string   `toml:"name"`
	Action   string   `toml:"action"`
	Src      []string `toml:"src"`
	Dst      []string `toml:"dst"`
	Proto    Proto    `toml:"proto"`
	SrcPorts []string `toml:"src_ports"`
	DstPorts []string `toml:"dst_ports"`
	PPS      int      `toml:"pps"`
}

// Proto is a protocol written as a name ("udp") or a number (17, or
// "17"); empty matches every protocol.
type Proto struct{ Text string }

// UnmarshalTOML takes a string or an integer.
func (p *Proto) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		p.Text = x
	case int64:
		p.Text = strconv.FormatInt(x, 10)
	default:
		return fmt.Errorf("proto: want a name or a number")
	}
	return nil
}

// MarshalText writes the protocol as it was given.
func (p Proto) MarshalText() ([]byte, error) { return []byte(p.Text), nil }

// Defaults of [agent.xdp], owned by the xdp package.
var (
	DefaultXDPMode      = xdp.DefaultMode.String()
	DefaultXDPStateFile = xdp.DefaultStateFile
)

// XDPRules turns the rules into what the xdp package loads, checking each
// field; the error names the rule's key.
func (c XDP) XDPRules() ([]xdp.Rule, *Error) {
	out := make([]xdp.Rule, 0, len(c.Rules))
	names := map[string]int{}
	for i, r := range c.Rules {
		key := fmt.Sprintf("agent.xdp.rules[%d]", i)
		if r.Name == "" {
			return nil, &Error{Key: key + ".name", Reason: "required: a name for the rule's counters"}
		}
		if r.Name == xdp.RowBlocklist || r.Name == xdp.RowBlackhole {
			return nil, keyError(key+".name", r.Name, "reserved for the counters of the blocklist and the blackhole list")
		}
		if j, dup := names[r.Name]; dup {
			return nil, keyError(key+".name", r.Name, "duplicate of agent.xdp.rules[%d].name", j)
		}
		names[r.Name] = i
		rule := xdp.Rule{Name: r.Name, Proto: xdp.AnyProto, PPS: uint64(max(r.PPS, 0))}
		if r.Action == "" {
			return nil, &Error{Key: key + ".action", Reason: `required: "drop", "pass" or "rate_limit"`}
		}
		a, err := xdp.ParseAction(r.Action)
		if err != nil {
			return nil, keyError(key+".action", r.Action, `must be "drop", "pass" or "rate_limit"`)
		}
		rule.Action = a
		for _, side := range []struct {
			name string
			in   []string
			out  *[]netip.Prefix
		}{{"src", r.Src, &rule.Src}, {"dst", r.Dst, &rule.Dst}} {
			if len(side.in) > xdp.MaxPrefixesPerRule {
				return nil, keyError(key+"."+side.name, fmt.Sprintf("%d prefixes", len(side.in)), "at most %d prefixes per rule", xdp.MaxPrefixesPerRule)
			}
			for j, s := range side.in {
				p, e := parseRulePrefix(fmt.Sprintf("%s.%s[%d]", key, side.name, j), s)
				if e != nil {
					return nil, e
				}
				*side.out = append(*side.out, p)
			}
		}
		if r.Proto.Text != "" {
			p, err := xdp.ParseProto(r.Proto.Text)
			if err != nil {
				return nil, keyError(key+".proto", r.Proto.Text, "must be a protocol name (tcp, udp, icmp, icmpv6, sctp, …) or a number 0..255")
			}
			rule.Proto = int(p)
		}
		for _, side := range []struct {
			name string
			in   []string
			out  *[]xdp.PortRange
		}{{"src_ports", r.SrcPorts, &rule.SrcPorts}, {"dst_ports", r.DstPorts, &rule.DstPorts}} {
			if len(side.in) > xdp.MaxPortRangesPerRule {
				return nil, keyError(key+"."+side.name, fmt.Sprintf("%d ranges", len(side.in)), "at most %d ports or ranges per rule", xdp.MaxPortRangesPerRule)
			}
			for j, s := range side.in {
				pr, err := xdp.ParsePortRange(s)
				if err != nil {
					return nil, keyError(fmt.Sprintf("%s.%s[%d]", key, side.name, j), s, `must be a port 0..65535 or a range "lo-hi" with lo <= hi`)
				}
				*side.out = append(*side.out, pr)
			}
			if len(side.in) > 0 && rule.Proto != xdp.AnyProto && !xdp.HasPorts(uint8(rule.Proto)) {
				return nil, keyError(key+"."+side.name, side.in, "protocol %q has no ports (ports go with tcp, udp, sctp or udplite)", r.Proto.Text)
			}
		}
		switch {
		case a == xdp.ActionRateLimit && (r.PPS < 1 || r.PPS > xdp.MaxPPS):
			return nil, keyError(key+".pps", r.PPS, "a rate_limit rule needs pps between 1 and %d", xdp.MaxPPS)
		case a != xdp.ActionRateLimit && r.PPS != 0:
			return nil, keyError(key+".pps", r.PPS, "only rate_limit rules take pps (leave it out or 0)")
		}
		out = append(out, rule)
	}
	if len(out) > xdp.MaxRules {
		return nil, keyError("agent.xdp.rules", fmt.Sprintf("%d rules", len(out)), "at most %d rules", xdp.MaxRules)
	}
	if err := xdp.Check(out); err != nil {
		return nil, &Error{Key: "agent.xdp.rules", Reason: err.Error()}
	}
	return out, nil
}

func parseRulePrefix(key, s string) (netip.Prefix, *Error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, keyError(key, s, `must be an IP prefix such as "198.18.0.0/15" or an address`)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, keyError(key, s, "write IPv4 prefixes as IPv4, not IPv4-mapped IPv6")
	}
	if p != p.Masked() {
		return netip.Prefix{}, keyError(key, s, "has bits set past the prefix length (did you mean %s?)", p.Masked())
	}
	return p, nil
}

// XDPMode is the parsed mode; the value has been validated.
func (c XDP) XDPMode() xdp.Mode {
	m, _ := xdp.ParseMode(c.Mode)
	return m
}

func checkXDP(c *XDP) *Error {
	if e := checkXDPInterfaceNames(c.Interfaces); e != nil {
		return e
	}
	if _, err := xdp.ParseMode(c.Mode); err != nil {
		return keyError("agent.xdp.mode", c.Mode, `must be "auto", "native" or "generic"`)
	}
	if c.StateFile == "" || !filepath.IsAbs(c.StateFile) {
		return keyError("agent.xdp.state_file", c.StateFile, "must be an absolute path")
	}
	_, e := c.XDPRules()
	return e
}

// checkXDPInterfaceNames applies agent.interfaces' rules to
// agent.xdp.interfaces, where an empty list is allowed (XDP off).
func checkXDPInterfaceNames(names []string) *Error {
	if len(names) == 0 {
		return nil
	}
	if e := checkInterfaceNames(names); e != nil {
		e.Key = strings.Replace(e.Key, "agent.interfaces", "agent.xdp.interfaces", 1)
		e.Reason = strings.ReplaceAll(e.Reason, "agent.interfaces", "agent.xdp.interfaces")
		return e
	}
	return nil
}

// traffic describes packets the agent or the router depends on, as they
// arrive on an XDP interface; zero fields mean "any".
type traffic struct {
	what    string
	proto   uint8
	src     []netip.Prefix // nil: from anywhere
	dst     netip.Addr     // invalid: any local address
	srcPort uint16
	dstPort uint16
}

// couldMatch reports whether r could match some packet of t.
func (t traffic) couldMatch(r xdp.Rule) bool {
	if r.Proto != xdp.AnyProto && uint8(r.Proto) != t.proto {
		return false
	}
	overlaps := func(list []netip.Prefix, with []netip.Prefix) bool {
		if len(list) == 0 || with == nil {
			return true
		}
		for _, a := range list {
			for _, b := range with {
				if a.Overlaps(b) {
					return true
				}
			}
		}
		return false
	}
	if !overlaps(r.Src, t.src) {
		return false
	}
	if t.dst.IsValid() && !overlaps(r.Dst, []netip.Prefix{netip.PrefixFrom(t.dst, t.dst.BitLen())}) {
		return false
	}
	// A port left 0 is the other end's ephemeral port: Linux's default
	// range, 32768-60999.
	inPorts := func(list []xdp.PortRange, port uint16) bool {
		if len(list) == 0 {
			return true
		}
		lo, hi := port, port
		if port == 0 {
			lo, hi = 32768, 60999
		}
		for _, pr := range list {
			if pr.Lo <= hi && lo <= pr.Hi {
				return true
			}
		}
		return false
	}
	return inPorts(r.SrcPorts, t.srcPort) && inPorts(r.DstPorts, t.dstPort)
}

// XDPWarnings lists the rules that could drop traffic the agent itself
// or the router's control plane depends on: BMP sessions from routers,
// Prometheus scrapes, what the IPFIX collector sends back (ICMP errors),
// and BGP. A pass rule earlier in the list is not taken into account:
// the warning says "could". One line per rule and traffic.
func XDPWarnings(c *Config) []string {
	x := c.Agent.XDP
	if !x.Enabled() {
		return nil
	}
	rules, e := x.XDPRules()
	if e != nil {
		return nil
	}
	var ts []traffic
	a := &c.Agent
	if b := a.Enrich.RIB.BMP; b.Enabled() {
		allow, _ := b.AllowPrefixes()
		host, _ := netip.ParseAddr(b.Host)
		if host.IsUnspecified() {
			host = netip.Addr{}
		}
		ts = append(ts, traffic{what: fmt.Sprintf("BMP sessions to port %d", b.Port), proto: 6, src: allow, dst: host, dstPort: uint16(b.Port)})
	}
	if host, err := netip.ParseAddr(a.Prometheus.Host); err != nil || !host.IsLoopback() {
		if host.IsUnspecified() {
			host = netip.Addr{}
		}
		ts = append(ts, traffic{what: fmt.Sprintf("Prometheus scrapes to port %d", a.Prometheus.Port), proto: 6, dst: host, dstPort: uint16(a.Prometheus.Port)})
	}
	for _, c := range a.IPFIX.Targets() {
		if coll, err := netip.ParseAddr(c.Host); err == nil && !coll.IsLoopback() {
			pf := []netip.Prefix{netip.PrefixFrom(coll, coll.BitLen())}
			proto, name := uint8(1), "ICMP"
			if coll.Is6() {
				proto, name = 58, "ICMPv6"
			}
			ts = append(ts, traffic{what: fmt.Sprintf("%s errors from the IPFIX collector %s", name, coll), proto: proto, src: pf})
		}
	}
	ts = append(ts, traffic{what: "BGP sessions (TCP port 179)", proto: 6, dstPort: 179},
		traffic{what: "BGP sessions (TCP port 179)", proto: 6, srcPort: 179})
	var out []string
	seen := map[string]bool{}
	for i, r := range rules {
		if r.Action == xdp.ActionPass {
			continue
		}
		for _, t := range ts {
			if !t.couldMatch(r) {
				continue
			}
			w := fmt.Sprintf("agent.xdp.rules[%d] (%q, %s) could drop %s", i, r.Name, r.Action, t.what)
			if !seen[w] {
				seen[w] = true
				out = append(out, w)
			}
		}
	}
	return out
}

// checkXDPInterfacesExist requires every interface agent.xdp.interfaces
// names (not patterns) to exist, as agent.interfaces does.
func checkXDPInterfacesExist(c *Config, ifaces InterfaceLister) *Error {
	names := c.Agent.XDP.Interfaces
	if len(names) == 0 {
		return nil
	}
	if ifaces == nil {
		ifaces = SystemInterfaces
	}
	all, err := ifaces()
	if err != nil {
		return &Error{Key: "agent.xdp.interfaces", Reason: "listing network interfaces: " + err.Error()}
	}
	for i, name := range names {
		if IsInterfacePattern(name) || slices.ContainsFunc(all, func(ifc net.Interface) bool { return ifc.Name == name }) {
			continue
		}
		return keyError(fmt.Sprintf("agent.xdp.interfaces[%d]", i), name, "no such interface on this system")
	}
	return nil
}
