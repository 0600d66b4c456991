// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseStartupPages unmaps the pages of the agent's own binary that
// are resident only because start-up touched them, and turns off
// fault-around for its read-only segments. On a page fault in a file
// mapping the kernel maps up to 16 neighbouring cached pages as well, so
// loading BPF objects, parsing the config and initialising every package
// leave most of the binary resident: about 14 MB of the idle agent's
// 18 MB RSS. The pages stay in the page cache; the ones the running
// agent uses fault back in one at a time.
//
// Only clean mappings are touched: read-only mappings of the executable
// with no anonymous (copy-on-write) pages. A position-independent build
// has relocated read-only data, which MADV_DONTNEED would replace with
// the file's unrelocated bytes; such a mapping has anonymous pages and
// is skipped.
func releaseStartupPages() error {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return fmt.Errorf("release start-up pages: %w", err)
	}
	maps, err := executableMappings(exe)
	if err != nil {
		return fmt.Errorf("release start-up pages: %w", err)
	}
	for _, m := range maps {
		if !releasable(m) {
			continue
		}
		for _, advice := range []uintptr{unix.MADV_RANDOM, unix.MADV_DONTNEED} {
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, advice); errno != 0 {
				return fmt.Errorf("release start-up pages: madvise %#x-%#x: %w", m.start, m.end, errno)
			}
		}
	}
	return nil
}

// releasable reports whether m holds only clean pages of the file.
func releasable(m mapping) bool { return !m.writable && m.anonymousKB == 0 }

// mapping is one line of /proc/self/smaps with the fields we need.
type mapping struct {
	start, end  uintptr
	writable    bool
	path        string
	rssKB       uint64
	anonymousKB uint64
}

// executableMappings returns the mappings of file path in
// /proc/self/smaps.
func executableMappings(path string) ([]mapping, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var all []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		key, value, isField := strings.Cut(line, ":")
		if isField && !strings.Contains(key, " ") && len(all) > 0 {
			m := &all[len(all)-1]
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			switch key {
			case "Rss":
				m.rssKB = kb
			case "Anonymous":
				m.anonymousKB = kb
			}
			continue
		}
		// A mapping header: "start-end perms offset dev inode [path]".
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		m := mapping{start: uintptr(start), end: uintptr(end), writable: strings.Contains(fields[1], "w")}
		if len(fields) >= 6 {
			m.path = fields[5]
		}
		all = append(all, m)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var out []mapping
	for _, m := range all {
		if m.path == path {
			out = append(out, m)
		}
	}
	return out, nil
}
