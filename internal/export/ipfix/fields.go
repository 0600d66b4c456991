// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"encoding/binary"

	"github.com/stepbrobd/rfm/internal/flow"
)

// Optional flow fields (agent.bpf.fields and agent.bpf.fib_lookup): the
// flow templates carry exactly the fields selected, appended behind the
// fixed ones in the order of optionalFields, and the encoder writes them
// in that order. Everything about them lives in this file.

// Fields selects optional information elements of the flow templates.
type Fields uint32

const (
	FieldTCPFlags Fields = 1 << iota // tcpControlBits (6)
	FieldDSCP                        // ipClassOfService (5)
	FieldICMP                        // icmpTypeCodeIPv4 (32) / icmpTypeCodeIPv6 (139)
	FieldTTL                         // minimumTTL (52), maximumTTL (53)
	FieldVLAN                        // dot1qVlanId (243), dot1qCustomerVlanId (245)
	// FieldNextHop adds ipNextHopIPv4Address (15) / ipNextHopIPv6Address
	// (62); the FIB's egress interface goes into egressInterface (14) of
	// ingress records, which every template has.
	FieldNextHop
)

const (
	ieIPClassOfService       uint16 = 5
	ieTCPControlBits         uint16 = 6
	ieIPNextHopIPv4Address   uint16 = 15
	ieICMPTypeCodeIPv4       uint16 = 32
	ieMinimumTTL             uint16 = 52
	ieMaximumTTL             uint16 = 53
	ieIPNextHopIPv6Address   uint16 = 62
	ieICMPTypeCodeIPv6       uint16 = 139
	ieDot1qVlanID            uint16 = 243
	ieDot1qCustomerVlanID    uint16 = 245
	icmpProtoV4, icmpProtoV6        = 1, 58
)

// optionalField is one selectable group of elements: its fields in the
// IPv4 and the IPv6 template (same lengths) and how to write them.
type optionalField struct {
	sel    Fields
	v4, v6 []fieldSpec
	put    func(b []byte, f *flowEntry)
}

var optionalFields = []optionalField{
	// tcpControlBits is unsigned16, sent in its reduced-size encoding
	// (RFC 7011 6.2) of one byte, which holds all flags the datapath
	// keeps: pmacct's nfacctd reads the element only when it is one byte
	// long (a two-byte one reads as 0 there).
	{sel: FieldTCPFlags, v4: []fieldSpec{{ieTCPControlBits, 1}}, v6: []fieldSpec{{ieTCPControlBits, 1}},
		put: func(b []byte, f *flowEntry) { b[0] = f.opt.tcpFlags }},
	{sel: FieldDSCP, v4: []fieldSpec{{ieIPClassOfService, 1}}, v6: []fieldSpec{{ieIPClassOfService, 1}},
		put: func(b []byte, f *flowEntry) { b[0] = f.opt.tos }},
	{sel: FieldICMP, v4: []fieldSpec{{ieICMPTypeCodeIPv4, 2}}, v6: []fieldSpec{{ieICMPTypeCodeIPv6, 2}},
		put: func(b []byte, f *flowEntry) {
			// The datapath keys ICMP by type*256+code in the destination
			// port; records of other protocols carry 0.
			var tc uint16
			if (f.v4 && f.proto == icmpProtoV4) || (!f.v4 && f.proto == icmpProtoV6) {
				tc = f.dstPort
			}
			binary.BigEndian.PutUint16(b, tc)
		}},
	{sel: FieldTTL, v4: []fieldSpec{{ieMinimumTTL, 1}, {ieMaximumTTL, 1}}, v6: []fieldSpec{{ieMinimumTTL, 1}, {ieMaximumTTL, 1}},
		put: func(b []byte, f *flowEntry) { b[0], b[1] = f.opt.ttlMin, f.opt.ttlMax }},
	{sel: FieldVLAN, v4: []fieldSpec{{ieDot1qVlanID, 2}, {ieDot1qCustomerVlanID, 2}}, v6: []fieldSpec{{ieDot1qVlanID, 2}, {ieDot1qCustomerVlanID, 2}},
		put: func(b []byte, f *flowEntry) {
			binary.BigEndian.PutUint16(b[0:], f.opt.vlanOuter)
			binary.BigEndian.PutUint16(b[2:], f.opt.vlanInner)
		}},
	{sel: FieldNextHop, v4: []fieldSpec{{ieIPNextHopIPv4Address, 4}}, v6: []fieldSpec{{ieIPNextHopIPv6Address, 16}},
		put: func(b []byte, f *flowEntry) {
			if f.v4 {
				copy(b[:4], f.opt.nextHop[12:16])
			} else {
				copy(b[:16], f.opt.nextHop[:])
			}
		}},
}

const fieldsAll = FieldNextHop<<1 - 1

// optionalValues are a flow record's optional fields as the encoder
// writes them.
type optionalValues struct {
	nextHop        [16]byte
	outIfindex     uint32 // FIB egress of an ingress flow
	vlanOuter      uint16
	vlanInner      uint16
	tos            uint8
	tcpFlags       uint8
	ttlMin, ttlMax uint8
}

func optionalOf(r *flow.Record) optionalValues {
	return optionalValues{nextHop: r.NextHop, outIfindex: r.OutIfindex, vlanOuter: r.VLANOuter, vlanInner: r.VLANInner,
		tos: r.TOS, tcpFlags: r.TCPFlags, ttlMin: r.MinTTL, ttlMax: r.MaxTTL}
}

// flowLayout is the flow templates and record sizes for one selection.
type flowLayout struct {
	fieldsV4, fieldsV6 []fieldSpec
	lenV4, lenV6       int // record bytes
	optV4, optV6       int // of which optional
	parts              []layoutPart
}

// layoutPart is one selected optionalField with its record bytes.
type layoutPart struct {
	put    func(b []byte, f *flowEntry)
	n4, n6 int
}

// newFlowLayout builds the templates for sel; bits it does not know are
// ignored.
func newFlowLayout(sel Fields) *flowLayout {
	l := &flowLayout{
		fieldsV4: append([]fieldSpec(nil), fieldsV4...),
		fieldsV6: append([]fieldSpec(nil), fieldsV6...),
	}
	for _, o := range optionalFields {
		if sel&o.sel == 0 {
			continue
		}
		l.fieldsV4 = append(l.fieldsV4, o.v4...)
		l.fieldsV6 = append(l.fieldsV6, o.v6...)
		l.optV4 += specLen(o.v4)
		l.optV6 += specLen(o.v6)
		l.parts = append(l.parts, layoutPart{o.put, specLen(o.v4), specLen(o.v6)})
	}
	l.lenV4, l.lenV6 = flowRecordLenV4+l.optV4, flowRecordLenV6+l.optV6
	return l
}

func specLen(fields []fieldSpec) int {
	n := 0
	for _, f := range fields {
		n += int(f.length)
	}
	return n
}

// baseLayout is the templates without optional fields.
var baseLayout = newFlowLayout(0)

// putOptional writes the optional fields of f into b, the bytes behind
// the fixed part of its record.
func (l *flowLayout) putOptional(b []byte, f *flowEntry) {
	for _, p := range l.parts {
		n := p.n6
		if f.v4 {
			n = p.n4
		}
		p.put(b[:n], f)
		b = b[n:]
	}
}

// withFields makes m's flow templates and records carry sel.
func (m *message) withFields(sel Fields) *message {
	m.layout = newFlowLayout(sel)
	m.lay = mustLayout(m.layout, m.lay.groups)
	return m
}
