// SPDX-License-Identifier: AGPL-3.0-only

// Package enrich labels flow addresses with origin ASNs and city names:
// the ASN from the BMP-fed RIB first (the route's origin AS), the MMDB
// as the fallback, the city from the MMDB.
package enrich

import (
	"net/netip"
	"sync/atomic"

	"github.com/stepbrobd/rfm/internal/enrich/mmdb"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/internal/flow"
)

// Enricher implements flow.Enricher. Either backend may be nil; with
// neither, labels stay empty. Safe for concurrent use; lookups never
// wait for the RIB's writers.
type Enricher struct {
	rib   *rib.RIB
	db    atomic.Pointer[mmdb.DB]
	swaps atomic.Uint64 // SetDB calls, part of Generation
}

var _ flow.Enricher = (*Enricher)(nil)

// New returns an Enricher over r and db, both optional.
func New(r *rib.RIB, db *mmdb.DB) *Enricher {
	e := &Enricher{rib: r}
	e.db.Store(db)
	return e
}

// SetDB replaces the MMDB databases (nil: none), for a config reload
// that changes their paths. Lookups in flight finish on the old ones.
func (e *Enricher) SetDB(db *mmdb.DB) {
	e.db.Store(db)
	e.swaps.Add(1)
}

// DB returns the MMDB databases in use, nil when none.
func (e *Enricher) DB() *mmdb.DB { return e.db.Load() }

// Enrich returns the labels of a flow's addresses. Each address costs
// one RIB lookup, which gives both its origin AS and the BGP context.
func (e *Enricher) Enrich(src, dst netip.Addr) flow.Labels {
	db := e.db.Load()
	l := flow.Labels{
		SrcCity: db.City(src),
		DstCity: db.City(dst),
	}
	if s, ok := e.rib.FlowRoute(src); ok {
		l.SrcASN = s.Origin
		l.BGP.PrevAS = s.Path.FirstAS()
		l.BGP.SrcPrefixLen = uint8(s.Bits)
	}
	if d, ok := e.rib.FlowRoute(dst); ok {
		l.DstASN = d.Origin
		l.BGP.DstPrefixLen = uint8(d.Bits)
		var nh netip.Addr
		nh, l.BGP.NextAS, l.BGP.Communities, l.BGP.LargeCommunities = d.Path.ExportAttrs()
		if nh.IsValid() {
			l.BGP.NextHop = nh.As16()
		}
	}
	if l.SrcASN == 0 {
		l.SrcASN = db.ASN(src)
	}
	if l.DstASN == 0 {
		l.DstASN = db.ASN(dst)
	}
	return l
}

// ASN is the origin AS of the best RIB route for a or, when no route
// matches or its origin is unknown (a trailing AS_SET), the MMDB's
// answer; 0 if neither knows.
func (e *Enricher) ASN(a netip.Addr) uint32 { return e.asn(e.db.Load(), a) }

func (e *Enricher) asn(db *mmdb.DB, a netip.Addr) uint32 {
	if asn := e.rib.Origin(a); asn != 0 {
		return asn
	}
	return db.ASN(a)
}

// Generation changes whenever the RIB changes or the databases are
// reopened or replaced. Every part only grows, so the sum changes with
// any of them; a replacement adds 1<<40 so a new DB whose own count
// starts lower cannot cancel it out.
func (e *Enricher) Generation() uint64 {
	return e.rib.Generation() + e.db.Load().Generation() + e.swaps.Load()<<40
}
