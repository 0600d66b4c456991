// SPDX-License-Identifier: AGPL-3.0-only

package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// cleanupTimeout bounds how long the end-of-test cleanup waits for a
// process to exit after SIGTERM before it sends SIGKILL (a variable so
// this package's own test need not wait that long).
var cleanupTimeout = 10 * time.Second

// Process is a child process of a test (the agent, a router, a
// collector), optionally inside a network namespace. Its stdout and
// stderr are collected together; it is stopped when the test ends.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{}
	err  error // Wait's error, set before done closes
}

// Start runs argv in namespace ns ("" for the test's own namespace) and
// fails the test if it cannot start. In a namespace it runs through
// `ip netns exec`, which execs the command, so Pid is the command's own.
// name labels the process in messages. When the test ends the process
// gets SIGTERM, then SIGKILL if still running after 10s, and its output
// is logged if the test failed.
func Start(t testing.TB, name, ns string, argv ...string) *Process {
	t.Helper()
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	p := &Process{name: name, out: &Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// A grandchild still holding the output pipe must not keep Wait
	// (and so Done) from reporting the exit.
	p.cmd.WaitDelay = time.Second
	// Should the test binary die (e.g. -timeout), the child goes with it
	// instead of holding ports and interfaces for the next run.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.Exited() {
			if _, err := p.Stop(cleanupTimeout); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Logf("cleanup: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// Name is the label given to Start.
func (p *Process) Name() string { return p.name }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is Wait's result once Done is closed: nil for exit status 0, an
// *exec.ExitError otherwise. Before the exit it is nil.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// State is the exit state once Done is closed, nil before.
func (p *Process) State() *os.ProcessState {
	if !p.Exited() {
		return nil
	}
	return p.cmd.ProcessState
}

// Output is everything the process has written so far.
func (p *Process) Output() string { return p.out.String() }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %v to %s (pid %d): %w", sig, p.name, p.Pid(), err)
	}
	return nil
}

// Wait waits up to timeout for the exit and returns its state. The
// error wraps os.ErrDeadlineExceeded if the process is still running.
func (p *Process) Wait(timeout time.Duration) (*os.ProcessState, error) {
	select {
	case <-p.done:
		return p.cmd.ProcessState, nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("%s (pid %d) still running after %s: %w", p.name, p.Pid(), timeout, os.ErrDeadlineExceeded)
	}
}

// Kill sends SIGKILL and waits for the exit. It returns the signal's
// error, e.g. when the process had already been reaped.
func (p *Process) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			<-p.done
		}
		return err
	}
	<-p.done
	return nil
}

// Stop sends SIGTERM and waits up to timeout for the exit, then kills
// the process. It returns the exit state and an error if the process
// had already exited, could not be signalled, or outlived timeout (that
// error wraps os.ErrDeadlineExceeded; the process was then killed).
func (p *Process) Stop(timeout time.Duration) (*os.ProcessState, error) {
	if p.Exited() {
		return p.cmd.ProcessState, fmt.Errorf("%s had already exited: %v", p.name, p.err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return nil, err
	}
	st, err := p.Wait(timeout)
	if err != nil {
		_ = p.cmd.Process.Kill()
		<-p.done
		return p.cmd.ProcessState, fmt.Errorf("SIGTERM ignored, killed: %w", err)
	}
	return st, nil
}
