// SPDX-License-Identifier: AGPL-3.0-only

package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNixOSModuleParses runs nix-instantiate --parse on the module: a
// syntax check. TestNixOSModuleEvaluates evaluates it against a stand-in
// lib; real nixpkgs and a NixOS VM are not available here.
func TestNixOSModuleParses(t *testing.T) {
	nixInstantiate := needTool(t, "nix-instantiate", "nix-bin")
	module := deployPath(t, "nixos/module.nix")
	run(t, filepath.Dir(module), nixInstantiate, "--parse", module)
}

// TestNixOSModuleCoversConfigKeys requires a typed option for every key in
// the Configuration table in docs/configuration.md, so settings stay "typed for every
// config key" as the agent grows.
func TestNixOSModuleCoversConfigKeys(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(deployDir, "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatalf("read docs/configuration.md: %v", err)
	}
	module, err := os.ReadFile(deployPath(t, "nixos/module.nix"))
	if err != nil {
		t.Fatalf("read deploy/nixos/module.nix: %v", err)
	}
	section := string(doc)
	keys := 0
	firstCell := regexp.MustCompile("^\\| (`[^|]+)\\|")
	code := regexp.MustCompile("`([a-z_.]+)`")
	for _, line := range strings.Split(section, "\n") {
		m := firstCell.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		// "`agent.ipfix.host` / `port`", "`...bind.host` / `bind.port`":
		// a later name replaces as many trailing components of the first.
		var first []string
		for i, c := range code.FindAllStringSubmatch(m[1], -1) {
			parts := strings.Split(c[1], ".")
			if i == 0 {
				first = parts
			} else if len(parts) < len(first) {
				parts = append(append([]string{}, first[:len(first)-len(parts)]...), parts...)
			}
			keys++
			checkNixOption(t, string(module), parts)
		}
	}
	if keys < 20 {
		t.Fatalf("docs/configuration.md table: found only %d keys", keys)
	}
}

// checkNixOption looks for "name = " of each path component, in order, in
// the module text: agent, then ipfix after it, then host after that.
func checkNixOption(t *testing.T, module string, path []string) {
	t.Helper()
	rest := module[strings.Index(module, "options.services.rfm"):]
	for _, name := range path {
		re := regexp.MustCompile(`(?m)^\s*(options\.)?` + regexp.QuoteMeta(name) + ` = `)
		loc := re.FindStringIndex(rest)
		if loc == nil {
			t.Errorf("deploy/nixos/module.nix: no option for config key %s", strings.Join(path, "."))
			return
		}
		rest = rest[loc[1]:]
	}
}
