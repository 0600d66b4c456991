// SPDX-License-Identifier: AGPL-3.0-only

package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/stepbrobd/rfm/internal/config"
)

// nixEval is what testdata/nixos-eval.nix prints for the module.
type nixEval struct {
	TopLevel []string `json:"topLevel"`
	Options  []struct {
		Path string `json:"path"`
		Type string `json:"type"`
	} `json:"options"`
	Freeform bool `json:"freeform"`
	Service  struct {
		ServiceConfig  map[string]any `json:"serviceConfig"`
		ReloadTriggers []string       `json:"reloadTriggers"`
		WantedBy       []string       `json:"wantedBy"`
	} `json:"service"`
	Etc      map[string]string `json:"etc"`
	Firewall []int             `json:"firewall"`
}

// evalNixOSModule evaluates the module with the stand-in lib of
// testdata/nixos-eval.nix and the given settings (a Nix expression).
// --read-write-mode lets builtins.toFile write the generated rfm.toml and
// build script into /nix/store, which needs root.
func evalNixOSModule(t *testing.T, settings string) nixEval {
	t.Helper()
	nixInstantiate := needTool(t, "nix-instantiate", "nix-bin")
	if os.Geteuid() != 0 {
		t.Skip("needs root: evaluating writes the generated files into /nix/store")
	}
	stub, err := filepath.Abs("testdata/nixos-eval.nix")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nixInstantiate, "--read-write-mode", "--eval", "--strict", "--json", stub,
		"--arg", "module", deployPath(t, "nixos/module.nix"), "--arg", "settings", settings)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate --eval of deploy/nixos/module.nix: %v\n%s", err, stderr.String())
	}
	var e nixEval
	if err := json.Unmarshal(out, &e); err != nil {
		t.Fatalf("nix-instantiate output: %v\n%s", err, out)
	}
	return e
}

// configKeys lists every key of the agent's config file, from the toml
// tags of config.Config: "agent.bpf.sample_rate", ...
func configKeys() []string {
	var keys []string
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			key := strings.TrimPrefix(prefix+"."+tag, ".")
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(config.Duration{}) {
				walk(key, f.Type)
				continue
			}
			keys = append(keys, key)
		}
	}
	walk("", reflect.TypeOf(config.Config{}))
	sort.Strings(keys)
	return keys
}

// unitServiceSettings reads the [Service] settings of the systemd unit.
func unitServiceSettings(t *testing.T) map[string]string {
	t.Helper()
	unit, err := os.ReadFile(deployPath(t, "systemd/rfm.service"))
	if err != nil {
		t.Fatalf("read deploy/systemd/rfm.service: %v", err)
	}
	settings := map[string]string{}
	section := ""
	for _, line := range strings.Split(string(unit), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '[':
			section = line
		case section == "[Service]":
			key, value, _ := strings.Cut(line, "=")
			settings[key] = value
		}
	}
	return settings
}

// nixUnitValue renders a serviceConfig value the way NixOS writes it
// into the unit file.
func nixUnitValue(v any) string {
	switch v := v.(type) {
	case bool:
		if v {
			return "yes"
		}
		return "no"
	case []any:
		parts := make([]string, len(v))
		for i, p := range v {
			parts[i] = nixUnitValue(p)
		}
		return strings.Join(parts, " ")
	default:
		return fmt.Sprint(v)
	}
}

// TestNixOSModuleEvaluates evaluates the module (not only parses it):
// services.rfm has enable, package and settings; settings is freeform and
// has a typed option for every key of config.Config, and no option for a
// key the agent does not know; the service's hardening equals
// deploy/systemd/rfm.service setting by setting (the store paths in
// ExecStart/ExecReload aside); /etc/rfm/rfm.toml is the checked file and
// a change to it reloads instead of restarting.
func TestNixOSModuleEvaluates(t *testing.T) {
	e := evalNixOSModule(t, `{ agent.interfaces = [ "eth*" ]; }`)
	for _, want := range []string{"enable", "package", "settings"} {
		if !contains(e.TopLevel, want) {
			t.Errorf("module: no option services.rfm.%s (has %v)", want, e.TopLevel)
		}
	}
	if !e.Freeform {
		t.Error("module: services.rfm.settings is not freeform")
	}
	options := map[string]string{}
	for _, o := range e.Options {
		options[o.Path] = o.Type
	}
	keys := configKeys()
	for _, k := range keys {
		if _, ok := options[k]; !ok {
			t.Errorf("module: no typed option settings.%s for the config key %s", k, k)
		}
		delete(options, k)
	}
	for k := range options {
		t.Errorf("module: option settings.%s is not a key of internal/config", k)
	}
	if len(keys) < 20 {
		t.Fatalf("config.Config: found only %d keys: %v", len(keys), keys)
	}

	unit := unitServiceSettings(t)
	nix := e.Service.ServiceConfig
	for key, want := range unit {
		switch key {
		case "ExecStart", "ExecReload":
			// A store path instead of /usr/local/bin.
			got := nixUnitValue(nix[key])
			wantTail := want[strings.Index(want, "/rfm ")+1:]
			if !strings.HasSuffix(got, wantTail) {
				t.Errorf("module: %s = %q, want it to end like the unit's %q", key, got, want)
			}
		case "ConfigurationDirectory":
			// NixOS manages /etc/rfm through environment.etc.
		default:
			if got, ok := nix[key]; !ok || nixUnitValue(got) != want {
				t.Errorf("module: serviceConfig.%s = %v, want the unit's %q", key, got, want)
			}
		}
	}
	for key := range nix {
		if _, ok := unit[key]; !ok {
			t.Errorf("module: serviceConfig.%s is not in deploy/systemd/rfm.service; keep the two equal", key)
		}
	}
	if !contains(e.Service.WantedBy, "multi-user.target") {
		t.Errorf("module: wantedBy %v", e.Service.WantedBy)
	}
	checked := e.Etc["rfm/rfm.toml"]
	if checked == "" || len(e.Service.ReloadTriggers) != 1 || e.Service.ReloadTriggers[0] != checked {
		t.Errorf("module: /etc/rfm/rfm.toml (%q) must be the checked file and the reload trigger (%v)", checked, e.Service.ReloadTriggers)
	}
	if len(e.Firewall) != 1 || e.Firewall[0] != 9669 {
		t.Errorf("module: openFirewall opens %v, want [9669]", e.Firewall)
	}
}

// TestNixOSModuleValidatesAtBuild runs the module's build step for the
// config file (the runCommand script, with the agent binary on PATH) on
// settings the module generated: valid settings produce the file, a bad
// value fails the build with the agent's one-line error naming the key.
func TestNixOSModuleValidatesAtBuild(t *testing.T) {
	rfm := agentBinary(t)
	help, _ := exec.Command(rfm, "config", "check", "--help").CombinedOutput()
	if !strings.Contains(string(help), "--offline") {
		t.Skip("rfm config check has no --offline flag yet")
	}
	cases := []struct {
		name     string
		settings string
		wantErr  string // "" = build succeeds
	}{
		{"valid", `{ agent = { interfaces = [ "eth*" "bond0" ]; bpf.sample_rate = 10; prometheus.host = "::";
			ipfix = { host = "198.18.0.9"; port = 4739; }; enrich.rib.bmp = { port = 11019; allow = [ "198.18.0.0/15" ]; keep = "10m"; }; }; }`, ""},
		// Freeform settings pass Nix, and an agent that does not know the
		// key refuses it at build time: a typo cannot reach the host.
		{"unknown key", `{ agent = { interfaces = [ "*" ]; sampel_rate = 1; }; }`, "sampel_rate"},
		{"bad value", `{ agent = { interfaces = [ "eth0" ]; bpf.sample_rate = 0; }; }`, "agent.bpf.sample_rate"},
		{"bad duration", `{ agent = { interfaces = [ "eth0" ]; collector.eviction_timeout = "10ms"; }; }`, "agent.collector.eviction_timeout"},
		{"short active_timeout", `{ agent = { interfaces = [ "eth0" ]; collector.active_timeout = "500ms"; }; }`, "agent.collector.active_timeout"},
		{"label sets", `{ agent = { interfaces = [ "eth0" ]; prometheus = { max_label_sets = 500; label_set_expiry = "2h"; }; }; }`, ""},
		{"short label set expiry", `{ agent = { interfaces = [ "eth0" ]; prometheus.label_set_expiry = "30s"; }; }`, "agent.prometheus.label_set_expiry"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := evalNixOSModule(t, c.settings)
			script := e.Etc["rfm/rfm.toml"]
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			cmd := exec.Command("bash", "-eu", script)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(rfm)+":"+os.Getenv("PATH"), "out="+out)
			output, err := cmd.CombinedOutput()
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("build of rfm.toml failed: %v\n%s", err, output)
				}
				fi, err := os.Stat(out)
				if err != nil || fi.Mode().Perm() != 0o444 {
					t.Fatalf("build produced no read-only $out: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("build of rfm.toml succeeded; want it to fail naming %s", c.wantErr)
			}
			lines := strings.Split(strings.TrimSpace(string(output)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], c.wantErr) {
				t.Errorf("build error: want one line naming %s, got:\n%s", c.wantErr, output)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
