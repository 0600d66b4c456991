// SPDX-License-Identifier: AGPL-3.0-only

package enrich

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	gobmp "github.com/osrg/gobgp/v4/pkg/packet/bmp"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/enrich/bmp"
	"github.com/stepbrobd/rfm/internal/enrich/mmdb"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

// Route distinguishers of the test VRFs, encoded by hand from RFC 4364
// 4.2: type 0 with ASN 65000 (0xfde8) and number 1; type 1 with
// 192.0.2.1 and number 5.
const (
	rdASN  = 0x0000_fde8_0000_0001 // 65000:1
	rdIPv4 = 0x0001_c000_0201_0005 // 192.0.2.1:5
)

// vrfStream is what a PE router (AS 65000) sends over BMP: a global
// peer (AS 64500) with a default route, an RD-instance peer of VRF
// 65000:1 (AS 65001) with a shorter path for the same prefix, a VRF
// Loc-RIB (192.0.2.1:5) with a prefix the global table lacks, and the
// default Loc-RIB with a locally originated prefix.
func vrfStream(t *testing.T) []byte {
	t.Helper()
	var out []byte
	add := func(m *gobmp.BMPMessage) {
		b, err := m.Serialize()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	hdr := func(typ uint8, dist uint64, peer string, asn uint32) gobmp.BMPPeerHeader {
		return *gobmp.NewBMPPeerHeader(typ, 0, dist, netip.MustParseAddr(peer), asn, netip.MustParseAddr("192.0.2.254"), 0)
	}
	open := func(asn uint32) *bgp.BGPMessage {
		m, err := bgp.NewBGPOpenMessage(uint16(asn), 90, netip.MustParseAddr("192.0.2.254"), []bgp.OptionParameterInterface{
			bgp.NewOptionParameterCapability([]bgp.ParameterCapabilityInterface{
				bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC), bgp.NewCapFourOctetASNumber(asn)})})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	nextHop, err := bgp.NewPathAttributeNextHop(netip.MustParseAddr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	announce := func(h gobmp.BMPPeerHeader, prefix string, path ...uint32) {
		nlri, err := bgp.NewIPAddrPrefix(netip.MustParsePrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		var segs []bgp.AsPathParamInterface
		if len(path) > 0 {
			segs = append(segs, bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, path))
		}
		upd := bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{
			bgp.NewPathAttributeOrigin(0), bgp.NewPathAttributeAsPath(segs), nextHop,
		}, []bgp.PathNLRI{{NLRI: nlri}})
		add(gobmp.NewBMPRouteMonitoring(h, upd))
	}
	add(gobmp.NewBMPInitiation([]gobmp.BMPInfoTLVInterface{
		gobmp.NewBMPInfoTLVString(gobmp.BMP_INIT_TLV_TYPE_SYS_NAME, "pe1")}))
	global := hdr(gobmp.BMP_PEER_TYPE_GLOBAL, 0, "192.0.2.1", 64500)
	vrfPeer := hdr(gobmp.BMP_PEER_TYPE_L3VPN, rdASN, "192.0.2.2", 65001)
	add(gobmp.NewBMPPeerUpNotification(global, netip.MustParseAddr("192.0.2.254"), 179, 40000, open(65000), open(64500)))
	add(gobmp.NewBMPPeerUpNotification(vrfPeer, netip.MustParseAddr("192.0.2.254"), 179, 40001, open(65000), open(65001)))
	announce(global, "0.0.0.0/0", 64500)
	announce(global, "198.18.8.0/24", 64500, 64496, 15169)
	announce(vrfPeer, "198.18.8.0/24", 65001)
	announce(hdr(gobmp.BMP_PEER_TYPE_LOCAL_RIB, rdIPv4, "0.0.0.0", 65000), "198.18.9.0/24", 64700)
	announce(hdr(gobmp.BMP_PEER_TYPE_LOCAL_RIB, 0, "0.0.0.0", 65000), "198.18.10.0/24")
	return out
}

// feedStation runs a BMP station with cfg over r, sends stream as one
// router and waits until r holds routes routes.
func feedStation(t *testing.T, cfg config.BMP, r *rib.RIB, stream []byte, routes int) {
	t.Helper()
	cfg.Host, cfg.Port = "127.0.0.1", 0
	sc, err := cfg.Station()
	if err != nil {
		t.Fatal(err)
	}
	st, err := bmp.Listen(sc, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := net.Dial("tcp", st.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write(stream); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c := r.Counts(); c.Routes4 != routes; c = r.Counts() {
		if time.Now().After(deadline) {
			t.Fatalf("RIB holds %d IPv4 routes, want %d", c.Routes4, routes)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestVRFsAndDefaultRouteOverBMP(t *testing.T) {
	dir := t.TempDir()
	asnPath := filepath.Join(dir, "asn.mmdb")
	writeDB(t, asnPath, "GeoLite2-ASN", map[string]mmdbtype.Map{"198.18.0.0/15": asnRec(64999)})
	db, err := mmdb.Open(asnPath, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	for _, c := range []struct {
		name   string
		labels []string
		want   map[string]uint32
	}{
		{"global only", nil, map[string]uint32{
			"198.18.8.8":  15169, // global path, though the VRF's is shorter
			"198.18.9.1":  64999, // only in a VRF; past the default, the MMDB
			"198.19.0.1":  64999, // only the default route matches: the MMDB
			"198.18.10.1": 65000, // default Loc-RIB, empty path: the router's AS
		}},
		{"label_vrfs 192.0.2.1:5", []string{"192.0.2.1:5"}, map[string]uint32{
			"198.18.8.8":  15169, // 65000:1 is not listed
			"198.18.9.1":  64700, // the listed VRF's route
			"198.19.0.1":  64999,
			"198.18.10.1": 65000,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := rib.New(rib.Options{})
			t.Cleanup(r.Close)
			feedStation(t, config.BMP{LabelVRFs: c.labels}, r, vrfStream(t), 5)
			e := New(r, db)
			for a, want := range c.want {
				if got := e.ASN(netip.MustParseAddr(a)); got != want {
					t.Errorf("ASN(%s) = %d, want %d", a, got, want)
				}
			}
			vr := r.LookupVRFs(netip.MustParseAddr("198.18.8.8"))
			if len(vr) != 1 || vr[0].VRF.Distinguisher != rdASN || vr[0].VRF.Router.Name != "pe1" ||
				vr[0].Routes[0].Origin != 65001 || vr[0].Routes[0].Peer.Type != gobmp.BMP_PEER_TYPE_L3VPN {
				t.Errorf("LookupVRFs(198.18.8.8) = %+v, want VRF 65000:1 of pe1, origin 65001", vr)
			}
			vr = r.LookupVRFs(netip.MustParseAddr("198.18.9.1"))
			if len(vr) != 1 || vr[0].VRF.Distinguisher != rdIPv4 || vr[0].Routes[0].Origin != 64700 ||
				vr[0].Routes[0].View != rib.LocRIB || vr[0].LabelsFlows != (c.labels != nil) {
				t.Errorf("LookupVRFs(198.18.9.1) = %+v, want the Loc-RIB of VRF 192.0.2.1:5, origin 64700", vr)
			}
			if ri, ok := r.LookupRoute(netip.MustParseAddr("198.19.0.1")); !ok || ri.Prefix.Bits() != 0 {
				t.Errorf("LookupRoute(198.19.0.1) = %+v, %v: want the default route, still shown", ri, ok)
			}
		})
	}
}
