// SPDX-License-Identifier: AGPL-3.0-only

package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/test/lab"
)

// cliResult is one run of the rfm binary as a client.
type cliResult struct {
	stdout, stderr string
	exit           int
}

// rfmCLI runs the rfm binary with args, outside any namespace (the
// control socket is a file, reachable from every network namespace).
func rfmCLI(t testing.TB, args ...string) cliResult {
	t.Helper()
	return rfmCLIAs(t, nil, rfmBin, args...)
}

// rfmCLIAs runs bin with args under cred (nil: this process's user).
func rfmCLIAs(t testing.TB, cred *syscall.Credential, bin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.exit = exit.ExitCode()
	case err != nil:
		t.Fatalf("rfm %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// ok fails the test unless the command exited 0 with nothing on stderr.
func (r cliResult) ok(t testing.TB, what string) string {
	t.Helper()
	if r.exit != 0 || r.stderr != "" {
		t.Fatalf("%s: exit %d, stderr %q, stdout:\n%s", what, r.exit, r.stderr, r.stdout)
	}
	return r.stdout
}

// failed fails the test unless the command exited 1 with exactly want
// as its one stderr line.
func (r cliResult) failed(t testing.TB, what, want string) {
	t.Helper()
	if r.exit != 1 || r.stderr != want+"\n" || r.stdout != "" {
		t.Errorf("%s: exit %d, stderr %q, stdout %q; want exit 1 and stderr %q", what, r.exit, r.stderr, r.stdout, want)
	}
}

// controlJSON runs `rfm ARGS --json --socket S` and decodes the answer.
func controlJSON[T any](t testing.TB, socket string, args ...string) T {
	t.Helper()
	args = append(args, "--json", "--socket", socket)
	out := rfmCLI(t, args...).ok(t, "rfm "+strings.Join(args, " "))
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("rfm %s: output is not %T JSON: %v\n%s", strings.Join(args, " "), v, err, out)
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("rfm %s: --json output is not one line:\n%s", strings.Join(args, " "), out)
	}
	return v
}

// socketOf is the control socket writeConfig put next to the config.
func socketOf(configPath string) string {
	return filepath.Join(filepath.Dir(configPath), "rfm.sock")
}

// waitControl polls until the agent answers `rfm status` on socket.
func waitControl(t testing.TB, a *agent, socket string) {
	t.Helper()
	lab.Eventually(t, 10*time.Second, "control socket "+socket, func() error {
		if r := rfmCLI(t, "status", "--json", "--socket", socket); r.exit != 0 {
			select {
			case <-a.Done():
				t.Fatalf("agent exited; output:\n%s", a.Output())
			default:
			}
			return errors.New(strings.TrimSpace(r.stderr))
		}
		return nil
	})
}

// findFlow returns the flow from src:sport to dst:dport, if listed.
func findFlow(fl control.Flows, src, dst netip.Addr, sport, dport uint16) (control.Flow, bool) {
	for _, f := range fl.Flows {
		if f.Src == src && f.Dst == dst && f.SrcPort == sport && f.DstPort == dport {
			return f, true
		}
	}
	return control.Flow{}, false
}

// TestControlCommands runs every control command against a running agent,
// with --json and as a table.
func TestControlCommands(t *testing.T) {
	l := newLab(t, labOptions{})
	recv := listenUDP(t, l.nsB, udpPort)
	path := writeConfig(t, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml())
	sock := socketOf(path)
	a := startAgentAt(t, l.nsA, path)
	waitControl(t, a, sock)

	const n, payload, sport = 10, 50, 40000
	dialUDP(t, l.nsA, l.ipA, l.ipB, sport, udpPort, false).send(t, n, payload)
	recv.waitCount(t, n)
	var flow control.Flow
	lab.Eventually(t, 10*time.Second, "the udp flow in rfm flows", func() error {
		fl := controlJSON[control.Flows](t, sock, "flows")
		f, ok := findFlow(fl, l.ipA, l.ipB, sport, udpPort)
		if !ok || f.Sampled != n {
			return fmt.Errorf("flow %v:%d -> %v:%d not there with %d samples: %+v", l.ipA, sport, l.ipB, udpPort, n, fl)
		}
		flow = f
		return nil
	})
	wantBytes := uint64(n * udpIPLen(l.ipA, payload))
	if flow.Iface != l.vethA || flow.Direction != "egress" || flow.Proto != 17 || flow.Packets != n || flow.Bytes != wantBytes {
		t.Errorf("flow = %+v, want %s egress udp, %d packets, %d bytes", flow, l.vethA, n, wantBytes)
	}

	t.Run("status", func(t *testing.T) {
		st := controlJSON[control.Status](t, sock, "status")
		if st.Version == "" || st.ConfigPath != path || st.SampleRate != 1 || st.Uptime <= 0 {
			t.Errorf("status = %+v", st)
		}
		if st.IPFIX != nil || st.BMP != nil {
			t.Errorf("ipfix %+v, bmp %+v: both disabled in the config", st.IPFIX, st.BMP)
		}
		if st.Flows.Active < 1 || st.Flows.IdleTimeout != "1m0s" {
			t.Errorf("flows = %+v, want >= 1 active, idle timeout 1m0s", st.Flows)
		}
		// A running agent has heap, BPF maps and pages of its binary.
		if m := st.Memory; m == nil || m.Anonymous == 0 || m.BPFLocked == 0 || m.File == 0 {
			t.Errorf("memory = %+v, want all three figures", m)
		}
		var ifc *control.InterfaceStatus
		for i := range st.Interfaces {
			if st.Interfaces[i].Name == l.vethA {
				ifc = &st.Interfaces[i]
			}
		}
		if ifc == nil || ifc.Index != ifindex(t, l.nsA, l.vethA) || ifc.EgressPackets < n || ifc.EgressBytes < n*uint64(14+udpIPLen(l.ipA, payload)) {
			t.Errorf("interface %s = %+v in %+v", l.vethA, ifc, st.Interfaces)
		}
		out := rfmCLI(t, "status", "--socket", sock).ok(t, "rfm status")
		for _, want := range []string{"config       " + path, "sample rate  1 in 1", "ipfix        disabled", "bmp          disabled", "INTERFACE", l.vethA} {
			if !strings.Contains(out, want) {
				t.Errorf("rfm status table lacks %q:\n%s", want, out)
			}
		}
		t.Logf("rfm status:\n%s", out)
	})

	t.Run("flows", func(t *testing.T) {
		out := rfmCLI(t, "flows", "--socket", sock).ok(t, "rfm flows")
		row := regexp.MustCompile(fmt.Sprintf(`(?m)^%s +egress +udp +%s:%d +%s:%d +%d +%d B$`,
			l.vethA, regexp.QuoteMeta(l.ipA.String()), sport, regexp.QuoteMeta(l.ipB.String()), udpPort, n, wantBytes))
		head := regexp.MustCompile(`^1 of 1 active flows by bytes; packets and bytes estimated at sample rate 1 in 1\nIFACE +DIR +PROTO +SOURCE +DESTINATION +PACKETS +BYTES\n`)
		if !head.MatchString(out) || !row.MatchString(out) {
			t.Errorf("rfm flows table lacks a row matching %s:\n%s", row, out)
		}
		t.Logf("rfm flows:\n%s", out)

		top := controlJSON[control.Flows](t, sock, "flows", "--top", "1", "--sort", "packets", "--iface", l.vethA)
		if len(top.Flows) != 1 || top.Active < 1 || top.Flows[0].Iface != l.vethA {
			t.Errorf("--top 1 --iface %s: %+v", l.vethA, top)
		}
		rfmCLI(t, "flows", "--iface", "nosuch0", "--socket", sock).failed(t, "rfm flows --iface nosuch0", `rfm: interface "nosuch0": not attached`)
		rfmCLI(t, "flows", "--sort", "size", "--socket", sock).failed(t, "rfm flows --sort size", `rfm: --sort "size": want bytes or packets`)
	})

	t.Run("flows watch", func(t *testing.T) {
		// Not a terminal: successive tables separated by a blank line,
		// until SIGINT, exit 0.
		cmd := exec.Command(rfmBin, "flows", "--watch", "--interval", "100ms", "--socket", sock)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		sc := bufio.NewScanner(stdout)
		var lines []string
		tables := 0
		deadline := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
		defer deadline.Stop()
		for tables < 3 && sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), "active flows") {
				tables++
			}
		}
		if tables < 3 {
			t.Fatalf("saw %d tables before output ended:\n%s\nstderr: %s", tables, strings.Join(lines, "\n"), stderr.String())
		}
		cmd.Process.Signal(os.Interrupt)
		go io.Copy(io.Discard, stdout)
		if err := cmd.Wait(); err != nil {
			t.Errorf("rfm flows --watch after SIGINT: %v, want exit 0; stderr: %s", err, stderr.String())
		}
		if strings.Contains(strings.Join(lines, "\n"), "\x1b[") {
			t.Errorf("escape sequences in output to a pipe")
		}
		for i, line := range lines {
			if strings.Contains(line, "active flows") && i > 0 && lines[i-1] != "" {
				t.Errorf("table at line %d not preceded by a blank line:\n%s", i+1, strings.Join(lines, "\n"))
			}
		}
	})

	t.Run("rib", func(t *testing.T) {
		sum := controlJSON[control.RIBSummary](t, sock, "rib", "summary")
		if sum.Enabled || len(sum.Routers) != 0 {
			t.Errorf("rib summary without BMP = %+v", sum)
		}
		out := rfmCLI(t, "rib", "summary", "--socket", sock).ok(t, "rfm rib summary")
		if !strings.HasPrefix(out, "no RIB: the BMP station is disabled") {
			t.Errorf("rfm rib summary:\n%s", out)
		}
		lk := controlJSON[control.RIBLookup](t, sock, "rib", "lookup", l.ipB.String())
		if lk.Addr != l.ipB || len(lk.Routes) != 0 {
			t.Errorf("rib lookup without BMP = %+v", lk)
		}
		out = rfmCLI(t, "rib", "lookup", l.ipB.String(), "--socket", sock).ok(t, "rfm rib lookup")
		if out != l.ipB.String()+": no route\n" {
			t.Errorf("rfm rib lookup:\n%s", out)
		}
		rfmCLI(t, "rib", "lookup", "198.18.0.300", "--socket", sock).failed(t, "rfm rib lookup bad",
			`rfm: rib lookup: address "198.18.0.300": not an IPv4 or IPv6 address`)
	})

	t.Run("curl", func(t *testing.T) {
		// The control API is plain HTTP on the socket: curl speaks it.
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("curl not installed (scripts/test.sh installs it)")
		}
		get := func(target string) (body string, status string) {
			t.Helper()
			out, err := exec.Command(curl, "-sS", "--max-time", "20", "--unix-socket", sock, "-w", "\n%{http_code}", "http://rfm"+target).Output()
			if err != nil {
				t.Fatalf("curl %s: %v", target, err)
			}
			i := strings.LastIndexByte(string(out), '\n')
			return string(out[:i]), string(out[i+1:])
		}
		body, status := get("/v1/status")
		var st control.Status
		if err := json.Unmarshal([]byte(body), &st); err != nil || status != "200" || st.ConfigPath != path {
			t.Errorf("curl /v1/status: %s %s (%v)", status, body, err)
		}
		body, status = get("/v1/flows?top=1&iface=" + l.vethA)
		var fl control.Flows
		if err := json.Unmarshal([]byte(body), &fl); err != nil || status != "200" || len(fl.Flows) != 1 || fl.Flows[0].Iface != l.vethA {
			t.Errorf("curl /v1/flows: %s %s (%v)", status, body, err)
		}
		body, status = get("/v1/flows?iface=nosuch0")
		if want := `{"error":"interface \"nosuch0\": not attached","parameter":"iface","value":"nosuch0"}` + "\n"; status != "400" || body != want {
			t.Errorf("curl /v1/flows?iface=nosuch0: %s %q, want 400 %q", status, body, want)
		}
	})

	t.Run("socket file", func(t *testing.T) {
		fi, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 || st.Uid != uint32(os.Geteuid()) {
			t.Errorf("%s: mode %v, uid %d; want a socket, 0600, uid %d", sock, fi.Mode(), st.Uid, os.Geteuid())
		}
	})
}

// TestControlSampleRate: `rfm set sample-rate` changes sampling at once,
// and the estimates and status follow.
func TestControlSampleRate(t *testing.T) {
	l := newLab(t, labOptions{})
	recv := listenUDP(t, l.nsB, udpPort)
	path := writeConfig(t, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml())
	sock := socketOf(path)
	a := startAgentAt(t, l.nsA, path)
	waitControl(t, a, sock)

	// Rate 1: every packet is sampled.
	const n, payload = 1000, 32
	dialUDP(t, l.nsA, l.ipA, l.ipB, 40000, udpPort, false).send(t, n, payload)
	recv.waitCount(t, n)
	lab.Eventually(t, 10*time.Second, "every packet sampled at rate 1", func() error {
		f, ok := findFlow(controlJSON[control.Flows](t, sock, "flows"), l.ipA, l.ipB, 40000, udpPort)
		if !ok || f.Sampled != n || f.Packets != n {
			return fmt.Errorf("flow at rate 1: %+v (found %v), want %d sampled", f, ok, n)
		}
		return nil
	})

	out := rfmCLI(t, "set", "sample-rate", "10", "--socket", sock).ok(t, "rfm set sample-rate 10")
	if out != "sample rate 1 -> 10\n" {
		t.Errorf("rfm set sample-rate 10: %q", out)
	}
	if st := controlJSON[control.Status](t, sock, "status"); st.SampleRate != 10 {
		t.Errorf("status sample_rate = %d after set 10", st.SampleRate)
	}
	a.waitFor(t, 5*time.Second, "rfm_sample_rate 10", func(m metrics) bool { return m.sum("rfm_sample_rate") == 10 })

	// Rate 10: about a tenth sampled, estimates scaled by 10.
	dialUDP(t, l.nsA, l.ipA, l.ipB, 40001, udpPort, false).send(t, n, payload)
	recv.waitCount(t, 2*n)
	a.waitFor(t, 10*time.Second, "tx counter of both batches", func(m metrics) bool {
		return m.sum("rfm_interface_tx_packets_total", "ifname", l.vethA, "family", "ipv4") == 2*n
	})
	var f control.Flow
	lab.Eventually(t, 10*time.Second, "samples at rate 10", func() error {
		fl := controlJSON[control.Flows](t, sock, "flows")
		if fl.SampleRate != 10 {
			return fmt.Errorf("flows sample_rate %d, want 10", fl.SampleRate)
		}
		var ok bool
		if f, ok = findFlow(fl, l.ipA, l.ipB, 40001, udpPort); !ok || f.Sampled < n/10/3 {
			return fmt.Errorf("flow at rate 10: %+v (found %v)", f, ok)
		}
		return nil
	})
	// 1 in 10 of 1000: far from 1000, near 100 (a generous band for
	// random sampling).
	if f.Sampled > 3*n/10 {
		t.Errorf("%d of %d packets sampled at rate 10", f.Sampled, n)
	}
	if f.Packets != 10*f.Sampled || f.Bytes != 10*f.Sampled*uint64(udpIPLen(l.ipA, payload)) {
		t.Errorf("estimates not scaled by the new rate: %+v", f)
	}
	if r := rfmCLI(t, "set", "sample-rate", "0", "--socket", sock); r.exit != 1 || r.stderr != "rfm: sample rate 0: must be at least 1\n" {
		t.Errorf("rfm set sample-rate 0: %+v", r)
	}
}

// TestControlReload: `rfm reload` applies an edited file and reports it;
// an invalid file is refused with the reason and changes nothing.
func TestControlReload(t *testing.T) {
	l := newLab(t, labOptions{})
	cfg := agentConfig{interfaces: []string{l.vethA}, sampleRate: 1, evictionTimeout: "60s"}
	path := writeConfig(t, cfg.toml())
	sock := socketOf(path)
	a := startAgentAt(t, l.nsA, path)
	waitControl(t, a, sock)

	out := rfmCLI(t, "reload", "--socket", sock).ok(t, "rfm reload unchanged")
	if out != "reloaded: nothing changed\n" {
		t.Errorf("rfm reload of an unchanged file: %q", out)
	}

	cfg.evictionTimeout = "5s"
	rewriteConfig(t, path, cfg.toml())
	res := controlJSON[control.ReloadResult](t, sock, "reload")
	if len(res.Applied) != 1 || res.Applied[0] != "agent.collector.eviction_timeout" || len(res.NeedsRestart) != 0 {
		t.Errorf("reload result = %+v, want applied [agent.collector.eviction_timeout]", res)
	}
	if st := controlJSON[control.Status](t, sock, "status"); st.Flows.IdleTimeout != "5s" {
		t.Errorf("idle timeout after reload = %q, want 5s", st.Flows.IdleTimeout)
	}

	cfg.evictionTimeout, cfg.maxFlows = "7s", 500
	rewriteConfig(t, path, cfg.toml())
	out = rfmCLI(t, "reload", "--socket", sock).ok(t, "rfm reload")
	if !strings.HasPrefix(out, "reloaded: applied ") || !strings.Contains(out, "agent.collector.eviction_timeout") || !strings.Contains(out, "agent.collector.max_flows") {
		t.Errorf("rfm reload table:\n%s", out)
	}
	t.Logf("rfm reload:\n%s", out)

	rewriteConfig(t, path, "[agent]\ninterfaces = [\""+l.vethA+"\"]\n[agent.bpf]\nsample_rate = 0\n")
	r := rfmCLI(t, "reload", "--socket", sock)
	if r.exit != 1 || !strings.HasPrefix(r.stderr, "rfm: ") || !strings.Contains(r.stderr, "agent.bpf.sample_rate") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("rfm reload of an invalid file: %+v, want one line naming agent.bpf.sample_rate", r)
	}
	st := controlJSON[control.Status](t, sock, "status")
	if st.Flows.IdleTimeout != "7s" || st.Flows.Capacity != 500 || st.SampleRate != 1 {
		t.Errorf("status after a refused reload = %+v, want the last good config", st.Flows)
	}
}

// TestControlPermission: a user other than the agent's cannot use the
// 0600 socket, and is told so in one line.
func TestControlPermission(t *testing.T) {
	l := newLab(t, labOptions{})
	path := writeConfig(t, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml())
	sock := socketOf(path)
	a := startAgentAt(t, l.nsA, path)
	waitControl(t, a, sock)

	// Only the socket's own mode may stop nobody: open up the directories
	// on the way and put a copy of the binary where nobody can run it.
	for dir := filepath.Dir(sock); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	binDir := t.TempDir()
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for dir := filepath.Dir(binDir); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		os.Chmod(dir, 0o755)
	}
	bin := filepath.Join(binDir, "rfm")
	data, err := os.ReadFile(rfmBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}

	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: false, Groups: []uint32{}}
	r := rfmCLIAs(t, nobody, bin, "status", "--socket", sock)
	r.failed(t, "rfm status as nobody", "rfm: "+sock+": permission denied (the control socket is 0600, owned by the agent's user; run as that user or root)")
	// Root still gets in.
	rfmCLI(t, "status", "--socket", sock).ok(t, "rfm status as root")
}

// TestControlNoAgent: clear errors without an agent, a stale socket left
// by a killed agent is reported and then replaced by the next agent, and
// a second agent on a live socket is refused.
func TestControlNoAgent(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "rfm.sock")
	rfmCLI(t, "status", "--socket", missing).failed(t, "rfm status without agent",
		"rfm: no agent running? "+missing+": no such file (start `rfm agent` or pass --socket)")

	l := newLab(t, labOptions{})
	path := writeConfig(t, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml())
	sock := socketOf(path)
	a := startAgentAt(t, l.nsA, path)
	waitControl(t, a, sock)

	// A second agent with the same socket is refused and exits.
	secondPath := writeConfig(t, agentConfig{interfaces: []string{l.vethB}, sampleRate: 1}.toml()+
		fmt.Sprintf("\n[agent.control]\nsocket = %q\n", sock))
	second := lab.Start(t, "second agent", l.nsB, rfmBin, "agent", "-c", secondPath)
	select {
	case <-second.Done():
		if err := second.Err(); err == nil || !strings.Contains(second.Output(), "agent.control.socket "+sock+": in use by another running agent") {
			t.Errorf("second agent on a live socket: %v; output:\n%s", err, second.Output())
		}
	case <-time.After(20 * time.Second):
		second.Kill()
		t.Fatalf("second agent on a live socket still running after 20s; output:\n%s", second.Output())
	}
	rfmCLI(t, "status", "--socket", sock).ok(t, "first agent after the refused second")

	// SIGKILL leaves the socket file behind.
	a.Kill()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("socket gone after SIGKILL: %v", err)
	}
	r := rfmCLI(t, "status", "--socket", sock)
	if r.exit != 1 || !strings.HasPrefix(r.stderr, "rfm: "+sock+": connection refused: stale socket") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("rfm status on a stale socket: %+v", r)
	}

	// The next agent replaces the stale socket; SIGTERM removes it.
	b := startAgentAt(t, l.nsA, path)
	waitControl(t, b, sock)
	if err := b.stop(t, 10*time.Second); err != nil {
		t.Fatalf("agent exit: %v; output:\n%s", err, b.Output())
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after SIGTERM: %v, want removed", err)
	}
}

// bmpFixture is a BMP stream recorded from gobgpd (router "gobgpd-b")
// by the bmp package's interop test: Initiation, Peer Up, then Route
// Monitoring announcing 198.18.1.0/24 (origin 64501), 198.18.2.0/24
// (65001), 198.18.3.0/24 (path ending in an AS_SET) and 2001:db8:1::/48
// (4200000011), each in the pre-policy, post-policy and Loc-RIB views;
// then withdrawals and Peer Down, which the test does not send.
const bmpFixture = "../../internal/enrich/bmp/testdata/gobgp.bmp"

// bmpMessages splits a BMP stream (RFC 7854 common header: version,
// 4-byte length, type) into messages.
func bmpMessages(t testing.TB, stream []byte) (msgs [][]byte, types []byte) {
	t.Helper()
	for len(stream) > 0 {
		if len(stream) < 6 {
			t.Fatalf("BMP fixture: %d trailing bytes", len(stream))
		}
		n := int(binary.BigEndian.Uint32(stream[1:5]))
		if n < 6 || n > len(stream) {
			t.Fatalf("BMP fixture: message length %d with %d bytes left", n, len(stream))
		}
		msgs, types = append(msgs, stream[:n]), append(types, stream[5])
		stream = stream[n:]
	}
	return msgs, types
}

// TestControlRIB replays a recorded gobgpd BMP session into the agent and
// checks `rfm rib summary`, `rfm rib lookup` and the BMP part of `rfm
// status` against it.
func TestControlRIB(t *testing.T) {
	stream, err := os.ReadFile(bmpFixture)
	if err != nil {
		t.Skipf("BMP fixture: %v", err)
	}
	msgs, types := bmpMessages(t, stream)
	// Initiation, Peer Up and the 12 announcements: the session stays up
	// with 4 prefixes in 3 views.
	const announceMsgs = 2 + 4*3
	if len(msgs) < announceMsgs || types[0] != 4 || types[1] != 3 {
		t.Fatalf("BMP fixture: message types %v", types)
	}
	var live []byte
	for i, m := range msgs[:announceMsgs] {
		if i >= 2 && types[i] != 0 {
			t.Fatalf("BMP fixture: message %d has type %d, want Route Monitoring", i, types[i])
		}
		live = append(live, m...)
	}

	l := newLab(t, labOptions{})
	const bmpPort = 11019
	path := writeConfig(t, agentConfig{interfaces: []string{l.vethA}, sampleRate: 1}.toml()+
		fmt.Sprintf("\n[agent.enrich.rib.bmp]\nhost = \"127.0.0.1\"\nport = %d\n", bmpPort))
	sock := socketOf(path)
	a := startAgentAt(t, l.nsA, path)
	waitControl(t, a, sock)

	var conn net.Conn
	err = lab.InNetns(l.nsA, func() (err error) {
		conn, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", bmpPort), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("connecting to the BMP station: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write(live); err != nil {
		t.Fatalf("sending BMP: %v", err)
	}

	var lk control.RIBLookup
	lab.Eventually(t, 10*time.Second, "198.18.2.1 in three views", func() error {
		lk = controlJSON[control.RIBLookup](t, sock, "rib", "lookup", "198.18.2.1")
		if len(lk.Routes) != 3 {
			return fmt.Errorf("lookup: %+v", lk)
		}
		return nil
	})
	views := map[string]bool{}
	for _, r := range lk.Routes {
		views[r.View] = true
		if r.Prefix != netip.MustParsePrefix("198.18.2.0/24") || r.Origin != 65001 || r.RouterName != "gobgpd-b" || r.Router != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("route for 198.18.2.1: %+v", r)
		}
	}
	if !views["pre-policy"] || !views["post-policy"] || !views["loc-rib"] {
		t.Errorf("views of 198.18.2.1: %v", views)
	}
	if lk := controlJSON[control.RIBLookup](t, sock, "rib", "lookup", "2001:db8:1::1"); len(lk.Routes) == 0 || lk.Routes[0].Origin != 4200000011 {
		t.Errorf("lookup 2001:db8:1::1: %+v", lk)
	}
	if lk := controlJSON[control.RIBLookup](t, sock, "rib", "lookup", "198.18.1.1"); len(lk.Routes) != 3 || lk.Routes[0].Origin != 64501 {
		t.Errorf("lookup 198.18.1.1: %+v", lk)
	}
	if lk := controlJSON[control.RIBLookup](t, sock, "rib", "lookup", "198.18.4.1"); len(lk.Routes) != 0 {
		t.Errorf("lookup of an address no route covers: %+v", lk)
	}

	out := rfmCLI(t, "rib", "lookup", "198.18.3.1", "--socket", sock).ok(t, "rfm rib lookup 198.18.3.1")
	if !strings.HasPrefix(out, "198.18.3.1: 3 routes for 198.18.3.0/24\nPREFIX ") || !regexp.MustCompile(`(?m)^198\.18\.3\.0/24 +\? +`).MatchString(out) {
		t.Errorf("rfm rib lookup of a prefix with an AS_SET origin:\n%s", out)
	}
	t.Logf("rfm rib lookup 198.18.3.1:\n%s", out)

	sum := controlJSON[control.RIBSummary](t, sock, "rib", "summary")
	if !sum.Enabled || len(sum.Routers) != 1 || !sum.Routers[0].Connected || sum.Routers[0].Name != "gobgpd-b" || len(sum.Routers[0].Peers) == 0 {
		t.Fatalf("rib summary = %+v", sum)
	}
	if sum.Prefixes4 != 3 || sum.Prefixes6 != 1 || sum.Routes4 != 9 || sum.Routes6 != 3 {
		t.Errorf("rib summary counts: %d/%d IPv4 routes/prefixes, %d/%d IPv6, want 9/3 and 3/1", sum.Routes4, sum.Prefixes4, sum.Routes6, sum.Prefixes6)
	}
	out = rfmCLI(t, "rib", "summary", "--socket", sock).ok(t, "rfm rib summary")
	if !strings.HasPrefix(out, "routes   9 IPv4 (3 prefixes), 3 IPv6 (1 prefixes)\nrouters  1\n") || !regexp.MustCompile(`(?m)^127\.0\.0\.1 +gobgpd-b +connected +`).MatchString(out) {
		t.Errorf("rfm rib summary:\n%s", out)
	}
	t.Logf("rfm rib summary:\n%s", out)

	st := controlJSON[control.Status](t, sock, "status")
	if st.BMP == nil || st.BMP.Sessions != 1 || st.BMP.Routers != 1 || st.BMP.Routes4 != 9 || st.BMP.Routes6 != 3 {
		t.Errorf("status bmp = %+v", st.BMP)
	}
}
