// SPDX-License-Identifier: AGPL-3.0-only

// Package accuracy measures what sampling costs in accuracy, with the real
// BPF program (run on crafted frames with BPF_PROG_TEST_RUN) and the real
// flow table: interface counters against the frames injected, per-flow
// estimates against the expected relative error sqrt(N/P) (Duffield et
// al.), and how many flows are seen at all as P/N shrinks.
//
// Only the exact counters and loose statistical bounds are assertions;
// the tables are logged (go test -v) and, with -results FILE, written to
// a file (bench/accuracy.sh writes bench/accuracy-results.txt).
package accuracy

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

var resultsPath = flag.String("results", "", "write the accuracy tables to this file")

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs and run them with BPF_PROG_TEST_RUN (run as root)")
	}
}

// bed is a loaded datapath with one injector. With MaxInterfaces 1 the
// injector takes slot 0, so its counters are keys 0 (ingress) and 1
// (egress) of the first counter chunk.
type bed struct {
	d        *datapath.Datapath
	in       *datapath.Injector
	counters *countersMap
	evs      []datapath.Event
}

// ringSize holds 131,072 events (64 bytes each, batched into records);
// inject drains well before that.
const ringSize = 1 << 23

func newBed(t *testing.T) *bed {
	t.Helper()
	requireRoot(t)
	d, err := datapath.Load(datapath.Options{RingBufSize: ringSize, MaxInterfaces: 1})
	if err != nil {
		t.Fatalf("load datapath: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	// The injector's slot brings the first counter chunk into being.
	in, err := d.NewInjector()
	if err != nil {
		t.Fatalf("new injector: %v", err)
	}
	t.Cleanup(in.Close)
	cm, err := openCounters()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cm.close)
	return &bed{d: d, in: in, counters: cm, evs: make([]datapath.Event, flow.BatchSize)}
}

func (b *bed) setRate(t *testing.T, rate uint32) {
	t.Helper()
	if err := b.d.SetConfig(datapath.Config{SampleRate: rate}); err != nil {
		t.Fatalf("sample rate %d: %v", rate, err)
	}
}

// collect moves every event in the ring into table (nil: just count) and
// returns how many sampled packets they carried (an event counts its
// Segs, as the flow table does: a run of one flow's packets in a row may
// share an event). It fails the test if the ring dropped any.
func (b *bed) collect(t *testing.T, table *flow.Table) int {
	t.Helper()
	if err := b.d.Drain(); err != nil {
		t.Fatalf("flush ring buffer: %v", err)
	}
	total := 0
	for {
		n, err := b.d.ReadBatch(b.evs)
		if table != nil && n > 0 {
			table.UpdateBatch(b.evs[:n])
		}
		for _, e := range b.evs[:n] {
			total += int(e.Segs)
		}
		if errors.Is(err, datapath.ErrFlushed) {
			break
		}
		if err != nil {
			t.Fatalf("read ring buffer: %v", err)
		}
	}
	st, err := b.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.RingDrops != 0 || b.d.DecodeErrors() != 0 {
		t.Fatalf("ring lost events: %d drops, %d decode errors (the measurement would be biased)", st.RingDrops, b.d.DecodeErrors())
	}
	return total
}

// Addresses of the crafted flows, inside the benchmarking range.
var (
	dstAddr = netip.MustParseAddr("198.19.255.2")
	dst6    = netip.MustParseAddr("2001:db8:ffff::2")
	src6    = netip.MustParseAddr("2001:db8::1")
)

// flowFrame is an Ethernet/IPv4/UDP frame of flow i: source
// 198.18.(i>>8).(i&255), source port 1024+i, destination 198.19.255.2:9.
func flowFrame(i int) []byte {
	src := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
	return udpFrame(src, dstAddr, uint16(1024+i), 9, 18)
}

func flowOf(k *flow.Key) int { return int(k.SrcPort) - 1024 }

// udpFrame builds an untagged Ethernet frame carrying a UDP packet with
// payload zero bytes; the UDP checksum is left 0 (the datapath ignores it).
func udpFrame(src, dst netip.Addr, sport, dport uint16, payload int) []byte {
	var f []byte
	if src.Is4() {
		f = make([]byte, 14+20+8+payload)
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip := f[14:]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+8+payload))
		ip[8] = 64
		ip[9] = 17
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[j:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		binary.BigEndian.PutUint16(f[34:], sport)
		binary.BigEndian.PutUint16(f[36:], dport)
		binary.BigEndian.PutUint16(f[38:], uint16(8+payload))
		return f
	}
	f = make([]byte, 14+40+8+payload)
	binary.BigEndian.PutUint16(f[12:], 0x86dd)
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(8+payload))
	ip[6] = 17
	ip[7] = 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	binary.BigEndian.PutUint16(f[54:], sport)
	binary.BigEndian.PutUint16(f[56:], dport)
	binary.BigEndian.PutUint16(f[58:], uint16(8+payload))
	return f
}

// report collects the tables for the log and the -results file.
type report struct{ b strings.Builder }

func (r *report) printf(format string, args ...any) { fmt.Fprintf(&r.b, format, args...) }

var results report

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if *resultsPath != "" && results.b.Len() > 0 {
		hdr := fmt.Sprintf("# rfm sampling accuracy (bench/accuracy.sh: go test -run Accuracy ./test/accuracy)\n"+
			"# date: %s, %s, %s; the BPF sampler draws from bpf_get_prandom_u32,\n"+
			"# so every run differs; figures are over the flows of one run.\n",
			time.Now().UTC().Format("2006-01-02 15:04 UTC"), kernelRelease(), runtime.Version())
		if err := os.WriteFile(*resultsPath, []byte(hdr+results.b.String()), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "write -results %s: %v\n", *resultsPath, err)
			code = 1
		}
	}
	os.Exit(code)
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "kernel unknown"
	}
	return "Linux " + strings.TrimSpace(string(b))
}

// TestAccuracyCounters: interface counters are exact at every sample
// rate (they are updated for every packet before the sampling decision),
// per family and direction, and at rate 1 every IP packet is sampled.
func TestAccuracyCounters(t *testing.T) {
	b := newBed(t)
	frames := []struct {
		fam   datapath.Family
		frame []byte
		count int
	}{
		{datapath.FamilyIPv4, flowFrame(1), 40000},
		{datapath.FamilyIPv6, udpFrame(src6, dst6, 1000, 9, 100), 30000},
		{datapath.FamilyOther, append([]byte{0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x06}, make([]byte, 28)...), 7},
	}
	results.printf("\n## Interface counters (BPF_PROG_TEST_RUN, both directions)\n")
	results.printf("%-6s %-8s %-6s %10s %10s %12s %12s %8s\n", "rate", "dir", "family", "injected", "counted", "bytes_inj", "bytes_count", "sampled")
	for _, rate := range []uint32{1, 10, 100, 1000} {
		b.setRate(t, rate)
		for _, dir := range []datapath.Direction{datapath.Ingress, datapath.Egress} {
			before, err := b.counters.read(dir)
			if err != nil {
				t.Fatal(err)
			}
			ipPackets := 0
			for _, f := range frames {
				if err := b.in.Run(dir, f.frame, f.count); err != nil {
					t.Fatal(err)
				}
				if f.fam != datapath.FamilyOther {
					ipPackets += f.count
				}
			}
			sampled := b.collect(t, nil)
			after, err := b.counters.read(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range frames {
				gotP := after.Packets[f.fam] - before.Packets[f.fam]
				gotB := after.Bytes[f.fam] - before.Bytes[f.fam]
				wantB := uint64(f.count * len(f.frame))
				results.printf("%-6d %-8s %-6s %10d %10d %12d %12d %8s\n", rate, dir, f.fam, f.count, gotP, wantB, gotB, "")
				if gotP != uint64(f.count) || gotB != wantB {
					t.Errorf("rate %d %s %s: counted %d packets %d bytes, injected %d packets %d bytes",
						rate, dir, f.fam, gotP, gotB, f.count, wantB)
				}
			}
			results.printf("%-6d %-8s %-6s %10d %10s %12s %12s %8d\n", rate, dir, "ip", ipPackets, "", "", "", sampled)
			if rate == 1 && sampled != ipPackets {
				t.Errorf("rate 1 %s: %d sampled packets for %d IP packets, want every one", dir, sampled, ipPackets)
			}
		}
	}
	t.Log(results.b.String())
}

// cell is one (rate, packets per flow, injection pattern) measurement.
type cell struct {
	mode    string
	rate    int
	packets int
	flows   int
}

// Injection patterns. interleaved: every round sends one packet of each
// flow in a fresh random order, as on a router where many flows share the
// link. back-to-back: each flow's packets arrive as one burst (one test
// run with repeat = P), the best case for the sampler's uniform gaps.
const (
	interleaved = "interleaved"
	backToBack  = "back-to-back"
)

// sampledCounts injects c and returns the sampled packets of each flow,
// as aggregated by the real flow table.
func sampledCounts(t *testing.T, b *bed, c cell, rng *rand.Rand) []uint64 {
	t.Helper()
	b.setRate(t, uint32(c.rate))
	table := flow.NewTable(flow.Options{IdleTimeout: time.Hour})
	frames := make([][]byte, c.flows)
	for i := range frames {
		frames[i] = flowFrame(i)
	}
	// Drain once about 20,000 events may be waiting, long before the
	// ring (131,072 events) could fill.
	sinceDrain := 0
	drainMaybe := func(packets int) {
		if sinceDrain += packets; sinceDrain/c.rate >= 20000 {
			b.collect(t, table)
			sinceDrain = 0
		}
	}
	switch c.mode {
	case backToBack:
		for i := range frames {
			if err := b.in.Run(datapath.Ingress, frames[i], c.packets); err != nil {
				t.Fatal(err)
			}
			drainMaybe(c.packets)
		}
	case interleaved:
		order := make([]int, c.flows)
		for i := range order {
			order[i] = i
		}
		for range c.packets {
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, i := range order {
				if err := b.in.Run(datapath.Ingress, frames[i], 1); err != nil {
					t.Fatal(err)
				}
			}
			drainMaybe(c.flows)
		}
	}
	b.collect(t, table)
	counts := make([]uint64, c.flows)
	for _, r := range table.Top(0, nil, nil) {
		i := flowOf(&r.Key)
		if i < 0 || i >= c.flows {
			t.Fatalf("unexpected flow %v:%d in the table", r.SrcAddr(), r.SrcPort)
		}
		counts[i] += r.Packets
	}
	return counts
}

// TestAccuracyEstimates: per-flow estimates (sampled packets x N) over
// many flows, against Duffield's expected relative error sqrt(N/P).
//
// Independent 1-in-N sampling gives a relative standard error of exactly
// sqrt((N-1)/P), which Duffield et al. round to sqrt(N/P). The datapath
// draws uniform gaps in [1, 2N-1] instead; on a burst of one flow that is
// a renewal process whose count variance is P(N-1)/(3N^2), i.e. an error
// of sqrt((N-1)/(3P)), 1/sqrt(3) of the independent case. Interleaved
// flows see close to independent sampling.
//
// Assertion (loose on purpose): the RMS relative error of every cell lies
// within [1/3, 3] x sqrt(N/P). MS = RMS^2 is the mean of F = 200 squared
// errors whose expectation is about (N-1)/N x N/P interleaved and
// (N-1)/(3N) x N/P back-to-back, so a failure needs MS to miss its
// expectation by a factor of 2.7 (back-to-back, low side) or 9.
// False-failure probability, per cell, with Chernoff bounds:
//   - back-to-back, large P: squared errors are ~ scaled chi^2_1, and
//     P(chi^2_200 <= 200 z) <= (z e^(1-z))^100 with z = 0.37: < 2e-16;
//   - back-to-back, P = N = 100: the count is 0, 1 or 2, the squared error
//     a Bernoulli(~0.5); Hoeffding gives exp(-2*200*(0.5-1/9)^2) < 1e-26;
//   - interleaved (z = 0.12 low, z = 10 high): far smaller; the
//     heaviest-tailed cell, P = N = 100 (Poisson(1) counts, squared error
//     mean 1, variance 3), sits 65 standard errors below the high bound.
//
// Over the 12 cells the test fails by chance with probability < 1e-15.
func TestAccuracyEstimates(t *testing.T) {
	b := newBed(t)
	rng := rand.New(rand.NewPCG(1, 2)) // only orders packets; sampling is the kernel's
	var cells []cell
	for _, mode := range []string{interleaved, backToBack} {
		for _, n := range []int{10, 100} {
			for _, p := range []int{100, 1000, 10000} {
				cells = append(cells, cell{mode, n, p, 200})
			}
		}
	}
	results.printf("\n## Per-flow estimates (estimate = sampled packets x N; rel err = estimate/P - 1)\n")
	results.printf("# expected: Duffield sqrt(N/P); independent sampling exactly sqrt((N-1)/P);\n")
	results.printf("# uniform-gap renewal over one burst sqrt((N-1)/(3P)) (asymptotic, large P/N)\n")
	results.printf("%-12s %5s %6s %5s %10s %12s %12s %10s %12s %12s\n",
		"pattern", "N", "P", "flows", "mean_err", "mean|err|", "RMS_err", "sqrt(N/P)", "sqrt((N-1)/P)", "renewal")
	for _, c := range cells {
		counts := sampledCounts(t, b, c, rng)
		var sum, sumAbs, sumSq float64
		for _, k := range counts {
			rel := float64(k)*float64(c.rate)/float64(c.packets) - 1
			sum += rel
			sumAbs += math.Abs(rel)
			sumSq += rel * rel
		}
		f := float64(c.flows)
		rms := math.Sqrt(sumSq / f)
		duffield := math.Sqrt(float64(c.rate) / float64(c.packets))
		indep := math.Sqrt(float64(c.rate-1) / float64(c.packets))
		renewal := math.Sqrt(float64(c.rate-1) / (3 * float64(c.packets)))
		results.printf("%-12s %5d %6d %5d %+10.4f %12.4f %12.4f %10.4f %12.4f %12.4f\n",
			c.mode, c.rate, c.packets, c.flows, sum/f, sumAbs/f, rms, duffield, indep, renewal)
		if rms > 3*duffield || rms < duffield/3 {
			t.Errorf("%s N=%d P=%d: RMS relative error %.4f outside [%.4f, %.4f] (sqrt(N/P) = %.4f)",
				c.mode, c.rate, c.packets, rms, duffield/3, 3*duffield, duffield)
		}
	}
	t.Log(results.b.String())
}

// TestAccuracyCoverage: the fraction of flows sampled at least once, as
// P/N shrinks, against 1-(1-1/N)^P (independent sampling). For
// back-to-back bursts the uniform gaps give the exact renewal figure
// 1 - (m-P)(m-P+1)/(2mN) with m = 2N-1 (P < m; 1 beyond), printed too.
//
// Assertion, interleaved only (flows there are independent trials): the
// observed fraction lies within 6 binomial standard errors of
// 1-(1-1/N)^P, plus 0.01 for the small dependence the gaps leave between
// packets of one flow. A standard normal beyond 6 has probability 2e-9;
// over the 10 asserted cells the false-failure probability is below 1e-8.
func TestAccuracyCoverage(t *testing.T) {
	b := newBed(t)
	rng := rand.New(rand.NewPCG(3, 4))
	results.printf("\n## Coverage (fraction of flows with at least one sampled packet)\n")
	results.printf("%-12s %5s %6s %6s %5s %9s %12s %9s\n", "pattern", "N", "P", "P/N", "flows", "observed", "1-(1-1/N)^P", "renewal")
	for _, mode := range []string{interleaved, backToBack} {
		for _, n := range []int{10, 100} {
			for _, x := range []float64{0.5, 1, 2, 5, 10} {
				p := int(x * float64(n))
				const flows = 1000
				counts := sampledCounts(t, b, cell{mode, n, p, flows}, rng)
				seen := 0
				for _, k := range counts {
					if k > 0 {
						seen++
					}
				}
				obs := float64(seen) / float64(flows)
				want := 1 - math.Pow(1-1/float64(n), float64(p))
				m := 2*n - 1
				renewal := 1.0
				if p < m {
					renewal = 1 - float64((m-p)*(m-p+1))/float64(2*m*n)
				}
				results.printf("%-12s %5d %6d %6.1f %5d %9.4f %12.4f %9.4f\n", mode, n, p, x, flows, obs, want, renewal)
				se := math.Sqrt(want * (1 - want) / float64(flows))
				if mode == interleaved && math.Abs(obs-want) > 6*se+0.01 {
					t.Errorf("%s N=%d P=%d: %.4f of %d flows seen, want %.4f +- %.4f",
						mode, n, p, obs, flows, want, 6*se+0.01)
				}
			}
		}
	}
	t.Log(results.b.String())
}
