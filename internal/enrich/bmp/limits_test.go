// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"strings"
	"testing"
	"time"
)

func TestInitiationDeadline(t *testing.T) {
	const deadline = 200 * time.Millisecond
	// One session at a time: a connection that never sends Initiation
	// must give its slot back.
	f := startStation(t, Config{MaxSessions: 1}, func(s *Station) { s.initTimeout = deadline })

	silent := f.dial()
	eventually(t, "silent session open", func() bool { return metric(f, "rfm_bmp_sessions", "") == "1" })
	closedByStation(t, silent)
	eventually(t, "silent session gone", func() bool { return metric(f, "rfm_bmp_sessions", "") == "0" })
	if got := metric(f, "rfm_errors_total", `subsystem="bmp"`); got != "1" {
		t.Errorf("rfm_errors_total{subsystem=\"bmp\"} = %s after the silent session, want 1", got)
	}
	if !strings.Contains(f.logs.String(), "no Initiation message within 200ms") {
		t.Errorf("log does not name the missing Initiation:\n%s", f.logs.String())
	}

	// Routes without Initiation do not keep a session either.
	noInit := f.dial()
	f.send(noInit, peerUpMsg(t, peerA, 65001, peerUpOpts{}),
		announceMsg(t, peerA, 65001, 0, route{announce: []string{"198.18.0.0/24"}, path: []uint32{64500}}))
	eventually(t, "route of the session without Initiation", func() bool { return f.origin("198.18.0.1") == 64500 })
	closedByStation(t, noInit)
	eventually(t, "second error", func() bool { return metric(f, "rfm_errors_total", `subsystem="bmp"`) == "2" })

	// A session that sent Initiation outlives the deadline.
	good := f.dial()
	f.send(good, initiationMsg(t, "r1"))
	eventually(t, "good session open", func() bool { return metric(f, "rfm_bmp_sessions", "") == "1" })
	time.Sleep(3 * deadline) // past the deadline; what follows must still be read
	f.send(good, peerUpMsg(t, peerB, 65002, peerUpOpts{}),
		announceMsg(t, peerB, 65002, 0, route{announce: []string{"198.18.1.0/24"}, path: []uint32{64501}}))
	eventually(t, "route after the deadline", func() bool { return f.origin("198.18.1.1") == 64501 })
	if got := metric(f, "rfm_bmp_sessions", ""); got != "1" {
		t.Errorf("rfm_bmp_sessions = %s, want the session with Initiation still open", got)
	}
	if got := metric(f, "rfm_errors_total", `subsystem="bmp"`); got != "2" {
		t.Errorf("rfm_errors_total{subsystem=\"bmp\"} = %s, want still 2", got)
	}
}

func TestPeerRouteLimit(t *testing.T) {
	f := startStation(t, Config{MaxRoutesPerPeer: 3})
	c := f.dial()
	ann := func(peer string, asn uint32, prefixes []string, path ...uint32) []byte {
		return announceMsg(t, peer, asn, 0, route{announce: prefixes, path: path})
	}
	f.send(c, initiationMsg(t, "r1"),
		peerUpMsg(t, peerA, 65001, peerUpOpts{}), peerUpMsg(t, peerB, 65002, peerUpOpts{}),
		ann(peerB, 65002, []string{"198.18.100.0/24"}, 65002, 64600),
		// Three routes: at the limit, kept; a new path for one of them
		// replaces it and adds none.
		ann(peerA, 65001, []string{"198.18.0.0/24", "198.18.1.0/24", "198.18.2.0/24"}, 65001, 64500),
		ann(peerA, 65001, []string{"198.18.0.0/24"}, 65001, 64501))
	eventually(t, "routes at the limit", func() bool {
		return f.origin("198.18.0.1") == 64501 && f.origin("198.18.2.1") == 64500 && f.origin("198.18.100.1") == 64600
	})
	if got := metric(f, "rfm_bmp_route_limit_drops_total", ""); got != "0" {
		t.Fatalf("rfm_bmp_route_limit_drops_total = %s at the limit, want 0", got)
	}

	// A fourth route: all of peer A's routes go, peer B's stay.
	f.send(c, ann(peerA, 65001, []string{"198.18.3.0/24"}, 65001, 64500))
	// The counter moves before the RIB commits the removal: wait for both.
	dropped := []string{"198.18.0.1", "198.18.1.1", "198.18.2.1", "198.18.3.1"}
	eventually(t, "limit drop", func() bool {
		if metric(f, "rfm_bmp_route_limit_drops_total", "") != "1" {
			return false
		}
		for _, a := range dropped {
			if f.origin(a) != 0 {
				return false
			}
		}
		return true
	})
	if got := f.origin("198.18.100.1"); got != 64600 {
		t.Errorf("peer B's route: Origin = %d, want 64600", got)
	}

	// Later routes of peer A are ignored (peer B's next route shows the
	// session got past them) until the router reports A up again.
	f.send(c, ann(peerA, 65001, []string{"198.18.5.0/24"}, 65001, 64500),
		ann(peerB, 65002, []string{"198.18.101.0/24"}, 65002, 64601))
	eventually(t, "peer B's second route", func() bool { return f.origin("198.18.101.1") == 64601 })
	if got := f.origin("198.18.5.1"); got != 0 {
		t.Errorf("route of the dropped peer accepted: Origin(198.18.5.1) = %d", got)
	}
	f.send(c, peerUpMsg(t, peerA, 65001, peerUpOpts{}), ann(peerA, 65001, []string{"198.18.6.0/24"}, 65001, 64502))
	eventually(t, "peer A after a new Peer Up", func() bool { return f.origin("198.18.6.1") == 64502 })

	var lines []string
	for _, l := range strings.Split(f.logs.String(), "\n") {
		if strings.Contains(l, "max_routes_per_peer") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "router=127.0.0.1") || !strings.Contains(lines[0], "router_name=r1") ||
		!strings.Contains(lines[0], "peer="+peerA) || !strings.Contains(lines[0], "limit=3") {
		t.Errorf("want one log line naming router 127.0.0.1 (r1), peer %s and the limit, got:\n%s", peerA, strings.Join(lines, "\n"))
	}
}
