// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// Message layout constants (RFC 7011 sections 3.1, 3.3.2, 3.4.1, 3.4.2.2).
const (
	ipfixVersion = 10
	headerLen    = 16
	setHeaderLen = 4

	setIDTemplate        = 2
	setIDOptionsTemplate = 3

	// Template IDs of the records we export; data set IDs equal them.
	templateIDv4         uint16 = 256
	templateIDv6         uint16 = 257
	templateIDSampling   uint16 = 258
	templateIDInterfaces uint16 = 259
)

// IANA information element IDs. All are in the IANA registry, so the
// enterprise bit is never set and no enterprise number is written.
const (
	ieOctetDeltaCount          uint16 = 1
	iePacketDeltaCount         uint16 = 2
	ieProtocolIdentifier       uint16 = 4
	ieSourceTransportPort      uint16 = 7
	ieSourceIPv4Address        uint16 = 8
	ieIngressInterface         uint16 = 10
	ieDestinationTransportPort uint16 = 11
	ieDestinationIPv4Address   uint16 = 12
	ieEgressInterface          uint16 = 14
	ieBgpSourceAsNumber        uint16 = 16
	ieBgpDestinationAsNumber   uint16 = 17
	ieSourceIPv6Address        uint16 = 27
	ieDestinationIPv6Address   uint16 = 28
	ieSamplingInterval         uint16 = 34
	ieSamplingAlgorithm        uint16 = 35
	ieSamplerRandomInterval    uint16 = 50
	ieFlowDirection            uint16 = 61
	ieForwardingStatus         uint16 = 89
	ieInterfaceName            uint16 = 82
	ieInterfaceDescription     uint16 = 83
	ieFlowEndReason            uint16 = 136
	ieObservationDomainID      uint16 = 149
	ieFlowStartMilliseconds    uint16 = 152
	ieFlowEndMilliseconds      uint16 = 153
)

// samplingAlgorithmRandom is the samplingAlgorithm (IE 35) code for random
// n-out-of-N sampling, which is what the datapath does.
const samplingAlgorithmRandom = 2

// Interface option strings are fixed-size, NUL-padded fields rather than
// RFC 7011 section 7 variable-length ones: nfdump reads option records at
// fixed offsets and cannot skip a variable-length field, goflow2 and
// Wireshark read both. 16 bytes is Linux's IFNAMSIZ, so any kernel interface
// name fits whole.
const (
	interfaceNameLen        = 16
	interfaceDescriptionLen = 64
)

type fieldSpec struct {
	id     uint16
	length uint16
}

// flowTail is everything after the two addresses, identical for both
// families. The encoder below writes exactly this order.
var flowTail = []fieldSpec{
	{ieSourceTransportPort, 2},
	{ieDestinationTransportPort, 2},
	{ieProtocolIdentifier, 1},
	{ieIngressInterface, 4},
	{ieEgressInterface, 4},
	{ieFlowDirection, 1},
	{ieFlowStartMilliseconds, 8},
	{ieFlowEndMilliseconds, 8},
	{iePacketDeltaCount, 8},
	{ieOctetDeltaCount, 8},
	{ieFlowEndReason, 1},
	{ieBgpSourceAsNumber, 4},
	{ieBgpDestinationAsNumber, 4},
	{ieForwardingStatus, 1},
}

var (
	fieldsV4 = append([]fieldSpec{{ieSourceIPv4Address, 4}, {ieDestinationIPv4Address, 4}}, flowTail...)
	fieldsV6 = append([]fieldSpec{{ieSourceIPv6Address, 16}, {ieDestinationIPv6Address, 16}}, flowTail...)

	samplingScope   = []fieldSpec{{ieObservationDomainID, 4}}
	samplingOptions = []fieldSpec{{ieSamplingInterval, 4}, {ieSamplingAlgorithm, 1}, {ieSamplerRandomInterval, 4}}

	interfaceScope   = []fieldSpec{{ieIngressInterface, 4}}
	interfaceOptions = []fieldSpec{{ieInterfaceName, interfaceNameLen}, {ieInterfaceDescription, interfaceDescriptionLen}}
)

// Record sizes in bytes; a test checks them against the field lists.
const (
	flowTailLen        = 56
	flowRecordLenV4    = 8 + flowTailLen
	flowRecordLenV6    = 32 + flowTailLen
	samplingRecordLen  = 4 + 4 + 1 + 4
	interfaceRecordLen = 4 + interfaceNameLen + interfaceDescriptionLen
)

// A message goes in one UDP datagram: 512 bytes is the least any path
// carries (and holds the templates and the largest record), 65507 the
// largest UDP payload over IPv4.
const (
	MinMessageSize = 512
	MaxMessageSize = 65507
)

// flowEntry is a flow record reduced to what goes on the wire. It has no
// pointers, so a large queue of them costs the garbage collector nothing.
type flowEntry struct {
	src, dst         [16]byte
	startMs, endMs   uint64
	packets, octets  uint64
	ifindex          uint32
	inIfindex        uint32 // where an egress flow's packets came in; 0 if local
	srcASN, dstASN   uint32
	srcPort, dstPort uint16
	rate             uint32 // 1-in-N rate that sampled the record
	proto            uint8
	egress           bool
	dropped          bool // by the XDP fast path
	reason           uint8
	v4               bool
	opt              optionalValues // written only when the layout selects them (fields.go)

	// Optional information elements (optional.go).
	bgpNextHop                 [16]byte
	nextAS, prevAS             uint32
	srcPrefixLen, dstPrefixLen uint8
	// communities is 1 + the index of the record's communities in the
	// list queued with it (communityList), 0 for none: strings here
	// would make the queue a place the garbage collector scans.
	communities uint32
}

// communityList holds the communities of queued records (GroupBGPCommunities),
// as encoded: 4 bytes per standard, 12 per large community.
type communityList []struct{ std, large string }

// add appends a record's communities, capped so that a record always
// fits in a message, and returns flowEntry.communities for them.
func (l *communityList) add(b *flow.BGP) uint32 {
	if b.Communities == "" && b.LargeCommunities == "" {
		return 0
	}
	*l = append(*l, struct{ std, large string }{
		b.Communities[:min(len(b.Communities), maxCommunities*communityLen)],
		b.LargeCommunities[:min(len(b.LargeCommunities), maxLargeCommunities*largeCommunityLen)],
	})
	return uint32(len(*l))
}

// get returns the communities of a flowEntry.communities value.
func (l communityList) get(i uint32) (std, large string) {
	if i == 0 || int(i) > len(l) {
		return "", ""
	}
	return l[i-1].std, l[i-1].large
}

func unixMilli(ms int64) uint64 {
	if ms < 0 {
		return 0
	}
	return uint64(ms)
}

func (e *Exporter) entryFromRecord(r *flow.Record) flowEntry {
	rate := r.SampleRate
	if rate == 0 {
		rate = e.defaultRate
	}
	f := flowEntry{
		rate:      rate,
		src:       r.Src,
		dst:       r.Dst,
		startMs:   unixMilli(r.Start.UnixMilli()),
		endMs:     unixMilli(r.End.UnixMilli()),
		packets:   r.Packets,
		octets:    r.Bytes,
		ifindex:   r.Ifindex,
		inIfindex: r.InIfindex,
		srcASN:    r.SrcASN,
		dstASN:    r.DstASN,
		srcPort:   r.SrcPort,
		dstPort:   r.DstPort,
		proto:     r.Proto,
		egress:    r.Dir == datapath.Egress,
		dropped:   r.Dropped,
		reason:    uint8(r.Reason),
		opt:       optionalOf(r),
		// The IPv4 template only when both addresses are IPv4: a mixed
		// pair cannot come from one packet, but must not lose bytes.
		v4: isV4Mapped(&r.Src) && isV4Mapped(&r.Dst),

		bgpNextHop:   r.BGP.NextHop,
		nextAS:       r.BGP.NextAS,
		prevAS:       r.BGP.PrevAS,
		srcPrefixLen: r.BGP.SrcPrefixLen,
		dstPrefixLen: r.BGP.DstPrefixLen,
	}
	return f
}

// entryWithCommunities is entryFromRecord, with the record's communities
// added to comms when the exporter sends them.
func (e *Exporter) entryWithCommunities(r *flow.Record, comms *communityList) flowEntry {
	f := e.entryFromRecord(r)
	if e.communities {
		f.communities = comms.add(&r.BGP)
	}
	return f
}

var v4MappedPrefix = [12]byte{10: 0xff, 11: 0xff}

func isV4Mapped(a *[16]byte) bool { return [12]byte(a[:12]) == v4MappedPrefix }

// message builds one IPFIX message in a buffer allocated once with the
// maximum message size as capacity, so adding records never allocates.
type message struct {
	layout   *flowLayout // the fixed optional fields (fields.go), lay.fixed
	buf      []byte
	max      int
	lay      *layout       // flow templates: layout's and the optional groups (optional.go)
	scratch  []byte        // optional values of the record being added
	comms    communityList // of the records being added (flowEntry.communities)
	setStart int           // offset of the open set's header; 0 when no set is open
	setID    uint16
	// dataRecords counts flow and options data records (both advance the
	// RFC 7011 sequence number); flowRecords counts flow records only.
	dataRecords uint32
	flowRecords int
}

func newMessage(maxSize int) *message { return newMessageLayout(maxSize, plainLayout) }

func newMessageLayout(maxSize int, l *layout) *message {
	return &message{layout: l.fixed, buf: make([]byte, headerLen, maxSize), max: maxSize, lay: l}
}

func (m *message) reset() {
	m.buf = m.buf[:headerLen]
	m.setStart = 0
	m.setID = 0
	m.dataRecords = 0
	m.flowRecords = 0
}

func (m *message) empty() bool { return len(m.buf) == headerLen }

// reserve returns n bytes at the end of a set with the given ID, opening a
// new set when the open one has another ID. It returns nil, changing
// nothing, when the message has no room. The caller overwrites all n bytes.
func (m *message) reserve(setID uint16, n int) []byte {
	need := n
	open := m.setStart == 0 || m.setID != setID
	if open {
		need += setHeaderLen
	}
	if len(m.buf)+need > m.max {
		return nil
	}
	if open {
		m.closeSet()
		start := len(m.buf)
		m.buf = m.buf[:start+setHeaderLen]
		binary.BigEndian.PutUint16(m.buf[start:], setID)
		m.setStart = start
		m.setID = setID
	}
	start := len(m.buf)
	m.buf = m.buf[:start+n]
	return m.buf[start : start+n]
}

// closeSet writes the open set's length. No padding is added: RFC 7011
// makes set padding optional, and exact lengths leave no trailing bytes a
// collector could mistake for a short record.
func (m *message) closeSet() {
	if m.setStart == 0 {
		return
	}
	binary.BigEndian.PutUint16(m.buf[m.setStart+2:], uint16(len(m.buf)-m.setStart))
	m.setStart = 0
	m.setID = 0
}

// finish closes the last set, fills in the message header and returns the
// encoded message, valid until the next reset.
func (m *message) finish(exportTime, sequence, domainID uint32) []byte {
	m.closeSet()
	b := m.buf
	binary.BigEndian.PutUint16(b[0:], ipfixVersion)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint32(b[4:], exportTime)
	binary.BigEndian.PutUint32(b[8:], sequence)
	binary.BigEndian.PutUint32(b[12:], domainID)
	return b
}

// addTemplate adds a template record in its own template set.
func (m *message) addTemplate(id uint16, fields []fieldSpec) bool {
	b := m.reserve(setIDTemplate, 4+4*len(fields))
	if b == nil {
		return false
	}
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], uint16(len(fields)))
	putFieldSpecs(b[4:], fields)
	m.closeSet()
	return true
}

// addOptionsTemplate adds an options template record in its own options
// template set: nfdump reads only the first record of such a set.
func (m *message) addOptionsTemplate(id uint16, scope, options []fieldSpec) bool {
	b := m.reserve(setIDOptionsTemplate, 6+4*(len(scope)+len(options)))
	if b == nil {
		return false
	}
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], uint16(len(scope)+len(options)))
	binary.BigEndian.PutUint16(b[4:], uint16(len(scope)))
	putFieldSpecs(b[6:], scope)
	putFieldSpecs(b[6+4*len(scope):], options)
	m.closeSet()
	return true
}

func putFieldSpecs(b []byte, fields []fieldSpec) {
	for i, f := range fields {
		binary.BigEndian.PutUint16(b[4*i:], f.id)
		binary.BigEndian.PutUint16(b[4*i+2:], f.length)
	}
}

// templatesLen is the size of what addTemplates writes without optional
// fields; each optional element adds 4 bytes per flow template.
const templatesLen = 2*(setHeaderLen+4+4*16) +
	(setHeaderLen + 6 + 4*4) + (setHeaderLen + 6 + 4*3)

// addTemplates adds all four templates, each in its own set.
func (m *message) addTemplates() bool {
	return m.addTemplate(templateIDv4, m.lay.fields4) &&
		m.addTemplate(templateIDv6, m.lay.fields6) &&
		m.addOptionsTemplate(templateIDSampling, samplingScope, samplingOptions) &&
		m.addOptionsTemplate(templateIDInterfaces, interfaceScope, interfaceOptions)
}

// addSampling adds the sampling options record: 1-in-rate random sampling
// for the whole observation domain, as samplingInterval plus
// samplingAlgorithm and as samplerRandomInterval, so collectors reading
// either form find it.
func (m *message) addSampling(domainID, rate uint32) bool {
	b := m.reserve(templateIDSampling, samplingRecordLen)
	if b == nil {
		return false
	}
	_ = b[samplingRecordLen-1]
	binary.BigEndian.PutUint32(b[0:], domainID)
	binary.BigEndian.PutUint32(b[4:], rate)
	b[8] = samplingAlgorithmRandom
	binary.BigEndian.PutUint32(b[9:], rate)
	m.dataRecords++
	return true
}

// addInterface adds one interface options record.
func (m *message) addInterface(ifc *Interface) bool {
	b := m.reserve(templateIDInterfaces, interfaceRecordLen)
	if b == nil {
		return false
	}
	binary.BigEndian.PutUint32(b[0:], ifc.Index)
	desc := ifc.Description
	if desc == "" {
		// nfdump shows interfaceDescription as the interface's name, so
		// an empty description would leave it nameless there.
		desc = ifc.Name
	}
	putFixedString(b[4:4+interfaceNameLen], ifc.Name)
	putFixedString(b[4+interfaceNameLen:interfaceRecordLen], desc)
	m.dataRecords++
	return true
}

// putFixedString writes s into b, cut after the last whole UTF-8 character
// that fits when too long, and NUL-pads the rest.
func putFixedString(b []byte, s string) {
	if len(s) > len(b) {
		n := 0
		for n < len(s) {
			_, size := utf8.DecodeRuneInString(s[n:])
			if n+size > len(b) {
				break
			}
			n += size
		}
		s = s[:n]
	}
	n := copy(b, s)
	clear(b[n:])
}

// addFlow adds one flow record to the data set of its address family:
// the base fields, the selected fixed fields (fields.go), then the
// optional groups (optional.go).
func (m *message) addFlow(f *flowEntry) bool {
	opts, base, id := m.lay.opt6, m.layout.lenV6, templateIDv6
	if f.v4 {
		opts, base, id = m.lay.opt4, m.layout.lenV4, templateIDv4
	}
	m.scratch = m.scratch[:0]
	for _, o := range opts {
		m.scratch = o.put(m.scratch, f, m)
	}
	b := m.reserve(id, base+len(m.scratch))
	if b == nil {
		return false
	}
	var tail []byte
	if f.v4 {
		_ = b[flowRecordLenV4-1]
		copy(b[0:4], f.src[12:16])
		copy(b[4:8], f.dst[12:16])
		tail = b[8:]
	} else {
		_ = b[flowRecordLenV6-1]
		copy(b[0:16], f.src[:])
		copy(b[16:32], f.dst[:])
		tail = b[32:]
	}
	putFlowTail(tail, f)
	if len(m.layout.parts) > 0 {
		m.layout.putOptional(tail[flowTailLen:], f)
	}
	copy(b[base:], m.scratch)
	m.dataRecords++
	m.flowRecords++
	return true
}

// putFlowTail writes the fields of flowTail in order.
func putFlowTail(b []byte, f *flowEntry) {
	_ = b[flowTailLen-1]
	binary.BigEndian.PutUint16(b[0:], f.srcPort)
	binary.BigEndian.PutUint16(b[2:], f.dstPort)
	b[4] = f.proto
	// The interface the packet was seen on is the ingress interface of an
	// ingress flow and the egress interface of an egress flow. An egress
	// flow of forwarded packets also knows where they came in
	// (skb->ingress_ifindex); where they will leave is known at ingress
	// only from a FIB lookup (agent.bpf.fib_lookup), else exported as 0,
	// as is the ingress side of local traffic.
	ingress, egress, direction := f.ifindex, f.opt.outIfindex, uint8(0)
	if f.egress {
		ingress, egress, direction = f.inIfindex, f.ifindex, 1
	}
	binary.BigEndian.PutUint32(b[5:], ingress)
	binary.BigEndian.PutUint32(b[9:], egress)
	b[13] = direction
	binary.BigEndian.PutUint64(b[14:], f.startMs)
	binary.BigEndian.PutUint64(b[22:], f.endMs)
	binary.BigEndian.PutUint64(b[30:], f.packets)
	binary.BigEndian.PutUint64(b[38:], f.octets)
	b[46] = f.reason
	binary.BigEndian.PutUint32(b[47:], f.srcASN)
	binary.BigEndian.PutUint32(b[51:], f.dstASN)
	b[55] = forwardingStatus(f)
}

// forwardingStatus values (IE 89, RFC 7270): the top two bits are the
// status, the rest a reason, 0 for unknown.
const (
	forwardingUnknown   = 0    // status unknown: an ingress packet may be forwarded or delivered locally
	forwardingForwarded = 0x40 // forwarded, reason unknown
	forwardingDropped   = 0x80 // dropped, reason unknown
)

// forwardingStatus says what became of a flow's packets: dropped in XDP,
// forwarded (they left through the interface: an egress flow), or not
// known at ingress.
func forwardingStatus(f *flowEntry) byte {
	switch {
	case f.dropped:
		return forwardingDropped
	case f.egress:
		return forwardingForwarded
	}
	return forwardingUnknown
}
