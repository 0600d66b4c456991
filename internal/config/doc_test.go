// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// docKeyRow is one row of the key table in docs/configuration.md.
type docKeyRow struct {
	keys     []string // full dotted keys the row documents
	defaults []any    // TOML literals of the default column; one per key, or one for all
	line     string
}

var (
	docFirstCell = regexp.MustCompile("^\\| (`[^|]+)\\| ([^|]*)\\|")
	docCodeSpan  = regexp.MustCompile("`([a-z_.]+)`")
)

// readDocKeyTable parses the key table of docs/configuration.md. A row
// names one key or several ("`agent.ipfix.host` / `port`"): a later name
// replaces as many trailing components of the first as it has.
func readDocKeyTable(t *testing.T) []docKeyRow {
	t.Helper()
	const path = "../../docs/configuration.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	var rows []docKeyRow
	for _, line := range strings.Split(string(doc), "\n") {
		m := docFirstCell.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		row := docKeyRow{line: line}
		var first []string
		for i, c := range docCodeSpan.FindAllStringSubmatch(m[1], -1) {
			parts := strings.Split(c[1], ".")
			if i == 0 {
				first = parts
			} else if len(parts) < len(first) {
				parts = append(slices.Clone(first[:len(first)-len(parts)]), parts...)
			}
			row.keys = append(row.keys, strings.Join(parts, "."))
		}
		// The second cell is "type, default" or, for a row of several
		// keys, "default, default": keep what parses as a TOML value.
		for _, cell := range splitOutsideBrackets(m[2], ", ") {
			var v struct{ V any }
			if _, err := toml.Decode("V = "+strings.TrimSpace(cell), &v); err == nil {
				row.defaults = append(row.defaults, v.V)
			}
		}
		rows = append(rows, row)
	}
	if len(rows) < 10 {
		t.Fatalf("%s: found only %d rows in the key table", path, len(rows))
	}
	return rows
}

// codeKeys returns every leaf key of Config by its toml tags, with the
// struct field holding it in c.
func codeKeys(c *Config) map[string]reflect.Value {
	keys := map[string]reflect.Value{}
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			key := tag
			if prefix != "" {
				key = prefix + "." + tag
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(Duration{}) {
				walk(key, fv)
				continue
			}
			keys[key] = fv
		}
	}
	walk("", reflect.ValueOf(c).Elem())
	return keys
}

// TestDocKeyTableMatchesCode keeps docs/configuration.md and the config
// structs in step: every key the code accepts has a row, every row names
// a key the code accepts, and every default the table states is the
// value a file that leaves the key out gets.
func TestDocKeyTableMatchesCode(t *testing.T) {
	rows := readDocKeyTable(t)
	// A file with only the required key: everything else is defaulted.
	c, err := Parse([]byte("[agent]\ninterfaces = [\"*\"]\n"), "minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	code := codeKeys(c)

	documented := map[string]bool{}
	for _, row := range rows {
		for i, key := range row.keys {
			if documented[key] {
				t.Errorf("docs/configuration.md: %s has two rows", key)
			}
			documented[key] = true
			field, ok := code[key]
			if !ok {
				t.Errorf("docs/configuration.md: %s is not a key of internal/config (row %q)", key, row.line)
				continue
			}
			if key == "agent.interfaces" {
				continue // required, no default
			}
			var want any
			switch len(row.defaults) {
			case 1:
				want = row.defaults[0]
			case len(row.keys):
				want = row.defaults[i]
			default:
				t.Errorf("docs/configuration.md: %s: %d defaults for %d keys in %q", key, len(row.defaults), len(row.keys), row.line)
				continue
			}
			if got, ok := sameDefault(field, want); !ok {
				t.Errorf("docs/configuration.md: %s defaults to %v, the code gives %v", key, want, got)
			}
		}
	}
	for key := range code {
		if !documented[key] {
			t.Errorf("internal/config key %s has no row in docs/configuration.md", key)
		}
	}
}

// sameDefault compares a config field with a default written in the
// docs as a TOML literal; it returns the field's value for the message.
func sameDefault(field reflect.Value, doc any) (any, bool) {
	if d, ok := field.Interface().(Duration); ok {
		s, isString := doc.(string)
		want, err := time.ParseDuration(s)
		return d.Duration, isString && err == nil && want == d.Duration
	}
	switch field.Kind() {
	case reflect.String:
		return field.String(), doc == field.String()
	case reflect.Bool:
		return field.Bool(), doc == field.Bool()
	case reflect.Int, reflect.Int64, reflect.Int32:
		return field.Int(), doc == field.Int()
	case reflect.Uint32, reflect.Uint64, reflect.Uint:
		n, ok := doc.(int64)
		return field.Uint(), ok && n >= 0 && uint64(n) == field.Uint()
	case reflect.Slice:
		list, ok := doc.([]any)
		if !ok || len(list) != field.Len() {
			return field.Interface(), false
		}
		for i, v := range list {
			if e := field.Index(i); e.Kind() != reflect.String || v != e.String() {
				return field.Interface(), false
			}
		}
		return field.Interface(), true
	}
	return field.Interface(), false
}

// splitOutsideBrackets splits s at sep where sep is not inside [...], so
// a list default ("list, [\"a\", \"b\"]") stays one cell.
func splitOutsideBrackets(s, sep string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '[':
			depth++
		case s[i] == ']':
			depth--
		case depth == 0 && strings.HasPrefix(s[i:], sep):
			out = append(out, s[start:i])
			start = i + len(sep)
			i += len(sep) - 1
		}
	}
	return append(out, s[start:])
}
