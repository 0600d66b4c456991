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
	klauspost, _ := kgzip.NewWriterLevel(io.Discard, 1)
	for _, c := range []struct {
		name string
		w    interface {
			io.WriteCloser
			Reset(io.Writer)
		}
	}{{"agent", newGzipWriter()}, {"klauspost-level1", klauspost}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				c.w.Reset(io.Discard)
				for off := 0; off < len(in); off += 16 << 10 {
					c.w.Write(in[off:min(off+16<<10, len(in))])
				}
				c.w.Close()
			}
		})
	}
}
