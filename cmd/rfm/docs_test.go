// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// parseOnly checks a command line against the command tree the way
// Execute would (command, flags, arguments and their values) without
// running anything.
func parseOnly(args []string) error {
	root := rootCommand()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	cmd.InitDefaultHelpFlag()
	if err := cmd.ParseFlags(rest); err != nil {
		return flagError(cmd, err)
	}
	if help, _ := cmd.Flags().GetBool("help"); help {
		return nil
	}
	return cmd.ValidateArgs(cmd.Flags().Args())
}

// docPlaceholders stand for values in synopses such as
// "rfm rib lookup ADDR"; each gets a valid value.
var docPlaceholders = map[string]string{
	"N":        "10",
	"ADDR":     "198.51.100.7",
	"PATH":     "/etc/rfm/rfm.toml",
	"NAME":     "eth0",
	"PREFIX":   "198.18.7.0/24",
	"DURATION": "10m",
	"TEXT":     "scanner",
}

// rfmCommands returns the rfm command lines in a Markdown text: in code
// spans, fenced blocks (only the "$ " lines when a block has prompts) and
// indented blocks. A command starts at the word rfm (or ./rfm,
// /usr/local/bin/rfm) at the start of a snippet, after sudo [-u USER] or
// after && ; |, and ends at the next such separator or a # comment.
// Synopsis notation is expanded: [optional] parts are kept, a|b takes a.
func rfmCommands(markdown string) [][]string {
	var snippets []string
	lines := strings.Split(markdown, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.HasPrefix(line, "```") {
			var block []string
			for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
				block = append(block, lines[i])
			}
			prompts := false
			for _, b := range block {
				prompts = prompts || strings.HasPrefix(b, "$ ")
			}
			for _, b := range block {
				if !prompts {
					snippets = append(snippets, b)
				} else if cmd, ok := strings.CutPrefix(b, "$ "); ok {
					snippets = append(snippets, cmd)
				}
			}
			continue
		}
		if strings.HasPrefix(line, "    ") && !strings.HasPrefix(strings.TrimSpace(line), "- ") {
			snippets = append(snippets, line)
			continue
		}
	}
	// Code spans may wrap over lines; fenced blocks have no single
	// backquotes that matter here.
	prose := regexp.MustCompile("(?s)```.*?```").ReplaceAllString(markdown, "")
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(prose, -1) {
		snippets = append(snippets, m[1])
	}

	return commandsIn(snippets)
}

// commandsIn returns the rfm command lines in each snippet of text.
func commandsIn(snippets []string) [][]string {
	var commands [][]string
	for _, s := range snippets {
		words := strings.Fields(strings.NewReplacer("[", " ", "]", " ").Replace(s))
		for i := 0; i < len(words); i++ {
			if !isRFM(words[i]) || !commandStart(words[:i]) {
				continue
			}
			var args []string
			for _, w := range words[i+1:] {
				if w == "&&" || w == ";" || w == "|" || w == "||" || strings.HasPrefix(w, "#") {
					break
				}
				if alt, _, ok := strings.Cut(w, "|"); ok {
					w = alt
				}
				if v, ok := docPlaceholders[w]; ok {
					w = v
				}
				args = append(args, strings.Trim(w, `'"`))
			}
			commands = append(commands, args)
		}
	}
	return commands
}

func isRFM(w string) bool { return w == "rfm" || w == "./rfm" || w == "/usr/local/bin/rfm" }

// commandStart reports whether the words before "rfm" leave it in
// command position.
func commandStart(before []string) bool {
	n := len(before)
	switch {
	case n == 0:
		return true
	case before[n-1] == "sudo" || before[n-1] == "&&" || before[n-1] == ";" || before[n-1] == "|" || before[n-1] == "then":
		return true
	case n >= 3 && before[n-3] == "sudo" && before[n-2] == "-u":
		return true
	}
	return false
}

// TestDocCommandsParse checks every rfm command line in the README and
// docs/ against the CLI, so the docs cannot show a command, flag or value
// the CLI no longer accepts.
func TestDocCommandsParse(t *testing.T) {
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md")
	if c, err := filepath.Glob("../../CONTRIBUTING.md"); err == nil {
		files = append(files, c...)
	}
	total := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, args := range rfmCommands(string(data)) {
			total++
			if err := parseOnly(args); err != nil {
				t.Errorf("%s: rfm %s: %v", strings.TrimPrefix(f, "../../"), strings.Join(args, " "), err)
			}
		}
	}
	// Today the docs show about 40; far fewer means the extraction broke.
	if total < 25 {
		t.Fatalf("found only %d rfm command lines in %v", total, files)
	}
}

// TestHelpExamplesParse does the same for the examples in --help.
func TestHelpExamplesParse(t *testing.T) {
	total := 0
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, args := range commandsIn(strings.Split(c.Example, "\n")) {
			total++
			if err := parseOnly(args); err != nil {
				t.Errorf("rfm %s --help, example: rfm %s: %v", c.CommandPath(), strings.Join(args, " "), err)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(rootCommand())
	if total < 5 {
		t.Fatalf("found only %d examples in the commands' help", total)
	}
}

// TestRFMCommandsExtraction pins the extraction on a sample, so a
// documented typo is caught rather than skipped.
func TestRFMCommandsExtraction(t *testing.T) {
	doc := "Run `rfm set sampel-rate 10` or `rfm rib lookup ADDR`, see `rfm_flow_bytes` and `systemctl reload rfm`.\n\n" +
		"    sudo ./rfm agent -c examples/rfm.toml && curl x | rfm status --json\n\n" +
		"```\n$ sudo -u nobody rfm status\nrfm          dev, up 7s\n```\n\n" +
		"- `rfm flows [--top N] [--sort bytes|packets]` # synopsis\n"
	got := rfmCommands(doc)
	want := [][]string{
		{"agent", "-c", "examples/rfm.toml"},
		{"status", "--json"},
		{"status"},
		{"set", "sampel-rate", "10"},
		{"rib", "lookup", "198.51.100.7"},
		{"flows", "--top", "10", "--sort", "bytes"},
	}
	if len(got) != len(want) {
		t.Fatalf("rfmCommands found %q, want %q", got, want)
	}
	for i := range want {
		if strings.Join(got[i], " ") != strings.Join(want[i], " ") {
			t.Errorf("command %d: %q, want %q", i, got[i], want[i])
		}
	}
	if err := parseOnly(got[3]); err == nil || !strings.Contains(err.Error(), `unknown command "sampel-rate"`) {
		t.Errorf("parseOnly(rfm set sampel-rate 10) = %v, want the unknown-command error", err)
	}
}
