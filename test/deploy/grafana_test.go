// SPDX-License-Identifier: AGPL-3.0-only

package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// dashboard is the part of Grafana's dashboard model the checks read.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []panelTarget  `json:"targets"`
	Panels     []panel        `json:"panels"` // panels of a collapsed row
}

type panelTarget struct {
	Expr       string         `json:"expr"`
	RefID      string         `json:"refId"`
	Datasource *datasourceRef `json:"datasource"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	path := deployPath(t, "grafana/rfm.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read deploy/grafana/rfm.json: %v", err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("deploy/grafana/rfm.json: %v", err)
	}
	return d
}

// allPanels flattens rows, collapsed or not.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// dashboardExprs returns every PromQL expression of the dashboard keyed
// by where it is, including the selectors inside label_values() variables.
func dashboardExprs(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: definition %q is not label_values(selector, label)", v.Name, v.Definition)
			continue
		}
		exprs["variable "+v.Name] = m[1]
	}
	return exprs
}

// TestDashboardStructure checks what makes the dashboard importable and
// usable: a Prometheus datasource variable every query uses, the instance
// and ifname variables, unique panel ids and every query filtered by
// instance.
func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard: uid %q and title %q must be set", d.UID, d.Title)
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("dashboard: want a variable datasource of type datasource with query prometheus, got %+v", v)
	}
	for _, name := range []string{"instance", "ifname"} {
		if v, ok := vars[name]; !ok || v.Type != "query" {
			t.Errorf("dashboard: want a query variable %s, got %+v", name, v)
		}
	}
	ids := map[int]string{}
	queries := 0
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource must be ${datasource}, got %+v", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q target %s: datasource must be ${datasource}", p.Title, tg.RefID)
			}
			if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
				t.Errorf("panel %q target %s: not filtered by $instance: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	if queries < 20 {
		t.Errorf("dashboard has only %d queries", queries)
	}
}

// TestDashboardMetrics requires every metric any dashboard query names to
// be one the agent exports (docs/metrics.md), and that every
// selector of the list is shown somewhere.
func TestDashboardMetrics(t *testing.T) {
	exprs := dashboardExprs(t, loadDashboard(t))
	used := map[string]bool{}
	for where, expr := range exprs {
		checkMetricNames(t, where, expr)
		for _, n := range metricNames(expr) {
			used[n] = true
		}
	}
	for _, want := range []string{
		"rfm_interface_rx_bytes_total", "rfm_interface_tx_bytes_total",
		"rfm_interface_rx_packets_total", "rfm_interface_tx_packets_total",
		"rfm_flow_bytes", "rfm_collector_active_flows", "rfm_collector_max_flows",
		"rfm_collector_dropped_events_total", "rfm_sample_rate",
		"rfm_collector_forced_evictions_total", "rfm_errors_total",
		"rfm_bmp_sessions", "rfm_rib_routes", "rfm_ipfix_records_total",
		"rfm_ipfix_dropped_records_total",
		"rfm_flow_estimated_bytes_total", "rfm_flow_estimated_packets_total",
		"rfm_flow_label_sets", "rfm_flow_label_set_overflows_total",
	} {
		if !used[want] {
			t.Errorf("dashboard: no panel shows %s", want)
		}
	}
}

// TestDashboardExprsParse has Prometheus' parser (through promtool) parse
// every dashboard expression after Grafana's variable substitution.
func TestDashboardExprsParse(t *testing.T) {
	promtool := needTool(t, "promtool", "prometheus")
	checkParse(t, promtool, dashboardExprs(t, loadDashboard(t)))
}
