// SPDX-License-Identifier: AGPL-3.0-only

// Package enrich tests, through the real agent binary, that enrichment
// labels reach the flow metrics: ASNs from a BMP-fed RIB (fed by real
// gobgpd routers) first and the MMDB second, cities from the MMDB, and
// that withdraws, Peer Down and a router going away fall back to the
// MMDB.
package enrich

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/stepbrobd/rfm/test/lab"
)

// agentBin is the rfm binary built for this run; skipReason is set
// instead when the lab cannot run here.
var agentBin, skipReason string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	switch {
	case os.Geteuid() != 0:
		skipReason = "enrichment lab needs root (network namespaces, eBPF): skipped"
	default:
		for _, bin := range []string{"gobgpd", "gobgp", "ip", "ethtool"} {
			if _, err := exec.LookPath(bin); err != nil {
				skipReason = fmt.Sprintf("enrichment lab needs %s (Debian packages gobgpd, iproute2, ethtool): %v", bin, err)
				break
			}
		}
	}
	if skipReason != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "rfm-enrich-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "enrich test: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if agentBin, err = lab.BuildAgent(dir); err != nil {
		fmt.Fprintf(os.Stderr, "enrich test: build agent: %v\n", err)
		return 1
	}
	return m.Run()
}

func requireLab(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
