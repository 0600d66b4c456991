// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Groups of optional information elements follow the base fields and
// the fixed optional fields (fields.go, Config.Fields) of the flow
// templates, in the order of groupIEs, when their group is enabled
// (Config.Optional). Unlike those, they come from enrichment rather than
// the datapath and may be variable-length (put appends). Adding one is
// one entry here, its value in flowEntry and, for a new group, a name in
// the docs: templates, record lengths and the encoder follow from this
// list.

// Groups of optional information elements.
const (
	// GroupBGP: the BGP context of the RIB routes chosen for the flow's
	// addresses (next hop, prefix lengths, adjacent ASes).
	GroupBGP = "bgp"
	// GroupBGPCommunities: the destination route's standard and large
	// communities as RFC 8549 basicLists.
	GroupBGPCommunities = "bgp_communities"
)

// Information elements of the optional groups (IANA registry; RFC 7012,
// RFC 8549).
const (
	ieSourceIPv4PrefixLength           uint16 = 9
	ieDestinationIPv4PrefixLength      uint16 = 13
	ieBgpNextHopIPv4Address            uint16 = 18
	ieSourceIPv6PrefixLength           uint16 = 29
	ieDestinationIPv6PrefixLength      uint16 = 30
	ieBgpNextHopIPv6Address            uint16 = 63
	ieBgpNextAdjacentAsNumber          uint16 = 128
	ieBgpPrevAdjacentAsNumber          uint16 = 129
	ieBgpCommunity                     uint16 = 483
	ieBgpDestinationCommunityList      uint16 = 485
	ieBgpLargeCommunity                uint16 = 489
	ieBgpDestinationLargeCommunityList uint16 = 491
	variableLength                     uint16 = 0xffff // RFC 7011 section 7
	basicListSemanticAllOf             byte   = 3      // RFC 6313 section 4.5.1
	basicListHeaderLen                        = 5      // semantic, field ID, element length
	maxCommunities                            = 40     // standard communities per record
	maxLargeCommunities                       = 12     // large communities per record
	communityLen, largeCommunityLen           = 4, 12
	maxVarLenPrefix                           = 3 // a variable-length value's length field
)

// groupIE is one information element of an optional group. v4 and v6 are its
// field in the IPv4 and IPv6 template (id 0: not in that one); put
// appends its value for a record (of the family f.v4 says) added to m.
type groupIE struct {
	group  string
	v4, v6 fieldSpec
	put    func(b []byte, f *flowEntry, m *message) []byte
}

var groupIEs = []groupIE{
	{GroupBGP, fieldSpec{ieBgpNextHopIPv4Address, 4}, fieldSpec{ieBgpNextHopIPv6Address, 16},
		func(b []byte, f *flowEntry, _ *message) []byte {
			if f.v4 {
				// An IPv6 next hop of an IPv4 route (RFC 8950) does not
				// fit the IPv4 element: 0.0.0.0.
				if !isV4Mapped(&f.bgpNextHop) {
					return append(b, 0, 0, 0, 0)
				}
				return append(b, f.bgpNextHop[12:]...)
			}
			return append(b, f.bgpNextHop[:]...)
		}},
	{GroupBGP, fieldSpec{ieSourceIPv4PrefixLength, 1}, fieldSpec{ieSourceIPv6PrefixLength, 1},
		func(b []byte, f *flowEntry, _ *message) []byte { return append(b, f.srcPrefixLen) }},
	{GroupBGP, fieldSpec{ieDestinationIPv4PrefixLength, 1}, fieldSpec{ieDestinationIPv6PrefixLength, 1},
		func(b []byte, f *flowEntry, _ *message) []byte { return append(b, f.dstPrefixLen) }},
	{GroupBGP, fieldSpec{ieBgpNextAdjacentAsNumber, 4}, fieldSpec{ieBgpNextAdjacentAsNumber, 4},
		func(b []byte, f *flowEntry, _ *message) []byte { return binary.BigEndian.AppendUint32(b, f.nextAS) }},
	{GroupBGP, fieldSpec{ieBgpPrevAdjacentAsNumber, 4}, fieldSpec{ieBgpPrevAdjacentAsNumber, 4},
		func(b []byte, f *flowEntry, _ *message) []byte { return binary.BigEndian.AppendUint32(b, f.prevAS) }},
	{GroupBGPCommunities, fieldSpec{ieBgpDestinationCommunityList, variableLength}, fieldSpec{ieBgpDestinationCommunityList, variableLength},
		func(b []byte, f *flowEntry, m *message) []byte {
			std, _ := m.comms.get(f.communities)
			return appendBasicList(b, ieBgpCommunity, communityLen, std)
		}},
	{GroupBGPCommunities, fieldSpec{ieBgpDestinationLargeCommunityList, variableLength}, fieldSpec{ieBgpDestinationLargeCommunityList, variableLength},
		func(b []byte, f *flowEntry, m *message) []byte {
			_, large := m.comms.get(f.communities)
			return appendBasicList(b, ieBgpLargeCommunity, largeCommunityLen, large)
		}},
}

// Groups lists the names of the optional groups.
func Groups() []string {
	var out []string
	for _, o := range groupIEs {
		if !slices.Contains(out, o.group) {
			out = append(out, o.group)
		}
	}
	return out
}

// appendBasicList appends a variable-length basicList (RFC 6313) of
// elements of id, each elemLen bytes of values.
func appendBasicList(b []byte, id uint16, elemLen int, values string) []byte {
	n := basicListHeaderLen + len(values)
	if n < 255 {
		b = append(b, byte(n))
	} else {
		b = append(b, 255, byte(n>>8), byte(n))
	}
	b = append(b, basicListSemanticAllOf)
	b = binary.BigEndian.AppendUint16(b, id)
	b = binary.BigEndian.AppendUint16(b, uint16(elemLen))
	return append(b, values...)
}

// layout is the flow templates of one exporter: the base fields, the
// selected fixed ones (fixed, fields.go) and the optional groups enabled.
type layout struct {
	fixed            *flowLayout
	groups           []string
	fields4, fields6 []fieldSpec
	opt4, opt6       []*groupIE
	// max4 and max6 bound a record's length (variable-length values at
	// their cap), so a message always has room for one.
	max4, max6 int
}

// plainLayout has no optional information elements.
var plainLayout = mustLayout(baseLayout, nil)

func mustLayout(fixed *flowLayout, groups []string) *layout {
	l, err := newLayout(fixed, groups)
	if err != nil {
		panic(err)
	}
	return l
}

// newLayout builds the templates for the fixed fields and the enabled
// groups, which follow them.
func newLayout(fixed *flowLayout, groups []string) (*layout, error) {
	known := Groups()
	for _, g := range groups {
		if !slices.Contains(known, g) {
			return nil, fmt.Errorf("ipfix: unknown group of information elements %q (known: %v)", g, known)
		}
	}
	l := &layout{
		fixed: fixed, groups: slices.Clone(groups),
		fields4: slices.Clone(fixed.fieldsV4), fields6: slices.Clone(fixed.fieldsV6),
		max4: fixed.lenV4, max6: fixed.lenV6,
	}
	for i := range groupIEs {
		o := &groupIEs[i]
		if !slices.Contains(groups, o.group) {
			continue
		}
		if o.v4.id != 0 {
			l.fields4 = append(l.fields4, o.v4)
			l.opt4 = append(l.opt4, o)
			l.max4 += maxFieldLen(o.v4)
		}
		if o.v6.id != 0 {
			l.fields6 = append(l.fields6, o.v6)
			l.opt6 = append(l.opt6, o)
			l.max6 += maxFieldLen(o.v6)
		}
	}
	return l, nil
}

func maxFieldLen(f fieldSpec) int {
	if f.length != variableLength {
		return int(f.length)
	}
	switch f.id {
	case ieBgpDestinationCommunityList:
		return maxVarLenPrefix + basicListHeaderLen + maxCommunities*communityLen
	case ieBgpDestinationLargeCommunityList:
		return maxVarLenPrefix + basicListHeaderLen + maxLargeCommunities*largeCommunityLen
	}
	panic(fmt.Sprintf("ipfix: no length bound for variable-length element %d", f.id))
}

// templatesLen is the size of what addTemplates writes with l.
func (l *layout) templatesLen() int {
	return 2*(setHeaderLen+4) + 4*(len(l.fields4)+len(l.fields6)) +
		(setHeaderLen + 6 + 4*(len(samplingScope)+len(samplingOptions))) +
		(setHeaderLen + 6 + 4*(len(interfaceScope)+len(interfaceOptions)))
}
