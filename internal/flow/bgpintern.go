// SPDX-License-Identifier: AGPL-3.0-only

package flow

// refTable interns values that many flows share: the two sides of
// flows' labels (the destination side: ASN, city, and the BGP context of
// the route chosen for the address, next hop, next AS, prefix length,
// communities, which the flows towards one route share; the source side:
// ASN, city, previous AS, prefix length, which the flows from one route
// share; with the flow's path, flowPath). A flow stores 4-byte ids and the arena stays
// free of pointers. Unlike city names, these values come and go with
// the RIB and the routes, so ids are reference counted by the flows
// holding them and reused once free: a table never holds more contexts
// than flows. Id 0 is the zero context and is not counted. Not safe for
// concurrent use: the Table calls it under its lock.
type refTable[T comparable] struct {
	ids  map[T]uint32
	vals []T      // by id
	refs []uint32 // by id
	free []uint32
	// last is the id acquire returned last: new flows mostly come
	// with the value of the flow before (the same path, the same
	// route), which then costs a compare instead of a map lookup.
	last uint32
}

// dstSide is the destination side of a flow's Labels: its ASN, city
// (id in Table.cities) and the destination half of BGP; and, shared the
// same way by the flows going one way, the flow's path and the
// generation its labels came from. Keeping those two here rather than
// as ids of their own in every entry saves 8 bytes per flow; the cost is
// more distinct values while a generation change is being refreshed.
type dstSide struct {
	nextHop                       [16]byte
	asn, city, nextAS             uint32
	prefixLen                     uint8
	communities, largeCommunities string
	path                          flowPath
	// gen is the low 32 bits of the Enricher.Generation() the labels
	// came from: a refresh is missed only if a multiple of 2^32
	// generations passes between two sweeps.
	gen uint32
}

// flowPath is where a flow's first sampled packet came from and where a
// FIB lookup sent it (Record.InIfindex, OutIfindex and NextHop). Flows
// share a few of them (the router's interfaces and gateways); it is
// part of dstSide, so an entry holds none of these 24 bytes.
type flowPath struct {
	nextHop [16]byte
	in, out uint32
}

// srcSide is the source side of a flow's Labels: its ASN, city (id in
// Table.cities) and the source half of BGP.
type srcSide struct {
	asn, city, prevAS uint32
	prefixLen         uint8
}

func newRefTable[T comparable]() *refTable[T] {
	var zero T
	return &refTable[T]{ids: map[T]uint32{}, vals: []T{zero}, refs: []uint32{0}}
}

// acquire returns the id of v, counting one more holder.
func (t *refTable[T]) acquire(v T) uint32 {
	var zero T
	if v == zero {
		return 0
	}
	// A freed id holds the zero value, so this never revives one.
	if t.vals[t.last] == v {
		t.refs[t.last]++
		return t.last
	}
	id, ok := t.ids[v]
	if !ok {
		if n := len(t.free); n > 0 {
			id = t.free[n-1]
			t.free = t.free[:n-1]
			t.vals[id] = v
		} else {
			id = uint32(len(t.vals))
			t.vals = append(t.vals, v)
			t.refs = append(t.refs, 0)
		}
		t.ids[v] = id
	}
	t.refs[id]++
	t.last = id
	return id
}

// release drops one holder of id, freeing it with the last.
func (t *refTable[T]) release(id uint32) {
	if id == 0 || int(id) >= len(t.refs) || t.refs[id] == 0 {
		return
	}
	if t.refs[id]--; t.refs[id] == 0 {
		var zero T
		delete(t.ids, t.vals[id])
		t.vals[id] = zero
		t.free = append(t.free, id)
	}
}

// get returns the value of id.
func (t *refTable[T]) get(id uint32) T {
	if int(id) >= len(t.vals) {
		var zero T
		return zero
	}
	return t.vals[id]
}

// len is how many values are held.
func (t *refTable[T]) len() int { return len(t.ids) }
