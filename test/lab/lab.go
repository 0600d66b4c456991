// SPDX-License-Identifier: AGPL-3.0-only

// Package lab holds the plumbing shared by rfm's end-to-end tests: building
// the agent, quiet network-namespace pairs joined by a veth, running code
// inside a namespace, scraping Prometheus text and writing MMDB files.
package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"golang.org/x/sys/unix"
)

// BuildAgent builds cmd/rfm into dir and returns the binary's path.
func BuildAgent(dir string) (string, error) {
	bin := filepath.Join(dir, "rfm")
	// Static, as the README builds it; the agent drops capabilities on
	// every thread, which needs a binary without cgo.
	cmd := exec.Command("go", "build", "-o", bin, "github.com/stepbrobd/rfm/cmd/rfm")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building github.com/stepbrobd/rfm/cmd/rfm: %w\n%s", err, out)
	}
	return bin, nil
}

// Run executes a command and returns its combined output, failing the
// test with that output on error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out)
}

// InNetns runs fn on an OS thread switched into the named namespace.
// Sockets created by fn stay in that namespace after it returns. If the
// thread cannot be switched back it stays locked, so the runtime discards
// it with the goroutine instead of reusing it in the wrong namespace.
func InNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening own netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering netns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leaving netns %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// SetSysctl writes a kernel setting inside the named network namespace
// through /proc/sys, as `sysctl -w` would, without needing procps (which
// minimal systems and containers lack). key is in sysctl's dotted form.
func SetSysctl(t testing.TB, ns, key, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	// /proc/sys/net shows the network namespace of the thread that opens
	// it, so the open must happen on the switched thread.
	if err := InNetns(ns, func() error { return os.WriteFile(path, []byte(value), 0) }); err != nil {
		t.Fatalf("set %s = %s in netns %s: %v", key, value, ns, err)
	}
}

// HTTPClient returns a client whose connections are dialled inside ns,
// without keep-alives (each request gets a fresh socket in ns). A zero
// dialTimeout leaves dialling bounded only by the 5s request timeout.
func HTTPClient(ns string, dialTimeout time.Duration) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := InNetns(ns, func() error {
			var err error
			conn, err = (&net.Dialer{Timeout: dialTimeout}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// Eventually calls cond until it returns nil, failing the test with the
// last error once timeout has passed.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Sample is one line of the Prometheus text exposition format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// ParseMetrics reads the Prometheus text format, enough for rfm's exporter:
// comments skipped, label values unescaped, timestamps ignored.
func ParseMetrics(r io.Reader) ([]Sample, error) {
	var out []Sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s := Sample{Labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		if i < 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		s.Name = line[:i]
		rest := line[i:]
		if rest[0] == '{' {
			rest = rest[1:]
			for {
				rest = strings.TrimLeft(rest, ", ")
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				eq := strings.Index(rest, "=\"")
				if eq < 0 {
					return nil, fmt.Errorf("metrics line %q: bad labels", line)
				}
				key := rest[:eq]
				rest = rest[eq+2:]
				var val strings.Builder
				for len(rest) > 0 && rest[0] != '"' {
					if rest[0] == '\\' && len(rest) > 1 {
						if rest[1] == 'n' {
							val.WriteByte('\n')
						} else {
							val.WriteByte(rest[1])
						}
						rest = rest[2:]
						continue
					}
					val.WriteByte(rest[0])
					rest = rest[1:]
				}
				if len(rest) == 0 {
					return nil, fmt.Errorf("metrics line %q: unterminated label value", line)
				}
				s.Labels[key] = val.String()
				rest = rest[1:]
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: value: %w", line, err)
		}
		s.Value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

// WriteMMDB writes a database of type dbType (e.g. "GeoLite2-ASN") with
// one record per CIDR.
func WriteMMDB(path, dbType string, records map[string]mmdbtype.Map) error {
	w, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, IncludeReservedNetworks: true, RecordSize: 24})
	if err != nil {
		return fmt.Errorf("mmdb %s: %w", path, err)
	}
	for cidr, rec := range records {
		_, ipn, err := net.ParseCIDR(cidr)
		if err != nil {
			return fmt.Errorf("mmdb %s: network %q: %w", path, cidr, err)
		}
		if err := w.Insert(ipn, rec); err != nil {
			return fmt.Errorf("mmdb %s: insert %s: %w", path, cidr, err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("mmdb %s: %w", path, err)
	}
	if _, err := w.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("mmdb %s: write: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("mmdb %s: %w", path, err)
	}
	return nil
}

// RunWithAgent is the TestMain of the packages that run the agent
// binary: without root it skips the package; otherwise it builds cmd/rfm
// into a temporary directory, stores the binary's path in *bin, runs the
// tests and removes the directory. It returns the exit code for os.Exit.
func RunWithAgent(m *testing.M, pkg string, bin *string) int {
	if os.Geteuid() != 0 {
		fmt.Printf("%s: skipping: needs root (loads BPF programs, creates network namespaces)\n", pkg)
		return 0
	}
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	dir, err := os.MkdirTemp("", "rfm-"+pkg+"-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: temp dir: %v\n", pkg, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildAgent(dir); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", pkg, err)
		return 1
	}
	return m.Run()
}
