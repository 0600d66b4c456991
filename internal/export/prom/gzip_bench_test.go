// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"io"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// BenchmarkGzipWriter compresses exposition text with the agent's
// compressor and with klauspost's gzip at its fastest level (what the
// agent used before), written in the pieces Handler's buffer writes.
func BenchmarkGzipWriter(b *testing.B) {
	in := exposition(20000, 5)
	b.Run("agent", func(b *testing.B) {
		w := newGzipWriter()
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			w.Reset(io.Discard)
			for off := 0; off < len(in); off += 16 << 10 {
				w.Write(in[off:min(off+16<<10, len(in))])
			}
			w.Close()
		}
	})
	b.Run("klauspost-level1", func(b *testing.B) {
		w, _ := kgzip.NewWriterLevel(io.Discard, 1)
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			w.Reset(io.Discard)
			for off := 0; off < len(in); off += 16 << 10 {
				w.Write(in[off:min(off+16<<10, len(in))])
			}
			w.Close()
		}
	})
}
