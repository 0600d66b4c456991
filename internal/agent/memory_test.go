// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestProcFieldsStatus(t *testing.T) {
	status := "Name:\trfm\nVmRSS:\t    9216 kB\nRssAnon:\t    3480 kB\nRssFile:\t    5736 kB\nRssShmem:\t       0 kB\n"
	got, err := procFields([]byte(status), parseKB, "RssAnon", "RssFile")
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 3480*1024 || got[1] != 5736*1024 {
		t.Fatalf("RssAnon, RssFile = %d, want %d and %d", got, 3480*1024, 5736*1024)
	}
	for _, bad := range []string{
		"RssAnon:\t1 kB\n",                     // no RssFile
		"RssAnon:\tx kB\nRssFile:\t1 kB\n",     // not a number
		"RssAnon:\t12 pages\nRssFile:\t1 kB\n", // not kB
	} {
		if _, err := procFields([]byte(bad), parseKB, "RssAnon", "RssFile"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// A map's fdinfo as Linux 6.x writes it.
const arrayFdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nmap_type:\t2\nkey_size:\t4\nvalue_size:\t96\nmax_entries:\t1\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t408\nmap_id:\t22759\nfrozen:\t0\n"

func TestProcFieldsFdinfo(t *testing.T) {
	got, err := procFields([]byte(arrayFdinfo), parseDecimal, "map_id", "memlock")
	if err != nil || got[0] != 22759 || got[1] != 408 {
		t.Fatalf("map_id, memlock = %v, err %v; want 22759 408", got, err)
	}
	if _, err := procFields([]byte("pos:\t0\nprog_type:\t3\nmemlock:\t4096\n"), parseDecimal, "map_id", "memlock"); err == nil {
		t.Fatal("fdinfo without map_id: no error")
	}
}

// A fake /proc/PID/fd and fdinfo: two descriptors of one map, another
// map, a program and a regular file. Each map counts once.
func TestBPFMapsLockedFake(t *testing.T) {
	dir := t.TempDir()
	fd, fdinfo := filepath.Join(dir, "fd"), filepath.Join(dir, "fdinfo")
	for _, d := range []string{fd, fdinfo} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	add := func(n, target, info string) {
		if err := os.Symlink(target, filepath.Join(fd, n)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fdinfo, n), []byte(info), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	add("3", "anon_inode:bpf-map", "memlock:\t1000\nmap_id:\t7\n")
	add("4", "anon_inode:bpf-map", "memlock:\t1000\nmap_id:\t7\n") // same map
	add("5", "anon_inode:bpf-map", "memlock:\t24\nmap_id:\t8\n")
	add("6", "anon_inode:bpf-prog", "memlock:\t4096\nprog_id:\t9\n")
	add("7", "/etc/rfm/rfm.toml", "pos:\t0\n")
	got, err := bpfMapsLocked(fd, fdinfo)
	if err != nil {
		t.Fatal(err)
	}
	if got != 1024 {
		t.Fatalf("locked %d, want 1024", got)
	}
}

func TestBPFMappedRSSFake(t *testing.T) {
	smaps := `55d4c7a00000-55d4c8000000 r-xp 00000000 fe:01 123   /usr/bin/rfm
Size:               6144 kB
Rss:                5000 kB
Anonymous:             0 kB
7ff17b29f000-7ff17b320000 r--s 00001000 00:10 1038                       anon_inode:bpf-map
Size:                516 kB
Rss:                 516 kB
7ff1c1e26000-7ff1c1e27000 rw-s 00000000 00:10 1038                       anon_inode:bpf-map
Size:                  4 kB
Rss:                   4 kB
7ff1c1e30000-7ff1c1e40000 rw-p 00000000 00:00 0
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
`
	path := filepath.Join(t.TempDir(), "smaps")
	if err := os.WriteFile(path, []byte(smaps), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := bpfMappedRSS(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != 520*1024 {
		t.Fatalf("mapped BPF RSS %d, want %d", got, 520*1024)
	}
}

func requireBPF(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating BPF maps needs root")
	}
}

// Real maps: the sum grows by the memlock the kernel reports for each
// new map (through cilium/ebpf's own fdinfo reader), once per map even
// with a second descriptor.
func TestBPFMapsLockedReal(t *testing.T) {
	requireBPF(t)
	before, err := bpfMapsLocked("/proc/self/fd", "/proc/self/fdinfo")
	if err != nil {
		t.Fatal(err)
	}
	var want uint64
	for _, spec := range []*ebpf.MapSpec{
		{Type: ebpf.Hash, KeySize: 16, ValueSize: 64, MaxEntries: 4096},
		{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 16},
	} {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		memlock, ok := info.Memlock()
		if !ok || memlock == 0 {
			t.Fatalf("%v: kernel reports no memlock", spec.Type)
		}
		want += memlock
		dup, err := m.Clone()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dup.Close() })
	}
	after, err := bpfMapsLocked("/proc/self/fd", "/proc/self/fdinfo")
	if err != nil {
		t.Fatal(err)
	}
	if after-before != want {
		t.Fatalf("locked memory grew by %d, want %d", after-before, want)
	}
}

// A ring buffer read from user space is mapped into the process: its
// consumer page, its producer page and its data pages twice (the
// kernel maps the data back to back so records never wrap), all of it
// counted in RssFile. bpfMappedRSS finds exactly those pages.
func TestBPFMappedRSSRingBuffer(t *testing.T) {
	requireBPF(t)
	page := uint64(os.Getpagesize())
	before, err := bpfMappedRSS("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	const dataPages = 4
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: uint32(dataPages * page)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	after, err := bpfMappedRSS("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	if want := (2 + 2*dataPages) * page; after-before != want {
		t.Fatalf("mapped BPF RSS grew by %d, want %d", after-before, want)
	}
}

// The collector exports the three figures; on a running process the
// anonymous and file figures are never zero.
func TestMemoryCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newMemoryCollector())
	n, err := testutil.GatherAndCount(reg, "rfm_memory_anonymous_bytes", "rfm_memory_bpf_locked_bytes", "rfm_memory_file_bytes")
	if err != nil || n != 3 {
		t.Fatalf("%d metrics, err %v; want 3", n, err)
	}
	m, err := readMemoryUsage(nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Anonymous == 0 || m.File == 0 {
		t.Fatalf("%+v: anonymous and file memory must not be zero", m)
	}
	lint, err := testutil.GatherAndLint(reg)
	if err != nil || len(lint) > 0 {
		t.Fatalf("lint: %v %v", lint, err)
	}
}

// Once given a source (the datapath's maps), the collector reports its
// figure instead of scanning descriptors, and goes back to the scan
// when the source is taken away.
func TestMemoryCollectorBPFSource(t *testing.T) {
	c := newMemoryCollector()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	locked := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "rfm_memory_bpf_locked_bytes" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no rfm_memory_bpf_locked_bytes")
		return 0
	}
	c.useBPFLocked(func() (uint64, error) { return 123456789, nil })
	if got := locked(); got != 123456789 {
		t.Fatalf("with a source: %v, want 123456789", got)
	}
	c.useBPFLocked(nil)
	scanned, err := scanBPFMapsLocked()
	if err != nil {
		t.Fatal(err)
	}
	if got := locked(); got != float64(scanned) {
		t.Fatalf("without a source: %v, want the scan's %d", got, scanned)
	}
}
