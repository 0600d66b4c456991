// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/test/lab"
)

// TestInteropGoBGPVRF runs gobgpd (Debian's 3.10) with a VRF and BMP
// Loc-RIB monitoring. gobgpd reports no RD-instance peers (its BMP
// per-peer headers are always global or the default Loc-RIB with
// distinguisher 0): a VRF's routes reach the station as VPNv4 routes of
// the default Loc-RIB, which the station skips. Neither they nor the
// default route may give an origin to a global lookup. RD-instance
// peers and per-VRF Loc-RIBs are covered with crafted messages
// (internal/enrich TestVRFsAndDefaultRouteOverBMP).
func TestInteropGoBGPVRF(t *testing.T) {
	if testing.Short() {
		t.Skip("interop with gobgpd skipped in -short mode")
	}
	for _, bin := range []string{"gobgpd", "gobgp"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s (Debian package gobgpd): %v", bin, err)
		}
	}
	dir := t.TempDir()
	r := rib.New(rib.Options{Keep: time.Minute})
	defer r.Close()
	logs := &lab.Buffer{}
	st, err := Listen(Config{Host: "127.0.0.1"}, r, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- st.Serve(ctx) }()
	defer func() { cancel(); <-served }()

	const addr = "127.0.0.14"
	api := net.JoinHostPort(addr, fmt.Sprint(freePort(t, addr)))
	conf := filepath.Join(dir, "pe.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`[global.config]
  as = 65000
  router-id = %q
  port = -1

[[vrfs]]
  [vrfs.config]
    name = "red"
    id = 1
    rd = "65000:1"
    both-rt-list = ["65000:1"]

[[bmp-servers]]
  [bmp-servers.config]
    address = "127.0.0.1"
    port = %d
    route-monitoring-policy = "local-rib"
    sys-name = "pe-gobgpd"
`, addr, st.Addr().(*net.TCPAddr).Port)), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon(t, dir, "gobgpd-vrf", "gobgpd", "-f", conf, "--api-hosts", api, "--pprof-disable", "-p", "-l", "info")
	eventually(t, "gobgpd API", func() bool { return gobgpCLI(t, api, "global") == nil })
	for _, args := range [][]string{
		{"global", "rib", "-a", "ipv4", "add", "0.0.0.0/0", "aspath", "64500"},
		{"global", "rib", "-a", "ipv4", "add", "198.18.8.0/24", "aspath", "64496 15169"},
		// The VRF holds a shorter path for the same prefix, and one
		// prefix the global table lacks.
		{"vrf", "red", "rib", "-a", "ipv4", "add", "198.18.8.0/24", "aspath", "65001"},
		{"vrf", "red", "rib", "-a", "ipv4", "add", "198.18.9.0/24", "aspath", "64700"},
		// Sent after the VRF routes: once it is in, they were seen.
		{"global", "rib", "-a", "ipv4", "add", "198.18.10.0/24", "aspath", "64510"},
	} {
		if err := gobgpCLI(t, api, args...); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the last global route", func() bool { return r.Origin(netip.MustParseAddr("198.18.10.1")) == 64510 })
	// The VRF routes (VPNv4) and gobgpd's route-target membership route
	// were skipped.
	if n, _ := strconv.Atoi(seriesValue(gatherLines(t, st), "rfm_bmp_skipped_total", `reason="unsupported_family"`)); n < 2 {
		t.Errorf("%d updates skipped as unsupported family, want the 2 VPNv4 ones at least", n)
	}
	if c := r.Counts(); c.Routes4 != 3 {
		t.Errorf("%d IPv4 routes, want the 3 global ones", c.Routes4)
	}

	if got := r.Origin(netip.MustParseAddr("198.18.8.8")); got != 15169 {
		t.Errorf("Origin(198.18.8.8) = %d, want the global 15169", got)
	}
	if got := r.Origin(netip.MustParseAddr("198.18.9.1")); got != 0 {
		t.Errorf("Origin(198.18.9.1) = %d, want 0 (only the VRF and the default route cover it)", got)
	}
	if ri, ok := r.LookupRoute(netip.MustParseAddr("198.18.9.1")); !ok || ri.Prefix != netip.MustParsePrefix("0.0.0.0/0") ||
		ri.Origin != 64500 || ri.View != rib.LocRIB || !ri.Peer.Global() {
		t.Errorf("LookupRoute(198.18.9.1) = %+v, %v: want the default route of the default Loc-RIB", ri, ok)
	}
	if sum := r.Summary(); len(sum.VRFs) != 0 {
		t.Errorf("VRFs = %+v: gobgpd sends no VRF peer types", sum.VRFs)
	}
}
