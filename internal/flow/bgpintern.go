// SPDX-License-Identifier: AGPL-3.0-only

package flow

// bgpTable interns the destination side of flows' BGP context (next
// hop, next AS, prefix length, communities), which the flows towards
// one route share, so a flow stores a 4-byte id and the arena stays
// free of pointers. Unlike city names, contexts come and go with the
// RIB, so ids are reference counted by the flows holding them and
// reused once free: the table never holds more contexts than flows.
// Id 0 is the zero context and is not counted. Not safe for concurrent
// use: the Table calls it under its lock.
type bgpTable struct {
	ids  map[bgpDst]uint32
	vals []bgpDst // by id
	refs []uint32 // by id
	free []uint32
}

// bgpDst is the destination half of BGP; the source half (PrevAS,
// SrcPrefixLen) is stored in the flow entry itself.
type bgpDst struct {
	nextHop                       [16]byte
	nextAS                        uint32
	prefixLen                     uint8
	communities, largeCommunities string
}

func dstOf(b *BGP) bgpDst {
	return bgpDst{b.NextHop, b.NextAS, b.DstPrefixLen, b.Communities, b.LargeCommunities}
}

func newBGPTable() *bgpTable {
	return &bgpTable{ids: map[bgpDst]uint32{}, vals: []bgpDst{{}}, refs: []uint32{0}}
}

// acquire returns the id of d, counting one more holder.
func (t *bgpTable) acquire(d bgpDst) uint32 {
	if d == (bgpDst{}) {
		return 0
	}
	id, ok := t.ids[d]
	if !ok {
		if n := len(t.free); n > 0 {
			id = t.free[n-1]
			t.free = t.free[:n-1]
			t.vals[id] = d
		} else {
			id = uint32(len(t.vals))
			t.vals = append(t.vals, d)
			t.refs = append(t.refs, 0)
		}
		t.ids[d] = id
	}
	t.refs[id]++
	return id
}

// release drops one holder of id, freeing it with the last.
func (t *bgpTable) release(id uint32) {
	if id == 0 || int(id) >= len(t.refs) || t.refs[id] == 0 {
		return
	}
	if t.refs[id]--; t.refs[id] == 0 {
		delete(t.ids, t.vals[id])
		t.vals[id] = bgpDst{}
		t.free = append(t.free, id)
	}
}

// get returns the context of id.
func (t *bgpTable) get(id uint32) bgpDst {
	if int(id) >= len(t.vals) {
		return bgpDst{}
	}
	return t.vals[id]
}

// len is how many contexts are held.
func (t *bgpTable) len() int { return len(t.ids) }
