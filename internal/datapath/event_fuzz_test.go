package datapath

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzEventDecode: any record of at least EventSize bytes decodes, and
// the fields put back at their offsets give the record's first
// EventSize bytes again (no field overlaps, none is skipped); shorter
// records are refused.
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
		binary.LittleEndian.PutUint32(out[44:], e.Len)
		binary.LittleEndian.PutUint16(out[48:], e.SrcPort)
		binary.LittleEndian.PutUint16(out[50:], e.DstPort)
		out[52] = e.Proto
		out[53] = byte(e.Dir)
		binary.LittleEndian.PutUint16(out[54:], e.Segs)
		if !bytes.Equal(out, b[:EventSize]) {
			t.Fatalf("round trip\n%x\nwant\n%x", out, b[:EventSize])
		}
	})
}
