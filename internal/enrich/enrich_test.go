// SPDX-License-Identifier: AGPL-3.0-only

package enrich

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/stepbrobd/rfm/internal/enrich/mmdb"
	"github.com/stepbrobd/rfm/internal/enrich/rib"
	"github.com/stepbrobd/rfm/internal/flow"
)

// writeDB writes an MMDB with one record per network.
func writeDB(t testing.TB, path, dbType string, records map[string]mmdbtype.Map) {
	t.Helper()
	w, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, rec := range records {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Insert(n, rec); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := w.WriteTo(f); err != nil {
		t.Fatal(err)
	}
}

func asnRec(n uint32) mmdbtype.Map {
	return mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(n)}
}

func cityRec(name string) mmdbtype.Map {
	return mmdbtype.Map{"city": mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(name)}}}
}

// fixture: a RIB with routes for 198.18.0.0/24 (origin 64500),
// 198.18.2.0/24 (AS_SET, origin unknown) and 2001:db8:1::/48 (origin
// 64510); an MMDB knowing 198.18.0.0/16 and 2001:db8::/32 with other
// ASNs, and cities.
func fixture(t *testing.T) (*rib.RIB, *mmdb.DB, string) {
	t.Helper()
	dir := t.TempDir()
	asnPath := filepath.Join(dir, "asn.mmdb")
	writeDB(t, asnPath, "GeoLite2-ASN", map[string]mmdbtype.Map{
		"198.18.0.0/16": asnRec(64999), "2001:db8::/32": asnRec(64998),
	})
	cityPath := filepath.Join(dir, "city.mmdb")
	writeDB(t, cityPath, "GeoLite2-City", map[string]mmdbtype.Map{
		"198.18.0.0/16": cityRec("Bern"), "2001:db8::/32": cityRec("Graz"),
	})
	db, err := mmdb.Open(asnPath, cityPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	r := rib.New(rib.Options{})
	t.Cleanup(r.Close)
	r.Update(func(tx *rib.Tx) {
		s := tx.Connect(rib.RouterKey{Addr: netip.MustParseAddr("127.0.0.1"), Name: "r1"}, "")
		p := tx.PeerUp(s, rib.PeerKey{Addr: netip.MustParseAddr("192.0.2.1")}, 65001, netip.Addr{})
		tx.Announce(p, rib.PrePolicy, netip.MustParsePrefix("198.18.0.0/24"), 0, rib.SequencePath(65001, 64500).WithAttrs(rib.Attrs{
			NextHop: netip.MustParseAddr("192.0.2.1"), LargeCommunities: []rib.LargeCommunity{{Global: 65001, Local1: 1, Local2: 2}}}))
		tx.Announce(p, rib.PrePolicy, netip.MustParsePrefix("198.18.2.0/24"), 0, rib.MakePath(
			rib.Segment{Type: rib.ASSequence, ASNs: []uint32{65001}},
			rib.Segment{Type: rib.ASSet, ASNs: []uint32{64501, 64502}}))
		tx.Announce(p, rib.PrePolicy, netip.MustParsePrefix("2001:db8:1::/48"), 0, rib.SequencePath(65002, 64510).WithAttrs(rib.Attrs{
			NextHop: netip.MustParseAddr("2001:db8::ff"), Communities: []uint32{65002<<16 | 300}}))
	})
	return r, db, asnPath
}

func TestEnrich(t *testing.T) {
	r, db, _ := fixture(t)
	a := netip.MustParseAddr
	cases := []struct {
		name     string
		e        *Enricher
		src, dst string
		want     flow.Labels
	}{
		// The destination is MMDB-only: its BGP context is zero.
		{"RIB first, MMDB fallback", New(r, db), "198.18.0.9", "198.18.1.9",
			flow.Labels{SrcASN: 64500, DstASN: 64999, SrcCity: "Bern", DstCity: "Bern",
				BGP: flow.BGP{PrevAS: 65001, SrcPrefixLen: 24}}},
		// An AS_SET origin falls back to the MMDB, the route's context stays.
		{"unknown RIB origin falls back", New(r, db), "198.18.2.9", "2001:db8:1::9",
			flow.Labels{SrcASN: 64999, DstASN: 64510, SrcCity: "Bern", DstCity: "Graz",
				BGP: flow.BGP{PrevAS: 65001, SrcPrefixLen: 24, NextAS: 65002, DstPrefixLen: 48,
					NextHop: netip.MustParseAddr("2001:db8::ff").As16(), Communities: "\xfd\xea\x01\x2c"}}},
		{"destination context", New(r, db), "2001:db8:1::9", "198.18.0.9",
			flow.Labels{SrcASN: 64510, DstASN: 64500, SrcCity: "Graz", DstCity: "Bern",
				BGP: flow.BGP{PrevAS: 65002, SrcPrefixLen: 48, NextAS: 65001, DstPrefixLen: 24,
					NextHop:          netip.MustParseAddr("::ffff:192.0.2.1").As16(),
					LargeCommunities: "\x00\x00\xfd\xe9\x00\x00\x00\x01\x00\x00\x00\x02"}}},
		{"nobody knows", New(r, db), "127.0.0.1", "::1", flow.Labels{}},
		{"RIB only", New(r, nil), "198.18.0.9", "198.18.1.9", flow.Labels{SrcASN: 64500, BGP: flow.BGP{PrevAS: 65001, SrcPrefixLen: 24}}},
		{"MMDB only", New(nil, db), "198.18.0.9", "2001:db8:1::9",
			flow.Labels{SrcASN: 64999, DstASN: 64998, SrcCity: "Bern", DstCity: "Graz"}},
		{"no backends", New(nil, nil), "198.18.0.9", "2001:db8:1::9", flow.Labels{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.e.Enrich(a(c.src), a(c.dst)); got != c.want {
				t.Errorf("Enrich(%s, %s) = %+v, want %+v", c.src, c.dst, got, c.want)
			}
		})
	}
}

func TestGeneration(t *testing.T) {
	r, db, asnPath := fixture(t)
	e := New(r, db)
	g0 := e.Generation()
	r.Update(func(tx *rib.Tx) { tx.Connect(rib.RouterKey{Addr: netip.MustParseAddr("127.0.0.2")}, "") })
	g1 := e.Generation()
	if g1 == g0 {
		t.Error("generation unchanged by a RIB change")
	}
	writeDB(t, asnPath+".new", "GeoLite2-ASN", map[string]mmdbtype.Map{"198.18.0.0/16": asnRec(64997)})
	if err := os.Rename(asnPath+".new", asnPath); err != nil {
		t.Fatal(err)
	}
	if err := db.Reopen(); err != nil {
		t.Fatal(err)
	}
	if e.Generation() == g1 {
		t.Error("generation unchanged by reopened databases")
	}
	if got := e.ASN(netip.MustParseAddr("198.18.1.1")); got != 64997 {
		t.Errorf("ASN after reopen = %d", got)
	}
	if New(nil, nil).Generation() != 0 {
		t.Error("generation without backends")
	}
}

func BenchmarkEnrich(b *testing.B) {
	dir := b.TempDir()
	asnPath, cityPath := filepath.Join(dir, "asn.mmdb"), filepath.Join(dir, "city.mmdb")
	writeDB(b, asnPath, "GeoLite2-ASN", map[string]mmdbtype.Map{"198.18.0.0/16": asnRec(64999)})
	writeDB(b, cityPath, "GeoLite2-City", map[string]mmdbtype.Map{"198.18.0.0/16": cityRec("Bern")})
	db, err := mmdb.Open(asnPath, cityPath)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	r := rib.New(rib.Options{})
	defer r.Close()
	r.Update(func(tx *rib.Tx) {
		s := tx.Connect(rib.RouterKey{Addr: netip.MustParseAddr("127.0.0.1")}, "")
		p := tx.PeerUp(s, rib.PeerKey{Addr: netip.MustParseAddr("192.0.2.1")}, 65001, netip.Addr{})
		tx.Announce(p, rib.PrePolicy, netip.MustParsePrefix("198.18.0.0/24"), 0, rib.SequencePath(65001, 64500).WithAttrs(rib.Attrs{
			NextHop: netip.MustParseAddr("192.0.2.1"), LargeCommunities: []rib.LargeCommunity{{Global: 65001, Local1: 1, Local2: 2}}}))
	})
	e := New(r, db)
	src, dst := netip.MustParseAddr("198.18.0.9"), netip.MustParseAddr("198.18.1.9")
	b.ReportAllocs()
	for b.Loop() {
		e.Enrich(src, dst)
	}
}

// BenchmarkEnrichBothRouted is BenchmarkEnrich with a route for both
// addresses, so both lookups also read the BGP context (next hop, first
// AS, communities).
func BenchmarkEnrichBothRouted(b *testing.B) {
	r := rib.New(rib.Options{})
	defer r.Close()
	r.Update(func(tx *rib.Tx) {
		s := tx.Connect(rib.RouterKey{Addr: netip.MustParseAddr("127.0.0.1")}, "")
		p := tx.PeerUp(s, rib.PeerKey{Addr: netip.MustParseAddr("192.0.2.1")}, 65001, netip.Addr{})
		attrs := rib.Attrs{NextHop: netip.MustParseAddr("192.0.2.1"), Communities: []uint32{65001<<16 | 1, 65001<<16 | 2}}
		tx.Announce(p, rib.PrePolicy, netip.MustParsePrefix("198.18.0.0/24"), 0, rib.SequencePath(65001, 64500).WithAttrs(attrs))
		tx.Announce(p, rib.PrePolicy, netip.MustParsePrefix("198.18.1.0/24"), 0, rib.SequencePath(65001, 64501).WithAttrs(attrs))
	})
	e := New(r, nil)
	src, dst := netip.MustParseAddr("198.18.0.9"), netip.MustParseAddr("198.18.1.9")
	b.ReportAllocs()
	for b.Loop() {
		e.Enrich(src, dst)
	}
}
