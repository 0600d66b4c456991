// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"os"
	"testing"
)

// ownMappings returns the mappings of the test binary.
func ownMappings(t *testing.T) []mapping {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := executableMappings(exe)
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) == 0 {
		t.Fatalf("no mappings of %s in /proc/self/smaps", exe)
	}
	return maps
}

func exeRSS(t *testing.T) (rssKB uint64) {
	t.Helper()
	for _, m := range ownMappings(t) {
		rssKB += m.rssKB
	}
	return rssKB
}

// The test binary stands in for the agent: after the call its clean
// read-only segments hold only the pages used since, and it keeps
// running correctly (this test returning is that check).
func TestReleaseStartupPages(t *testing.T) {
	before := exeRSS(t)
	if err := releaseStartupPages(); err != nil {
		t.Fatal(err)
	}
	after := exeRSS(t)
	t.Logf("resident pages of the test binary: %d KiB before, %d KiB after", before, after)
	if after >= before {
		t.Fatalf("resident pages of the binary did not shrink: %d KiB before, %d KiB after", before, after)
	}
}

func TestReleasable(t *testing.T) {
	for _, c := range []struct {
		name string
		m    mapping
		want bool
	}{
		{"text", mapping{rssKB: 6000}, true},
		{"data", mapping{writable: true, rssKB: 400, anonymousKB: 100}, false},
		{"relocated read-only data (PIE)", mapping{rssKB: 300, anonymousKB: 300}, false},
	} {
		if got := releasable(c.m); got != c.want {
			t.Errorf("%s: releasable = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestExecutableMappingsParse(t *testing.T) {
	maps := ownMappings(t)
	var text, data bool
	for _, m := range maps {
		if m.end <= m.start {
			t.Errorf("mapping %#x-%#x: empty or inverted", m.start, m.end)
		}
		if m.writable {
			data = true
		} else {
			text = true
		}
	}
	if !text || !data {
		t.Fatalf("want read-only and writable mappings, got %+v", maps)
	}
}
