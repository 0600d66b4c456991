// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/stepbrobd/rfm/internal/control"
)

func ribCommand() *cobra.Command {
	cmd, f := controlGroup("rib", "Inspect the RIB the agent learns over BMP")
	summary := queryCommand(&cobra.Command{
		Use:   "summary",
		Short: "Routers, peers and route counts per family",
		Long: `Show the routes the agent holds per family, and every router that sent BMP
with its BGP peers (type, ASN, BGP ID, routes per family), then the VRFs
(per router and route distinguisher) kept apart from the global table and
whether they label flows (agent.enrich.rib.bmp.label_vrfs). Routes of a
router whose session ended stay for agent.enrich.rib.bmp.keep.`,
		Example: `  rfm rib summary
  rfm rib summary --json | jq '.routers[].peers | length'`,
	}, f, control.RIBSummaryCall(), renderRIBSummary)
	lookup := queryOneValue(&cobra.Command{
		Use:   "lookup ADDR",
		Short: "The routes of the longest prefix matching an address",
		Long: `Look ADDR up in the RIB: every global route of the longest matching prefix,
best first, with origin ASN, AS path, and the router, peer and view
(pre-policy, post-policy, loc-rib) it came from; then the same for each VRF
(by router and route distinguisher) holding a match; then the ASN flows get
and what the MMDB files say. A default route is shown but never gives flows
an origin AS.`,
		Example: `  rfm rib lookup 198.18.7.1
  rfm rib lookup 2001:db8::1 --json`,
	}, f, "one address", parseLookupAddr, control.RIBLookupCall, renderRIBLookup)
	cmd.AddCommand(summary, lookup)
	return cmd
}

// parseLookupAddr reads ADDR of `rib lookup`: an IPv4 or IPv6 address
// (a zone is dropped: routes have none).
func parseLookupAddr(s string) (netip.Addr, error) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("rib lookup: address %q: not an IPv4 or IPv6 address", s)
	}
	return addr.WithZone(""), nil
}
