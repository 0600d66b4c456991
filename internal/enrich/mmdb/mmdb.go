// SPDX-License-Identifier: AGPL-3.0-only

// Package mmdb looks up ASNs and city names in MaxMind DB files.
//
// Accepted layouts: the ASN database needs autonomous_system_number at
// the top level of a record (MaxMind GeoLite2-ASN, DB-IP ASN lite, and
// ip-location-db). The city database needs either city.names.en (MaxMind
// GeoLite2-City, DB-IP city lite) or a plain string city
// (ip-location-db's DB-IP and GeoLite2 city builds). Records are decoded
// by hand: only the needed keys are read, nothing else is materialised.
//
// Files are memory-mapped. Replace a database by renaming a new file
// over it (then Reopen); writing into the open file in place (cp, or a
// download straight to the path) truncates the mapping under the reader
// and the process dies with SIGBUS.
package mmdb

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	maxminddb "github.com/oschwald/maxminddb-golang/v2"
	"github.com/oschwald/maxminddb-golang/v2/mmdbdata"
)

// Config keys, for error messages.
const (
	asnKey  = "agent.enrich.mmdb.asn_db"
	cityKey = "agent.enrich.mmdb.city_db"
)

// DB holds the ASN and city databases. Either may be absent. Lookups are
// safe for concurrent use and never block; Reopen swaps in new files
// atomically.
type DB struct {
	asnPath, cityPath string

	asn  atomic.Pointer[reader]
	city atomic.Pointer[reader]
	gen  atomic.Uint64

	mu sync.Mutex // serialises Reopen and Close
}

type reader struct {
	*maxminddb.Reader
	v4only bool // an IPv4 database: IPv6 lookups find nothing

	// Decoded records by data offset: many networks share a record and
	// flows repeat addresses, so most lookups skip the decoding.
	// Direct-mapped; a reopened database starts with an empty cache.
	cache [cacheSize]atomic.Pointer[cached]
}

const cacheSize = 4096

type cached struct {
	offset uintptr
	asn    uint32
	city   string
}

func (r *reader) slot(offset uintptr) *atomic.Pointer[cached] {
	return &r.cache[uint64(offset)*0x9e3779b97f4a7c15>>(64-12)]
}

// Open opens the databases at asnPath and cityPath; an empty path leaves
// that database out. A missing, unreadable or malformed file fails with
// one line naming the config key and the path.
func Open(asnPath, cityPath string) (*DB, error) {
	d := &DB{asnPath: asnPath, cityPath: cityPath}
	asn, city, err := d.open()
	if err != nil {
		return nil, err
	}
	d.asn.Store(asn)
	d.city.Store(city)
	return d, nil
}

func (d *DB) open() (asn, city *reader, err error) {
	if asn, err = openReader(asnKey, d.asnPath); err != nil {
		return nil, nil, err
	}
	if city, err = openReader(cityKey, d.cityPath); err != nil {
		if asn != nil {
			asn.Close()
		}
		return nil, nil, err
	}
	return asn, city, nil
}

func openReader(key, path string) (*reader, error) {
	if path == "" {
		return nil, nil
	}
	if fi, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s %q: %w", key, path, unwrapPath(err))
	} else if fi.IsDir() {
		return nil, fmt.Errorf("%s %q: is a directory", key, path)
	}
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", key, path, unwrapPath(err))
	}
	switch r.Metadata.IPVersion {
	case 4, 6:
	default:
		r.Close()
		return nil, fmt.Errorf("%s %q: not a MaxMind DB: ip_version %d", key, path, r.Metadata.IPVersion)
	}
	return &reader{Reader: r, v4only: r.Metadata.IPVersion == 4}, nil
}

// Reopen reads both files again and swaps them in. On error the old
// databases stay in use. Lookups running meanwhile finish on the old
// ones; their memory is released once no lookup uses them.
func (d *DB) Reopen() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	asn, city, err := d.open()
	if err != nil {
		return err
	}
	// The old readers are not closed: a concurrent lookup may still use
	// them. The runtime unmaps a reader once it is unreachable.
	d.asn.Store(asn)
	d.city.Store(city)
	d.gen.Add(1)
	return nil
}

// Generation changes when the databases are reopened.
func (d *DB) Generation() uint64 {
	if d == nil {
		return 0
	}
	return d.gen.Load()
}

// Close closes the databases. No lookup may run during or after Close.
func (d *DB) Close() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, p := range []*atomic.Pointer[reader]{&d.asn, &d.city} {
		if r := p.Swap(nil); r != nil {
			errs = append(errs, r.Close())
		}
	}
	return errors.Join(errs...)
}

// unwrapPath drops the path from an *fs.PathError: the message names it
// already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

func (r *reader) lookup(a netip.Addr) (maxminddb.Result, bool) {
	if r == nil || !a.IsValid() {
		return maxminddb.Result{}, false
	}
	a = a.Unmap()
	if r.v4only && !a.Is4() {
		return maxminddb.Result{}, false
	}
	res := r.Lookup(a)
	return res, res.Found()
}

// ASN returns the autonomous system number for a, 0 if unknown.
func (d *DB) ASN(a netip.Addr) uint32 {
	if d == nil {
		return 0
	}
	r := d.asn.Load()
	res, ok := r.lookup(a)
	if !ok {
		return 0
	}
	slot := r.slot(res.Offset())
	if c := slot.Load(); c != nil && c.offset == res.Offset() {
		return c.asn
	}
	var rec asnRecord
	if res.Decode(&rec) != nil {
		return 0
	}
	slot.Store(&cached{offset: res.Offset(), asn: uint32(rec)})
	return uint32(rec)
}

// City returns the English city name for a, "" if unknown.
func (d *DB) City(a netip.Addr) string {
	if d == nil {
		return ""
	}
	r := d.city.Load()
	res, ok := r.lookup(a)
	if !ok {
		return ""
	}
	slot := r.slot(res.Offset())
	if c := slot.Load(); c != nil && c.offset == res.Offset() {
		return c.city
	}
	var rec cityRecord
	if res.Decode(&rec) != nil {
		return ""
	}
	slot.Store(&cached{offset: res.Offset(), city: string(rec)})
	return string(rec)
}

// asnRecord decodes autonomous_system_number and skips the rest.
type asnRecord uint32

func (v *asnRecord) UnmarshalMaxMindDBCursor(c mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	return eachKey(c, func(key []byte, val mmdbdata.Cursor) (mmdbdata.Cursor, error) {
		if string(key) != "autonomous_system_number" {
			return val.Skip()
		}
		n, next, err := val.ReadUint()
		if err != nil {
			return next, mmdbdata.NormalizeUnmarshalError[uint32](err)
		}
		if n > math.MaxUint32 {
			return next, mmdbdata.NewUnmarshalTypeError[uint32](n)
		}
		*v = asnRecord(n)
		return next, nil
	})
}

// cityRecord decodes city.names.en, or city when it is a string.
type cityRecord string

func (v *cityRecord) UnmarshalMaxMindDBCursor(c mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	return eachKey(c, func(key []byte, val mmdbdata.Cursor) (mmdbdata.Cursor, error) {
		if string(key) != "city" {
			return val.Skip()
		}
		kind, err := val.Kind()
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
		if kind == mmdbdata.KindString {
			s, next, err := val.ReadString()
			*v = cityRecord(s)
			return next, err
		}
		return eachKey(val, func(key []byte, val mmdbdata.Cursor) (mmdbdata.Cursor, error) {
			if string(key) != "names" {
				return val.Skip()
			}
			return eachKey(val, func(key []byte, val mmdbdata.Cursor) (mmdbdata.Cursor, error) {
				if string(key) != "en" {
					return val.Skip()
				}
				s, next, err := val.ReadString()
				*v = cityRecord(s)
				return next, err
			})
		})
	})
}

// eachKey walks the map at c, handing each value to f, which returns the
// cursor after the value.
func eachKey(c mmdbdata.Cursor, f func(key []byte, val mmdbdata.Cursor) (mmdbdata.Cursor, error)) (mmdbdata.Cursor, error) {
	m, err := c.Map()
	if err != nil {
		return mmdbdata.Cursor{}, mmdbdata.NormalizeUnmarshalError[map[string]any](err)
	}
	var next mmdbdata.Cursor
	for {
		key, val, ok := m.Next(next)
		if !ok {
			break
		}
		if next, err = f(key, val); err != nil {
			return mmdbdata.Cursor{}, err
		}
	}
	return m.End()
}
