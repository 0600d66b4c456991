// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/test/lab"
)

// stationFixture runs a station on 127.0.0.1 with an ephemeral port.
type stationFixture struct {
	t    *testing.T
	st   *Station
	rib  *rib.RIB
	logs *lab.Buffer
	done chan error
}

// startStation runs a station; setup, if any, adjusts it before it
// accepts sessions.
func startStation(t *testing.T, cfg Config, setup ...func(*Station)) *stationFixture {
	t.Helper()
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	r := rib.New(rib.Options{Keep: time.Minute})
	t.Cleanup(r.Close)
	logs := &lab.Buffer{}
	st, err := Listen(cfg, r, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(st)
	}
	f := &stationFixture{t: t, st: st, rib: r, logs: logs, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { f.done <- st.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-f.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return f
}

func (f *stationFixture) dial() net.Conn {
	f.t.Helper()
	c, err := net.Dial("tcp", f.st.Addr().String())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

func (f *stationFixture) send(c net.Conn, msgs ...[]byte) {
	f.t.Helper()
	for _, m := range msgs {
		if _, err := c.Write(m); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *stationFixture) origin(a string) uint32 { return f.rib.Origin(netip.MustParseAddr(a)) }

// closedByStation waits until the station closes c.
func closedByStation(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("session not closed by the station: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// metric returns one gathered series value, "" if absent.
func metric(f *stationFixture, name, label string) string {
	return seriesValue(gatherLines(f.t, f.st), name, label)
}

func TestStationSession(t *testing.T) {
	f := startStation(t, Config{})
	c := f.dial()
	f.send(c,
		initiationMsg(t, "edge1"),
		peerUpMsg(t, peerA, 65001, peerUpOpts{}),
		announceMsg(t, peerA, 65001, 0, route{announce: []string{"198.18.0.0/24", "2001:db8::/32"}, path: []uint32{65001, 64500}}),
	)
	eventually(t, "routes", func() bool { return f.origin("198.18.0.1") == 64500 && f.origin("2001:db8::1") == 64500 })
	if got := metric(f, "rfm_bmp_sessions", ""); got != "1" {
		t.Errorf("rfm_bmp_sessions = %s", got)
	}
	if got := metric(f, "rfm_bmp_messages_total", `type="route_monitoring"`); got != "1" {
		t.Errorf("route monitoring messages = %s", got)
	}
	f.send(c, announceMsg(t, peerA, 65001, 0, route{withdraw: []string{"198.18.0.0/24"}}))
	eventually(t, "withdraw", func() bool { return f.origin("198.18.0.1") == 0 })

	// Session end: routes stay for the keep period.
	c.Close()
	eventually(t, "session end", func() bool { return metric(f, "rfm_bmp_sessions", "") == "0" })
	if f.origin("2001:db8::1") != 64500 {
		t.Error("routes removed at once when the session ended")
	}
	if s := f.rib.Summary(); len(s.Routers) != 1 || s.Routers[0].Connected || s.Routers[0].Router.Name != "edge1" {
		t.Errorf("summary %+v", s.Routers)
	}
	if got := metric(f, "rfm_errors_total", `subsystem="bmp"`); got != "0" {
		t.Errorf("errors = %s", got)
	}
	eventually(t, "close log line", func() bool {
		return strings.Contains(f.logs.String(), "session closed") && strings.Contains(f.logs.String(), "connection closed by router")
	})
}

func TestStationTermination(t *testing.T) {
	f := startStation(t, Config{})
	c := f.dial()
	f.send(c, initiationMsg(t, "r"), terminationMsg(t))
	closedByStation(t, c)
	eventually(t, "log", func() bool { return strings.Contains(f.logs.String(), "maintenance") })
}

// TestStationHostileInput: each bad stream closes its own session with
// one log line; a session running alongside keeps working.
func TestStationHostileInput(t *testing.T) {
	long := []byte{3, 0, 0x10, 0x10, 0, 0} // declares 1 MiB + 4 KiB
	cases := []struct {
		name   string
		stream []byte
		log    string
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "not BMP version 3"},
		{"length under header", []byte{3, 0, 0, 0, 2, 4}, "under the 6-byte header"},
		{"length over bound", long, "over max_message_size"},
		{"truncated message", append([]byte{3, 0, 0, 0, 100, 4}, make([]byte, 40)...), "cut short"},
		{"truncated header", []byte{3, 0, 0}, "cut short"},
	}
	f := startStation(t, Config{MaxMessageSize: 1 << 20})
	good := f.dial()
	f.send(good, initiationMsg(t, "good"), peerUpMsg(t, peerA, 65001, peerUpOpts{}))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bad := f.dial()
			local := bad.LocalAddr().String()
			f.send(bad, c.stream)
			if c.log == "cut short" {
				bad.(*net.TCPConn).CloseWrite()
			}
			closedByStation(t, bad)
			closeLines := func() []string {
				var lines []string
				for _, l := range strings.Split(f.logs.String(), "\n") {
					if strings.Contains(l, local) && strings.Contains(l, "session closed") {
						lines = append(lines, l)
					}
				}
				return lines
			}
			eventually(t, "log line", func() bool { return len(closeLines()) > 0 })
			lines := closeLines()
			if len(lines) != 1 || !strings.Contains(lines[0], c.log) || !strings.Contains(lines[0], "level=WARN") {
				t.Fatalf("log lines for %s: %q, want one warning naming %q", local, lines, c.log)
			}
			// The good session still works.
			p := fmt.Sprintf("198.18.%d.0/24", i)
			f.send(good, announceMsg(t, peerA, 65001, 0, route{announce: []string{p}, path: []uint32{65001, 64500 + uint32(i)}}))
			eventually(t, "route on the good session", func() bool {
				return f.origin(fmt.Sprintf("198.18.%d.1", i)) == 64500+uint32(i)
			})
		})
	}
	if got := metric(f, "rfm_errors_total", `subsystem="bmp"`); got != fmt.Sprint(len(cases)) {
		t.Errorf("errors = %s, want %d", got, len(cases))
	}
	if got := metric(f, "rfm_bmp_sessions", ""); got != "1" {
		t.Errorf("sessions = %s, want 1", got)
	}
}

func TestStationLimits(t *testing.T) {
	t.Run("max sessions", func(t *testing.T) {
		f := startStation(t, Config{MaxSessions: 1})
		first := f.dial()
		f.send(first, initiationMsg(t, "first"))
		eventually(t, "first session", func() bool { return metric(f, "rfm_bmp_sessions", "") == "1" })
		second := f.dial()
		closedByStation(t, second)
		eventually(t, "log", func() bool { return strings.Contains(f.logs.String(), "max_sessions (1) reached") })
		f.send(first, peerUpMsg(t, peerA, 65001, peerUpOpts{}),
			announceMsg(t, peerA, 65001, 0, route{announce: []string{"198.18.0.0/24"}, path: []uint32{64500}}))
		eventually(t, "route on the first session", func() bool { return f.origin("198.18.0.1") == 64500 })
		// Once the first ends, a new one is accepted.
		first.Close()
		eventually(t, "first session end", func() bool { return metric(f, "rfm_bmp_sessions", "") == "0" })
		third := f.dial()
		f.send(third, initiationMsg(t, "third"))
		eventually(t, "third session", func() bool { return metric(f, "rfm_bmp_sessions", "") == "1" })
	})
	t.Run("allow list", func(t *testing.T) {
		f := startStation(t, Config{Allow: prefixes("192.0.2.0/24", "2001:db8::1/128")})
		c := f.dial()
		closedByStation(t, c)
		eventually(t, "log", func() bool { return strings.Contains(f.logs.String(), "not in agent.enrich.rib.bmp.allow") })
		if got := metric(f, "rfm_errors_total", `subsystem="bmp"`); got != "1" {
			t.Errorf("errors = %s", got)
		}
		g := startStation(t, Config{Allow: prefixes("127.0.0.0/8")})
		ok := g.dial()
		g.send(ok, initiationMsg(t, "r"))
		eventually(t, "allowed session", func() bool { return metric(g, "rfm_bmp_sessions", "") == "1" })
	})
}

func TestListenErrors(t *testing.T) {
	r := rib.New(rib.Options{})
	defer r.Close()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"port in use", Config{Host: "127.0.0.1", Port: port}, "agent.enrich.rib.bmp: listen tcp 127.0.0.1:"},
		{"bad host", Config{Host: "not a host name!", Port: 0}, "agent.enrich.rib.bmp: listen tcp"},
		{"tiny max message size", Config{Host: "127.0.0.1", MaxMessageSize: 10}, "agent.enrich.rib.bmp.max_message_size: 10"},
		{"max message size under a BGP message", Config{Host: "127.0.0.1", MaxMessageSize: 4095}, "agent.enrich.rib.bmp.max_message_size: 4095"},
		{"max message size past 16 MiB - 1", Config{Host: "127.0.0.1", MaxMessageSize: 1 << 24}, "agent.enrich.rib.bmp.max_message_size: 16777216"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, err := Listen(c.cfg, r, nil)
			if err == nil {
				st.Close()
				t.Fatal("Listen succeeded")
			}
			if !strings.HasPrefix(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line starting %q", err, c.want)
			}
		})
	}
}

// TestSlowRIBDoesNotStallSocket holds the RIB's writer lock while a
// router sends: the station keeps reading the socket into the queue.
func TestSlowRIBDoesNotStallSocket(t *testing.T) {
	f := startStation(t, Config{})
	c := f.dial()
	f.send(c, initiationMsg(t, "r"), peerUpMsg(t, peerA, 65001, peerUpOpts{}))
	eventually(t, "peer up", func() bool { return f.rib.Counts().Peers == 1 })

	tx := f.rib.Begin() // a writer that takes its time
	var stream []byte
	n := 0
	for i := 0; len(stream) < 4<<20; i++ {
		stream = append(stream, announceMsg(t, peerA, 65001, 0, route{
			announce: []string{fmt.Sprintf("198.18.%d.%d/32", i>>8&0xff, i&0xff)},
			path:     []uint32{65001, 64500},
		})...)
		n++
	}
	// 4 MiB is more than the socket buffers hold: the write completes
	// only if the station reads while the RIB is busy.
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Write(stream)
	tx.Commit()
	if err != nil {
		t.Fatalf("router blocked while the RIB was busy: %v", err)
	}
	eventually(t, "all routes", func() bool { return f.rib.Counts().Routes4 == min(n, 65536) })
}

// TestStationShutdown: cancelling Serve closes the sessions; the RIB
// keeps their routes for the keep period.
func TestStationShutdown(t *testing.T) {
	r := rib.New(rib.Options{Keep: time.Minute})
	defer r.Close()
	st, err := Listen(Config{Host: "127.0.0.1"}, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Serve(ctx) }()
	c, err := net.Dial("tcp", st.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(slices.Concat(initiationMsg(t, "r"), peerUpMsg(t, peerA, 65001, peerUpOpts{}),
		announceMsg(t, peerA, 65001, 0, route{announce: []string{"198.18.0.0/24"}, path: []uint32{64500}})))
	eventually(t, "route", func() bool { return r.Origin(netip.MustParseAddr("198.18.0.1")) == 64500 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, net.ErrClosed) && err == nil {
		t.Fatalf("session still open: %v", err)
	}
	if s := r.Summary(); len(s.Routers) != 1 || s.Routers[0].Connected {
		t.Fatalf("router still connected after shutdown: %+v", s.Routers)
	}
	if r.Origin(netip.MustParseAddr("198.18.0.1")) != 64500 {
		t.Fatal("routes dropped at shutdown")
	}
}

var gatherMu sync.Mutex

func gatherLines(t *testing.T, st *Station) []string {
	gatherMu.Lock()
	defer gatherMu.Unlock()
	return gather(t, st)
}

// prefixes parses each of ps as a prefix.
func prefixes(ps ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func TestParseAllow(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // "" for refused
	}{
		{"192.0.2.7/24", "192.0.2.0/24"},
		{"198.18.0.1", "198.18.0.1/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:db8:1:2::/48", "2001:db8:1::/48"},
		// Routers are compared unmapped, so a mapped address is its IPv4.
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"fe80::1%eth0", ""},
		{"192.0.2.0/33", ""},
		{"router1", ""},
		{"", ""},
	} {
		got, ok := ParseAllow(c.in)
		if c.want == "" {
			if ok {
				t.Errorf("ParseAllow(%q) = %v, want refused", c.in, got)
			}
			continue
		}
		if !ok || got != netip.MustParsePrefix(c.want) {
			t.Errorf("ParseAllow(%q) = %v, %v; want %s", c.in, got, ok, c.want)
		}
	}
}
