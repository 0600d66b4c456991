// SPDX-License-Identifier: AGPL-3.0-only

package lab

import (
	"fmt"
	"strings"
)

// GoBGPD is the configuration of one gobgpd in a test lab.
type GoBGPD struct {
	AS   int
	Addr string // router id, listen address and local address of every session
	Port int    // BGP port it listens on; also the neighbors' remote port
	// Neighbors are configured in this order.
	Neighbors []GoBGPNeighbor
	// NextHop4 and NextHop6, when set, become the next hop of every route
	// of that family the router exports: gobgpd and FRR reject a loopback
	// next hop as martian.
	NextHop4, NextHop6 string
	// BMP, when set, monitors every RIB view to a BMP station on
	// 127.0.0.1.
	BMP *GoBGPBMP
}

// GoBGPNeighbor is one BGP session of a GoBGPD.
type GoBGPNeighbor struct {
	Addr string
	AS   int
	IPv6 bool // also negotiate IPv6 unicast
	// Passive waits for the neighbor to connect. When both ends of a
	// session dial at once, gobgpd's collision handling can keep the
	// session down for longer than a test waits; one passive end avoids
	// the collision.
	Passive bool
}

// GoBGPBMP is a BMP station a GoBGPD reports to.
type GoBGPBMP struct {
	Port    int
	SysName string
}

// Config renders g as a gobgpd TOML config file.
func (g GoBGPD) Config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[global.config]\n  as = %d\n  router-id = %q\n  port = %d\n  local-address-list = [%q]\n", g.AS, g.Addr, g.Port, g.Addr)
	g.writeNextHopPolicy(&b)
	for _, n := range g.Neighbors {
		fmt.Fprintf(&b, `
[[neighbors]]
  [neighbors.config]
    neighbor-address = %q
    peer-as = %d
  [neighbors.transport.config]
    local-address = %q
    remote-port = %d
    passive-mode = %t
  [neighbors.timers.config]
    connect-retry = 1
    hold-time = 9
    keepalive-interval = 3
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
`, n.Addr, n.AS, g.Addr, g.Port, n.Passive)
		if n.IPv6 {
			b.WriteString(`  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
`)
		}
	}
	if g.BMP != nil {
		fmt.Fprintf(&b, `
[[bmp-servers]]
  [bmp-servers.config]
    address = "127.0.0.1"
    port = %d
    route-monitoring-policy = "all"
    sys-name = %q
`, g.BMP.Port, g.BMP.SysName)
	}
	return b.String()
}

// writeNextHopPolicy writes an export policy that sets the configured
// next hop per family and accepts everything else unchanged.
func (g GoBGPD) writeNextHopPolicy(b *strings.Builder) {
	families := []struct{ name, all, lengths, nextHop string }{
		{"v4", "0.0.0.0/0", "0..32", g.NextHop4},
		{"v6", "::/0", "0..128", g.NextHop6},
	}
	var sets, statements strings.Builder
	for _, f := range families {
		if f.nextHop == "" {
			continue
		}
		fmt.Fprintf(&sets, `
[[defined-sets.prefix-sets]]
  prefix-set-name = %q
  [[defined-sets.prefix-sets.prefix-list]]
    ip-prefix = %q
    masklength-range = %q
`, f.name, f.all, f.lengths)
		fmt.Fprintf(&statements, `  [[policy-definitions.statements]]
    name = %q
    [policy-definitions.statements.conditions.match-prefix-set]
      prefix-set = %q
    [policy-definitions.statements.actions]
      route-disposition = "accept-route"
    [policy-definitions.statements.actions.bgp-actions]
      set-next-hop = %q
`, f.name, f.name, f.nextHop)
	}
	if statements.Len() == 0 {
		return
	}
	b.WriteString(`[global.apply-policy.config]
  export-policy-list = ["nexthop"]
  default-export-policy = "accept-route"
`)
	b.WriteString(sets.String())
	b.WriteString("\n[[policy-definitions]]\n  name = \"nexthop\"\n")
	b.WriteString(statements.String())
}
