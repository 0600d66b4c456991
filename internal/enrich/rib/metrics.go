// SPDX-License-Identifier: AGPL-3.0-only

package rib

import "github.com/prometheus/client_golang/prometheus"

var (
	routesDesc = prometheus.NewDesc("rfm_rib_routes", "Routes in the RIB (one per peer, view and path id), by address family.", []string{"family"}, nil)
	peersDesc  = prometheus.NewDesc("rfm_rib_peers", "BGP peer sessions in the RIB, including stale ones kept after their router disconnected.", nil, nil)
)

// Describe implements prometheus.Collector.
func (r *RIB) Describe(ch chan<- *prometheus.Desc) {
	ch <- routesDesc
	ch <- peersDesc
}

// Collect implements prometheus.Collector. It never waits for writers.
func (r *RIB) Collect(ch chan<- prometheus.Metric) {
	c := r.Counts()
	ch <- prometheus.MustNewConstMetric(routesDesc, prometheus.GaugeValue, float64(c.Routes4), "ipv4")
	ch <- prometheus.MustNewConstMetric(routesDesc, prometheus.GaugeValue, float64(c.Routes6), "ipv6")
	ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(c.Peers))
}
