// SPDX-License-Identifier: AGPL-3.0-only

package flow

import (
	"encoding/binary"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// entry is the part of an active flow that every update reads or writes:
// the key (compared by the index lookup), the counters of the current
// record, last-seen, rate, label set and the optional per-packet fields,
// in one 64-byte cache line (see arena). What only creating, ending and
// reporting a flow need is in entryCold. Neither holds pointers, so the
// garbage collector never scans the flow table however large it grows.
//
// The key is stored compactly: an IPv4 flow's addresses are 4 bytes each
// in addrs; an IPv6 flow's 32 bytes of addresses are in Table.v6 and
// addrs holds their id. The Key type callers see does not change
// (storedKey rebuilds it).
type entry struct {
	last    int64  // boot ns of the newest sampled packet
	packets uint64 // sampled, since the current record started
	bytes   uint64
	addrs   uint64 // IPv4: source | destination << 32 (little endian loads); IPv6: id in Table.v6
	ifindex uint32
	srcPort uint16
	dstPort uint16
	// ver is bumped when a flow takes the slot and when it leaves, so
	// it is odd exactly while the slot holds a flow.
	ver       uint32
	rate      uint32 // 1-in-N rate of every packet counted in this flow
	set       int32  // label set (Table.sets) the flow counts in
	vlanOuter uint16
	vlanInner uint16
	proto     uint8
	tos       uint8
	dir       datapath.Direction
	kind      uint8 // kindDropped, kindV6, kindRec
	// Optional fields, zero when the datapath reports none.
	tcpFlags       uint8
	ttlMin, ttlMax uint8
}

const (
	kindDropped = 1 << iota // Key.Dropped
	kindV6                  // addresses in Table.v6, not in addrs
	kindRec                 // an active timeout exported part of the flow: it has a recordState
)

// entryCold is the rest of a flow: read when it is created, ended,
// exported or reported, never by an update of an existing flow (except
// first, for an event older than every one before).
type entryCold struct {
	// firstOrRec is the boot ns of the first sampled packet, or for a
	// flow with kindRec its id in Table.recs, where the first packet's
	// time then is (see Table.first): a flow with a record state needs
	// no second field for its id.
	firstOrRec int64
	// src and dst are the flow's labels, one id per side in
	// Table.bgpSrc and Table.bgpDst: ASN, city and BGP context of the
	// route chosen for that address; the destination side also holds
	// the flow's path and the enricher generation of its labels (see
	// dstSide). 0 when all of it is zero.
	src, dst uint32
}

// recID is the id in Table.recs of a flow with kindRec.
func (c *entryCold) recID() uint32 { return uint32(c.firstOrRec) }

// first returns where the boot ns of the first sampled packet of the
// flow whose parts are e and c is kept.
func (t *Table) first(e *entry, c *entryCold) *int64 {
	if e.kind&kindRec != 0 {
		return &t.recs.states[c.recID()].first
	}
	return &c.firstOrRec
}

// live reports whether the slot holds a flow.
func (e *entry) live() bool { return e.ver&1 == 1 }

// isV4Mapped reports whether a holds an IPv4 address in ::ffff:0:0/96.
func isV4Mapped(a *[16]byte) bool {
	le := binary.LittleEndian
	return le.Uint64(a[0:8]) == 0 && le.Uint32(a[8:12]) == 0xffff0000
}

// v4Key reports whether k is stored with 4-byte addresses: both of its
// addresses are v4-mapped. Any other key (IPv6, or a mix that no
// datapath produces) keeps its 16-byte addresses in Table.v6.
func v4Key(k *Key) bool { return isV4Mapped(&k.Src) && isV4Mapped(&k.Dst) }

// v4Addrs packs the IPv4 addresses of a v4Key.
func v4Addrs(k *Key) uint64 {
	le := binary.LittleEndian
	return uint64(le.Uint32(k.Src[12:16])) | uint64(le.Uint32(k.Dst[12:16]))<<32
}

// storeKey stores k in e, taking an id in v6 for an IPv6 key.
func storeKey(e *entry, k *Key, v6 *addrPairs) {
	e.ifindex, e.srcPort, e.dstPort = k.Ifindex, k.SrcPort, k.DstPort
	e.proto, e.tos, e.dir = k.Proto, k.TOS, k.Dir
	e.vlanOuter, e.vlanInner = k.VLANOuter, k.VLANInner
	e.kind &^= kindDropped | kindV6
	if k.Dropped {
		e.kind |= kindDropped
	}
	if v4Key(k) {
		e.addrs = v4Addrs(k)
		return
	}
	e.kind |= kindV6
	e.addrs = uint64(v6.add(k.Src, k.Dst))
}

// storedKey rebuilds the Key of entry e.
func storedKey(e *entry, v6 *addrPairs) Key {
	k := Key{Ifindex: e.ifindex, SrcPort: e.srcPort, DstPort: e.dstPort, Proto: e.proto, Dir: e.dir,
		Dropped: e.kind&kindDropped != 0, TOS: e.tos, VLANOuter: e.vlanOuter, VLANInner: e.vlanInner}
	if e.kind&kindV6 != 0 {
		p := &v6.pairs[e.addrs]
		copy(k.Src[:], p[:16])
		copy(k.Dst[:], p[16:])
		return k
	}
	k.Src[10], k.Src[11], k.Dst[10], k.Dst[11] = 0xff, 0xff, 0xff, 0xff
	binary.LittleEndian.PutUint32(k.Src[12:], uint32(e.addrs))
	binary.LittleEndian.PutUint32(k.Dst[12:], uint32(e.addrs>>32))
	return k
}

// matches reports whether e holds key k. The compares are written out:
// the generated equality for Key calls memequal, which costs more than
// the compares themselves.
func matches(e *entry, k *Key, v6 *addrPairs) bool {
	if e.ifindex != k.Ifindex || e.srcPort != k.SrcPort || e.dstPort != k.DstPort || e.proto != k.Proto ||
		e.dir != k.Dir || e.tos != k.TOS || e.vlanOuter != k.VLANOuter || e.vlanInner != k.VLANInner ||
		(e.kind&kindDropped != 0) != k.Dropped {
		return false
	}
	if e.kind&kindV6 == 0 {
		return v4Key(k) && e.addrs == v4Addrs(k)
	}
	if v4Key(k) {
		return false
	}
	le := binary.LittleEndian
	p := &v6.pairs[e.addrs]
	return le.Uint64(p[0:8]) == le.Uint64(k.Src[0:8]) && le.Uint64(p[8:16]) == le.Uint64(k.Src[8:16]) &&
		le.Uint64(p[16:24]) == le.Uint64(k.Dst[0:8]) && le.Uint64(p[24:32]) == le.Uint64(k.Dst[8:16])
}

// addrPairs holds the source and destination addresses of IPv6 flows,
// 32 bytes each, so IPv4 flows (most of a router's, usually) do not pay
// for 16-byte addresses. Ids are reused once freed.
type addrPairs struct {
	pairs [][32]byte
	free  []uint32
}

func (p *addrPairs) add(src, dst [16]byte) uint32 {
	var v [32]byte
	copy(v[:16], src[:])
	copy(v[16:], dst[:])
	if n := len(p.free); n > 0 {
		id := p.free[n-1]
		p.free = p.free[:n-1]
		p.pairs[id] = v
		return id
	}
	p.pairs = appendDoubling(p.pairs, v)
	return uint32(len(p.pairs) - 1)
}

func (p *addrPairs) release(id uint32) { p.free = append(p.free, id) }

// recordState is what a flow keeps once an active timeout has exported
// part of it: where its current record starts (the previous record's
// End, wall ns, kept as it was handed out so that records tile exactly
// even when the boot-to-wall offset is re-measured in between, and the
// same instant in boot ns, for the next active timeout) and what the
// earlier records held. Flows shorter than the active timeout never
// need it, so it lives in Table.recs, not in every entry.
type recordState struct {
	first                  int64 // boot ns of the flow's first sampled packet
	startWall, startBoot   int64
	prevPackets, prevBytes uint64
}

// recordStates holds the recordState of flows with kindRec; id 0 is
// never handed out.
type recordStates struct {
	states []recordState
	free   []uint32
}

func (r *recordStates) add() uint32 {
	if n := len(r.free); n > 0 {
		id := r.free[n-1]
		r.free = r.free[:n-1]
		r.states[id] = recordState{}
		return id
	}
	if len(r.states) == 0 {
		r.states = appendDoubling(r.states, recordState{})
	}
	r.states = appendDoubling(r.states, recordState{})
	return uint32(len(r.states) - 1)
}

func (r *recordStates) release(id uint32) { r.free = append(r.free, id) }

// appendDoubling is append that doubles the capacity of a full slice:
// append grows a large slice by a quarter at a time, which leaves about
// four times the final size behind as garbage on the way to a full table
// (and resident until the runtime reuses or returns it).
func appendDoubling[T any](s []T, v T) []T {
	if len(s) == cap(s) {
		grown := make([]T, len(s), max(2*cap(s), 256))
		copy(grown, s)
		s = grown
	}
	return append(s, v)
}
