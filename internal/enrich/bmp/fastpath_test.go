// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// pairedDecoders decode the same messages with and without the fast
// path.
type pairedDecoders struct {
	fast, slow *decoder
	cf, cs     counters
}

func newPairedDecoders() *pairedDecoders {
	p := &pairedDecoders{}
	p.fast, p.slow = newDecoder(&p.cf), newDecoder(&p.cs)
	p.slow.gobgpOnly = true
	return p
}

// decode feeds m to both and fails the test if their ops or counters
// differ.
func (p *pairedDecoders) decode(t testing.TB, m []byte) {
	t.Helper()
	of, ef := p.fast.decode(m, nil)
	os, es := p.slow.decode(m, nil)
	if (ef == nil) != (es == nil) {
		t.Fatalf("errors differ: fast %v, gobgp %v", ef, es)
	}
	if len(of) != len(os) {
		t.Fatalf("fast path made %d ops, gobgp path %d\nfast:  %s\ngobgp: %s", len(of), len(os), opsString(of), opsString(os))
	}
	for i := range of {
		a, b := of[i], os[i]
		if a.kind != b.kind || (a.peer == nil) != (b.peer == nil) || a.peer != nil && a.peer.key != b.peer.key || a.view != b.view || a.prefix != b.prefix ||
			a.pathID != b.pathID || a.path != b.path || a.ipv6 != b.ipv6 || a.name != b.name || a.descr != b.descr {
			t.Fatalf("op %d differs\nfast:  %s\ngobgp: %s", i, opsString(of), opsString(os))
		}
	}
	for i := range p.cf.skipped {
		if f, s := p.cf.skipped[i].Load(), p.cs.skipped[i].Load(); f != s {
			t.Fatalf("skipped[%s]: fast %d, gobgp %d", skipNames[i], f, s)
		}
	}
	if f, s := p.cf.errors.Load(), p.cs.errors.Load(); f != s {
		t.Fatalf("errors: fast %d, gobgp %d", f, s)
	}
}

func opsString(ops []op) string {
	var b bytes.Buffer
	for _, o := range ops {
		fmt.Fprintf(&b, "{%d %v %s id=%d path=%q} ", o.kind, o.view, o.prefix, o.pathID, o.path.String())
	}
	return b.String()
}

// FuzzFastPath wraps a BGP message in Route Monitoring (flags as in
// FuzzUpdate) and checks that the fast path and the gobgp-based
// decoder make the same ops and count the same skips.
func FuzzFastPath(f *testing.F) {
	for _, s := range updateSeeds(f) {
		f.Add(s.flags, s.msg)
	}
	f.Fuzz(func(t *testing.T, flags byte, msg []byte) {
		fastPathCase(t, flags, msg)
	})
}

// fastPathCase reports whether the fast path took the message.
func fastPathCase(t testing.TB, flags byte, msg []byte) bool {
	t.Helper()
	p := newPairedDecoders()
	var o peerUpOpts
	if flags&1 != 0 {
		both := map[bgp.Family]bgp.BGPAddPathMode{bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_BOTH, bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_BOTH}
		o.sentAddPath, o.recvAddPath = both, both
	}
	if flags&2 != 0 {
		// ADD-PATH for IPv6 only.
		v6 := map[bgp.Family]bgp.BGPAddPathMode{bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_BOTH}
		o.sentAddPath, o.recvAddPath = v6, v6
	}
	p.decode(t, initiationMsg(t, "fuzz"))
	p.decode(t, peerUpMsg(t, peerA, 65001, o))
	m := rmRaw(t, fuzzHeader(flags), msg)
	p.decode(t, m) // a Loc-RIB peer is registered here by the gobgp path
	p.decode(t, m) // and here known to both
	_, ok := p.fast.fastRouteMonitoring(m, nil)
	return ok
}

// TestFastPathRecorded runs every message of the recorded gobgpd and
// FRR sessions through both decoders, and checks that the fast path
// takes the Route Monitoring messages of those sessions.
func TestFastPathRecorded(t *testing.T) {
	for _, fx := range fixtures {
		b, err := os.ReadFile(filepath.Join("testdata", fx.file))
		if err != nil {
			t.Fatal(err)
		}
		p := newPairedDecoders()
		fr := newFramer(bytes.NewReader(b), DefaultMaxMessageSize)
		rm, fast := 0, 0
		for {
			m, err := fr.next()
			if err != nil {
				break
			}
			if m[5] == typeRouteMonitoring {
				rm++
				if _, ok := p.fast.fastRouteMonitoring(m, nil); ok {
					fast++
				}
			}
			p.decode(t, m)
		}
		t.Logf("%s: %d of %d Route Monitoring messages on the fast path", fx.file, fast, rm)
		if rm > 0 && fast == 0 {
			t.Errorf("%s: no Route Monitoring message took the fast path", fx.file)
		}
	}
}

// TestFastPathGenerated compares both decoders on random UPDATEs (both
// families, ADD-PATH, 2- and 4-byte AS paths, optional attributes,
// withdraws) and on corrupted copies of them.
func TestFastPathGenerated(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	v4 := func() string { return fmt.Sprintf("198.%d.%d.0/%d", 18+rnd.IntN(2), rnd.IntN(256), 16+rnd.IntN(17)) }
	v6 := func() string { return fmt.Sprintf("2001:db8:%x::/%d", rnd.IntN(1<<16), 32+rnd.IntN(97)) }
	fast := 0
	const n = 3000
	for i := range n {
		var r route
		for range rnd.IntN(4) {
			r.announce = append(r.announce, v4())
		}
		for range rnd.IntN(3) {
			r.announce = append(r.announce, v6())
		}
		for range rnd.IntN(3) {
			if rnd.IntN(2) == 0 {
				r.withdraw = append(r.withdraw, v4())
			} else {
				r.withdraw = append(r.withdraw, v6())
			}
		}
		for range rnd.IntN(4) {
			r.path = append(r.path, uint32(rnd.IntN(3))*2_000_000_000+uint32(rnd.IntN(70000)))
		}
		addPath := rnd.IntN(3) == 0
		for range len(r.announce) + len(r.withdraw) {
			r.pathIDs = append(r.pathIDs, rnd.Uint32())
		}
		if rnd.IntN(2) == 0 {
			r.extraAttr = append(r.extraAttr, bgp.NewPathAttributeMultiExitDisc(rnd.Uint32()), bgp.NewPathAttributeLocalPref(100))
		}
		if rnd.IntN(2) == 0 {
			r.extraAttr = append(r.extraAttr, bgp.NewPathAttributeCommunities([]uint32{rnd.Uint32(), rnd.Uint32()}),
				bgp.NewPathAttributeLargeCommunities([]*bgp.LargeCommunity{bgp.NewLargeCommunity(65001, 1, 2)}))
		}
		if rnd.IntN(8) == 0 {
			r.extraAttr = append(r.extraAttr, bgp.NewPathAttributeAtomicAggregate(), must(bgp.NewPathAttributeAggregator(uint32(65001), netip.MustParseAddr("192.0.2.1"))))
		}
		var msg []byte
		var err error
		var opts []*bgp.MarshallingOption
		if addPath {
			opts = append(opts, &bgp.MarshallingOption{AddPath: map[bgp.Family]bgp.BGPAddPathMode{
				bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_SEND, bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_SEND,
			}})
		}
		flags := byte(0)
		if addPath {
			flags |= 1
		}
		switch rnd.IntN(6) {
		case 0:
			flags |= flagPostPolicy
		case 1:
			flags |= 0x80 // Loc-RIB
		case 2:
			// 2-byte AS_PATH with AS4_PATH, announced with the A flag.
			m := as2Update([]uint16{65001, 23456}, []uint32{4_200_000_000 + uint32(i)})
			flags |= flagTwoByteAS
			msg, err = m.Serialize(opts...)
		}
		if msg == nil {
			msg, err = updateMsg(t, r).Serialize(opts...)
		}
		if err != nil {
			t.Fatal(err)
		}
		if fastPathCase(t, flags, msg) {
			fast++
		}
		// Corrupted copies: a flipped byte, a cut, a length changed.
		for range 4 {
			c := bytes.Clone(msg)
			switch k := rnd.IntN(3); {
			case k == 0 && len(c) > 19:
				c[19+rnd.IntN(len(c)-19)] ^= byte(1 + rnd.IntN(255))
			case k == 1 && len(c) > 20:
				c = c[:19+rnd.IntN(len(c)-19)]
			default:
				if len(c) > 19 {
					c[19+rnd.IntN(len(c)-19)] = byte(rnd.IntN(256))
				}
			}
			fastPathCase(t, flags, c)
		}
	}
	t.Logf("%d of %d generated UPDATEs decodable on the fast path", fast, n)
	if fast < n/2 {
		t.Errorf("only %d of %d generated UPDATEs took the fast path", fast, n)
	}
}
