// SPDX-License-Identifier: AGPL-3.0-only

// Package config loads and validates the rfm TOML configuration.
package config

import (
	"slices"
	"time"
)

// DefaultPath is where `rfm agent` looks for its config without -c.
const DefaultPath = "/etc/rfm/rfm.toml"

// Config is the whole file. Only [agent] exists today.
type Config struct {
	Agent Agent `toml:"agent"`
}

type Agent struct {
	// Interfaces to attach to: names, glob patterns ("veth*"), or ["*"]
	// for every non-loopback interface. Followed live: interfaces that
	// appear later and match are attached.
	Interfaces []string   `toml:"interfaces"`
	BPF        BPF        `toml:"bpf"`
	Collector  Collector  `toml:"collector"`
	IPFIX      IPFIX      `toml:"ipfix"`
	Prometheus Prometheus `toml:"prometheus"`
	Enrich     Enrich     `toml:"enrich"`
	Control    Control    `toml:"control"`
	XDP        XDP        `toml:"xdp"`
}

type Control struct {
	// Socket is the Unix socket of the control plane (rfm status, rfm
	// flows, ...); default /run/rfm/rfm.sock, "" disables it.
	Socket string `toml:"socket"`
}

type BPF struct {
	SampleRate  uint32 `toml:"sample_rate"`   // 1-in-N, default 100, > 0
	RingBufSize int    `toml:"ring_buf_size"` // bytes, default 262144, power of two >= 4096
	// Directions are the hooks that sample ("ingress", "egress"; default
	// both); interface counters are kept at both whatever it says.
	Directions []string `toml:"directions"`
	// Fields are optional header fields of flow records: "tcp_flags",
	// "dscp", "icmp", "ttl", "vlan"; default none.
	Fields []string `toml:"fields"`
	// FIBLookup looks up the egress interface and next hop of sampled
	// ingress packets in the kernel's FIB.
	FIBLookup bool `toml:"fib_lookup"`
	// MaxInterfaces is how many interfaces may be attached at once,
	// default and at most datapath.DefaultMaxInterfaces.
	MaxInterfaces int `toml:"max_interfaces"`
}

// HasField reports whether agent.bpf.fields lists name.
func (b BPF) HasField(name string) bool { return slices.Contains(b.Fields, name) }

// Samples reports whether the hook named dir ("ingress" or "egress")
// samples packets.
func (b BPF) Samples(dir string) bool {
	for _, d := range b.Directions {
		if d == dir {
			return true
		}
	}
	return false
}

type Collector struct {
	MaxFlows        int      `toml:"max_flows"`        // default 65536, 0..flow.MaxFlowsCeiling, 0 = the ceiling
	EvictionTimeout Duration `toml:"eviction_timeout"` // default 30s, >= 1s
	ActiveTimeout   Duration `toml:"active_timeout"`   // default 60s, >= 1s
}

type IPFIX struct {
	// Host, Port and Bind are the one-collector form; Collectors lists
	// several. A file uses one form or the other.
	Host                string           `toml:"host"` // "" and Port 0: export disabled
	Port                int              `toml:"port"`
	Bind                Endpoint         `toml:"bind"`
	Collectors          []IPFIXCollector `toml:"collectors"`            // [[agent.ipfix.collectors]], at most MaxIPFIXCollectors
	ObservationDomainID uint32           `toml:"observation_domain_id"` // default 1, > 0
	TemplateRefresh     Duration         `toml:"template_refresh"`      // default 60s, >= 1s
	MaxMessageSize      int              `toml:"max_message_size"`      // default 1400, 512..65507
	// BGPCommunities adds the destination route's communities (RFC 8549
	// basicLists) to the BGP context records carry with a BMP-fed RIB.
	BGPCommunities bool `toml:"bgp_communities"`
}

// IPFIXCollector is one collector of [[agent.ipfix.collectors]]: each
// gets its own socket (from Bind), templates, sequence numbers and queue.
type IPFIXCollector struct {
	Host string   `toml:"host"` // default "::1" when Port is set
	Port int      `toml:"port"` // default 4739 when Host is set
	Bind Endpoint `toml:"bind"`
}

// Addr is the collector's "host:port"; the host may be a name.
func (c IPFIXCollector) Addr() string { return joinHostPort(c.Host, c.Port) }

// Enabled reports whether IPFIX export is configured.
func (c IPFIX) Enabled() bool { return len(c.Targets()) > 0 }

// Targets returns the collectors to export to in either form of the
// file: the Collectors list, or the one-collector host/port/bind.
func (c IPFIX) Targets() []IPFIXCollector {
	if len(c.Collectors) > 0 {
		return c.Collectors
	}
	if c.Host != "" && c.Port != 0 {
		return []IPFIXCollector{{Host: c.Host, Port: c.Port, Bind: c.Bind}}
	}
	return nil
}

// Equal reports whether two IPFIX sections are the same.
func (c IPFIX) Equal(o IPFIX) bool {
	return c.Host == o.Host && c.Port == o.Port && c.Bind == o.Bind &&
		slices.Equal(c.Collectors, o.Collectors) && c.ObservationDomainID == o.ObservationDomainID &&
		c.TemplateRefresh == o.TemplateRefresh && c.MaxMessageSize == o.MaxMessageSize && c.BGPCommunities == o.BGPCommunities
}

type Endpoint struct {
	Host string `toml:"host"`
	Port int    `toml:"port"`
}

type Prometheus struct {
	Host string `toml:"host"` // default "::1"
	Port int    `toml:"port"` // default 9669
	// WebConfig is an optional Prometheus exporter-toolkit web config
	// file (TLS, basic auth) for the metrics endpoint.
	WebConfig string `toml:"web_config"`
	// MaxLabelSets bounds the label sets of the rfm_flow_* series
	// (default 10000, >= 1); past it, traffic of new label sets goes to
	// one overflow set per interface and direction.
	MaxLabelSets int `toml:"max_label_sets"`
	// LabelSetExpiry drops a label set that saw no traffic and has no
	// active flow for this long (default 1h, >= 1m).
	LabelSetExpiry Duration `toml:"label_set_expiry"`
}

// Listener is the part of the metrics settings the HTTP listener uses;
// the rest (label sets) applies to the flow table.
func (p Prometheus) Listener() (host string, port int, webConfig string) {
	return p.Host, p.Port, p.WebConfig
}

type Enrich struct {
	MMDB MMDB `toml:"mmdb"`
	RIB  RIB  `toml:"rib"`
}

type MMDB struct {
	ASNDB  string `toml:"asn_db"`
	CityDB string `toml:"city_db"`
}

type RIB struct {
	BMP BMP `toml:"bmp"`
}

type BMP struct {
	Host string `toml:"host"` // "" and Port 0: listener disabled
	Port int    `toml:"port"`
	// Keep is how long routes of a router whose BMP session ended stay
	// in the RIB before they are removed (default 5m).
	Keep Duration `toml:"keep"`
	// Allow lists router prefixes allowed to connect; empty allows all.
	Allow []string `toml:"allow"`
	// MaxSessions bounds concurrent BMP sessions (default 64).
	MaxSessions int `toml:"max_sessions"`
	// MaxMessageSize bounds one BMP message in bytes (default 1 MiB).
	MaxMessageSize int `toml:"max_message_size"`
	// LabelVRFs lists route distinguishers ("65000:1", "192.0.2.1:5")
	// whose VRF routes also label flows; by default only routes of the
	// global instance (global peers and the default Loc-RIB) do.
	LabelVRFs []string `toml:"label_vrfs"`
	// MaxRoutesPerPeer drops the routes of a monitored peer that holds
	// more (all views and path ids together) until the router reports
	// it up again; 0 means no limit.
	MaxRoutesPerPeer int `toml:"max_routes_per_peer"`
}

// Enabled reports whether the BMP listener is configured.
func (c BMP) Enabled() bool { return c.Host != "" && c.Port != 0 }

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration struct{ time.Duration }
