// SPDX-License-Identifier: AGPL-3.0-only

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// TestConfigRejected runs the agent on invalid configs: each must exit
// non-zero with one stderr line naming the key (and the value when there
// is one), and leave nothing attached.
func TestConfigRejected(t *testing.T) {
	l := newLab(t, labOptions{})
	idx := ifindex(t, l.nsA, l.vethA)
	valid := func(iface, bpf, collector, prom string) string {
		return fmt.Sprintf("[agent]\n%s\n\n[agent.bpf]\n%s\n\n[agent.collector]\n%s\n\n[agent.prometheus]\nhost = \"127.0.0.1\"\n%s\n",
			iface, bpf, collector, prom)
	}
	iface := fmt.Sprintf("interfaces = [%q]", l.vethA)
	const bpf, coll, prom = "sample_rate = 1", "max_flows = 100", "port = 9669"
	cases := []struct {
		name   string
		config string
		want   []string // substrings of the one stderr line
	}{
		{"sample_rate zero", valid(iface, "sample_rate = 0", coll, prom), []string{"agent.bpf.sample_rate", "0"}},
		{"ring_buf_size not power of two", valid(iface, "ring_buf_size = 1000", coll, prom), []string{"agent.bpf.ring_buf_size", "1000"}},
		{"max_flows negative", valid(iface, bpf, "max_flows = -1", prom), []string{"agent.collector.max_flows", "-1"}},
		{"eviction_timeout below 1s", valid(iface, bpf, `eviction_timeout = "500ms"`, prom), []string{"agent.collector.eviction_timeout", "500ms"}},
		{"unknown key", valid(iface, "sampel_rate = 5", coll, prom), []string{"sampel_rate"}},
		{"interfaces missing", valid("", bpf, coll, prom), []string{"agent.interfaces"}},
		{"interface absent", valid(`interfaces = ["rfmnope0"]`, bpf, coll, prom), []string{"agent.interfaces", "rfmnope0"}},
		{"duplicate interfaces", valid(fmt.Sprintf("interfaces = [%q, %q]", l.vethA, l.vethA), bpf, coll, prom), []string{"agent.interfaces", l.vethA}},
		{"wildcard mixed", valid(fmt.Sprintf("interfaces = [\"*\", %q]", l.vethA), bpf, coll, prom), []string{"agent.interfaces", "*"}},
		{"prometheus port out of range", valid(iface, bpf, coll, "port = 70000"), []string{"agent.prometheus.port", "70000"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.nsA, rfmBin, "agent", "-c", writeConfig(t, tc.config))
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("agent still running after 15s on an invalid config; stderr:\n%s", stderr.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("agent exit = %v, want a non-zero exit; stderr:\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || lines[0] == "" {
				t.Fatalf("stderr has %d lines, want exactly 1:\n%s", len(lines), stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("stderr %q does not contain %q", lines[0], w)
				}
			}
			if in, eg := lab.AttachedPrograms(t, l.nsA, idx); in != 0 || eg != 0 {
				t.Errorf("after rejected config: %d ingress, %d egress TCX programs on %s", in, eg, l.vethA)
			}
		})
	}
}
