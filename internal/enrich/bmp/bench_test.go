// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"testing"
)

// spread maps i to a /24 in 1.0.0.0-223.255.255.0 (in-memory data
// only; nothing is sent anywhere).
func spread(i int) string {
	v := uint32(i) * 2654435761
	return fmt.Sprintf("%d.%d.%d.0/24", 1+v>>24%223, v>>16&0xff, v>>8&0xff)
}

// spread6 maps i to a /48 (one in eight a /32) in 2000::/3, spread
// like a real table's (in-memory data only, as above).
func spread6(i int) string {
	v := uint32(i) * 2654435761
	hi := 0x2000 | v>>19&0x1fff
	if i%8 == 0 {
		return fmt.Sprintf("%x:%x::/32", hi, v&0xffff)
	}
	return fmt.Sprintf("%x:%x:%x::/48", hi, v>>3&0xffff, v&0xffff)
}

// BenchmarkDecodeApply measures the session path from the byte stream
// to the RIB: framing, decoding (gobgp's parser, or the fast path for
// well-formed unicast UPDATEs), AS path decoding, and RIB transactions
// of batchMessages, as session.process runs them. One prefix per
// UPDATE, as gobgpd sends its table, spread over the address space
// like a real table's. "gobgp" decodes every message with gobgp (the
// decoder before the fast path); "fast" is what sessions run; batchN
// is the number of messages per RIB transaction (sessions use
// batchMessages). allocs/op is per 65,536 routes.
func BenchmarkDecodeApply(b *testing.B) {
	for _, c := range []struct {
		name string
		v6   bool
	}{{"ipv4", false}, {"ipv6", true}} {
		const n = 1 << 16
		msgs := make([][]byte, n)
		for i := range msgs {
			r := route{path: []uint32{65001, 3000 + uint32(i%400), 4_200_000_000 + uint32(i%75000)}}
			if c.v6 {
				r.announce = []string{spread6(i)}
			} else {
				r.announce = []string{spread(i)}
			}
			msgs[i] = announceMsg(b, peerA, 65001, 0, r)
		}
		peer := peerA
		stream := slices.Concat(append([][]byte{initiationMsg(b, "r"), peerUpMsg(b, peer, 65001, peerUpOpts{})}, msgs...)...)
		for _, v := range []struct {
			name      string
			gobgpOnly bool
			batch     int
		}{
			{"gobgp/batch2048", true, 2048}, // the decoder before the fast path
			{"fast/batch2048", false, 2048},
			{"fast/batch8192", false, 8192},
			{"fast/batch32768", false, 32768},
		} {
			b.Run(c.name+"/"+v.name, func(b *testing.B) {
				routes := 0
				b.ReportAllocs()
				for range b.N {
					b.StopTimer()
					h := newHarness(b)
					h.dec.gobgpOnly = v.gobgpOnly
					fr := newFramer(bytes.NewReader(stream), DefaultMaxMessageSize)
					var ops []op
					b.StartTimer()
					for done := false; !done; {
						ops = opsFor(ops, v.batch)
						for range v.batch {
							m, err := fr.next()
							if err == io.EOF {
								done = true
								break
							}
							if err != nil {
								b.Fatal(err)
							}
							ops, _ = h.dec.decode(m, ops)
						}
						h.ss.apply(ops, false)
					}
					routes += n
				}
				b.ReportMetric(float64(routes)/b.Elapsed().Seconds(), "routes/s")
			})
		}
	}
}
