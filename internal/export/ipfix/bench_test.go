// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"testing"

	"github.com/stepbrobd/rfm/internal/flow"
)

// BenchmarkEncode measures the sender's per-record work: turning a
// flow.Record into its queued form, encoding it into the message and
// finishing each full message. One op is one record.
func BenchmarkEncode(b *testing.B) {
	tests := []struct {
		name string
		recs []flow.Record
	}{
		{"IPv4", []flow.Record{testRecord(0), testRecord(2)}},
		{"IPv6", []flow.Record{testRecord(1), testRecord(3)}},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			m := newMessage(DefaultMaxMessageSize)
			var seq uint32
			messages := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				e := (&Exporter{defaultRate: 1}).entryFromRecord(&tt.recs[i&1])
				if !m.addFlow(&e) {
					m.finish(1740830400, seq, 1)
					seq += m.dataRecords
					m.reset()
					messages++
					m.addFlow(&e)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			if messages > 0 {
				b.ReportMetric(float64(b.N)/float64(messages+1), "records/msg")
			}
		})
	}
}

// BenchmarkExportFlows measures what the flow collector pays per record to
// hand records over: one lock per batch and a copy into the queue. The
// queue is emptied after each batch as the sender's swap would, so no
// record takes the cheap drop path. One op is one record.
func BenchmarkExportFlows(b *testing.B) {
	batch := testRecords(256)
	e := &Exporter{limit: len(batch), wake: make(chan struct{}, 1)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		e.ExportFlows(batch[:min(len(batch), b.N-i)])
		e.mu.Lock()
		e.queue = e.queue[:0]
		e.mu.Unlock()
		select {
		case <-e.wake:
		default:
		}
	}
	b.StopTimer()
	if d := e.dropped.Load(); d != 0 {
		b.Fatalf("%d records dropped", d)
	}
}
