// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

// communityBlackhole is BLACKHOLE, 65535:666 (RFC 7999).
const communityBlackhole = 0xFFFF029A

const attrCommunities = 8

// hasBlackhole reports whether a BGP UPDATE carries the BLACKHOLE
// community. A malformed attribute list reads as no.
func hasBlackhole(msg []byte) bool {
	found := false
	rawAttrs(msg, func(typ byte, val []byte) {
		if typ != attrCommunities {
			return
		}
		for ; len(val) >= 4; val = val[4:] {
			if binary.BigEndian.Uint32(val) == communityBlackhole {
				found = true
			}
		}
	})
	return found
}

// BlackholeRoute is a route announced with the BLACKHOLE community.
type BlackholeRoute struct {
	Router rib.RouterKey
	Peer   rib.PeerKey
	View   rib.View
	Prefix netip.Prefix
	PathID uint32
}

// trackBlackhole records what an applied announce or withdraw op means
// for the BLACKHOLE routes. It runs after the op's transaction is
// committed, so a route listed here is in the RIB unless it left since
// (InRIB tells; VRF routes are never in the global table it reads).
func (s *Station) trackBlackhole(o *op) {
	if o.peer == nil || o.peer.peer == nil {
		return
	}
	k := BlackholeRoute{Router: o.peer.peer.Router(), Peer: o.peer.key, View: o.view, Prefix: o.prefix, PathID: o.pathID}
	s.bhMu.Lock()
	defer s.bhMu.Unlock()
	_, had := s.blackholes[k]
	switch {
	case o.kind == opAnnounce && o.blackhole && !had:
		if s.blackholes == nil {
			s.blackholes = map[BlackholeRoute]struct{}{}
		}
		s.blackholes[k] = struct{}{}
		s.bhVersion++
	case had && (o.kind == opWithdraw || o.kind == opAnnounce && !o.blackhole):
		delete(s.blackholes, k)
		s.bhVersion++
	}
}

// BlackholeRoutes returns the routes announced with the BLACKHOLE
// community and not withdrawn or re-announced without it since, and a
// version that changes whenever the list does. A route in the list may
// have left the RIB meanwhile (Peer Down, or a session lost past keep):
// callers check each against rib.ExactRoutes, which also forgets it
// here (see Forget).
func (s *Station) BlackholeRoutes() ([]BlackholeRoute, uint64) {
	s.bhMu.Lock()
	defer s.bhMu.Unlock()
	out := make([]BlackholeRoute, 0, len(s.blackholes))
	for k := range s.blackholes {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b BlackholeRoute) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return out, s.bhVersion
}

// ForgetBlackhole drops a route the RIB no longer holds.
func (s *Station) ForgetBlackhole(k BlackholeRoute) {
	s.bhMu.Lock()
	defer s.bhMu.Unlock()
	if _, ok := s.blackholes[k]; ok {
		delete(s.blackholes, k)
		s.bhVersion++
	}
}

// InRIB reports whether the RIB still holds the route k names.
func InRIB(r *rib.RIB, k BlackholeRoute) bool {
	for _, ri := range r.ExactRoutes(k.Prefix) {
		if ri.Router == k.Router && ri.Peer == k.Peer && ri.View == k.View && ri.PathID == k.PathID {
			return true
		}
	}
	return false
}

// BlackholePrefixes returns the prefixes of the BLACKHOLE routes the RIB
// holds now, forgetting listed routes it no longer holds. A prefix
// announced by several routes stays until the last one goes.
func (s *Station) BlackholePrefixes() map[netip.Prefix]bool {
	routes, _ := s.BlackholeRoutes()
	out := map[netip.Prefix]bool{}
	for _, k := range routes {
		if InRIB(s.rib, k) {
			out[k.Prefix] = true
		} else {
			s.ForgetBlackhole(k)
		}
	}
	return out
}

// RIB is the routing table the station writes.
func (s *Station) RIB() *rib.RIB { return s.rib }
