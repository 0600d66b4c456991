// SPDX-License-Identifier: AGPL-3.0-only

package mmdb

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Test data lives in documentation and benchmarking ranges only.
type network struct {
	cidr string
	asn  uint32
	city string
}

var testNetworks = []network{
	{"198.18.0.0/24", 64500, "Zürich"},
	{"198.18.1.0/24", 64501, "Lyon"},
	{"198.19.0.0/16", 4200000000, "Osaka"},
	{"2001:db8::/48", 64510, "Porto"},
	{"2001:db8:1::/48", 64511, "Quito"},
}

// layout builds a database record of one vendor's shape.
type layout struct {
	name     string
	ipv4only bool // ip-location-db ships IPv4 and IPv6 in separate files
	asnType  string
	cityType string
	asn      func(n network) mmdbtype.Map
	city     func(n network) mmdbtype.Map
}

func names(en string) mmdbtype.Map {
	return mmdbtype.Map{"de": mmdbtype.String(en + " (de)"), "en": mmdbtype.String(en), "ja": mmdbtype.String("x")}
}

var layouts = []layout{
	{
		name:    "GeoLite2",
		asnType: "GeoLite2-ASN", cityType: "GeoLite2-City",
		asn: func(n network) mmdbtype.Map {
			return mmdbtype.Map{
				"autonomous_system_number":       mmdbtype.Uint32(n.asn),
				"autonomous_system_organization": mmdbtype.String("Example Org"),
			}
		},
		city: func(n network) mmdbtype.Map {
			return mmdbtype.Map{
				"city":      mmdbtype.Map{"geoname_id": mmdbtype.Uint32(1), "names": names(n.city)},
				"continent": mmdbtype.Map{"code": mmdbtype.String("EU"), "names": names("Europe")},
				"country":   mmdbtype.Map{"iso_code": mmdbtype.String("CH"), "names": names("Switzerland")},
				"location":  mmdbtype.Map{"latitude": mmdbtype.Float64(47.3), "longitude": mmdbtype.Float64(8.5)},
				"subdivisions": mmdbtype.Slice{
					mmdbtype.Map{"iso_code": mmdbtype.String("ZH"), "names": names("Zürich")},
				},
			}
		},
	},
	{
		name:    "DB-IP lite",
		asnType: "DBIP-ASN-Lite (compat=GeoLite2-ASN)", cityType: "DBIP-City-Lite",
		asn: func(n network) mmdbtype.Map {
			return mmdbtype.Map{
				"autonomous_system_organization": mmdbtype.String("Example Org"),
				"autonomous_system_number":       mmdbtype.Uint32(n.asn),
			}
		},
		city: func(n network) mmdbtype.Map {
			return mmdbtype.Map{
				"location":  mmdbtype.Map{"latitude": mmdbtype.Float64(47.3), "longitude": mmdbtype.Float64(8.5)},
				"country":   mmdbtype.Map{"names": names("Switzerland"), "is_in_european_union": mmdbtype.Bool(false)},
				"continent": mmdbtype.Map{"names": names("Europe")},
				"city":      mmdbtype.Map{"names": names(n.city)},
			}
		},
	},
	{
		name:     "ip-location-db",
		ipv4only: true,
		asnType:  "ip-location-db-asn", cityType: "ip-location-db-dbip-city",
		asn: func(n network) mmdbtype.Map {
			return mmdbtype.Map{
				"autonomous_system_number":       mmdbtype.Uint32(n.asn),
				"autonomous_system_organization": mmdbtype.String("Example Org"),
			}
		},
		city: func(n network) mmdbtype.Map {
			return mmdbtype.Map{
				"country_code": mmdbtype.String("CH"),
				"state1":       mmdbtype.String("Zurich"),
				"city":         mmdbtype.String(n.city),
				"postcode":     mmdbtype.String("8000"),
				"latitude":     mmdbtype.Float32(47.3),
				"longitude":    mmdbtype.Float32(8.5),
				"timezone":     mmdbtype.String("Europe/Zurich"),
			}
		},
	},
}

// writeDB writes a database of the given type and records to a file in
// dir and returns its path.
func writeDB(t testing.TB, dir, file, dbType string, ipv4only bool, record func(network) mmdbtype.Map) string {
	t.Helper()
	opts := mmdbwriter.Options{DatabaseType: dbType, IncludeReservedNetworks: true, RecordSize: 24}
	if ipv4only {
		opts.IPVersion = 4
	}
	w, err := mmdbwriter.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range testNetworks {
		p := netip.MustParsePrefix(n.cidr)
		if ipv4only && !p.Addr().Is4() {
			continue
		}
		_, ipn, err := net.ParseCIDR(n.cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Insert(ipn, record(n)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, file)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLayouts(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := Open(
				writeDB(t, dir, "asn.mmdb", l.asnType, l.ipv4only, l.asn),
				writeDB(t, dir, "city.mmdb", l.cityType, l.ipv4only, l.city))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			cases := []struct {
				addr string
				asn  uint32
				city string
				v6   bool
			}{
				{"198.18.0.1", 64500, "Zürich", false},
				{"198.18.1.255", 64501, "Lyon", false},
				{"198.19.200.7", 4200000000, "Osaka", false},
				{"::ffff:198.18.1.1", 64501, "Lyon", false},
				{"198.18.2.1", 0, "", false},
				{"2001:db8::1", 64510, "Porto", true},
				{"2001:db8:1:ffff::1", 64511, "Quito", true},
				{"2001:db8:2::1", 0, "", true},
				{"", 0, "", false},
			}
			for _, c := range cases {
				var a netip.Addr
				if c.addr != "" {
					a = netip.MustParseAddr(c.addr)
				}
				wantASN, wantCity := c.asn, c.city
				if c.v6 && l.ipv4only {
					wantASN, wantCity = 0, ""
				}
				if got := db.ASN(a); got != wantASN {
					t.Errorf("ASN(%s) = %d, want %d", c.addr, got, wantASN)
				}
				if got := db.City(a); got != wantCity {
					t.Errorf("City(%s) = %q, want %q", c.addr, got, wantCity)
				}
			}
		})
	}
}

func TestOptionalDatabases(t *testing.T) {
	dir := t.TempDir()
	l := layouts[0]
	asnOnly, err := Open(writeDB(t, dir, "asn.mmdb", l.asnType, false, l.asn), "")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("198.18.0.1")
	if asnOnly.ASN(a) != 64500 || asnOnly.City(a) != "" {
		t.Errorf("ASN-only database: %d %q", asnOnly.ASN(a), asnOnly.City(a))
	}
	none, err := Open("", "")
	if err != nil || none.ASN(a) != 0 || none.City(a) != "" {
		t.Errorf("no databases: %v %d %q", err, none.ASN(a), none.City(a))
	}
	var nilDB *DB
	if nilDB.ASN(a) != 0 || nilDB.City(a) != "" || nilDB.Generation() != 0 || nilDB.Reopen() != nil || nilDB.Close() != nil {
		t.Error("nil DB answers")
	}
	// A city database given as the ASN database finds no ASN.
	wrong, err := Open(writeDB(t, dir, "city.mmdb", l.cityType, false, l.city), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := wrong.ASN(a); got != 0 {
		t.Errorf("ASN from a city database = %d, want 0", got)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	good := writeDB(t, dir, "good.mmdb", "GeoLite2-ASN", false, layouts[0].asn)
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("this is not a MaxMind database\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.mmdb")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.mmdb")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(truncated, data[:len(data)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.mmdb")
	cases := []struct {
		name       string
		asn, city  string
		key, cause string
	}{
		{"missing asn", missing, "", "agent.enrich.mmdb.asn_db", "no such file or directory"},
		{"missing city", good, missing, "agent.enrich.mmdb.city_db", "no such file or directory"},
		{"directory", dir, "", "agent.enrich.mmdb.asn_db", "is a directory"},
		{"text file", "", text, "agent.enrich.mmdb.city_db", "invalid MaxMind DB"},
		{"empty file", empty, "", "agent.enrich.mmdb.asn_db", "empty"},
		{"truncated file", truncated, "", "agent.enrich.mmdb.asn_db", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, err := Open(c.asn, c.city)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			path := c.asn
			if strings.HasSuffix(c.key, "city_db") {
				path = c.city
			}
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, c.key+` "`+path+`": `) || !strings.Contains(msg, c.cause) {
				t.Errorf("error %q: want one line starting with %s %q and naming %q", msg, c.key, path, c.cause)
			}
			if strings.Count(msg, path) != 1 {
				t.Errorf("error %q names the path more than once", msg)
			}
		})
	}
	if os.Geteuid() != 0 {
		unreadable := filepath.Join(dir, "unreadable.mmdb")
		if err := os.WriteFile(unreadable, data, 0o000); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(unreadable, ""); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("unreadable file: %v", err)
		}
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	l := layouts[0]
	asnPath := writeDB(t, dir, "asn.mmdb", l.asnType, false, l.asn)
	cityPath := writeDB(t, dir, "city.mmdb", l.cityType, false, l.city)
	db, err := Open(asnPath, cityPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a := netip.MustParseAddr("198.18.0.1")
	g0 := db.Generation()

	// Lookups keep running while files are swapped.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if asn := db.ASN(a); asn != 64500 && asn != 64999 {
				t.Errorf("ASN during reopen = %d", asn)
				return
			}
			db.City(a)
		}
	}()

	// A new file is renamed over the old one, as updaters do.
	next := writeDB(t, dir, "asn.next", l.asnType, false, func(n network) mmdbtype.Map {
		m := l.asn(n)
		m["autonomous_system_number"] = mmdbtype.Uint32(64999)
		return m
	})
	if err := os.Rename(next, asnPath); err != nil {
		t.Fatal(err)
	}
	if err := db.Reopen(); err != nil {
		t.Fatal(err)
	}
	if got := db.ASN(a); got != 64999 {
		t.Errorf("ASN after reopen = %d, want 64999", got)
	}
	if db.City(a) != "Zürich" {
		t.Errorf("City after reopen = %q", db.City(a))
	}
	g1 := db.Generation()
	if g1 == g0 {
		t.Error("generation unchanged by Reopen")
	}

	// A broken file leaves the old databases in place. It is renamed
	// over the old one: writing a mapped file in place would crash.
	broken := filepath.Join(dir, "city.broken")
	if err := os.WriteFile(broken, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, cityPath); err != nil {
		t.Fatal(err)
	}
	err = db.Reopen()
	if err == nil || !strings.HasPrefix(err.Error(), `agent.enrich.mmdb.city_db "`+cityPath+`"`) {
		t.Errorf("Reopen with a broken city file: %v", err)
	}
	if db.ASN(a) != 64999 || db.City(a) != "Zürich" || db.Generation() != g1 {
		t.Errorf("failed Reopen changed answers: %d %q gen %d", db.ASN(a), db.City(a), db.Generation())
	}
	stop.Store(true)
	wg.Wait()
}

func BenchmarkLookup(b *testing.B) {
	dir := b.TempDir()
	l := layouts[0]
	db, err := Open(
		writeDB(b, dir, "asn.mmdb", l.asnType, false, l.asn),
		writeDB(b, dir, "city.mmdb", l.cityType, false, l.city))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	a := netip.MustParseAddr("198.18.1.7")
	b.Run("asn", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if db.ASN(a) == 0 {
				b.Fatal("no ASN")
			}
		}
	})
	b.Run("city", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if db.City(a) == "" {
				b.Fatal("no city")
			}
		}
	})
}
