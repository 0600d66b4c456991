// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"os"
	"runtime/debug"
	"testing"
)

// The agent's GOGC applies only when the environment names none.
func TestSetGCPercent(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	t.Setenv("GOGC", "100")
	setGCPercent()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC=100 set: GC percent %d, want 100", got)
	}
	t.Setenv("GOGC", "")
	// An empty GOGC is still the operator's choice (the runtime reads
	// it as the default); only an absent one gets the agent's.
	setGCPercent()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC empty: GC percent %d, want 100", got)
	}
	os.Unsetenv("GOGC") // t.Setenv above restores it after the test
	setGCPercent()
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("without GOGC: GC percent %d, want %d", got, defaultGCPercent)
	}
}
