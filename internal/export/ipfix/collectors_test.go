// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
	"github.com/stepbrobd/rfm/test/lab"
)

// Real collectors reading what the flow table and the exporter produce
// together: active-timeout deltas and a sample rate change. They skip when
// the tools are missing (Debian packages nfdump and pmacct).

// rateChangeEvents feeds tab flows sampled at 1 and then at 1000: ports
// 1-50 get 3 packets at 1, ports 1-10 then 2 packets at 1000, ports
// 101-120 only 1 packet at 1000. It returns the estimated packets per
// source port, worked out here from those numbers.
func rateChangeEvents(tab *flow.Table) map[uint16]uint64 {
	want := map[uint16]uint64{}
	var evs []datapath.Event
	for p := uint16(1); p <= 50; p++ {
		for range 3 {
			evs = append(evs, rateEvent(p, 1, 1))
		}
		want[p] += 3
	}
	tab.UpdateBatch(evs)
	evs = evs[:0]
	for p := uint16(1); p <= 10; p++ {
		evs = append(evs, rateEvent(p, 1000, 2), rateEvent(p, 1000, 3))
		want[p] += 2000
	}
	for p := uint16(101); p <= 120; p++ {
		evs = append(evs, rateEvent(p, 1000, 2))
		want[p] += 1000
	}
	tab.UpdateBatch(evs)
	return want
}

// nfcapdRun starts nfcapd, lets fn export to it through e, waits for the
// records fn says it exported and returns what nfdump prints for them, as
// the fields "srcport packets bytes".
func nfcapdRun(t *testing.T, fn func(e *Exporter) (records int)) [][]string {
	t.Helper()
	nfcapd := lookTool(t, "nfcapd", "nfdump")
	nfdump := lookTool(t, "nfdump", "nfdump")
	dir := t.TempDir()
	proc, port := startNfcapd(t, nfcapd, dir)
	e, err := New(Config{Collector: fmt.Sprintf("127.0.0.1:%d", port), SampleRate: 1000, TemplateRefresh: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	records := fn(e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(proc.Output(), "src port ") < records {
		if time.Now().After(deadline) {
			t.Fatalf("nfcapd stored fewer than %d records; output:\n%s", records, proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := proc.Stop(10 * time.Second); err != nil {
		t.Fatalf("stopping nfcapd: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "nfcapd.2*"))
	if len(files) != 1 {
		t.Fatalf("nfcapd files %v, want one", files)
	}
	out, err := exec.Command(nfdump, "-r", files[0], "-q", "-N", "-o", "fmt:%sp %pkt %byt").CombinedOutput()
	if err != nil {
		t.Fatalf("nfdump: %v\n%s", err, out)
	}
	var lines [][]string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		lines = append(lines, strings.Fields(l))
	}
	if len(lines) != records {
		t.Fatalf("nfdump printed %d records, want %d:\n%s", len(lines), records, out)
	}
	return lines
}

func atoi(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("not a count: %q", s)
	}
	return n
}

// nfdump scales each record by the sampling options in force when nfcapd
// read it: after a rate change, flows sampled at 1 must not come out
// multiplied by 1000, nor the others by 1.
func TestNfdumpReadsRateChange(t *testing.T) {
	var want map[uint16]uint64
	lines := nfcapdRun(t, func(e *Exporter) int {
		tab := flow.NewTable(flow.Options{Sinks: []flow.Sink{e}})
		want = rateChangeEvents(tab)
		tab.Flush(flow.EndForced)
		return 50 + 10 + 20
	})
	got := map[uint16]uint64{}
	for _, l := range lines {
		got[uint16(atoi(t, l[0]))] += atoi(t, l[1])
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("port %d: nfdump reads %d packets, want %d", p, got[p], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("nfdump has %d ports, want %d", len(got), len(want))
	}
}

// Active-timeout deltas stored by nfcapd add up, in nfdump, to the
// packets sent, scaled by the rate.
func TestNfdumpSumsActiveTimeoutDeltas(t *testing.T) {
	const rate, seconds = 10, 40
	var sent uint64
	lines := nfcapdRun(t, func(e *Exporter) int {
		sink := &countingSink{Sink: e}
		tab := flow.NewTable(flow.Options{Sinks: []flow.Sink{sink}, ActiveTimeout: 5 * time.Second, IdleTimeout: time.Minute})
		const t0 = uint64(time.Hour)
		for s := uint64(0); s < seconds; s++ {
			now := t0 + s*uint64(time.Second)
			ev := rateEvent(9, rate, now+1)
			tab.Update(&ev)
			sent++
			tab.Sweep(int64(now))
		}
		ev := rateEvent(9, rate, t0+seconds*uint64(time.Second))
		tab.Update(&ev)
		sent++
		tab.Flush(flow.EndForced)
		if sink.n < seconds/6 {
			t.Fatalf("%d records over %d s at active timeout 5 s", sink.n, seconds)
		}
		return sink.n
	})
	var packets uint64
	for _, l := range lines {
		packets += atoi(t, l[1])
	}
	if packets != sent*rate {
		t.Fatalf("nfdump sums the deltas to %d packets, want %d sampled x %d", packets, sent, rate)
	}
}

type countingSink struct {
	flow.Sink
	n int
}

func (c *countingSink) ExportFlows(recs []flow.Record) { c.n += len(recs); c.Sink.ExportFlows(recs) }

// nfacctd (pmacct) with nfacctd_renormalize multiplies each record by the
// sampling interval it knows for the exporter; after a rate change each
// flow must be renormalised by its own rate. Its memory plugin keeps the
// totals by source port, read back with the pmacct client.
func TestNfacctdRenormalisesRateChange(t *testing.T) {
	client := lookTool(t, "pmacct", "pmacct")
	proc, port, pipe := startNfacctd(t, "nfacctd_renormalize: true\naggregate[m]: src_port\n", nil)
	e, err := New(Config{Collector: fmt.Sprintf("127.0.0.1:%d", port), SampleRate: 1000, TemplateRefresh: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tab := flow.NewTable(flow.Options{Sinks: []flow.Sink{e}})
	want := rateChangeEvents(tab)
	tab.Flush(flow.EndForced)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	var sumWant uint64
	for _, n := range want {
		sumWant += n
	}

	var got map[uint16]uint64
	var table []byte
	deadline := time.Now().Add(15 * time.Second)
	for {
		got = map[uint16]uint64{}
		var sumGot uint64
		table, _ = exec.Command(client, "-p", pipe, "-s").CombinedOutput()
		for _, l := range strings.Split(string(table), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			p, err1 := strconv.ParseUint(f[0], 10, 16)
			n, err2 := strconv.ParseUint(f[1], 10, 64)
			if err1 != nil || err2 != nil {
				continue // the header and the summary
			}
			got[uint16(p)] += n
			sumGot += n
		}
		if sumGot >= sumWant || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("port %d: nfacctd renormalised to %d packets, want %d", p, got[p], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("nfacctd has %d ports, want %d", len(got), len(want))
	}
	if t.Failed() {
		t.Logf("pmacct -s:\n%s\nnfacctd:\n%s", table, proc.Output())
	}
}

// startNfacctd runs nfacctd on a free loopback port with the memory
// plugin "m" at a pipe in a temporary directory; conf is the rest of the
// configuration (aggregate[m], nfacctd_* keys). It returns once both the
// collector core and the memory plugin are up: records that reach the
// core before the plugin listens are lost (seen on a loaded machine).
func startNfacctd(t *testing.T, conf string, files map[string]string) (proc *lab.Process, port int, pipe string) {
	t.Helper()
	nfacctd := lookTool(t, "nfacctd", "pmacct")
	dir := t.TempDir()
	pipe = filepath.Join(dir, "memory.pipe")
	port = freeUDPPort(t)
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		conf = strings.ReplaceAll(conf, "$"+name, filepath.Join(dir, name))
	}
	path := filepath.Join(dir, "nfacctd.conf")
	err := os.WriteFile(path, []byte(fmt.Sprintf("daemonize: false\nnfacctd_ip: 127.0.0.1\nnfacctd_port: %d\nplugins: memory[m]\nimt_path[m]: %s\n%s",
		port, pipe, conf)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	proc = lab.Start(t, "nfacctd", "", nfacctd, "-f", path)
	// nfacctd ignores SIGTERM for a while; nothing of it is needed after
	// the test, so it is killed rather than waited for.
	t.Cleanup(func() { _ = proc.Signal(os.Kill); _, _ = proc.Wait(5 * time.Second) })
	deadline := time.Now().Add(10 * time.Second)
	for out := proc.Output(); !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", port)) ||
		!strings.Contains(out, "waiting for data on"); out = proc.Output() {
		if proc.Exited() || time.Now().After(deadline) {
			t.Fatalf("nfacctd did not start listening on port %d:\n%s", port, proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return proc, port, pipe
}
