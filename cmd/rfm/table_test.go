// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/control"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

var statusFull = control.Status{
	Version: "0.9.0", StartedAt: t0, Uptime: 3*86400 + 3725.4, ConfigPath: "/etc/rfm/config.toml", SampleRate: 100,
	Interfaces: []control.InterfaceStatus{
		{Name: "eth0", Index: 2, IngressPackets: 1843211, IngressBytes: 2471212345, EgressPackets: 912003, EgressBytes: 88123456},
		{Name: "veth-long-name0", Index: 17, IngressPackets: 12, IngressBytes: 840},
	},
	Flows:    control.FlowTableStatus{Active: 1204, Capacity: 65536, IdleTimeout: "30s", ForcedEvictions: 0, IdleEvictions: 5021},
	Datapath: control.DatapathStatus{RingBufSize: 262144, RingDrops: 0, Malformed: 3},
	IPFIX:    &control.IPFIXStatus{Collector: "198.18.0.2:4739", Records: 48213, Messages: 1630},
	BMP:      &control.BMPStatus{Listen: "[::]:11019", Sessions: 1, Routers: 1, Peers: 2, Routes4: 951234, Routes6: 210456},
	Memory:   &control.MemoryStatus{Anonymous: 4608 << 10, BPFLocked: 507084, File: 14 << 20},
}

var flows = control.Flows{SampleRate: 100, Active: 1204, Flows: []control.Flow{
	{Iface: "eth0", Direction: "ingress", Proto: 6, Src: netip.MustParseAddr("198.18.7.10"), SrcPort: 443,
		Dst: netip.MustParseAddr("198.19.0.5"), DstPort: 51234, Packets: 81200, Bytes: 117123400, Sampled: 812,
		SrcASN: 64500, DstASN: 64511, SrcCity: "Berlin", BGPNextHop: netip.MustParseAddr("198.18.1.1"), DstPrefixLen: 15},
	{Iface: "eth0", Direction: "egress", Proto: 17, Src: netip.MustParseAddr("2001:db8::1"), SrcPort: 53,
		Dst: netip.MustParseAddr("2001:db8:ffff::53"), DstPort: 40001, Packets: 300, Bytes: 45000, Sampled: 3},
	{Iface: "veth0", Direction: "egress", Proto: 58, Src: netip.MustParseAddr("2001:db8::1"),
		Dst: netip.MustParseAddr("2001:db8::2"), Packets: 100, Bytes: 10400, Sampled: 1},
	{Iface: "veth0", Direction: "ingress", Proto: 89, Src: netip.MustParseAddr("198.18.0.1"),
		Dst: netip.MustParseAddr("198.18.0.2"), Packets: 100, Bytes: 800, Sampled: 1,
		BGPNextHop: netip.MustParseAddr("198.18.0.254")}, // a default route: prefix length 0
}}

var rib = control.RIBSummary{Enabled: true, Routes4: 951234, Routes6: 210456, Prefixes4: 950001, Prefixes6: 210400, Routers: []control.RIBRouter{
	{Addr: netip.MustParseAddr("198.18.0.9"), Name: "edge1", Connected: true, Peers: []control.RIBPeer{
		{Addr: netip.MustParseAddr("198.18.1.1"), ASN: 64500, BGPID: netip.MustParseAddr("198.18.1.1"), Routes4: 951234},
		{Addr: netip.IPv4Unspecified(), Type: 3, ASN: 64499, BGPID: netip.MustParseAddr("198.18.0.9"), Routes4: 1},
		{Addr: netip.MustParseAddr("2001:db8:1::1"), Type: 1, Distinguisher: 64500<<32 | 7, ASN: 64501, BGPID: netip.MustParseAddr("198.18.1.2"), Routes6: 210456, Stale: true},
		{Addr: netip.IPv4Unspecified(), Type: 3, Distinguisher: 1<<48 | 198<<40 | 18<<32 | 9<<16 | 5, ASN: 64499, BGPID: netip.MustParseAddr("198.18.0.9"), Routes4: 12},
	}},
	{Addr: netip.MustParseAddr("198.18.0.10"), Connected: false, Peers: []control.RIBPeer{}},
}, VRFs: []control.RIBVRF{
	{RIBVRFKey: control.RIBVRFKey{Router: netip.MustParseAddr("198.18.0.9"), RouterName: "edge1", RD: "64500:7"}, Peers: 1, Routes6: 210456},
	{RIBVRFKey: control.RIBVRFKey{Router: netip.MustParseAddr("198.18.0.9"), RouterName: "edge1", RD: "198.18.0.9:5", LabelsFlows: true}, Peers: 1, Routes4: 12},
}}

var lookup = control.RIBLookup{Addr: netip.MustParseAddr("198.18.7.10"), MMDBASN: 64500, MMDBCity: "Berlin", Routes: []control.RIBRoute{
	{Prefix: netip.MustParsePrefix("198.18.0.0/15"), Origin: 64500, ASPath: "64501 64500", Router: netip.MustParseAddr("198.18.0.9"),
		RouterName: "edge1", Peer: netip.MustParseAddr("198.18.1.1"), PeerASN: 64501, View: "post-policy"},
	{Prefix: netip.MustParsePrefix("198.18.0.0/15"), Origin: 0, ASPath: "64502 {64503,64504}", Router: netip.MustParseAddr("198.18.0.10"),
		Peer: netip.MustParseAddr("198.18.1.2"), PeerASN: 64502, View: "pre-policy", PathID: 2},
	{Prefix: netip.MustParsePrefix("198.18.0.0/15"), Origin: 64500, ASPath: "64501 64500", Router: netip.MustParseAddr("198.18.0.9"),
		RouterName: "edge1", Peer: netip.IPv4Unspecified(), PeerASN: 64499, View: "loc-rib"},
}, FlowASN: 64500, VRFs: []control.RIBVRFRoutes{
	{RIBVRFKey: control.RIBVRFKey{Router: netip.MustParseAddr("198.18.0.9"), RouterName: "edge1", RD: "198.18.0.9:5", LabelsFlows: true}, Routes: []control.RIBRoute{
		{Prefix: netip.MustParsePrefix("198.18.7.0/24"), Origin: 64700, ASPath: "64700", Router: netip.MustParseAddr("198.18.0.9"),
			RouterName: "edge1", Peer: netip.IPv4Unspecified(), PeerASN: 64499, View: "loc-rib"},
	}},
	{RIBVRFKey: control.RIBVRFKey{Router: netip.MustParseAddr("198.18.0.9"), RouterName: "edge1", RD: "64500:7"}, Routes: []control.RIBRoute{
		{Prefix: netip.MustParsePrefix("198.18.0.0/16"), Origin: 65001, ASPath: "65001", Router: netip.MustParseAddr("198.18.0.9"),
			RouterName: "edge1", Peer: netip.MustParseAddr("2001:db8:1::1"), PeerASN: 65001, View: "pre-policy"},
	}},
}}

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		name   string
		render func(*bytes.Buffer) error
	}{
		{"status", func(b *bytes.Buffer) error { return renderStatus(b, statusFull) }},
		{"status_minimal", func(b *bytes.Buffer) error {
			return renderStatus(b, control.Status{Version: "dev", Uptime: 4.6, ConfigPath: "rfm.toml", SampleRate: 1,
				Flows: control.FlowTableStatus{IdleTimeout: "1m0s"}, Datapath: control.DatapathStatus{RingBufSize: 4096}})
		}},
		{"flows", func(b *bytes.Buffer) error { return renderFlows(b, flows, control.FlowsArgs{Top: 20, Sort: "bytes"}) }},
		{"flows_plain", func(b *bytes.Buffer) error {
			plain := control.Flows{SampleRate: 1, Active: 2, Flows: flows.Flows[1:3]}
			return renderFlows(b, plain, control.FlowsArgs{Top: 2, Sort: "packets", Iface: "veth0"})
		}},
		{"flows_empty", func(b *bytes.Buffer) error { return renderFlows(b, control.Flows{SampleRate: 10}, control.FlowsArgs{}) }},
		{"rib_summary", func(b *bytes.Buffer) error { return renderRIBSummary(b, rib) }},
		{"rib_disabled", func(b *bytes.Buffer) error { return renderRIBSummary(b, control.RIBSummary{}) }},
		{"rib_lookup", func(b *bytes.Buffer) error { return renderRIBLookup(b, lookup) }},
		{"rib_lookup_default", func(b *bytes.Buffer) error {
			return renderRIBLookup(b, control.RIBLookup{Addr: netip.MustParseAddr("198.19.0.1"), MMDBASN: 64999, FlowASN: 64999, Routes: []control.RIBRoute{
				{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Origin: 64500, ASPath: "64500", Router: netip.MustParseAddr("198.18.0.9"),
					Peer: netip.MustParseAddr("198.18.1.1"), PeerASN: 64500, View: "pre-policy"},
			}})
		}},
		{"rib_lookup_bgp", func(b *bytes.Buffer) error {
			return renderRIBLookup(b, control.RIBLookup{Addr: netip.MustParseAddr("198.19.1.5"), FlowASN: 65010, Routes: []control.RIBRoute{
				{Prefix: netip.MustParsePrefix("198.19.1.0/24"), Origin: 65010, ASPath: "65001 65010", Router: netip.MustParseAddr("127.0.0.1"),
					RouterName: "r2", Peer: netip.IPv4Unspecified(), PeerASN: 65002, View: "loc-rib", NextHop: netip.MustParseAddr("198.18.0.2"),
					Communities: []string{"65001:100"}, LargeCommunities: []string{"65001:1:2"}},
				{Prefix: netip.MustParsePrefix("198.19.1.0/24"), Origin: 65010, ASPath: "65001 65010", Router: netip.MustParseAddr("127.0.0.1"),
					RouterName: "r2", Peer: netip.MustParseAddr("127.0.0.11"), PeerASN: 65001, View: "pre-policy"},
			}})
		}},
		{"status_two_collectors", func(b *bytes.Buffer) error {
			return renderStatus(b, control.Status{Version: "dev", Uptime: 4.6, ConfigPath: "rfm.toml", SampleRate: 1,
				Flows: control.FlowTableStatus{IdleTimeout: "1m0s"}, Datapath: control.DatapathStatus{RingBufSize: 4096},
				IPFIXCollectors: []control.IPFIXStatus{
					{Collector: "198.18.0.2:4739", Records: 48213, Messages: 1630},
					{Collector: "198.18.0.3:2055", Records: 48000, Messages: 1620, Dropped: 213, Errors: 7},
				}})
		}},
		{"rib_lookup_none", func(b *bytes.Buffer) error {
			return renderRIBLookup(b, control.RIBLookup{Addr: netip.MustParseAddr("2001:db8::1")})
		}},
		{"sample_rate", func(b *bytes.Buffer) error {
			return renderSampleRate(b, control.SampleRateChange{Previous: 100, Rate: 10})
		}},
		{"reload", func(b *bytes.Buffer) error {
			return renderReload(b, control.ReloadResult{Applied: []string{"agent.bpf.sample_rate", "agent.collector.eviction_timeout"}, NeedsRestart: []string{"agent.bpf.ring_buf_size"}})
		}},
		{"reload_nothing", func(b *bytes.Buffer) error { return renderReload(b, control.ReloadResult{}) }},
		{"status_xdp", func(b *bytes.Buffer) error {
			return renderXDPStatus(b, &control.XDPStatus{Rules: 2, Blocklist: 3, Blackholes: 1,
				Interfaces: []control.XDPInterfaceStatus{
					{Name: "eth0", Index: 2, Mode: "native", Attached: true, Hits: []control.XDPRuleHits{
						{Rule: "blocklist", Action: "drop", Packets: 1200, Bytes: 76800},
						{Rule: "no-ntp-amplification", Action: "drop", Packets: 5, Bytes: 2500},
					}},
					{Name: "eth1", Index: 3, Mode: "generic", Attached: false},
				},
				Failed: []control.XDPFailure{{Index: 4, Error: `xdp eth2: XDP program "fw" (id 7) already holds XDP on this interface; rfm does not replace it`}},
			})
		}},
		{"block_list", func(b *bytes.Buffer) error {
			exp := t0.Add(10 * time.Minute)
			return renderBlocklist(b, control.Blocklist{Entries: []control.BlockEntry{
				{Prefix: "198.18.7.0/24", Added: t0, Expires: &exp, Reason: "scanner"},
				{Prefix: "2001:db8:bad::/48", Added: t0},
			}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tc.render(&b); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if b.String() != string(want) {
				t.Errorf("%s output:\n%s\nwant:\n%s", tc.name, b.String(), want)
			}
			for i, line := range strings.Split(b.String(), "\n") {
				if strings.TrimRight(line, " ") != line {
					t.Errorf("line %d has trailing spaces: %q", i+1, line)
				}
			}
		})
	}
}

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {1 << 20, "1.0 MiB"},
		{5 << 30, "5.0 GiB"}, {1 << 40, "1.0 TiB"}, {1 << 50, "1.0 PiB"}, {1 << 60, "1024.0 PiB"},
	} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint32
		wantErr string
	}{
		{"1", 1, ""}, {"4294967295", 4294967295, ""},
		{"0", 0, "sample rate 0: must be at least 1"},
		{"-3", 0, `sample rate "-3": want a whole number from 1 to 4294967295`},
		{"4294967296", 0, `sample rate "4294967296": want a whole number from 1 to 4294967295`},
		{"ten", 0, `sample rate "ten": want a whole number from 1 to 4294967295`},
	} {
		got, err := parseSampleRate(tc.in)
		if (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) || got != tc.want {
			t.Errorf("parseSampleRate(%q) = %d, %v; want %d, %q", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
	for _, tc := range []struct{ in, want, wantErr string }{
		{"198.18.0.1", "198.18.0.1", ""},
		{"2001:db8::1", "2001:db8::1", ""},
		{"fe80::1%eth0", "fe80::1", ""},
		{"198.18.0.0/15", "", `rib lookup: address "198.18.0.0/15": not an IPv4 or IPv6 address`},
		{"example.com", "", `rib lookup: address "example.com": not an IPv4 or IPv6 address`},
	} {
		got, err := parseLookupAddr(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("parseLookupAddr(%q) error = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("parseLookupAddr(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}
