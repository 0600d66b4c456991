// SPDX-License-Identifier: AGPL-3.0-only

package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// exportedMetrics reads the metric names the agent exports from
// docs/metrics.md, the documented contract. The go_* and process_*
// families are listed there only as prefixes.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(deployDir, "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatalf("read docs/metrics.md: %v", err)
	}
	section := string(doc)
	names := map[string]bool{}
	for _, code := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(section, -1) {
		for _, n := range regexp.MustCompile(`\brfm_[a-z0-9_]+`).FindAllString(code[1], -1) {
			names[n] = true
		}
	}
	if len(names) < 20 {
		t.Fatalf("docs/metrics.md: found only %d rfm_ metric names: %v", len(names), names)
	}
	return names
}

// promqlKeywords are words that look like identifiers but are not metrics.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "and": true, "or": true,
	"unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "start": true, "end": true,
}

var (
	// Grafana's built-in interval variables stand for durations.
	grafanaInterval = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)
	// Any other dashboard variable; in our queries they only appear in
	// label-matcher strings.
	grafanaVariable = regexp.MustCompile(`\$\{[A-Za-z0-9_:]+\}|\$[A-Za-z_][A-Za-z0-9_]*`)
	promqlString    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlBraces    = regexp.MustCompile(`\{[^{}]*\}`)
	promqlBrackets  = regexp.MustCompile(`\[[^\[\]]*\]`)
	promqlLabelList = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promqlToken     = regexp.MustCompile(`[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?(?:ms|[smhdwy])?|[A-Za-z_:][A-Za-z0-9_:]*`)
)

// expandGrafanaVariables replaces dashboard variables the way Grafana
// would before sending a query, so the result is plain PromQL.
func expandGrafanaVariables(expr string) string {
	expr = grafanaInterval.ReplaceAllString(expr, "5m")
	return grafanaVariable.ReplaceAllString(expr, "x")
}

// metricNames returns the metric names a PromQL expression selects. It is
// a small lexer, not a parser: strings, label matchers, ranges and label
// lists are removed, then every identifier that is not a keyword and not
// followed by "(" (a function or aggregation) is a metric name. Parsing
// itself is checked by promtool.
func metricNames(expr string) []string {
	expr = promqlString.ReplaceAllString(expandGrafanaVariables(expr), `""`)
	for prev := ""; prev != expr; {
		prev = expr
		expr = promqlBraces.ReplaceAllString(expr, " ")
	}
	expr = promqlBrackets.ReplaceAllString(expr, " ")
	expr = promqlLabelList.ReplaceAllString(expr, " ")
	seen := map[string]bool{}
	for _, loc := range promqlToken.FindAllStringIndex(expr, -1) {
		tok := expr[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || promqlKeywords[strings.ToLower(tok)] {
			continue
		}
		if rest := strings.TrimLeft(expr[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue
		}
		seen[tok] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// checkMetricNames fails the test for every metric in expr that the agent
// does not export. up is Prometheus' own per-target series.
func checkMetricNames(t *testing.T, where, expr string) {
	t.Helper()
	exported := exportedMetrics(t)
	names := metricNames(expr)
	if len(names) == 0 {
		t.Errorf("%s: expression names no metric: %s", where, expr)
	}
	for _, n := range names {
		if n == "up" || exported[n] || strings.HasPrefix(n, "go_") || strings.HasPrefix(n, "process_") {
			continue
		}
		t.Errorf("%s: metric %q is not exported by the agent (docs/metrics.md): %s", where, n, expr)
	}
}

// alertExprs reads the alert names and expressions of a rules file we
// wrote (one "- alert:" per rule, "expr:" inline or as a "|" block).
// promtool validates the YAML itself; this only needs our own layout.
func alertExprs(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	exprs := map[string]string{}
	var alert string
	var block []string
	blockIndent := -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		indent := len(line) - len(strings.TrimLeft(line, " "))
		if blockIndent >= 0 {
			if trimmed == "" || indent > blockIndent {
				block = append(block, trimmed)
				continue
			}
			exprs[alert] = strings.TrimSpace(strings.Join(block, "\n"))
			blockIndent, block = -1, nil
		}
		switch {
		case strings.HasPrefix(trimmed, "- alert:"):
			alert = strings.TrimSpace(strings.TrimPrefix(trimmed, "- alert:"))
		case trimmed == "expr: |":
			blockIndent = indent
		case strings.HasPrefix(trimmed, "expr:"):
			exprs[alert] = strings.TrimSpace(strings.TrimPrefix(trimmed, "expr:"))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if blockIndent >= 0 {
		exprs[alert] = strings.TrimSpace(strings.Join(block, "\n"))
	}
	return exprs
}

// checkParse writes exprs as recording rules into a temporary rules file
// and has promtool check it, so every expression is parsed by Prometheus'
// own parser without adding it to go.mod.
func checkParse(t *testing.T, promtool string, exprs map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b, index strings.Builder
	b.WriteString("groups:\n  - name: parse_check\n    rules:\n")
	for i, k := range keys {
		quoted, err := json.Marshal(expandGrafanaVariables(exprs[k]))
		if err != nil {
			t.Fatalf("quote expression of %s: %v", k, err)
		}
		// A JSON string is a valid YAML double-quoted scalar.
		fmt.Fprintf(&index, "expr%d = %s\n", i, k)
		b.WriteString("      - record: rfm_parse_check:expr" + strconv.Itoa(i) + "\n")
		b.WriteString("        expr: " + string(quoted) + "\n")
	}
	path := filepath.Join(t.TempDir(), "exprs.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	cmd := exec.Command(promtool, "check", "rules", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the expressions: %v\n%s\nwhere each expression comes from:\n%s", err, out, index.String())
	}
}

// TestMetricNames pins the lexer on the shapes our queries use.
func TestMetricNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
	}{
		{`up{job="rfm"} == 0`, []string{"up"}},
		{`rate(rfm_interface_rx_bytes_total{ifname=~"$ifname"}[$__rate_interval]) * 8`, []string{"rfm_interface_rx_bytes_total"}},
		{`sum by (proto) (rfm_flow_bytes{instance=~"$instance"})`, []string{"rfm_flow_bytes"}},
		{`topk(10, sum(rfm_flow_bytes) by (src_asn, dst_asn))`, []string{"rfm_flow_bytes"}},
		{`rfm_collector_active_flows / (rfm_collector_max_flows > 0) > 0.9`, []string{"rfm_collector_active_flows", "rfm_collector_max_flows"}},
		{`sum(rate(rfm_errors_total{subsystem="ipfix"}[5m])) or on(instance) rate(rfm_nope[1h] offset 5m)`, []string{"rfm_errors_total", "rfm_nope"}},
		{`rfm_bmp_sessions < max_over_time(rfm_bmp_sessions[1h])`, []string{"rfm_bmp_sessions"}},
		{`histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))`, []string{"x_bucket"}},
		{`1e3 * rfm_sample_rate`, []string{"rfm_sample_rate"}},
	}
	for _, c := range cases {
		got := metricNames(c.expr)
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("metricNames(%q) = %v, want %v", c.expr, got, c.want)
		}
	}
}
