package bmp

import (
	"fmt"
	"testing"
)

// spread maps i to a /24 in 1.0.0.0-223.255.255.0 (in-memory data
// only; nothing is sent anywhere).
func spread(i int) string {
	v := uint32(i) * 2654435761
	return fmt.Sprintf("%d.%d.%d.0/24", 1+v>>24%223, v>>16&0xff, v>>8&0xff)
}

// BenchmarkDecodeApply measures the session path from framed messages
// to the RIB: gobgp parsing, AS path decoding, RIB transactions of
// batchMessages. One prefix per UPDATE, as gobgpd sends its table;
// /24s spread over the address space like a real table's.
func BenchmarkDecodeApply(b *testing.B) {
	const n = 1 << 16
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = announceMsg(b, peerA, 65001, 0, route{
			announce: []string{spread(i)},
			path:     []uint32{65001, 3000 + uint32(i%400), 4_200_000_000 + uint32(i%75000)},
		})
	}
	b.ResetTimer()
	routes := 0
	for range b.N {
		b.StopTimer()
		h := newHarness(b)
		h.feed(initiationMsg(b, "r"), peerUpMsg(b, peerA, 65001, peerUpOpts{}))
		b.StartTimer()
		for i := 0; i < n; i += batchMessages {
			var ops []op
			for _, m := range msgs[i:min(i+batchMessages, n)] {
				ops, _ = h.dec.decode(m, ops)
			}
			h.ss.apply(ops, false)
		}
		routes += n
	}
	b.ReportMetric(float64(routes)/b.Elapsed().Seconds(), "routes/s")
}
