// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// routeEnricher gives flows to 198.19.0.0/16 a BGP route with a next hop
// and a default route (next hop, prefix length 0) to anything else in
// IPv6; IPv4 elsewhere has no route.
type routeEnricher struct{}

func (routeEnricher) Generation() uint64 { return 1 }

func (routeEnricher) Enrich(_, dst netip.Addr) flow.Labels {
	switch {
	case netip.MustParsePrefix("198.19.0.0/16").Contains(dst):
		return flow.Labels{DstASN: 64501, BGP: flow.BGP{NextHop: netip.MustParseAddr("::ffff:198.18.0.2").As16(), DstPrefixLen: 16}}
	case dst.Is6():
		return flow.Labels{BGP: flow.BGP{NextHop: netip.MustParseAddr("2001:db8::fe").As16()}}
	}
	return flow.Labels{}
}

// TestControlFlowsBGPContext: /v1/flows carries the destination's BGP
// next hop (IPv4 unmapped) and prefix length, and leaves both out of the
// JSON of a flow without a route.
func TestControlFlowsBGPContext(t *testing.T) {
	tab := flow.NewTable(flow.Options{Enricher: routeEnricher{}})
	ev := func(dst string, sport uint16) datapath.Event {
		e := datapath.Event{Ifindex: 2, Proto: 17, SrcPort: sport, DstPort: 53, Len: 100, SampleRate: 1, BootNs: 1}
		src := "198.18.0.1"
		if strings.Contains(dst, ":") {
			src = "2001:db8::1"
		}
		// As16 of an IPv4 address is v4-mapped, as events carry it.
		e.Src, e.Dst = netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
		return e
	}
	tab.UpdateBatch([]datapath.Event{ev("198.19.0.5", 1), ev("2001:db8:5::2", 2), ev("198.18.0.9", 3)})
	a := &agent{dp: &datapath.Datapath{}, table: tab}
	a.sampleRate.Store(1)
	got, err := controlAgent{a: a}.Flows(context.Background(), control.FlowsArgs{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint16]string{
		1: `"bgp_next_hop":"198.18.0.2","dst_prefix_len":16`,
		2: `"bgp_next_hop":"2001:db8::fe"`,
		3: ``,
	}
	if len(got.Flows) != len(want) {
		t.Fatalf("%d flows, want %d: %+v", len(got.Flows), len(want), got.Flows)
	}
	for _, f := range got.Flows {
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		js := string(b)
		w := want[f.SrcPort]
		if (w != "" && !strings.Contains(js, w)) || (w == "" && (strings.Contains(js, "bgp_next_hop") || strings.Contains(js, "dst_prefix_len"))) ||
			(f.SrcPort == 2 && strings.Contains(js, "dst_prefix_len")) {
			t.Errorf("flow from port %d: JSON %s, want %q and nothing else of the BGP context", f.SrcPort, js, w)
		}
	}
}
