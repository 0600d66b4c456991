// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"encoding/binary"
	"testing"
)

// BenchmarkDecodeRecord decodes one ring record of BatchEvents events
// held in memory (no ring, no BPF): the consumer's per-event decoding
// cost, with and without the optional fields.
func BenchmarkDecodeRecord(b *testing.B) {
	const events = 256
	for _, size := range []int{EventSize, FieldsEventSize} {
		raw := make([]byte, events*size)
		for i := 0; i < events; i++ {
			ev := raw[i*size:]
			binary.LittleEndian.PutUint64(ev[offBootNs:], uint64(i))
			ev[offSrc+15], ev[offDst+15] = byte(i), byte(i>>8)
			binary.LittleEndian.PutUint32(ev[offRate:], 1)
			ev[offProto] = 17
			if size == FieldsEventSize {
				ev[offFVersion] = fieldsVersion
				ev[offFTTL] = 64
				ev[offFFIBFlags] = fibNextHop
			}
		}
		name := map[int]string{EventSize: "fields=off", FieldsEventSize: "fields=all"}[size]
		b.Run(name, func(b *testing.B) {
			d := &Datapath{eventSize: size}
			evs := make([]Event, events)
			b.SetBytes(int64(size * events))
			for b.Loop() {
				d.rec, d.recOff, d.recNew = raw, 0, true
				if n := d.decodeRecord(evs); n != events {
					b.Fatalf("decoded %d events, want %d", n, events)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
		})
	}
}
