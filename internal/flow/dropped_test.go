// SPDX-License-Identifier: AGPL-3.0-only

package flow

import "testing"

// TestDroppedIsItsOwnFlow: packets of one 5-tuple that the XDP fast path
// dropped and ones that passed are two flows and two label sets, told
// apart by Dropped.
func TestDroppedIsItsOwnFlow(t *testing.T) {
	tab := NewTable(Options{})
	passed := udp(5, 1000)
	dropped := udp(5, 2000)
	dropped.Dropped = true
	tab.Update(&passed)
	tab.Update(&dropped)
	tab.Update(&dropped)
	flows := active(t, tab)
	if len(flows) != 2 {
		t.Fatalf("%d flows, want 2: %v", len(flows), flows)
	}
	for k, r := range flows {
		want := uint64(1)
		if k.Dropped {
			want = 2
		}
		if r.Packets != want {
			t.Errorf("flow dropped=%v: %d packets, want %d", k.Dropped, r.Packets, want)
		}
	}
	sets := map[bool]uint64{}
	tab.LabelSets(func(r *LabelSetRow) { sets[r.Key.Dropped] += r.Packets })
	if sets[false] != 1 || sets[true] != 2 {
		t.Errorf("label sets by dropped: %v, want false:1 true:2", sets)
	}
}
