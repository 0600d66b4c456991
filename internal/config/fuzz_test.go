// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every error is a
// one-line *Error, and that an accepted config re-encodes and re-parses
// to the same value. Seeds live in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	if example, err := os.ReadFile("testdata/example.toml"); err == nil {
		f.Add(example)
	}
	f.Add([]byte(base))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %q is %T, want *Error", err, err)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("error spans lines: %q", msg)
			}
			if !strings.HasPrefix(msg, "config fuzz.toml: ") {
				t.Fatalf("error %q does not name the source", msg)
			}
			return
		}
		text := c.String()
		again, err := Parse([]byte(text), "effective")
		if err != nil {
			t.Fatalf("accepted config does not re-parse: %v\ninput:\n%q\nencoded:\n%s", err, data, text)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip changed the config:\ninput:\n%q\nencoded:\n%s\nre-encoded:\n%s", data, text, again)
		}
		if text2 := again.String(); text2 != text {
			t.Fatalf("encoding is not stable:\n%s\nthen\n%s", text, text2)
		}
	})
}

// TestFuzzSeeds keeps the committed corpus honest: files named valid_*
// must parse and files named invalid_* must not.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range entries {
		name := ent.Name()
		valid := strings.HasPrefix(name, "valid_")
		if !valid && !strings.HasPrefix(name, "invalid_") {
			continue // a crasher added by `go test -fuzz`
		}
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(raw), "\n", 3)
		if len(lines) < 2 || lines[0] != "go test fuzz v1" ||
			!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			t.Fatalf("%s: not a go fuzz v1 []byte entry", name)
		}
		doc, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, err = Parse([]byte(doc), name)
		if valid && err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if !valid && err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
