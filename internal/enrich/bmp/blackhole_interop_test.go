// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/test/lab"
)

// TestBlackholeFromGoBGP: gobgpd A originates a route with the BLACKHOLE
// community and one without; gobgpd B, its peer, reports to the station
// over BMP. The BLACKHOLE prefix is listed while announced, leaves on
// withdraw, and after B's BMP session is lost, stays for keep and then
// leaves.
func TestBlackholeFromGoBGP(t *testing.T) {
	requireRouters(t)
	const a, b = "127.0.0.21", "127.0.0.22"
	dir := t.TempDir()
	const keep = 3 * time.Second
	r := rib.New(rib.Options{Keep: keep})
	defer r.Close()
	st, err := Listen(Config{Host: "127.0.0.1", Allow: prefixes("127.0.0.0/8")}, r, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- st.Serve(ctx) }()
	defer func() { cancel(); <-served }()
	bmpPort := st.Addr().(*net.TCPAddr).Port
	bgpPort := freePort(t, a)
	apiA := net.JoinHostPort(a, fmt.Sprint(freePort(t, a)))
	apiB := net.JoinHostPort(b, fmt.Sprint(freePort(t, b)))
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	confA := write("a.toml", lab.GoBGPD{AS: 65011, Addr: a, Port: bgpPort,
		Neighbors: []lab.GoBGPNeighbor{{Addr: b, AS: 65012, IPv6: true}},
		NextHop4:  "198.18.0.254", NextHop6: "2001:db8::fe"}.Config())
	confB := write("b.toml", lab.GoBGPD{AS: 65012, Addr: b, Port: bgpPort,
		Neighbors: []lab.GoBGPNeighbor{{Addr: a, AS: 65011, IPv6: true, Passive: true}},
		BMP:       &lab.GoBGPBMP{Port: bmpPort, SysName: "bh-b"}}.Config())
	daemon(t, dir, "bh-gobgpd-a", "gobgpd", "-f", confA, "--api-hosts", apiA, "--pprof-disable", "-p", "-l", "info")
	daemon(t, dir, "bh-gobgpd-b", "gobgpd", "-f", confB, "--api-hosts", apiB, "--pprof-disable", "-p", "-l", "info")
	eventually(t, "gobgpd A's API", func() bool { return gobgpCLI(t, apiA, "global") == nil })
	for _, args := range [][]string{
		{"global", "rib", "-a", "ipv4", "add", "198.18.50.7/32", "community", "65535:666"},
		{"global", "rib", "-a", "ipv6", "add", "2001:db8:50::7/128", "nexthop", "2001:db8::11", "community", "65535:666"},
		{"global", "rib", "-a", "ipv4", "add", "198.18.51.0/24", "community", "65535:667"},
	} {
		if err := gobgpCLI(t, apiA, args...); err != nil {
			t.Fatal(err)
		}
	}
	listed := func(want ...string) func() bool {
		return func() bool {
			got := st.BlackholePrefixes()
			if len(got) != len(want) {
				return false
			}
			for _, w := range want {
				if !got[netip.MustParsePrefix(w)] {
					return false
				}
			}
			return true
		}
	}
	eventually(t, "both BLACKHOLE routes listed, the other route not", listed("198.18.50.7/32", "2001:db8:50::7/128"))
	if _, ok := r.LookupRoute(netip.MustParseAddr("198.18.51.1")); !ok {
		t.Error("the route without BLACKHOLE is not in the RIB")
	}
	if err := gobgpCLI(t, apiA, "global", "rib", "-a", "ipv6", "del", "2001:db8:50::7/128"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the withdrawn route unlisted", listed("198.18.50.7/32"))

	// Session loss: B's BMP session ends; the route stays for keep.
	stop, _ := daemons.Load("bh-gobgpd-b")
	lost := time.Now()
	stop.(func())()
	eventually(t, "the route gone after keep", listed())
	if held := time.Since(lost); held < keep {
		t.Errorf("the route left %s after the session ended, before keep (%s)", held, keep)
	}
}
