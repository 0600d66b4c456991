// SPDX-License-Identifier: AGPL-3.0-only

package rib

import "net/netip"

// ExactRoutes returns the global routes of exactly prefix p (not a
// covering or a more specific one), best first; nil when there is none.
func (r *RIB) ExactRoutes(p netip.Prefix) []RouteInfo {
	if r == nil || !p.IsValid() {
		return nil
	}
	p = p.Masked()
	s := r.cur.Load()
	id, key := shardOf(p)
	t := s.table(id)
	if t == nil {
		return nil
	}
	e, ok := t.Get(key)
	if !ok {
		return nil
	}
	return s.infos(p, e)
}
