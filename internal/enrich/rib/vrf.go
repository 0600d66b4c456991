// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"cmp"
	"net/netip"
	"slices"
)

// Routing instances. BMP reports peers of the global instance (peer
// type 0) and the router's default Loc-RIB (type 3, distinguisher 0)
// next to peers of VRFs (type 1, "RD instance", whose distinguisher is
// the VRF's route distinguisher), local-instance peers (type 2) and
// per-VRF Loc-RIBs (type 3 with a non-zero distinguisher). VRF
// addresses overlap the global table and each other, so their routes
// must not compete with global ones: each (router, distinguisher) has
// its own table, and flow labels come from the global table plus the
// VRFs named with SetLabelVRFs.

// Global reports whether the peer belongs to the global routing
// instance: a global-instance peer, or the default Loc-RIB.
func (k PeerKey) Global() bool {
	return k.Type == 0 || k.Type == 3 && k.Distinguisher == 0
}

// VRFKey identifies the routes of one VRF of one router: its peers of
// types 1 and 2, and its Loc-RIB, with that distinguisher.
type VRFKey struct {
	Router        RouterKey
	Distinguisher uint64
}

func compareVRFKeys(a, b VRFKey) int {
	return cmp.Or(compareRouterKeys(a.Router, b.Router), cmp.Compare(a.Distinguisher, b.Distinguisher))
}

// vrf is a VRF table's registry entry, guarded by RIB.mu.
type vrf struct {
	idx   uint32 // >= 1: shards of this table are named with it
	key   VRFKey
	peers int // peers holding it
}

func (p *Peer) inst() uint32 {
	if p.vrf == nil {
		return 0
	}
	return p.vrf.idx
}

// holdVRF returns the table of key, registering it on first use.
func (tx *Tx) holdVRF(key VRFKey) *vrf {
	r := tx.r
	v := r.vrfs[key]
	if v == nil {
		v = &vrf{key: key}
		if k := len(r.freeVRF); k > 0 {
			v.idx = r.freeVRF[k-1]
			r.freeVRF = r.freeVRF[:k-1]
			r.vrfByIdx[v.idx-1] = v
		} else {
			r.vrfByIdx = append(r.vrfByIdx, v)
			v.idx = uint32(len(r.vrfByIdx))
		}
		r.vrfs[key] = v
		tx.vrfFib(v.idx) // an empty table, so lookups find the VRF
		tx.vrfsChanged = true
	}
	v.peers++
	return v
}

// dropVRF releases a peer's hold on v; the last one removes the table
// (by then empty: the peer's routes are gone).
func (tx *Tx) dropVRF(v *vrf) {
	if v.peers--; v.peers > 0 {
		return
	}
	r := tx.r
	delete(r.vrfs, v.key)
	r.vrfByIdx[v.idx-1] = nil
	n := tx.touch()
	if !tx.vrfsOwned {
		n.vrfs = slices.Clone(n.vrfs)
		tx.vrfsOwned = true
	}
	n.vrfs[v.idx-1] = nil
	delete(tx.fibOwned, v.idx)
	tx.releasedVRFs = append(tx.releasedVRFs, v.idx)
	tx.vrfsChanged = true
}

// labelTables lists the VRF indices of the tables of n that label
// flows, in VRF key order.
func (r *RIB) labelTables(n *snapshot) []uint32 {
	if len(r.labelRDs) == 0 {
		return nil
	}
	var vs []*vrf
	for _, v := range r.vrfByIdx {
		if v != nil && r.labelRDs[v.key.Distinguisher] && int(v.idx) <= len(n.vrfs) && n.vrfs[v.idx-1] != nil {
			vs = append(vs, v)
		}
	}
	slices.SortFunc(vs, func(a, b *vrf) int { return compareVRFKeys(a.key, b.key) })
	out := make([]uint32, len(vs))
	for i, v := range vs {
		out[i] = v.idx
	}
	return out
}

// SetLabelVRFs sets the route distinguishers whose VRF routes, of any
// router, also label flows (Origin). Default: none, global routes only.
func (r *RIB) SetLabelVRFs(distinguishers []uint64) {
	if r == nil {
		return
	}
	tx := r.Begin()
	defer tx.Commit()
	r.labelRDs = make(map[uint64]bool, len(distinguishers))
	for _, d := range distinguishers {
		r.labelRDs[d] = true
	}
	tx.touch()
	tx.vrfsChanged = true
}

// labelBest is best with VRF tables that label flows: the longest
// matching prefix of the global table and those; on equal length the
// global table, then the first VRF in key order.
func (s *snapshot) labelBest(a netip.Addr) (entry, bool) {
	var best entry
	bestBits := -1
	if p, e, ok := s.fib.lookupPrefix(a); ok {
		best, bestBits = e, p.Bits()
	}
	for _, i := range s.label {
		if p, e, ok := s.vrfs[i-1].lookupPrefix(a); ok && p.Bits() > bestBits {
			best, bestBits = e, p.Bits()
		}
	}
	return best, bestBits >= 0
}

// VRFRoutes are the routes of one VRF for the longest prefix matching an
// address, best first.
type VRFRoutes struct {
	VRF         VRFKey
	LabelsFlows bool // its routes label flows (SetLabelVRFs)
	Routes      []RouteInfo
}

// LookupVRFs looks a up in every VRF table, in VRF key order; VRFs
// without a matching prefix are left out.
func (r *RIB) LookupVRFs(a netip.Addr) []VRFRoutes {
	if r == nil {
		return nil
	}
	s := r.cur.Load()
	var out []VRFRoutes
	for i, f := range s.vrfs {
		if f == nil {
			continue
		}
		p, e, ok := f.lookupPrefix(a)
		if !ok {
			continue
		}
		vr := VRFRoutes{Routes: make([]RouteInfo, len(e.routes))}
		for i, rt := range e.routes {
			vr.Routes[i] = s.info(p, rt)
		}
		first := s.peers[e.routes[0].peer()]
		vr.VRF = VRFKey{Router: first.router.key, Distinguisher: first.key.Distinguisher}
		vr.LabelsFlows = slices.Contains(s.label, uint32(i+1))
		out = append(out, vr)
	}
	slices.SortFunc(out, func(a, b VRFRoutes) int { return compareVRFKeys(a.VRF, b.VRF) })
	return out
}

// VRFSummary counts the routes of one VRF, for `rfm rib summary`.
type VRFSummary struct {
	VRF         VRFKey
	LabelsFlows bool
	Peers       int
	Routes4     int
	Routes6     int
}
