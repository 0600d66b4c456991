// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/bits"
	"slices"
)

// gzipWriter compresses a response as one gzip member (RFC 1952) holding
// a DEFLATE stream (RFC 1951): LZ77 over a 32 KiB window with one hash
// candidate per position, then each block coded with Huffman codes built
// for it (or stored, or the fixed codes, when that is shorter).
//
// It exists for its size. The library compressors keep about 0.9 MB of
// state per writer (klauspost's fastest level; Go's own is larger), which
// a pool drops at every garbage collection, so on an agent scraped every
// few seconds each scrape allocated it again and the collector counted it
// as live whenever it ran during a scrape. This one is about 140 KB and
// is reused for as long as the agent runs; it compresses the exposition
// text about as well and as fast (BenchmarkGzipWriter).
type gzipWriter struct {
	w    io.Writer
	err  error
	crc  uint32
	size uint32 // input length mod 2^32, as the trailer wants it
	// started: the gzip header is written.
	started bool

	// window holds the last windowSize bytes already compressed
	// (matches reach back into them) followed by the input not yet
	// compressed: window[:done] is compressed, window[done:n] is not.
	window [2 * windowSize]byte
	done   int
	n      int
	// table maps the hash of 4 bytes to their last position in the
	// input plus 1 (0: none); base is the input position of window[0].
	table [1 << hashBits]int32
	base  int

	// The block being gathered: its tokens, where its input starts in
	// window (for a stored block) and how long it is.
	tokens     [maxBlockTokens]token
	ntokens    int
	blockStart int
	blockLen   int

	// Bit output: acc holds nacc bits not yet in out.
	acc  uint64
	nacc uint
	out  [4096]byte
	nout int

	litFreq  [numLitLen]uint32
	distFreq [numDist]uint32
	litLen   [numLitLen]uint8
	distLen  [numDist]uint8
	litCode  [numLitLen]uint16
	distCode [numDist]uint16
	huff     huffmanBuilder
}

const (
	windowSize     = 32 << 10 // DEFLATE's largest distance
	hashBits       = 13
	minMatch       = 4 // matches shorter than this are not looked for
	maxMatch       = 258
	maxBlockTokens = 8 << 10
	numLitLen      = 286 // literals, end of block, 29 length codes
	numDist        = 30
	endOfBlock     = 256
)

// A token is a literal byte (below 1<<8) or a match: matchFlag, the
// length minus 3 shifted by 16, and the distance minus 1.
type token uint32

const matchFlag token = 1 << 31

func newGzipWriter() *gzipWriter { return &gzipWriter{} }

// Reset starts a new member written to w, forgetting all earlier input.
func (z *gzipWriter) Reset(w io.Writer) {
	z.w, z.err, z.crc, z.size, z.started = w, nil, 0, 0, false
	z.done, z.n, z.base, z.ntokens, z.blockStart, z.blockLen = 0, 0, 0, 0, 0, 0
	z.acc, z.nacc, z.nout = 0, 0, 0
	clear(z.table[:])
	clear(z.litFreq[:])
	clear(z.distFreq[:])
}

func (z *gzipWriter) Write(p []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	if !z.started {
		z.started = true
		// No name, no modification time, unknown OS.
		z.writeBytes([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255})
	}
	z.crc = crc32.Update(z.crc, crc32.IEEETable, p)
	z.size += uint32(len(p))
	written := 0
	for len(p) > 0 {
		if z.n == len(z.window) {
			z.compress()
			z.slide()
		}
		c := copy(z.window[z.n:], p)
		z.n += c
		written += c
		p = p[c:]
	}
	return written, z.err
}

// Close compresses what is left, ends the stream and writes the trailer;
// it does not close the underlying writer.
func (z *gzipWriter) Close() error {
	if z.err != nil {
		return z.err
	}
	if !z.started {
		if _, err := z.Write(nil); err != nil {
			return err
		}
	}
	z.compress()
	z.endBlock(true)
	z.alignToByte()
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], z.crc)
	binary.LittleEndian.PutUint32(trailer[4:], z.size)
	z.writeBytes(trailer[:])
	z.flushOut()
	return z.err
}

// slide keeps the last windowSize compressed bytes at the start of window.
func (z *gzipWriter) slide() {
	const shift = len(z.window) - windowSize
	copy(z.window[:windowSize], z.window[shift:z.n])
	z.n -= shift
	z.done -= shift
	z.blockStart -= shift
	z.base += shift
	// Positions are kept in int32; far before they overflow, make
	// them relative to window again.
	if z.base > 1<<30 {
		for i, v := range z.table {
			z.table[i] = max(v-int32(z.base), 0)
		}
		z.base = 0
	}
}

func load32(b []byte, i int) uint32 { return binary.LittleEndian.Uint32(b[i:]) }

func hash4(v uint32) uint32 { return (v * 0x9E3779B1) >> (32 - hashBits) }

// compress turns window[done:n] into tokens, ending blocks as the token
// buffer fills.
func (z *gzipWriter) compress() {
	src := z.window[:z.n]
	s, end := z.done, z.n
	lit := s // first byte not yet emitted
	// table holds input position + 1, window positions are input
	// position - base.
	off := z.base + 1
	for s+minMatch <= end {
		v := load32(src, s)
		h := hash4(v)
		cand := int(z.table[h]) - off
		z.table[h] = int32(s + off)
		if cand < 0 || s-cand > windowSize || load32(src, cand) != v {
			// Skip faster through input that does not compress.
			s += 1 + (s-lit)>>6
			continue
		}
		length := minMatch + matchLen(src[cand+minMatch:], src[s+minMatch:min(end, s+maxMatch)])
		z.emitLiterals(src[lit:s])
		z.emitMatch(length, s-cand)
		s += length
		lit = s
		// The match's last position, so the next line can find it.
		if s+minMatch <= end && s > 1 {
			z.table[hash4(load32(src, s-1))] = int32(s - 1 + off)
		}
	}
	z.emitLiterals(src[lit:end])
	z.done = end
}

// matchLen is how many leading bytes of b equal those of a (len(a) >=
// len(b)).
func matchLen(a, b []byte) int {
	n := 0
	for len(b)-n >= 8 {
		if x := binary.LittleEndian.Uint64(a[n:]) ^ binary.LittleEndian.Uint64(b[n:]); x != 0 {
			return n + bits.TrailingZeros64(x)>>3
		}
		n += 8
	}
	for n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func (z *gzipWriter) emitLiterals(b []byte) {
	for len(b) > 0 {
		if z.ntokens == maxBlockTokens {
			z.endBlock(false)
		}
		n := min(len(b), maxBlockTokens-z.ntokens)
		t := z.tokens[z.ntokens : z.ntokens+n]
		for i, c := range b[:n] {
			t[i] = token(c)
			z.litFreq[c]++
		}
		z.ntokens += n
		z.blockLen += n
		b = b[n:]
	}
}

func (z *gzipWriter) emitMatch(length, dist int) {
	if z.ntokens == maxBlockTokens {
		// The block's input ends where this match starts: everything
		// before the match is in tokens.
		z.endBlock(false)
	}
	z.tokens[z.ntokens] = matchFlag | token(length-3)<<16 | token(dist-1)
	z.ntokens++
	z.blockLen += length
	z.litFreq[257+int(lengthCode[length-3])]++
	z.distFreq[distCode(dist-1)]++
}

// endBlock writes the gathered tokens as one block, in whichever of the
// three block types is shortest.
func (z *gzipWriter) endBlock(final bool) {
	if z.ntokens == 0 && !final {
		return
	}
	blockEnd := z.blockStart + z.blockLen
	z.litFreq[endOfBlock]++
	z.huff.lengths(z.litFreq[:], z.litLen[:], 15)
	z.huff.lengths(z.distFreq[:], z.distLen[:], 15)
	hlit, hdist, hclen, clLen, headerBits := z.huff.header(z.litLen[:], z.distLen[:])
	dynBits := 3 + headerBits + z.dataBits(z.litLen[:], z.distLen[:])
	fixedBits := 3 + z.dataBits(fixedLitLen[:], fixedDistLen[:])
	storedLen := blockEnd - z.blockStart
	// A stored block: 3 header bits, up to 7 bits to the byte, 4 bytes
	// of length. Only while its input is still in window (a block can
	// span a slide) and up to 65,535 bytes.
	storedBits := 1 << 40
	if z.blockStart >= 0 && storedLen <= 65535 {
		storedBits = 3 + 7 + 32 + 8*storedLen
	}

	var bfinal uint64
	if final {
		bfinal = 1
	}
	switch {
	case storedBits <= dynBits && storedBits <= fixedBits:
		z.writeBits(bfinal, 3) // BTYPE 00
		z.alignToByte()
		z.writeBits(uint64(storedLen), 16)
		z.writeBits(uint64(^uint16(storedLen)), 16)
		z.writeBytes(z.window[z.blockStart:blockEnd])
	case fixedBits <= dynBits:
		z.writeBits(bfinal|1<<1, 3) // BTYPE 01
		z.writeTokens(fixedLitCode[:], fixedLitLen[:], fixedDistCode[:], fixedDistLen[:])
	default:
		z.writeBits(bfinal|2<<1, 3) // BTYPE 10
		canonicalCodes(z.litLen[:], z.litCode[:])
		canonicalCodes(z.distLen[:], z.distCode[:])
		z.huff.writeHeader(z, hlit, hdist, hclen, clLen)
		z.writeTokens(z.litCode[:], z.litLen[:], z.distCode[:], z.distLen[:])
	}
	z.ntokens = 0
	z.blockStart, z.blockLen = blockEnd, 0
	clear(z.litFreq[:])
	clear(z.distFreq[:])
}

// dataBits is the length in bits of the block's tokens and end of
// block with the given code lengths.
func (z *gzipWriter) dataBits(litLen, distLen []uint8) int {
	n := 0
	for i, f := range z.litFreq {
		if f == 0 {
			continue
		}
		if litLen[i] == 0 {
			return 1 << 40 // a symbol the code lacks
		}
		n += int(f) * int(litLen[i])
		if i > endOfBlock {
			n += int(f) * int(lengthExtra[i-257])
		}
	}
	for i, f := range z.distFreq {
		if f == 0 {
			continue
		}
		if distLen[i] == 0 {
			return 1 << 40
		}
		n += int(f) * (int(distLen[i]) + int(distExtra[i]))
	}
	return n
}

func (z *gzipWriter) writeTokens(litCode []uint16, litLen []uint8, dCode []uint16, dLen []uint8) {
	// The bit accumulator in locals: this loop is most of the coding.
	acc, nacc := z.acc, z.nacc
	put := func(v uint64, n uint) {
		acc |= v << nacc
		nacc += n
		if nacc >= 32 {
			z.putWord(uint32(acc))
			acc >>= 32
			nacc -= 32
		}
	}
	for _, t := range z.tokens[:z.ntokens] {
		if t&matchFlag == 0 {
			put(uint64(litCode[byte(t)]), uint(litLen[byte(t)]))
			continue
		}
		// Each code with its extra bits in one write: at most 15 + 5
		// and 15 + 13 bits.
		l := int(t >> 16 & 0xff)
		lc := int(lengthCode[l])
		n := uint(litLen[257+lc])
		put(uint64(litCode[257+lc])|uint64(l+3-int(lengthBase[lc]))<<n, n+uint(lengthExtra[lc]))
		d := int(t & 0x7fff)
		dc := distCode(d)
		n = uint(dLen[dc])
		put(uint64(dCode[dc])|uint64(d+1-int(distBase[dc]))<<n, n+uint(distExtra[dc]))
	}
	put(uint64(litCode[endOfBlock]), uint(litLen[endOfBlock]))
	z.acc, z.nacc = acc, nacc
}

// writeBits appends the n low bits of v (n <= 32, no bits above),
// least significant first as DEFLATE packs them.
func (z *gzipWriter) writeBits(v uint64, n uint) {
	z.acc |= v << z.nacc
	z.nacc += n
	if z.nacc >= 32 {
		z.putWord(uint32(z.acc))
		z.acc >>= 32
		z.nacc -= 32
	}
}

// putWord appends 4 bytes to out.
func (z *gzipWriter) putWord(w uint32) {
	if z.nout+4 > len(z.out) {
		z.flushOut()
	}
	binary.LittleEndian.PutUint32(z.out[z.nout:], w)
	z.nout += 4
}

// alignToByte pads the bit output with zeros to a whole byte and moves
// the whole bytes to out.
func (z *gzipWriter) alignToByte() {
	for z.nacc > 0 {
		if z.nout == len(z.out) {
			z.flushOut()
		}
		z.out[z.nout] = byte(z.acc)
		z.nout++
		z.acc >>= 8
		z.nacc -= min(z.nacc, 8)
	}
	z.acc = 0
}

// writeBytes appends whole bytes; the bit output must be byte aligned.
func (z *gzipWriter) writeBytes(b []byte) {
	for len(b) > 0 {
		if z.nout == len(z.out) {
			z.flushOut()
		}
		c := copy(z.out[z.nout:], b)
		z.nout += c
		b = b[c:]
	}
}

func (z *gzipWriter) flushOut() {
	if z.nout > 0 && z.err == nil {
		_, z.err = z.w.Write(z.out[:z.nout])
	}
	z.nout = 0
}

// huffmanBuilder builds length-limited Huffman codes without allocating.
type huffmanBuilder struct {
	freq   [numLitLen]uint32
	syms   [numLitLen]uint16
	weight [2 * numLitLen]uint32
	parent [2 * numLitLen]int16
	depth  [2 * numLitLen]uint8
	// The code length code of the current block.
	clFreq [19]uint32
	clLen  [19]uint8
	clCode [19]uint16
	// The code lengths of both codes, run-length coded: symbol in the
	// low 5 bits, repeat count's extra bits above.
	runs  [numLitLen + numDist]uint16
	nruns int
}

// lengths sets lens to Huffman code lengths for freq of at most maxBits
// (0 for unused symbols). When the optimal code is deeper the
// frequencies are halved until it fits, which costs little since it
// happens only for symbols too rare to matter.
func (h *huffmanBuilder) lengths(freq []uint32, lens []uint8, maxBits uint8) {
	f := h.freq[:len(freq)]
	copy(f, freq)
	for {
		if h.tryLengths(f, lens, maxBits) {
			return
		}
		for i, v := range f {
			if v > 0 {
				f[i] = v>>1 | 1
			}
		}
	}
}

func (h *huffmanBuilder) tryLengths(freq []uint32, lens []uint8, maxBits uint8) bool {
	clear(lens)
	n := 0
	for i, v := range freq {
		if v > 0 {
			h.syms[n] = uint16(i)
			n++
		}
	}
	if n < 2 {
		// Two codes of one bit, used or not: a complete code, which
		// every decoder takes (zlib's rejects a lone code for the code
		// lengths), and a distance code even for a block without
		// matches.
		other := uint16(0)
		if n == 1 && h.syms[0] == 0 {
			other = 1
		}
		lens[other] = 1
		if n == 1 {
			lens[h.syms[0]] = 1
		} else {
			lens[1] = 1
		}
		return true
	}
	syms := h.syms[:n]
	slices.SortFunc(syms, func(a, b uint16) int {
		if freq[a] != freq[b] {
			if freq[a] < freq[b] {
				return -1
			}
			return 1
		}
		return int(a) - int(b)
	})
	// Nodes 0..n-1 are the leaves in order of weight; internal nodes
	// n.. are made in order of weight too, so the two lightest nodes
	// are always at the heads of the two queues.
	for i, s := range syms {
		h.weight[i] = freq[s]
	}
	leaf, inner, next := 0, n, n
	pick := func() int {
		if leaf < n && (inner == next || h.weight[leaf] <= h.weight[inner]) {
			leaf++
			return leaf - 1
		}
		inner++
		return inner - 1
	}
	for next < 2*n-1 {
		a, b := pick(), pick()
		h.weight[next] = h.weight[a] + h.weight[b]
		h.parent[a], h.parent[b] = int16(next), int16(next)
		next++
	}
	root := next - 1
	h.depth[root] = 0
	for i := root - 1; i >= 0; i-- {
		d := h.depth[h.parent[i]] + 1
		if d > maxBits {
			return false
		}
		h.depth[i] = d
	}
	for i, s := range syms {
		lens[s] = h.depth[i]
	}
	return true
}

// canonicalCodes assigns DEFLATE's canonical codes for lens, bit-reversed
// for the least-significant-first bit output.
func canonicalCodes(lens []uint8, codes []uint16) {
	var count [16]uint16
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	var next [16]uint16
	code := uint16(0)
	for b := 1; b < 16; b++ {
		code = (code + count[b-1]) << 1
		next[b] = code
	}
	for i, l := range lens {
		if l == 0 {
			continue
		}
		codes[i] = bits.Reverse16(next[l]) >> (16 - l)
		next[l]++
	}
}

// codeLengthOrder is the order in which the code length code's lengths
// are sent.
var codeLengthOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

// header prepares a dynamic block's header for the literal/length and
// distance code lengths and returns its fields and length in bits.
func (h *huffmanBuilder) header(litLen, distLen []uint8) (hlit, hdist, hclen int, clLen []uint8, nbits int) {
	hlit = numLitLen
	for hlit > 257 && litLen[hlit-1] == 0 {
		hlit--
	}
	hdist = numDist
	for hdist > 1 && distLen[hdist-1] == 0 {
		hdist--
	}
	// Run-length code the lengths as one sequence (runs may cross
	// from one code into the other).
	var all [numLitLen + numDist]uint8
	copy(all[:], litLen[:hlit])
	copy(all[hlit:], distLen[:hdist])
	seq := all[:hlit+hdist]
	h.nruns = 0
	clear(h.clFreq[:])
	add := func(sym, extra uint16) {
		h.runs[h.nruns] = sym | extra<<5
		h.nruns++
		h.clFreq[sym]++
	}
	for i := 0; i < len(seq); {
		l := seq[i]
		run := 1
		for i+run < len(seq) && seq[i+run] == l {
			run++
		}
		i += run
		if l == 0 {
			for run >= 11 {
				r := min(run, 138)
				add(18, uint16(r-11))
				run -= r
			}
			if run >= 3 {
				add(17, uint16(run-3))
				run = 0
			}
		} else {
			add(uint16(l), 0)
			run--
			for run >= 3 {
				r := min(run, 6)
				add(16, uint16(r-3))
				run -= r
			}
		}
		for ; run > 0; run-- {
			add(uint16(l), 0)
		}
	}
	h.lengths(h.clFreq[:], h.clLen[:], 7)
	hclen = 19
	for hclen > 4 && h.clLen[codeLengthOrder[hclen-1]] == 0 {
		hclen--
	}
	nbits = 5 + 5 + 4 + 3*hclen
	for sym, f := range h.clFreq {
		nbits += int(f) * int(h.clLen[sym])
	}
	nbits += int(h.clFreq[16])*2 + int(h.clFreq[17])*3 + int(h.clFreq[18])*7
	return hlit, hdist, hclen, h.clLen[:], nbits
}

// writeHeader writes the header that header prepared.
func (h *huffmanBuilder) writeHeader(z *gzipWriter, hlit, hdist, hclen int, clLen []uint8) {
	canonicalCodes(clLen, h.clCode[:])
	z.writeBits(uint64(hlit-257), 5)
	z.writeBits(uint64(hdist-1), 5)
	z.writeBits(uint64(hclen-4), 4)
	for _, sym := range codeLengthOrder[:hclen] {
		z.writeBits(uint64(clLen[sym]), 3)
	}
	for _, r := range h.runs[:h.nruns] {
		sym, extra := r&31, uint64(r>>5)
		z.writeBits(uint64(h.clCode[sym]), uint(clLen[sym]))
		switch sym {
		case 16:
			z.writeBits(extra, 2)
		case 17:
			z.writeBits(extra, 3)
		case 18:
			z.writeBits(extra, 7)
		}
	}
}

// DEFLATE's length and distance codes (RFC 1951 3.2.5).
var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	// lengthCode is the length code (minus 257) of each length minus 3.
	lengthCode [256]uint8

	// The fixed code has 288 literal/length symbols, two of them
	// unused; they take part in its canonical order.
	fixedLitLen   [288]uint8
	fixedLitCode  [288]uint16
	fixedDistLen  [numDist]uint8
	fixedDistCode [numDist]uint16
)

func init() {
	for c := range lengthBase {
		hi := 258
		if c+1 < len(lengthBase) {
			hi = int(lengthBase[c+1]) - 1
		}
		for l := int(lengthBase[c]); l <= hi && l <= 258; l++ {
			lengthCode[l-3] = uint8(c)
		}
	}
	// Length 258 has its own code; 227+31 would also reach it.
	lengthCode[258-3] = 28
	for i := range fixedLitLen {
		switch {
		case i < 144:
			fixedLitLen[i] = 8
		case i < 256:
			fixedLitLen[i] = 9
		case i < 280:
			fixedLitLen[i] = 7
		default:
			fixedLitLen[i] = 8
		}
	}
	canonicalCodes(fixedLitLen[:], fixedLitCode[:])
	for i := range fixedDistLen {
		fixedDistLen[i] = 5
	}
	canonicalCodes(fixedDistLen[:], fixedDistCode[:])
}

// distCode is the distance code of a distance minus 1.
func distCode(d int) int {
	if d < 4 {
		return d
	}
	nb := bits.Len32(uint32(d)) - 1
	return 2*nb + int(d>>(nb-1)&1)
}
