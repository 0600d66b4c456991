// SPDX-License-Identifier: AGPL-3.0-only

package rib

import (
	"cmp"
	"net/netip"
	"slices"
)

// Peer is one BGP session of a peer as reported by one BMP session of a
// router. The handle stays valid after the peer is gone; operations on a
// gone peer are ignored.
type Peer struct {
	// Set at creation and never changed: readers use them.
	idx    uint32
	seq    uint64 // creation order, the last route tie-break
	key    PeerKey
	asn    uint32
	bgpID  netip.Addr
	router *router
	sess   *Session
	vrf    *vrf // nil for the global instance

	// Writer state, guarded by RIB.mu.
	stale  bool
	gone   bool
	prev   *Peer // stale session of the same peer this one takes over
	next   *Peer // the session taking this one over
	routes [numViews][2]int
	shards shardSet // shards that may hold this peer's routes

	pt         pathTable
	pathsDirty bool // pt changed in this transaction
}

// Key returns the peer's identity.
func (p *Peer) Key() PeerKey { return p.key }

// Routes is how many routes p holds, all views and families; 0 once p
// is gone. Only for use inside a transaction.
func (p *Peer) Routes() int {
	if p == nil {
		return 0
	}
	return p.total()
}

// Router returns the key of the router that reported p.
func (p *Peer) Router() RouterKey { return p.router.key }

func (p *Peer) total() int {
	n := 0
	for v := range numViews {
		n += p.routes[v][0] + p.routes[v][1]
	}
	return n
}

// Session is one BMP session of a router.
type Session struct {
	router  *router
	peers   map[PeerKey]*Peer
	retired bool // ended, or replaced by a newer session of the router
}

type router struct {
	key      RouterKey
	descr    string
	cur      *Session
	stale    map[PeerKey]*Peer
	timer    Timer
	timerSeq uint64
}

// Tx is a write transaction. Changes become visible to readers
// atomically at Commit. A Tx must not be used after Commit.
type Tx struct {
	r          *RIB
	cur        *snapshot
	next       *snapshot // copy of cur, made on the first change
	shards     map[shardID]shardState
	groupOwned [numFamilies][256]bool // next.v4/v6[i] is a private copy
	// The same for VRF tables: the next.vrfs slice, a VRF's fib, and its
	// groups (by inst<<16 | family<<8 | first octet).
	vrfsOwned     bool
	fibOwned      map[uint32]bool
	vrfGroupOwned map[uint64]bool
	vrfsChanged   bool     // a VRF appeared or went: rebuild next.label
	releasedVRFs  []uint32 // VRF indices free after the commit
	released      []uint32
	dirtyPaths    []*Peer // peers whose path table changed
	lastPeer      *Peer   // memo of the last interned path
	lastPath      Path
	lastIdx       uint32
	scratch       []update
	seq           uint64
}

type shardState struct {
	owned bool // the table is a private copy: modify in place
	ops   int  // copy-on-write operations so far
}

type update struct {
	key netip.Prefix
	e   entry
}

// persistRatio: a copy-on-write insert copies the nodes on its path
// (up to a few KiB in a dense shard), which costs about as much as
// copying a few hundred prefixes of a shard. After size/persistRatio
// such operations in one transaction the shard is copied once and
// then modified in place (a small shard is copied at once).
const persistRatio = 256

// Begin starts a write transaction, waiting for other writers.
func (r *RIB) Begin() *Tx {
	r.mu.Lock()
	tx := &r.tx
	tx.cur = r.cur.Load()
	return tx
}

// Update runs f in a transaction and commits it.
func (r *RIB) Update(f func(tx *Tx)) {
	tx := r.Begin()
	defer tx.Commit()
	f(tx)
}

// Commit publishes the changes and ends the transaction.
func (tx *Tx) Commit() {
	r := tx.r
	if tx.next != nil {
		if tx.vrfsChanged {
			tx.next.label = r.labelTables(tx.next)
		}
		tx.next.gen = tx.cur.gen + 1
		tx.next.peers = r.peers
		r.peersShared = true
		tx.publishPaths(tx.next)
		r.cur.Store(tx.next)
	}
	// Released indices are reused only now: the published table no
	// longer holds their routes.
	r.free = append(r.free, tx.released...)
	tx.released = tx.released[:0]
	r.freeVRF = append(r.freeVRF, tx.releasedVRFs...)
	tx.releasedVRFs = tx.releasedVRFs[:0]
	clear(tx.shards)
	tx.groupOwned = [numFamilies][256]bool{}
	tx.vrfsOwned, tx.vrfsChanged = false, false
	clear(tx.fibOwned)
	clear(tx.vrfGroupOwned)
	tx.cur, tx.next = nil, nil
	r.mu.Unlock()
}

// Close stops the removal timers.
func (r *RIB) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rt := range r.routers {
		if rt.timer != nil {
			rt.timer.Stop()
			rt.timer = nil
		}
		rt.timerSeq++
	}
}

func (tx *Tx) touch() *snapshot {
	if tx.next == nil {
		n := new(snapshot)
		*n = *tx.cur
		tx.next = n
	}
	return tx.next
}

func (tx *Tx) snap() *snapshot {
	if tx.next != nil {
		return tx.next
	}
	return tx.cur
}

func (tx *Tx) table(id shardID) *table { return tx.snap().table(id) }

func (tx *Tx) setTable(id shardID, t *table) {
	n := tx.touch()
	inst := id.inst()
	fb := &n.fib
	if inst != 0 {
		fb = tx.vrfFib(inst)
	}
	id = id.base()
	switch id {
	case short4ID:
		fb.short4 = t
		return
	case short6ID:
		fb.short6 = t
		return
	}
	f, hi := id>>16, byte(id>>8)
	groups := &fb.v4
	if f == 1 {
		groups = &fb.v6
	}
	g := groups[hi]
	if !tx.claimGroup(inst, f, hi) {
		ng := new(group)
		if g != nil {
			*ng = *g
		}
		groups[hi] = ng
		g = ng
	}
	g[byte(id)] = t
}

// claimGroup reports whether group hi of family f in table inst is
// already a private copy in this transaction, and marks it as one.
func (tx *Tx) claimGroup(inst uint32, f shardID, hi byte) bool {
	if inst == 0 {
		was := tx.groupOwned[f][hi]
		tx.groupOwned[f][hi] = true
		return was
	}
	k := uint64(inst)<<16 | uint64(f)<<8 | uint64(hi)
	was := tx.vrfGroupOwned[k]
	tx.vrfGroupOwned[k] = true
	return was
}

// vrfFib returns the next snapshot's table of VRF inst, a private copy
// (and so is the slice holding it).
func (tx *Tx) vrfFib(inst uint32) *fib {
	n := tx.touch()
	if !tx.vrfsOwned {
		n.vrfs = slices.Clone(n.vrfs)
		tx.vrfsOwned = true
	}
	for int(inst) > len(n.vrfs) {
		n.vrfs = append(n.vrfs, nil)
	}
	if tx.fibOwned == nil {
		tx.fibOwned = make(map[uint32]bool)
		tx.vrfGroupOwned = make(map[uint64]bool)
	}
	f := n.vrfs[inst-1]
	if !tx.fibOwned[inst] {
		nf := new(fib)
		if f != nil {
			*nf = *f
		}
		n.vrfs[inst-1] = nf
		tx.fibOwned[inst] = true
		f = nf
	}
	return f
}

// put stores e under key in shard id, copying the shard or its path as
// needed so the published snapshot stays untouched.
func (tx *Tx) put(id shardID, key netip.Prefix, e entry) {
	t := tx.table(id)
	st := tx.shards[id]
	switch {
	case t == nil:
		t = new(table)
		t.Insert(key, e)
		st.owned = true
		tx.setTable(id, t)
	case st.owned:
		t.Insert(key, e)
	default:
		st.ops++
		if st.ops*persistRatio > t.Size() {
			t = t.Clone()
			st.owned = true
			t.Insert(key, e)
		} else {
			t = t.InsertPersist(key, e)
		}
		tx.setTable(id, t)
	}
	tx.shards[id] = st
}

func (tx *Tx) del(id shardID, key netip.Prefix) {
	t := tx.table(id)
	if t == nil {
		return
	}
	st := tx.shards[id]
	switch {
	case t.Size() == 1:
		t = nil
	case st.owned:
		t.Delete(key)
		return
	default:
		st.ops++
		if st.ops*persistRatio > t.Size() {
			t = t.Clone()
			st.owned = true
			t.Delete(key)
		} else {
			t = t.DeletePersist(key)
		}
	}
	tx.shards[id] = st
	tx.setTable(id, t)
}

func familyOf(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 0
	}
	return 1
}

func (tx *Tx) peerAt(src uint32) *Peer { return tx.r.peers[src>>2] }

// compareRoutes orders routes best first; see the package comment.
func (tx *Tx) compareRoutes(a, b route) int {
	if a.view() != b.view() {
		return int(b.view()) - int(a.view())
	}
	pa, pb := tx.peerAt(a.src), tx.peerAt(b.src)
	if la, lb := pa.pathLen(a.path), pb.pathLen(b.path); la != lb {
		return la - lb
	}
	if pa != pb {
		if c := compareRouterKeys(pa.router.key, pb.router.key); c != 0 {
			return c
		}
		if c := comparePeerKeys(pa.key, pb.key); c != 0 {
			return c
		}
		if pa.seq < pb.seq {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.pathID, b.pathID)
}

// newEntry makes the entry of prefix bits long. A default route (bits
// 0) keeps its routes for `rfm rib lookup` but gives no origin: it
// would otherwise label every address the table lacks and keep the
// MMDB fallback from answering.
func newEntry(routes []route, bits int) entry {
	e := entry{routes: routes, bits: uint8(bits)}
	if bits > 0 {
		e.origin = routes[0].origin
	}
	return e
}

// Announce adds or replaces the route of p in view for pfx and path id.
// A route of the stale session p takes over (same view and path id) is
// replaced too.
func (tx *Tx) Announce(p *Peer, view View, pfx netip.Prefix, pathID uint32, path Path) {
	if p == nil || p.gone || view >= numViews || !pfx.IsValid() {
		return
	}
	pfx = pfx.Masked()
	id, key := shardOf(pfx)
	id = id.in(p.inst())
	fam := familyOf(pfx)
	var old entry
	if t := tx.table(id); t != nil {
		old, _ = t.Get(key)
	}
	pi := tx.intern(p, path)
	nr := route{path: pi, src: p.idx<<2 | uint32(view), pathID: pathID, origin: originOf(path, p)}
	prevSrc := ^uint32(0)
	if p.prev != nil {
		prevSrc = p.prev.idx<<2 | uint32(view)
	}
	self, prev := -1, -1
	for i, r := range old.routes {
		if r.pathID != pathID {
			continue
		}
		switch r.src {
		case nr.src:
			self = i
		case prevSrc:
			prev = i
		}
	}
	if self >= 0 && prev < 0 && old.routes[self] == nr {
		return
	}
	routes := make([]route, 0, len(old.routes)+1)
	placed := false
	for i, r := range old.routes {
		if i == self || i == prev {
			continue
		}
		if !placed && tx.compareRoutes(nr, r) < 0 {
			routes = append(routes, nr)
			placed = true
		}
		routes = append(routes, r)
	}
	if !placed {
		routes = append(routes, nr)
	}
	n := tx.touch()
	p.hold(pi)
	if self < 0 {
		p.routes[view][fam]++
		n.routes[fam]++
	} else {
		tx.drop(p, old.routes[self].path)
	}
	if len(old.routes) == 0 {
		n.prefixes[fam]++
	}
	p.shards.add(id)
	tx.put(id, key, newEntry(routes, pfx.Bits()))
	if prev >= 0 {
		pp := p.prev
		tx.drop(pp, old.routes[prev].path)
		pp.routes[view][fam]--
		n.routes[fam]--
		if pp.total() == 0 {
			tx.release(pp)
		}
	}
}

// Withdraw removes the route of p in view for pfx and path id, and the
// matching route of the stale session p takes over.
func (tx *Tx) Withdraw(p *Peer, view View, pfx netip.Prefix, pathID uint32) {
	if p == nil || p.gone || view >= numViews || !pfx.IsValid() {
		return
	}
	pfx = pfx.Masked()
	id, key := shardOf(pfx)
	id = id.in(p.inst())
	t := tx.table(id)
	if t == nil {
		return
	}
	old, ok := t.Get(key)
	if !ok {
		return
	}
	self := p.idx<<2 | uint32(view)
	prevSrc := ^uint32(0)
	if p.prev != nil {
		prevSrc = p.prev.idx<<2 | uint32(view)
	}
	var removedSelf, removedPrev bool
	routes := without(old.routes, func(r route) bool {
		if r.pathID != pathID {
			return false
		}
		switch r.src {
		case self:
			removedSelf = true
			tx.drop(p, r.path)
		case prevSrc:
			removedPrev = true
			tx.drop(p.prev, r.path)
		default:
			return false
		}
		return true
	})
	if !removedSelf && !removedPrev {
		return
	}
	fam := familyOf(pfx)
	n := tx.touch()
	if removedSelf {
		p.routes[view][fam]--
		n.routes[fam]--
	}
	if len(routes) == 0 {
		n.prefixes[fam]--
		tx.del(id, key)
	} else {
		tx.put(id, key, newEntry(routes, pfx.Bits()))
	}
	if removedPrev {
		pp := p.prev
		pp.routes[view][fam]--
		n.routes[fam]--
		if pp.total() == 0 {
			tx.release(pp)
		}
	}
}

// without returns routes minus those drop selects, as a new slice (the
// old one may be in use by readers and is never written). drop is
// called once per route.
func without(routes []route, drop func(route) bool) []route {
	dropped := false
	var out []route
	for i, r := range routes {
		if drop(r) {
			if !dropped {
				dropped = true
				out = make([]route, i, len(routes)-1)
				copy(out, routes[:i])
			}
			continue
		}
		if dropped {
			out = append(out, r)
		}
	}
	switch {
	case !dropped:
		return routes
	case len(out) == 0:
		return nil
	}
	return out
}

// EndOfRIB tells that p sent its whole table for view and family: the
// stale routes of the session p takes over that were not sent again are
// removed.
func (tx *Tx) EndOfRIB(p *Peer, view View, ipv6 bool) {
	if p == nil || p.gone || p.prev == nil || view >= numViews {
		return
	}
	fams := uint8(1)
	if ipv6 {
		fams = 2
	}
	pp := p.prev
	tx.removeRoutes(pp, 1<<view, fams)
	if pp.total() == 0 {
		tx.release(pp)
	}
}

// removeRoutes drops the routes of p in views (bit per View) and
// families (bit 0 IPv4, bit 1 IPv6).
func (tx *Tx) removeRoutes(p *Peer, views, fams uint8) {
	// When everything goes, the path table goes with the peer.
	whole := views == 1<<numViews-1 && fams == 3
	n := tx.touch()
	for _, id := range p.shards.list(fams, p.inst()) {
		t := tx.table(id)
		if t == nil {
			continue
		}
		fam := id.family()
		tx.scratch = tx.scratch[:0]
		for key, e := range t.All() {
			removed := 0
			routes := without(e.routes, func(r route) bool {
				if r.src>>2 != p.idx || views&(1<<(r.src&3)) == 0 {
					return false
				}
				p.routes[r.src&3][fam]--
				if !whole {
					tx.drop(p, r.path)
				}
				removed++
				return true
			})
			if removed == 0 {
				continue
			}
			n.routes[fam] -= removed
			u := update{key: key}
			if len(routes) > 0 {
				u.e = newEntry(routes, prefixOf(id, key).Bits())
			} else {
				n.prefixes[fam]--
			}
			tx.scratch = append(tx.scratch, u)
		}
		tx.applyAll(id, t, tx.scratch)
	}
	if views == 1<<numViews-1 {
		p.shards.clear(fams) // nothing of p is left in these families
	}
}

// applyAll applies updates (an empty entry deletes) to shard id, whose
// current table is t.
func (tx *Tx) applyAll(id shardID, t *table, ups []update) {
	if len(ups) == 0 {
		return
	}
	st := tx.shards[id]
	if !st.owned && (st.ops+len(ups))*persistRatio > t.Size() {
		t = t.Clone()
		st.owned = true
	}
	for _, u := range ups {
		switch {
		case st.owned && u.e.routes == nil:
			t.Delete(u.key)
		case st.owned:
			t.Insert(u.key, u.e)
		case u.e.routes == nil:
			t = t.DeletePersist(u.key)
			st.ops++
		default:
			t = t.InsertPersist(u.key, u.e)
			st.ops++
		}
	}
	if t.Size() == 0 {
		t = nil
	}
	tx.shards[id] = st
	tx.setTable(id, t)
}

// Connect registers a new BMP session of router key. A still open
// session of the same router is replaced: its peers turn stale and can
// be taken over by the new session.
func (tx *Tx) Connect(key RouterKey, descr string) *Session {
	r := tx.r
	rt := r.routers[key]
	if rt == nil {
		rt = &router{key: key, stale: make(map[PeerKey]*Peer)}
		r.routers[key] = rt
	}
	if rt.cur != nil {
		tx.retire(rt.cur)
	}
	s := &Session{router: rt, peers: make(map[PeerKey]*Peer)}
	rt.cur = s
	rt.descr = descr
	// Stale peers left from the last session get keep to be taken over.
	tx.armSweep(rt)
	tx.touch()
	return s
}

// Disconnect ends session s: its peers turn stale and their routes are
// removed after the keep period unless the router reconnects.
func (tx *Tx) Disconnect(s *Session) {
	if s == nil || s.retired {
		return
	}
	rt := s.router
	tx.retire(s)
	rt.cur = nil
	tx.armSweep(rt)
	tx.touch()
}

func (tx *Tx) retire(s *Session) {
	s.retired = true
	for _, p := range s.peers {
		tx.makeStale(p)
	}
	s.peers = nil
}

func (tx *Tx) makeStale(p *Peer) {
	rt := p.router
	if p.prev != nil {
		// p replaced prev; what prev still holds is older than p.
		tx.flushPeer(p.prev)
	}
	if old := rt.stale[p.key]; old != nil && old != p {
		tx.flushPeer(old)
	}
	p.stale = true
	rt.stale[p.key] = p
}

// armSweep (re)schedules the removal of rt's stale peers keep from now,
// or forgets rt when nothing of it is left.
func (tx *Tx) armSweep(rt *router) {
	r := tx.r
	rt.timerSeq++
	if rt.timer != nil {
		rt.timer.Stop()
		rt.timer = nil
	}
	if len(rt.stale) == 0 {
		if rt.cur == nil && r.routers[rt.key] == rt {
			delete(r.routers, rt.key)
		}
		return
	}
	seq := rt.timerSeq
	rt.timer = r.clock.AfterFunc(r.keep, func() { r.sweep(rt, seq) })
}

func (r *RIB) sweep(rt *router, seq uint64) {
	tx := r.Begin()
	defer tx.Commit()
	if rt.timerSeq != seq {
		return // re-armed or stopped meanwhile
	}
	rt.timer = nil
	for _, p := range rt.stale {
		tx.flushPeer(p)
	}
	if rt.cur == nil && r.routers[rt.key] == rt {
		delete(r.routers, rt.key)
	}
}

// PeerUp registers a peer reported by session s (BMP Peer Up, or the
// first route of a peer without one). A second Peer Up for a peer that
// is up restarts it: the old routes go at once. A stale session of the
// same peer from an earlier BMP session is taken over.
func (tx *Tx) PeerUp(s *Session, key PeerKey, asn uint32, bgpID netip.Addr) *Peer {
	if s == nil || s.retired {
		return nil
	}
	if old := s.peers[key]; old != nil {
		tx.PeerDown(old)
	}
	rt := s.router
	tx.seq++
	p := &Peer{key: key, asn: asn, bgpID: bgpID, router: rt, sess: s, seq: tx.seq}
	if !key.Global() {
		p.vrf = tx.holdVRF(VRFKey{Router: rt.key, Distinguisher: key.Distinguisher})
	}
	tx.register(p)
	if st := rt.stale[key]; st != nil && st.next == nil {
		p.prev = st
		st.next = p
	}
	s.peers[key] = p
	return p
}

// PeerDown removes p's routes at once, and those of the stale session it
// was taking over.
func (tx *Tx) PeerDown(p *Peer) {
	if p == nil || p.gone {
		return
	}
	prev := p.prev
	tx.flushPeer(p)
	if prev != nil {
		tx.flushPeer(prev)
	}
}

func (tx *Tx) flushPeer(p *Peer) {
	if p.gone {
		return
	}
	tx.removeRoutes(p, 1<<numViews-1, 3)
	tx.release(p)
}

func (tx *Tx) register(p *Peer) {
	r := tx.r
	if k := len(r.free); k > 0 {
		p.idx = r.free[k-1]
		r.free = r.free[:k-1]
	} else {
		p.idx = uint32(len(r.peers))
	}
	tx.setPeer(p.idx, p)
	tx.touch().npeers++
}

func (tx *Tx) release(p *Peer) {
	p.gone = true
	if p.next != nil && p.next.prev == p {
		p.next.prev = nil
	}
	if p.prev != nil && p.prev.next == p {
		p.prev.next = nil
	}
	p.next, p.prev = nil, nil
	rt := p.router
	if rt.stale[p.key] == p {
		delete(rt.stale, p.key)
	}
	if p.sess.peers[p.key] == p {
		delete(p.sess.peers, p.key)
	}
	tx.setPeer(p.idx, nil)
	tx.setPathList(p.idx, nil)
	if p.vrf != nil {
		tx.dropVRF(p.vrf)
	}
	p.pt = pathTable{}
	if tx.lastPeer == p {
		tx.lastPeer = nil
	}
	tx.released = append(tx.released, p.idx)
	tx.touch().npeers--
	if len(rt.stale) == 0 && rt.cur == nil {
		tx.armSweep(rt) // stops the timer and forgets the router
	}
}

// setPeer writes the registry, copying it first if the published
// snapshot shares it.
func (tx *Tx) setPeer(idx uint32, p *Peer) {
	r := tx.r
	if r.peersShared {
		r.peers = slices.Grow(slices.Clone(r.peers), 1)
		r.peersShared = false
	}
	if int(idx) == len(r.peers) {
		r.peers = append(r.peers, p)
	} else {
		r.peers[idx] = p
	}
}
