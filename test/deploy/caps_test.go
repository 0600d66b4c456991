// SPDX-License-Identifier: AGPL-3.0-only

package deploy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/test/lab"
)

// unitCapabilities returns the capabilities deploy/systemd/rfm.service
// grants (AmbientCapabilities), e.g. ["CAP_BPF", "CAP_NET_ADMIN", ...].
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	unit, err := os.ReadFile(deployPath(t, "systemd/rfm.service"))
	if err != nil {
		t.Fatalf("read deploy/systemd/rfm.service: %v", err)
	}
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "AmbientCapabilities="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("deploy/systemd/rfm.service: no AmbientCapabilities=")
	return nil
}

// setprivCaps turns ["CAP_BPF", "CAP_NET_ADMIN"] into setpriv's
// "-all,+bpf,+net_admin".
func setprivCaps(caps []string) string {
	s := "-all"
	for _, c := range caps {
		s += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	return s
}

// TestAgentRunsWithUnitCapabilities runs the agent the way the systemd
// unit does, as an unprivileged user holding only the unit's ambient
// capabilities (setpriv sets uid, inheritable, ambient and bounding sets),
// and requires it to attach and count packets. Then it drops each of those
// capabilities in turn and requires the start to fail where that
// capability is checked, which shows none of them is superfluous on this
// kernel.
func TestAgentRunsWithUnitCapabilities(t *testing.T) {
	needRoot(t)
	setpriv := needTool(t, "setpriv", "util-linux")
	rfm := agentBinary(t)
	caps := unitCapabilities(t)

	// The config must be readable by nobody.
	dir, err := os.MkdirTemp("", "rfm-caps-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The control socket lives in a directory of the agent's user, as
	// /run/rfm is under the unit's RuntimeDirectory.
	runDir := filepath.Join(dir, "run")
	if err := os.Mkdir(runDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(runDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(runDir, "rfm.sock")
	config := filepath.Join(dir, "rfm.toml")
	writeFile(t, config, fmt.Sprintf(`[agent]
interfaces = [%q]
[agent.bpf]
sample_rate = 1
[agent.prometheus]
host = "127.0.0.1"
port = 9669
[agent.control]
socket = %q
`, labDevA, socket))

	run := func(t *testing.T, tb *testbed, granted []string) *lab.Process {
		set := setprivCaps(granted)
		return startIn(t, tb.A, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps="+set, "--ambient-caps="+set, "--bounding-set="+set,
			rfm, "agent", "-c", config)
	}

	t.Run("granted "+strings.Join(caps, "+"), func(t *testing.T) {
		tb := newTestbed(t)
		agent := run(t, tb, caps)
		waitAttached(t, tb, agent)
		lab.UDPConn(t, tb.B, net.JoinHostPort(labAddrB4, fmt.Sprint(labSinkPort)), "")
		conn := lab.UDPConn(t, tb.A, net.JoinHostPort(labAddrA4, "40001"), net.JoinHostPort(labAddrB4, fmt.Sprint(labSinkPort)))
		for i := 0; i < 5; i++ {
			if _, err := conn.Write(make([]byte, 100)); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		lab.Eventually(t, 10*time.Second, "5 sampled packets counted by an agent running as nobody", func() error {
			_, body, err := httpGet(tb.A, "http://"+labMetrics+"/metrics")
			if err != nil {
				return err
			}
			samples, err := lab.ParseMetrics(strings.NewReader(body))
			if err != nil {
				return err
			}
			for _, s := range samples {
				if s.Name == "rfm_flow_sampled_packets" && s.Labels["direction"] == "egress" && s.Value == 5 {
					return nil
				}
			}
			return errors.New("no egress flow with 5 sampled packets yet")
		})
		// The unit's ExecReload, run as the same user (systemd runs it
		// with the service's credentials), must reload this agent.
		reload := unitExecReload(t, rfm, socket)
		out, err := exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, reload...)...).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "reloaded") {
			t.Errorf("the unit's ExecReload (%s): %v\n%s", strings.Join(reload, " "), err, out)
		}
		// Shutdown flushes the per-CPU event batches with
		// BPF_PROG_TEST_RUN and detaches: both must work with only
		// these capabilities, or the exit status says otherwise.
		st, err := agent.Stop(10 * time.Second)
		if err != nil || !st.Success() {
			t.Fatalf("stopping the agent: %v (exit %v); output:\n%s", err, st, agent.Output())
		}
	})

	// What fails without each capability on this kernel (Linux >= 5.8):
	// maps need CAP_BPF, SCHED_CLS programs need CAP_NET_ADMIN to load,
	// and the verifier refuses the program's packet-pointer arithmetic
	// without CAP_PERFMON ("prohibited for !root").
	symptom := map[string]string{
		"CAP_BPF":       "map create",
		"CAP_NET_ADMIN": "load program",
		"CAP_PERFMON":   "!root",
	}
	for _, missing := range caps {
		t.Run("without "+missing, func(t *testing.T) {
			var granted []string
			for _, c := range caps {
				if c != missing {
					granted = append(granted, c)
				}
			}
			tb := newTestbed(t)
			agent := run(t, tb, granted)
			select {
			case <-agent.Done():
			case <-time.After(30 * time.Second):
				t.Fatalf("the agent kept running without %s; it is not needed", missing)
			}
			if agent.Err() == nil {
				t.Fatalf("the agent exited 0 without %s", missing)
			}
			out := agent.Output()
			if want, ok := symptom[missing]; ok && !strings.Contains(out, want) {
				t.Errorf("without %s: want the error to mention %q, got:\n%.500s", missing, want, out)
			}
		})
	}
}

// unitExecReload returns the unit's ExecReload command line with the
// installed binary and the default socket replaced by the test's.
func unitExecReload(t *testing.T, rfm, socket string) []string {
	t.Helper()
	unit, err := os.ReadFile(deployPath(t, "systemd/rfm.service"))
	if err != nil {
		t.Fatalf("read deploy/systemd/rfm.service: %v", err)
	}
	for _, line := range strings.Split(string(unit), "\n") {
		if rest, ok := strings.CutPrefix(line, "ExecReload="); ok {
			argv := strings.Fields(rest)
			for i, a := range argv {
				switch a {
				case installedBinary:
					argv[i] = rfm
				case "/run/rfm/rfm.sock":
					argv[i] = socket
				}
			}
			return argv
		}
	}
	t.Fatal("deploy/systemd/rfm.service: no ExecReload=")
	return nil
}
