// SPDX-License-Identifier: AGPL-3.0-only

package rd

import "testing"

func TestRoundTrip(t *testing.T) {
	// Encodings written out from RFC 4364 4.2: 2-byte type field, then
	// the administrator and assigned number fields.
	cases := []struct {
		text string
		val  uint64
	}{
		{"65000:1", 0x0000_fde8_0000_0001},
		{"0:0", 0},
		{"192.0.2.1:5", 0x0001_c000_0201_0005},
		{"4200000000:7", 0x0002_fa56_ea00_0007},
		{"65535:4294967295", 0x0000_ffff_ffff_ffff},
		{"64500:7", 64500<<32 | 7},
		{"198.18.0.1:100", 1<<48 | 198<<40 | 18<<32 | 0<<24 | 1<<16 | 100},
		{"4200000000:9", 2<<48 | 4200000000<<16 | 9},
	}
	for _, c := range cases {
		got, err := Parse(c.text)
		if err != nil || got != c.val {
			t.Errorf("Parse(%q) = %#x, %v; want %#x", c.text, got, err, c.val)
		}
		if s := Format(c.val); s != c.text {
			t.Errorf("Format(%#x) = %q, want %q", c.val, s, c.text)
		}
	}
	if got := Format(7 << 48); got != "0x0007000000000000" {
		t.Errorf("Format(7<<48) = %q", got)
	}
	if got, err := Parse("0x0003000000000001"); err != nil || got != 0x0003000000000001 || Format(got) != "0x0003000000000001" {
		t.Errorf("hex form: %#x, %v, %q", got, err, Format(got))
	}
	for _, bad := range []string{"", "65000", "x:1", "2001:db8::1:5", "192.0.2.1:65536", "4200000000:65536", "65000:4294967296", "0x12", "-1:1"} {
		if v, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %#x, want an error", bad, v)
		}
	}
}
