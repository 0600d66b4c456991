// SPDX-License-Identifier: AGPL-3.0-only

package ifwatch

import "sort"

// candidate is a link as netlink reports it, before the selection is
// applied.
type candidate struct {
	Link
	Loopback bool
}

// selection decides which links the agent wants attached.
type selection struct {
	match        func(name string) bool
	skipLoopback bool
	// sel, when set, decides alone and sees the loopback flag.
	sel func(name string, loopback bool) bool
}

func (s selection) wants(c candidate) bool {
	if s.sel != nil {
		return s.sel(c.Name, c.Loopback)
	}
	if s.skipLoopback && c.Loopback {
		return false
	}
	return s.match != nil && s.match(c.Name)
}

// wanted returns the links of present that the selection picks, by index.
func (s selection) wanted(present map[int]candidate) map[int]Link {
	out := make(map[int]Link, len(present))
	for idx, c := range present {
		if s.wants(c) {
			out[idx] = c.Link
		}
	}
	return out
}

// action is one callback the watcher owes the agent.
type action struct {
	detach bool // false means attach
	link   Link
}

// reconcile returns the callbacks that take one interface index from its
// attached state (cur, if curOK) to the wanted state (want, if wantOK).
// A rename of an attached link that still matches is a detach of the old
// name followed by an attach of the new one, so the agent relabels
// everything it keeps by name.
func reconcile(cur Link, curOK bool, want Link, wantOK bool) []action {
	switch {
	case curOK && wantOK && cur == want:
		return nil
	case curOK && wantOK:
		return []action{{detach: true, link: cur}, {link: want}}
	case curOK:
		return []action{{detach: true, link: cur}}
	case wantOK:
		return []action{{link: want}}
	}
	return nil
}

// diff returns the callbacks that turn the attached set into the wanted
// set: every detach first (so a name freed on one index is released
// before another index takes it), then the attaches, each in index order.
func diff(attached, wanted map[int]Link) []action {
	idxs := make([]int, 0, len(attached)+len(wanted))
	for idx := range attached {
		idxs = append(idxs, idx)
	}
	for idx := range wanted {
		if _, ok := attached[idx]; !ok {
			idxs = append(idxs, idx)
		}
	}
	sort.Ints(idxs)
	var detaches, attaches []action
	for _, idx := range idxs {
		cur, curOK := attached[idx]
		want, wantOK := wanted[idx]
		for _, a := range reconcile(cur, curOK, want, wantOK) {
			if a.detach {
				detaches = append(detaches, a)
			} else {
				attaches = append(attaches, a)
			}
		}
	}
	return append(detaches, attaches...)
}
