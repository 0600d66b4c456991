// SPDX-License-Identifier: AGPL-3.0-only

// Package rib holds the routes learned from BMP-monitored routers and
// answers longest-prefix-match lookups for flow enrichment.
//
// Routes are held per (router, peer, peer distinguisher, view, path id),
// so a withdraw from one peer leaves the same prefix from other peers in
// place. Views are the Adj-RIB-In before and after policy and the
// Loc-RIB (RFC 7854, RFC 9069).
//
// Best route of a prefix, in order: Loc-RIB before post-policy before
// pre-policy; then the shorter AS path (BGP path length: a set counts
// one, confederation segments zero); then the lower router address and
// name; then the lower peer type, peer distinguisher and peer address;
// then the older peer session; then the lower path id. Every criterion
// is a fixed property of the route, so the order never changes behind a
// route's back.
//
// Lifecycle: Peer Down removes that peer's routes at once. When a
// router's BMP session ends, its peers turn stale and their routes stay
// for the keep period (default 5m), then go. If the router reconnects
// (same source address and sysName) within that period, each peer it
// reports again takes over its stale routes: a route the router sends
// again replaces the stale one in place, so lookups never see a gap.
// Stale routes the router does not send again are removed at that
// peer's End-of-RIB for the view and family, or keep after the
// reconnect, whichever comes first; peers it does not report again go at
// that point too.
//
// Concurrency: readers load an immutable snapshot through an atomic
// pointer and never wait. Writers are serialised by a mutex and work in
// transactions (Begin ... Commit) that copy only the shards they change;
// a commit publishes the new snapshot atomically.
package rib

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultKeep is how long routes of a disconnected router are kept.
const DefaultKeep = 5 * time.Minute

// View is the RIB a route was monitored in.
type View uint8

const (
	PrePolicy  View = iota // Adj-RIB-In before inbound policy
	PostPolicy             // Adj-RIB-In after inbound policy
	LocRIB                 // the router's selected routes (RFC 9069)
	numViews
)

func (v View) String() string {
	switch v {
	case PrePolicy:
		return "pre-policy"
	case PostPolicy:
		return "post-policy"
	case LocRIB:
		return "loc-rib"
	}
	return "unknown"
}

// RouterKey identifies a monitored router: the source address of its BMP
// session and the sysName from its Initiation message (two routers
// behind one address stay apart; a reconnect finds its old routes).
type RouterKey struct {
	Addr netip.Addr
	Name string
}

// PeerKey identifies a BGP peer as reported by one router in the BMP
// per-peer header.
type PeerKey struct {
	Type          uint8 // BMP peer type: 0 global, 1 RD, 2 local, 3 Loc-RIB
	Distinguisher uint64
	Addr          netip.Addr // zero address for a Loc-RIB instance
}

// route is one path for a prefix: 16 bytes, no pointers.
type route struct {
	path   uint32 // interned AS path index, 0 for the empty path
	src    uint32 // peer index << 2 | view
	pathID uint32
	origin uint32 // origin ASN (the peer's AS for an empty path)
}

func (r route) peer() uint32 { return r.src >> 2 }
func (r route) view() View   { return View(r.src & 3) }

// entry is the value stored per prefix. routes is sorted best first and
// never written after it is stored: a change stores a new slice.
type entry struct {
	routes []route
	origin uint32 // origin ASN of routes[0], so lookups need no pointer chase
	bits   uint8  // prefix length, for flow export (the fast lookups do not return the prefix)
}

// snapshot is one published, immutable state of the RIB.
type snapshot struct {
	fib                  // the global instance
	vrfs  []*fib         // by VRF index - 1; nil for a free index
	label []uint32       // indices of the VRF tables that label flows, in VRF key order
	peers []*Peer        // by index; entries of released indices are nil
	paths [][]*pathChunk // by peer index: the peer's path chunks
	gen   uint64

	routes   [2]int // by family: 0 IPv4, 1 IPv6
	prefixes [2]int
	npeers   int
}

// Options configure a RIB.
type Options struct {
	Keep  time.Duration // default DefaultKeep
	Clock Clock         // default wall clock
}

// RIB is the routing table. Lookups are safe for concurrent use and
// never block; writes go through Begin/Commit.
type RIB struct {
	keep  time.Duration
	clock Clock
	cur   atomic.Pointer[snapshot]

	mu          sync.Mutex // serialises writers; guards everything below
	tx          Tx
	vrfs        map[VRFKey]*vrf
	vrfByIdx    []*vrf // by index - 1
	freeVRF     []uint32
	labelRDs    map[uint64]bool // distinguishers whose VRFs label flows
	peers       []*Peer         // registry, shared with the published snapshot
	peersShared bool            // peers must be copied before it is written
	free        []uint32
	routers     map[RouterKey]*router

	pathLists       [][]*pathChunk // by peer index, shared with the published snapshot
	pathListsShared bool
}

// New returns an empty RIB.
func New(o Options) *RIB {
	if o.Keep <= 0 {
		o.Keep = DefaultKeep
	}
	if o.Clock == nil {
		o.Clock = wallClock{}
	}
	r := &RIB{
		keep:    o.Keep,
		clock:   o.Clock,
		routers: make(map[RouterKey]*router),
		vrfs:    make(map[VRFKey]*vrf),
	}
	r.cur.Store(&snapshot{})
	r.tx.r = r
	r.tx.shards = make(map[shardID]shardState)
	return r
}

// Generation changes whenever a commit changed the table.
func (r *RIB) Generation() uint64 {
	if r == nil {
		return 0
	}
	return r.cur.Load().gen
}

// RouteInfo describes one route, for `rfm rib lookup`.
type RouteInfo struct {
	Prefix    netip.Prefix
	Origin    uint32 // 0: unknown (trailing AS_SET)
	Path      Path
	Router    RouterKey
	Peer      PeerKey
	PeerASN   uint32
	PeerBGPID netip.Addr
	View      View
	PathID    uint32
}

// LookupRoute returns the best route for the longest prefix matching a.
func (r *RIB) LookupRoute(a netip.Addr) (RouteInfo, bool) {
	if r == nil {
		return RouteInfo{}, false
	}
	s := r.cur.Load()
	p, e, ok := s.lookupPrefix(a)
	if !ok {
		return RouteInfo{}, false
	}
	return s.info(p, e.routes[0]), true
}

// LookupAll returns every route of the longest prefix matching a, best
// first.
func (r *RIB) LookupAll(a netip.Addr) []RouteInfo {
	if r == nil {
		return nil
	}
	s := r.cur.Load()
	p, e, ok := s.lookupPrefix(a)
	if !ok {
		return nil
	}
	return s.infos(p, e)
}

// infos returns every route of e, the entry of prefix p, best first.
func (s *snapshot) infos(p netip.Prefix, e entry) []RouteInfo {
	out := make([]RouteInfo, len(e.routes))
	for i, rt := range e.routes {
		out[i] = s.info(p, rt)
	}
	return out
}

func (s *snapshot) info(p netip.Prefix, rt route) RouteInfo {
	peer := s.peers[rt.peer()]
	return RouteInfo{
		Prefix:    p,
		Origin:    rt.origin,
		Path:      s.path(rt),
		Router:    peer.router.key,
		Peer:      peer.key,
		PeerASN:   peer.asn,
		PeerBGPID: peer.bgpID,
		View:      rt.view(),
		PathID:    rt.pathID,
	}
}

func originOf(path Path, p *Peer) uint32 {
	asn, empty := path.Origin()
	if empty {
		return p.asn
	}
	return asn
}

// Counts are totals of the published table.
type Counts struct {
	Routes4, Routes6     int // routes (one per peer, view and path id)
	Prefixes4, Prefixes6 int
	Peers                int // peer sessions holding or able to hold routes, stale ones included
}

// Counts reads the totals without waiting for writers.
func (r *RIB) Counts() Counts {
	if r == nil {
		return Counts{}
	}
	s := r.cur.Load()
	return Counts{
		Routes4: s.routes[0], Routes6: s.routes[1],
		Prefixes4: s.prefixes[0], Prefixes6: s.prefixes[1],
		Peers: s.npeers,
	}
}

// Summary lists routers and peers, for `rfm rib summary`.
type Summary struct {
	Counts
	Routers []RouterSummary
	VRFs    []VRFSummary // in VRF key order
}

type RouterSummary struct {
	Router    RouterKey
	Descr     string // sysDescr from the Initiation message
	Connected bool
	Peers     []PeerSummary
}

type PeerSummary struct {
	Peer    PeerKey
	ASN     uint32
	BGPID   netip.Addr
	Stale   bool // the router's session ended or was replaced; routes kept for now
	Routes4 int
	Routes6 int
}

// Summary takes the writer lock (it may wait for a running commit).
func (r *RIB) Summary() Summary {
	if r == nil {
		return Summary{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Summary{Counts: r.Counts()}
	vrfs := map[*vrf]*VRFSummary{}
	for _, rt := range r.routers {
		rs := RouterSummary{Router: rt.key, Descr: rt.descr, Connected: rt.cur != nil}
		for _, p := range r.peers {
			if p == nil || p.router != rt {
				continue
			}
			ps := PeerSummary{Peer: p.key, ASN: p.asn, BGPID: p.bgpID, Stale: p.stale}
			for v := range numViews {
				ps.Routes4 += p.routes[v][0]
				ps.Routes6 += p.routes[v][1]
			}
			if p.vrf != nil {
				vs := vrfs[p.vrf]
				if vs == nil {
					vs = &VRFSummary{VRF: p.vrf.key, LabelsFlows: r.labelRDs[p.vrf.key.Distinguisher]}
					vrfs[p.vrf] = vs
				}
				vs.Peers++
				vs.Routes4 += ps.Routes4
				vs.Routes6 += ps.Routes6
			}
			rs.Peers = append(rs.Peers, ps)
		}
		slices.SortFunc(rs.Peers, func(a, b PeerSummary) int { return comparePeerKeys(a.Peer, b.Peer) })
		out.Routers = append(out.Routers, rs)
	}
	slices.SortFunc(out.Routers, func(a, b RouterSummary) int { return compareRouterKeys(a.Router, b.Router) })
	for _, vs := range vrfs {
		out.VRFs = append(out.VRFs, *vs)
	}
	slices.SortFunc(out.VRFs, func(a, b VRFSummary) int { return compareVRFKeys(a.VRF, b.VRF) })
	return out
}

func compareRouterKeys(a, b RouterKey) int {
	return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Name, b.Name))
}

func comparePeerKeys(a, b PeerKey) int {
	return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Distinguisher, b.Distinguisher), a.Addr.Compare(b.Addr))
}
