// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/stepbrobd/rfm/internal/datapath/xdp"
)

// The [agent.xdp] example of the issue, as an operator would write it.
const xdpExample = base + `
[agent.xdp]
interfaces = ["eth0"]
mode = "auto"
blackhole_from_rib = false
state_file = "/var/lib/rfm/blocklist.json"

[[agent.xdp.rules]]
name = "no-ntp-amplification"
action = "drop"
src = ["198.18.0.0/15"]
dst = []
proto = "udp"
src_ports = ["123"]
dst_ports = []
pps = 0

[[agent.xdp.rules]]
name = "limit-dns"
action = "rate_limit"
dst = ["2001:db8::53", "198.18.0.53/32"]
proto = 17
dst_ports = ["53", "5300-5310"]
pps = 1000
`

func TestXDPExample(t *testing.T) {
	c := mustParse(t, xdpExample)
	rules, e := c.Agent.XDP.XDPRules()
	if e != nil {
		t.Fatal(e)
	}
	want := []xdp.Rule{
		{Name: "no-ntp-amplification", Action: xdp.ActionDrop, Src: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")},
			Proto: 17, SrcPorts: []xdp.PortRange{{Lo: 123, Hi: 123}}},
		{Name: "limit-dns", Action: xdp.ActionRateLimit, PPS: 1000, Proto: 17,
			Dst:      []netip.Prefix{netip.MustParsePrefix("2001:db8::53/128"), netip.MustParsePrefix("198.18.0.53/32")},
			DstPorts: []xdp.PortRange{{Lo: 53, Hi: 53}, {Lo: 5300, Hi: 5310}}},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("rules\n%+v\nwant\n%+v", rules, want)
	}
	if c.Agent.XDP.XDPMode() != xdp.ModeAuto || !c.Agent.XDP.Enabled() {
		t.Errorf("mode %v enabled %v", c.Agent.XDP.XDPMode(), c.Agent.XDP.Enabled())
	}
	// The effective config re-parses to the same rules.
	again := mustParse(t, c.String())
	if !reflect.DeepEqual(again.Agent.XDP, c.Agent.XDP) {
		t.Errorf("round trip:\n%+v\nwant\n%+v", again.Agent.XDP, c.Agent.XDP)
	}
}

func TestXDPRejections(t *testing.T) {
	rule := func(body string) string {
		return base + "[agent.xdp]\ninterfaces = [\"eth0\"]\n[[agent.xdp.rules]]\n" + body
	}
	tests := []struct {
		name, doc, key, val string
	}{
		{"mode", base + "[agent.xdp]\nmode = \"driver\"\n", "agent.xdp.mode", `"driver"`},
		{"state_file relative", base + "[agent.xdp]\nstate_file = \"blocklist.json\"\n", "agent.xdp.state_file", `"blocklist.json"`},
		{"blackhole not bool", base + "[agent.xdp]\nblackhole_from_rib = \"yes\"\n", "agent.xdp.blackhole_from_rib", `"yes"`},
		{"interface dup", base + "[agent.xdp]\ninterfaces = [\"eth0\", \"eth0\"]\n", "agent.xdp.interfaces[1]", `"eth0"`},
		{"rules not tables", base + "[agent.xdp]\nrules = [\"x\"]\n", "agent.xdp.rules", ""},
		{"unknown rule key", rule("name = \"a\"\naction = \"drop\"\nsrc_port = [\"1\"]\n"), "unknown key agent.xdp.rules[0].src_port", ""},
		{"name missing", rule("action = \"drop\"\n"), "agent.xdp.rules[0].name", ""},
		{"name reserved", rule("name = \"blocklist\"\naction = \"drop\"\n"), "agent.xdp.rules[0].name", `"blocklist"`},
		{"name twice", rule("name = \"a\"\naction = \"drop\"\n[[agent.xdp.rules]]\nname = \"a\"\naction = \"pass\"\n"), "agent.xdp.rules[1].name", `"a"`},
		{"action missing", rule("name = \"a\"\n"), "agent.xdp.rules[0].action", ""},
		{"action bad", rule("name = \"a\"\naction = \"reject\"\n"), "agent.xdp.rules[0].action", `"reject"`},
		{"prefix bad", rule("name = \"a\"\naction = \"drop\"\nsrc = [\"198.18.0.0/33\"]\n"), "agent.xdp.rules[0].src[0]", `"198.18.0.0/33"`},
		{"prefix host bits", rule("name = \"a\"\naction = \"drop\"\ndst = [\"198.18.0.1/15\"]\n"), "agent.xdp.rules[0].dst[0]", `"198.18.0.1/15"`},
		{"proto bad", rule("name = \"a\"\naction = \"drop\"\nproto = \"tpc\"\n"), "agent.xdp.rules[0].proto", `"tpc"`},
		{"proto number too big", rule("name = \"a\"\naction = \"drop\"\nproto = 256\n"), "agent.xdp.rules[0].proto", "256"},
		{"proto float", rule("name = \"a\"\naction = \"drop\"\nproto = 1.5\n"), "agent.xdp.rules[0].proto", "1.5"},
		{"port bad", rule("name = \"a\"\naction = \"drop\"\nproto = \"udp\"\ndst_ports = [\"65536\"]\n"), "agent.xdp.rules[0].dst_ports[0]", `"65536"`},
		{"range reversed", rule("name = \"a\"\naction = \"drop\"\nsrc_ports = [\"20-10\"]\n"), "agent.xdp.rules[0].src_ports[0]", `"20-10"`},
		{"ports without ports", rule("name = \"a\"\naction = \"drop\"\nproto = \"icmp\"\ndst_ports = [\"1\"]\n"), "agent.xdp.rules[0].dst_ports", `["1"]`},
		{"pps missing", rule("name = \"a\"\naction = \"rate_limit\"\n"), "agent.xdp.rules[0].pps", "0"},
		{"pps on drop", rule("name = \"a\"\naction = \"drop\"\npps = 5\n"), "agent.xdp.rules[0].pps", "5"},
		{"too many rules", base + "[agent.xdp]\n" + strings.Repeat("[[agent.xdp.rules]]\naction = \"drop\"\n", 0) + manyRules(65), "agent.xdp.rules", `"65 rules"`},
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

func manyRules(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("[[agent.xdp.rules]]\nname = \"r" + strings.Repeat("x", i) + "\"\naction = \"drop\"\n")
	}
	return b.String()
}

// TestXDPWarnings: a rule that could drop BMP sessions, Prometheus
// scrapes or BGP is named; rules that cannot are not.
func TestXDPWarnings(t *testing.T) {
	doc := `[agent]
interfaces = ["eth0"]
[agent.prometheus]
host = "::"
[[agent.ipfix.collectors]]
host = "198.19.0.9"
port = 4739
[[agent.ipfix.collectors]]
host = "198.18.0.9"
port = 4739
[agent.enrich.rib.bmp]
host = "198.18.0.1"
port = 11019
allow = ["198.18.7.0/24"]
[agent.xdp]
interfaces = ["eth0"]
[[agent.xdp.rules]]
name = "drop-routers"
action = "drop"
src = ["198.18.0.0/16"]
[[agent.xdp.rules]]
name = "other-net"
action = "drop"
src = ["198.19.0.0/16"]
proto = "tcp"
dst_ports = ["11019"]
[[agent.xdp.rules]]
name = "udp-only"
action = "drop"
proto = "udp"
[[agent.xdp.rules]]
name = "pass-all"
action = "pass"
`
	c := mustParse(t, doc)
	got := XDPWarnings(c)
	want := []string{
		`agent.xdp.rules[0] ("drop-routers", drop) could drop BMP sessions to port 11019`,
		`agent.xdp.rules[0] ("drop-routers", drop) could drop Prometheus scrapes to port 9669`,
		`agent.xdp.rules[0] ("drop-routers", drop) could drop ICMP errors from the IPFIX collector 198.18.0.9`,
		`agent.xdp.rules[0] ("drop-routers", drop) could drop BGP sessions (TCP port 179)`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestXDPInterfacesMustExist(t *testing.T) {
	c := mustParse(t, base+"[agent.xdp]\ninterfaces = [\"eth0\", \"veth*\", \"eth9\"]\n")
	err := Validate(c, fakeInterfaces("eth0", "eth1"))
	if err == nil || !strings.Contains(err.Error(), `agent.xdp.interfaces[2] = "eth9": no such interface on this system`) {
		t.Errorf("Validate: %v", err)
	}
}
