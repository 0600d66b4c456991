// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
	"github.com/stepbrobd/rfm/test/lab"
)

// These tests run real collectors from Debian's packages against the
// exporter: nfcapd/nfdump (package nfdump) and tshark (package tshark).
// They skip when the tools are missing.

func lookTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found (Debian package %s); skipping the check against a real collector", name, pkg)
	}
	return p
}

// startNfcapd starts nfcapd on a free loopback UDP port, storing into
// dir, and returns it once the port is bound. A port found free can be
// taken before nfcapd binds it (any connected UDP socket on the machine
// may get it as its ephemeral port); nfcapd then exits with "Address
// already in use", and we try another port.
func startNfcapd(t *testing.T, nfcapd, dir string) (*lab.Process, int) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := freeUDPPort(t)
		// -E prints each record as nfcapd stores it, which tells us when
		// all have arrived; -t 3600 keeps everything in one file until we
		// stop it. stdbuf makes nfcapd's stdout line-buffered, so records
		// show up as they are stored rather than at exit.
		args := []string{nfcapd, "-E", "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-w", dir, "-t", "3600"}
		if stdbuf, err := exec.LookPath("stdbuf"); err == nil {
			args = append([]string{stdbuf, "-oL"}, args...)
		}
		p := lab.Start(t, "nfcapd", "", args...)
		if portBound(t, port, p) {
			return p, port
		}
		if attempt == 5 || !strings.Contains(p.Output(), "Address already in use") {
			t.Fatalf("nfcapd exited before binding udp port %d (attempt %d): %v\n%s", port, attempt, p.Err(), p.Output())
		}
		t.Logf("udp port %d was taken before nfcapd bound it; trying another", port)
	}
}

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// portBound waits until nfcapd reports its socket bound (true) or has
// exited (false). Its own report is the signal: probing the port from
// here cannot tell nfcapd's socket from one that took the port first.
func portBound(t *testing.T, port int, p *lab.Process) bool {
	t.Helper()
	bound := fmt.Sprintf("Port: %d\n", port)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), bound) {
		if p.Exited() {
			return false
		}
		if time.Now().After(deadline) {
			t.Fatalf("nfcapd did not report udp port %d bound after 10s; output:\n%s", port, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// nfdumpRecords are what the nfcapd test exports: TCP and UDP over both
// families, both directions, and a non-initial fragment (ports 0).
func nfdumpRecords() []flow.Record {
	start := time.Now().Add(-10 * time.Second).Truncate(time.Millisecond)
	mk := func(src, dst string, sport, dport uint16, proto uint8, dir datapath.Direction, ifindex, inIfindex uint32, pkts, bytes uint64) flow.Record {
		r := flow.Record{Start: start, End: start.Add(2 * time.Second), Packets: pkts, Bytes: bytes,
			Labels: flow.Labels{SrcASN: 64500, DstASN: 64501}, Reason: flow.EndIdleTimeout}
		r.Src = netip.MustParseAddr(src).As16()
		r.Dst = netip.MustParseAddr(dst).As16()
		r.SrcPort, r.DstPort, r.Proto, r.Dir, r.Ifindex, r.InIfindex = sport, dport, proto, dir, ifindex, inIfindex
		return r
	}
	return []flow.Record{
		mk("198.18.0.1", "198.19.0.2", 40001, 443, 6, datapath.Ingress, 2, 2, 3, 180),
		mk("198.18.0.3", "198.19.0.4", 40002, 53, 17, datapath.Egress, 3, 2, 5, 500), // forwarded from 2
		mk("198.18.0.5", "198.19.0.6", 0, 0, 17, datapath.Ingress, 2, 2, 1, 1480),    // fragment
		mk("2001:db8::1", "2001:db8:1::2", 40003, 443, 6, datapath.Ingress, 2, 2, 7, 1400),
		mk("2001:db8::3", "2001:db8:1::4", 40004, 4789, 17, datapath.Egress, 3, 0, 2, 300), // sent by this host
	}
}

func TestNfdumpDecodesExport(t *testing.T) {
	nfcapd := lookTool(t, "nfcapd", "nfdump")
	nfdump := lookTool(t, "nfdump", "nfdump")
	for _, rate := range []uint32{1, 10} {
		t.Run(fmt.Sprintf("sample rate %d", rate), func(t *testing.T) {
			testNfdump(t, nfcapd, nfdump, rate)
		})
	}
}

func testNfdump(t *testing.T, nfcapd, nfdump string, rate uint32) {
	dir := t.TempDir()
	nfcapdProc, port := startNfcapd(t, nfcapd, dir)

	e, err := New(Config{Collector: fmt.Sprintf("127.0.0.1:%d", port), ObservationDomainID: 5, SampleRate: rate}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.SetInterfaces([]Interface{{Index: 2, Name: "eth0", Description: "uplink"}, {Index: 3, Name: "eth1"}})
	recs := nfdumpRecords()
	e.ExportFlows(recs)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// nfcapd -E prints one block per stored flow; each names the
	// source port of the record.
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(nfcapdProc.Output(), "src port ") < len(recs) {
		if time.Now().After(deadline) {
			t.Fatalf("nfcapd stored fewer than %d records; output:\n%s", len(recs), nfcapdProc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := nfcapdProc.Stop(10 * time.Second); err != nil {
		t.Fatalf("stopping nfcapd: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "nfcapd.2*"))
	if len(files) != 1 {
		t.Fatalf("nfcapd files %v, want one; output:\n%s", files, nfcapdProc.Output())
	}

	dump := exec.Command(nfdump, "-r", files[0], "-q", "-N", "-o",
		"fmt:%sa %sp %da %dp %pr %in %out %pkt %byt %sas %das")
	got, err := dump.CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump: %v\n%s", err, got)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(got)), "\n") {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, r := range recs {
		in, out := r.Ifindex, uint32(0)
		if r.Dir == datapath.Egress {
			in, out = r.InIfindex, r.Ifindex
		}
		// nfdump scales sampled counts by the interval it read from the
		// sampling options record.
		want := fmt.Sprintf("%s %d %s %d %d %d %d %d %d %d %d",
			r.SrcAddr(), r.SrcPort, r.DstAddr(), r.DstPort, r.Proto, in, out,
			r.Packets*uint64(rate), r.Bytes*uint64(rate), r.SrcASN, r.DstASN)
		if !lines[want] {
			t.Errorf("nfdump lacks %q; it printed:\n%s", want, got)
		}
	}
	if len(lines) != len(recs) {
		t.Errorf("nfdump printed %d records, want %d:\n%s", len(lines), len(recs), got)
	}

	// The exporter list names our observation domain and the sampler
	// nfcapd built from the options record: 1 packet taken, rate-1 skipped.
	exporters, err := exec.Command(nfdump, "-E", files[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump -E: %v\n%s", err, exporters)
	}
	text := strings.Join(strings.Fields(string(exporters)), " ")
	for _, want := range []string{
		"version: 10, ID: 5,",
		fmt.Sprintf("algorithm: 2, packet interval: 1, packet space: %d", rate-1),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("nfdump -E lacks %q:\n%s", want, exporters)
		}
	}

	runDocNfdumpCommands(t, nfdump, dir, files[0])
}

// TestTsharkFindsNoMalformedPackets captures the exporter's datagrams to a
// pcap and has tshark decode them as IPFIX (cflow).
func TestTsharkFindsNoMalformedPackets(t *testing.T) {
	tshark := lookTool(t, "tshark", "tshark")
	col := startCollector(t, "udp4", "127.0.0.1:0")
	e := newTestExporter(t, Config{Collector: col.addr.String(), SampleRate: 10})
	e.SetInterfaces([]Interface{{Index: 2, Name: "eth0", Description: "uplink"}})
	recs := testRecords(100)
	e.ExportFlows(recs)
	e.Close()
	msgs := col.waitFor(t, 3*time.Second, "100 flows", func(m []decodedMessage) bool { return countFlows(m) == 100 })
	_, from, _ := col.snapshot()

	pcap := filepath.Join(t.TempDir(), "ipfix.pcap")
	// RFM_IPFIX_PCAP keeps the capture for a look in Wireshark.
	if p := os.Getenv("RFM_IPFIX_PCAP"); p != "" {
		pcap = p
	}
	f, err := os.Create(pcap)
	if err != nil {
		t.Fatal(err)
	}
	writePcap(t, f, from, col.addr, msgs)
	f.Close()

	cmd := exec.Command(tshark, "-n", "-r", pcap, "-d", fmt.Sprintf("udp.port==%d,cflow", col.addr.Port()),
		"-T", "fields", "-e", "frame.number", "-e", "_ws.malformed", "-e", "_ws.expert.message", "-e", "cflow.od_id",
		"-e", "cflow.sampling_interval", "-e", "cflow.srcport")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	frames, srcPorts := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 6 {
			continue // tshark's own notices
		}
		frames++
		// tshark marks UDP to ports 33434-33534 as a possible traceroute
		// whatever the payload; the ephemeral collector port may land there.
		if strings.HasPrefix(cols[2], "Possible traceroute") {
			cols[2] = ""
		}
		if cols[1] != "" || cols[2] != "" {
			t.Errorf("frame %s: malformed %q, expert %q", cols[0], cols[1], cols[2])
		}
		if cols[5] != "" {
			srcPorts += len(strings.Split(cols[5], ","))
		}
	}
	if frames != len(msgs) {
		t.Errorf("tshark read %d frames, want %d:\n%s", frames, len(msgs), out)
	}
	if srcPorts != len(recs) {
		t.Errorf("tshark decoded %d flow records, want %d", srcPorts, len(recs))
	}
}

// writePcap writes the datagrams as IPv4/UDP packets in a pcap file
// (LINKTYPE_RAW), so tshark sees exactly what the collector received.
func writePcap(t *testing.T, w io.Writer, from []netip.AddrPort, to netip.AddrPort, msgs []decodedMessage) {
	t.Helper()
	le := func(b []byte, v uint32) { b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24) }
	hdr := make([]byte, 24)
	le(hdr[0:], 0xa1b2c3d4)
	hdr[4], hdr[6] = 2, 4 // version 2.4
	le(hdr[16:], 65535)   // snaplen
	le(hdr[20:], 101)     // LINKTYPE_RAW
	w.Write(hdr)
	for i, m := range msgs {
		pkt := make([]byte, 28+len(m.Raw))
		pkt[0] = 0x45
		putBE16(pkt[2:], uint16(len(pkt)))
		pkt[8], pkt[9] = 64, 17
		src, dst := from[i].Addr().As4(), to.Addr().As4()
		copy(pkt[12:16], src[:])
		copy(pkt[16:20], dst[:])
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(pkt[j])<<8 | uint32(pkt[j+1])
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		putBE16(pkt[10:], ^uint16(sum))
		putBE16(pkt[20:], from[i].Port())
		putBE16(pkt[22:], to.Port())
		putBE16(pkt[24:], uint16(8+len(m.Raw)))
		copy(pkt[28:], m.Raw)
		rec := make([]byte, 16)
		le(rec[0:], uint32(1740830400+i))
		le(rec[8:], uint32(len(pkt)))
		le(rec[12:], uint32(len(pkt)))
		w.Write(rec)
		w.Write(pkt)
	}
}

func putBE16(b []byte, v uint16) { b[0], b[1] = byte(v>>8), byte(v) }

// docNfcapdFile is how docs/ipfix.md names one nfcapd file.
var docNfcapdFile = regexp.MustCompile(`^/var/cache/nfdump/nfcapd\.[0-9]{12}$`)

// runDocNfdumpCommands runs every nfdump command line in the code blocks
// of docs/ipfix.md
// on what this test's nfcapd stored, so the documented commands keep
// working with the nfdump Debian ships: the doc's directory becomes dir
// and its example file name the file nfcapd wrote.
func runDocNfdumpCommands(t *testing.T, nfdump, dir, file string) {
	t.Helper()
	doc, err := os.ReadFile("../../../docs/ipfix.md")
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	inCode := false
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
			continue
		}
		if !inCode || !strings.HasPrefix(line, "nfdump ") {
			continue
		}
		args := shellWords(t, line)[1:]
		for i, a := range args {
			switch {
			case docNfcapdFile.MatchString(a):
				args[i] = file
			case a == "/var/cache/nfdump":
				args[i] = dir
			}
		}
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(nfdump, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		// nfdump 1.7.1 answers a bad command line with its usage on
		// stdout, the reason on stderr and exit status 0.
		if err != nil || stderr.Len() > 0 || stdout.Len() == 0 || bytes.HasPrefix(stdout.Bytes(), []byte("usage")) {
			t.Errorf("docs/ipfix.md: %s: %v\n%s%.300s", line, err, stderr.Bytes(), stdout.Bytes())
		}
		ran++
	}
	if ran < 2 {
		t.Errorf("docs/ipfix.md: found %d nfdump command lines, want at least 2", ran)
	}
}

// shellWords splits a documented command line as sh would for the
// quoting the docs use: single quotes, and a # comment after a blank.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case quoted:
			if r == '\'' {
				quoted = false
			} else {
				cur.WriteRune(r)
			}
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '#' && !inWord:
			return words
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}
