// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/enrich/bmp"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/internal/export/ipfix"
	"github.com/stepbrobd/rfm/internal/flow"
)

// Defaults of the keys config owns. A key whose stage package has its
// own default (which it also applies to a zero field) gets that
// package's constant in applyDefaults, so the two cannot drift apart.
const (
	DefaultSampleRate    = 100
	DefaultRingBufSize   = 262144
	DefaultMaxFlows      = 65536
	DefaultControlSocket = "/run/rfm/rfm.sock"
)

// Default endpoints: the half of an endpoint the file leaves out when
// it sets the other (see defaultEndpoint).
const (
	DefaultIPFIXHost, DefaultIPFIXPort           = "::1", 4739
	DefaultPrometheusHost, DefaultPrometheusPort = "::1", 9669
	DefaultBMPHost, DefaultBMPPort               = "::1", 11019
)

// DefaultDirections samples at both hooks: a forwarded packet is reported
// at the interface it came in on and at the one it left by.
var DefaultDirections = []string{"ingress", "egress"}

// FieldNames are the values agent.bpf.fields takes.
var FieldNames = []string{"tcp_flags", "dscp", "icmp", "ttl", "vlan"}

// Load reads and parses the config file at path. See Parse for what is
// checked; Validate (or LoadAndValidate) adds the checks against this
// machine.
func Load(path string) (*Config, error) { return load(path, true) }

// LoadOffline is Load without the ownership check, for validating a
// file that will be installed elsewhere (a Nix build sandbox shows
// root-owned store files as owned by nobody).
func LoadOffline(path string) (*Config, error) { return load(path, false) }

func load(path string, checkOwner bool) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{Source: path, Reason: "cannot read: " + describeFileError(err)}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, &Error{Source: path, Reason: "cannot read: " + describeFileError(err)}
	}
	if !fi.Mode().IsRegular() {
		return nil, &Error{Source: path, Reason: "not a regular file"}
	}
	if reason := unsafeOwnership(fi); checkOwner && reason != "" {
		return nil, &Error{Source: path, Reason: reason}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, &Error{Source: path, Reason: "cannot read: " + describeFileError(err)}
	}
	if len(data) > maxConfigSize {
		return nil, &Error{Source: path, Reason: fmt.Sprintf("larger than %d bytes; not a config file", maxConfigSize)}
	}
	return Parse(data, path)
}

// maxConfigSize bounds what Load reads, so a wrong path (a device, a
// huge log) fails fast instead of filling memory.
const maxConfigSize = 1 << 20

// unsafeOwnership refuses a config file that someone other than its
// owner could have written: the agent runs with CAP_BPF and
// CAP_NET_ADMIN, and the file decides where it attaches and exports.
// The owner must be root, this process's user, or, under sudo, the user
// who ran sudo (who could write anything as root anyway; this keeps
// `sudo ./rfm agent -c examples/rfm.toml` in a clone working). It
// returns "" when the file is safe.
func unsafeOwnership(fi fs.FileInfo) string {
	if perm := fi.Mode().Perm(); perm&0o002 != 0 {
		return fmt.Sprintf("writable by every user (mode %04o); run chmod o-w on it", perm)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	euid := uint32(os.Geteuid())
	if st.Uid == 0 || st.Uid == euid {
		return ""
	}
	if sudoUID, err := strconv.ParseUint(os.Getenv("SUDO_UID"), 10, 32); err == nil && euid == 0 && uint32(sudoUID) == st.Uid {
		return ""
	}
	return fmt.Sprintf("owned by uid %d, neither root nor this process (uid %d)", st.Uid, euid)
}

// LoadAndValidate is what the agent and `rfm config check` run before
// touching the kernel: Load, then Validate against this machine's
// interfaces (ifaces, nil for the system's) and files. Every error names
// path.
func LoadAndValidate(path string, ifaces InterfaceLister) (*Config, error) {
	c, err := Load(path)
	if err != nil {
		return nil, err
	}
	if err := Validate(c, ifaces); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Source = path
		}
		return nil, err
	}
	return c, nil
}

// Parse decodes a config from data; source names it in errors (usually
// the file path). It rejects TOML syntax errors, unknown keys, values of
// the wrong type and values that break a rule, fills in the defaults and
// returns the effective config. It does not look at the machine (network
// interfaces, MMDB files): that is Validate's job. Every error is an
// *Error.
func Parse(data []byte, source string) (*Config, error) {
	c, e := parse(data)
	if e != nil {
		e.Source = source
		return nil, e
	}
	return c, nil
}

func parse(data []byte) (*Config, *Error) {
	// Decode into a generic map first: that separates syntax errors from
	// schema errors, and lets the schema walk below report unknown keys
	// and wrong types in document order (the struct decoder walks Go maps,
	// so its first error would be random) and with exact key case (the
	// struct decoder matches keys case-insensitively).
	var raw map[string]any
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw)
	if err != nil {
		return nil, syntaxError(err)
	}
	if e := checkTable(configSchema, nil, raw, keyOrder(md.Keys())); e != nil {
		return nil, e
	}
	var c Config
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&c); err != nil {
		// The walk accepted the document, so this means the walk and the
		// struct disagree: report it rather than panic.
		return nil, &Error{Reason: "decoding: " + err.Error()}
	}
	applyDefaults(&c, &md)
	normalize(&c)
	if e := validateValues(&c); e != nil {
		return nil, e
	}
	return &c, nil
}

func syntaxError(err error) *Error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		// The parser's column is unreliable (an error at the end of a line
		// is placed on the next one), so only the line is reported.
		return &Error{Line: pe.Position.Line, Reason: pe.Message}
	}
	return &Error{Reason: err.Error()}
}

// describeFileError turns a file error into a short reason without
// repeating the path, which the message already names.
func describeFileError(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// applyDefaults fills in every key the file left out. Keys are "left
// out" when absent (md.IsDefined), so an explicit 0 stays 0 and is then
// accepted (max_flows = 0 means the ceiling) or rejected by validation.
// The IPFIX and BMP endpoints follow the spec instead: host "" and port 0
// are their documented defaults and mean "unset", both unset disables the
// feature, and one set fills in the other.
func applyDefaults(c *Config, md *toml.MetaData) {
	a := &c.Agent

	fillDefault(md, "bpf.sample_rate", &a.BPF.SampleRate, DefaultSampleRate)
	fillDefault(md, "bpf.ring_buf_size", &a.BPF.RingBufSize, DefaultRingBufSize)
	fillDefault(md, "bpf.directions", &a.BPF.Directions, slices.Clone(DefaultDirections))
	fillDefault(md, "bpf.max_interfaces", &a.BPF.MaxInterfaces, datapath.DefaultMaxInterfaces)
	fillDefault(md, "collector.max_flows", &a.Collector.MaxFlows, DefaultMaxFlows)
	fillDefault(md, "collector.eviction_timeout", &a.Collector.EvictionTimeout.Duration, flow.DefaultIdleTimeout)
	fillDefault(md, "collector.active_timeout", &a.Collector.ActiveTimeout.Duration, flow.DefaultActiveTimeout)

	defaultEndpoint(&a.IPFIX.Host, &a.IPFIX.Port, DefaultIPFIXHost, DefaultIPFIXPort)
	for i := range a.IPFIX.Collectors {
		col := &a.IPFIX.Collectors[i]
		defaultEndpoint(&col.Host, &col.Port, DefaultIPFIXHost, DefaultIPFIXPort)
	}
	fillDefault(md, "ipfix.observation_domain_id", &a.IPFIX.ObservationDomainID, ipfix.DefaultObservationDomainID)
	fillDefault(md, "ipfix.template_refresh", &a.IPFIX.TemplateRefresh.Duration, ipfix.DefaultTemplateRefresh)
	fillDefault(md, "ipfix.max_message_size", &a.IPFIX.MaxMessageSize, ipfix.DefaultMaxMessageSize)

	fillDefault(md, "prometheus.host", &a.Prometheus.Host, DefaultPrometheusHost)
	fillDefault(md, "prometheus.port", &a.Prometheus.Port, DefaultPrometheusPort)
	fillDefault(md, "prometheus.max_label_sets", &a.Prometheus.MaxLabelSets, flow.DefaultMaxLabelSets)
	fillDefault(md, "prometheus.label_set_expiry", &a.Prometheus.LabelSetExpiry.Duration, flow.DefaultLabelSetExpiry)

	station := &a.Enrich.RIB.BMP
	defaultEndpoint(&station.Host, &station.Port, DefaultBMPHost, DefaultBMPPort)
	fillDefault(md, "enrich.rib.bmp.keep", &station.Keep.Duration, rib.DefaultKeep)
	fillDefault(md, "enrich.rib.bmp.max_sessions", &station.MaxSessions, bmp.DefaultMaxSessions)
	fillDefault(md, "enrich.rib.bmp.max_message_size", &station.MaxMessageSize, bmp.DefaultMaxMessageSize)
	fillDefault(md, "control.socket", &a.Control.Socket, DefaultControlSocket)
	fillDefault(md, "xdp.mode", &a.XDP.Mode, DefaultXDPMode)
	fillDefault(md, "xdp.state_file", &a.XDP.StateFile, DefaultXDPStateFile)
}

// fillDefault sets field to value when the file left out agent.<key>
// (a dotted key below [agent]).
func fillDefault[T any](md *toml.MetaData, key string, field *T, value T) {
	if !md.IsDefined(strings.Split("agent."+key, ".")...) {
		*field = value
	}
}

// defaultEndpoint fills in the half of an endpoint the file left out when
// the other half is set; with neither set the endpoint stays off.
func defaultEndpoint(host *string, port *int, defaultHost string, defaultPort int) {
	if *host == "" && *port == 0 {
		return
	}
	if *host == "" {
		*host = defaultHost
	}
	if *port == 0 {
		*port = defaultPort
	}
}

// normalize rewrites values into one canonical spelling so that the
// effective config is what consumers use directly: "[2001:db8::1]"
// becomes "2001:db8::1" (JoinHostPort adds the brackets back), and an
// empty allow list is nil (both allow everyone).
func normalize(c *Config) {
	for _, h := range []*string{
		&c.Agent.IPFIX.Host,
		&c.Agent.IPFIX.Bind.Host,
		&c.Agent.Prometheus.Host,
		&c.Agent.Enrich.RIB.BMP.Host,
	} {
		if inner, ok := bracketedIPv6(*h); ok {
			*h = inner
		}
	}
	for i := range c.Agent.IPFIX.Collectors {
		col := &c.Agent.IPFIX.Collectors[i]
		for _, h := range []*string{&col.Host, &col.Bind.Host} {
			if inner, ok := bracketedIPv6(*h); ok {
				*h = inner
			}
		}
	}
	if len(c.Agent.IPFIX.Collectors) == 0 {
		c.Agent.IPFIX.Collectors = nil
	}
	if len(c.Agent.Enrich.RIB.BMP.Allow) == 0 {
		c.Agent.Enrich.RIB.BMP.Allow = nil
	}
	if len(c.Agent.Enrich.RIB.BMP.LabelVRFs) == 0 {
		c.Agent.Enrich.RIB.BMP.LabelVRFs = nil
	}
}

// The schema is derived from the Config struct's toml tags, so the key
// list cannot drift from the struct.

type valueKind int

const (
	kindTable valueKind = iota
	kindString
	kindInt
	kindUint32
	kindStrings
	kindDuration
	kindTableArray
	kindBool
	kindStringOrInt // agent.xdp.rules[].proto: a name or a number
)

type schemaNode struct {
	kind   valueKind
	fields map[string]*schemaNode // kindTable only
	elem   *schemaNode            // kindTableArray only
}

var configSchema = buildSchema(reflect.TypeOf(Config{}))

func buildSchema(t reflect.Type) *schemaNode {
	switch {
	case t == reflect.TypeOf(Duration{}):
		return &schemaNode{kind: kindDuration}
	case t == reflect.TypeOf(Proto{}):
		return &schemaNode{kind: kindStringOrInt}
	case t.Kind() == reflect.Struct:
		n := &schemaNode{kind: kindTable, fields: make(map[string]*schemaNode)}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			n.fields[name] = buildSchema(f.Type)
		}
		return n
	case t.Kind() == reflect.String:
		return &schemaNode{kind: kindString}
	case t.Kind() == reflect.Bool:
		return &schemaNode{kind: kindBool}
	case t.Kind() == reflect.Int:
		return &schemaNode{kind: kindInt}
	case t.Kind() == reflect.Uint32:
		return &schemaNode{kind: kindUint32}
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return &schemaNode{kind: kindStrings}
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return &schemaNode{kind: kindTableArray, elem: buildSchema(t.Elem())}
	}
	// A field type the walk cannot check: a programming error caught by
	// any test of this package.
	panic("config: no schema for field type " + t.String())
}

// keyOrder maps every key and key prefix to where it first appears in the
// document, so the walk reports the first bad key first.
func keyOrder(keys []toml.Key) map[string]int {
	order := make(map[string]int, len(keys))
	for i, k := range keys {
		for n := 1; n <= len(k); n++ {
			s := joinKey(k[:n])
			if _, ok := order[s]; !ok {
				order[s] = i
			}
		}
	}
	return order
}

func checkTable(node *schemaNode, path []string, table map[string]any, order map[string]int) *Error {
	type entry struct {
		name string
		key  string
		pos  int
	}
	entries := make([]entry, 0, len(table))
	for name := range table {
		key := joinKey(append(path[:len(path):len(path)], name))
		pos, ok := order[key]
		if !ok {
			pos = math.MaxInt
		}
		entries = append(entries, entry{name, key, pos})
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].pos != entries[j].pos {
			return entries[i].pos < entries[j].pos
		}
		return entries[i].key < entries[j].key
	})
	for _, e := range entries {
		child := node.fields[e.name]
		if child == nil {
			return &Error{Key: e.key, unknownKey: true}
		}
		childPath := append(path[:len(path):len(path)], e.name)
		if err := checkValue(child, childPath, table[e.name], order); err != nil {
			return err
		}
	}
	return nil
}

func checkValue(node *schemaNode, path []string, v any, order map[string]int) *Error {
	key := joinKey(path)
	switch node.kind {
	case kindTable:
		t, ok := v.(map[string]any)
		if !ok {
			return keyError(key, v, "must be a table, not %s", tomlTypeName(v))
		}
		return checkTable(node, path, t, order)
	case kindStringOrInt:
		switch n := v.(type) {
		case string:
		case int64:
			if n < 0 || n > 255 {
				return keyError(key, v, "must be a protocol name or a number 0..255")
			}
		default:
			return keyError(key, v, "must be a protocol name or a number, not %s", tomlTypeName(v))
		}
	case kindString:
		if _, ok := v.(string); !ok {
			return keyError(key, v, "must be a string, not %s", tomlTypeName(v))
		}
	case kindBool:
		if _, ok := v.(bool); !ok {
			return keyError(key, v, "must be true or false, not %s", tomlTypeName(v))
		}
	case kindInt:
		n, ok := v.(int64)
		if !ok {
			return keyError(key, v, "must be an integer, not %s", tomlTypeName(v))
		}
		if n < math.MinInt || n > math.MaxInt {
			return keyError(key, v, "must be between %d and %d", math.MinInt, math.MaxInt)
		}
	case kindUint32:
		n, ok := v.(int64)
		if !ok {
			return keyError(key, v, "must be an integer, not %s", tomlTypeName(v))
		}
		// Every uint32 key (sample_rate, observation_domain_id) must also
		// be > 0, so say the full range; 0 itself fits and is left to
		// validation, which says "must be greater than 0".
		if n < 0 || n > math.MaxUint32 {
			return keyError(key, v, "must be between 1 and %d", uint64(math.MaxUint32))
		}
	case kindStrings:
		list, ok := v.([]any)
		if !ok {
			return keyError(key, v, "must be an array of strings, not %s", tomlTypeName(v))
		}
		for i, elem := range list {
			if _, ok := elem.(string); !ok {
				return keyError(fmt.Sprintf("%s[%d]", key, i), elem, "must be a string, not %s", tomlTypeName(elem))
			}
		}
	case kindTableArray:
		// [[x]] decodes to []map[string]any, x = [{...}] to []any.
		var list []any
		switch l := v.(type) {
		case []map[string]any:
			for _, m := range l {
				list = append(list, m)
			}
		case []any:
			list = l
		default:
			return keyError(key, v, "must be an array of tables ([[%s]]), not %s", key, tomlTypeName(v))
		}
		for i, elem := range list {
			t, ok := elem.(map[string]any)
			elemKey := fmt.Sprintf("%s[%d]", path[len(path)-1], i)
			if !ok {
				return keyError(joinKey(append(path[:len(path)-1:len(path)-1], elemKey)), elem, "must be a table, not %s", tomlTypeName(elem))
			}
			if err := checkTable(node.elem, append(path[:len(path)-1:len(path)-1], elemKey), t, order); err != nil {
				return err
			}
		}
	case kindDuration:
		s, ok := v.(string)
		if !ok {
			return keyError(key, v, `must be a duration string such as "30s" or "5m", not %s`, tomlTypeName(v))
		}
		if _, err := time.ParseDuration(s); err != nil {
			return keyError(key, v, `must be a duration such as "30s", "1m30s" or "500ms"`)
		}
	}
	return nil
}
