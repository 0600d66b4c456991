// SPDX-License-Identifier: AGPL-3.0-only

package ipfix

import (
	"net"
	"testing"
	"time"
)

// TestReusePortReplacement: with a fixed bind port, an exporter for the
// same source port can be opened while the old one is still open (a
// reload), both deliver from that port, and the old one's close does not
// disturb the new one. Without ReusePort the second bind fails, which is
// why a reload with a fixed bind.port used to be rejected.
func TestReusePortReplacement(t *testing.T) {
	col := startCollector(t, "udp4", "127.0.0.1:0")
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	bind := addrPort(probe.LocalAddr())
	probe.Close()

	old := newTestExporter(t, Config{Collector: col.addr.String(), Bind: bind.String(), ReusePort: true})
	if _, err := New(Config{Collector: col.addr.String(), Bind: bind.String()}, nil); err == nil {
		t.Fatal("a second socket without SO_REUSEPORT bound the same port")
	}
	if err := CheckBindFree(bind.String(), col.addr.String()); err == nil {
		t.Fatal("CheckBindFree: the port is held, want an error")
	}
	repl, err := New(Config{Collector: col.addr.String(), Bind: bind.String(), ReusePort: true}, nil)
	if err != nil {
		t.Fatalf("replacement exporter on the same port: %v", err)
	}
	t.Cleanup(func() { repl.Close() })
	if repl.LocalAddr() != bind {
		t.Fatalf("replacement LocalAddr %v, want %v", repl.LocalAddr(), bind)
	}
	old.ExportFlows(testRecords(1))
	col.waitFor(t, 3*time.Second, "the old exporter's flow", func(m []decodedMessage) bool { return countFlows(m) == 1 })
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	repl.ExportFlows(testRecords(2))
	col.waitFor(t, 3*time.Second, "the replacement's flows", func(m []decodedMessage) bool { return countFlows(m) == 3 })
	_, from, _ := col.snapshot()
	for i, f := range from {
		if f != bind {
			t.Fatalf("message %d from %v, want %v", i, f, bind)
		}
	}
	if err := repl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := CheckBindFree(bind.String(), col.addr.String()); err != nil {
		t.Fatalf("CheckBindFree after both closed: %v", err)
	}
}
