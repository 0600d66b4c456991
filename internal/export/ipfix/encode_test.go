// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/netsampler/goflow2/v2/decoders/netflow"

	"github.com/stepbrobd/rfm/internal/flow"
)

func sumLengths(fields []fieldSpec) int {
	n := 0
	for _, f := range fields {
		n += int(f.length)
	}
	return n
}

func TestRecordLengthsMatchTemplates(t *testing.T) {
	tests := []struct {
		name   string
		fields [][]fieldSpec
		want   int
	}{
		{"flow tail", [][]fieldSpec{flowTail}, flowTailLen},
		{"IPv4 flow", [][]fieldSpec{fieldsV4}, flowRecordLenV4},
		{"IPv6 flow", [][]fieldSpec{fieldsV6}, flowRecordLenV6},
		{"sampling options", [][]fieldSpec{samplingScope, samplingOptions}, samplingRecordLen},
		{"interface options", [][]fieldSpec{interfaceScope, interfaceOptions}, interfaceRecordLen},
	}
	for _, tt := range tests {
		got := 0
		for _, f := range tt.fields {
			got += sumLengths(f)
			for _, spec := range f {
				if spec.id&0x8000 != 0 {
					t.Errorf("%s: IE %d has the enterprise bit set", tt.name, spec.id)
				}
			}
		}
		if got != tt.want {
			t.Errorf("%s: template fields add up to %d bytes, encoder writes %d", tt.name, got, tt.want)
		}
	}
	m := newMessage(DefaultMaxMessageSize)
	if !m.addTemplates() {
		t.Fatal("templates do not fit in an empty message")
	}
	if got := len(m.buf) - headerLen; got != templatesLen {
		t.Errorf("templates take %d bytes, templatesLen says %d", got, templatesLen)
	}
	// Templates, options and one record of the larger family must fit in
	// the smallest allowed message.
	if headerLen+templatesLen+setHeaderLen+samplingRecordLen+setHeaderLen+interfaceRecordLen > MinMessageSize ||
		headerLen+setHeaderLen+flowRecordLenV6 > MinMessageSize {
		t.Errorf("MinMessageSize %d too small", MinMessageSize)
	}
}

// encodeStream encodes the templates message, an options message and the
// records into messages of at most maxSize bytes, numbering them as the
// exporter does.
func encodeStream(t testing.TB, maxSize int, domainID, rate uint32, ifaces []Interface, recs []flow.Record) [][]byte {
	t.Helper()
	var out [][]byte
	var seq uint32
	m := newMessage(maxSize)
	emit := func() {
		if m.empty() {
			return
		}
		b := m.finish(1740830400+uint32(len(out)), seq, domainID)
		seq += m.dataRecords
		out = append(out, append([]byte(nil), b...))
		m.reset()
	}
	if !m.addTemplates() || !m.addSampling(domainID, rate) {
		t.Fatal("templates and sampling options do not fit")
	}
	for i := range ifaces {
		if !m.addInterface(&ifaces[i]) {
			emit()
			m.addInterface(&ifaces[i])
		}
	}
	emit()
	for i := range recs {
		e := (&Exporter{defaultRate: 1}).entryFromRecord(&recs[i])
		if !m.addFlow(&e) {
			emit()
			if !m.addFlow(&e) {
				t.Fatal("record does not fit in an empty message")
			}
		}
	}
	emit()
	return out
}

func TestRoundTripGoflow2(t *testing.T) {
	ifaces := []Interface{
		{Index: 2, Name: "eth0", Description: "uplink to transit"},
		{Index: 3, Name: "tailscale0"}, // empty description: the name is sent
		{Index: 4, Name: "very-long-name-x-y-z", Description: "über"},
	}
	wantIfaces := []Interface{
		{Index: 2, Name: "eth0", Description: "uplink to transit"},
		{Index: 3, Name: "tailscale0", Description: "tailscale0"},
		{Index: 4, Name: "very-long-name-x", Description: "über"},
	}
	recs := testRecords(200)
	msgs := encodeStream(t, DefaultMaxMessageSize, 7, 50, ifaces, recs)

	c := newGoflowCollector()
	var flows []decodedFlow
	var sampling []decodedSampling
	var gotIfaces []Interface
	var seq uint32
	for i, b := range msgs {
		m, err := c.decode(b)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if m.DomainID != 7 || m.Sequence != seq || m.ExportTime != 1740830400+uint32(i) {
			t.Errorf("message %d: domain %d sequence %d export time %d; want 7, %d, %d",
				i, m.DomainID, m.Sequence, m.ExportTime, seq, 1740830400+uint32(i))
		}
		if len(b) > DefaultMaxMessageSize {
			t.Errorf("message %d is %d bytes, limit %d", i, len(b), DefaultMaxMessageSize)
		}
		if m.Undecodable != 0 {
			t.Errorf("message %d: %d data sets without a known template", i, m.Undecodable)
		}
		if i == 0 {
			checkTemplates(t, m)
		}
		seq += uint32(m.DataRecords)
		flows = append(flows, m.Flows...)
		sampling = append(sampling, m.Sampling...)
		gotIfaces = append(gotIfaces, m.Interfaces...)
	}
	if want := []decodedSampling{{DomainID: 7, Interval: 50, Algorithm: 2, RandomInterval: 50}}; !reflect.DeepEqual(sampling, want) {
		t.Errorf("sampling options %+v, want %+v", sampling, want)
	}
	if !reflect.DeepEqual(gotIfaces, wantIfaces) {
		t.Errorf("interface options %+v, want %+v", gotIfaces, wantIfaces)
	}
	if len(flows) != len(recs) {
		t.Fatalf("decoded %d flows, want %d", len(flows), len(recs))
	}
	for i := range recs {
		if want := wantFlow(&recs[i]); flows[i] != want {
			t.Errorf("flow %d:\n got %+v\nwant %+v", i, flows[i], want)
		}
	}
}

// checkTemplates compares the decoded templates with the IEs docs/ipfix.md
// documents, independently of the encoder's tables.
func checkTemplates(t *testing.T, m decodedMessage) {
	t.Helper()
	tail := []netflow.Field{
		{Type: 7, Length: 2}, {Type: 11, Length: 2}, {Type: 4, Length: 1},
		{Type: 10, Length: 4}, {Type: 14, Length: 4}, {Type: 61, Length: 1},
		{Type: 152, Length: 8}, {Type: 153, Length: 8}, {Type: 2, Length: 8},
		{Type: 1, Length: 8}, {Type: 136, Length: 1}, {Type: 16, Length: 4},
		{Type: 17, Length: 4}, {Type: 89, Length: 1},
	}
	want := map[uint16][]netflow.Field{
		256: append([]netflow.Field{{Type: 8, Length: 4}, {Type: 12, Length: 4}}, tail...),
		257: append([]netflow.Field{{Type: 27, Length: 16}, {Type: 28, Length: 16}}, tail...),
	}
	if !reflect.DeepEqual(m.Templates, want) {
		t.Errorf("templates\n got %+v\nwant %+v", m.Templates, want)
	}
	wantOpts := map[uint16]netflow.IPFIXOptionsTemplateRecord{
		258: {TemplateId: 258, FieldCount: 4, ScopeFieldCount: 1,
			Scopes:  []netflow.Field{{Type: 149, Length: 4}},
			Options: []netflow.Field{{Type: 34, Length: 4}, {Type: 35, Length: 1}, {Type: 50, Length: 4}}},
		259: {TemplateId: 259, FieldCount: 3, ScopeFieldCount: 1,
			Scopes:  []netflow.Field{{Type: 10, Length: 4}},
			Options: []netflow.Field{{Type: 82, Length: 16}, {Type: 83, Length: 64}}},
	}
	if !reflect.DeepEqual(m.OptionsTemplates, wantOpts) {
		t.Errorf("options templates\n got %+v\nwant %+v", m.OptionsTemplates, wantOpts)
	}
}

func TestRecordsPerMessage(t *testing.T) {
	v4 := testRecord(0)
	v6 := testRecord(1)
	tests := []struct {
		name    string
		maxSize int
		rec     *flow.Record
		want    int
	}{
		{"IPv4 at 1400", 1400, &v4, 21},
		{"IPv6 at 1400", 1400, &v6, 15},
		{"IPv4 at 512", 512, &v4, 7},
		{"IPv6 at 512", 512, &v6, 5},
		{"IPv4 at 9000", 9000, &v4, 140},
		{"IPv6 at 65507", 65507, &v6, 744},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMessage(tt.maxSize)
			e := (&Exporter{defaultRate: 1}).entryFromRecord(tt.rec)
			n := 0
			for m.addFlow(&e) {
				n++
			}
			if n != tt.want {
				t.Errorf("%d records per message, want %d", n, tt.want)
			}
			if b := m.finish(0, 0, 1); len(b) > tt.maxSize {
				t.Errorf("message is %d bytes, limit %d", len(b), tt.maxSize)
			}
		})
	}
}

func TestMixedFamiliesStayWithinLimit(t *testing.T) {
	for _, maxSize := range []int{512, 1000, 1400, 1500, 9000} {
		msgs := encodeStream(t, maxSize, 1, 1, nil, testRecords(500))
		c := newGoflowCollector()
		total := 0
		for i, b := range msgs {
			if len(b) > maxSize {
				t.Errorf("max %d: message %d is %d bytes", maxSize, i, len(b))
			}
			m, err := c.decode(b)
			if err != nil {
				t.Fatalf("max %d: message %d: %v", maxSize, i, err)
			}
			total += len(m.Flows)
		}
		if total != 500 {
			t.Errorf("max %d: decoded %d flows, want 500", maxSize, total)
		}
	}
}

func TestFlowEndReasonCodes(t *testing.T) {
	// IANA flowEndReason: idle timeout 1, forced end 4, lack of resources 5.
	tests := []struct {
		reason flow.EndReason
		want   uint8
	}{
		{flow.EndIdleTimeout, 1},
		{flow.EndForced, 4},
		{flow.EndLackOfResources, 5},
	}
	for _, tt := range tests {
		r := testRecord(0)
		r.Reason = tt.reason
		msgs := encodeStream(t, 1400, 1, 1, nil, []flow.Record{r})
		c := newGoflowCollector()
		var got []decodedFlow
		for _, b := range msgs {
			m, err := c.decode(b)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m.Flows...)
		}
		if len(got) != 1 || got[0].Reason != tt.want {
			t.Errorf("%v: decoded %+v, want flowEndReason %d", tt.reason, got, tt.want)
		}
	}
}

func TestDirectionSetsInterfaces(t *testing.T) {
	tests := []struct {
		name                       string
		rec                        flow.Record
		wantIn, wantOut, wantDirIE uint8
	}{
		{"ingress", testRecord(0), 2, 0, 0}, // testRecord(0): ifindex 2, ingress
		{"egress", testRecord(2), 0, 4, 1},  // testRecord(2): ifindex 4, egress
	}
	for _, tt := range tests {
		e := (&Exporter{defaultRate: 1}).entryFromRecord(&tt.rec)
		m := newMessage(1400)
		m.addFlow(&e)
		b := m.buf[headerLen+setHeaderLen+8:] // past set header and IPv4 addresses
		in := binary.BigEndian.Uint32(b[5:])
		out := binary.BigEndian.Uint32(b[9:])
		if in != uint32(tt.wantIn) || out != uint32(tt.wantOut) || b[13] != tt.wantDirIE {
			t.Errorf("%s: ingressInterface %d egressInterface %d flowDirection %d; want %d %d %d",
				tt.name, in, out, b[13], tt.wantIn, tt.wantOut, tt.wantDirIE)
		}
	}
}

func TestPutFixedString(t *testing.T) {
	tests := []struct {
		name string
		in   string
		size int
		want string
	}{
		{"short", "eth0", 8, "eth0\x00\x00\x00\x00"},
		{"exact", "eth0.100", 8, "eth0.100"},
		{"long ascii", "enp0s31f6.4000", 8, "enp0s31f"},
		{"cut inside a character", "abcdefgü", 8, "abcdefg\x00"}, // ü is 2 bytes
		{"empty", "", 4, "\x00\x00\x00\x00"},
	}
	for _, tt := range tests {
		b := []byte("\xff\xff\xff\xff\xff\xff\xff\xff")[:tt.size] // stale bytes must be overwritten
		putFixedString(b, tt.in)
		if string(b) != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, b, tt.want)
		}
	}
}

func TestZeroTimesEncodeAsZero(t *testing.T) {
	r := testRecord(0)
	r.Start, r.End = r.Start.AddDate(-3000, 0, 0), r.End.AddDate(-3000, 0, 0) // before 1970
	e := (&Exporter{defaultRate: 1}).entryFromRecord(&r)
	if e.startMs != 0 || e.endMs != 0 {
		t.Errorf("times before the epoch encode as %d, %d; want 0, 0", e.startMs, e.endMs)
	}
}
