// SPDX-License-Identifier: AGPL-3.0-only

package config

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Error is every error this package returns for a bad config: a syntax
// error (Line set), an unknown key, a value of the wrong type, or a value
// that breaks a rule. Error() is always a single line so it reads well in
// logs and in `rfm config check` output.
type Error struct {
	// Source is the file path (or the name given to Parse); empty for
	// errors from Validate, which does not know where the config came
	// from. Callers that know the path may fill it in.
	Source string
	// Line locates a TOML syntax error; zero otherwise.
	Line int
	// Key is the full dotted key, with an [i] suffix for list elements
	// (e.g. "agent.interfaces[1]"); empty for syntax errors.
	Key string
	// Value is the offending value in TOML notation; empty when the key
	// is missing or the value is not the point.
	Value string
	// Reason says what is wrong.
	Reason string

	unknownKey bool
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.Source != "" {
		b.WriteString(" ")
		b.WriteString(e.Source)
	}
	b.WriteString(": ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	switch {
	case e.unknownKey:
		b.WriteString("unknown key ")
		b.WriteString(e.Key)
	case e.Key != "":
		b.WriteString(e.Key)
		if e.Value != "" {
			b.WriteString(" = ")
			b.WriteString(e.Value)
		}
		b.WriteString(": ")
		b.WriteString(e.Reason)
	default:
		b.WriteString(e.Reason)
	}
	return oneLine(b.String())
}

// oneLine escapes line breaks so that no message, whatever the input file
// held, spans more than one line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// keyError builds an *Error for a rule broken by a value.
func keyError(key string, value any, format string, args ...any) *Error {
	e := &Error{Key: key, Reason: fmt.Sprintf(format, args...)}
	if value != nil {
		e.Value = formatValue(value)
	}
	return e
}

// maxValueLen caps how much of a value an error message repeats: enough
// to recognise it, short enough to stay readable.
const maxValueLen = 80

// formatValue renders a value in TOML-like notation for error messages.
func formatValue(v any) string {
	s := formatValueFull(v)
	if utf8.RuneCountInString(s) <= maxValueLen {
		return s
	}
	runes := []rune(s)
	return string(runes[:maxValueLen-3]) + "..."
}

func formatValueFull(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case int:
		return strconv.Itoa(v)
	case uint32:
		return strconv.FormatUint(uint64(v), 10)
	case float64:
		switch {
		case math.IsInf(v, 1):
			return "inf"
		case math.IsInf(v, -1):
			return "-inf"
		case math.IsNaN(v):
			return "nan"
		}
		s := strconv.FormatFloat(v, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		return s
	case bool:
		return strconv.FormatBool(v)
	case Duration:
		return strconv.Quote(v.Duration.String())
	case time.Time:
		// The TOML decoder marks local dates and times with these
		// location names.
		switch v.Location().String() {
		case "date-local":
			return v.Format("2006-01-02")
		case "time-local":
			return v.Format("15:04:05.999999999")
		case "datetime-local":
			return v.Format("2006-01-02T15:04:05.999999999")
		}
		return v.Format(time.RFC3339Nano)
	case []string:
		parts := make([]string, len(v))
		for i, s := range v {
			parts[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = formatValueFull(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = quoteKeyPart(k) + " = " + formatValueFull(v[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case []map[string]any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = formatValueFull(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	default:
		return fmt.Sprintf("%v", reflect.ValueOf(v))
	}
}

// tomlTypeName names the TOML type of a decoded value for type errors.
func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a datetime"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

// quoteKeyPart writes one key component as TOML would: bare when it only
// holds bare-key characters, quoted otherwise.
func quoteKeyPart(k string) string {
	if k == "" {
		return `""`
	}
	// An element of an array of tables, as keys name it in errors:
	// "collectors[0]".
	if name, idx, ok := strings.Cut(k, "["); ok && name != "" && len(idx) > 1 && idx[len(idx)-1] == ']' {
		if _, err := strconv.Atoi(idx[:len(idx)-1]); err == nil {
			return quoteKeyPart(name) + "[" + idx
		}
	}
	for _, r := range k {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return strconv.Quote(k)
		}
	}
	return k
}

// joinKey renders a key path as a dotted TOML key.
func joinKey(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = quoteKeyPart(p)
	}
	return strings.Join(parts, ".")
}
