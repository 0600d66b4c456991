// SPDX-License-Identifier: AGPL-3.0-only

package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
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
	// failReload, when set, makes Reload fail with fakeReloadError.
	failReload bool
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
		return Flows{}, BadParam("iface", args.Iface, fmt.Sprintf("interface %q: not attached", args.Iface))
	}
	return fakeFlows, nil
}

func (f *fakeAgent) RIBSummary(context.Context) (RIBSummary, error) { return fakeRIB, nil }

// fakeReloadError is what the fake answers to a reload when failReload
// is set: a refused config file.
var fakeReloadError = errors.New("/etc/rfm/rfm.toml: agent.bpf.sample_rate: 0: must be at least 1")

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
	if f.failReload {
		return ReloadResult{}, fakeReloadError
	}
	return ReloadResult{Applied: []string{"agent.collector.eviction_timeout"}, NeedsRestart: []string{"agent.bpf.ring_buf_size"}}, nil
}

// startServer listens in a fresh directory and serves fake until the
// test ends.
func startServer(t testing.TB, fake Agent) (*Server, string) {
	t.Helper()
	return startServerWith(t, fake, defaultTimeouts)
}

// startServerWith is startServer with other timeouts.
func startServerWith(t testing.TB, fake Agent, to timeouts) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rfm.sock")
	s, err := Listen(path, nil)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	s.timeouts = to
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

func client(t testing.TB, path string) *Client {
	t.Helper()
	c := NewClient(path)
	t.Cleanup(func() { c.Close() })
	return c
}

// httpClient is a plain net/http client of the socket, independent of
// Client, for checking the server's HTTP answers.
func httpClient(t testing.TB, path string) *http.Client {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

var bg = context.Background()

func TestCalls(t *testing.T) {
	fake := &fakeAgent{rate: 100}
	_, path := startServer(t, fake)
	c := client(t, path)

	st, err := c.Status(bg)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if !reflect.DeepEqual(st, fakeStatus) {
		t.Errorf("Status = %+v, want %+v", st, fakeStatus)
	}

	args := FlowsArgs{Top: 5, Sort: "packets", Iface: "eth0"}
	fl, err := c.Flows(bg, args)
	if err != nil {
		t.Fatalf("Flows: %v", err)
	}
	if !reflect.DeepEqual(fl, fakeFlows) {
		t.Errorf("Flows = %+v, want %+v", fl, fakeFlows)
	}
	if _, err := c.Flows(bg, FlowsArgs{}); err != nil {
		t.Fatalf("Flows without arguments: %v", err)
	}
	if want := []FlowsArgs{args, {}}; !reflect.DeepEqual(fake.flowsArgs, want) {
		t.Errorf("agent got flows args %+v, want %+v", fake.flowsArgs, want)
	}

	rs, err := c.RIBSummary(bg)
	if err != nil {
		t.Fatalf("RIBSummary: %v", err)
	}
	if !reflect.DeepEqual(rs, fakeRIB) {
		t.Errorf("RIBSummary = %+v, want %+v", rs, fakeRIB)
	}

	addr := netip.MustParseAddr("198.18.3.4")
	rl, err := c.RIBLookup(bg, addr)
	if err != nil {
		t.Fatalf("RIBLookup: %v", err)
	}
	if rl.Addr != addr || len(rl.Routes) != 1 || rl.Routes[0].Origin != 64501 {
		t.Errorf("RIBLookup = %+v", rl)
	}

	ch, err := c.SetSampleRate(bg, 10)
	if err != nil {
		t.Fatalf("SetSampleRate: %v", err)
	}
	if ch != (SampleRateChange{Previous: 100, Rate: 10}) {
		t.Errorf("SetSampleRate = %+v, want 100 -> 10", ch)
	}

	rr, err := c.Reload(bg)
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if len(rr.Applied) != 1 || len(rr.NeedsRestart) != 1 || fake.reloads != 1 {
		t.Errorf("Reload = %+v after %d reloads", rr, fake.reloads)
	}

	// Raw data for --json is the agent's encoding, unchanged.
	var raw json.RawMessage
	if err := c.Do(bg, SetSampleRateCall(7), &raw); err != nil {
		t.Fatalf("Do raw: %v", err)
	}
	if string(raw) != `{"previous":10,"rate":7}` {
		t.Errorf("raw data = %q", raw)
	}
}

// TestClientErrors: error answers reach the caller as *Error with the
// agent's message and status, and the client stays usable.
func TestClientErrors(t *testing.T) {
	fake := &fakeAgent{failReload: true}
	_, path := startServer(t, fake)
	c := client(t, path)
	for _, tc := range []struct {
		name   string
		do     func() error
		status int
		want   string
	}{
		{"agent bad param", func() error { _, err := c.Flows(bg, FlowsArgs{Iface: "nope"}); return err }, 400, `interface "nope": not attached`},
		{"bad sort", func() error { _, err := c.Flows(bg, FlowsArgs{Sort: "size"}); return err }, 400, `flows: sort "size": want bytes or packets`},
		{"negative top", func() error { _, err := c.Flows(bg, FlowsArgs{Top: -1}); return err }, 400, `flows: top "-1": want a whole number, 0 for every flow`},
		{"rate 0", func() error { _, err := c.SetSampleRate(bg, 0); return err }, 400, `sample-rate: rate 0: want a whole number from 1 to 4294967295`},
		{"reload refused", func() error { _, err := c.Reload(bg); return err }, 500, fakeReloadError.Error()},
		{"panic", func() error { _, err := c.RIBLookup(bg, netip.MustParseAddr("2001:db8::dead")); return err }, 500, `rib lookup: internal error in the agent (logged)`},
		{"unknown path", func() error { return c.Do(bg, Call{Method: "GET", Path: "/v1/launch"}, nil) }, 404, `no such path "/v1/launch"; this agent serves /v1/status, /v1/flows, /v1/rib/summary, /v1/rib/lookup, /v1/sample-rate, /v1/reload, /v1/blocklist, /v1/blocklist/add, /v1/blocklist/del`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			var e *Error
			if !errors.As(err, &e) || e.Status != tc.status || err.Error() != tc.want {
				t.Errorf("error = %#v, want status %d and %q", err, tc.status, tc.want)
			}
		})
	}
	if _, err := c.Status(bg); err != nil {
		t.Errorf("Status after errors: %v", err)
	}
	if len(fake.rates) != 0 {
		t.Errorf("agent got sample rates %v; invalid ones must be refused first", fake.rates)
	}
}

// errorBody is an error answer's JSON, decoded strictly.
type errorBody struct {
	Error     string  `json:"error"`
	Parameter string  `json:"parameter"`
	Value     *string `json:"value"`
}

// checkAnswer checks what every answer has: JSON, one line, and for an
// error one message line; it returns the body.
func checkAnswer(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if strings.Count(string(body), "\n") != 1 || !strings.HasSuffix(string(body), "\n") || !json.Valid(body) {
		t.Errorf("body is not one line of JSON: %q", body)
	}
	return body
}

func decodeError(t *testing.T, body []byte) errorBody {
	t.Helper()
	var e errorBody
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e
}

func ptr(s string) *string { return &s }

// TestStatusCodes sends requests as any HTTP client would and checks
// the status, the error message and the parameter and value it names.
func TestStatusCodes(t *testing.T) {
	fake := &fakeAgent{rate: 100}
	_, path := startServer(t, fake)
	hc := httpClient(t, path)
	const served = "this agent serves /v1/status, /v1/flows, /v1/rib/summary, /v1/rib/lookup, /v1/sample-rate, /v1/reload, /v1/blocklist, /v1/blocklist/add, /v1/blocklist/del"
	for _, tc := range []struct {
		method, target, body string
		status               int
		err                  string  // the error message; "" for 200
		param                string  // parameter named by a 400
		value                *string // and its value
		allow                string  // Allow of a 405
	}{
		{method: "GET", target: "/v1/status", status: 200},
		{method: "GET", target: "/v1/flows?top=3&sort=packets&iface=eth0", status: 200},
		{method: "GET", target: "/v1/flows?iface=", status: 200},
		{method: "GET", target: "/v1/rib/summary", status: 200},
		{method: "GET", target: "/v1/rib/lookup?addr=198.18.3.4", status: 200},
		{method: "GET", target: "/v1/rib/lookup?addr=2001%3Adb8%3A%3A1", status: 200},
		{method: "PUT", target: "/v1/sample-rate", body: `{"rate":10}`, status: 200},
		{method: "PUT", target: "/v1/sample-rate", body: " {\"rate\": 4294967295}\n", status: 200},
		{method: "POST", target: "/v1/reload", status: 200},

		{method: "GET", target: "/v1/flows?top=-1", status: 400, err: `flows: top "-1": want a whole number, 0 for every flow`, param: "top", value: ptr("-1")},
		{method: "GET", target: "/v1/flows?top=ten", status: 400, err: `flows: top "ten": want a whole number, 0 for every flow`, param: "top", value: ptr("ten")},
		{method: "GET", target: "/v1/flows?top=", status: 400, err: `flows: top "": want a whole number, 0 for every flow`, param: "top", value: ptr("")},
		{method: "GET", target: "/v1/flows?sort=size", status: 400, err: `flows: sort "size": want bytes or packets`, param: "sort", value: ptr("size")},
		{method: "GET", target: "/v1/flows?tpo=5", status: 400, err: `flows: unknown parameter "tpo" (want top, sort, iface)`, param: "tpo", value: ptr("5")},
		{method: "GET", target: "/v1/flows?top=1&top=2", status: 400, err: `flows: parameter top given 2 times`, param: "top", value: ptr("2")},
		{method: "GET", target: "/v1/flows?top=%zz", status: 400, err: `flows: query "top=%zz": invalid URL escape "%zz"`, param: "query", value: ptr("top=%zz")},
		{method: "GET", target: "/v1/flows?=5", status: 400, err: `flows: query "=5": a parameter without a name`, param: "query", value: ptr("=5")},
		{method: "PUT", target: "/v1/sample-rate", body: `{"":1}`, status: 400, err: `sample-rate: a field without a name (the body has one field, rate)`, param: "body", value: ptr(`{"":1}`)},
		{method: "GET", target: "/v1/flows?iface=nope", status: 400, err: `interface "nope": not attached`, param: "iface", value: ptr("nope")},
		{method: "GET", target: "/v1/status?verbose=1", status: 400, err: `status: unknown parameter "verbose" (it takes none)`, param: "verbose", value: ptr("1")},
		{method: "GET", target: "/v1/rib/lookup", status: 400, err: `rib lookup: parameter addr missing (want ?addr=ADDRESS)`, param: "addr", value: ptr("")},
		{method: "GET", target: "/v1/rib/lookup?addr=198.18.0.300", status: 400, err: `rib lookup: address "198.18.0.300": not an IPv4 or IPv6 address`, param: "addr", value: ptr("198.18.0.300")},
		{method: "PUT", target: "/v1/sample-rate", body: `{"rate":0}`, status: 400, err: `sample-rate: rate 0: want a whole number from 1 to 4294967295`, param: "rate", value: ptr("0")},
		{method: "PUT", target: "/v1/sample-rate", body: `{"rate":4294967296}`, status: 400, err: `sample-rate: rate 4294967296: want a whole number from 1 to 4294967295`, param: "rate", value: ptr("4294967296")},
		{method: "PUT", target: "/v1/sample-rate", body: `{"rate":-5}`, status: 400, err: `sample-rate: rate -5: want a whole number from 1 to 4294967295`, param: "rate", value: ptr("-5")},
		{method: "PUT", target: "/v1/sample-rate", body: `{"rate":"10"}`, status: 400, err: `sample-rate: rate "10": want a whole number from 1 to 4294967295`, param: "rate", value: ptr(`"10"`)},
		{method: "PUT", target: "/v1/sample-rate", body: `{"rate":1e1}`, status: 400, err: `sample-rate: rate 1e1: want a whole number from 1 to 4294967295`, param: "rate", value: ptr("1e1")},
		{method: "PUT", target: "/v1/sample-rate", body: `{"rate":10,"burst":2}`, status: 400, err: `sample-rate: unknown field "burst" (the body has one field, rate)`, param: "burst", value: ptr("2")},
		{method: "PUT", target: "/v1/sample-rate", body: `{}`, status: 400, err: `sample-rate: rate missing (want {"rate": N})`, param: "rate", value: ptr("")},
		{method: "PUT", target: "/v1/sample-rate", body: `rate=10`, status: 400, err: `sample-rate: body "rate=10": want a JSON object such as {"rate": 10}`, param: "body", value: ptr("rate=10")},
		{method: "PUT", target: "/v1/sample-rate", status: 400, err: `sample-rate: body "": want a JSON object such as {"rate": 10}`, param: "body", value: ptr("")},
		{method: "PUT", target: "/v1/sample-rate", body: `{"rate":10} {"rate":20}`, status: 400, err: `sample-rate: body "{\"rate\":10} {\"rate\":20}": want a JSON object such as {"rate": 10}`, param: "body", value: ptr(`{"rate":10} {"rate":20}`)},
		{method: "POST", target: "/v1/reload", body: "now", status: 400, err: `reload: takes no body; got 3 bytes`, param: "body", value: ptr("now")},

		{method: "GET", target: "/v1/nope", status: 404, err: `no such path "/v1/nope"; ` + served},
		{method: "GET", target: "/", status: 404, err: `no such path "/"; ` + served},
		{method: "GET", target: "/v1/status/", status: 404, err: `no such path "/v1/status/"; ` + served},
		{method: "GET", target: "/status", status: 404, err: `no such path "/status"; ` + served},
		{method: "GET", target: "/v2/status", status: 404, err: `API version v2 not served: this agent serves v1 (use the rfm binary matching the agent)`},
		{method: "GET", target: "/v10/status", status: 404, err: `API version v10 not served: this agent serves v1 (use the rfm binary matching the agent)`},

		{method: "POST", target: "/v1/status", status: 405, err: `status: method POST not allowed; use GET /v1/status`, allow: "GET"},
		{method: "DELETE", target: "/v1/flows", status: 405, err: `flows: method DELETE not allowed; use GET /v1/flows`, allow: "GET"},
		{method: "GET", target: "/v1/sample-rate", status: 405, err: `sample-rate: method GET not allowed; use PUT /v1/sample-rate`, allow: "PUT"},
		{method: "POST", target: "/v1/sample-rate", body: `{"rate":10}`, status: 405, err: `sample-rate: method POST not allowed; use PUT /v1/sample-rate`, allow: "PUT"},
		{method: "GET", target: "/v1/reload", status: 405, err: `reload: method GET not allowed; use POST /v1/reload`, allow: "POST"},

		{method: "PUT", target: "/v1/sample-rate", body: `{"rate":10}` + strings.Repeat(" ", MaxBodyBytes), status: 413, err: fmt.Sprintf("sample-rate: body longer than %d bytes", MaxBodyBytes)},
		{method: "GET", target: "/v1/rib/lookup?addr=2001:db8::dead", status: 500, err: `rib lookup: internal error in the agent (logged)`},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "http://rfm"+tc.target, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := checkAnswer(t, resp)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if allow := resp.Header.Get("Allow"); allow != tc.allow {
				t.Errorf("Allow %q, want %q", allow, tc.allow)
			}
			if tc.status == 200 {
				return
			}
			e := decodeError(t, body)
			if e.Error != tc.err || e.Parameter != tc.param || !reflect.DeepEqual(e.Value, tc.value) {
				t.Errorf("error answer %s\nwant error %q, parameter %q, value %v", body, tc.err, tc.param, deref(tc.value))
			}
		})
	}
	// Only the valid rates reached the agent, in order.
	if want := []uint32{10, 4294967295}; !reflect.DeepEqual(fake.rates, want) {
		t.Errorf("agent got rates %v, want %v", fake.rates, want)
	}
	if fake.reloads != 1 {
		t.Errorf("agent reloaded %d times, want 1", fake.reloads)
	}
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// TestZoneDropped: a lookup of an address with a zone looks up the
// address alone (routes have no zone).
func TestZoneDropped(t *testing.T) {
	fake := &fakeAgent{}
	_, path := startServer(t, fake)
	resp, err := httpClient(t, path).Get("http://rfm/v1/rib/lookup?addr=fe80::1%25eth0")
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, resp)
	if resp.StatusCode != 200 || len(fake.lookups) != 1 || fake.lookups[0] != netip.MustParseAddr("fe80::1") {
		t.Errorf("status %d, agent looked up %v, want [fe80::1]", resp.StatusCode, fake.lookups)
	}
}

// rawConn speaks HTTP on a connection without net/http's client.
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

// answer reads one response and its body.
func (rc *rawConn) answer() (*http.Response, string) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		rc.t.Fatalf("reading an answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading an answer's body: %v", err)
	}
	return resp, string(body)
}

// expectClosed waits (up to the connection's deadline) for the server
// to close the connection.
func (rc *rawConn) expectClosed() {
	rc.t.Helper()
	b, err := rc.r.ReadByte()
	if err == nil {
		rc.t.Errorf("connection still open; read %q", b)
		return
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		rc.t.Errorf("connection not closed by the server: %v", err)
	}
}

const getStatus = "GET /v1/status HTTP/1.1\r\nHost: rfm\r\n\r\n"

func TestKeepAliveAndPipelining(t *testing.T) {
	_, path := startServer(t, &fakeAgent{})
	rc := dialRaw(t, path)
	rc.send(getStatus + "GET /v1/rib/summary HTTP/1.1\r\nHost: rfm\r\n\r\n")
	a, abody := rc.answer()
	b, bbody := rc.answer()
	if a.StatusCode != 200 || b.StatusCode != 200 || !strings.Contains(abody, `"config_path"`) || !strings.Contains(bbody, `"routers"`) {
		t.Errorf("answers out of order or failed: %d %s / %d %s", a.StatusCode, abody, b.StatusCode, bbody)
	}
	// An error answer keeps the connection.
	rc.send("GET /v1/nope HTTP/1.1\r\nHost: rfm\r\n\r\n" + getStatus)
	if resp, _ := rc.answer(); resp.StatusCode != 404 {
		t.Errorf("status %d, want 404", resp.StatusCode)
	}
	if resp, _ := rc.answer(); resp.StatusCode != 200 {
		t.Errorf("status after a 404: %d", resp.StatusCode)
	}
	// Connection: close is honoured.
	rc.send("GET /v1/status HTTP/1.1\r\nHost: rfm\r\nConnection: close\r\n\r\n")
	if resp, _ := rc.answer(); resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
	rc.expectClosed()
}

// TestHeaderLimit: a request line and header beyond MaxHeaderBytes (plus
// the 4 KiB net/http reads beyond it) are refused with 431; a header
// under the limit is served.
func TestHeaderLimit(t *testing.T) {
	_, path := startServer(t, &fakeAgent{})
	hc := httpClient(t, path)
	for _, tc := range []struct {
		size   int
		status int
	}{
		{MaxHeaderBytes / 2, 200},
		{MaxHeaderBytes + 8<<10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		req, _ := http.NewRequest("GET", "http://rfm/v1/status", nil)
		req.Header.Set("X-Padding", strings.Repeat("p", tc.size))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%d-byte header: %v", tc.size, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%d-byte header: status %d, want %d", tc.size, resp.StatusCode, tc.status)
		}
	}
	// A query as long is refused the same way.
	resp, err := hc.Get("http://rfm/v1/rib/lookup?addr=" + strings.Repeat("1", MaxHeaderBytes+8<<10))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("long query: status %d, want 431", resp.StatusCode)
	}
}

// TestBodyLimit: a body of MaxBodyBytes is read; one byte more is 413,
// whether the length is announced or chunked.
func TestBodyLimit(t *testing.T) {
	fake := &fakeAgent{}
	_, path := startServer(t, fake)
	hc := httpClient(t, path)
	atLimit := `{"rate":3}` + strings.Repeat(" ", MaxBodyBytes-len(`{"rate":3}`))
	for _, tc := range []struct {
		name    string
		body    string
		chunked bool
		status  int
	}{
		{"at the limit", atLimit, false, 200},
		{"over", atLimit + " ", false, 413},
		{"at the limit chunked", atLimit, true, 200},
		{"over chunked", atLimit + " ", true, 413},
	} {
		req, _ := http.NewRequest("PUT", "http://rfm/v1/sample-rate", strings.NewReader(tc.body))
		if tc.chunked {
			req.ContentLength, req.TransferEncoding = -1, []string{"chunked"}
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := checkAnswer(t, resp)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, resp.StatusCode, tc.status, got)
		}
	}
	if want := []uint32{3, 3}; !reflect.DeepEqual(fake.rates, want) {
		t.Errorf("agent got rates %v, want %v", fake.rates, want)
	}
}

// TestSlowClientsReleaseSlots: clients that never finish their request
// header are dropped after the header timeout, so they cannot hold the
// connection slots.
func TestSlowClientsReleaseSlots(t *testing.T) {
	to := defaultTimeouts
	to.readHeader, to.read = 200*time.Millisecond, 200*time.Millisecond
	_, path := startServerWith(t, &fakeAgent{}, to)
	slow := make([]*rawConn, MaxConns)
	for i := range slow {
		slow[i] = dialRaw(t, path)
		slow[i].send("GET /v1/status HTTP/1.1\r\nHost: rf")
	}
	for _, rc := range slow {
		rc.expectClosed()
	}
	c := client(t, path)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Status(bg)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot free after the slow clients were dropped: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdleTimeout: a kept-alive connection is closed after the idle
// timeout, and the Client dials again on its next call.
func TestIdleTimeout(t *testing.T) {
	to := defaultTimeouts
	to.idle = 200 * time.Millisecond
	_, path := startServerWith(t, &fakeAgent{}, to)
	rc := dialRaw(t, path)
	rc.send(getStatus)
	if resp, _ := rc.answer(); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rc.expectClosed()

	c := client(t, path)
	for i := range 2 {
		if _, err := c.Status(bg); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		// Wait for the server to have dropped the idle connection: a
		// fresh raw connection gets closed the same way.
		probe := dialRaw(t, path)
		probe.send(getStatus)
		probe.answer()
		probe.expectClosed()
	}
}

// TestAgentTimeout: an Agent call that outlasts the request timeout is
// answered 503, and its context is cancelled.
func TestAgentTimeout(t *testing.T) {
	to := defaultTimeouts
	to.request = 100 * time.Millisecond
	_, path := startServerWith(t, &fakeAgent{block: true}, to)
	_, err := client(t, path).Status(bg)
	var e *Error
	if !errors.As(err, &e) || e.Status != 503 || e.Message != "status: no answer from the agent within 100ms" {
		t.Errorf("blocked agent: %#v", err)
	}
}

func TestServeStopsWithBlockedAgent(t *testing.T) {
	// A blocked agent call gets its context cancelled when the server
	// stops, and Serve still returns.
	path := filepath.Join(t.TempDir(), "rfm.sock")
	s, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeAgent{block: true}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, fake) }()
	rc := dialRaw(t, path)
	rc.send(getStatus)
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
	// The request gets 503 if its answer beats the closing of the
	// connection; either way the connection ends.
	if resp, err := http.ReadResponse(rc.r, nil); err == nil {
		if resp.StatusCode != 503 {
			t.Errorf("answer while stopping: %d, want 503", resp.StatusCode)
		}
		io.Copy(io.Discard, resp.Body)
	}
	rc.expectClosed()
}

// TestCloseBeforeServe: Close before Serve leaves nothing behind, and
// Serve then returns at once.
func TestCloseBeforeServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rfm.sock")
	s, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Serve(context.Background(), &fakeAgent{}); err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: %v", err)
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
		if _, err := client(t, path).Status(bg); err != nil {
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
		if _, err := client(t, s.Path()).Status(bg); err != nil {
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
	_, err := NewClient(missing).Status(bg)
	if want := fmt.Sprintf("no agent running? %s: no such file (start `rfm agent` or pass --socket)", missing); err == nil || err.Error() != want {
		t.Errorf("Status(missing) = %v, want %q", err, want)
	}

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := NewClient(stale).Status(bg); err == nil || !strings.HasPrefix(err.Error(), stale+": connection refused: stale socket") {
		t.Errorf("Status(stale) = %v", err)
	}

	if os.Geteuid() == 0 {
		t.Log("permission error not checked: root bypasses file modes (the e2e test runs the client as nobody)")
		return
	}
	_, path := startServer(t, &fakeAgent{})
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(path).Status(bg); err == nil || !strings.HasPrefix(err.Error(), path+": permission denied (the control socket is 0600") {
		t.Errorf("Status(no permission) = %v", err)
	}
}

// TestOldAgent: an agent from before the HTTP API answered each request
// line with a JSON line and closed on garbage; the client says so in
// one line rather than quoting the bytes.
func TestOldAgent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rfm.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, `{"v":1,"ok":false,"error":"malformed request: invalid character 'G' looking for beginning of value"}`+"\n")
			c.Close()
		}
	}()
	_, err = NewClient(path).Status(bg)
	want := "GET /v1/status: the agent on " + path + " does not answer in HTTP: an older agent? (use the rfm binary matching it)"
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
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
			c := NewClient(path)
			defer c.Close()
			for j := range requests {
				if _, err := c.SetSampleRate(bg, uint32(i*requests+j+1)); err != nil {
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
	held := make([]*rawConn, MaxConns)
	for i := range held {
		held[i] = dialRaw(t, path)
		// An answer proves the server has taken the connection; it
		// stays open (keep-alive).
		held[i].send(getStatus)
		if resp, _ := held[i].answer(); resp.StatusCode != 200 {
			t.Fatalf("connection %d: status %d", i, resp.StatusCode)
		}
	}
	_, err := NewClient(path).Status(bg)
	var e *Error
	if !errors.As(err, &e) || e.Status != 503 || e.Message != fmt.Sprintf("busy: %d control connections already open", MaxConns) {
		t.Errorf("call over the limit: %#v", err)
	}
	rc := dialRaw(t, path)
	rc.send(getStatus)
	if resp, body := rc.answer(); resp.StatusCode != 503 || resp.Header.Get("Content-Type") != "application/json" || !json.Valid([]byte(body)) {
		t.Errorf("raw request over the limit: %d %q", resp.StatusCode, body)
	}
	rc.expectClosed()
	// A slot frees when a client leaves.
	held[0].c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := NewClient(path).Status(bg)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no free slot after a client left: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCurl: the API as curl speaks it, the way docs/api.md shows.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed (scripts/test.sh installs it)")
	}
	fake := &fakeAgent{rate: 100}
	_, path := startServer(t, fake)
	run := func(args ...string) (body string, status string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bg, 30*time.Second)
		defer cancel()
		args = append([]string{"-sS", "--max-time", "20", "--unix-socket", path, "-w", "\n%{http_code}"}, args...)
		out, err := exec.CommandContext(ctx, curl, args...).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", strings.Join(args, " "), err)
		}
		i := strings.LastIndexByte(string(out), '\n')
		return string(out[:i]), string(out[i+1:])
	}

	body, status := run("http://rfm/v1/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || status != "200" || !reflect.DeepEqual(st, fakeStatus) {
		t.Errorf("curl status: %s %q (%v)", status, body, err)
	}
	body, status = run("http://rfm/v1/flows?top=5&sort=packets&iface=eth0")
	if status != "200" || len(fake.flowsArgs) != 1 || fake.flowsArgs[0] != (FlowsArgs{Top: 5, Sort: "packets", Iface: "eth0"}) {
		t.Errorf("curl flows: %s %q, agent got %+v", status, body, fake.flowsArgs)
	}
	body, status = run("-X", "PUT", "-d", `{"rate": 10}`, "http://rfm/v1/sample-rate")
	if status != "200" || body != `{"previous":100,"rate":10}`+"\n" {
		t.Errorf("curl sample-rate: %s %q", status, body)
	}
	body, status = run("-X", "POST", "http://rfm/v1/reload")
	if status != "200" || fake.reloads != 1 {
		t.Errorf("curl reload: %s %q", status, body)
	}
	body, status = run("http://rfm/v1/flows?sort=size")
	if status != "400" || body != `{"error":"flows: sort \"size\": want bytes or packets","parameter":"sort","value":"size"}`+"\n" {
		t.Errorf("curl bad sort: %s %q", status, body)
	}
	body, status = run("-G", "--data-urlencode", "addr=2001:db8::1", "http://rfm/v1/rib/lookup")
	if status != "200" || len(fake.lookups) != 1 || fake.lookups[0] != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("curl rib lookup: %s %q", status, body)
	}
	if _, status = run("http://rfm/v1/nope"); status != "404" {
		t.Errorf("curl unknown path: %s", status)
	}
	if _, status = run("-X", "DELETE", "http://rfm/v1/status"); status != "405" {
		t.Errorf("curl DELETE: %s", status)
	}
}

// BenchmarkRoundTrip is one call and its answer on a kept-alive
// connection.
func BenchmarkRoundTrip(b *testing.B) {
	_, path := startServer(b, &fakeAgent{})
	c := client(b, path)
	b.Run("status", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Status(bg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("flows", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Flows(bg, FlowsArgs{Top: 20}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
