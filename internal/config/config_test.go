// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// base is the smallest valid config; cases append their keys to it.
const base = "[agent]\ninterfaces = [\"eth0\"]\n"

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := Parse([]byte(doc), "test.toml")
	if err != nil {
		t.Fatalf("Parse(%q): %v", doc, err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, base)
	a := c.Agent
	tests := []struct {
		name      string
		got, want any
	}{
		{"interfaces", a.Interfaces, []string{"eth0"}},
		{"bpf.sample_rate", a.BPF.SampleRate, uint32(100)},
		{"bpf.ring_buf_size", a.BPF.RingBufSize, 262144},
		{"bpf.directions", a.BPF.Directions, []string{"ingress", "egress"}},
		{"bpf.fields", a.BPF.Fields, []string(nil)},
		{"bpf.fib_lookup", a.BPF.FIBLookup, false},
		{"bpf.max_interfaces", a.BPF.MaxInterfaces, 262144},
		{"collector.max_flows", a.Collector.MaxFlows, 65536},
		{"collector.eviction_timeout", a.Collector.EvictionTimeout.Duration, 30 * time.Second},
		{"collector.active_timeout", a.Collector.ActiveTimeout.Duration, 60 * time.Second},
		{"ipfix.host", a.IPFIX.Host, ""},
		{"ipfix.port", a.IPFIX.Port, 0},
		{"ipfix.enabled", a.IPFIX.Enabled(), false},
		{"ipfix.bind.host", a.IPFIX.Bind.Host, ""},
		{"ipfix.bind.port", a.IPFIX.Bind.Port, 0},
		{"ipfix.observation_domain_id", a.IPFIX.ObservationDomainID, uint32(1)},
		{"ipfix.template_refresh", a.IPFIX.TemplateRefresh.Duration, 60 * time.Second},
		{"ipfix.max_message_size", a.IPFIX.MaxMessageSize, 1400},
		{"prometheus.host", a.Prometheus.Host, "::1"},
		{"prometheus.port", a.Prometheus.Port, 9669},
		{"prometheus.max_label_sets", a.Prometheus.MaxLabelSets, 10000},
		{"prometheus.label_set_expiry", a.Prometheus.LabelSetExpiry.Duration, time.Hour},
		{"enrich.mmdb.asn_db", a.Enrich.MMDB.ASNDB, ""},
		{"enrich.mmdb.city_db", a.Enrich.MMDB.CityDB, ""},
		{"enrich.rib.bmp.host", a.Enrich.RIB.BMP.Host, ""},
		{"enrich.rib.bmp.port", a.Enrich.RIB.BMP.Port, 0},
		{"enrich.rib.bmp.enabled", a.Enrich.RIB.BMP.Enabled(), false},
		{"enrich.rib.bmp.keep", a.Enrich.RIB.BMP.Keep.Duration, 5 * time.Minute},
		{"enrich.rib.bmp.allow", a.Enrich.RIB.BMP.Allow, []string(nil)},
		{"enrich.rib.bmp.max_sessions", a.Enrich.RIB.BMP.MaxSessions, 64},
		{"enrich.rib.bmp.max_message_size", a.Enrich.RIB.BMP.MaxMessageSize, 1048576},
		{"enrich.rib.bmp.label_vrfs", a.Enrich.RIB.BMP.LabelVRFs, []string(nil)},
		{"enrich.rib.bmp.max_routes_per_peer", a.Enrich.RIB.BMP.MaxRoutesPerPeer, 0},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.name, tt.got, tt.want)
		}
	}
}

func TestPartialDefaults(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		got  func(*Config) any
		want any
	}{
		{"max_flows 0 accepted: the flow table ceiling", "[agent.collector]\nmax_flows = 0\n",
			func(c *Config) any { return c.Agent.Collector.MaxFlows }, 0},
		{"explicit sample_rate kept", "[agent.bpf]\nsample_rate = 1\n",
			func(c *Config) any { return c.Agent.BPF.SampleRate }, uint32(1)},
		{"ipfix host only: port 4739", "[agent.ipfix]\nhost = \"127.0.0.1\"\n",
			func(c *Config) any { return c.Agent.IPFIX.CollectorAddr() }, "127.0.0.1:4739"},
		{"ipfix port only: host ::1", "[agent.ipfix]\nport = 2055\n",
			func(c *Config) any { return c.Agent.IPFIX.CollectorAddr() }, "[::1]:2055"},
		{"ipfix host name", "[agent.ipfix]\nhost = \"collector.example\"\nport = 4739\n",
			func(c *Config) any { return c.Agent.IPFIX.CollectorAddr() }, "collector.example:4739"},
		{"ipfix empty host and port 0 mean unset", "[agent.ipfix]\nhost = \"\"\nport = 0\n",
			func(c *Config) any { return c.Agent.IPFIX.Enabled() }, false},
		{"ipfix bind only does not enable export", "[agent.ipfix.bind]\nhost = \"::1\"\n",
			func(c *Config) any { return c.Agent.IPFIX.Enabled() }, false},
		{"collectors: defaults per collector", "[[agent.ipfix.collectors]]\nhost = \"192.0.2.1\"\n[[agent.ipfix.collectors]]\nport = 2055\nbind = {host = \"[2001:db8::1]\", port = 40000}\n",
			func(c *Config) any {
				var out []string
				for _, t := range c.Agent.IPFIX.Targets() {
					out = append(out, t.Addr()+" from "+t.Bind.Addr())
				}
				return strings.Join(out, ", ")
			}, "192.0.2.1:4739 from :0, [::1]:2055 from [2001:db8::1]:40000"},
		{"one-collector form is one target", "[agent.ipfix]\nhost = \"192.0.2.1\"\nbind = {port = 4000}\n",
			func(c *Config) any { return c.Agent.IPFIX.Targets() }, []IPFIXCollector{{Host: "192.0.2.1", Port: 4739, Bind: Endpoint{Port: 4000}}}},
		{"bind bracketed IPv6 normalised", "[agent.ipfix.bind]\nhost = \"[2001:db8::1]\"\nport = 40000\n",
			func(c *Config) any { return c.Agent.IPFIX.Bind.Addr() }, "[2001:db8::1]:40000"},
		{"bmp host only: port 11019", "[agent.enrich.rib.bmp]\nhost = \"127.0.0.1\"\n",
			func(c *Config) any { return c.Agent.Enrich.RIB.BMP.ListenAddr() }, "127.0.0.1:11019"},
		{"bmp port only: host ::1", "[agent.enrich.rib.bmp]\nport = 1790\n",
			func(c *Config) any { return c.Agent.Enrich.RIB.BMP.ListenAddr() }, "[::1]:1790"},
		{"bmp keep 0 allowed", "[agent.enrich.rib.bmp]\nkeep = \"0s\"\n",
			func(c *Config) any { return c.Agent.Enrich.RIB.BMP.Keep.Duration }, time.Duration(0)},
		{"bmp empty allow is nil", "[agent.enrich.rib.bmp]\nallow = []\n",
			func(c *Config) any { return c.Agent.Enrich.RIB.BMP.Allow }, []string(nil)},
		{"prometheus IPv4", "[agent.prometheus]\nhost = \"127.0.0.1\"\n",
			func(c *Config) any { return c.PrometheusAddr() }, "127.0.0.1:9669"},
		{"prometheus bracketed IPv6", "[agent.prometheus]\nhost = \"[::]\"\nport = 9100\n",
			func(c *Config) any { return c.PrometheusAddr() }, "[::]:9100"},
		{"wildcard", "", // base replaced below
			func(c *Config) any { return c.Agent.Interfaces }, []string{"*"}},
		{"directions ingress only", "[agent.bpf]\ndirections = [\"ingress\"]\n",
			func(c *Config) any { return [2]bool{c.Agent.BPF.Samples("ingress"), c.Agent.BPF.Samples("egress")} }, [2]bool{true, false}},
		{"directions egress only", "[agent.bpf]\ndirections = [\"egress\"]\n",
			func(c *Config) any { return [2]bool{c.Agent.BPF.Samples("ingress"), c.Agent.BPF.Samples("egress")} }, [2]bool{false, true}},
		{"every field", "[agent.bpf]\nfields = [\"tcp_flags\", \"dscp\", \"icmp\", \"ttl\", \"vlan\"]\nfib_lookup = true\n",
			func(c *Config) any {
				return []bool{c.Agent.BPF.HasField("tcp_flags"), c.Agent.BPF.HasField("dscp"), c.Agent.BPF.HasField("icmp"),
					c.Agent.BPF.HasField("ttl"), c.Agent.BPF.HasField("vlan"), c.Agent.BPF.FIBLookup}
			}, []bool{true, true, true, true, true, true}},
		{"dotted keys", "bpf.sample_rate = 7\n",
			func(c *Config) any { return c.Agent.BPF.SampleRate }, uint32(7)},
		{"inline table", "collector = {eviction_timeout = \"1m30s\"}\n",
			func(c *Config) any { return c.Agent.Collector.EvictionTimeout.Duration }, 90 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := base + tt.doc
			if tt.name == "wildcard" {
				doc = "[agent]\ninterfaces = [\"*\"]\n"
			}
			if got := tt.got(mustParse(t, doc)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestRejections(t *testing.T) {
	tests := []struct {
		name string
		doc  string // full document
		key  string // must appear in the error
		val  string // must appear as "key = val" when set
	}{
		// Syntax, schema and types.
		{"syntax", base + "x = = 1\n", "line 3: ", ""},
		{"syntax later line", base + "[agent.bpf]\nsample_rate = = 1\n", "line 4", ""},
		{"unknown key", base + "[agent.bpf]\nsampl_rate = 100\n", "unknown key agent.bpf.sampl_rate", ""},
		{"unknown top-level key", "foo = 1\n" + base, "unknown key foo", ""},
		{"unknown table", base + "[agent.bfp]\nsample_rate = 100\n", "unknown key agent.bfp", ""},
		{"unknown dotted key", base + "bfp.sample_rate = 1\n", "unknown key agent.bfp", ""},
		{"key case matters", base + "[agent.BPF]\nsample_rate = 100\n", "unknown key agent.BPF", ""},
		{"unknown quoted key", base + "\"a\\nb\" = 1\n", `unknown key agent."a\nb"`, ""},
		{"unknown key under leaf", base + "[agent.prometheus.host]\nx = 1\n", "agent.prometheus.host", "{x = 1}"},
		{"agent not a table", "agent = 5\n", "agent", "5"},
		{"agent array of tables", "[[agent]]\ninterfaces = [\"eth0\"]\n", "agent", `[{interfaces = ["eth0"]}]`},
		{"sample_rate string", base + "[agent.bpf]\nsample_rate = \"100\"\n", "agent.bpf.sample_rate", `"100"`},
		{"sample_rate float", base + "[agent.bpf]\nsample_rate = 1.0\n", "agent.bpf.sample_rate", "1.0"},
		{"sample_rate negative", base + "[agent.bpf]\nsample_rate = -1\n", "agent.bpf.sample_rate", "-1"},
		{"sample_rate too big", base + "[agent.bpf]\nsample_rate = 4294967296\n", "agent.bpf.sample_rate", "4294967296"},
		{"interfaces string", "[agent]\ninterfaces = \"eth0\"\n", "agent.interfaces", `"eth0"`},
		{"interfaces element type", "[agent]\ninterfaces = [\"eth0\", 1]\n", "agent.interfaces[1]", "1"},
		{"duration integer", base + "[agent.collector]\neviction_timeout = 30\n", "agent.collector.eviction_timeout", "30"},
		{"duration no unit", base + "[agent.collector]\neviction_timeout = \"30\"\n", "agent.collector.eviction_timeout", `"30"`},
		{"port string", base + "[agent.prometheus]\nport = \"9669\"\n", "agent.prometheus.port", `"9669"`},
		{"datetime", base + "[agent.enrich.mmdb]\nasn_db = 1979-05-27\n", "agent.enrich.mmdb.asn_db", "1979-05-27"},
		{"bool", base + "[agent.enrich.rib.bmp]\nallow = true\n", "agent.enrich.rib.bmp.allow", "true"},

		// Interfaces.
		{"interfaces missing", "[agent.bpf]\nsample_rate = 1\n", "agent.interfaces", ""},
		{"empty file", "", "agent.interfaces", ""},
		{"interfaces empty", "[agent]\ninterfaces = []\n", "agent.interfaces", "[]"},
		{"interface name empty", "[agent]\ninterfaces = [\"eth0\", \"\"]\n", "agent.interfaces[1]", `""`},
		{"interface duplicate", "[agent]\ninterfaces = [\"eth0\", \"eth1\", \"eth0\"]\n", "agent.interfaces[2]", `"eth0"`},
		{"wildcard mixed", "[agent]\ninterfaces = [\"*\", \"eth0\"]\n", "agent.interfaces", `["*", "eth0"]`},
		{"wildcard twice", "[agent]\ninterfaces = [\"*\", \"*\"]\n", "agent.interfaces[1]", `"*"`},
		{"interface name slash", "[agent]\ninterfaces = [\"a/b\"]\n", "agent.interfaces[0]", `"a/b"`},
		{"interface name space", "[agent]\ninterfaces = [\"eth 0\"]\n", "agent.interfaces[0]", `"eth 0"`},
		{"interface name too long", "[agent]\ninterfaces = [\"abcdefghijklmnop\"]\n", "agent.interfaces[0]", `"abcdefghijklmnop"`},
		{"interface pattern bad class", "[agent]\ninterfaces = [\"eth[0-\"]\n", "agent.interfaces[0]", `"eth[0-"`},
		{"interface pattern slash", "[agent]\ninterfaces = [\"veth*/x\"]\n", "agent.interfaces[0]", `"veth*/x"`},
		{"wildcard mixed with pattern", "[agent]\ninterfaces = [\"veth*\", \"*\"]\n", "agent.interfaces", `["veth*", "*"]`},
		{"control socket relative", base + "[agent.control]\nsocket = \"rfm.sock\"\n", "agent.control.socket", `"rfm.sock"`},
		{"control socket too long", base + "[agent.control]\nsocket = \"/" + strings.Repeat("s", 120) + "\"\n", "agent.control.socket", ""},
		{"web_config relative", base + "[agent.prometheus]\nweb_config = \"web.yml\"\n", "agent.prometheus.web_config", `"web.yml"`},

		// agent.bpf and agent.collector.
		{"sample_rate 0", base + "[agent.bpf]\nsample_rate = 0\n", "agent.bpf.sample_rate", "0"},
		{"ring_buf_size 0", base + "[agent.bpf]\nring_buf_size = 0\n", "agent.bpf.ring_buf_size", "0"},
		{"ring_buf_size negative", base + "[agent.bpf]\nring_buf_size = -4096\n", "agent.bpf.ring_buf_size", "-4096"},
		{"ring_buf_size not power of two", base + "[agent.bpf]\nring_buf_size = 5000\n", "agent.bpf.ring_buf_size", "5000"},
		{"ring_buf_size below page", base + "[agent.bpf]\nring_buf_size = 2048\n", "agent.bpf.ring_buf_size", "2048"},
		{"ring_buf_size too big", base + "[agent.bpf]\nring_buf_size = 4294967296\n", "agent.bpf.ring_buf_size", "4294967296"},
		{"fields unknown", base + "[agent.bpf]\nfields = [\"ttl\", \"tos\"]\n", "agent.bpf.fields[1]", `"tos"`},
		{"fields duplicate", base + "[agent.bpf]\nfields = [\"vlan\", \"vlan\"]\n", "agent.bpf.fields[1]", `"vlan"`},
		{"fib_lookup string", base + "[agent.bpf]\nfib_lookup = \"yes\"\n", "agent.bpf.fib_lookup", `"yes"`},
		{"directions empty", base + "[agent.bpf]\ndirections = []\n", "agent.bpf.directions", "[]"},
		{"directions unknown", base + "[agent.bpf]\ndirections = [\"ingress\", \"in\"]\n", "agent.bpf.directions[1]", `"in"`},
		{"directions duplicate", base + "[agent.bpf]\ndirections = [\"egress\", \"egress\"]\n", "agent.bpf.directions[1]", `"egress"`},
		{"max_interfaces zero", base + "[agent.bpf]\nmax_interfaces = 0\n", "agent.bpf.max_interfaces", "0"},
		{"max_interfaces above the maximum", base + "[agent.bpf]\nmax_interfaces = 262145\n", "agent.bpf.max_interfaces", "262145"},
		{"max_flows negative", base + "[agent.collector]\nmax_flows = -1\n", "agent.collector.max_flows", "-1"},
		{"eviction_timeout short", base + "[agent.collector]\neviction_timeout = \"500ms\"\n", "agent.collector.eviction_timeout", `"500ms"`},
		{"eviction_timeout negative", base + "[agent.collector]\neviction_timeout = \"-1s\"\n", "agent.collector.eviction_timeout", `"-1s"`},
		{"max_flows above the ceiling", base + "[agent.collector]\nmax_flows = 4194305\n", "agent.collector.max_flows", "4194305"},
		{"active_timeout short", base + "[agent.collector]\nactive_timeout = \"999ms\"\n", "agent.collector.active_timeout", `"999ms"`},
		{"active_timeout zero", base + "[agent.collector]\nactive_timeout = \"0s\"\n", "agent.collector.active_timeout", `"0s"`},
		{"active_timeout not a duration", base + "[agent.collector]\nactive_timeout = 60\n", "agent.collector.active_timeout", "60"},

		// agent.ipfix.
		{"ipfix host space", base + "[agent.ipfix]\nhost = \"a b\"\n", "agent.ipfix.host", `"a b"`},
		{"ipfix host empty label", base + "[agent.ipfix]\nhost = \"a..b\"\n", "agent.ipfix.host", `"a..b"`},
		{"ipfix host bad IPv4", base + "[agent.ipfix]\nhost = \"192.0.2.300\"\n", "agent.ipfix.host", `"192.0.2.300"`},
		{"bgp_communities not a bool", base + "[agent.ipfix]\nbgp_communities = \"yes\"\n", "agent.ipfix.bgp_communities", `"yes"`},
		{"collectors with host", base + "[agent.ipfix]\nhost = \"192.0.2.1\"\n[[agent.ipfix.collectors]]\nhost = \"192.0.2.2\"\n", "agent.ipfix.collectors", ""},
		{"collectors with bind", base + "[agent.ipfix.bind]\nport = 4000\n[[agent.ipfix.collectors]]\nhost = \"192.0.2.2\"\n", "agent.ipfix.collectors", ""},
		{"collector duplicate", base + "[[agent.ipfix.collectors]]\nhost = \"192.0.2.2\"\n[[agent.ipfix.collectors]]\nhost = \"192.0.2.3\"\n[[agent.ipfix.collectors]]\nhost = \"[::ffff:192.0.2.2]\"\nport = 4739\n", "agent.ipfix.collectors[2]", `"[::ffff:192.0.2.2]:4739"`},
		{"collector bad host", base + "[[agent.ipfix.collectors]]\nhost = \"a b\"\n", "agent.ipfix.collectors[0].host", `"a b"`},
		{"collector bad port", base + "[[agent.ipfix.collectors]]\nhost = \"192.0.2.1\"\n[[agent.ipfix.collectors]]\nport = 70000\n", "agent.ipfix.collectors[1].port", "70000"},
		{"collector empty", base + "[[agent.ipfix.collectors]]\n", "agent.ipfix.collectors[0].host", `""`},
		{"collector unknown key", base + "[[agent.ipfix.collectors]]\nhots = \"::1\"\n", "agent.ipfix.collectors[0].hots", ""},
		{"collector bind name", base + "[[agent.ipfix.collectors]]\nport = 2055\nbind = {host = \"example.com\"}\n", "agent.ipfix.collectors[0].bind.host", `"example.com"`},
		{"collector bind shared", base + "[[agent.ipfix.collectors]]\nport = 2055\nbind = {port = 40000}\n[[agent.ipfix.collectors]]\nport = 2056\nbind = {port = 40000}\n", "agent.ipfix.collectors[1].bind", `":40000"`},
		{"collectors not tables", base + "[agent.ipfix]\ncollectors = [\"::1\"]\n", "agent.ipfix.collectors[0]", `"::1"`},
		{"collectors too many", base + strings.Repeat("[[agent.ipfix.collectors]]\nhost = \"::1\"\n", 1) + func() string {
			var b strings.Builder
			for i := range 9 {
				fmt.Fprintf(&b, "[[agent.ipfix.collectors]]\nport = %d\n", 5000+i)
			}
			return b.String()
		}(), "agent.ipfix.collectors", ""},
		{"ipfix port too big", base + "[agent.ipfix]\nport = 70000\n", "agent.ipfix.port", "70000"},
		{"ipfix port negative", base + "[agent.ipfix]\nport = -1\n", "agent.ipfix.port", "-1"},
		{"bind host name", base + "[agent.ipfix.bind]\nhost = \"example.com\"\n", "agent.ipfix.bind.host", `"example.com"`},
		{"bind host bracketed IPv4", base + "[agent.ipfix.bind]\nhost = \"[192.0.2.1]\"\n", "agent.ipfix.bind.host", `"[192.0.2.1]"`},
		{"bind port too big", base + "[agent.ipfix.bind]\nport = 65536\n", "agent.ipfix.bind.port", "65536"},
		{"bind port negative", base + "[agent.ipfix.bind]\nport = -1\n", "agent.ipfix.bind.port", "-1"},
		{"observation_domain_id 0", base + "[agent.ipfix]\nobservation_domain_id = 0\n", "agent.ipfix.observation_domain_id", "0"},
		{"template_refresh short", base + "[agent.ipfix]\ntemplate_refresh = \"0s\"\n", "agent.ipfix.template_refresh", `"0s"`},
		{"ipfix max_message_size small", base + "[agent.ipfix]\nmax_message_size = 511\n", "agent.ipfix.max_message_size", "511"},
		{"ipfix max_message_size big", base + "[agent.ipfix]\nmax_message_size = 65508\n", "agent.ipfix.max_message_size", "65508"},

		// agent.prometheus.
		{"prometheus host name", base + "[agent.prometheus]\nhost = \"localhost\"\n", "agent.prometheus.host", `"localhost"`},
		{"prometheus host empty", base + "[agent.prometheus]\nhost = \"\"\n", "agent.prometheus.host", `""`},
		{"prometheus port 0", base + "[agent.prometheus]\nport = 0\n", "agent.prometheus.port", "0"},
		{"prometheus port too big", base + "[agent.prometheus]\nport = 65536\n", "agent.prometheus.port", "65536"},
		{"max_label_sets 0", base + "[agent.prometheus]\nmax_label_sets = 0\n", "agent.prometheus.max_label_sets", "0"},
		{"max_label_sets too big", base + "[agent.prometheus]\nmax_label_sets = 1000001\n", "agent.prometheus.max_label_sets", "1000001"},
		{"label_set_expiry short", base + "[agent.prometheus]\nlabel_set_expiry = \"59s\"\n", "agent.prometheus.label_set_expiry", `"59s"`},
		{"label_set_expiry not a duration", base + "[agent.prometheus]\nlabel_set_expiry = \"1 hour\"\n", "agent.prometheus.label_set_expiry", `"1 hour"`},

		// agent.enrich.rib.bmp.
		{"bmp host space", base + "[agent.enrich.rib.bmp]\nhost = \"a b\"\n", "agent.enrich.rib.bmp.host", `"a b"`},
		{"bmp port too big", base + "[agent.enrich.rib.bmp]\nport = 70000\n", "agent.enrich.rib.bmp.port", "70000"},
		{"bmp keep negative", base + "[agent.enrich.rib.bmp]\nkeep = \"-1m\"\n", "agent.enrich.rib.bmp.keep", `"-1m0s"`},
		{"bmp allow bad prefix", base + "[agent.enrich.rib.bmp]\nallow = [\"192.0.2.0/24\", \"192.0.2.0/33\"]\n", "agent.enrich.rib.bmp.allow[1]", `"192.0.2.0/33"`},
		{"bmp allow word", base + "[agent.enrich.rib.bmp]\nallow = [\"router1\"]\n", "agent.enrich.rib.bmp.allow[0]", `"router1"`},
		{"bmp allow zone", base + "[agent.enrich.rib.bmp]\nallow = [\"fe80::1%eth0\"]\n", "agent.enrich.rib.bmp.allow[0]", `"fe80::1%eth0"`},
		{"bmp allow empty", base + "[agent.enrich.rib.bmp]\nallow = [\"\"]\n", "agent.enrich.rib.bmp.allow[0]", `""`},
		{"bmp max_sessions 0", base + "[agent.enrich.rib.bmp]\nmax_sessions = 0\n", "agent.enrich.rib.bmp.max_sessions", "0"},
		{"bmp max_message_size small", base + "[agent.enrich.rib.bmp]\nmax_message_size = 4095\n", "agent.enrich.rib.bmp.max_message_size", "4095"},
		{"bmp max_message_size big", base + "[agent.enrich.rib.bmp]\nmax_message_size = 16777216\n", "agent.enrich.rib.bmp.max_message_size", "16777216"},
		{"bmp label_vrfs no number", base + "[agent.enrich.rib.bmp]\nlabel_vrfs = [\"65000:1\", \"65000\"]\n", "agent.enrich.rib.bmp.label_vrfs[1]", `"65000"`},
		{"bmp label_vrfs IPv6 admin", base + "[agent.enrich.rib.bmp]\nlabel_vrfs = [\"2001:db8::1:5\"]\n", "agent.enrich.rib.bmp.label_vrfs[0]", `"2001:db8::1:5"`},
		{"bmp max_routes_per_peer negative", base + "[agent.enrich.rib.bmp]\nmax_routes_per_peer = -1\n", "agent.enrich.rib.bmp.max_routes_per_peer", "-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.doc), "test.toml")
			if err == nil {
				t.Fatalf("Parse accepted:\n%s\neffective:\n%s", tt.doc, c)
			}
			assertOneLineError(t, err, "test.toml", tt.key, tt.val)
		})
	}
}

// assertOneLineError checks the error contract: an *Error whose message
// is one line starting with "config SOURCE: " and naming key (and
// "key = val" when val is set).
func assertOneLineError(t *testing.T, err error, source, key, val string) {
	t.Helper()
	msg := err.Error()
	t.Log(msg)
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("error %q is %T, want *Error", msg, err)
	}
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error spans lines: %q", msg)
	}
	prefix := "config: "
	if source != "" {
		prefix = "config " + source + ": "
	}
	if !strings.HasPrefix(msg, prefix) {
		t.Errorf("error %q does not start with %q", msg, prefix)
	}
	want := key
	if val != "" {
		want = key + " = " + val + ": "
	}
	if !strings.Contains(msg, want) {
		t.Errorf("error %q does not contain %q", msg, want)
	}
}

func TestExactMessages(t *testing.T) {
	tests := []struct {
		doc, want string
	}{
		{base + "[agent.bpf]\nsample_rate = 0\n",
			"config rfm.toml: agent.bpf.sample_rate = 0: must be greater than 0"},
		{base + "[agent.bpf]\nsampl_rate = 100\n",
			"config rfm.toml: unknown key agent.bpf.sampl_rate"},
		{base + "[agent.bpf]\nring_buf_size = 2048\n",
			"config rfm.toml: agent.bpf.ring_buf_size = 2048: must be at least 4096 (the kernel page size)"},
		{base + "[agent.bpf]\nsample_rate = \"100\"\n",
			`config rfm.toml: agent.bpf.sample_rate = "100": must be an integer, not a string`},
		{"[agent]\ninterfaces = [\"eth0\"\n",
			"config rfm.toml: line 2: expected a comma (',') or array terminator (']'), but got end of file"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.doc), "rfm.toml")
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse(%q) error = %v, want %q", tt.doc, err, tt.want)
		}
	}
}

// TestFirstErrorInDocumentOrder guards against the Go map order leaking
// into which of several errors is reported.
func TestFirstErrorInDocumentOrder(t *testing.T) {
	doc := "[agent]\nzzz = 1\ninterfaces = 5\n[agent.bpf]\nsample_rate = \"x\"\n[agent.collector]\nmax_flows = \"y\"\n"
	for range 50 {
		_, err := Parse([]byte(doc), "t")
		if err == nil || err.Error() != "config t: unknown key agent.zzz" {
			t.Fatalf("error = %v, want unknown key agent.zzz", err)
		}
	}
	doc = "[agent.collector]\nmax_flows = \"y\"\n[agent.bpf]\nsample_rate = \"x\"\n"
	for range 50 {
		_, err := Parse([]byte(doc), "t")
		if err == nil || !strings.Contains(err.Error(), "agent.collector.max_flows") {
			t.Fatalf("error = %v, want agent.collector.max_flows first", err)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(filepath.Join(dir, "missing.toml"))
	if err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	path := filepath.Join(dir, "missing.toml")
	if want := "config " + path + ": cannot read: no such file"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}

	path = filepath.Join(dir, "rfm.toml")
	if err := os.WriteFile(path, []byte(base+"[agent.bpf]\nsampl_rate = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if err == nil || err.Error() != "config "+path+": unknown key agent.bpf.sampl_rate" {
		t.Errorf("error = %v", err)
	}
}

// fakeInterfaces is a lister with loopback plus the named interfaces.
func fakeInterfaces(names ...string) InterfaceLister {
	return func() ([]net.Interface, error) {
		out := []net.Interface{{Index: 1, Name: "lo", Flags: net.FlagUp | net.FlagLoopback}}
		for i, n := range names {
			out = append(out, net.Interface{Index: i + 2, Name: n, Flags: net.FlagUp})
		}
		return out, nil
	}
}

func ifaceNames(ifs []net.Interface) []string {
	var out []string
	for _, ifc := range ifs {
		out = append(out, ifc.Name)
	}
	return out
}

func TestResolveInterfaces(t *testing.T) {
	lister := fakeInterfaces("eth0", "eth1", "wg0")
	tests := []struct {
		name       string
		interfaces []string
		want       []string
	}{
		{"wildcard skips loopback", []string{"*"}, []string{"eth0", "eth1", "wg0"}},
		{"config order", []string{"wg0", "eth0"}, []string{"wg0", "eth0"}},
		{"loopback by name", []string{"lo"}, []string{"lo"}},
		{"pattern", []string{"eth*"}, []string{"eth0", "eth1"}},
		{"character class", []string{"eth[1-9]"}, []string{"eth1"}},
		{"pattern matching nothing yet", []string{"veth*"}, []string{}},
		{"name and overlapping pattern once", []string{"eth1", "eth?", "w*"}, []string{"eth1", "eth0", "wg0"}},
		{"pattern may select loopback", []string{"l?"}, []string{"lo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Config{Agent: Agent{Interfaces: tt.interfaces}}
			got, err := ResolveInterfaces(c, lister)
			if err != nil {
				t.Fatal(err)
			}
			if names := ifaceNames(got); len(names)+len(tt.want) > 0 && !reflect.DeepEqual(names, tt.want) {
				t.Errorf("got %v, want %v", names, tt.want)
			}
		})
	}
}

func TestInterfaceSelector(t *testing.T) {
	tests := []struct {
		list     []string
		name     string
		loopback bool
		want     bool
	}{
		{[]string{"*"}, "eth0", false, true},
		{[]string{"*"}, "lo", true, false},
		{[]string{"eth0"}, "eth0", false, true},
		{[]string{"eth0"}, "eth01", false, false},
		{[]string{"veth*"}, "veth1a2b", false, true},
		{[]string{"veth*"}, "eth0", false, false},
		{[]string{"eth[0-9]"}, "eth7", false, true},
		{[]string{"eth[0-9]"}, "eth10", false, false},
		{[]string{"lo"}, "lo", true, true},
		{[]string{"eth0", "wg?"}, "wg1", false, true},
	}
	for _, tt := range tests {
		if got := NewInterfaceSelector(tt.list).Match(tt.name, tt.loopback); got != tt.want {
			t.Errorf("%v.Match(%q, loopback=%v) = %v, want %v", tt.list, tt.name, tt.loopback, got, tt.want)
		}
	}
}

func TestLoadRefusesUnsafeFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rfm.toml")
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := "config " + path + ": writable by every user (mode 0666); run chmod o-w on it"; err == nil || err.Error() != want {
		t.Errorf("world-writable: error = %v, want %q", err, want)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err != nil {
		t.Errorf("mode 0644: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(path, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		t.Setenv("SUDO_UID", "")
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
			t.Errorf("foreign owner: error = %v", err)
		}
		// The user who ran sudo may own it.
		t.Setenv("SUDO_UID", "4242")
		if _, err := Load(path); err != nil {
			t.Errorf("owned by the sudo user: %v", err)
		}
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: error = %v", err)
	}
}

func TestValidateRejections(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "asn.mmdb")
	if err := os.WriteFile(regular, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	failing := func() ([]net.Interface, error) { return nil, errors.New("netlink says no") }
	tests := []struct {
		name     string
		doc      string
		lister   InterfaceLister
		key, val string
	}{
		{"missing interface", "[agent]\ninterfaces = [\"eth0\", \"eth9\"]\n", fakeInterfaces("eth0"), "agent.interfaces[1]", `"eth9"`},
		{"wildcard with only loopback", "[agent]\ninterfaces = [\"*\"]\n", fakeInterfaces(), "agent.interfaces", `["*"]`},
		{"lister fails", base, failing, "agent.interfaces: listing network interfaces: netlink says no", ""},
		{"asn_db missing", base + "[agent.enrich.mmdb]\nasn_db = \"" + filepath.Join(dir, "nope.mmdb") + "\"\n",
			fakeInterfaces("eth0"), "agent.enrich.mmdb.asn_db", `"` + filepath.Join(dir, "nope.mmdb") + `"`},
		{"city_db directory", base + "[agent.enrich.mmdb]\nasn_db = \"" + regular + "\"\ncity_db = \"" + dir + "\"\n",
			fakeInterfaces("eth0"), "agent.enrich.mmdb.city_db", `"` + dir + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, tt.doc)
			err := Validate(c, tt.lister)
			if err == nil {
				t.Fatal("Validate accepted")
			}
			assertOneLineError(t, err, "", tt.key, tt.val)
		})
	}

	t.Run("hand-built config gets value rules", func(t *testing.T) {
		c := &Config{Agent: Agent{Interfaces: []string{"eth0"}}}
		err := Validate(c, fakeInterfaces("eth0"))
		if err == nil {
			t.Fatal("Validate accepted a config without defaults")
		}
		assertOneLineError(t, err, "", "agent.bpf.sample_rate", "0")
	})

	t.Run("half-set endpoint in hand-built config", func(t *testing.T) {
		c := mustParse(t, base)
		c.Agent.IPFIX.Host = "127.0.0.1"
		err := Validate(c, fakeInterfaces("eth0"))
		if err == nil {
			t.Fatal("Validate accepted host without port")
		}
		assertOneLineError(t, err, "", "agent.ipfix.port", "0")
	})

	t.Run("unreadable mmdb", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("running as root: file permissions do not stop root from reading")
		}
		locked := filepath.Join(dir, "locked.mmdb")
		if err := os.WriteFile(locked, []byte("x"), 0o000); err != nil {
			t.Fatal(err)
		}
		c := mustParse(t, base+"[agent.enrich.mmdb]\nasn_db = \""+locked+"\"\n")
		err := Validate(c, fakeInterfaces("eth0"))
		if err == nil {
			t.Fatal("Validate accepted an unreadable file")
		}
		assertOneLineError(t, err, "", "agent.enrich.mmdb.asn_db", `"`+locked+`"`)
	})
}

// exampleConfig is the spec's example with its MMDB paths moved into a
// temporary directory that holds (empty) files of those names.
func exampleConfig(t testing.TB) (doc []byte, dir string) {
	t.Helper()
	data, err := os.ReadFile("testdata/example.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	for _, name := range []string{"dbip-asn-lite.mmdb", "dbip-city-lite.mmdb"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return []byte(strings.ReplaceAll(string(data), "/var/lib/rfm", dir)), dir
}

func TestSpecExample(t *testing.T) {
	doc, dir := exampleConfig(t)
	path := filepath.Join(dir, "rfm.toml")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	lister := fakeInterfaces("eth0", "tailscale0", "eth1")
	c, err := LoadAndValidate(path, lister)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{Agent: Agent{
		Interfaces: []string{"eth0", "tailscale0"},
		BPF: BPF{SampleRate: 100, RingBufSize: 262144, Directions: []string{"ingress", "egress"},
			MaxInterfaces: 262144},
		Collector: Collector{MaxFlows: 65536, EvictionTimeout: Duration{30 * time.Second}, ActiveTimeout: Duration{time.Minute}},
		IPFIX: IPFIX{
			Host: "127.0.0.1", Port: 4739,
			Bind:                Endpoint{Host: "192.0.2.10", Port: 0},
			ObservationDomainID: 1,
			TemplateRefresh:     Duration{time.Minute},
			MaxMessageSize:      1400,
		},
		Prometheus: Prometheus{Host: "::1", Port: 9669, MaxLabelSets: 10000, LabelSetExpiry: Duration{time.Hour}},
		Enrich: Enrich{
			MMDB: MMDB{
				ASNDB:  filepath.Join(dir, "dbip-asn-lite.mmdb"),
				CityDB: filepath.Join(dir, "dbip-city-lite.mmdb"),
			},
			RIB: RIB{BMP: BMP{
				Host: "127.0.0.1", Port: 11019,
				Keep:           Duration{5 * time.Minute},
				MaxSessions:    64,
				MaxMessageSize: 1 << 20,
			}},
		},
		Control: Control{Socket: "/run/rfm/rfm.sock"},
		XDP:     XDP{Mode: "auto", StateFile: "/var/lib/rfm/blocklist.json"},
	}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("parsed\n%s\nwant\n%s", c, want)
	}

	ifs, err := ResolveInterfaces(c, lister)
	if err != nil {
		t.Fatal(err)
	}
	if got := ifaceNames(ifs); !reflect.DeepEqual(got, []string{"eth0", "tailscale0"}) {
		t.Errorf("ResolveInterfaces = %v", got)
	}
	if got := c.PrometheusAddr(); got != "[::1]:9669" {
		t.Errorf("PrometheusAddr = %q", got)
	}
	if got := c.Agent.IPFIX.CollectorAddr(); got != "127.0.0.1:4739" {
		t.Errorf("CollectorAddr = %q", got)
	}
	if got := c.Agent.IPFIX.Bind.Addr(); got != "192.0.2.10:0" {
		t.Errorf("Bind.Addr = %q", got)
	}
	if got := c.Agent.Enrich.RIB.BMP.ListenAddr(); got != "127.0.0.1:11019" {
		t.Errorf("ListenAddr = %q", got)
	}

	// Round trip: the effective config re-parses to the same value.
	text := c.String()
	again, err := Parse([]byte(text), "effective")
	if err != nil {
		t.Fatalf("re-parse of\n%s\nfailed: %v", text, err)
	}
	if !reflect.DeepEqual(again, c) {
		t.Errorf("round trip changed the config:\n%s\nbecame\n%s", text, again)
	}
	if err := Validate(again, lister); err != nil {
		t.Errorf("Validate after round trip: %v", err)
	}
}

func TestLoadAndValidateNamesPath(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rfm.toml")
	if err := os.WriteFile(path, []byte("[agent]\ninterfaces = [\"eth9\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadAndValidate(path, fakeInterfaces("eth0"))
	if err == nil {
		t.Fatal("accepted a missing interface")
	}
	assertOneLineError(t, err, path, "agent.interfaces[0]", `"eth9"`)
}

func TestEncodeLayout(t *testing.T) {
	c := mustParse(t, base)
	text := c.String()
	for _, want := range []string{
		"[agent]\ninterfaces = [\"eth0\"]\n\n[agent.bpf]\n",
		"\n\n[agent.enrich.mmdb]\n",
		"\n\n[agent.enrich.rib.bmp]\n",
		"eviction_timeout = \"30s\"\n",
		"active_timeout = \"1m0s\"\n",
		"keep = \"5m0s\"\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("encoded config lacks %q:\n%s", want, text)
		}
	}
	for _, unwanted := range []string{"[agent.enrich]\n", "[agent.enrich.rib]\n", "allow"} {
		if strings.Contains(text, unwanted) {
			t.Errorf("encoded config has %q:\n%s", unwanted, text)
		}
	}
}

func TestDurationText(t *testing.T) {
	tests := []struct {
		text string
		want time.Duration
	}{
		{"30s", 30 * time.Second},
		{"1m30s", 90 * time.Second},
		{"500ms", 500 * time.Millisecond},
		{"0", 0},
		{"-5m", -5 * time.Minute},
	}
	for _, tt := range tests {
		var d Duration
		if err := d.UnmarshalText([]byte(tt.text)); err != nil {
			t.Errorf("UnmarshalText(%q): %v", tt.text, err)
			continue
		}
		if d.Duration != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, want %v", tt.text, d.Duration, tt.want)
		}
		out, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := back.UnmarshalText(out); err != nil || back != d {
			t.Errorf("MarshalText(%v) = %q, which reads back as %v, %v", d, out, back, err)
		}
	}
	for _, bad := range []string{"", "30", "1x", "s"} {
		var d Duration
		if err := d.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", bad)
		}
	}
}

func TestAllowPrefixes(t *testing.T) {
	c := mustParse(t, base+"[agent.enrich.rib.bmp]\nallow = [\"192.0.2.7/24\", \"2001:db8::1\", \"198.18.0.1\"]\n")
	got, err := c.Agent.Enrich.RIB.BMP.AllowPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("198.18.0.1/32"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AllowPrefixes = %v, want %v", got, want)
	}
	if p, err := (BMP{}).AllowPrefixes(); p != nil || err != nil {
		t.Errorf("empty allow = %v, %v; want nil, nil", p, err)
	}
}

func TestLabelDistinguishers(t *testing.T) {
	c := mustParse(t, base+"[agent.enrich.rib.bmp]\nlabel_vrfs = [\"65000:1\", \"192.0.2.1:5\"]\nmax_routes_per_peer = 1000\n")
	got, err := c.Agent.Enrich.RIB.BMP.LabelDistinguishers()
	if err != nil {
		t.Fatal(err)
	}
	// RFC 4364 4.2: type 0 (2-byte ASN 65000 = 0xfde8), type 1 (IPv4).
	want := []uint64{0x0000_fde8_0000_0001, 0x0001_c000_0201_0005}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LabelDistinguishers = %#x, want %#x", got, want)
	}
	if n := c.Agent.Enrich.RIB.BMP.MaxRoutesPerPeer; n != 1000 {
		t.Errorf("max_routes_per_peer = %d, want 1000", n)
	}
}

func TestAddrsWhenDisabled(t *testing.T) {
	c := mustParse(t, base)
	if got := c.Agent.IPFIX.CollectorAddr(); got != "" {
		t.Errorf("CollectorAddr = %q, want empty", got)
	}
	if got := c.Agent.Enrich.RIB.BMP.ListenAddr(); got != "" {
		t.Errorf("ListenAddr = %q, want empty", got)
	}
	if got := c.Agent.IPFIX.Bind.Addr(); got != ":0" {
		t.Errorf("Bind.Addr = %q, want :0", got)
	}
	// Hand-built configs may keep the brackets.
	hand := &Config{Agent: Agent{Prometheus: Prometheus{Host: "[2001:db8::1]", Port: 9669}}}
	if got := hand.PrometheusAddr(); got != "[2001:db8::1]:9669" {
		t.Errorf("PrometheusAddr = %q", got)
	}
}

func BenchmarkParse(b *testing.B) {
	doc, _ := exampleConfig(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(doc, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	doc, _ := exampleConfig(b)
	c, err := Parse(doc, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = c.String()
	}
}
