// SPDX-License-Identifier: AGPL-3.0-only

package prom

import (
	"io"
	"strconv"

	"github.com/stepbrobd/rfm/internal/datapath"
)

// The per-interface families are rendered in the text format directly,
// like the flow families: a node with 2,000 interfaces has 26,000 such
// series, and building, sorting and encoding a client_golang metric for
// each took about 100 ms of a scrape (BenchmarkScrapeInterfaces).

type ifaceFamily struct {
	name, help string
	dir        datapath.Direction
	bytes      bool
}

var ifaceFamilies = []ifaceFamily{
	{"rfm_interface_rx_bytes_total", "Bytes received (TC ingress), counted in the kernel for every packet.", datapath.Ingress, true},
	{"rfm_interface_tx_bytes_total", "Bytes sent (TC egress), counted in the kernel for every packet.", datapath.Egress, true},
	{"rfm_interface_rx_packets_total", "Packets received (TC ingress), counted in the kernel.", datapath.Ingress, false},
	{"rfm_interface_tx_packets_total", "Packets sent (TC egress), counted in the kernel.", datapath.Egress, false},
}

// writeInterfaces writes rfm_interface_attached and the four counter
// families of every attached interface. A failed counter read is
// counted in rfm_errors_total{subsystem="bpf_map"} (seen from the next
// scrape on) and leaves the counter families out.
func (c *Collector) writeInterfaces(w io.Writer) error {
	var line []byte
	line = append(line, "# HELP rfm_interface_attached 1 for every interface the datapath is attached to.\n# TYPE rfm_interface_attached gauge\n"...)
	for _, i := range c.dp.Interfaces() {
		line = appendLabel(append(line, "rfm_interface_attached"...), `{ifname="`, i.Name)
		line = append(line, "\"} 1\n"...)
	}
	if _, err := w.Write(line); err != nil {
		return err
	}
	counters, err := c.dp.Counters()
	if err != nil {
		c.mapErrors.Add(1)
		return nil
	}
	// The label part of each interface's series, rendered once.
	labels := make([][]byte, len(counters))
	for i, ct := range counters {
		labels[i] = appendLabel([]byte(`{ifname="`), "", ct.Name)
	}
	for _, f := range ifaceFamilies {
		line = append(line[:0], "# HELP "+f.name+" "+f.help+"\n# TYPE "+f.name+" counter\n"...)
		for i, ct := range counters {
			if ct.Dir != f.dir {
				continue
			}
			for fam := datapath.FamilyOther; fam <= datapath.FamilyIPv6; fam++ {
				v := ct.Packets[fam]
				if f.bytes {
					v = ct.Bytes[fam]
				}
				line = append(line, f.name...)
				line = append(line, labels[i]...)
				line = append(line, `",family="`...)
				line = append(line, fam.String()...)
				line = append(line, `"} `...)
				line = strconv.AppendUint(line, v, 10)
				line = append(line, '\n')
			}
			if len(line) > 32<<10 {
				if _, err := w.Write(line); err != nil {
					return err
				}
				line = line[:0]
			}
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
	}
	return nil
}
