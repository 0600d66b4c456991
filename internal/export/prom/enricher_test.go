// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"net/netip"

	"github.com/stepbrobd/rfm/internal/flow"
)

type asnCityEnricher struct{}

func (asnCityEnricher) Enrich(src, dst netip.Addr) flow.Labels {
	s, d := src.As4(), dst.As4()
	return flow.Labels{
		SrcASN:  64512 + uint32(s[2])<<2 + uint32(s[3]&3),
		DstASN:  65000 + uint32(d[2]&15),
		SrcCity: cities[s[3]&15],
		DstCity: cities[d[2]&3],
	}
}

func (asnCityEnricher) Generation() uint64 { return 1 }

// routerEnricher spreads flows over 64 source ASNs x 8 cities and 16
// destination ASNs, the shape of a router's top talkers.
type routerEnricher struct{}

func (routerEnricher) Enrich(src, dst netip.Addr) flow.Labels {
	s, d := src.As4(), dst.As4()
	return flow.Labels{
		SrcASN:  64512 + uint32(s[3]&63),
		DstASN:  65000 + uint32(d[2]&15),
		SrcCity: cities[s[3]&7],
		DstCity: cities[8],
	}
}

func (routerEnricher) Generation() uint64 { return 1 }

// distinctEnricher gives every flow of the benchmark its own label set
// (source ASN from the two low address bytes).
type distinctEnricher struct{}

func (distinctEnricher) Enrich(src, dst netip.Addr) flow.Labels {
	s := src.As4()
	return flow.Labels{SrcASN: 64512 + uint32(s[2])<<8 + uint32(s[3]), SrcCity: cities[s[3]&15]}
}

func (distinctEnricher) Generation() uint64 { return 1 }
