// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// memoryUsage is what the agent costs the machine in memory, split by
// how the kernel can get it back. RSS alone mixes these: most of an idle
// agent's RSS is clean pages of its own binary, which the page cache
// holds whether the agent maps them or not and which the kernel drops
// under pressure without writing anything.
type memoryUsage struct {
	// Anonymous is RssAnon: Go heap, stacks, runtime. Only swap can
	// reclaim it.
	Anonymous uint64
	// BPFLocked is the memlock of the BPF maps the agent holds open
	// (flow counters, ring buffer, config): kernel memory that cannot
	// be reclaimed while the agent runs.
	BPFLocked uint64
	// File is RssFile without the agent's mappings of BPF maps (the
	// ring buffer is mapped twice and its pages are in BPFLocked
	// already): resident pages of the binary and other mapped files.
	File uint64
}

// bpfLockedFunc returns the memlock of the BPF maps the agent holds.
type bpfLockedFunc func() (uint64, error)

// scanBPFMapsLocked finds every BPF map among the process's file
// descriptors; exact whoever holds the maps, but a readlink per
// descriptor (see datapath.LockedMemory).
func scanBPFMapsLocked() (uint64, error) { return bpfMapsLocked("/proc/self/fd", "/proc/self/fdinfo") }

// readMemoryUsage measures the running process from /proc/self, the
// BPF maps' locked memory with locked (nil: scanBPFMapsLocked).
func readMemoryUsage(locked bpfLockedFunc) (memoryUsage, error) {
	var m memoryUsage
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return m, fmt.Errorf("memory usage: %w", err)
	}
	rss, err := procFields(status, parseKB, "RssAnon", "RssFile")
	if err != nil {
		return m, fmt.Errorf("memory usage: /proc/self/status: %w", err)
	}
	anon, file := rss[0], rss[1]
	mappedBPF, err := bpfMappedRSS("/proc/self/smaps")
	if err != nil {
		return m, fmt.Errorf("memory usage: %w", err)
	}
	if locked == nil {
		locked = scanBPFMapsLocked
	}
	bpf, err := locked()
	if err != nil {
		return m, fmt.Errorf("memory usage: %w", err)
	}
	m.Anonymous, m.BPFLocked = anon, bpf
	if file > mappedBPF {
		m.File = file - mappedBPF
	}
	return m, nil
}

// procFields returns the values of keys in a /proc "key: value" file,
// each parsed with parse; every key must be there.
func procFields(text []byte, parse func(string) (uint64, error), keys ...string) ([]uint64, error) {
	values := make([]uint64, len(keys))
	found := 0
	for line := range bytes.Lines(text) {
		key, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		i := slices.Index(keys, string(key))
		if i < 0 {
			continue
		}
		v, err := parse(string(value))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		values[i] = v
		found++
	}
	if found < len(keys) {
		return nil, fmt.Errorf("want lines %s", strings.Join(keys, ", "))
	}
	return values, nil
}

// parseKB parses a "   1234 kB" field into bytes.
func parseKB(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	num, ok := strings.CutSuffix(s, " kB")
	if !ok {
		return 0, fmt.Errorf("%q: not a kB value", s)
	}
	kb, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: not a kB value", s)
	}
	return kb << 10, nil
}

// bpfMappedRSS sums the resident pages of the BPF maps mapped into the
// process (the ring buffer, memory-mapped arrays), in bytes, from the
// smaps file at path. The kernel counts them in RssFile.
func bpfMappedRSS(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total uint64
	inBPF := false
	// Bytes rather than strings: the file has a few thousand lines and
	// is read at every scrape.
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		key, value, isField := bytes.Cut(line, []byte(":"))
		if isField && !bytes.Contains(key, []byte(" ")) {
			if inBPF && string(key) == "Rss" {
				n, err := parseKB(string(value))
				if err != nil {
					return 0, fmt.Errorf("%s: Rss: %w", path, err)
				}
				total += n
			}
			continue
		}
		// A mapping header: "start-end perms offset dev inode [path]".
		inBPF = string(nthField(line, 5)) == "anon_inode:bpf-map"
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return total, nil
}

// nthField is the n-th (from 0) space-separated field of line, or nil.
func nthField(line []byte, n int) []byte {
	for i := 0; ; i++ {
		line = bytes.TrimLeft(line, " ")
		if len(line) == 0 {
			return nil
		}
		end := bytes.IndexByte(line, ' ')
		if end < 0 {
			end = len(line)
		}
		if i == n {
			return line[:end]
		}
		line = line[end:]
	}
}

// bpfMapsLocked sums the memlock of the BPF maps open in the process, in
// bytes: each file descriptor in fdDir that is a BPF map, counted once
// per map id (a map can be open under several descriptors), from its
// fdinfo in fdinfoDir. The kernel charges this memory to the process's
// memory cgroup whether or not the map is mapped.
func bpfMapsLocked(fdDir, fdinfoDir string) (uint64, error) {
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, err
	}
	seen := map[uint64]bool{}
	var total uint64
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil || target != "anon_inode:bpf-map" {
			continue // closed since the listing, or not a map
		}
		info, err := os.ReadFile(filepath.Join(fdinfoDir, e.Name()))
		if err != nil {
			continue // closed since the listing
		}
		fields, err := procFields(info, parseDecimal, "map_id", "memlock")
		if err != nil {
			return 0, fmt.Errorf("%s: %w", filepath.Join(fdinfoDir, e.Name()), err)
		}
		id, memlock := fields[0], fields[1]
		if !seen[id] {
			seen[id] = true
			total += memlock
		}
	}
	return total, nil
}

func parseDecimal(s string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: not a number", strings.TrimSpace(s))
	}
	return n, nil
}

// memoryCollector exports memoryUsage, measured at each scrape.
type memoryCollector struct {
	anonymous, bpfLocked, file *prometheus.Desc
	// locked, once set (the datapath is loaded; every BPF map the
	// agent holds is the datapath's), replaces the descriptor scan.
	locked atomic.Pointer[bpfLockedFunc]
}

// useBPFLocked makes the collector take the BPF figure from f; nil
// returns to the descriptor scan.
func (c *memoryCollector) useBPFLocked(f bpfLockedFunc) {
	if f == nil {
		c.locked.Store(nil)
		return
	}
	c.locked.Store(&f)
}

// lockedSource is the function useBPFLocked set last (nil: none).
func (c *memoryCollector) lockedSource() bpfLockedFunc {
	if f := c.locked.Load(); f != nil {
		return *f
	}
	return nil
}

func newMemoryCollector() *memoryCollector {
	return &memoryCollector{
		anonymous: prometheus.NewDesc("rfm_memory_anonymous_bytes",
			"Anonymous memory of the agent (RssAnon): Go heap, stacks and runtime.", nil, nil),
		bpfLocked: prometheus.NewDesc("rfm_memory_bpf_locked_bytes",
			"Locked kernel memory of the BPF maps the agent holds (sum of their memlock).", nil, nil),
		file: prometheus.NewDesc("rfm_memory_file_bytes",
			"Resident file-backed pages of the agent (RssFile without its mappings of BPF maps): clean pages of its binary, shared with the page cache and reclaimable.", nil, nil),
	}
}

func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.anonymous
	ch <- c.bpfLocked
	ch <- c.file
}

func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	var locked bpfLockedFunc
	if f := c.locked.Load(); f != nil {
		locked = *f
	}
	m, err := readMemoryUsage(locked)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.anonymous, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.anonymous, prometheus.GaugeValue, float64(m.Anonymous))
	ch <- prometheus.MustNewConstMetric(c.bpfLocked, prometheus.GaugeValue, float64(m.BPFLocked))
	ch <- prometheus.MustNewConstMetric(c.file, prometheus.GaugeValue, float64(m.File))
}
