// SPDX-License-Identifier: AGPL-3.0-only

package rib

// Interned AS paths, one table per peer: routes of a full table share a
// few hundred thousand distinct paths, and a peer that goes down drops
// its table whole instead of unreferencing paths one by one.
//
// Routes name their path by a 32-bit index into their peer's table so
// route arrays hold no pointers (the garbage collector does not scan
// them) and a route is 16 bytes. Index 0 is the empty path.
//
// Readers resolve an index through the chunk lists of their snapshot.
// A chunk (and a peer's chunk list) is copied before the writer changes
// one the published snapshot shares, so a reader never sees a slot
// reused for another path while it holds a route naming the old one.

const (
	chunkBits = 10
	chunkLen  = 1 << chunkBits
)

type pathChunk [chunkLen]Path

// pathTable is one peer's interned paths, guarded by RIB.mu.
type pathTable struct {
	byEnc  map[string]uint32
	chunks []*pathChunk
	shared bool   // the published snapshot holds chunks
	owned  []bool // chunks copied in this transaction
	refs   []int32
	length []uint16 // path length by index: the tie-break reads no path
	free   []uint32 // reusable indices
	freed  []uint32 // freed in this transaction, reusable after it
}

func (pt *pathTable) get(idx uint32) Path {
	return pt.chunks[idx>>chunkBits][idx&(chunkLen-1)]
}

// path resolves a route's path in a snapshot.
func (s *snapshot) path(rt route) Path {
	if rt.path == 0 {
		return Path{}
	}
	return s.paths[rt.peer()][rt.path>>chunkBits][rt.path&(chunkLen-1)]
}

// intern returns the index of path in p's table, adding it with no
// references if new.
func (tx *Tx) intern(p *Peer, path Path) uint32 {
	if path.enc == "" {
		return 0
	}
	// Routes of one UPDATE share a Path: remember the last one.
	if tx.lastPeer == p && tx.lastPath == path {
		return tx.lastIdx
	}
	pt := &p.pt
	if pt.byEnc == nil {
		pt.byEnc = make(map[string]uint32)
		pt.refs, pt.length = []int32{0}, []uint16{0}
	}
	idx, ok := pt.byEnc[path.enc]
	if !ok {
		if k := len(pt.free); k > 0 {
			idx = pt.free[k-1]
			pt.free = pt.free[:k-1]
		} else {
			idx = uint32(len(pt.refs))
			pt.refs = append(pt.refs, 0)
			pt.length = append(pt.length, 0)
		}
		tx.setPath(p, idx, path)
		pt.byEnc[path.enc] = idx
		pt.length[idx] = uint16(path.Len())
	}
	tx.lastPeer, tx.lastPath, tx.lastIdx = p, path, idx
	return idx
}

// pathLen is the length of p's path idx, for the tie-break.
func (p *Peer) pathLen(idx uint32) int {
	if idx == 0 {
		return 0
	}
	return int(p.pt.length[idx])
}

func (p *Peer) hold(idx uint32) {
	if idx != 0 {
		p.pt.refs[idx]++
	}
}

// drop releases one route's hold on path idx of p, freeing the path
// with the last one.
func (tx *Tx) drop(p *Peer, idx uint32) {
	if idx == 0 {
		return
	}
	pt := &p.pt
	if pt.refs[idx]--; pt.refs[idx] > 0 {
		return
	}
	delete(pt.byEnc, pt.get(idx).enc)
	tx.setPath(p, idx, Path{})
	pt.freed = append(pt.freed, idx)
	if tx.lastPeer == p && tx.lastIdx == idx {
		tx.lastPeer = nil
	}
}

// setPath writes a slot of p's table, copying the chunk (and the chunk
// list) first if the published snapshot shares them.
func (tx *Tx) setPath(p *Peer, idx uint32, path Path) {
	pt := &p.pt
	ci := int(idx >> chunkBits)
	if !p.pathsDirty {
		p.pathsDirty = true
		tx.dirtyPaths = append(tx.dirtyPaths, p)
		tx.touch()
	}
	if pt.shared {
		pt.chunks = append([]*pathChunk(nil), pt.chunks...)
		pt.shared = false
	}
	for ci >= len(pt.chunks) {
		pt.chunks = append(pt.chunks, nil)
	}
	for ci >= len(pt.owned) {
		pt.owned = append(pt.owned, false)
	}
	if !pt.owned[ci] {
		c := new(pathChunk)
		if old := pt.chunks[ci]; old != nil {
			*c = *old
		}
		pt.chunks[ci] = c
		pt.owned[ci] = true
	}
	pt.chunks[ci][idx&(chunkLen-1)] = path
}

// publishPaths hands the changed chunk lists to the snapshot n.
func (tx *Tx) publishPaths(n *snapshot) {
	r := tx.r
	for _, p := range tx.dirtyPaths {
		p.pathsDirty = false
		pt := &p.pt
		clear(pt.owned)
		pt.free = append(pt.free, pt.freed...)
		pt.freed = pt.freed[:0]
		if p.gone {
			continue
		}
		pt.shared = true
		tx.setPathList(p.idx, pt.chunks)
	}
	tx.dirtyPaths = tx.dirtyPaths[:0]
	n.paths = r.pathLists
	r.pathListsShared = true
}

// setPathList writes the per-peer chunk list registry, copying it first
// if the published snapshot shares it.
func (tx *Tx) setPathList(idx uint32, chunks []*pathChunk) {
	r := tx.r
	if r.pathListsShared {
		r.pathLists = append(make([][]*pathChunk, 0, len(r.pathLists)+1), r.pathLists...)
		r.pathListsShared = false
	}
	for int(idx) >= len(r.pathLists) {
		r.pathLists = append(r.pathLists, nil)
	}
	r.pathLists[idx] = chunks
}
