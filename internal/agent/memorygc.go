// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is the agent's GOGC when the environment sets none.
// With Go's default of 100 the heap of an idle agent grows to the
// collector's 4 MB minimum goal between collections and those pages stay
// resident: 7.5–7.7 MB anonymous after 60 scrapes, against 5.4–5.6 MB at
// 50 (25 gave the same as 50). The price is more collections: 43 instead
// of 11 in those 60 scrapes, most of them 1–3 ms over a heap of about
// 1 MB live; under load the heap is mostly the flow table, which holds
// no pointers and is not scanned (docs/performance.md, Memory).
const defaultGCPercent = 50

// setGCPercent applies defaultGCPercent unless GOGC is set, so an
// operator who wants the other trade keeps it.
func setGCPercent() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// releaseStartupGarbage returns the heap freed after start-up to the
// OS. Loading the datapath (parsing the BPF object, copying its specs,
// probing the kernel) allocates about 3 MB that is garbage once it is
// loaded; without this the pages it touched stay resident.
func releaseStartupGarbage() { debug.FreeOSMemory() }
