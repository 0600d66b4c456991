// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for rfm itself, so exit
// statuses and stderr are checked as a user sees them.
func TestMain(m *testing.M) {
	if os.Getenv("RFM_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runRFM runs the test binary as rfm with args.
func runRFM(t *testing.T, args ...string) (stdout, stderr string, exit int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "RFM_TEST_RUN_MAIN=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run rfm %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

// TestCommandLineMistakes: every command line a user can get wrong exits
// 1 with exactly one line on stderr, nothing on stdout, and the message
// names what was wrong. None of these reaches an agent: the socket given
// does not exist, so getting past parsing would fail differently.
func TestCommandLineMistakes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"statu"}, `rfm: unknown command "statu" for "rfm"; did you mean "status"?`},
		{[]string{"frobnicate"}, `rfm: unknown command "frobnicate" for "rfm"`},
		{[]string{"set", "sampel-rate", "10"}, `rfm: unknown command "sampel-rate" for "rfm set"; did you mean "sample-rate"?`},
		{[]string{"set", "foo", "1", "--socket", sock}, `rfm: unknown command "foo" for "rfm set"`},
		{[]string{"set"}, `rfm: rfm set needs a command: sample-rate (see rfm set --help)`},
		{[]string{"set", "sample-rate", "-5", "--socket", sock}, `rfm: sample rate "-5": want a whole number from 1 to 4294967295`},
		{[]string{"set", "sample-rate", "0", "--socket", sock}, `rfm: sample rate 0: must be at least 1`},
		{[]string{"set", "sample-rate", "ten", "--socket", sock}, `rfm: sample rate "ten": want a whole number from 1 to 4294967295`},
		{[]string{"set", "sample-rate", "--socket", sock}, `rfm: rfm set sample-rate takes one value, N; got 0 arguments`},
		{[]string{"set", "sample-rate", "1", "2", "--socket", sock}, `rfm: rfm set sample-rate takes one value, N; got 2 arguments`},
		{[]string{"rib"}, `rfm: rfm rib needs a command: lookup, summary (see rfm rib --help)`},
		{[]string{"rib", "sumary", "--socket", sock}, `rfm: unknown command "sumary" for "rfm rib"; did you mean "summary"?`},
		{[]string{"rib", "lookup", "example.com", "--socket", sock}, `rfm: rib lookup: address "example.com": not an IPv4 or IPv6 address`},
		{[]string{"rib", "lookup", "--socket", sock}, `rfm: rfm rib lookup takes one address; got 0 arguments`},
		{[]string{"rib", "summary", "extra", "--socket", sock}, `rfm: unknown command "extra" for "rfm rib summary"`},
		{[]string{"config"}, `rfm: rfm config needs a command: check (see rfm config --help)`},
		{[]string{"config", "chek"}, `rfm: unknown command "chek" for "rfm config"; did you mean "check"?`},
		{[]string{"status", "now", "--socket", sock}, `rfm: unknown command "now" for "rfm status"`},
		{[]string{"status", "--sock", sock}, `rfm: unknown flag: --sock`},
		{[]string{"reload", "-x", "--socket", sock}, `rfm: unknown shorthand flag: 'x' in -x`},
		{[]string{"version", "--json"}, `rfm: unknown flag: --json`},
		{[]string{"help", "statu"}, `rfm: unknown command "statu" for "rfm"; did you mean "status"?`},
		{[]string{"help", "set", "sampel-rate"}, `rfm: unknown command "sampel-rate" for "rfm set"; did you mean "sample-rate"?`},
		{[]string{"agent", "extra"}, `rfm: unknown command "extra" for "rfm agent"`},
	} {
		stdout, stderr, exit := runRFM(t, tc.args...)
		if exit != 1 || stderr != tc.want+"\n" || stdout != "" {
			t.Errorf("rfm %s: exit %d, stderr %q, stdout %.80q; want exit 1, stderr %q and no stdout",
				strings.Join(tc.args, " "), exit, stderr, stdout, tc.want+"\n")
		}
	}
}

// TestHelpStillWorks: asking for help is not a mistake.
func TestHelpStillWorks(t *testing.T) {
	for _, args := range [][]string{{}, {"--help"}, {"help"}, {"help", "set", "sample-rate"}, {"set", "--help"}, {"rib", "lookup", "--help"}} {
		stdout, stderr, exit := runRFM(t, args...)
		if exit != 0 || stderr != "" || !strings.Contains(stdout, "Usage:") {
			t.Errorf("rfm %s: exit %d, stderr %q, stdout %.80q; want exit 0 and usage on stdout", strings.Join(args, " "), exit, stderr, stdout)
		}
	}
}

// TestControlFlagsOnGroups: --socket and --json are known wherever a
// command group leads to a control command, before or after the
// subcommand, and reach the subcommand.
func TestControlFlagsOnGroups(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	for _, args := range [][]string{
		{"set", "--socket", sock, "sample-rate", "10"},
		{"set", "sample-rate", "10", "--socket", sock, "--json"},
		{"rib", "--socket", sock, "summary"},
		{"rib", "lookup", "198.18.0.1", "--json", "--socket", sock},
	} {
		_, stderr, exit := runRFM(t, args...)
		// Parsed and sent to the given socket, which does not exist.
		if exit != 1 || !strings.Contains(stderr, sock) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("rfm %s: exit %d, stderr %q; want one line about %s", strings.Join(args, " "), exit, stderr, sock)
		}
	}
}
