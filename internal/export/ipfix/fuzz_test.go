// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// wantFixedString is what a collector reads back from a fixed-size string
// field of n bytes: the longest prefix of whole characters (an invalid
// byte counts as one) that fits, trailing NULs dropped.
func wantFixedString(s string, n int) string {
	end := 0
	for i := range s {
		if i > n {
			break
		}
		end = i
	}
	if len(s) <= n {
		end = len(s)
	}
	return strings.TrimRight(s[:end], "\x00")
}

// FuzzRoundTrip encodes random records and interface names, decodes the
// messages with goflow2 and compares every field.
func FuzzRoundTrip(f *testing.F) {
	f.Add(true, []byte{198, 18, 0, 1}, []byte{198, 19, 0, 2}, uint32(2), uint16(40000), uint16(443), uint8(6), false,
		int64(1740830400000), int64(1740830401500), uint64(3), uint64(180), uint8(1), uint32(64496), uint32(64497),
		uint8(5), "eth0", "uplink", uint32(100), uint16(888))
	f.Add(false, []byte("\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"), []byte("\x20\x01\x0d\xb8\x00\x01"),
		uint32(7), uint16(0), uint16(0), uint8(17), true, int64(-5), int64(0), uint64(1<<63), uint64(1<<40), uint8(5),
		uint32(4200000000), uint32(0), uint8(200), "enp0s31f6.4000-long", "", uint32(1), uint16(0))
	f.Fuzz(func(t *testing.T, v4 bool, src, dst []byte, ifindex uint32, srcPort, dstPort uint16, proto uint8, egress bool,
		startMs, endMs int64, packets, octets uint64, reason uint8, srcASN, dstASN uint32,
		copies uint8, name, desc string, rate uint32, size uint16) {
		var r flow.Record
		copy(r.Src[:], src)
		copy(r.Dst[:], dst)
		if v4 {
			var a, b [4]byte
			copy(a[:], src)
			copy(b[:], dst)
			r.Src = v4mapped(a[0], a[1], a[2], a[3])
			r.Dst = v4mapped(b[0], b[1], b[2], b[3])
		}
		r.Ifindex, r.SrcPort, r.DstPort, r.Proto = ifindex, srcPort, dstPort, proto
		if egress {
			r.Dir = datapath.Egress
		}
		r.Start, r.End = time.UnixMilli(startMs), time.UnixMilli(endMs)
		r.Packets, r.Bytes, r.Reason = packets, octets, flow.EndReason(reason)
		r.SrcASN, r.DstASN = srcASN, dstASN

		// Several records with distinct packet counts, alternating family
		// when the first is IPv4, so messages fill and split.
		n := 1 + int(copies%64)
		recs := make([]flow.Record, n)
		for i := range recs {
			recs[i] = r
			recs[i].Packets = packets + uint64(i)
			if v4 && i%2 == 1 {
				recs[i].Src, recs[i].Dst = [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}, r.Src
			}
		}
		maxSize := MinMessageSize + int(size)%(MaxMessageSize-MinMessageSize+1)
		if rate == 0 {
			rate = 1
		}
		ifaces := []Interface{{Index: ifindex, Name: name, Description: desc}}

		msgs := encodeStream(t, maxSize, 1, rate, ifaces, recs)
		c := newGoflowCollector()
		var flows []decodedFlow
		var gotIfaces []Interface
		var sampling []decodedSampling
		for i, b := range msgs {
			if len(b) > maxSize {
				t.Fatalf("message %d: %d bytes, limit %d", i, len(b), maxSize)
			}
			m, err := c.decode(b)
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			flows = append(flows, m.Flows...)
			gotIfaces = append(gotIfaces, m.Interfaces...)
			sampling = append(sampling, m.Sampling...)
		}
		if len(flows) != n {
			t.Fatalf("decoded %d flows, want %d", len(flows), n)
		}
		for i := range recs {
			if want := wantFlow(&recs[i]); flows[i] != want {
				t.Errorf("flow %d:\n got %+v\nwant %+v", i, flows[i], want)
			}
		}
		if len(sampling) != 1 || sampling[0] != (decodedSampling{DomainID: 1, Interval: rate, Algorithm: 2, RandomInterval: rate}) {
			t.Errorf("sampling %+v, want interval %d", sampling, rate)
		}
		wantDesc := desc
		if wantDesc == "" {
			wantDesc = name
		}
		want := Interface{Index: ifindex, Name: wantFixedString(name, interfaceNameLen), Description: wantFixedString(wantDesc, interfaceDescriptionLen)}
		if len(gotIfaces) != 1 || gotIfaces[0] != want {
			t.Errorf("interfaces %+q, want %+q", gotIfaces, want)
		}
	})
}
