// SPDX-License-Identifier: AGPL-3.0-only

package fault

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/packet/bmp"

	"github.com/stepbrobd/rfm/test/lab"
)

const bmpPort = 11019

// fakeRouter is a BMP speaker written with gobgp's serializers: one TCP
// connection from its own loopback address (the station tells routers
// apart by address).
type fakeRouter struct {
	t    testing.TB
	conn *net.TCPConn
}

func dialRouter(t testing.TB, ns, local string) (*fakeRouter, error) {
	var conn *net.TCPConn
	err := lab.InNetns(ns, func() error {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", bmpPort))
		if err != nil {
			return err
		}
		conn = c.(*net.TCPConn)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &fakeRouter{t: t, conn: conn}, nil
}

func (r *fakeRouter) write(b []byte) {
	r.t.Helper()
	if _, err := r.conn.Write(b); err != nil {
		r.t.Fatalf("router %s: write: %v", r.conn.LocalAddr(), err)
	}
}

func (r *fakeRouter) close() { r.conn.Close() }

func serialize(t testing.TB, m *bmp.BMPMessage) []byte {
	t.Helper()
	b, err := m.Serialize()
	if err != nil {
		t.Fatalf("serialize BMP %T: %v", m.Body, err)
	}
	return b
}

// up sends Initiation and a Peer Up for peer (AS asn).
func (r *fakeRouter) up(name, peer string, asn uint32) {
	t := r.t
	t.Helper()
	r.write(serialize(t, bmp.NewBMPInitiation([]bmp.BMPInfoTLVInterface{
		bmp.NewBMPInfoTLVString(bmp.BMP_INIT_TLV_TYPE_SYS_NAME, name),
	})))
	open := func(as uint32) *bgp.BGPMessage {
		caps := []bgp.ParameterCapabilityInterface{bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC), bgp.NewCapFourOctetASNumber(as)}
		m, err := bgp.NewBGPOpenMessage(uint16(as), 90, netip.MustParseAddr(peer), []bgp.OptionParameterInterface{bgp.NewOptionParameterCapability(caps)})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	r.write(serialize(t, bmp.NewBMPPeerUpNotification(r.peerHeader(peer, asn), netip.MustParseAddr("198.18.255.254"), 179, 40000, open(65000), open(asn))))
}

func (r *fakeRouter) peerHeader(peer string, asn uint32) bmp.BMPPeerHeader {
	addr := netip.MustParseAddr(peer)
	return *bmp.NewBMPPeerHeader(0, 0, 0, addr, asn, addr, 0)
}

// announce sends one Route Monitoring message per prefix.
func (r *fakeRouter) announce(peer string, asn uint32, prefixes []string) {
	t := r.t
	t.Helper()
	nextHop, err := bgp.NewPathAttributeNextHop(netip.MustParseAddr(peer))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range prefixes {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			t.Fatal(err)
		}
		nlri, err := bgp.NewIPAddrPrefix(pfx)
		if err != nil {
			t.Fatal(err)
		}
		upd := bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{
			bgp.NewPathAttributeOrigin(0),
			bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{asn})}),
			nextHop,
		}, []bgp.PathNLRI{{NLRI: nlri}})
		r.write(serialize(t, bmp.NewBMPRouteMonitoring(r.peerHeader(peer, asn), upd)))
	}
}

// waitClosed waits until the station closes the connection.
func (r *fakeRouter) waitClosed(timeout time.Duration) error {
	_ = r.conn.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, r.conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return fmt.Errorf("still open after %s", timeout)
	}
	return nil
}

func prefixes(base string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s.%d.0/24", base, i)
	}
	return out
}

// TestBMPFaults runs one agent's BMP station through a router flapping,
// a router sending garbage mid-stream and a crowd of idle connections
// beyond max_sessions. Must hold: a healthy router's routes are untouched
// throughout; after the flaps and the keep grace the RIB holds exactly
// the routes of live sessions; the garbage session is closed; excess
// sessions are refused and counted in rfm_errors_total{subsystem="bmp"};
// goroutines and RSS come back once the idle connections go away.
func TestBMPFaults(t *testing.T) {
	l := newLab(t)
	const maxSessions = 20
	a := startAgent(t, l.A, agentConfig{sampleRate: 100, bmpPort: bmpPort, bmpKeep: "1s", bmpMaxSessions: maxSessions})
	routes := func(m metrics) float64 { return m.sum("rfm_rib_routes") }
	bmpErrors := func(m metrics) float64 { return m.sum("rfm_errors_total", "subsystem", "bmp") }

	// The healthy router, connected for the whole test.
	const healthyRoutes = 10
	healthy, err := dialRouter(t, l.A, "127.0.0.2")
	if err != nil {
		t.Fatalf("healthy router: %v", err)
	}
	defer healthy.close()
	healthy.up("healthy", "198.18.100.1", 64500)
	healthy.announce("198.18.100.1", 64500, prefixes("198.19", healthyRoutes))
	exact := func(want float64) func(m metrics) error {
		return func(m metrics) error {
			if got := routes(m); got != want {
				return fmt.Errorf("rfm_rib_routes = %v, want %v (sessions %v)", got, want, m.sum("rfm_bmp_sessions"))
			}
			return nil
		}
	}
	m := a.waitFor(t, 10*time.Second, "healthy router's routes", exact(healthyRoutes))
	baseGoroutines, baseRSS := m.sum("go_goroutines"), rssBytes(t, a.Pid())

	flaps, flapRoutes := 50, 5
	if long() {
		flaps = 500
	}
	for i := 0; i < flaps; i++ {
		r, err := dialRouter(t, l.A, "127.0.0.3")
		if err != nil {
			t.Fatalf("flap %d: %v", i, err)
		}
		r.up("flapper", "198.18.101.1", 64501)
		r.announce("198.18.101.1", 64501, prefixes("198.18", flapRoutes))
		// Like a router, reconnect only once the last session ended: a
		// session still being drained counts against max_sessions.
		_ = r.conn.CloseWrite()
		if err := r.waitClosed(5 * time.Second); err != nil {
			t.Fatalf("flap %d: station kept the session after the router closed: %v", i, err)
		}
		r.close()
	}
	// Flapper's routes are kept for 1s after its last session, then go.
	a.waitFor(t, 15*time.Second, "RIB back to the healthy router's routes after the flaps", exact(healthyRoutes))

	// Garbage mid-stream: a valid start, then a message of BMP version 9.
	e0 := bmpErrors(a.mustScrape(t))
	bad, err := dialRouter(t, l.A, "127.0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	bad.up("garbage", "198.18.102.1", 64502)
	bad.announce("198.18.102.1", 64502, prefixes("198.18", 3))
	bad.write([]byte{9, 0, 0, 0, 6, 4, 0xde, 0xad, 0xbe, 0xef})
	if err := bad.waitClosed(5 * time.Second); err != nil {
		t.Errorf("router sending garbage: %v", err)
	}
	bad.close()
	a.waitFor(t, 15*time.Second, "garbage router counted as an error and its routes gone", func(m metrics) error {
		if bmpErrors(m) <= e0 {
			return fmt.Errorf("rfm_errors_total{subsystem=\"bmp\"} still %v", bmpErrors(m))
		}
		return exact(healthyRoutes)(m)
	})

	// Idle connections beyond max_sessions, in rounds: memory and
	// goroutines must come back to the same level after every round.
	rounds := 3
	if long() {
		rounds = 20
	}
	var firstRoundRSS uint64
	for round := 0; round < rounds; round++ {
		peak, rss, g := idleRound(t, a, round, maxSessions, exact(healthyRoutes), baseGoroutines)
		t.Logf("idle round %d: goroutines %v -> %v; RSS %.1f MiB -> peak %.1f -> %.1f MiB", round, baseGoroutines, g,
			float64(baseRSS)/(1<<20), float64(peak)/(1<<20), float64(rss)/(1<<20))
		if round == 0 {
			firstRoundRSS = rss
		} else if rss > firstRoundRSS+4<<20 {
			t.Errorf("RSS keeps growing: %.1f MiB after round 0, %.1f MiB after round %d",
				float64(firstRoundRSS)/(1<<20), float64(rss)/(1<<20), round)
		}
		if rss > baseRSS+32<<20 {
			t.Errorf("RSS grew from %.1f to %.1f MiB", float64(baseRSS)/(1<<20), float64(rss)/(1<<20))
		}
	}
}

// idleRound opens 100 idle connections against max_sessions, checks the
// excess is refused and counted, closes them and waits for the station
// to be back to the healthy router alone. It returns RSS at the peak and
// after, and the goroutine count after.
func idleRound(t *testing.T, a *agent, round, maxSessions int, healthy func(metrics) error, baseGoroutines float64) (peak, after uint64, goroutines float64) {
	t.Helper()
	const idleCount = 100
	bmpErrors := func(m metrics) float64 { return m.sum("rfm_errors_total", "subsystem", "bmp") }
	e1 := bmpErrors(a.mustScrape(t))
	var idle []*fakeRouter
	for i := 0; i < idleCount; i++ {
		r, err := dialRouter(t, a.ns, fmt.Sprintf("127.0.%d.%d", 1+round%200, i+1))
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		idle = append(idle, r)
	}
	refused := float64(idleCount - (maxSessions - 1))
	a.waitFor(t, 10*time.Second, "excess sessions refused and counted", func(m metrics) error {
		if s := m.sum("rfm_bmp_sessions"); s != float64(maxSessions) {
			return fmt.Errorf("rfm_bmp_sessions = %v, want %d", s, maxSessions)
		}
		if got := bmpErrors(m) - e1; got != refused {
			return fmt.Errorf("bmp errors +%v, want +%v", got, refused)
		}
		return nil
	})
	peak = rssBytes(t, a.Pid())
	for _, r := range idle {
		r.close()
	}
	m := a.waitFor(t, 10*time.Second, "idle sessions gone, goroutines back", func(m metrics) error {
		if s := m.sum("rfm_bmp_sessions"); s != 1 {
			return fmt.Errorf("rfm_bmp_sessions = %v, want 1", s)
		}
		if g := m.sum("go_goroutines"); g > baseGoroutines+2 {
			return fmt.Errorf("go_goroutines = %v, was %v before", g, baseGoroutines)
		}
		return healthy(m)
	})
	return peak, rssBytes(t, a.Pid()), m.sum("go_goroutines")
}
