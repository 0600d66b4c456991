// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzEventDecode: any record of at least EventSize bytes decodes, and
// the fields put back at their offsets give the record's first
// EventSize bytes again (no field overlaps, none is skipped; of the flags
// byte, only the defined bits); shorter records are refused.
func FuzzEventDecode(f *testing.F) {
	f.Add(make([]byte, EventSize))
	f.Add(make([]byte, EventSize-1))
	f.Add(bytes.Repeat([]byte{0xff}, EventSize+8))
	seq := make([]byte, EventSize)
	for i := range seq {
		seq[i] = byte(i + 1)
	}
	f.Add(seq)
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		err := e.Decode(b)
		if len(b) < EventSize {
			if err == nil {
				t.Fatalf("%d-byte record decoded", len(b))
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, EventSize)
		binary.LittleEndian.PutUint64(out[0:], e.BootNs)
		copy(out[8:], e.Src[:])
		copy(out[24:], e.Dst[:])
		binary.LittleEndian.PutUint32(out[40:], e.Ifindex)
		binary.LittleEndian.PutUint32(out[44:], e.InIfindex)
		binary.LittleEndian.PutUint32(out[48:], e.Len)
		binary.LittleEndian.PutUint32(out[52:], e.SampleRate)
		binary.LittleEndian.PutUint16(out[56:], e.SrcPort)
		binary.LittleEndian.PutUint16(out[58:], e.DstPort)
		binary.LittleEndian.PutUint16(out[60:], e.Segs)
		out[62] = e.Proto
		out[63] = byte(e.Dir)
		if e.Truncated {
			out[63] |= evFlagTruncated
		}
		want := append([]byte{}, b[:EventSize]...)
		want[63] &= evFlagEgress | evFlagTruncated
		if !bytes.Equal(out, want) {
			t.Fatalf("round trip\n%x\nwant\n%x", out, want)
		}
	})
}

// FuzzRecordDecode: a ring record is a batch of whole events. The
// consumer hands them out across calls whatever its buffer size, each
// equal to decoding its own EventSize bytes, in order; a record whose length is
// not a multiple of EventSize (or is zero) yields no event and counts
// one decode error.
func FuzzRecordDecode(f *testing.F) {
	f.Add(make([]byte, EventSize), uint8(1))
	f.Add(make([]byte, 3*EventSize), uint8(2))
	f.Add(bytes.Repeat([]byte{0xab}, 64*EventSize), uint8(5))
	f.Add(make([]byte, EventSize+8), uint8(0))
	f.Add([]byte{}, uint8(3))
	f.Fuzz(func(t *testing.T, rec []byte, bufLen uint8) {
		var d Datapath
		d.rec, d.recNew = rec, true
		evs := make([]Event, int(bufLen)%9+1)
		var got []Event
		for calls := 0; ; calls++ {
			n := d.decodeRecord(evs)
			if n == 0 {
				break
			}
			if n > len(evs) || calls > len(rec) {
				t.Fatalf("decodeRecord returned %d into a buffer of %d (call %d)", n, len(evs), calls)
			}
			got = append(got, evs[:n]...)
		}
		if len(rec) == 0 || len(rec)%EventSize != 0 {
			if len(got) != 0 || d.DecodeErrors() != 1 {
				t.Fatalf("%d-byte record: %d events, %d decode errors; want 0, 1", len(rec), len(got), d.DecodeErrors())
			}
			return
		}
		if len(got) != len(rec)/EventSize || d.DecodeErrors() != 0 {
			t.Fatalf("%d-byte record: %d events, %d decode errors; want %d, 0", len(rec), len(got), d.DecodeErrors(), len(rec)/EventSize)
		}
		for i, e := range got {
			var want Event
			if err := want.Decode(rec[i*EventSize : (i+1)*EventSize]); err != nil {
				t.Fatal(err)
			}
			if e != want {
				t.Fatalf("event %d: %+v, want %+v", i, e, want)
			}
		}
	})
}

// FuzzEventFieldsDecode: a record of at least FieldsEventSize bytes with
// the known layout version decodes to what Decode reads from its first
// EventSize bytes plus the optional fields at their offsets; any other
// version, or a shorter record, is refused.
func FuzzEventFieldsDecode(f *testing.F) {
	ok := make([]byte, FieldsEventSize)
	ok[offFVersion] = fieldsVersion
	f.Add(ok)
	seq := make([]byte, FieldsEventSize)
	for i := range seq {
		seq[i] = byte(i + 1)
	}
	seq[offFVersion] = fieldsVersion
	f.Add(seq)
	f.Add(make([]byte, FieldsEventSize-1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		err := e.DecodeFields(b)
		if len(b) < FieldsEventSize || b[offFVersion] != fieldsVersion {
			if err == nil {
				t.Fatalf("%d-byte record of version %d decoded", len(b), b[min(len(b)-1, offFVersion)])
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var base Event
		if err := base.Decode(b[:EventSize]); err != nil {
			t.Fatal(err)
		}
		want := EventFields{
			TCPFlags: b[65], TOS: b[66], TTL: b[67],
			VLANOuter:  binary.LittleEndian.Uint16(b[68:]),
			VLANInner:  binary.LittleEndian.Uint16(b[70:]),
			FIBIfindex: binary.LittleEndian.Uint32(b[72:]),
		}
		if b[76]&1 != 0 {
			copy(want.FIBNextHop[:], b[80:96])
		}
		base.EventFields = want
		if e != base {
			t.Fatalf("decoded %+v, want %+v", e, base)
		}
	})
}
