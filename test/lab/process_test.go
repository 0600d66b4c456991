// SPDX-License-Identifier: AGPL-3.0-only

package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These run plain shell commands in the test's own namespace (ns ""),
// so they need neither root nor iproute2.

func TestProcessExitStatusAndOutput(t *testing.T) {
	p := Start(t, "sh", "", "sh", "-c", "echo out; echo err >&2; exit 3")
	st, err := p.Wait(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode() != 3 || p.State() != st {
		t.Errorf("exit state %v, State() %v; want exit status 3 from both", st, p.State())
	}
	var exitErr *exec.ExitError
	if !errors.As(p.Err(), &exitErr) {
		t.Errorf("Err() = %v, want an *exec.ExitError", p.Err())
	}
	if got := p.Output(); !strings.Contains(got, "out\n") || !strings.Contains(got, "err\n") {
		t.Errorf("Output() = %q, want stdout and stderr", got)
	}
	if !p.Exited() {
		t.Error("Exited() false after the exit")
	}
	if _, err := p.Stop(time.Second); err == nil || !strings.Contains(err.Error(), "already exited") {
		t.Errorf("Stop after the exit: %v, want an already-exited error", err)
	}
	if err := p.Kill(); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Kill after the exit: %v, want os.ErrProcessDone", err)
	}
}

func TestProcessStopAndSignals(t *testing.T) {
	for _, tc := range []struct {
		name     string
		script   string // must print "ready" once its traps are set
		stop     func(p *Process) (*os.ProcessState, error)
		wantSig  syscall.Signal
		deadline bool // Stop's error must wrap os.ErrDeadlineExceeded
	}{
		{"SIGTERM ends it", "echo ready; exec sleep 60",
			func(p *Process) (*os.ProcessState, error) { return p.Stop(10 * time.Second) }, syscall.SIGTERM, false},
		{"SIGTERM ignored, killed after the timeout", `trap "" TERM; echo ready; exec sleep 60`,
			func(p *Process) (*os.ProcessState, error) { return p.Stop(200 * time.Millisecond) }, syscall.SIGKILL, true},
		{"Kill", "echo ready; exec sleep 60",
			func(p *Process) (*os.ProcessState, error) { return nil, p.Kill() }, syscall.SIGKILL, false},
		{"Signal then Wait", "echo ready; exec sleep 60",
			func(p *Process) (*os.ProcessState, error) {
				if err := p.Signal(syscall.SIGINT); err != nil {
					return nil, err
				}
				return p.Wait(10 * time.Second)
			}, syscall.SIGINT, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Start(t, "sh", "", "sh", "-c", tc.script)
			Eventually(t, 10*time.Second, "ready", func() error {
				if !strings.Contains(p.Output(), "ready") {
					return errors.New("not yet")
				}
				return nil
			})
			if p.Exited() || p.State() != nil || p.Err() != nil {
				t.Fatalf("running process: Exited %v, State %v, Err %v", p.Exited(), p.State(), p.Err())
			}
			if _, err := p.Wait(10 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Wait on a running process: %v, want os.ErrDeadlineExceeded", err)
			}
			if p.Pid() <= 0 {
				t.Errorf("Pid() = %d", p.Pid())
			}
			_, err := tc.stop(p)
			if got := errors.Is(err, os.ErrDeadlineExceeded); got != tc.deadline || (!tc.deadline && err != nil) {
				t.Errorf("stopping: %v, want deadline error %v", err, tc.deadline)
			}
			st := p.State()
			if st == nil {
				t.Fatal("no exit state after stopping")
			}
			if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != tc.wantSig {
				t.Errorf("exit state %v, want killed by %v", st, tc.wantSig)
			}
		})
	}
}

// TestProcessCleanup checks that the end of a test stops what it
// started, including a process that ignores SIGTERM.
func TestProcessCleanup(t *testing.T) {
	defer func(d time.Duration) { cleanupTimeout = d }(cleanupTimeout)
	cleanupTimeout = 200 * time.Millisecond
	var plain, stubborn *Process
	t.Run("start", func(t *testing.T) {
		plain = Start(t, "sleep", "", "sleep", "60")
		stubborn = Start(t, "sh", "", "sh", "-c", `trap "" TERM; echo ready; exec sleep 60`)
		Eventually(t, 10*time.Second, "ready", func() error {
			if !strings.Contains(stubborn.Output(), "ready") {
				return errors.New("not yet")
			}
			return nil
		})
	})
	for _, p := range []*Process{plain, stubborn} {
		if !p.Exited() {
			t.Errorf("%s (pid %d) still running after its test ended", p.Name(), p.Pid())
		}
	}
}

// TestSetSysctl checks that SetSysctl changes the setting in the named
// namespace only, read back through `ip netns exec` (which remounts
// /proc/sys for that namespace) and from this process's own namespace.
func TestSetSysctl(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	const key, file = "net.ipv6.conf.default.accept_ra", "/proc/sys/net/ipv6/conf/default/accept_ra"
	ns := fmt.Sprintf("rfm-sysctl-%d", os.Getpid())
	Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	host, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, value := range []string{"0", "2"} {
		SetSysctl(t, ns, key, value)
		if got := strings.TrimSpace(Run(t, "ip", "netns", "exec", ns, "cat", file)); got != value {
			t.Errorf("%s in %s = %q after SetSysctl(%s), want %s", key, ns, got, value, value)
		}
		if now, _ := os.ReadFile(file); string(now) != string(host) {
			t.Errorf("%s in the test's own namespace changed from %q to %q", key, host, now)
		}
	}
}
