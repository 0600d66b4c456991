// SPDX-License-Identifier: AGPL-3.0-only

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `rfm config check` validates like the agent and prints the effective
// config with defaults filled in.
func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte("[agent]\ninterfaces = [\"lo\"]\n[agent.bpf]\nsample_rate = 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(rfmBin, "config", "check", "-c", good).Output()
	if err != nil {
		t.Fatalf("config check of a valid file: %v", err)
	}
	for _, want := range []string{"sample_rate = 7", "ring_buf_size = 262144", "max_flows = 65536", `eviction_timeout = "30s"`, `active_timeout = "1m0s"`, "port = 9669"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[agent]\ninterfaces = [\"lo\"]\n[agent.collector]\nmax_flows = -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rfmBin, "config", "check", "-c", bad)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("config check of an invalid file: err %v, want exit status 1", err)
	}
	msg := strings.TrimRight(stderr.String(), "\n")
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "agent.collector.max_flows = -1") {
		t.Errorf("stderr = %q, want one line naming agent.collector.max_flows = -1", msg)
	}
}
