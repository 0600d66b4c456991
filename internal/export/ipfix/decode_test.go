// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netsampler/goflow2/v2/decoders/netflow"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// This file holds the test side of the round trip: messages are decoded
// with goflow2's IPFIX decoder (a collector's view) and turned into plain
// values to compare with what was exported.

// decodedFlow is one flow data record as goflow2 read it.
type decodedFlow struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
	Ingress, Egress  uint32
	Direction        uint8
	StartMs, EndMs   uint64
	Packets, Octets  uint64
	Reason           uint8
	SrcASN, DstASN   uint32
	Forwarding       uint8 // forwardingStatus, IE 89
	// Optional groups; zero when the template has none.
	BGPNextHop                 netip.Addr
	SrcPrefixLen, DstPrefixLen uint8
	NextAS, PrevAS             uint32
	// Communities and LargeCommunities are the basicLists, rendered
	// "65001:100 ..." and "65001:1:2 ..."; "-" when absent.
	Communities, LargeCommunities string
}

type decodedSampling struct {
	DomainID       uint32
	Interval       uint32
	Algorithm      uint8
	RandomInterval uint32
}

// decodedMessage is one IPFIX message as goflow2 read it.
type decodedMessage struct {
	Raw              []byte
	Length           uint16
	ExportTime       uint32
	Sequence         uint32
	DomainID         uint32
	Templates        map[uint16][]netflow.Field
	OptionsTemplates map[uint16]netflow.IPFIXOptionsTemplateRecord
	Flows            []decodedFlow
	Sampling         []decodedSampling
	Interfaces       []Interface
	// DataRecords counts flow and options data records, the unit of the
	// header sequence number.
	DataRecords int
	// Undecodable counts data sets whose template the decoder did not know.
	Undecodable int
}

// goflowCollector decodes a stream of messages from one exporter, keeping
// templates between messages as a collector does.
type goflowCollector struct {
	templates netflow.NetFlowTemplateSystem
}

func newGoflowCollector() *goflowCollector {
	return &goflowCollector{templates: netflow.CreateTemplateSystem()}
}

func (c *goflowCollector) decode(b []byte) (decodedMessage, error) {
	var v9 netflow.NFv9Packet
	var pkt netflow.IPFIXPacket
	if err := netflow.DecodeMessageVersion(bytes.NewBuffer(b), c.templates, &v9, &pkt); err != nil {
		return decodedMessage{}, err
	}
	if pkt.Version != ipfixVersion {
		return decodedMessage{}, fmt.Errorf("version %d", pkt.Version)
	}
	m := decodedMessage{
		Raw:              b,
		Length:           pkt.Length,
		ExportTime:       pkt.ExportTime,
		Sequence:         pkt.SequenceNumber,
		DomainID:         pkt.ObservationDomainId,
		Templates:        map[uint16][]netflow.Field{},
		OptionsTemplates: map[uint16]netflow.IPFIXOptionsTemplateRecord{},
	}
	if int(pkt.Length) != len(b) {
		return m, fmt.Errorf("header length %d, datagram %d bytes", pkt.Length, len(b))
	}
	setBytes := headerLen
	for _, fs := range pkt.FlowSets {
		switch s := fs.(type) {
		case netflow.TemplateFlowSet:
			setBytes += int(s.Length)
			for _, r := range s.Records {
				m.Templates[r.TemplateId] = r.Fields
			}
		case netflow.IPFIXOptionsTemplateFlowSet:
			setBytes += int(s.Length)
			for _, r := range s.Records {
				m.OptionsTemplates[r.TemplateId] = r
			}
		case netflow.DataFlowSet:
			setBytes += int(s.Length)
			for _, r := range s.Records {
				f, err := flowFromFields(r.Values)
				if err != nil {
					return m, fmt.Errorf("set %d: %w", s.Id, err)
				}
				m.Flows = append(m.Flows, f)
				m.DataRecords++
			}
		case netflow.OptionsDataFlowSet:
			setBytes += int(s.Length)
			for _, r := range s.Records {
				if err := m.addOptions(s.Id, r); err != nil {
					return m, fmt.Errorf("set %d: %w", s.Id, err)
				}
				m.DataRecords++
			}
		case netflow.RawFlowSet:
			setBytes += int(s.Length)
			m.Undecodable++
		default:
			return m, fmt.Errorf("unexpected set type %T", fs)
		}
	}
	if setBytes != len(b) {
		return m, fmt.Errorf("sets cover %d of %d bytes", setBytes, len(b))
	}
	return m, nil
}

func (m *decodedMessage) addOptions(setID uint16, r netflow.OptionsDataRecord) error {
	scope, err := fieldMap(r.ScopesValues)
	if err != nil {
		return err
	}
	opts, err := fieldMap(r.OptionsValues)
	if err != nil {
		return err
	}
	switch setID {
	case templateIDSampling:
		m.Sampling = append(m.Sampling, decodedSampling{
			DomainID:       uint32(beUint(scope[ieObservationDomainID])),
			Interval:       uint32(beUint(opts[ieSamplingInterval])),
			Algorithm:      uint8(beUint(opts[ieSamplingAlgorithm])),
			RandomInterval: uint32(beUint(opts[ieSamplerRandomInterval])),
		})
	case templateIDInterfaces:
		m.Interfaces = append(m.Interfaces, Interface{
			Index:       uint32(beUint(scope[ieIngressInterface])),
			Name:        string(bytes.TrimRight(opts[ieInterfaceName], "\x00")),
			Description: string(bytes.TrimRight(opts[ieInterfaceDescription], "\x00")),
		})
	default:
		return fmt.Errorf("unknown options set")
	}
	return nil
}

func fieldMap(values []netflow.DataField) (map[uint16][]byte, error) {
	out := make(map[uint16][]byte, len(values))
	for _, v := range values {
		if v.PenProvided {
			return nil, fmt.Errorf("field %d has an enterprise number", v.Type)
		}
		b, ok := v.Value.([]byte)
		if !ok {
			return nil, fmt.Errorf("field %d: value %T", v.Type, v.Value)
		}
		if _, dup := out[v.Type]; dup {
			return nil, fmt.Errorf("field %d twice", v.Type)
		}
		out[v.Type] = b
	}
	return out, nil
}

func beUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

func flowFromFields(values []netflow.DataField) (decodedFlow, error) {
	fm, err := fieldMap(values)
	if err != nil {
		return decodedFlow{}, err
	}
	// 16 base fields, 5 with the BGP group, 2 with the communities.
	if n := len(fm); n != 16 && n != 21 && n != 18 && n != 23 {
		return decodedFlow{}, fmt.Errorf("%d fields, want 16, 18, 21 or 23", len(fm))
	}
	var f decodedFlow
	var ok1, ok2 bool
	if b, ok := fm[ieSourceIPv4Address]; ok {
		f.Src, ok1 = netip.AddrFromSlice(b)
		f.Dst, ok2 = netip.AddrFromSlice(fm[ieDestinationIPv4Address])
	} else {
		f.Src, ok1 = netip.AddrFromSlice(fm[ieSourceIPv6Address])
		f.Dst, ok2 = netip.AddrFromSlice(fm[ieDestinationIPv6Address])
	}
	if !ok1 || !ok2 {
		return f, fmt.Errorf("bad address fields")
	}
	f.SrcPort = uint16(beUint(fm[ieSourceTransportPort]))
	f.DstPort = uint16(beUint(fm[ieDestinationTransportPort]))
	f.Proto = uint8(beUint(fm[ieProtocolIdentifier]))
	f.Ingress = uint32(beUint(fm[ieIngressInterface]))
	f.Egress = uint32(beUint(fm[ieEgressInterface]))
	f.Direction = uint8(beUint(fm[ieFlowDirection]))
	f.StartMs = beUint(fm[ieFlowStartMilliseconds])
	f.EndMs = beUint(fm[ieFlowEndMilliseconds])
	f.Packets = beUint(fm[iePacketDeltaCount])
	f.Octets = beUint(fm[ieOctetDeltaCount])
	f.Reason = uint8(beUint(fm[ieFlowEndReason]))
	f.SrcASN = uint32(beUint(fm[ieBgpSourceAsNumber]))
	f.DstASN = uint32(beUint(fm[ieBgpDestinationAsNumber]))
	f.Forwarding = uint8(beUint(fm[ieForwardingStatus]))
	for _, id := range []uint16{18, 63} {
		if b, ok := fm[id]; ok {
			if f.BGPNextHop, ok = netip.AddrFromSlice(b); !ok {
				return f, fmt.Errorf("next hop of %d bytes", len(b))
			}
		}
	}
	f.SrcPrefixLen = uint8(beUint(fm[9]) | beUint(fm[29]))
	f.DstPrefixLen = uint8(beUint(fm[13]) | beUint(fm[30]))
	f.NextAS = uint32(beUint(fm[128]))
	f.PrevAS = uint32(beUint(fm[129]))
	f.Communities, f.LargeCommunities = "-", "-"
	if b, ok := fm[485]; ok {
		if f.Communities, err = readBasicList(b, 483, 4); err != nil {
			return f, err
		}
	}
	if b, ok := fm[491]; ok {
		if f.LargeCommunities, err = readBasicList(b, 489, 12); err != nil {
			return f, err
		}
	}
	return f, nil
}

// readBasicList reads an RFC 6313 basicList value (the variable-length
// prefix already removed) of elements of id, each elemLen bytes, and
// renders them as BGP communities are written.
func readBasicList(b []byte, id uint16, elemLen int) (string, error) {
	if len(b) < 5 {
		return "", fmt.Errorf("basicList of %d bytes", len(b))
	}
	if got := binary.BigEndian.Uint16(b[1:]); got != id || int(binary.BigEndian.Uint16(b[3:])) != elemLen || (len(b)-5)%elemLen != 0 {
		return "", fmt.Errorf("basicList of element %d, length %d, %d bytes", got, binary.BigEndian.Uint16(b[3:]), len(b)-5)
	}
	var parts []string
	for v := b[5:]; len(v) > 0; v = v[elemLen:] {
		if elemLen == 4 {
			parts = append(parts, fmt.Sprintf("%d:%d", binary.BigEndian.Uint16(v), binary.BigEndian.Uint16(v[2:])))
		} else {
			parts = append(parts, fmt.Sprintf("%d:%d:%d", binary.BigEndian.Uint32(v), binary.BigEndian.Uint32(v[4:]), binary.BigEndian.Uint32(v[8:])))
		}
	}
	return strings.Join(parts, " "), nil
}

// wantFlow is what a collector should read for r, computed from the record
// independently of the encoder.
func wantFlow(r *flow.Record) decodedFlow {
	src, dst := netip.AddrFrom16(r.Src), netip.AddrFrom16(r.Dst)
	if src.Is4In6() && dst.Is4In6() {
		src, dst = src.Unmap(), dst.Unmap()
	}
	w := decodedFlow{
		Src:     src,
		Dst:     dst,
		SrcPort: r.SrcPort,
		DstPort: r.DstPort,
		Proto:   r.Proto,
		StartMs: uint64(max(r.Start.UnixMilli(), 0)),
		EndMs:   uint64(max(r.End.UnixMilli(), 0)),
		Packets: r.Packets,
		Octets:  r.Bytes,
		Reason:  uint8(r.Reason),
		SrcASN:  r.SrcASN,
		DstASN:  r.DstASN,

		Communities: "-", LargeCommunities: "-",
	}
	if r.Dir == datapath.Egress {
		// A forwarded packet's egress flow also names where it came in.
		w.Egress, w.Ingress, w.Direction = r.Ifindex, r.InIfindex, 1
		w.Forwarding = 64 // RFC 7270: status 01 forwarded, reason 0 unknown
	} else {
		w.Ingress = r.Ifindex
	}
	if r.Dropped {
		w.Forwarding = 128 // RFC 7270: status 10 dropped, reason 0 unknown
	}
	return w
}

// testRecord makes a distinct record for index i: IPv4 for even i, IPv6
// for odd, alternating direction, documentation addresses only.
func testRecord(i int) flow.Record {
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	r := flow.Record{
		Start:   base.Add(time.Duration(i) * time.Millisecond),
		End:     base.Add(time.Duration(i)*time.Millisecond + 1500*time.Millisecond),
		Packets: uint64(i) + 1,
		Bytes:   uint64(i)*100 + 60,
		Labels:  flow.Labels{SrcASN: 64496 + uint32(i%7), DstASN: 4200000000 + uint32(i)},
		Reason:  []flow.EndReason{flow.EndIdleTimeout, flow.EndForced, flow.EndLackOfResources}[i%3],
	}
	r.Ifindex = uint32(2 + i%5)
	r.SrcPort = uint16(40000 + i)
	r.DstPort = uint16(443 + i%3)
	r.Proto = []uint8{6, 17, 1, 58}[i%4]
	if i%2 == 0 {
		// v4-mapped, as the datapath stores IPv4
		r.Src = v4mapped(198, 18, byte(i>>8), byte(i))
		r.Dst = v4mapped(198, 19, 0, byte(i))
	} else {
		src := netip.MustParseAddr("2001:db8::1").As16()
		dst := netip.MustParseAddr("2001:db8:ffff::2").As16()
		binary.BigEndian.PutUint16(src[14:], uint16(i))
		binary.BigEndian.PutUint16(dst[12:], uint16(i))
		r.Src, r.Dst = src, dst
	}
	// BGP context for two records in three (the others are MMDB-only):
	// standard communities for some, large ones for others, and an IPv6
	// next hop of an IPv4 route (RFC 8950) now and then.
	if i%3 != 0 {
		b := &r.BGP
		b.NextAS, b.PrevAS = 65000+uint32(i%5), 4200000000+uint32(i%4)
		if i%2 == 0 {
			b.NextHop = v4mapped(192, 0, 2, byte(i))
			b.SrcPrefixLen, b.DstPrefixLen = uint8(16+i%9), 24
			if i%7 == 2 {
				b.NextHop = netip.MustParseAddr("2001:db8::fe").As16()
			}
		} else {
			b.NextHop = netip.MustParseAddr("2001:db8::fe").As16()
			b.SrcPrefixLen, b.DstPrefixLen = uint8(32+i%17), 48
		}
		if i%3 == 1 {
			b.Communities = string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 65001<<16|uint32(i)), 0xffff0001))
		}
		if i%5 == 1 {
			b.LargeCommunities = string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 4200000001), 7), uint32(i)))
		}
	}
	if i%4 >= 2 {
		r.Dir = datapath.Egress
		if i%8 >= 6 { // forwarded: came in on another interface
			r.InIfindex = uint32(20 + i%3)
		}
	} else if i%8 == 1 {
		r.Dropped = true // by the XDP fast path, on arrival
	}
	return r
}

func v4mapped(a, b, c, d byte) [16]byte {
	return netip.AddrFrom4([4]byte{a, b, c, d}).As16()
}

func testRecords(n int) []flow.Record {
	recs := make([]flow.Record, n)
	for i := range recs {
		recs[i] = testRecord(i)
	}
	return recs
}

func TestTestRecordFamilies(t *testing.T) {
	r0, r1 := testRecord(0), testRecord(1)
	if !r0.IsIPv4() || r1.IsIPv4() {
		t.Fatalf("testRecord(0) IPv4=%v, testRecord(1) IPv4=%v; want true, false", r0.IsIPv4(), r1.IsIPv4())
	}
}
