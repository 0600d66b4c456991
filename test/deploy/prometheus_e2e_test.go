// SPDX-License-Identifier: AGPL-3.0-only

package deploy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// promListen is Prometheus' own address inside namespace A.
const promListen = "127.0.0.1:19090"

// promResponse is the envelope of every Prometheus HTTP API answer.
type promResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

type promVector struct {
	ResultType string `json:"resultType"`
	Result     []struct {
		Metric map[string]string `json:"metric"`
	} `json:"result"`
}

// promAPI calls a Prometheus API path in namespace ns and returns data.
func promAPI(ns, path string, params url.Values) (json.RawMessage, error) {
	u := "http://" + promListen + path
	if params != nil {
		u += "?" + params.Encode()
	}
	code, body, err := httpGet(ns, u)
	if err != nil {
		return nil, err
	}
	var r promResponse
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, fmt.Errorf("%s: HTTP %d, not JSON: %.200s", path, code, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	return r.Data, nil
}

// instantQuery evaluates expr now and returns the vector's label sets.
func instantQuery(ns, expr string) ([]map[string]string, error) {
	data, err := promAPI(ns, "/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	var v promVector
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("query result: %w", err)
	}
	if v.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", v.ResultType)
	}
	out := make([]map[string]string, len(v.Result))
	for i, r := range v.Result {
		out[i] = r.Metric
	}
	return out, nil
}

var (
	grafanaRateInterval = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)
	grafanaAnyVariable  = regexp.MustCompile(`\$\{[A-Za-z0-9_:]+\}|\$[A-Za-z_][A-Za-z0-9_]*`)
)

// grafanaSubstitute does what Grafana does before it sends a query when
// "All" is selected: intervals become a duration that covers several 1s
// scrapes, and the instance/ifname variables (only used in =~ matchers)
// match everything.
func grafanaSubstitute(expr string) string {
	expr = grafanaRateInterval.ReplaceAllString(expr, "1m")
	return grafanaAnyVariable.ReplaceAllString(expr, ".*")
}

// TestPrometheusEndToEnd runs the agent (IPFIX export, MMDB enrichment,
// BMP listener) in a namespace with traffic flowing, has Debian's
// prometheus scrape it every second with the alert rules loaded, and
// evaluates every dashboard query and every alert expression through the
// HTTP API: each must parse and evaluate, every metric it names must
// exist in Prometheus, dashboard queries must return series, and on this
// healthy agent no alert expression may match. Then it breaks things for
// real: closing the IPFIX collector's socket must activate
// RfmIpfixExportFailing, killing the agent RfmAgentDown.
func TestPrometheusEndToEnd(t *testing.T) {
	needRoot(t)
	prometheus := needTool(t, "prometheus", "prometheus")
	rfm := agentBinary(t)
	tb := newTestbed(t)
	dir := t.TempDir()
	asnDB, cityDB := writeLabMMDBs(t, dir)

	// The collector socket and the traffic sink in B: bound, so no ICMP
	// port-unreachable comes back.
	collector := lab.UDPConn(t, tb.B, net.JoinHostPort(labAddrB4, fmt.Sprint(labIPFIXPort)), "")
	lab.UDPConn(t, tb.B, net.JoinHostPort(labAddrB4, fmt.Sprint(labSinkPort)), "")
	lab.UDPConn(t, tb.B, net.JoinHostPort(labAddrB6, fmt.Sprint(labSinkPort)), "")
	lab.UDPConn(t, tb.A, net.JoinHostPort(labAddrA4, fmt.Sprint(labSinkPort)), "")

	config := filepath.Join(dir, "rfm.toml")
	writeFile(t, config, fmt.Sprintf(`[agent]
interfaces = [%q]
[agent.bpf]
sample_rate = 1
[agent.collector]
eviction_timeout = "2s"
[agent.prometheus]
host = "127.0.0.1"
port = 9669
[agent.ipfix]
host = %q
port = %d
template_refresh = "5s"
[agent.enrich.mmdb]
asn_db = %q
city_db = %q
[agent.enrich.rib.bmp]
host = "127.0.0.1"
port = %d
[agent.control]
socket = %q
[agent.xdp]
interfaces = [%q]
state_file = %q
[[agent.xdp.rules]]
name = "reverse"
action = "pass"
proto = "udp"
src_ports = ["40003"]
[[agent.xdp.rules]]
name = "nothing"
action = "drop"
proto = "udp"
dst_ports = ["9"]
`, labDevA, labAddrB4, labIPFIXPort, asnDB, cityDB, labBMPPort, filepath.Join(dir, "rfm.sock"), labDevA, filepath.Join(dir, "blocklist.json")))
	agent := startIn(t, tb.A, rfm, "agent", "-c", config)
	waitAttached(t, tb, agent)
	checkHealthz(t, tb)

	// Steady IPv4 and IPv6 flows from A to B and one from B to A keep the
	// flow gauges and both directions' counters filled; a one-off flow
	// ends after eviction_timeout and goes out over IPFIX.
	steady4 := lab.UDPConn(t, tb.A, net.JoinHostPort(labAddrA4, "40001"), net.JoinHostPort(labAddrB4, fmt.Sprint(labSinkPort)))
	steady6 := lab.UDPConn(t, tb.A, net.JoinHostPort(labAddrA6, "40001"), net.JoinHostPort(labAddrB6, fmt.Sprint(labSinkPort)))
	oneOff := lab.UDPConn(t, tb.A, net.JoinHostPort(labAddrA4, "40002"), net.JoinHostPort(labAddrB4, fmt.Sprint(labSinkPort)))
	if _, err := oneOff.Write(make([]byte, 100)); err != nil {
		t.Fatalf("send one-off datagram: %v", err)
	}
	reverse := lab.UDPConn(t, tb.B, net.JoinHostPort(labAddrB4, "40003"), net.JoinHostPort(labAddrA4, fmt.Sprint(labSinkPort)))
	sendSteady(t, 20*time.Millisecond, steady4, steady6, reverse)

	// An IPFIX message reaches the collector socket: export works, so
	// the IPFIX alert must stay quiet below.
	if err := collector.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := collector.Read(buf)
	if err != nil {
		t.Fatalf("no IPFIX message at the collector socket: %v", err)
	}
	if n < 16 || buf[0] != 0 || buf[1] != 10 {
		t.Fatalf("collector received %d bytes that are not IPFIX (version %d)", n, int(buf[0])<<8|int(buf[1]))
	}

	rules := deployPath(t, "prometheus/rfm-alerts.yml")
	promConfig := filepath.Join(dir, "prometheus.yml")
	writeFile(t, promConfig, fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: rfm
    static_configs:
      - targets: [%q]
`, rules, labMetrics))
	storage := filepath.Join(dir, "prometheus-data")
	prom := startIn(t, tb.A, prometheus,
		"--config.file="+promConfig,
		"--storage.tsdb.path="+storage,
		"--web.listen-address="+promListen,
		"--log.level=warn")

	// Loaded rules: all the alerts are known to Prometheus, so
	// the file we ship loads in a real server, not only in promtool.
	alerts := alertExprs(t, rules)
	lab.Eventually(t, 30*time.Second, "prometheus to load the alert rules", func() error {
		if prom.Exited() {
			t.Fatalf("prometheus exited: %v", prom.Err())
		}
		data, err := promAPI(tb.A, "/api/v1/rules", url.Values{"type": {"alert"}})
		if err != nil {
			return err
		}
		var rr struct {
			Groups []struct {
				Rules []struct {
					Name   string `json:"name"`
					Health string `json:"health"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := json.Unmarshal(data, &rr); err != nil {
			return err
		}
		loaded := map[string]bool{}
		for _, g := range rr.Groups {
			for _, r := range g.Rules {
				loaded[r.Name] = true
			}
		}
		for name := range alerts {
			if !loaded[name] {
				return fmt.Errorf("alert %s not loaded yet (loaded: %v)", name, loaded)
			}
		}
		return nil
	})

	// Enough scrapes for rate() over 1m, and the flow and IPFIX counters
	// showing the traffic.
	lab.Eventually(t, 60*time.Second, "prometheus to scrape the agent with traffic", func() error {
		if prom.Exited() {
			t.Fatalf("prometheus exited: %v", prom.Err())
		}
		for _, q := range []string{
			`count_over_time(up{job="rfm"}[1m]) >= 4`,
			`up{job="rfm"} == 1`,
			`rfm_ipfix_records_total > 0`,
			`rate(rfm_interface_rx_packets_total{ifname="` + labDevA + `",family="ipv4"}[1m]) > 0`,
			`rate(rfm_interface_tx_packets_total{ifname="` + labDevA + `",family="ipv6"}[1m]) > 0`,
			`rfm_flow_bytes{src_asn="64500",dst_asn="64501",src_city="Testville",dst_city="Otherville"}`,
			// The flow counters give a rate by the enriched labels.
			`rate(rfm_flow_estimated_bytes_total{src_asn="64500",dst_asn="64501",src_city="Testville",dst_city="Otherville"}[1m]) > 0`,
			`rate(rfm_flow_estimated_packets_total{ifname="` + labDevA + `",direction="egress",proto="udp"}[1m]) > 0`,
		} {
			res, err := instantQuery(tb.A, q)
			if err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
			if len(res) == 0 {
				return fmt.Errorf("%s: no result yet", q)
			}
		}
		return nil
	})

	// Prometheus itself finds no counter reset in the flow counters over
	// the whole run, although flows ended during it: the counters never
	// went down between two scrapes.
	for _, q := range []string{
		`resets(rfm_flow_estimated_bytes_total[10m]) > 0`,
		`resets(rfm_flow_estimated_packets_total[10m]) > 0`,
	} {
		res, err := instantQuery(tb.A, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if len(res) != 0 {
			t.Errorf("%s: counter resets in %v", q, res)
		}
	}

	names := metricNamesInPrometheus(t, tb)

	exprs := dashboardExprs(t, loadDashboard(t))
	t.Logf("evaluating %d dashboard expressions and %d alert expressions", len(exprs), len(alerts))
	for where, expr := range exprs {
		q := grafanaSubstitute(expr)
		for _, m := range metricNames(q) {
			if !names[m] {
				t.Errorf("%s: metric %s is not in Prometheus after scraping the agent: %s", where, m, q)
			}
		}
		// Metrics can be absent for one scrape while a flow turns over;
		// retry briefly before calling a query empty.
		var last error
		deadline := time.Now().Add(10 * time.Second)
		for {
			res, err := instantQuery(tb.A, q)
			switch {
			case err != nil:
				last = err
			case len(res) == 0:
				last = fmt.Errorf("no series")
			default:
				last = nil
			}
			if last == nil || time.Now().After(deadline) || strings.Contains(fmt.Sprint(err), "bad_data") {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if last != nil {
			t.Errorf("%s: %s: %v", where, q, last)
		}
	}
	checkEnrichedTopK(t, tb)

	for name, expr := range alerts {
		for _, m := range metricNames(expr) {
			if !names[m] {
				t.Errorf("alert %s: metric %s is not in Prometheus after scraping the agent: %s", name, m, expr)
			}
		}
		res, err := instantQuery(tb.A, expr)
		if err != nil {
			t.Errorf("alert %s: %s: %v", name, expr, err)
			continue
		}
		if len(res) != 0 {
			t.Errorf("alert %s matches on a healthy agent: %v", name, res)
		}
	}
	if t.Failed() {
		return
	}

	// Two real failures, each matched by its alert expression (the
	// rules' `for:` durations are covered by the promtool unit tests).
	// The collector goes away: sends to a closed port fail (ICMP port
	// unreachable on the connected socket).
	collector.Close()
	alertFires(t, tb, prom, "RfmIpfixExportFailing", alerts["RfmIpfixExportFailing"])
	// The agent stops: the scrape fails.
	if err := agent.Kill(); err != nil {
		t.Fatalf("kill the agent: %v", err)
	}
	alertFires(t, tb, prom, "RfmAgentDown", alerts["RfmAgentDown"])
}

// alertFires polls until the alert's expression returns a series and
// Prometheus lists the alert as pending or firing.
func alertFires(t *testing.T, tb *testbed, prom *lab.Process, name, expr string) {
	t.Helper()
	lab.Eventually(t, 30*time.Second, "alert "+name+" to become active", func() error {
		if prom.Exited() {
			t.Fatalf("prometheus exited: %v", prom.Err())
		}
		res, err := instantQuery(tb.A, expr)
		if err != nil {
			return err
		}
		if len(res) == 0 {
			return fmt.Errorf("%s: no series yet", expr)
		}
		data, err := promAPI(tb.A, "/api/v1/alerts", nil)
		if err != nil {
			return err
		}
		var a struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		}
		if err := json.Unmarshal(data, &a); err != nil {
			return err
		}
		for _, al := range a.Alerts {
			if al.Labels["alertname"] == name && (al.State == "pending" || al.State == "firing") {
				return nil
			}
		}
		return fmt.Errorf("%s not pending yet: %+v", name, a.Alerts)
	})
}

// metricNamesInPrometheus lists every metric name Prometheus has stored.
func metricNamesInPrometheus(t *testing.T, tb *testbed) map[string]bool {
	t.Helper()
	data, err := promAPI(tb.A, "/api/v1/label/__name__/values", nil)
	if err != nil {
		t.Fatalf("metric names: %v", err)
	}
	var list []string
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatalf("metric names: %v", err)
	}
	names := make(map[string]bool, len(list))
	for _, n := range list {
		names[n] = true
	}
	return names
}

// checkEnrichedTopK evaluates the dashboard's ASN-pair panel query and
// requires the MMDB's ASNs in it: the labels it groups by are the ones
// the agent sets.
func checkEnrichedTopK(t *testing.T, tb *testbed) {
	t.Helper()
	var pairs string
	for _, p := range allPanels(loadDashboard(t).Panels) {
		if p.Title == "Top ASN pairs" && len(p.Targets) > 0 {
			pairs = grafanaSubstitute(p.Targets[0].Expr)
		}
	}
	if pairs == "" {
		t.Fatal(`dashboard: no "Top ASN pairs" panel`)
	}
	res, err := instantQuery(tb.A, pairs)
	if err != nil {
		t.Fatalf("%s: %v", pairs, err)
	}
	var got []string
	for _, m := range res {
		got = append(got, m["src_asn"]+">"+m["dst_asn"])
	}
	sort.Strings(got)
	if !strings.Contains(strings.Join(got, " "), "64500>64501") {
		t.Errorf("%s: want the pair 64500>64501, got %v", pairs, got)
	}
}

// checkHealthz requires the agent's /healthz, which the Kubernetes probes
// call, to answer 200 "ok\n" once the agent has attached.
func checkHealthz(t *testing.T, tb *testbed) {
	t.Helper()
	lab.Eventually(t, 10*time.Second, "GET /healthz = 200 ok", func() error {
		code, body, err := httpGet(tb.A, "http://"+labMetrics+"/healthz")
		if err != nil {
			return err
		}
		if code != http.StatusOK || body != "ok\n" {
			return fmt.Errorf("GET /healthz = %d %q, want 200 %q", code, body, "ok\n")
		}
		return nil
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}
