// SPDX-License-Identifier: AGPL-3.0-only

package export

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/stepbrobd/rfm/test/lab"
)

// TestReloadMMDBCollectorAndMetricsPort: SIGHUP picks up a replaced MMDB
// file (active flows are relabelled), moves IPFIX export to a new
// collector and /metrics to a new port, without ending active flows.
func TestReloadMMDBCollectorAndMetricsPort(t *testing.T) {
	dir := t.TempDir()
	asnDB, cityDB := filepath.Join(dir, "asn.mmdb"), filepath.Join(dir, "city.mmdb")
	writeASN := func(offset uint32) {
		tmp := asnDB + ".new"
		writeMMDB(t, tmp, "GeoLite2-ASN", func(n testNetwork) mmdbtype.Map {
			return mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(n.asn + offset)}
		})
		if err := os.Rename(tmp, asnDB); err != nil { // how operators replace a database
			t.Fatal(err)
		}
	}
	writeASN(0)
	writeMMDB(t, cityDB, "GeoLite2-City", func(n testNetwork) mmdbtype.Map {
		return mmdbtype.Map{"city": mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(n.city)}}}
	})

	l := newLab(t)
	const newCollectorPort, newMetrics = 4740, "127.0.0.1:9670"
	startCollector(t, l, collectorPort)
	col2 := startCollector(t, l, newCollectorPort)
	receivers(t, l, addrB4+":5001")
	cfg := agentConfig{sampleRate: 1, collectorPort: collectorPort, asnDB: asnDB, cityDB: cityDB, evictionTimeout: "10m"}
	agent := startAgent(t, l, cfg)

	s4 := lab.UDPConn(t, l.A, addrA4+":40001", addrB4+":5001")
	send(t, s4, 5, 100)
	flowWith := func(addr, srcASN string, packets float64) func() error {
		return func() error {
			m, err := scrapeAt(l, addr)
			if err != nil {
				return err
			}
			want := map[string]string{"src_asn": srcASN, "dst_city": "Otherville"}
			if v, _ := metricValue(m, "rfm_flow_sampled_packets", want); v != packets {
				return fmt.Errorf("rfm_flow_sampled_packets%v = %v, want %v", want, v, packets)
			}
			return nil
		}
	}
	lab.Eventually(t, 10*time.Second, "flow labelled from the first MMDB", flowWith(metrics, "64500", 5))

	// New ASN data, a new collector and a new metrics port in one reload.
	writeASN(1000)
	cfg.collectorPort, cfg.metricsPort = newCollectorPort, 9670
	if err := os.WriteFile(agent.configPath, []byte(cfg.toml(dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := agent.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 10*time.Second, "same flow relabelled, served on the new port", flowWith(newMetrics, "65500", 5))
	if _, err := scrape(l); err == nil {
		t.Errorf("old metrics address %s still answers after the reload", metrics)
	}

	send(t, s4, 3, 100)
	lab.Eventually(t, 10*time.Second, "flow kept counting", flowWith(newMetrics, "65500", 8))
	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	flows := col2.finish(t, l)
	got := findFlows(flows, addrA4, addrB4, 40001, 5001, protoUDP)
	if len(got) != 1 || got[0].packets != 8 || got[0].srcASN != 65500 {
		t.Fatalf("new collector: want one flow of 8 packets from AS65500; got:\n%s", dumpFlows(flows))
	}
}

// reloadLog rewrites the agent's config, sends SIGHUP and waits until
// the agent's log has applied reloads lines saying it applied key and
// rejected lines saying a reload was rejected (more rejections fail the
// test at once, with the agent's reason).
func reloadLog(t *testing.T, agent *proc, cfg agentConfig, key string, applied, rejected int) string {
	t.Helper()
	if err := os.WriteFile(agent.configPath, []byte(cfg.toml(filepath.Dir(agent.configPath))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := agent.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var lastRejection string
	lab.Eventually(t, 10*time.Second, fmt.Sprintf("%d reloads applying %s, %d rejected", applied, key, rejected), func() error {
		a, r := 0, 0
		for _, line := range strings.Split(agent.Output(), "\n") {
			switch {
			case strings.Contains(line, "reload rejected"):
				r++
				lastRejection = line
			case strings.Contains(line, "msg=reloaded") && strings.Contains(line, key):
				a++
			}
		}
		if r > rejected {
			t.Fatalf("reload rejected: %s", lastRejection)
		}
		if a < applied || r < rejected {
			return fmt.Errorf("%d applied, %d rejected so far", a, r)
		}
		return nil
	})
	return lastRejection
}

// TestReloadSameIPFIXBindPortAndWebConfig: with a fixed
// agent.ipfix.bind.port, a change under [agent.ipfix] is applied (it was
// rejected: the new socket was bound before the old one closed), and
// flows of before and after the reload reach the collector, none lost.
// Moving to a port another socket holds is rejected and changes nothing. Then a change of agent.prometheus.web_config alone is applied
// on the same port (it was rejected: the agent listened on host:port
// again while the old listener was open).
func TestReloadSameIPFIXBindPortAndWebConfig(t *testing.T) {
	dir := t.TempDir()
	l := newLab(t)
	col := startCollector(t, l, collectorPort)
	receivers(t, l, addrB4+":5001")
	const bindPort = 47390
	cfg := agentConfig{sampleRate: 1, collectorPort: collectorPort, evictionTimeout: "1s", bindPort: bindPort}
	agent := startAgent(t, l, cfg)

	before := lab.UDPConn(t, l.A, addrA4+":40011", addrB4+":5001")
	send(t, before, 4, 100)
	lab.Eventually(t, 10*time.Second, "first flow seen", func() error {
		m, err := scrape(l)
		if err != nil {
			return err
		}
		if v, _ := metricValue(m, "rfm_ipfix_records_total", nil); v < 1 {
			return errors.New("no IPFIX record sent yet")
		}
		return nil
	})

	// A bind port some other socket holds: rejected in one line naming
	// the key, and the running exporter stays.
	lab.UDPConn(t, l.A, fmt.Sprintf("0.0.0.0:%d", bindPort+1), "")
	held := cfg
	held.bindPort = bindPort + 1
	why := reloadLog(t, agent, held, "agent.ipfix", 0, 1)
	if !strings.Contains(why, "agent.ipfix.bind") || !strings.Contains(why, "address already in use") {
		t.Errorf("rejection does not name agent.ipfix.bind and the cause: %s", why)
	}

	cfg.templateRefresh = "30s"
	reloadLog(t, agent, cfg, "agent.ipfix", 1, 1)
	after := lab.UDPConn(t, l.A, addrA4+":40012", addrB4+":5001")
	send(t, after, 6, 100)

	web := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(web, []byte("http_server_config:\n  headers:\n    X-Frame-Options: deny\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.webConfig = web
	cfg.maxLabelSets = 123
	reloadLog(t, agent, cfg, "agent.prometheus.max_label_sets", 1, 1)
	out, err := exec.Command("ip", "netns", "exec", l.A, "curl", "-sS", "-D", "-", "-o", "/dev/null", "--max-time", "5",
		"http://"+metrics+"/metrics").CombinedOutput()
	if err != nil || !strings.Contains(strings.ToLower(string(out)), "x-frame-options: deny") {
		t.Fatalf("metrics after the web_config reload: %v\n%s", err, out)
	}
	if !strings.Contains(agent.Output(), "applied=\"[agent.prometheus agent.prometheus.max_label_sets]\"") {
		t.Errorf("the reload did not apply agent.prometheus and agent.prometheus.max_label_sets together:\n%s", agent.Output())
	}
	m, err := scrape(l)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := metricValue(m, "rfm_flow_label_sets_max", nil); !ok || v != 123 {
		t.Errorf("rfm_flow_label_sets_max = %v after the reload, want 123", v)
	}

	if err := agent.stop(t, 15*time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	flows := col.finish(t, l)
	for _, w := range []struct{ sport, packets int }{{40011, 4}, {40012, 6}} {
		got := findFlows(flows, addrA4, addrB4, w.sport, 5001, protoUDP)
		var sum uint64
		for _, f := range got {
			sum += f.packets
		}
		if sum != uint64(w.packets) {
			t.Errorf("flow from port %d: %d packets at the collector, want %d; flows:\n%s", w.sport, sum, w.packets, dumpFlows(flows))
		}
	}
}
