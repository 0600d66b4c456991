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
