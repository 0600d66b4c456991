// SPDX-License-Identifier: AGPL-3.0-only

// Package deploy checks the operator-facing files under deploy/ and the
// Dockerfile: the Prometheus alert rules, the Grafana dashboard, the
// systemd unit, the NixOS module and the Kubernetes manifests, each with
// the tool that consumes it where one runs here, and end to end: a real
// Prometheus scraping a real agent evaluates every dashboard query and
// alert, and the agent runs with only the unit's capabilities. Tools that
// are not installed skip their test with a message naming the Debian
// package; tests that need root skip without it.
package deploy

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deployDir is the repository's deploy/ folder, relative to this package.
const deployDir = "../../deploy"

// deployPath returns the absolute path of a file under deploy/.
func deployPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(deployDir, rel))
	if err != nil {
		t.Fatalf("resolve deploy/%s: %v", rel, err)
	}
	return p
}

// needTool returns the path of a command, or skips the test naming the
// Debian package that provides it.
func needTool(t *testing.T, name, debPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
			cand := filepath.Join(dir, name)
			if _, statErr := exec.LookPath(cand); statErr == nil {
				return cand
			}
		}
		t.Skipf("%s not found: install Debian's %s package to run this test", name, debPackage)
	}
	return p
}

// run executes a command in dir and fails the test with its output when
// it exits non-zero.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
