// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// benchFlows returns n distinct flow templates: a mix of IPv4 (3/4) and
// IPv6 from the documentation/benchmark ranges, random ports, both
// directions, a few interfaces and protocols.
func benchFlows(n int, rng *rand.Rand) []datapath.Event {
	seen := make(map[Key]bool, n)
	flows := make([]datapath.Event, 0, n)
	for len(flows) < n {
		var ev datapath.Event
		if rng.IntN(4) != 0 {
			// 198.18.0.0/15, v4-mapped
			ev.Src = v4mapped(198, 18+byte(rng.IntN(2)), byte(rng.IntN(256)), byte(rng.IntN(256)))
			ev.Dst = v4mapped(198, 18+byte(rng.IntN(2)), byte(rng.IntN(256)), byte(rng.IntN(256)))
		} else {
			ev.Src = v6doc(rng.Uint64())
			ev.Dst = v6doc(rng.Uint64())
		}
		ev.Ifindex = uint32(2 + rng.IntN(4))
		ev.Dir = datapath.Direction(rng.IntN(2))
		ev.Proto = []uint8{6, 17, 6, 6, 1}[rng.IntN(5)]
		ev.SrcPort = uint16(rng.IntN(65536))
		ev.DstPort = uint16(rng.IntN(65536))
		ev.Len = uint32(64 + rng.IntN(1400))
		k := keyOfEvent(&ev)
		if seen[k] {
			continue
		}
		seen[k] = true
		flows = append(flows, ev)
	}
	return flows
}

func v4mapped(a, b, c, d byte) [16]byte {
	return [16]byte{10: 0xff, 11: 0xff, 12: a, 13: b, 14: c, 15: d}
}

func v6doc(low uint64) [16]byte {
	a := [16]byte{0: 0x20, 1: 0x01, 2: 0x0d, 3: 0xb8}
	for i := range 8 {
		a[8+i] = byte(low >> (8 * i))
	}
	return a
}

func keyOfEvent(ev *datapath.Event) Key {
	return Key{Src: ev.Src, Dst: ev.Dst, Ifindex: ev.Ifindex, SrcPort: ev.SrcPort,
		DstPort: ev.DstPort, Proto: ev.Proto, Dir: ev.Dir,
		TOS: ev.TOS, VLANOuter: ev.VLANOuter, VLANInner: ev.VLANInner}
}

// withFields gives each flow optional fields as a datapath loaded with
// all of them reports: a DSCP and VLAN ids per flow (key fields), TCP
// flags, a TTL and a FIB answer.
func withFields(flows []datapath.Event, rng *rand.Rand) {
	for i := range flows {
		f := &flows[i].EventFields
		f.TOS = []uint8{0, 0xb8, 0x28}[rng.IntN(3)]
		f.VLANOuter, f.VLANInner = uint16(10+rng.IntN(4)), uint16(rng.IntN(2))
		f.TCPFlags = []uint8{0x10, 0x18, 0x02, 0x11}[rng.IntN(4)]
		f.TTL = uint8(50 + rng.IntN(14))
		f.FIBIfindex = uint32(2 + rng.IntN(4))
		f.FIBNextHop = v4mapped(198, 18, 0, 254)
	}
}

// benchEvents draws count events uniformly from flows (the worst case for
// caches: no temporal locality) with increasing timestamps.
func benchEvents(flows []datapath.Event, count int, rng *rand.Rand) []datapath.Event {
	evs := make([]datapath.Event, count)
	for i := range evs {
		evs[i] = flows[rng.IntN(len(flows))]
		evs[i].BootNs = uint64(1e9 + i)
	}
	return evs
}

// BenchmarkUpdateBatch measures the collector hot path: batches of
// BatchSize events for flows already in the table. One op is one event.
func BenchmarkUpdateBatch(b *testing.B) {
	for _, c := range []struct {
		n      int
		fields bool
	}{{1 << 10, false}, {1 << 16, false}, {1 << 20, false}, {1 << 16, true}} {
		n := c.n
		name := fmt.Sprintf("flows=%d", n)
		if c.fields {
			name += "/fields=all"
		}
		b.Run(name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, uint64(n)))
			flows := benchFlows(n, rng)
			if c.fields {
				withFields(flows, rng)
			}
			evs := benchEvents(flows, max(4*n, 1<<20), rng)
			t := NewTable(Options{MaxFlows: n})
			t.UpdateBatch(flows) // every flow exists: measure updates
			b.ReportAllocs()
			b.ResetTimer()
			updateFromRing(b, t, evs)
			if t.Active() != n {
				b.Fatalf("active = %d, want %d", t.Active(), n)
			}
		})
	}
}

// updateFromRing applies b.N events to t in BatchSize batches, cycling
// through evs, and reports events/s.
func updateFromRing(b *testing.B, t *Table, evs []datapath.Event) {
	off := 0
	for done := 0; done < b.N; done += BatchSize {
		m := min(BatchSize, b.N-done)
		if off+m > len(evs) {
			off = 0
		}
		t.UpdateBatch(evs[off : off+m])
		off += m
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkUpdateBatchChurn measures a full table where most events start
// a new flow and force out the oldest one (a scan or flood).
func BenchmarkUpdateBatchChurn(b *testing.B) {
	const tableSize = 1 << 16
	rng := rand.New(rand.NewPCG(2, 2))
	flows := benchFlows(1<<20, rng)
	evs := benchEvents(flows, 1<<21, rng)
	t := NewTable(Options{MaxFlows: tableSize})
	t.UpdateBatch(evs[:1<<20])
	b.ReportAllocs()
	b.ResetTimer()
	updateFromRing(b, t, evs)
}

// BenchmarkRollup measures the Prometheus scrape path over 65,536 flows:
// "routerlike" has the remote side spread over 256 ASNs (a few cities
// each) and the local side fixed, a few thousand groups; "distinct" gives
// nearly every flow its own group, the worst case.
func BenchmarkRollup(b *testing.B) {
	const n = 1 << 16
	for _, enr := range []struct {
		name string
		e    Enricher
	}{{"routerlike", routerEnricher{}}, {"distinct", &benchEnricher{}}} {
		b.Run(enr.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 3))
			flows := benchFlows(n, rng)
			t := NewTable(Options{MaxFlows: n, Enricher: enr.e})
			t.UpdateBatch(flows)
			t.Rollup(func(RollupKey, RollupCounts) {}) // size the buffers
			b.ReportAllocs()
			groups := 0
			for b.Loop() {
				groups = 0
				t.Rollup(func(RollupKey, RollupCounts) { groups++ })
			}
			b.ReportMetric(float64(groups), "groups")
		})
	}
}

// routerEnricher labels the remote side of a flow with one of 256 ASNs
// and one of 4 cities per ASN; the local side is unknown (own network).
type routerEnricher struct{}

func (routerEnricher) Enrich(src, dst netip.Addr) Labels {
	r := src.As16()
	asn := 64512 + uint32(r[15])
	return Labels{SrcASN: asn, SrcCity: benchCities[(r[15]+r[14]%4)%16]}
}

func (routerEnricher) Generation() uint64 { return 1 }

// benchEnricher spreads flows over 64 ASNs and 16 cities per side,
// derived from the address bytes, about what a busy router sees.
type benchEnricher struct{}

var benchCities = func() []string {
	c := make([]string, 16)
	for i := range c {
		c[i] = fmt.Sprintf("City %d", i)
	}
	return c
}()

func (*benchEnricher) Enrich(src, dst netip.Addr) Labels {
	s, d := src.As16(), dst.As16()
	return Labels{
		SrcASN:  64512 + uint32(s[15]%64),
		DstASN:  64512 + uint32(d[15]%64),
		SrcCity: benchCities[s[14]%16],
		DstCity: benchCities[d[14]%16],
	}
}

func (*benchEnricher) Generation() uint64 { return 1 }

// BenchmarkTopLockHold runs Top over 500,000 flows and reports the
// longest and the mean hold of the table lock, which is how long the
// collector can be kept waiting by someone running `rfm flows`. On a busy
// machine the longest includes time the holder was not scheduled.
func BenchmarkTopLockHold(b *testing.B) {
	const n = 500_000
	rng := rand.New(rand.NewPCG(5, 5))
	t := NewTable(Options{MaxFlows: n})
	t.UpdateBatch(benchFlows(n, rng))
	byBytes := func(x, y *Record) bool { return x.Bytes > y.Bytes }
	defer func() { topLockHeld = nil }()
	for _, top := range []int{20, 0} {
		b.Run(fmt.Sprintf("top=%d", top), func(b *testing.B) {
			var longest, sum time.Duration
			holds := 0
			topLockHeld = func(d time.Duration) { longest = max(longest, d); sum += d; holds++ }
			for b.Loop() {
				_ = t.Top(top, byBytes, nil)
			}
			b.ReportMetric(float64(longest.Microseconds()), "max-lock-hold-µs")
			b.ReportMetric(float64(sum.Microseconds())/float64(holds), "mean-lock-hold-µs")
		})
	}
}

// bgpBenchEnricher is benchEnricher with a BGP context for the
// destination from one of 1024 routes (next hop, next AS, prefix length,
// one community each), the per-new-flow work of a BMP-fed RIB on the
// table's side: interning the destination context.
type bgpBenchEnricher struct{ benchEnricher }

func (e *bgpBenchEnricher) Enrich(src, dst netip.Addr) Labels {
	l := e.benchEnricher.Enrich(src, dst)
	d := dst.As16()
	route := uint32(d[14]&3)<<8 | uint32(d[15])
	l.BGP = BGP{NextHop: netip.AddrFrom4([4]byte{192, 0, 2, byte(route % 8)}).As16(), NextAS: 65000 + route%64,
		PrevAS: 64512 + uint32(src.As16()[15]%64), SrcPrefixLen: 24, DstPrefixLen: 16 + uint8(route%9),
		Communities: benchCommunities[route]}
	return l
}

var benchCommunities = func() []string {
	c := make([]string, 1024)
	for i := range c {
		c[i] = string([]byte{0xfd, 0xe9, byte(i >> 8), byte(i)})
	}
	return c
}()

// BenchmarkUpdateBatchChurnEnriched is BenchmarkUpdateBatchChurn with
// labels at every new flow, without and with a BGP context.
func BenchmarkUpdateBatchChurnEnriched(b *testing.B) {
	for _, c := range []struct {
		name string
		enr  Enricher
	}{{"labels", &benchEnricher{}}, {"labels+bgp", &bgpBenchEnricher{}}} {
		b.Run(c.name, func(b *testing.B) {
			const tableSize = 1 << 16
			rng := rand.New(rand.NewPCG(2, 2))
			flows := benchFlows(1<<20, rng)
			evs := benchEvents(flows, 1<<21, rng)
			t := NewTable(Options{MaxFlows: tableSize, Enricher: c.enr})
			t.UpdateBatch(evs[:1<<20])
			b.ReportAllocs()
			b.ResetTimer()
			updateFromRing(b, t, evs)
		})
	}
}

// BenchmarkFlowMemory reports the live heap of a table per active flow,
// plus its arena's chunks mapped outside the heap,
// at 65,536 flows (the default max_flows) created in one go, after a
// garbage collection: arena, index, side tables and, once the table has
// had to evict, its age queue. One op fills one table. "mixed" is
// benchFlows' 3/4 IPv4 and 1/4 IPv6; "ipv4" only IPv4; "full-evicting"
// is mixed after 4,096 more flows forced the oldest out, so the age
// queue exists.
func BenchmarkFlowMemory(b *testing.B) {
	const n = 1 << 16
	for _, c := range []struct {
		name  string
		v4    bool
		extra int
	}{{"mixed", false, 0}, {"ipv4", true, 0}, {"full-evicting", false, 4096}} {
		b.Run(c.name, func(b *testing.B) {
			flows := benchFlows(n+c.extra, rand.New(rand.NewPCG(3, 3)))
			if c.v4 {
				for i := range flows {
					flows[i].Src = v4mapped(198, 18, byte(i>>8), byte(i))
					flows[i].Dst = v4mapped(198, 19, byte(i>>16), 1)
				}
			}
			var perFlow float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				t := NewTable(Options{MaxFlows: n})
				t.UpdateBatch(flows)
				runtime.GC()
				runtime.ReadMemStats(&after)
				if t.Active() != n {
					b.Fatalf("active = %d, want %d", t.Active(), n)
				}
				// The arena's chunks are mapped outside the heap.
				perFlow = float64(after.HeapAlloc-before.HeapAlloc+uint64(t.arena.mem.mappedBytes())) / n
				runtime.KeepAlive(t)
			}
			b.ReportMetric(perFlow, "B/flow")
		})
	}
}

// BenchmarkExpireScan measures the sweep's pass over the flows (idle
// timeout and active-timeout export, Table.expire) when no flow is idle
// or due: the cost every sweep pays, once a second by default. One op is
// one pass; ns/flow is per flow in the table.
func BenchmarkExpireScan(b *testing.B) {
	for _, n := range []int{1 << 16, 1 << 20} {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
			flows := benchFlows(n, rand.New(rand.NewPCG(6, 6)))
			for i := range flows {
				flows[i].BootNs = uint64(1e12 + i)
			}
			t := NewTable(Options{MaxFlows: n})
			t.UpdateBatch(flows)
			for b.Loop() {
				t.expire(1e12-1, 1e12-1)
			}
			if t.Active() != n {
				b.Fatalf("active = %d, want %d", t.Active(), n)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/flow")
		})
	}
}

// BenchmarkStartAging measures building the age queue from the arena, which
// the first eviction of a full table pays under the lock. One op is one
// build.
func BenchmarkStartAging(b *testing.B) {
	for _, n := range []int{1 << 16, 1 << 20} {
		b.Run(fmt.Sprintf("flows=%d", n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(7, 7))
			flows := benchFlows(n, rng)
			for i := range flows {
				flows[i].BootNs = 1e9 + rng.Uint64N(1e9) // last-seen in random order
			}
			t := NewTable(Options{MaxFlows: n})
			t.UpdateBatch(flows)
			for b.Loop() {
				t.startAging()
			}
			if t.Active() != n {
				b.Fatalf("active = %d, want %d", t.Active(), n)
			}
		})
	}
}
