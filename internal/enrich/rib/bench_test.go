// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// Synthetic full table: 1,000,000 IPv4 and 200,000 IPv6 prefixes with
// a realistic length mix, 75,000 origin ASes and a few hundred transit
// chains, announced by two peers with different AS paths. The data never
// leaves memory.
const (
	fullV4      = 1_000_000
	fullV6      = 200_000
	origins     = 75_000
	transits    = 400
	commitEvery = 4096 // routes per transaction, like the BMP station's batches
)

type synthRoute struct {
	pfx     netip.Prefix
	origin  uint32
	variant uint8 // which of the origin's five upstream paths
}

var fullTable = sync.OnceValue(func() []synthRoute {
	r := rand.New(rand.NewPCG(1, 2))
	seen := make(map[netip.Prefix]struct{}, fullV4+fullV6)
	out := make([]synthRoute, 0, fullV4+fullV6)
	add := func(p netip.Prefix) {
		if _, dup := seen[p]; dup {
			return
		}
		seen[p] = struct{}{}
		out = append(out, synthRoute{pfx: p, origin: 1 + uint32(r.IntN(origins)), variant: uint8(r.IntN(5))})
	}
	for len(out) < fullV4 {
		bits := 24
		switch x := r.IntN(100); {
		case x < 8:
			bits = 16 + r.IntN(4)
		case x < 40:
			bits = 20 + r.IntN(4)
		}
		v := r.Uint32()
		a := netip.AddrFrom4([4]byte{byte(1 + (v>>24)%223), byte(v >> 16), byte(v >> 8), byte(v)})
		p, _ := a.Prefix(bits)
		add(p)
	}
	for len(out) < fullV4+fullV6 {
		bits := 48
		switch x := r.IntN(100); {
		case x < 10:
			bits = 32
		case x < 30:
			bits = 33 + r.IntN(15)
		}
		var b [16]byte
		hi, lo := r.Uint64(), r.Uint64()
		for i := range 8 {
			b[i], b[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
		}
		b[0] = 0x20 | b[0]&0x1f
		p, _ := netip.AddrFrom16(b).Prefix(bits)
		add(p)
	}
	// Routers walk their tables in prefix order.
	slices.SortFunc(out, func(a, b synthRoute) int {
		if c := a.pfx.Addr().Compare(b.pfx.Addr()); c != 0 {
			return c
		}
		return a.pfx.Bits() - b.pfx.Bits()
	})
	return out
})

// pathFor builds the AS path peer (1 or 2) sends for s: the peer's AS,
// one or two of 400 transits, the origin. About 375,000 distinct paths
// per peer, as in real full tables.
func pathFor(peer int, s synthRoute, buf []uint32) Path {
	h := s.origin*2654435761 + uint32(s.variant)*40503
	t := h % transits
	buf = append(buf[:0], 65000+uint32(peer), 3000+t)
	if t%3 == 0 {
		buf = append(buf, 100+(h>>16)%transits)
	}
	buf = append(buf, 4_200_000_000+s.origin)
	return SequencePath(buf...)
}

// loadFull announces the full table from two peers of one router.
func loadFull(r *RIB) (*Peer, *Peer) { return loadFullWith(r, false) }

// loadFullWith is loadFull; with attrs each route also carries its
// peer's address as next hop and two communities, tagged by the transit
// and the origin (so they add no distinct paths, as tags set by the ASes
// on the path do not).
func loadFullWith(r *RIB, attrs bool) (*Peer, *Peer) {
	var s *Session
	var peers [2]*Peer
	r.Update(func(tx *Tx) {
		s = tx.Connect(router1(), "bench")
		peers[0] = tx.PeerUp(s, peerKey(peerA), 65001, addr(peerA))
		peers[1] = tx.PeerUp(s, peerKey(peerB), 65002, addr(peerB))
	})
	routes := fullTable()
	var buf []uint32
	for i, p := range peers {
		tx := r.Begin()
		for j, sr := range routes {
			path := pathFor(i+1, sr, buf)
			if attrs {
				h := sr.origin*2654435761 + uint32(sr.variant)*40503
				path = path.WithAttrs(Attrs{NextHop: p.bgpID, Communities: []uint32{(3000+h%transits)<<16 | uint32(sr.variant), 65000<<16 | sr.origin%50}})
			}
			tx.Announce(p, PrePolicy, sr.pfx, 0, path)
			if j%commitEvery == commitEvery-1 {
				tx.Commit()
				tx = r.Begin()
			}
		}
		tx.Commit()
	}
	return peers[0], peers[1]
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkIngestFullTable loads the synthetic full table from two
// peers (2.4 million routes), interning each route's AS path, and
// reports the rate and the heap held per route and per prefix.
func BenchmarkIngestFullTable(b *testing.B) { benchIngest(b, false) }

// BenchmarkIngestFullTableWithAttrs is BenchmarkIngestFullTable with a
// next hop and two communities on every route (loadFullWith).
func BenchmarkIngestFullTableWithAttrs(b *testing.B) { benchIngest(b, true) }

func benchIngest(b *testing.B, attrs bool) {
	routes := fullTable()
	n := 2 * len(routes)
	var perRoute, perPrefix float64
	var elapsed time.Duration
	for range b.N {
		b.StopTimer()
		before := heapInUse()
		r := New(Options{})
		b.StartTimer()
		start := time.Now()
		loadFullWith(r, attrs)
		elapsed += time.Since(start)
		b.StopTimer()
		held := float64(heapInUse() - before)
		perRoute, perPrefix = held/float64(n), held/float64(len(routes))
		if c := r.Counts(); c.Routes4+c.Routes6 != n {
			b.Fatalf("%d routes in the RIB, want %d", c.Routes4+c.Routes6, n)
		}
		runtime.KeepAlive(r)
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "routes/s")
	b.ReportMetric(perRoute, "B/route")
	b.ReportMetric(perPrefix, "B/prefix")
}

// BenchmarkFlushPeer measures Peer Down of one peer holding the full
// table while another peer holds it too (1.2 million routes removed,
// every prefix rewritten).
func BenchmarkFlushPeer(b *testing.B) {
	for range b.N {
		b.StopTimer()
		r := New(Options{})
		a, _ := loadFull(r)
		runtime.GC()
		b.StartTimer()
		r.Update(func(tx *Tx) { tx.PeerDown(a) })
		b.StopTimer()
		if c := r.Counts(); c.Routes4+c.Routes6 != len(fullTable()) {
			b.Fatalf("%d routes left, want %d", c.Routes4+c.Routes6, len(fullTable()))
		}
		b.StartTimer()
	}
}

// BenchmarkLookup measures Origin on the full table: hot probes cycle
// through 1024 addresses (cache-resident, the flow-label case), cold
// ones through a million (mostly cache misses).
func BenchmarkLookup(b *testing.B) {
	r := New(Options{})
	loadFull(r)
	routes := fullTable()
	rnd := rand.New(rand.NewPCG(5, 6))
	probes := func(v6 bool, n int) []netip.Addr {
		out := make([]netip.Addr, 0, n)
		for len(out) < n {
			sr := routes[rnd.IntN(len(routes))]
			if sr.pfx.Addr().Is6() == v6 {
				out = append(out, sr.pfx.Addr().Next())
			}
		}
		return out
	}
	for _, c := range []struct {
		name string
		v6   bool
		n    int
	}{{"ipv4/hot", false, 1 << 10}, {"ipv6/hot", true, 1 << 10}, {"ipv4/cold", false, 1 << 20}, {"ipv6/cold", true, 1 << 20}} {
		addrs := probes(c.v6, c.n)
		b.Run(c.name, func(b *testing.B) {
			mask := len(addrs) - 1
			var sink uint32
			for i := 0; b.Loop(); i++ {
				sink += r.Origin(addrs[i&mask])
			}
			if sink == 0 {
				b.Fatal("no origin found")
			}
		})
	}
	b.Run("route", func(b *testing.B) {
		addrs := probes(false, 1<<10)
		for i := 0; b.Loop(); i++ {
			if _, ok := r.LookupRoute(addrs[i&1023]); !ok {
				b.Fatal("no route")
			}
		}
	})
}

// BenchmarkUpdateSteadyState measures single-route transactions on a
// full table (the copy-on-write path): one announce per commit.
func BenchmarkUpdateSteadyState(b *testing.B) {
	r := New(Options{})
	a, _ := loadFull(r)
	routes := fullTable()
	rnd := rand.New(rand.NewPCG(8, 9))
	var buf []uint32
	for i := 0; b.Loop(); i++ {
		sr := routes[rnd.IntN(len(routes))]
		path := pathFor(1+i%2, sr, buf)
		r.Update(func(tx *Tx) { tx.Announce(a, PrePolicy, sr.pfx, 0, path) })
	}
}
