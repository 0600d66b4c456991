// SPDX-License-Identifier: AGPL-3.0-only

// Command memfloor is the memory floor that bench/memory-floor.sh holds
// the agent against: the smallest Go programs that serve a /metrics page
// the way the agent does, and nothing else. Set up like the agent (GOGC
// 50 unless GOGC is set, no heap profiling, start-up garbage returned to
// the OS), so what they cost after scrapes is what any Go exporter of
// this shape pays before it does any work of its own.
//
//	memfloor -mode http ADDR          net/http serving a fixed 14 KB page
//	memfloor -mode prom ADDR          client_golang: one counter family,
//	                                  promhttp's handler (gzip on request)
//	memfloor -mode prom-runtime ADDR  the same with the Go and process
//	                                  collectors the agent registers
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	mode := flag.String("mode", "http", "http, prom or prom-runtime")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: memfloor -mode MODE ADDR")
		os.Exit(2)
	}
	runtime.MemProfileRate = 0
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(50)
	}
	mux := http.NewServeMux()
	switch *mode {
	case "http":
		// About the size of an idle agent's page.
		page := []byte(strings.Repeat("rfm_interface_rx_packets_total{ifname=\"eth0\",family=\"ipv4\"} 1234567\n", 200))
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(page) })
	case "prom", "prom-runtime":
		reg := prometheus.NewRegistry()
		if *mode == "prom-runtime" {
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		}
		rx := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rfm_interface_rx_packets_total", Help: "Packets received.",
		}, []string{"ifname", "family"})
		reg.MustRegister(rx)
		for _, fam := range []string{"ipv4", "ipv6", "other"} {
			rx.WithLabelValues("eth0", fam).Add(1234567)
		}
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	default:
		fmt.Fprintf(os.Stderr, "memfloor: -mode %q: want http, prom or prom-runtime\n", *mode)
		os.Exit(2)
	}
	debug.FreeOSMemory()
	if err := http.ListenAndServe(flag.Arg(0), mux); err != nil {
		fmt.Fprintln(os.Stderr, "memfloor:", err)
		os.Exit(1)
	}
}
