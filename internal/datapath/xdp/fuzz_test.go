// SPDX-License-Identifier: AGPL-3.0-only

package xdp

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// fuzzRules exercise every field: prefixes of both families and sides,
// protocols, single ports and ranges, and a pass rule shadowing part of
// a drop rule.
var fuzzRules = []Rule{
	{Name: "pass-host", Action: ActionPass, Src: pfx("198.18.0.1/32", "2001:db8::1/128"), Proto: AnyProto},
	{Name: "ntp", Action: ActionDrop, Proto: 17, SrcPorts: []PortRange{{123, 123}}},
	{Name: "dst-range", Action: ActionDrop, Dst: pfx("198.18.0.0/16", "2001:db8::/32"), Proto: 6, DstPorts: []PortRange{{1000, 2000}, {22, 22}}},
	{Name: "icmp6", Action: ActionDrop, Src: pfx("2001:db8:1::/48"), Proto: 58},
	{Name: "net", Action: ActionDrop, Src: pfx("198.19.0.0/16"), Dst: pfx("198.18.0.0/15")},
}

// FuzzXDP runs arbitrary frames through the program under fuzzRules and
// checks its verdict against refParse and refMatch, an independent Go
// reading of the frame and walk of the rules: a frame refParse rejects
// (not IP, cut short, inconsistent lengths) must pass; an IP frame is
// dropped exactly when the first matching rule drops.
//
// Seeds: testdata/fuzz/FuzzXDP (regenerate with RFM_WRITE_FUZZ_SEEDS=1
// go test -run TestWriteXDPFuzzSeeds).
func FuzzXDP(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	p := loadProgram(f)
	if err := p.SetRules(fuzzRules); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 1600 {
			t.Skip("BPF_PROG_TEST_RUN takes an Ethernet header up to a page")
		}
		ref := refParse(frame)
		want := uint32(xdpPass)
		if ref.ok {
			if i := refMatch(fuzzRules, ref); i >= 0 && fuzzRules[i].Action == ActionDrop {
				want = xdpDrop
			}
		}
		if got := runFrame(t, p.Prog(), frame); got != want {
			t.Fatalf("frame %x: verdict %d, want %d (parsed %+v)", frame, got, want, ref)
		}
	})
}

func fuzzSeeds() [][]byte {
	long := make([]byte, 0, 80)
	for range 9 { // more extension headers than walked
		long = append(long, 60, 0, 0, 0, 0, 0, 0, 0)
	}
	long[len(long)-8] = 17
	chain := ipv6Frame("2001:db8::9", "2001:db8::2", 17, -1, l4(123, 1, 8))
	chain[14+6] = 60
	chain = append(chain[:14+40], append(long, chain[14+40:]...)...)
	chain[14+4], chain[14+5] = 0, byte(len(chain)-14-40)
	vlan := append(eth(0x0800, 0x88a8, 0x8100), ipv4Frame("198.19.0.1", "198.18.0.1", 1, 0, make([]byte, 8))[14:]...)
	short := ipv4Frame("198.18.9.9", "198.18.0.2", 17, 0, l4(123, 1, 0))
	return [][]byte{
		ipv4Frame("198.18.9.9", "198.18.0.2", 17, 0, l4(123, 1, 8)),
		ipv4Frame("198.18.0.1", "198.18.0.2", 17, 0, l4(123, 1, 8)),
		ipv4Frame("198.18.9.9", "198.18.0.2", 6, 0, l4(5, 1500, 16)),
		ipv4Frame("198.19.9.9", "198.18.0.2", 17, 7, make([]byte, 24)),
		ipv6Frame("2001:db8::9", "2001:db8::2", 6, -1, l4(5, 22, 16)),
		ipv6Frame("2001:db8:1::9", "2001:db8::2", 58, -1, make([]byte, 8)),
		ipv6Frame("2001:db8::9", "2001:db8::2", 17, 3, make([]byte, 16)),
		ipv6Frame("2001:db8::9", "2001:db8::2", 17, 0, l4(123, 1, 8)),
		chain, vlan,
		short[:len(short)-8], // ports cut off
		eth(0x0806),
	}
}

// TestWriteXDPFuzzSeeds writes fuzzSeeds as the committed corpus.
func TestWriteXDPFuzzSeeds(t *testing.T) {
	if os.Getenv("RFM_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set RFM_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzXDP")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzXDP")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
