// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"unsafe"

	"github.com/gaissmai/bart"
)

// The table is split into shards by the first 16 bits of the address,
// so a writer copies only the shards it changes. Inside a shard those
// 16 bits are shifted out of every prefix (198.18.7.0/24 is stored in
// shard 198.18 as 7.0.0.0/8), which saves two trie levels per lookup:
// an IPv4 /24 is found at the first level. Prefixes shorter than /16
// live unshifted in one table per family.
//
// An IPv6 shard keeps its prefixes of /16 to /48 (shifted: /0 to /32,
// nearly every route of a real table) under IPv4 keys made of address
// bits 16-47, and only longer ones under shifted IPv6 keys, because
// bart's IPv4 lookup path is cheaper (about 42 to 35 ns on the hot IPv6
// benchmark). A lookup tries the IPv6
// keys first (their prefixes are all longer) when the shard has any.

// table is one shard. bart.Table (not bart.Fast) because its
// copy-on-write inserts are several times cheaper, which keeps single
// updates cheap, and it needs less memory.
type table = bart.Table[entry]

// group holds the shards that share the first octet.
type group [256]*table

// fib is one routing instance's table: the global one, or one VRF of
// one router.
type fib struct {
	v4     [256]*group
	v6     [256]*group
	short4 *table
	short6 *table
}

// shardID names a shard: the low 32 bits say which shard of a table
// (shardOf), the high ones which table: 0 the global one, i the VRF
// with index i.
type shardID uint64

const (
	v6Base      shardID = 1 << 16
	short4ID    shardID = 2 << 16
	short6ID    shardID = short4ID + 1
	numFamilies         = 2
	instShift           = 32
)

// base is the shard within its table.
func (id shardID) base() shardID { return id & (1<<instShift - 1) }

// inst is the table: 0 global, else a VRF index.
func (id shardID) inst() uint32 { return uint32(id >> instShift) }

func (id shardID) in(inst uint32) shardID { return id.base() | shardID(inst)<<instShift }

// family of a shard: 0 IPv4, 1 IPv6.
func (id shardID) family() int {
	switch id := id.base(); {
	case id == short4ID:
		return 0
	case id == short6ID:
		return 1
	default:
		return int(id >> 16)
	}
}

// shardOf maps a masked prefix to its shard and the key stored there.
func shardOf(p netip.Prefix) (shardID, netip.Prefix) {
	a := p.Addr()
	n := p.Bits()
	if a.Is4() {
		if n < 16 {
			return short4ID, p
		}
		b := a.As4()
		return shardID(b[0])<<8 | shardID(b[1]), netip.PrefixFrom(netip.AddrFrom4([4]byte{b[2], b[3]}), n-16)
	}
	if n < 16 {
		return short6ID, p
	}
	b := a.As16()
	id := v6Base | shardID(b[0])<<8 | shardID(b[1])
	if n <= 48 {
		return id, netip.PrefixFrom(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), n-16)
	}
	copy(b[:], b[2:])
	b[14], b[15] = 0, 0
	return id, netip.PrefixFrom(netip.AddrFrom16(b), n-16)
}

// prefixOf inverts shardOf.
func prefixOf(id shardID, key netip.Prefix) netip.Prefix {
	id = id.base()
	switch {
	case id == short4ID || id == short6ID:
		return key
	case id < v6Base:
		k := key.Addr().As4()
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(id >> 8), byte(id), k[0], k[1]}), key.Bits()+16)
	case key.Addr().Is4():
		k := key.Addr().As4()
		var b [16]byte
		b[0], b[1] = byte(id>>8), byte(id)
		copy(b[2:], k[:])
		return netip.PrefixFrom(netip.AddrFrom16(b), key.Bits()+16)
	default:
		k := key.Addr().As16()
		var b [16]byte
		b[0], b[1] = byte(id>>8), byte(id)
		copy(b[2:], k[:14])
		return netip.PrefixFrom(netip.AddrFrom16(b), key.Bits()+16)
	}
}

// Origin returns the origin ASN of the best route for the longest
// prefix matching a in the global instance and the VRFs that label
// flows (SetLabelVRFs), or 0 when no route matches, the origin is
// unknown (trailing AS_SET), or the match is a default route. It never
// waits.
func (r *RIB) Origin(a netip.Addr) uint32 {
	if r == nil {
		return 0
	}
	e, _ := r.cur.Load().best(a)
	return e.origin
}

// FlowRoute is what flow export reports of the best route for an
// address: its origin (as Origin), prefix length, AS path and attributes.
type FlowRoute struct {
	Origin uint32
	Bits   int
	Path   Path
}

// FlowRoute returns the best route for the longest prefix matching a, as
// Origin chooses it (a default route included, with origin 0), in one
// lookup. It never waits.
func (r *RIB) FlowRoute(a netip.Addr) (FlowRoute, bool) {
	if r == nil {
		return FlowRoute{}, false
	}
	s := r.cur.Load()
	e, ok := s.best(a)
	if !ok || len(e.routes) == 0 {
		return FlowRoute{}, false
	}
	return FlowRoute{Origin: e.origin, Bits: int(e.bits), Path: s.path(e.routes[0])}, true
}

// best is the entry of the longest prefix matching a in the global
// instance and the VRFs that label flows.
func (s *snapshot) best(a netip.Addr) (entry, bool) {
	if len(s.label) > 0 {
		return s.labelBest(a)
	}
	if a.Is4() {
		b := a.As4()
		if g := s.v4[b[0]]; g != nil {
			if t := g[b[1]]; t != nil {
				if e, ok := t.Lookup(netip.AddrFrom4([4]byte{b[2], b[3]})); ok {
					return e, true
				}
			}
		}
		if s.short4 != nil {
			return s.short4.Lookup(a)
		}
		return entry{}, false
	}
	return s.lookup6(a)
}

// addrHi returns the first 64 bits of an IPv6 address. As16 costs
// about 5 ns here (the bytes it stores are read back at once, which
// the CPU does not forward), a quarter of a hot lookup; the Addr's own
// high word is free. Its layout is checked once (addrLayoutOK), and
// As16 is the fallback should a Go release change it.
func addrHi(a netip.Addr) uint64 {
	if addrLayoutOK {
		return (*addrWords)(unsafe.Pointer(&a)).hi
	}
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8])
}

// addrWords is the start of netip.Addr: the address as two big-endian
// halves (its uint128).
type addrWords struct{ hi, lo uint64 }

var addrLayoutOK = func() bool {
	if unsafe.Sizeof(netip.Addr{}) < unsafe.Sizeof(addrWords{}) {
		return false
	}
	for _, s := range []string{"2001:db8:1234:5678:9abc:def0:1357:2468", "fe80::1", "::ffff:198.18.0.1", "ffff:fffe::"} {
		a := netip.MustParseAddr(s)
		b := a.As16()
		w := (*addrWords)(unsafe.Pointer(&a))
		if w.hi != binary.BigEndian.Uint64(b[:8]) || w.lo != binary.BigEndian.Uint64(b[8:]) {
			return false
		}
	}
	return true
}()

func (s *fib) lookup6(a netip.Addr) (entry, bool) {
	if !a.Is6() {
		return entry{}, false // the zero Addr
	}
	if a.Is4In6() {
		_, e, ok := s.lookupPrefix(a.Unmap())
		return e, ok
	}
	hi := addrHi(a)
	if g := s.v6[hi>>56]; g != nil {
		if t := g[byte(hi>>48)]; t != nil {
			if t.Size6() > 0 {
				b := a.As16()
				var k [16]byte
				copy(k[:], b[2:])
				if e, ok := t.Lookup(netip.AddrFrom16(k)); ok {
					return e, true
				}
			}
			if e, ok := t.Lookup(netip.AddrFrom4([4]byte{byte(hi >> 40), byte(hi >> 32), byte(hi >> 24), byte(hi >> 16)})); ok {
				return e, true
			}
		}
	}
	if s.short6 != nil {
		return s.short6.Lookup(a)
	}
	return entry{}, false
}

// lookupPrefix is the longest-prefix match that also returns the
// matched prefix.
func (s *fib) lookupPrefix(a netip.Addr) (netip.Prefix, entry, bool) {
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return netip.Prefix{}, entry{}, false
	}
	full := netip.PrefixFrom(a, a.BitLen())
	id, key := shardOf(full)
	if t := s.table(id); t != nil {
		if p, e, ok := t.LookupPrefixLPM(key); ok {
			return prefixOf(id, p), e, true
		}
		if a.Is6() {
			// Then the /16 to /48 prefixes, under IPv4 keys.
			id, key = shardOf(netip.PrefixFrom(a, 48))
			if p, e, ok := t.LookupPrefixLPM(key); ok {
				return prefixOf(id, p), e, true
			}
		}
	}
	short := short4ID
	if a.Is6() {
		short = short6ID
	}
	if t := s.table(short); t != nil {
		if p, e, ok := t.LookupPrefixLPM(full); ok {
			return p, e, true
		}
	}
	return netip.Prefix{}, entry{}, false
}

func (s *snapshot) table(id shardID) *table {
	if i := id.inst(); i != 0 {
		if int(i) > len(s.vrfs) || s.vrfs[i-1] == nil {
			return nil
		}
		return s.vrfs[i-1].table(id)
	}
	return s.fib.table(id)
}

func (s *fib) table(id shardID) *table {
	switch id = id.base(); id {
	case short4ID:
		return s.short4
	case short6ID:
		return s.short6
	}
	groups := &s.v4
	if id >= v6Base {
		groups = &s.v6
	}
	if g := groups[byte(id>>8)]; g != nil {
		return g[byte(id)]
	}
	return nil
}

// shardSet is a set of shards (a peer's, to find its routes fast).
type shardSet struct {
	bits  [numFamilies][]uint64 // 65536 bits per family, allocated on first use
	short uint8                 // bit per family: the short table
}

func (s *shardSet) add(id shardID) {
	switch id = id.base(); id {
	case short4ID:
		s.short |= 1
		return
	case short6ID:
		s.short |= 2
		return
	}
	f, v := id>>16, id&0xffff
	if s.bits[f] == nil {
		s.bits[f] = make([]uint64, 1<<16/64)
	}
	s.bits[f][v>>6] |= 1 << (v & 63)
}

// list returns the shards of families fams (bit 0 IPv4, bit 1 IPv6),
// in table inst.
func (s *shardSet) list(fams uint8, inst uint32) []shardID {
	var ids []shardID
	for f := range numFamilies {
		if fams&(1<<f) == 0 {
			continue
		}
		for w, word := range s.bits[f] {
			for ; word != 0; word &= word - 1 {
				ids = append(ids, (shardID(f)<<16 | shardID(w*64+bits.TrailingZeros64(word))).in(inst))
			}
		}
		if s.short&(1<<f) != 0 {
			ids = append(ids, (short4ID + shardID(f)).in(inst))
		}
	}
	return ids
}

func (s *shardSet) clear(fams uint8) {
	for f := range numFamilies {
		if fams&(1<<f) != 0 {
			s.bits[f] = nil
			s.short &^= 1 << f
		}
	}
}
