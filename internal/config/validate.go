// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/enrich/bmp"
	"github.com/stepbrobd/rfm/internal/export/ipfix"
	"github.com/stepbrobd/rfm/internal/flow"
)

// Limits enforced by validation.
const (
	// MinRingBufSize is the smallest ring buffer the kernel takes: one
	// page (4096 bytes on x86-64; Validate checks the real page size).
	MinRingBufSize = 4096
	// MaxRingBufSize keeps the size within the kernel's u32 max_entries
	// as a power of two.
	MaxRingBufSize = 1 << 31
	// IPFIX messages go in one UDP datagram (ipfix.MinMessageSize).
	MinIPFIXMessageSize = ipfix.MinMessageSize
	MaxIPFIXMessageSize = ipfix.MaxMessageSize
	// MaxIPFIXCollectors bounds [[agent.ipfix.collectors]]: the datapath
	// excludes each exporter socket from sampling, and during a reload
	// the old and the new one (datapath.MaxExclude slots).
	MaxIPFIXCollectors = 8
	// BMP messages (bmp.MinMessageSize).
	MinBMPMessageSize = bmp.MinMessageSize
	MaxBMPMessageSize = bmp.MaxMessageSize
	// MaxLabelSets caps agent.prometheus.max_label_sets: six flow series
	// per label set, so a million sets is already far more than one
	// Prometheus target should expose.
	MaxLabelSets = 1000000
	// MinLabelSetExpiry keeps a label set alive over several scrapes: a
	// set that expires and returns restarts its counters from zero.
	MinLabelSetExpiry = time.Minute
	// maxIfNameLen is IFNAMSIZ - 1.
	maxIfNameLen = 15
)

// InterfaceLister lists the network interfaces of this machine; tests
// pass a fake one.
type InterfaceLister func() ([]net.Interface, error)

// SystemInterfaces lists this machine's interfaces with net.Interfaces.
func SystemInterfaces() ([]net.Interface, error) { return net.Interfaces() }

// Validate checks c against this machine, after repeating the value rules
// Parse applies (so hand-built configs get them too): the ring buffer is
// at least the system page size, every named interface exists (or "*"
// matches at least one non-loopback interface), and the MMDB files exist,
// are regular files and can be opened for reading. ifaces nil means
// SystemInterfaces. It returns the first problem as an *Error with an
// empty Source; LoadAndValidate fills in the path.
func Validate(c *Config, ifaces InterfaceLister) error {
	if e := validateValues(c); e != nil {
		return e
	}
	if pg := os.Getpagesize(); c.Agent.BPF.RingBufSize < pg {
		return keyError("agent.bpf.ring_buf_size", c.Agent.BPF.RingBufSize,
			"must be at least %d (the kernel page size on this system)", pg)
	}
	if _, err := ResolveInterfaces(c, ifaces); err != nil {
		return err
	}
	if e := checkXDPInterfacesExist(c, ifaces); e != nil {
		return e
	}
	return ValidateFiles(c)
}

// ValidateFiles checks that the files c names (MMDB databases, the web
// config) are regular files this process can read. A reload runs it
// instead of Validate: interfaces may come and go while the agent runs.
func ValidateFiles(c *Config) error {
	if e := checkReadableFile("agent.enrich.mmdb.asn_db", c.Agent.Enrich.MMDB.ASNDB); e != nil {
		return e
	}
	if e := checkReadableFile("agent.enrich.mmdb.city_db", c.Agent.Enrich.MMDB.CityDB); e != nil {
		return e
	}
	if e := checkReadableFile("agent.prometheus.web_config", c.Agent.Prometheus.WebConfig); e != nil {
		return e
	}
	return nil
}

// ResolveInterfaces returns the interfaces to attach to at start: for
// ["*"] every interface except loopback, in the order the system lists
// them; otherwise the named interfaces and those matching a pattern, in
// config order. A named interface that does not exist, or "*" matching
// nothing, is an error; a pattern matching nothing is not, since the
// agent attaches to matching interfaces as they appear. ifaces nil means
// SystemInterfaces.
func ResolveInterfaces(c *Config, ifaces InterfaceLister) ([]net.Interface, error) {
	const key = "agent.interfaces"
	names := c.Agent.Interfaces
	if e := checkInterfaceNames(names); e != nil {
		return nil, e
	}
	if ifaces == nil {
		ifaces = SystemInterfaces
	}
	all, err := ifaces()
	if err != nil {
		return nil, &Error{Key: key, Reason: "listing network interfaces: " + err.Error()}
	}
	sel := NewInterfaceSelector(names)
	if sel.all {
		var out []net.Interface
		for _, ifc := range all {
			if sel.Match(ifc.Name, ifc.Flags&net.FlagLoopback != 0) {
				out = append(out, ifc)
			}
		}
		if len(out) == 0 {
			return nil, keyError(key, names, "no non-loopback interfaces on this system")
		}
		return out, nil
	}
	byName := make(map[string]net.Interface, len(all))
	for _, ifc := range all {
		byName[ifc.Name] = ifc
	}
	out := make([]net.Interface, 0, len(names))
	taken := make(map[int]bool, len(names))
	for i, name := range names {
		if IsInterfacePattern(name) {
			for _, ifc := range all {
				if ok, _ := path.Match(name, ifc.Name); ok && !taken[ifc.Index] {
					taken[ifc.Index] = true
					out = append(out, ifc)
				}
			}
			continue
		}
		ifc, ok := byName[name]
		if !ok {
			return nil, keyError(fmt.Sprintf("%s[%d]", key, i), name, "no such interface on this system")
		}
		if !taken[ifc.Index] {
			taken[ifc.Index] = true
			out = append(out, ifc)
		}
	}
	return out, nil
}

// InterfaceSelector decides which interfaces agent.interfaces selects:
// "*" alone is every non-loopback interface; otherwise exact names and
// glob patterns (path.Match syntax: *, ?, [a-z]), where a pattern also
// selects loopback if its name matches.
type InterfaceSelector struct {
	all      bool
	names    map[string]bool
	patterns []string
}

// NewInterfaceSelector builds the selector for a validated interface
// list.
func NewInterfaceSelector(list []string) InterfaceSelector {
	if len(list) == 1 && list[0] == "*" {
		return InterfaceSelector{all: true}
	}
	s := InterfaceSelector{names: make(map[string]bool, len(list))}
	for _, name := range list {
		if IsInterfacePattern(name) {
			s.patterns = append(s.patterns, name)
		} else {
			s.names[name] = true
		}
	}
	return s
}

// Match reports whether the interface called name is selected.
func (s InterfaceSelector) Match(name string, loopback bool) bool {
	if s.all {
		return !loopback
	}
	if s.names[name] {
		return true
	}
	for _, p := range s.patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// Named lists the exact interface names (not patterns) selected; the
// agent re-attaches these when they come back after vanishing.
func (s InterfaceSelector) Named() []string {
	out := make([]string, 0, len(s.names))
	for n := range s.names {
		out = append(out, n)
	}
	return out
}

// IsInterfacePattern reports whether an agent.interfaces entry is a glob
// pattern rather than a name ("*" alone is also a pattern).
func IsInterfacePattern(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// validateValues applies every rule that needs only the config itself, in
// file order, and returns the first broken one.
func validateValues(c *Config) *Error {
	a := &c.Agent
	if e := checkInterfaceNames(a.Interfaces); e != nil {
		return e
	}

	if a.BPF.SampleRate == 0 {
		return keyError("agent.bpf.sample_rate", a.BPF.SampleRate, "must be greater than 0")
	}
	if e := checkRingBufSize(a.BPF.RingBufSize); e != nil {
		return e
	}
	if e := checkChoices("agent.bpf.directions", a.BPF.Directions, DefaultDirections, 1); e != nil {
		return e
	}
	if e := checkChoices("agent.bpf.fields", a.BPF.Fields, FieldNames, 0); e != nil {
		return e
	}
	if a.BPF.MaxInterfaces < 1 || a.BPF.MaxInterfaces > datapath.DefaultMaxInterfaces {
		return keyError("agent.bpf.max_interfaces", a.BPF.MaxInterfaces,
			"must be between 1 and %d", datapath.DefaultMaxInterfaces)
	}

	if a.Collector.MaxFlows < 0 || a.Collector.MaxFlows > flow.MaxFlowsCeiling {
		return keyError("agent.collector.max_flows", a.Collector.MaxFlows,
			"must be between 0 and %d (0 means %d, the most the flow table holds)", flow.MaxFlowsCeiling, flow.MaxFlowsCeiling)
	}
	if e := checkMinDuration("agent.collector.eviction_timeout", a.Collector.EvictionTimeout, time.Second); e != nil {
		return e
	}
	if e := checkMinDuration("agent.collector.active_timeout", a.Collector.ActiveTimeout, time.Second); e != nil {
		return e
	}

	ipfix := &a.IPFIX
	if e := checkEndpoint("agent.ipfix", ipfix.Host, ipfix.Port); e != nil {
		return e
	}
	if e := checkBind("agent.ipfix.bind", ipfix.Bind); e != nil {
		return e
	}
	if e := checkCollectors(ipfix); e != nil {
		return e
	}
	if ipfix.ObservationDomainID == 0 {
		return keyError("agent.ipfix.observation_domain_id", ipfix.ObservationDomainID, "must be greater than 0")
	}
	if e := checkMinDuration("agent.ipfix.template_refresh", ipfix.TemplateRefresh, time.Second); e != nil {
		return e
	}
	if n := ipfix.MaxMessageSize; n < MinIPFIXMessageSize || n > MaxIPFIXMessageSize {
		return keyError("agent.ipfix.max_message_size", n,
			"must be between %d and %d (the largest UDP payload over IPv4)", MinIPFIXMessageSize, MaxIPFIXMessageSize)
	}

	if e := checkIPLiteral("agent.prometheus.host", a.Prometheus.Host); e != nil {
		return e
	}
	if e := checkPort("agent.prometheus.port", a.Prometheus.Port, 1); e != nil {
		return e
	}
	if w := a.Prometheus.WebConfig; w != "" && !filepath.IsAbs(w) {
		return keyError("agent.prometheus.web_config", w, "must be an absolute path")
	}
	if n := a.Prometheus.MaxLabelSets; n < 1 || n > MaxLabelSets {
		return keyError("agent.prometheus.max_label_sets", n, "must be between 1 and %d", MaxLabelSets)
	}
	if e := checkMinDuration("agent.prometheus.label_set_expiry", a.Prometheus.LabelSetExpiry, MinLabelSetExpiry); e != nil {
		return e
	}

	bmp := &a.Enrich.RIB.BMP
	if e := checkEndpoint("agent.enrich.rib.bmp", bmp.Host, bmp.Port); e != nil {
		return e
	}
	if bmp.Keep.Duration < 0 {
		return keyError("agent.enrich.rib.bmp.keep", bmp.Keep, "must not be negative")
	}
	if _, e := bmp.AllowPrefixes(); e != nil {
		return e
	}
	if bmp.MaxSessions < 1 {
		return keyError("agent.enrich.rib.bmp.max_sessions", bmp.MaxSessions, "must be at least 1")
	}
	if n := bmp.MaxMessageSize; n < MinBMPMessageSize || n > MaxBMPMessageSize {
		return keyError("agent.enrich.rib.bmp.max_message_size", n,
			"must be between %d and %d", MinBMPMessageSize, MaxBMPMessageSize)
	}
	if _, e := bmp.LabelDistinguishers(); e != nil {
		return e
	}
	if bmp.MaxRoutesPerPeer < 0 {
		return keyError("agent.enrich.rib.bmp.max_routes_per_peer", bmp.MaxRoutesPerPeer, "must be 0 (no limit) or positive")
	}

	if sock := a.Control.Socket; sock != "" {
		switch {
		case !filepath.IsAbs(sock):
			return keyError("agent.control.socket", sock, `must be an absolute path such as "/run/rfm/rfm.sock", or "" to disable`)
		case len(sock) > maxSocketPathLen:
			return keyError("agent.control.socket", sock, "must be at most %d bytes (the kernel's limit for Unix socket paths)", maxSocketPathLen)
		}
	}
	return checkXDP(&a.XDP)
}

// maxSocketPathLen is sizeof(sun_path) - 1.
const maxSocketPathLen = 107

func checkInterfaceNames(names []string) *Error {
	const key = "agent.interfaces"
	if names == nil {
		return &Error{Key: key, Reason: `required: list interface names, or ["*"] for every non-loopback interface`}
	}
	if len(names) == 0 {
		return keyError(key, names, `must list at least one interface, or "*" for every non-loopback interface`)
	}
	seen := make(map[string]int, len(names))
	for i, name := range names {
		elemKey := fmt.Sprintf("%s[%d]", key, i)
		if name == "" {
			return keyError(elemKey, name, "interface name must not be empty")
		}
		if IsInterfacePattern(name) {
			if _, err := path.Match(name, ""); err != nil || strings.ContainsAny(name, "/: \t\n\v\f\r") {
				return keyError(elemKey, name,
					`not a valid interface pattern (glob syntax such as "veth*", "eth[0-9]" or "*"; no '/', ':' or whitespace)`)
			}
		} else if !validInterfaceName(name) {
			return keyError(elemKey, name,
				`not a valid interface name (at most %d bytes, not "." or "..", no '/', ':' or whitespace)`, maxIfNameLen)
		}
		if j, dup := seen[name]; dup {
			return keyError(elemKey, name, "duplicate of %s[%d]", key, j)
		}
		seen[name] = i
	}
	if _, wildcard := seen["*"]; wildcard && len(names) > 1 {
		return keyError(key, names, `"*" cannot be mixed with interface names or patterns`)
	}
	return nil
}

// validInterfaceName applies the kernel's rules for interface names
// (dev_valid_name): what it would refuse can never exist.
func validInterfaceName(name string) bool {
	if name == "" || len(name) > maxIfNameLen || name == "." || name == ".." {
		return false
	}
	return !strings.ContainsAny(name, "/: \t\n\v\f\r")
}

func checkRingBufSize(n int) *Error {
	const key = "agent.bpf.ring_buf_size"
	switch {
	case n <= 0:
		return keyError(key, n, "must be greater than 0")
	case n&(n-1) != 0:
		return keyError(key, n, "must be a power of two")
	case n < MinRingBufSize:
		return keyError(key, n, "must be at least %d (the kernel page size)", MinRingBufSize)
	case n > MaxRingBufSize:
		return keyError(key, n, "must be at most %d", MaxRingBufSize)
	}
	return nil
}

func checkMinDuration(key string, d Duration, min time.Duration) *Error {
	if d.Duration < min {
		return keyError(key, d, "must be at least %s", min)
	}
	return nil
}

func checkPort(key string, port, min int) *Error {
	if port < min || port > 65535 {
		return keyError(key, port, "must be between %d and 65535", min)
	}
	return nil
}

// checkEndpointPair catches a half-set host/port pair, which Parse never
// produces (it fills in the missing half) but a hand-built config can.
// checkEndpoint checks an endpoint that is off with host "" and port 0:
// otherwise both must be set, the host an address or name, the port valid.
func checkEndpoint(prefix, host string, port int) *Error {
	switch {
	case host != "" && port == 0:
		return keyError(prefix+".port", port, "must be set when %s.host is set", prefix)
	case host == "" && port != 0:
		return keyError(prefix+".host", host, "must be set when %s.port is set", prefix)
	case host == "":
		return nil
	}
	if e := checkHostOrName(prefix+".host", host); e != nil {
		return e
	}
	return checkPort(prefix+".port", port, 1)
}

func checkBind(prefix string, b Endpoint) *Error {
	if b.Host != "" {
		if e := checkIPLiteral(prefix+".host", b.Host); e != nil {
			return e
		}
	}
	return checkPort(prefix+".port", b.Port, 0)
}

// checkCollectors checks [[agent.ipfix.collectors]]: not mixed with the
// one-collector form, each a valid endpoint, no collector twice and no
// fixed source address and port shared by two.
func checkCollectors(ipfix *IPFIX) *Error {
	cols := ipfix.Collectors
	if len(cols) == 0 {
		return nil
	}
	if ipfix.Host != "" || ipfix.Port != 0 || ipfix.Bind != (Endpoint{}) {
		return keyError("agent.ipfix.collectors", nil,
			"cannot be used together with agent.ipfix.host, port or bind: list every collector, with its bind, in [[agent.ipfix.collectors]]")
	}
	if len(cols) > MaxIPFIXCollectors {
		return keyError("agent.ipfix.collectors", nil, "has %d collectors; at most %d are supported", len(cols), MaxIPFIXCollectors)
	}
	seen := map[string]int{}
	binds := map[Endpoint]int{}
	for i, c := range cols {
		prefix := fmt.Sprintf("agent.ipfix.collectors[%d]", i)
		if c.Host == "" && c.Port == 0 {
			return keyError(prefix+".host", c.Host, "must be set (or port): a collector needs an address")
		}
		if e := checkEndpoint(prefix, c.Host, c.Port); e != nil {
			return e
		}
		if e := checkBind(prefix+".bind", c.Bind); e != nil {
			return e
		}
		addr := c.Addr()
		if ip, ok := parseIPLiteral(c.Host); ok {
			addr = netip.AddrPortFrom(ip.Unmap(), uint16(c.Port)).String()
		}
		if j, dup := seen[addr]; dup {
			return keyError(prefix, c.Addr(), "is the same collector as agent.ipfix.collectors[%d]", j)
		}
		seen[addr] = i
		if c.Bind.Port != 0 {
			if j, dup := binds[c.Bind]; dup {
				return keyError(prefix+".bind", c.Bind.Addr(), "is also the bind of agent.ipfix.collectors[%d]; each collector needs its own source port", j)
			}
			binds[c.Bind] = i
		}
	}
	return nil
}

func checkIPLiteral(key, host string) *Error {
	if _, ok := parseIPLiteral(host); !ok {
		return keyError(key, host, `must be an IP address such as "::1" or "127.0.0.1"`)
	}
	return nil
}

func checkHostOrName(key, host string) *Error {
	if _, ok := parseIPLiteral(host); ok || validHostName(host) {
		return nil
	}
	return keyError(key, host, "must be an IP address or a host name")
}

// parseIPLiteral accepts an IP address, or an IPv6 address in brackets
// as written in URLs ("[2001:db8::1]").
func parseIPLiteral(s string) (netip.Addr, bool) {
	if inner, ok := bracketedIPv6(s); ok {
		s = inner
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil
}

// bracketedIPv6 returns the address inside "[...]" when it is IPv6.
func bracketedIPv6(s string) (string, bool) {
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return "", false
	}
	inner := s[1 : len(s)-1]
	a, err := netip.ParseAddr(inner)
	if err != nil || !a.Is6() {
		return "", false
	}
	return inner, true
}

// validHostName accepts DNS-style names: dot-separated labels of 1-63
// letters, digits, '-' or '_' (not starting or ending with '-'), 253
// bytes at most, optionally ending in a dot. An all-digit last label is
// refused so a mistyped IPv4 address ("192.0.2.300") is not taken for a
// name.
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			b := l[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

// checkReadableFile checks that path (when set) is a regular file this
// process can open. It stats before opening so a FIFO cannot block it.
func checkReadableFile(key, path string) *Error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return keyError(key, path, "%s", describeFileError(err))
	}
	if !fi.Mode().IsRegular() {
		return keyError(key, path, "not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return keyError(key, path, "cannot open: %s", describeFileError(err))
	}
	f.Close()
	return nil
}

// checkChoices checks a list key whose entries come from allowed, each
// at most once, with at least minLen entries.
func checkChoices(key string, list, allowed []string, minLen int) *Error {
	if len(list) < minLen {
		return keyError(key, list, "must list at least %d of %s", minLen, formatValue(allowed))
	}
	for i, v := range list {
		elemKey := fmt.Sprintf("%s[%d]", key, i)
		if !slices.Contains(allowed, v) {
			return keyError(elemKey, v, "must be one of %s", formatValue(allowed))
		}
		if j := slices.Index(list, v); j < i {
			return keyError(elemKey, v, "duplicate of %s[%d]", key, j)
		}
	}
	return nil
}
