// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stepbrobd/rfm/internal/enrich/rib"
)

// Fixtures recorded by TestInteropGoBGPAndFRR (RFM_BMP_RECORD=1): the
// BMP byte streams of gobgpd B and FRR while gobgpd A announced four
// prefixes, withdrew 198.18.1.0/24, then went down.
var fixtures = []struct {
	file  string
	name  string
	views []rib.View
}{
	{"gobgp.bmp", nameB, []rib.View{rib.PrePolicy, rib.PostPolicy, rib.LocRIB}},
	{"frr.bmp", nameFRR, []rib.View{rib.PrePolicy, rib.PostPolicy}},
}

// What gobgpd A announced: probe address -> origin ASN.
var announced = map[string]uint32{
	"198.18.1.1":    64501,
	"198.18.2.1":    65001,
	"198.18.3.1":    0, // AS path ends in an AS_SET
	"2001:db8:1::1": 4200000011,
}

func splitMessages(t *testing.T, stream []byte) [][]byte {
	t.Helper()
	fr := newFramer(bytes.NewReader(stream), DefaultMaxMessageSize)
	var out [][]byte
	for {
		m, err := fr.next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("framing: %v", err)
		}
		out = append(out, m)
	}
}

// TestReplay feeds the recorded streams message by message and checks
// what the RIB held along the way and at the end.
func TestReplay(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			stream, err := os.ReadFile(filepath.Join("testdata", fx.file))
			if err != nil {
				t.Fatal(err)
			}
			h := newHarness(t)
			// seen[probe][view] is true once the view held the probe's
			// prefix with the announced origin.
			seen := map[string]map[rib.View]bool{}
			withdrawn := false // 198.18.1.0/24 gone while 198.18.2.0/24 stayed
			for i, m := range splitMessages(t, stream) {
				if err := h.feed(m); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				for probe, origin := range announced {
					for _, ri := range h.rib.LookupAll(netip.MustParseAddr(probe)) {
						if ri.Router.Name != fx.name {
							t.Fatalf("route from router %v", ri.Router)
						}
						if ri.Origin != origin {
							t.Fatalf("message %d: %s origin %d in %s, want %d", i, probe, ri.Origin, ri.View, origin)
						}
						if seen[probe] == nil {
							seen[probe] = map[rib.View]bool{}
						}
						seen[probe][ri.View] = true
					}
				}
				if len(seen["198.18.1.1"]) > 0 && h.origin("198.18.1.1") == 0 && h.origin("198.18.2.1") == 65001 {
					withdrawn = true
				}
			}
			for probe := range announced {
				for _, v := range fx.views {
					if !seen[probe][v] {
						t.Errorf("%s never seen in %s", probe, v)
					}
				}
			}
			if !withdrawn {
				t.Error("the withdraw of 198.18.1.0/24 was not seen")
			}
			// The stream ends after A went down: nothing is left.
			if c := h.rib.Counts(); c.Routes4 != 0 || c.Routes6 != 0 {
				t.Errorf("routes left at the end: %+v", c)
			}
			if n := h.st.c.errors.Load(); n != 0 {
				t.Errorf("%d decoding errors", n)
			}
			for r, name := range skipNames {
				if n := h.st.c.skipped[r].Load(); n != 0 {
					t.Errorf("%d messages skipped as %s", n, name)
				}
			}
			if testing.Verbose() {
				for i, name := range typeNames {
					if n := h.st.c.messages[i].Load(); n > 0 {
						t.Logf("%s: %d %s messages", fx.file, n, name)
					}
				}
			}
		})
	}
}

// TestReplayStation sends the recorded streams through a listening
// station, both at once, as two routers would.
func TestReplayStation(t *testing.T) {
	f := startStation(t, Config{})
	total := 0
	for _, fx := range fixtures {
		stream, err := os.ReadFile(filepath.Join("testdata", fx.file))
		if err != nil {
			t.Fatal(err)
		}
		total += len(splitMessages(t, stream))
		c := f.dial()
		f.send(c, stream)
		c.(*net.TCPConn).CloseWrite()
	}
	counted := func() int {
		n := 0
		for i := range typeNames {
			n += int(f.st.c.messages[i].Load())
		}
		return n
	}
	eventually(t, "all messages", func() bool { return counted() == total })
	eventually(t, "both sessions ended", func() bool { return f.st.c.sessions.Load() == 0 })
	for _, rs := range f.rib.Summary().Routers {
		if rs.Connected {
			t.Errorf("router %v still connected", rs.Router)
		}
	}
	if c := f.rib.Counts(); c.Routes4 != 0 || c.Routes6 != 0 {
		t.Errorf("routes left: %+v", c)
	}
	if got := metric(f, "rfm_errors_total", `subsystem="bmp"`); got != "0" {
		t.Errorf("errors = %s", got)
	}
}
