// SPDX-License-Identifier: AGPL-3.0-only

// Package control is the agent's local control API: HTTP/1.1 with JSON
// bodies on a Unix socket, used by `rfm status`, `rfm flows`, `rfm rib
// ...`, `rfm set sample-rate` and `rfm reload`, and by any HTTP client
// that can dial a Unix socket (curl --unix-socket).
//
// Paths carry the API version (/v1/...). Within a version, fields are
// only ever added to answers; a change that would make an old client
// misread an answer gets a new version. docs/api.md describes every
// path, request, answer and error.
package control

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"
)

// APIVersion is the version prefix of every path this agent serves.
const APIVersion = "v1"

// Paths of the API.
const (
	PathStatus     = "/" + APIVersion + "/status"
	PathFlows      = "/" + APIVersion + "/flows"
	PathRIBSummary = "/" + APIVersion + "/rib/summary"
	PathRIBLookup  = "/" + APIVersion + "/rib/lookup"
	PathSampleRate = "/" + APIVersion + "/sample-rate"
	PathReload     = "/" + APIVersion + "/reload"
)

// Call is one API request as the client sends it.
type Call struct {
	Method string
	Path   string
	Query  url.Values // nil: none
	Body   any        // encoded as JSON; nil: no body
}

// String names the call in error messages: "GET /v1/status".
func (c Call) String() string { return c.Method + " " + c.Path }

// StatusCall asks for the agent's state (Status).
func StatusCall() Call { return Call{Method: http.MethodGet, Path: PathStatus} }

// FlowsCall asks for the live flow table (Flows); zero fields of args
// are left to the agent's defaults.
func FlowsCall(args FlowsArgs) Call {
	q := url.Values{}
	if args.Top != 0 {
		q.Set("top", strconv.Itoa(args.Top))
	}
	if args.Sort != "" {
		q.Set("sort", args.Sort)
	}
	if args.Iface != "" {
		q.Set("iface", args.Iface)
	}
	return Call{Method: http.MethodGet, Path: PathFlows, Query: q}
}

// RIBSummaryCall asks for the RIB's routers, peers and counts (RIBSummary).
func RIBSummaryCall() Call { return Call{Method: http.MethodGet, Path: PathRIBSummary} }

// RIBLookupCall asks for the routes covering addr (RIBLookup).
func RIBLookupCall(addr netip.Addr) Call {
	return Call{Method: http.MethodGet, Path: PathRIBLookup, Query: url.Values{"addr": {addr.String()}}}
}

// SetSampleRateCall sets the sample rate (SampleRateChange).
func SetSampleRateCall(rate uint32) Call {
	return Call{Method: http.MethodPut, Path: PathSampleRate, Body: SetSampleRateArgs{Rate: rate}}
}

// ReloadCall makes the agent re-read its config file (ReloadResult).
func ReloadCall() Call { return Call{Method: http.MethodPost, Path: PathReload} }

// Error is an error answer: the HTTP status and the JSON body. Parameter
// and Value name the offending query parameter or body field and what
// was sent, for 400 answers about one input.
type Error struct {
	Status    int     `json:"-"`
	Message   string  `json:"error"`
	Parameter string  `json:"parameter,omitempty"`
	Value     *string `json:"value,omitempty"`
}

// Error is the message alone: it is what `rfm` prints.
func (e *Error) Error() string { return e.Message }

// BadParam is the error an Agent method returns for an input that is
// well-formed but names nothing the agent has (an interface that is not
// attached); the server answers it with 400.
func BadParam(param, value, msg string) error {
	return &Error{Status: http.StatusBadRequest, Message: msg, Parameter: param, Value: &value}
}

// Agent is what the control server needs from the running agent. Every
// method is called from a request's goroutine and must be safe for
// concurrent use. A method's error is answered with 500, unless it is an
// *Error (its own status) or the context's (503).
type Agent interface {
	Status(ctx context.Context) (Status, error)
	Flows(ctx context.Context, args FlowsArgs) (Flows, error)
	RIBSummary(ctx context.Context) (RIBSummary, error)
	RIBLookup(ctx context.Context, addr netip.Addr) (RIBLookup, error)
	SetSampleRate(ctx context.Context, rate uint32) (SampleRateChange, error)
	Reload(ctx context.Context) (ReloadResult, error)
}

// Status answers GET /v1/status.
type Status struct {
	Version    string            `json:"version"`
	StartedAt  time.Time         `json:"started_at"`
	Uptime     Seconds           `json:"uptime_seconds"`
	ConfigPath string            `json:"config_path"`
	SampleRate uint32            `json:"sample_rate"`
	Interfaces []InterfaceStatus `json:"interfaces"`
	Flows      FlowTableStatus   `json:"flows"`
	Datapath   DatapathStatus    `json:"datapath"`
	IPFIX      *IPFIXStatus      `json:"ipfix,omitempty"` // nil: export disabled; else the first collector
	// IPFIXCollectors are all collectors, in the order of the config.
	IPFIXCollectors []IPFIXStatus `json:"ipfix_collectors,omitempty"`
	BMP             *BMPStatus    `json:"bmp,omitempty"`    // nil: BMP station disabled
	Memory          *MemoryStatus `json:"memory,omitempty"` // nil: not measured
	XDP             *XDPStatus    `json:"xdp,omitempty"`    // nil: XDP off
}

// MemoryStatus is the agent's memory in bytes: Anonymous plus BPFLocked
// is what it costs the machine; File is clean pages of its binary.
type MemoryStatus struct {
	Anonymous uint64 `json:"anonymous_bytes"`
	BPFLocked uint64 `json:"bpf_locked_bytes"`
	File      uint64 `json:"file_bytes"`
}

// Seconds is a duration carried as float seconds.
type Seconds float64

func (s Seconds) Duration() time.Duration { return time.Duration(float64(s) * float64(time.Second)) }

// InterfaceStatus is one attached interface with its counters (every
// packet, not sampled).
type InterfaceStatus struct {
	Name           string `json:"name"`
	Index          int    `json:"index"`
	IngressPackets uint64 `json:"ingress_packets"`
	IngressBytes   uint64 `json:"ingress_bytes"`
	EgressPackets  uint64 `json:"egress_packets"`
	EgressBytes    uint64 `json:"egress_bytes"`
}

type FlowTableStatus struct {
	Active          int    `json:"active"`
	Capacity        int    `json:"capacity"` // max_flows; 0 = unlimited
	IdleTimeout     string `json:"idle_timeout"`
	ForcedEvictions uint64 `json:"forced_evictions"`
	IdleEvictions   uint64 `json:"idle_evictions"`
}

type DatapathStatus struct {
	RingBufSize int    `json:"ring_buf_size"`
	RingDrops   uint64 `json:"ring_drops"`
	Malformed   uint64 `json:"malformed"`
}

type IPFIXStatus struct {
	Collector string `json:"collector"`
	Records   uint64 `json:"records"`
	Messages  uint64 `json:"messages"`
	Dropped   uint64 `json:"dropped_records"`
	Errors    uint64 `json:"errors"`
}

type BMPStatus struct {
	Listen   string `json:"listen"`
	Sessions int    `json:"sessions"`
	Routers  int    `json:"routers"`
	Peers    int    `json:"peers"`
	Routes4  int    `json:"routes_ipv4"`
	Routes6  int    `json:"routes_ipv6"`
}

// FlowsArgs selects flows for GET /v1/flows (query parameters top, sort
// and iface).
type FlowsArgs struct {
	Top   int    `json:"top,omitempty"`   // 0: all
	Sort  string `json:"sort,omitempty"`  // "bytes" (default) or "packets"
	Iface string `json:"iface,omitempty"` // "": every interface
}

// Flows answers GET /v1/flows.
type Flows struct {
	SampleRate uint32 `json:"sample_rate"`
	Active     int    `json:"active"` // flows in the table, before Top and Iface
	Flows      []Flow `json:"flows"`
}

// Flow is one active flow. Packets and Bytes are estimates: the sampled
// counts times the sample rate.
type Flow struct {
	Iface     string     `json:"iface"`
	Direction string     `json:"direction"` // "ingress" or "egress"
	Proto     uint8      `json:"proto"`
	Src       netip.Addr `json:"src"`
	Dst       netip.Addr `json:"dst"`
	SrcPort   uint16     `json:"src_port"`
	DstPort   uint16     `json:"dst_port"`
	Packets   uint64     `json:"packets"`
	Bytes     uint64     `json:"bytes"`
	Sampled   uint64     `json:"sampled_packets"`
	Start     time.Time  `json:"start"`
	LastSeen  time.Time  `json:"last_seen"`
	SrcASN    uint32     `json:"src_asn,omitempty"`
	DstASN    uint32     `json:"dst_asn,omitempty"`
	SrcCity   string     `json:"src_city,omitempty"`
	DstCity   string     `json:"dst_city,omitempty"`
	// Key fields of agent.bpf.fields ("dscp", "vlan"): flows that differ
	// only in them are listed apart. Absent when 0.
	DSCP      uint8  `json:"dscp,omitempty"`
	VLAN      uint16 `json:"vlan,omitempty"`
	InnerVLAN uint16 `json:"inner_vlan,omitempty"`
	// BGP context of the destination (agent.enrich.rib.bmp): the RIB
	// best route's next hop and prefix length. Absent when unknown or 0
	// (a default route shows its next hop only).
	BGPNextHop   netip.Addr `json:"bgp_next_hop,omitzero"`
	DstPrefixLen uint8      `json:"dst_prefix_len,omitempty"`
}

// RIBSummary answers GET /v1/rib/summary.
type RIBSummary struct {
	Enabled   bool        `json:"enabled"` // false: no BMP station configured
	Routes4   int         `json:"routes_ipv4"`
	Routes6   int         `json:"routes_ipv6"`
	Prefixes4 int         `json:"prefixes_ipv4"`
	Prefixes6 int         `json:"prefixes_ipv6"`
	Routers   []RIBRouter `json:"routers"`
	VRFs      []RIBVRF    `json:"vrfs"` // routes kept apart from the global table, per router and distinguisher
}

// RIBVRF counts the routes of one VRF of one router: its RD-instance
// and local-instance peers and its Loc-RIB.
type RIBVRF struct {
	RIBVRFKey
	Peers   int `json:"peers"`
	Routes4 int `json:"routes_ipv4"`
	Routes6 int `json:"routes_ipv6"`
}

// RIBVRFKey names one VRF of one router; its fields are inline in the
// JSON of the types that embed it.
type RIBVRFKey struct {
	Router        netip.Addr `json:"router"`
	RouterName    string     `json:"router_name,omitempty"`
	RD            string     `json:"rd"` // the distinguisher as "65000:1" or "192.0.2.1:5"
	Distinguisher uint64     `json:"distinguisher"`
	LabelsFlows   bool       `json:"labels_flows"` // listed in agent.enrich.rib.bmp.label_vrfs
}

type RIBRouter struct {
	Addr      netip.Addr `json:"addr"`
	Name      string     `json:"name,omitempty"`
	Descr     string     `json:"descr,omitempty"`
	Connected bool       `json:"connected"`
	Peers     []RIBPeer  `json:"peers"`
}

type RIBPeer struct {
	Addr          netip.Addr `json:"addr"`
	Type          uint8      `json:"type"` // BMP peer type: 0 global, 1 RD, 2 local, 3 Loc-RIB
	Distinguisher uint64     `json:"distinguisher,omitempty"`
	RD            string     `json:"rd,omitempty"` // Distinguisher formatted, for VRF peers
	ASN           uint32     `json:"asn"`
	BGPID         netip.Addr `json:"bgp_id"`
	Stale         bool       `json:"stale,omitempty"`
	Routes4       int        `json:"routes_ipv4"`
	Routes6       int        `json:"routes_ipv6"`
}

// RIBLookup answers GET /v1/rib/lookup?addr=ADDR: every route of the longest matching
// global prefix, best first; the same per VRF; what the MMDB files say
// about the address; and the ASN flows get.
type RIBLookup struct {
	Addr     netip.Addr     `json:"addr"`
	Routes   []RIBRoute     `json:"routes"`
	VRFs     []RIBVRFRoutes `json:"vrfs"`
	MMDBASN  uint32         `json:"mmdb_asn,omitempty"`
	MMDBCity string         `json:"mmdb_city,omitempty"`
	FlowASN  uint32         `json:"flow_asn,omitempty"` // what labels flows: RIB, else MMDB
}

// RIBVRFRoutes are one VRF's routes for the longest prefix it holds
// matching the address, best first.
type RIBVRFRoutes struct {
	RIBVRFKey
	Routes []RIBRoute `json:"routes"`
}

type RIBRoute struct {
	Prefix     netip.Prefix `json:"prefix"`
	Origin     uint32       `json:"origin_asn"` // 0: unknown (trailing AS_SET)
	ASPath     string       `json:"as_path"`    // "64500 64501 {64502,64503}"
	Router     netip.Addr   `json:"router"`
	RouterName string       `json:"router_name,omitempty"`
	Peer       netip.Addr   `json:"peer"`
	PeerASN    uint32       `json:"peer_asn"`
	View       string       `json:"view"` // "pre-policy", "post-policy" or "loc-rib"
	PathID     uint32       `json:"path_id,omitempty"`
	// What IPFIX export reports of the route (docs/ipfix.md, BGP context).
	NextHop          netip.Addr `json:"next_hop,omitzero"`
	Communities      []string   `json:"communities,omitempty"`       // "65001:100"
	LargeCommunities []string   `json:"large_communities,omitempty"` // "65001:1:2"
}

// SetSampleRateArgs is the body of PUT /v1/sample-rate.
type SetSampleRateArgs struct {
	Rate uint32 `json:"rate"`
}

// SampleRateChange answers PUT /v1/sample-rate.
type SampleRateChange struct {
	Previous uint32 `json:"previous"`
	Rate     uint32 `json:"rate"`
}

// ReloadResult answers POST /v1/reload: what changed, and which changed keys
// need a restart to take effect.
type ReloadResult struct {
	Applied      []string `json:"applied"`
	NeedsRestart []string `json:"needs_restart,omitempty"`
}
