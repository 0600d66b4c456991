// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeAgent answers every command with fixed data and records what it
// was asked.
type fakeAgent struct {
	mu        sync.Mutex
	flowsArgs []FlowsArgs
	lookups   []netip.Addr
	rates     []uint32
	rate      uint32
	reloads   int
	// block, when set, makes Status wait until the request's context ends.
	block bool
}

var (
	fakeStart  = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	fakeStatus = Status{
		Version: "0.9.0", StartedAt: fakeStart, Uptime: 3725, ConfigPath: "/etc/rfm/config.toml", SampleRate: 100,
		Interfaces: []InterfaceStatus{{Name: "eth0", Index: 2, IngressPackets: 10, IngressBytes: 1000, EgressPackets: 20, EgressBytes: 2000}},
		Flows:      FlowTableStatus{Active: 3, Capacity: 65536, IdleTimeout: "30s", ForcedEvictions: 1, IdleEvictions: 2},
		Datapath:   DatapathStatus{RingBufSize: 262144, RingDrops: 5, Malformed: 6},
		IPFIX:      &IPFIXStatus{Collector: "198.18.0.2:4739", Records: 7, Messages: 2},
	}
	fakeFlows = Flows{SampleRate: 100, Active: 1, Flows: []Flow{{
		Iface: "eth0", Direction: "egress", Proto: 17,
		Src: netip.MustParseAddr("198.18.0.1"), Dst: netip.MustParseAddr("198.18.0.2"), SrcPort: 40000, DstPort: 53,
		Packets: 100, Bytes: 6400, Sampled: 1, Start: fakeStart, LastSeen: fakeStart.Add(time.Second), SrcASN: 64500,
	}}}
	fakeRIB = RIBSummary{Enabled: true, Routes4: 2, Prefixes4: 1, Routers: []RIBRouter{{
		Addr: netip.MustParseAddr("198.18.0.9"), Name: "r1", Connected: true,
		Peers: []RIBPeer{{Addr: netip.MustParseAddr("198.18.1.1"), ASN: 64500, BGPID: netip.MustParseAddr("198.18.1.1"), Routes4: 2}},
	}}}
)

func (f *fakeAgent) Status(ctx context.Context) (Status, error) {
	if f.block {
		<-ctx.Done()
		return Status{}, ctx.Err()
	}
	return fakeStatus, nil
}

func (f *fakeAgent) Flows(_ context.Context, args FlowsArgs) (Flows, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flowsArgs = append(f.flowsArgs, args)
	if args.Iface == "nope" {
		return Flows{}, fmt.Errorf("interface %q: not attached", args.Iface)
	}
	return fakeFlows, nil
}

func (f *fakeAgent) RIBSummary(context.Context) (RIBSummary, error) { return fakeRIB, nil }

func (f *fakeAgent) RIBLookup(_ context.Context, addr netip.Addr) (RIBLookup, error) {
	f.mu.Lock()
	f.lookups = append(f.lookups, addr)
	f.mu.Unlock()
	if addr == netip.MustParseAddr("2001:db8::dead") {
		panic("fake agent panic")
	}
	return RIBLookup{Addr: addr, Routes: []RIBRoute{{
		Prefix: netip.MustParsePrefix("198.18.0.0/15"), Origin: 64501, ASPath: "64500 64501",
		Router: netip.MustParseAddr("198.18.0.9"), Peer: netip.MustParseAddr("198.18.1.1"), PeerASN: 64500, View: "post-policy",
	}}}, nil
}

func (f *fakeAgent) SetSampleRate(_ context.Context, rate uint32) (SampleRateChange, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rates = append(f.rates, rate)
	prev := f.rate
	f.rate = rate
	return SampleRateChange{Previous: prev, Rate: rate}, nil
}

func (f *fakeAgent) Reload(context.Context) (ReloadResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	return ReloadResult{Applied: []string{"agent.collector.eviction_timeout"}, NeedsRestart: []string{"agent.bpf.ring_buf_size"}}, nil
}

// startServer listens in a fresh directory and serves fake until the
// test ends.
func startServer(t testing.TB, fake Agent) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rfm.sock")
	s, err := Listen(path, nil)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, fake) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		s.Close()
	})
	return s, path
}

func dial(t testing.TB, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCommands(t *testing.T) {
	fake := &fakeAgent{rate: 100}
	_, path := startServer(t, fake)
	c := dial(t, path) // one connection for every request

	st, err := c.Status()
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if !reflect.DeepEqual(st, fakeStatus) {
		t.Errorf("Status = %+v, want %+v", st, fakeStatus)
	}

	args := FlowsArgs{Top: 5, Sort: "packets", Iface: "eth0"}
	fl, err := c.Flows(args)
	if err != nil {
		t.Fatalf("Flows: %v", err)
	}
	if !reflect.DeepEqual(fl, fakeFlows) {
		t.Errorf("Flows = %+v, want %+v", fl, fakeFlows)
	}
	if len(fake.flowsArgs) != 1 || fake.flowsArgs[0] != args {
		t.Errorf("agent got flows args %+v, want [%+v]", fake.flowsArgs, args)
	}

	rs, err := c.RIBSummary()
	if err != nil {
		t.Fatalf("RIBSummary: %v", err)
	}
	if !reflect.DeepEqual(rs, fakeRIB) {
		t.Errorf("RIBSummary = %+v, want %+v", rs, fakeRIB)
	}

	addr := netip.MustParseAddr("198.18.3.4")
	rl, err := c.RIBLookup(addr)
	if err != nil {
		t.Fatalf("RIBLookup: %v", err)
	}
	if rl.Addr != addr || len(rl.Routes) != 1 || rl.Routes[0].Origin != 64501 {
		t.Errorf("RIBLookup = %+v", rl)
	}

	ch, err := c.SetSampleRate(10)
	if err != nil {
		t.Fatalf("SetSampleRate: %v", err)
	}
	if ch != (SampleRateChange{Previous: 100, Rate: 10}) {
		t.Errorf("SetSampleRate = %+v, want 100 -> 10", ch)
	}

	rr, err := c.Reload()
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if len(rr.Applied) != 1 || len(rr.NeedsRestart) != 1 || fake.reloads != 1 {
		t.Errorf("Reload = %+v after %d reloads", rr, fake.reloads)
	}

	// Raw data for --json is the agent's encoding, unchanged.
	var raw json.RawMessage
	if err := c.Do(CmdSetSampleRate, SetSampleRateArgs{Rate: 7}, &raw); err != nil {
		t.Fatalf("Do raw: %v", err)
	}
	if string(raw) != `{"previous":10,"rate":7}` {
		t.Errorf("raw data = %s", raw)
	}
}

func TestErrorAnswers(t *testing.T) {
	fake := &fakeAgent{}
	_, path := startServer(t, fake)
	c := dial(t, path)
	for _, tc := range []struct {
		name string
		do   func() error
		want string
	}{
		{"agent error", func() error { _, err := c.Flows(FlowsArgs{Iface: "nope"}); return err }, `interface "nope": not attached`},
		{"bad sort", func() error { _, err := c.Flows(FlowsArgs{Sort: "size"}); return err }, `flows: sort "size": want bytes or packets`},
		{"negative top", func() error { _, err := c.Flows(FlowsArgs{Top: -1}); return err }, `flows: top -1: must be >= 0`},
		{"rate 0", func() error { _, err := c.SetSampleRate(0); return err }, `sample rate 0: must be >= 1`},
		{"bad address", func() error { return c.Do(CmdRIBLookup, RIBLookupArgs{Addr: "300.1.1.1"}, nil) }, `rib lookup: address "300.1.1.1": not an IPv4 or IPv6 address`},
		{"bad args", func() error { return c.Do(CmdSetSampleRate, "fast", nil) }, `set.sample_rate: bad args: `},
		{"unknown command", func() error { return c.Do("launch", nil, nil) }, `unknown command "launch"`},
		{"panic", func() error { _, err := c.RIBLookup(netip.MustParseAddr("2001:db8::dead")); return err }, `rib.lookup: internal error in the agent (logged)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error = %v, want prefix %q", err, tc.want)
			}
		})
	}
	// The connection stays usable after error answers.
	if _, err := c.Status(); err != nil {
		t.Errorf("Status after errors: %v", err)
	}
	if len(fake.rates) != 0 {
		t.Errorf("agent got sample rates %v; invalid ones must be refused first", fake.rates)
	}
}

// rawConn sends lines and reads answers without the Client.
type rawConn struct {
	t *testing.T
	c *net.UnixConn
	r *bufio.Reader
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(s)); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawConn) answer() Response {
	rc.t.Helper()
	line, err := rc.r.ReadBytes('\n')
	if err != nil {
		rc.t.Fatalf("reading answer: %v (got %q)", err, line)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		rc.t.Fatalf("answer %q: %v", line, err)
	}
	if resp.V != Version {
		rc.t.Errorf("answer version %d, want %d", resp.V, Version)
	}
	return resp
}

func (rc *rawConn) expectClosed() {
	rc.t.Helper()
	if line, err := rc.r.ReadBytes('\n'); err == nil {
		rc.t.Errorf("connection still open; read %q", line)
	}
}

func TestProtocolErrors(t *testing.T) {
	_, path := startServer(t, &fakeAgent{})

	t.Run("version mismatch", func(t *testing.T) {
		rc := dialRaw(t, path)
		rc.send(`{"v":2,"cmd":"status"}` + "\n")
		resp := rc.answer()
		if resp.OK || !strings.Contains(resp.Error, "protocol version 2") || !strings.Contains(resp.Error, "version 1") {
			t.Errorf("answer = %+v, want an error naming versions 2 and 1", resp)
		}
		rc.send(`{"v":1,"cmd":"status"}` + "\n")
		if resp := rc.answer(); !resp.OK {
			t.Errorf("status after mismatch: %+v", resp)
		}
	})
	t.Run("missing version", func(t *testing.T) {
		rc := dialRaw(t, path)
		rc.send(`{"cmd":"status"}` + "\n")
		if resp := rc.answer(); resp.OK || !strings.Contains(resp.Error, "protocol version 0") {
			t.Errorf("answer = %+v", resp)
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		rc := dialRaw(t, path)
		rc.send(`{"v":1,"cmd":"status"}` + "\n" + `{"v":1,"cmd":"rib.summary"}` + "\n")
		a, b := rc.answer(), rc.answer()
		if !a.OK || !b.OK || !strings.Contains(string(a.Data), `"config_path"`) || !strings.Contains(string(b.Data), `"routers"`) {
			t.Errorf("answers out of order or failed: %+v %+v", a, b)
		}
	})
	t.Run("last line without newline", func(t *testing.T) {
		rc := dialRaw(t, path)
		rc.send(`{"v":1,"cmd":"status"}`)
		rc.c.CloseWrite()
		if resp := rc.answer(); !resp.OK {
			t.Errorf("answer = %+v", resp)
		}
		rc.expectClosed()
	})
	t.Run("malformed", func(t *testing.T) {
		rc := dialRaw(t, path)
		rc.send("status please\n")
		if resp := rc.answer(); resp.OK || !strings.HasPrefix(resp.Error, "malformed request: ") {
			t.Errorf("answer = %+v", resp)
		}
		rc.expectClosed()
	})
	t.Run("oversize line", func(t *testing.T) {
		rc := dialRaw(t, path)
		// The server stops reading at the limit, so write from a
		// goroutine: the rest may never be read.
		go rc.c.Write([]byte(`{"v":1,"cmd":"status","args":"` + strings.Repeat("x", MaxLineBytes) + "\"}\n"))
		if resp := rc.answer(); resp.OK || resp.Error != fmt.Sprintf("request line longer than %d bytes", MaxLineBytes) {
			t.Errorf("answer = %+v", resp)
		}
		rc.expectClosed()
	})
	t.Run("line at the limit", func(t *testing.T) {
		rc := dialRaw(t, path)
		prefix, suffix := `{"v":1,"cmd":"status","args":"`, "\"}\n"
		rc.send(prefix + strings.Repeat("x", MaxLineBytes-len(prefix)-len(suffix)) + suffix)
		if resp := rc.answer(); !resp.OK {
			t.Errorf("answer = %+v", resp)
		}
	})
}

func TestRequestTimeoutReachesAgent(t *testing.T) {
	// A blocked agent call gets its context cancelled when the server
	// stops, and Serve still returns.
	path := filepath.Join(t.TempDir(), "rfm.sock")
	s, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, &fakeAgent{block: true}) }()
	rc := dialRaw(t, path)
	rc.send(`{"v":1,"cmd":"status"}` + "\n")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel with a blocked agent call")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after stop: %v", err)
	}
}

func TestSocketFile(t *testing.T) {
	t.Run("mode 0600 and directory created", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run", "rfm")
		path := filepath.Join(dir, "rfm.sock")
		old := syscall.Umask(0) // the most permissive umask must not leak into the mode
		s, err := Listen(path, nil)
		syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket mode = %v, want socket 0600", fi.Mode())
		}
		di, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if di.Mode().Perm() != 0o755 {
			t.Errorf("directory mode = %v, want 0755", di.Mode().Perm())
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("directory holds %d entries, want only the socket (temporary directory left?)", len(entries))
		}
	})
	t.Run("stale socket replaced", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rfm.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close() // the file stays, nothing listens: a crashed agent's socket
		s, err := Listen(path, nil)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		defer s.Close()
		go s.Serve(context.Background(), &fakeAgent{})
		if _, err := dial(t, path).Status(); err != nil {
			t.Errorf("Status on the replacing socket: %v", err)
		}
	})
	t.Run("live socket refused", func(t *testing.T) {
		s, path := startServer(t, &fakeAgent{})
		_, err := Listen(path, nil)
		want := fmt.Sprintf("agent.control.socket %s: in use by another running agent", path)
		if err == nil || err.Error() != want {
			t.Fatalf("second Listen: %v, want %q", err, want)
		}
		// The first server still answers.
		if _, err := dial(t, s.Path()).Status(); err != nil {
			t.Errorf("first server after refused second: %v", err)
		}
	})
	t.Run("non-socket refused", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rfm.sock")
		if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Listen(path, nil)
		if err == nil || !strings.Contains(err.Error(), "exists and is not a socket") || !strings.Contains(err.Error(), path) {
			t.Fatalf("Listen over a regular file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Errorf("file content now %q", b)
		}
	})
	t.Run("empty path", func(t *testing.T) {
		if _, err := Listen("", nil); err == nil {
			t.Error("Listen(\"\") succeeded")
		}
	})
	t.Run("path too long", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), strings.Repeat("s", 120))
		_, err := Listen(path, nil)
		if err == nil || !strings.Contains(err.Error(), "Unix sockets allow at most 107") {
			t.Errorf("Listen(long path): %v", err)
		}
	})
	t.Run("long path binds directly", func(t *testing.T) {
		// Short enough for a socket, too long for the temporary name.
		dir := t.TempDir()
		if len(dir) > 90 {
			t.Skipf("temporary directory %s too long to build the case", dir)
		}
		path := filepath.Join(dir, strings.Repeat("s", 105-len(dir)))
		s, err := Listen(path, nil)
		if err != nil {
			t.Fatalf("Listen(%d-byte path): %v", len(path), err)
		}
		defer s.Close()
		if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket: %v, %v", fi, err)
		}
	})
	t.Run("close removes only its own socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rfm.sock")
		first, err := Listen(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Someone removes the socket and a second agent takes the path.
		os.Remove(path)
		second, err := Listen(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		first.Close()
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("first Close removed the second server's socket: %v", err)
		}
		second.Close()
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("second Close left its socket: %v", err)
		}
	})
}

func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	_, err := Dial(missing)
	if want := fmt.Sprintf("no agent running? %s: no such file (start `rfm agent` or pass --socket)", missing); err == nil || err.Error() != want {
		t.Errorf("Dial(missing) = %v, want %q", err, want)
	}

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(stale); err == nil || !strings.HasPrefix(err.Error(), stale+": connection refused: stale socket") {
		t.Errorf("Dial(stale) = %v", err)
	}

	if os.Geteuid() == 0 {
		t.Log("permission error not checked: root bypasses file modes (the e2e test runs the client as nobody)")
		return
	}
	s, path := startServer(t, &fakeAgent{})
	_ = s
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(path); err == nil || !strings.HasPrefix(err.Error(), path+": permission denied (the control socket is 0600") {
		t.Errorf("Dial(no permission) = %v", err)
	}
}

func TestConcurrentClients(t *testing.T) {
	fake := &fakeAgent{}
	_, path := startServer(t, fake)
	const clients, requests = MaxConns, 50
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(path)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for j := range requests {
				if _, err := c.SetSampleRate(uint32(i*requests + j + 1)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(fake.rates) != clients*requests {
		t.Errorf("agent got %d requests, want %d", len(fake.rates), clients*requests)
	}
}

func TestConnectionLimit(t *testing.T) {
	_, path := startServer(t, &fakeAgent{})
	held := make([]*Client, MaxConns)
	for i := range held {
		held[i] = dial(t, path)
		// A request proves the server has taken the connection.
		if _, err := held[i].Status(); err != nil {
			t.Fatal(err)
		}
	}
	rc := dialRaw(t, path)
	resp := rc.answer()
	if resp.OK || resp.Error != fmt.Sprintf("busy: %d control connections already open", MaxConns) {
		t.Errorf("answer over the limit = %+v", resp)
	}
	rc.expectClosed()
	// A slot frees when a client leaves.
	held[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Status()
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no free slot after a client left: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestReadLine(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int
		lines []string
		err   error // after the lines
	}{
		{"a\nbb\n", 10, []string{"a", "bb"}, nil},
		{"a\nbb", 10, []string{"a", "bb"}, nil},
		{"", 10, nil, nil},
		{"\n", 10, []string{""}, nil},
		{"abcd\n", 5, []string{"abcd"}, nil},
		{"abcde\n", 5, nil, errLineTooLong},
		{strings.Repeat("x", 9000) + "\n", 10000, []string{strings.Repeat("x", 9000)}, nil},
		{strings.Repeat("x", 9000) + "\n", 8192, nil, errLineTooLong},
	} {
		r := bufio.NewReaderSize(strings.NewReader(tc.in), 16)
		var got []string
		var err error
		for {
			var line []byte
			line, err = readLine(r, tc.limit)
			if err != nil {
				break
			}
			got = append(got, string(line))
		}
		if !reflect.DeepEqual(got, tc.lines) {
			t.Errorf("readLine(%.20q, %d) lines = %q, want %q", tc.in, tc.limit, got, tc.lines)
		}
		if tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("readLine(%.20q, %d) err = %v, want %v", tc.in, tc.limit, err, tc.err)
		}
	}
}

// BenchmarkRoundTrip is one request and answer on an open connection.
func BenchmarkRoundTrip(b *testing.B) {
	_, path := startServer(b, &fakeAgent{})
	c := dial(b, path)
	b.Run("status", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Status(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("flows", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Flows(FlowsArgs{Top: 20}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
