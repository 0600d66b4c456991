// Package enrich labels flow addresses with origin ASNs and city names:
// the ASN from the BMP-fed RIB first (the route's origin AS), the MMDB
// as the fallback, the city from the MMDB.
package enrich

import (
	"net/netip"

	"github.com/stepbrobd/rfm/internal/enrich/mmdb"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/internal/flow"
)

// Enricher implements flow.Enricher. Either backend may be nil; with
// neither, labels stay empty. Safe for concurrent use; lookups never
// wait for the RIB's writers.
type Enricher struct {
	rib *rib.RIB
	db  *mmdb.DB
}

var _ flow.Enricher = (*Enricher)(nil)

// New returns an Enricher over r and db, both optional.
func New(r *rib.RIB, db *mmdb.DB) *Enricher {
	return &Enricher{rib: r, db: db}
}

// Enrich returns the labels of a flow's addresses.
func (e *Enricher) Enrich(src, dst netip.Addr) flow.Labels {
	return flow.Labels{
		SrcASN:  e.ASN(src),
		DstASN:  e.ASN(dst),
		SrcCity: e.db.City(src),
		DstCity: e.db.City(dst),
	}
}

// ASN is the origin AS of the best RIB route for a or, when no route
// matches or its origin is unknown (a trailing AS_SET), the MMDB's
// answer; 0 if neither knows.
func (e *Enricher) ASN(a netip.Addr) uint32 {
	if asn := e.rib.Origin(a); asn != 0 {
		return asn
	}
	return e.db.ASN(a)
}

// Generation changes whenever the RIB changes or the databases are
// reopened (both counters only grow, so their sum changes with either).
func (e *Enricher) Generation() uint64 {
	return e.rib.Generation() + e.db.Generation()
}
