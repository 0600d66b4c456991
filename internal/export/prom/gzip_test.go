// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os/exec"
	"runtime"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// gzipRoundTrip compresses in with w, written in pieces of chunk bytes,
// and returns the compressed member and what Go's own reader makes of it.
func gzipRoundTrip(t testing.TB, w *gzipWriter, in []byte, chunk int) (compressed, out []byte) {
	t.Helper()
	var buf bytes.Buffer
	w.Reset(&buf)
	for rest := in; len(rest) > 0; {
		n := min(chunk, len(rest))
		if k, err := w.Write(rest[:n]); err != nil || k != n {
			t.Fatalf("Write: %d, %v", k, err)
		}
		rest = rest[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	compressed = bytes.Clone(buf.Bytes())
	zr, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		t.Fatalf("gzip header: %v", err)
	}
	zr.Multistream(false)
	if out, err = io.ReadAll(zr); err != nil {
		t.Fatalf("gzip stream (%d bytes in, chunks of %d): %v", len(in), chunk, err)
	}
	return compressed, out
}

// exposition is text shaped like /metrics: series of a few families whose
// label sets repeat, with varying values.
func exposition(series int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	var b bytes.Buffer
	for _, fam := range []string{"rfm_flow_bytes", "rfm_flow_packets", "rfm_flow_estimated_bytes_total"} {
		fmt.Fprintf(&b, "# HELP %s Something.\n# TYPE %s gauge\n", fam, fam)
		for i := range series {
			fmt.Fprintf(&b, "%s{ifname=\"eth%d\",direction=\"rx\",proto=\"tcp\",src_asn=\"%d\",dst_asn=\"\",src_city=\"Paris\",dst_city=\"\"} %d\n",
				fam, i%7, 64496+i%40, r.Uint64()>>r.IntN(60))
		}
	}
	return b.Bytes()
}

func TestGzipWriterRoundTrip(t *testing.T) {
	random := make([]byte, 300<<10)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	lowEntropy := make([]byte, 200<<10)
	for i := range lowEntropy {
		lowEntropy[i] = "ab"[r.IntN(2)]
	}
	inputs := map[string][]byte{
		"empty":        nil,
		"one byte":     []byte("x"),
		"short":        []byte("rfm_sample_rate 1\n"),
		"zeros":        make([]byte, 1<<20),
		"random":       random,
		"two letters":  lowEntropy,
		"exposition":   exposition(3000, 1),
		"small scrape": exposition(20, 2),
	}
	w := newGzipWriter() // one writer for all: Reset must forget everything
	for name, in := range inputs {
		for _, chunk := range []int{1 << 30, 64 << 10, 4093, 7} {
			if chunk == 7 && len(in) > 100<<10 {
				continue
			}
			compressed, out := gzipRoundTrip(t, w, in, chunk)
			if !bytes.Equal(out, in) {
				t.Fatalf("%s, chunks of %d: decompressed %d bytes differ from the %d written", name, chunk, len(out), len(in))
			}
			// Incompressible input must not grow by more than the
			// stored blocks' framing.
			if limit := len(in) + len(in)/1000 + 64; len(compressed) > limit {
				t.Errorf("%s, chunks of %d: %d bytes compressed from %d, more than %d", name, chunk, len(compressed), len(in), limit)
			}
		}
	}
}

// TestGzipWriterRatio: the exposition compresses about as well as with
// Go's own compressor at its fastest level (the figures are for the body
// Prometheus fetches, not a property of the format).
func TestGzipWriterRatio(t *testing.T) {
	in := exposition(5000, 3)
	compressed, out := gzipRoundTrip(t, newGzipWriter(), in, 64<<10)
	if !bytes.Equal(out, in) {
		t.Fatal("round trip differs")
	}
	var std bytes.Buffer
	sw, _ := gzip.NewWriterLevel(&std, gzip.BestSpeed)
	sw.Write(in)
	sw.Close()
	t.Logf("%d bytes: %d compressed here, %d by compress/gzip at BestSpeed", len(in), len(compressed), std.Len())
	if len(compressed) > std.Len()*3/2 {
		t.Errorf("%d bytes compressed, more than 1.5 times compress/gzip's %d", len(compressed), std.Len())
	}
}

func FuzzGzipWriter(f *testing.F) {
	f.Add([]byte("rfm_flow_bytes{ifname=\"eth0\"} 1\nrfm_flow_bytes{ifname=\"eth1\"} 2\n"), uint16(5))
	f.Add(bytes.Repeat([]byte("abc"), 30000), uint16(1000))
	w := newGzipWriter()
	f.Fuzz(func(t *testing.T, in []byte, chunk uint16) {
		// Repeat the input so that matches span chunks and slides.
		in = bytes.Repeat(in, 1+(70<<10)/(len(in)+1))
		_, out := gzipRoundTrip(t, w, in, int(chunk)+1)
		if !bytes.Equal(out, in) {
			t.Fatalf("decompressed %d bytes differ from the %d written", len(out), len(in))
		}
	})
}

// TestGzipScrapeAfterGC: a gzip scrape right after a garbage collection
// allocates no compressor. A pooled one is dropped by the collection and
// made again, about 0.9 MB for klauspost's fastest level, and on an
// agent scraped every few seconds that was every scrape.
func TestGzipScrapeAfterGC(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := New(fakeDatapath{}, fakeFlows{}, func() uint32 { return 100 })
	reg.MustRegister(c)
	h := Handler(reg, c, func(err error) { t.Fatal(err) })
	scrape(t, h, "gzip") // the first scrape makes the kept buffers
	var most uint64
	for range 5 {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		var w countingResponse
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		h.ServeHTTP(&w, req)
		runtime.ReadMemStats(&after)
		most = max(most, after.TotalAlloc-before.TotalAlloc)
	}
	t.Logf("a gzip scrape after a collection allocates %d bytes at most", most)
	if most > 256<<10 {
		t.Errorf("a gzip scrape after a collection allocated %d bytes, want under 256 KiB", most)
	}
}

// TestGzipConcurrentScrapes: scrapes that overlap the one using the kept
// buffers get their own and the same body.
func TestGzipConcurrentScrapes(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := New(fakeDatapath{}, fakeFlows{}, func() uint32 { return 100 })
	reg.MustRegister(c)
	h := Handler(reg, c, func(err error) { t.Error(err) })
	plain, _ := scrape(t, h, "")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if got, _ := scrape(t, h, "gzip"); !bytes.Equal(got, plain) {
					t.Error("a concurrent gzip scrape's body differs from the plain one")
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestGzipWriterZlib: zlib (gzip(1), curl, Python) is stricter than Go's
// reader about Huffman codes that do not fill their code space; it must
// take every block type the writer makes.
func TestGzipWriterZlib(t *testing.T) {
	gunzip, err := exec.LookPath("gzip")
	if err != nil {
		t.Skip("no gzip(1) to check against")
	}
	random := make([]byte, 100<<10)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	inputs := [][]byte{nil, []byte("x"), exposition(4000, 9), random, make([]byte, 1<<20),
		append(exposition(300, 1), random...)}
	for i, in := range inputs {
		compressed, _ := gzipRoundTrip(t, newGzipWriter(), in, 5000)
		cmd := exec.Command(gunzip, "-dc")
		cmd.Stdin = bytes.NewReader(compressed)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("input %d (%d bytes): gzip -dc: %v", i, len(in), err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("input %d: gzip -dc gave %d bytes that differ from the %d written", i, len(out), len(in))
		}
	}
}
