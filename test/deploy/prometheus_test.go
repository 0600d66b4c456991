// SPDX-License-Identifier: AGPL-3.0-only

package deploy

import (
	"path/filepath"
	"testing"
)

// TestAlertRulesCheck runs promtool's static check on the alert rules.
func TestAlertRulesCheck(t *testing.T) {
	promtool := needTool(t, "promtool", "prometheus")
	rules := deployPath(t, "prometheus/rfm-alerts.yml")
	run(t, filepath.Dir(rules), promtool, "check", "rules", rules)
}

// TestAlertRulesUnit runs the promtool unit tests, which make every alert
// fire on bad input and stay quiet on healthy or borderline input.
func TestAlertRulesUnit(t *testing.T) {
	promtool := needTool(t, "promtool", "prometheus")
	tests := deployPath(t, "prometheus/rfm-alerts.test.yml")
	run(t, filepath.Dir(tests), promtool, "test", "rules", tests)
}

// TestAlertRulesMetrics requires every metric an alert names to be one the
// agent exports (or Prometheus' own up).
func TestAlertRulesMetrics(t *testing.T) {
	exprs := alertExprs(t, deployPath(t, "prometheus/rfm-alerts.yml"))
	if len(exprs) != 8 {
		t.Fatalf("deploy/prometheus/rfm-alerts.yml: got %d alert rules, want 8", len(exprs))
	}
	for name, expr := range exprs {
		checkMetricNames(t, "alert "+name, expr)
	}
}
