// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"encoding/binary"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/flow"
)

// udpFrame builds an Ethernet/IPv4/UDP frame of flow number i.
func udpFrame(i int) []byte {
	f := make([]byte, 14+20+8+32)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[8], ip[9] = 64, 17
	copy(ip[12:], []byte{198, 18, byte(i >> 16), byte(i >> 8)})
	copy(ip[16:], []byte{198, 19, 0, 1})
	binary.BigEndian.PutUint16(ip[20:], uint16(i))
	binary.BigEndian.PutUint16(ip[22:], 443)
	return f
}

// processCPU is the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkConsumer measures read + decode + aggregate from a real ring
// buffer filled by the real program (BPF_PROG_TEST_RUN at sample rate 1):
// one op drains 1,048,576 events spread over the given number of flows,
// with the optional fields off and (64k flows) all on. events/s is per
// wall-clock second, events/cpu-s per second of CPU the process used
// while reading (the consumer runs on one goroutine: per core).
//
//	go test -run x -bench Consumer ./internal/agent
func BenchmarkConsumer(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to load BPF programs")
	}
	const events = 1 << 20
	allFields := datapath.FieldTCPFlags | datapath.FieldDSCP | datapath.FieldTTL | datapath.FieldVLAN | datapath.FieldFIB
	cases := []struct {
		name   string
		flows  int
		fields datapath.Fields
	}{
		{"flows=1024", 1 << 10, 0}, {"flows=65536", 1 << 16, 0}, {"flows=1048576", 1 << 20, 0},
		// Every optional field: 96-byte events, three more key fields.
		{"flows=65536/fields=all", 1 << 16, allFields},
	}
	for _, c := range cases {
		flows := c.flows
		b.Run(c.name, func(b *testing.B) {
			d, err := datapath.Load(datapath.Options{RingBufSize: 128 << 20, Fields: c.fields})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			if err := d.SetConfig(datapath.Config{SampleRate: 1}); err != nil {
				b.Fatal(err)
			}
			inj, err := d.NewInjector()
			if err != nil {
				b.Fatal(err)
			}
			defer inj.Close()
			frames := make([][]byte, flows)
			for i := range frames {
				frames[i] = udpFrame(i)
			}
			table := flow.NewTable(flow.Options{MaxFlows: 0})
			evs := make([]datapath.Event, flow.BatchSize)
			var cpu time.Duration
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				b.StopTimer()
				for sent := 0; sent < events; {
					for i := 0; i < flows && sent < events; i++ {
						// Interleave flows as a router would see them.
						if err := inj.Run(datapath.Ingress, frames[i], 1); err != nil {
							b.Fatal(err)
						}
						sent++
					}
				}
				if err := d.FlushBatches(); err != nil { // the last partial batch
					b.Fatal(err)
				}
				b.StartTimer()
				cpuBefore := processCPU(b)
				for got := 0; got < events; {
					k, err := d.ReadBatch(evs)
					if err != nil {
						b.Fatal(err)
					}
					table.UpdateBatch(evs[:k])
					got += k
				}
				cpu += processCPU(b) - cpuBefore
			}
			b.StopTimer()
			b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			// Per second of CPU the process used while reading: on a
			// shared machine the wall-clock rate also counts time spent
			// waiting for a CPU.
			b.ReportMetric(float64(events)*float64(b.N)/cpu.Seconds(), "events/cpu-s")
			if st, _ := d.Stats(); st.RingDrops != 0 {
				b.Fatalf("ring dropped %d events while filling", st.RingDrops)
			}
		})
	}
}
