// SPDX-License-Identifier: AGPL-3.0-only

package datapath

import (
	"reflect"
	"testing"
	"unsafe"
)

// TestEventLayout checks the offsets the decoder reads against
// struct rfm_event_x as bpf2go generated it from the object's BTF, so a
// change to bpf/rfm.c that moves a field fails here instead of being
// misread. fieldsVersion must equal RFM_FIELDS_VERSION, which the
// datapath writes into every event with fields (checked by the
// datapath tests that decode them).
func TestEventLayout(t *testing.T) {
	var x rfmRfmEventX
	if got := unsafe.Sizeof(x); got != FieldsEventSize {
		t.Errorf("struct rfm_event_x is %d bytes, FieldsEventSize %d", got, FieldsEventSize)
	}
	if got := unsafe.Sizeof(x.Ev); got != EventSize {
		t.Errorf("struct rfm_event is %d bytes, EventSize %d", got, EventSize)
	}
	want := map[string]int{
		"Ev.BootNs": offBootNs, "Ev.Src": offSrc, "Ev.Dst": offDst, "Ev.Ifindex": offIfindex,
		"Ev.InIfindex": offInIfindex, "Ev.Len": offLen, "Ev.Rate": offRate, "Ev.Sport": offSport,
		"Ev.Dport": offDport, "Ev.Segs": offSegs, "Ev.Proto": offProto, "Ev.Flags": offFlags,
		"F.Version": offFVersion, "F.TcpFlags": offFTCPFlags, "F.Tos": offFTOS, "F.Ttl": offFTTL,
		"F.VlanOuter": offFVLANOuter, "F.VlanInner": offFVLANInner, "F.FibIfindex": offFFIBIndex,
		"F.FibFlags": offFFIBFlags, "F.FibNexthop": offFFIBNH,
	}
	seen := map[string]bool{}
	outer := reflect.TypeOf(x)
	for i := 0; i < outer.NumField(); i++ {
		of := outer.Field(i)
		if of.Name == "_" {
			continue
		}
		for j := 0; j < of.Type.NumField(); j++ {
			f := of.Type.Field(j)
			if f.Name == "_" || f.Name == "Pad" {
				continue
			}
			name := of.Name + "." + f.Name
			seen[name] = true
			off, ok := want[name]
			if !ok {
				t.Errorf("%s (offset %d) is not decoded: add it to event.go", name, of.Offset+f.Offset)
				continue
			}
			if got := int(of.Offset + f.Offset); got != off {
				t.Errorf("%s at offset %d, the decoder reads %d", name, got, off)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("the decoder reads %s, which struct rfm_event_x no longer has", name)
		}
	}
}
