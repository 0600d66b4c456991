// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stepbrobd/rfm/internal/enrich"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

// TestControlRIBVRFs: the control answers carry VRF routes apart from
// the global ones, with the distinguisher written as an RD.
func TestControlRIBVRFs(t *testing.T) {
	r := rib.New(rib.Options{})
	t.Cleanup(r.Close)
	router := rib.RouterKey{Addr: netip.MustParseAddr("127.0.0.1"), Name: "pe1"}
	const rd = 0x0001_c000_0201_0005 // 192.0.2.1:5 (RFC 4364 type 1)
	r.Update(func(tx *rib.Tx) {
		s := tx.Connect(router, "")
		g := tx.PeerUp(s, rib.PeerKey{Addr: netip.MustParseAddr("192.0.2.1")}, 64500, netip.Addr{})
		v := tx.PeerUp(s, rib.PeerKey{Type: 3, Distinguisher: rd, Addr: netip.IPv4Unspecified()}, 65000, netip.Addr{})
		tx.Announce(g, rib.PrePolicy, netip.MustParsePrefix("198.18.0.0/15"), 0, rib.SequencePath(64500, 15169))
		tx.Announce(v, rib.LocRIB, netip.MustParsePrefix("198.18.9.0/24"), 0, rib.SequencePath(64700))
	})
	c := controlAgent{a: &agent{rib: r, enricher: enrich.New(r, nil)}}

	lk, err := c.RIBLookup(context.Background(), netip.MustParseAddr("198.18.9.1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lk.Routes) != 1 || lk.Routes[0].Origin != 15169 || lk.FlowASN != 15169 {
		t.Errorf("global part = %+v, flow ASN %d; want the global route, origin 15169", lk.Routes, lk.FlowASN)
	}
	if len(lk.VRFs) != 1 || lk.VRFs[0].RD != "192.0.2.1:5" || lk.VRFs[0].RouterName != "pe1" || lk.VRFs[0].LabelsFlows ||
		len(lk.VRFs[0].Routes) != 1 || lk.VRFs[0].Routes[0].Origin != 64700 || lk.VRFs[0].Routes[0].View != "loc-rib" {
		t.Errorf("VRF part = %+v, want VRF 192.0.2.1:5 of pe1 with the Loc-RIB route, origin 64700", lk.VRFs)
	}

	sum, err := c.RIBSummary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.VRFs) != 1 || sum.VRFs[0].RD != "192.0.2.1:5" || sum.VRFs[0].Routes4 != 1 || sum.VRFs[0].Peers != 1 {
		t.Errorf("summary VRFs = %+v", sum.VRFs)
	}
	var rds []string
	for _, p := range sum.Routers[0].Peers {
		rds = append(rds, p.RD)
	}
	if len(rds) != 2 || rds[0] != "" || rds[1] != "192.0.2.1:5" {
		t.Errorf("peer RDs = %q, want none for the global peer and 192.0.2.1:5 for the VRF Loc-RIB", rds)
	}
}
