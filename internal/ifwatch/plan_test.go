// SPDX-License-Identifier: AGPL-3.0-only

package ifwatch

import (
	"reflect"
	"strings"
	"testing"
)

func TestSelectionWants(t *testing.T) {
	prefixT := func(name string) bool { return strings.HasPrefix(name, "t") }
	all := func(string) bool { return true }
	notLoopback := func(_ string, loopback bool) bool { return !loopback }
	onlyLo := func(name string, _ bool) bool { return name == "lo" }
	tests := []struct {
		name string
		sel  selection
		c    candidate
		want bool
	}{
		{"matching name", selection{match: prefixT}, candidate{Link: Link{1, "ta0"}}, true},
		{"other name", selection{match: prefixT}, candidate{Link: Link{1, "eth0"}}, false},
		{"nil match selects nothing", selection{}, candidate{Link: Link{1, "ta0"}}, false},
		{"loopback kept when not skipped", selection{match: all}, candidate{Link: Link{1, "lo"}, Loopback: true}, true},
		{"loopback skipped", selection{match: all, skipLoopback: true}, candidate{Link: Link{1, "lo"}, Loopback: true}, false},
		{"skip loopback keeps others", selection{match: all, skipLoopback: true}, candidate{Link: Link{2, "eth0"}}, true},
		{"select sees the loopback flag", selection{sel: notLoopback}, candidate{Link: Link{1, "lo"}, Loopback: true}, false},
		{"select picks a non-loopback", selection{sel: notLoopback}, candidate{Link: Link{2, "eth0"}}, true},
		{"select overrides match and skip", selection{match: all, skipLoopback: true, sel: onlyLo}, candidate{Link: Link{1, "lo"}, Loopback: true}, true},
		{"select rejects what match accepts", selection{match: all, sel: onlyLo}, candidate{Link: Link{2, "eth0"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.sel.wants(tt.c); got != tt.want {
				t.Errorf("wants(%+v) = %v, want %v", tt.c, got, tt.want)
			}
		})
	}
}

func TestReconcile(t *testing.T) {
	a := Link{Index: 5, Name: "veth1"}
	renamed := Link{Index: 5, Name: "veth2"}
	tests := []struct {
		name   string
		cur    Link
		curOK  bool
		want   Link
		wantOK bool
		acts   []action
	}{
		{"neither attached nor wanted", Link{}, false, a, false, nil},
		{"new matching link attaches", Link{}, false, a, true, []action{{link: a}}},
		{"unchanged attached link", a, true, a, true, nil},
		{"deleted or no longer matching detaches", a, true, Link{}, false, []action{{detach: true, link: a}}},
		{"renamed out of the pattern detaches the old name", a, true, renamed, false, []action{{detach: true, link: a}}},
		{"renamed within the pattern re-attaches under the new name", a, true, renamed, true, []action{{detach: true, link: a}, {link: renamed}}},
		{"failed attach is retried", Link{}, false, renamed, true, []action{{link: renamed}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reconcile(tt.cur, tt.curOK, tt.want, tt.wantOK)
			if !reflect.DeepEqual(got, tt.acts) {
				t.Errorf("reconcile = %+v, want %+v", got, tt.acts)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	l := func(idx int, name string) Link { return Link{Index: idx, Name: name} }
	tests := []struct {
		name     string
		attached map[int]Link
		wanted   map[int]Link
		acts     []action
	}{
		{"empty", nil, nil, nil},
		{"initial attach in index order", nil, map[int]Link{3: l(3, "c"), 1: l(1, "a"), 2: l(2, "b")},
			[]action{{link: l(1, "a")}, {link: l(2, "b")}, {link: l(3, "c")}}},
		{"in sync", map[int]Link{1: l(1, "a")}, map[int]Link{1: l(1, "a")}, nil},
		{"vanished links detach", map[int]Link{1: l(1, "a"), 2: l(2, "b")}, map[int]Link{2: l(2, "b")},
			[]action{{detach: true, link: l(1, "a")}}},
		{"detaches come before attaches", map[int]Link{1: l(1, "a"), 4: l(4, "d")}, map[int]Link{2: l(2, "a"), 4: l(4, "e")},
			[]action{{detach: true, link: l(1, "a")}, {detach: true, link: l(4, "d")}, {link: l(2, "a")}, {link: l(4, "e")}}},
		{"index reused under another name", map[int]Link{7: l(7, "veth0")}, map[int]Link{7: l(7, "veth9")},
			[]action{{detach: true, link: l(7, "veth0")}, {link: l(7, "veth9")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := diff(tt.attached, tt.wanted)
			if !reflect.DeepEqual(got, tt.acts) {
				t.Errorf("diff = %+v, want %+v", got, tt.acts)
			}
		})
	}
}

func TestWanted(t *testing.T) {
	present := map[int]candidate{
		1: {Link: Link{1, "lo"}, Loopback: true},
		2: {Link: Link{2, "eth0"}},
		3: {Link: Link{3, "veth7"}},
	}
	sel := selection{match: func(n string) bool { return n != "eth0" }, skipLoopback: true}
	got := sel.wanted(present)
	want := map[int]Link{3: {3, "veth7"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("wanted = %v, want %v", got, want)
	}
}

// BenchmarkDiff measures a full resync's decision on a host with many
// container veths, half of them changed.
func BenchmarkDiff(b *testing.B) {
	const n = 10000
	attached := make(map[int]Link, n)
	wanted := make(map[int]Link, n)
	for i := range n {
		attached[i] = Link{Index: i, Name: "veth"}
		if i%2 == 0 {
			wanted[i] = Link{Index: i, Name: "veth"}
		} else {
			wanted[i+n] = Link{Index: i + n, Name: "veth"}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		diff(attached, wanted)
	}
}
