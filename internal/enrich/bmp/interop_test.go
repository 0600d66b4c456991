// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/test/lab"
)

// Interop with real routers from Debian's packages, on loopback
// addresses (127.0.0.11-13) and ephemeral ports:
//
//	gobgpd A (AS 65001, 127.0.0.11) originates routes from 198.18.0.0/15
//	and 2001:db8::/32 with chosen AS paths. It peers with
//	gobgpd B (AS 65002, 127.0.0.12), which monitors pre-policy,
//	post-policy and Loc-RIB to our station, and with
//	FRR bgpd (AS 65003, 127.0.0.13, -M bmp), which monitors pre- and
//	post-policy. B and FRR wait for A to connect: sessions dialled from
//	both ends at once can collide and stay down for longer than we wait.
//
// RFM_BMP_RECORD=1 rewrites testdata/gobgp.bmp and testdata/frr.bmp
// from the run; TestReplay checks those without routers.

const (
	addrA, addrB, addrFRR = "127.0.0.11", "127.0.0.12", "127.0.0.13"
	nameB, nameFRR        = "gobgpd-b", "frr-c"
)

func requireRouters(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("interop with real routers skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("interop test needs root to run bgpd (FRR) as root: skipped")
	}
	for _, bin := range []string{"gobgpd", "gobgp", "/usr/lib/frr/bgpd"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("interop test needs %s (Debian packages gobgpd and frr): %v", bin, err)
		}
	}
}

// handedPorts are the ports freePort has returned in this test binary.
var handedPorts sync.Map

// freePort returns a port nothing listens on at host, never one it has
// returned before: the kernel may hand a just-closed port out again, and
// a router given the same port for BGP and its API fails to start.
func freePort(t *testing.T, host string) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if _, seen := handedPorts.LoadOrStore(port, true); !seen {
			return port
		}
	}
	t.Fatalf("no fresh port on %s in 100 tries", host)
	return 0
}

// daemon runs a router process for the test's duration; its output
// goes to a file that is printed if the test fails.
func daemon(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	stopped := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(stopped) }()
	stop := func() {
		select {
		case <-stopped:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-stopped
		}
	}
	daemons.Store(name, stop)
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s output:\n%s", name, lastLines(string(b), 40))
		}
	})
}

var daemons sync.Map // name -> stop func

func stopDaemon(name string) {
	if f, ok := daemons.Load(name); ok {
		f.(func())()
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func frrConfig(port, bmpPort int) string {
	return fmt.Sprintf(`frr defaults traditional
hostname %s
!
router bgp 65003
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor %s remote-as 65001
 neighbor %s port %d
 neighbor %s update-source %s
 neighbor %s timers 3 9
 neighbor %s timers connect 1
 neighbor %s passive
 !
 address-family ipv4 unicast
  neighbor %s activate
  neighbor %s soft-reconfiguration inbound
 exit-address-family
 !
 address-family ipv6 unicast
  neighbor %s activate
  neighbor %s soft-reconfiguration inbound
 exit-address-family
 !
 bmp targets rfm
  bmp monitor ipv4 unicast pre-policy
  bmp monitor ipv4 unicast post-policy
  bmp monitor ipv6 unicast pre-policy
  bmp monitor ipv6 unicast post-policy
  bmp connect 127.0.0.1 port %d min-retry 100 max-retry 1000
 exit
!
`, nameFRR, addrFRR, addrA, addrA, port, addrA, addrFRR, addrA, addrA, addrA, addrA, addrA, addrA, addrA, bmpPort)
}

// gobgpCLI runs the gobgp client against the daemon's API.
func gobgpCLI(t *testing.T, api string, args ...string) error {
	t.Helper()
	host, port, _ := net.SplitHostPort(api)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "gobgp", append([]string{"-u", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("gobgp %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// recorder keeps the bytes each BMP session sent.
type recorder struct {
	mu       sync.Mutex
	sessions map[netip.AddrPort]*bytes.Buffer
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (r *recorder) tap(router netip.AddrPort) io.Writer {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := &bytes.Buffer{}
	r.sessions[router] = b
	return lockedWriter{&r.mu, b}
}

// byName returns the stream of the session whose Initiation carries
// sysName name.
func (r *recorder) byName(name string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.sessions {
		if bytes.Contains(b.Bytes(), []byte(name)) {
			return bytes.Clone(b.Bytes())
		}
	}
	return nil
}

func TestInteropGoBGPAndFRR(t *testing.T) {
	requireRouters(t)
	dir := t.TempDir()

	r := rib.New(rib.Options{Keep: time.Minute})
	defer r.Close()
	rec := &recorder{sessions: map[netip.AddrPort]*bytes.Buffer{}}
	logs := &lab.Buffer{}
	st, err := Listen(Config{Host: "127.0.0.1", Allow: prefixes("127.0.0.0/8")}, r, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	st.tap = rec.tap
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- st.Serve(ctx) }()
	defer func() { cancel(); <-served }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("station log:\n%s", lastLines(logs.String(), 40))
		}
	})
	bmpPort := st.Addr().(*net.TCPAddr).Port

	bgpPort := freePort(t, addrA)
	apiA := net.JoinHostPort(addrA, fmt.Sprint(freePort(t, addrA)))
	apiB := net.JoinHostPort(addrB, fmt.Sprint(freePort(t, addrB)))
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A announces next hops from the test ranges: both routers reject
	// A's loopback address as a martian next hop.
	confA := write("a.toml", lab.GoBGPD{AS: 65001, Addr: addrA, Port: bgpPort,
		Neighbors: []lab.GoBGPNeighbor{{Addr: addrB, AS: 65002, IPv6: true}, {Addr: addrFRR, AS: 65003, IPv6: true}},
		NextHop4:  "198.18.0.254", NextHop6: "2001:db8::fe"}.Config())
	confB := write("b.toml", lab.GoBGPD{AS: 65002, Addr: addrB, Port: bgpPort,
		Neighbors: []lab.GoBGPNeighbor{{Addr: addrA, AS: 65001, IPv6: true, Passive: true}},
		BMP:       &lab.GoBGPBMP{Port: bmpPort, SysName: nameB}}.Config())
	confC := write("frr.conf", frrConfig(bgpPort, bmpPort))

	daemon(t, dir, "gobgpd-a", "gobgpd", "-f", confA, "--api-hosts", apiA, "--pprof-disable", "-p", "-l", "info")
	daemon(t, dir, "gobgpd-b", "gobgpd", "-f", confB, "--api-hosts", apiB, "--pprof-disable", "-p", "-l", "info")
	daemon(t, dir, "bgpd", "/usr/lib/frr/bgpd", "-f", confC, "-i", filepath.Join(dir, "bgpd.pid"),
		"--vty_socket", dir, "-M", "bmp", "-Z", "-S", "-l", addrFRR, "-p", fmt.Sprint(bgpPort), "-P", "0", "--log", "stdout")

	// Routes originated by A, with the origin ASNs the RIB must find.
	eventually(t, "gobgpd A's API", func() bool { return gobgpCLI(t, apiA, "global") == nil })
	for _, args := range [][]string{
		{"global", "rib", "-a", "ipv4", "add", "198.18.1.0/24", "aspath", "64501", "community", "65001:100", "large-community", "65001:1:2"},
		{"global", "rib", "-a", "ipv4", "add", "198.18.2.0/24"},
		{"global", "rib", "-a", "ipv4", "add", "198.18.3.0/24", "aspath", "64502 {64504,64503}"},
		{"global", "rib", "-a", "ipv6", "add", "2001:db8:1::/48", "aspath", "4200000011", "nexthop", "2001:db8::11"},
	} {
		if err := gobgpCLI(t, apiA, args...); err != nil {
			t.Fatal(err)
		}
	}

	routerB := rib.RouterKey{Addr: netip.MustParseAddr("127.0.0.1"), Name: nameB}
	routerC := rib.RouterKey{Addr: netip.MustParseAddr("127.0.0.1"), Name: nameFRR}
	// views lists (router name, view) -> origin for the routes of a.
	views := func(a string) map[string]uint32 {
		out := map[string]uint32{}
		for _, ri := range r.LookupAll(netip.MustParseAddr(a)) {
			out[ri.Router.Name+" "+ri.View.String()] = ri.Origin
		}
		return out
	}
	wantViews := func(a string, origin uint32) map[string]uint32 {
		return map[string]uint32{
			nameB + " pre-policy": origin, nameB + " post-policy": origin, nameB + " loc-rib": origin,
			nameFRR + " pre-policy": origin, nameFRR + " post-policy": origin,
		}
	}
	for _, c := range []struct {
		addr   string
		origin uint32
	}{
		{"198.18.1.1", 64501},
		{"198.18.2.1", 65001}, // originated by A itself
		{"198.18.3.1", 0},     // ends in an AS_SET
		{"2001:db8:1::1", 4200000011},
	} {
		want := wantViews(c.addr, c.origin)
		eventually(t, fmt.Sprintf("%s in all views with origin %d", c.addr, c.origin), func() bool {
			return maps.Equal(views(c.addr), want)
		})
	}
	best, _ := r.LookupRoute(netip.MustParseAddr("198.18.1.1"))
	if best.View != rib.LocRIB || best.Router != routerB || best.Origin != 64501 {
		t.Errorf("best route %+v, want router B's Loc-RIB", best)
	}
	for _, ri := range r.LookupAll(netip.MustParseAddr("198.18.1.1")) {
		t.Logf("%s %s %s: path %s, origin %d, next hop %s, communities %v %v", ri.Router.Name, ri.Peer.Addr, ri.View,
			ri.Path, ri.Origin, ri.Path.NextHop(), ri.Path.Communities(), ri.Path.LargeCommunities())
	}
	// What flow export reports: the best route's next hop, first AS,
	// prefix length and communities, as A announced them.
	fr, ok := r.FlowRoute(netip.MustParseAddr("198.18.1.1"))
	if !ok || fr.Bits != 24 || fr.Path.NextHop() != netip.MustParseAddr("198.18.0.254") || fr.Path.FirstAS() != 65001 ||
		!slices.Equal(fr.Path.Communities(), []uint32{65001<<16 | 100}) ||
		!slices.Equal(fr.Path.LargeCommunities(), []rib.LargeCommunity{{Global: 65001, Local1: 1, Local2: 2}}) {
		t.Errorf("flow route of 198.18.1.1: %+v, next hop %s, first AS %d, communities %v %v; want /24 via 198.18.0.254 from AS65001 with 65001:100 and 65001:1:2",
			fr, fr.Path.NextHop(), fr.Path.FirstAS(), fr.Path.Communities(), fr.Path.LargeCommunities())
	}
	// A's config sets its IPv6 next hop (NextHop6) over the route's own.
	fr6, ok := r.FlowRoute(netip.MustParseAddr("2001:db8:1::1"))
	if !ok || fr6.Bits != 48 || fr6.Path.NextHop() != netip.MustParseAddr("2001:db8::fe") || fr6.Path.FirstAS() != 65001 {
		t.Errorf("flow route of 2001:db8:1::1: %+v, next hop %s, first AS %d; want /48 via 2001:db8::fe from AS65001",
			fr6, fr6.Path.NextHop(), fr6.Path.FirstAS())
	}
	sum := r.Summary()
	if len(sum.Routers) != 2 {
		t.Fatalf("summary routers %+v", sum.Routers)
	}

	// A withdraw at the origin reaches every view.
	if err := gobgpCLI(t, apiA, "global", "rib", "-a", "ipv4", "del", "198.18.1.0/24"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "withdraw of 198.18.1.0/24", func() bool { return len(r.LookupAll(netip.MustParseAddr("198.18.1.1"))) == 0 })
	if got := views("198.18.2.1"); len(got) != 5 {
		t.Fatalf("other routes lost after withdraw: %v", got)
	}

	// A goes down: B and FRR report Peer Down, the peer's routes go at
	// once (B withdraws its Loc-RIB routes).
	stopDaemon("gobgpd-a")
	for _, a := range []string{"198.18.2.1", "198.18.3.1", "2001:db8:1::1"} {
		eventually(t, "peer down removing "+a, func() bool { return len(r.LookupAll(netip.MustParseAddr(a))) == 0 })
	}
	c := r.Counts()
	if c.Routes4 != 0 || c.Routes6 != 0 {
		t.Errorf("routes left after peer down: %+v", c)
	}
	for _, rs := range r.Summary().Routers {
		if !rs.Connected {
			t.Errorf("router %v disconnected", rs.Router)
		}
		for _, p := range rs.Peers {
			if p.Peer.Addr == netip.MustParseAddr(addrA) {
				t.Errorf("router %s still has peer A: %+v", rs.Router.Name, p)
			}
		}
	}
	if got := seriesValue(gather(t, st), "rfm_errors_total", `subsystem="bmp"`); got != "0" {
		t.Errorf("station errors: %s", got)
	}
	_ = routerC

	if os.Getenv("RFM_BMP_RECORD") != "" {
		for name, file := range map[string]string{nameB: "gobgp.bmp", nameFRR: "frr.bmp"} {
			b := rec.byName(name)
			if len(b) == 0 {
				t.Fatalf("no capture for %s", name)
			}
			if err := os.WriteFile(filepath.Join("testdata", file), b, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("recorded testdata/%s: %d bytes", file, len(b))
		}
	}
}
