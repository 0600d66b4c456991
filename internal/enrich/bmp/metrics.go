// SPDX-License-Identifier: AGPL-3.0-only

package bmp

import "github.com/prometheus/client_golang/prometheus"

var (
	sessionsDesc = prometheus.NewDesc("rfm_bmp_sessions", "Open BMP sessions.", nil, nil)
	messagesDesc = prometheus.NewDesc("rfm_bmp_messages_total", "BMP messages received, by type.", []string{"type"}, nil)
	skippedDesc  = prometheus.NewDesc("rfm_bmp_skipped_total", "BMP messages or parts of updates skipped, by reason.", []string{"reason"}, nil)
	errorsDesc   = prometheus.NewDesc("rfm_errors_total", "Errors by subsystem.", nil, prometheus.Labels{"subsystem": "bmp"})
	limitDesc    = prometheus.NewDesc("rfm_bmp_route_limit_drops_total",
		"Times a monitored peer went over agent.enrich.rib.bmp.max_routes_per_peer and its routes were dropped.", nil, nil)
)

// Describe implements prometheus.Collector.
func (s *Station) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsDesc
	ch <- messagesDesc
	ch <- skippedDesc
	ch <- errorsDesc
	ch <- limitDesc
}

// Collect implements prometheus.Collector.
func (s *Station) Collect(ch chan<- prometheus.Metric) {
	c := &s.c
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(c.sessions.Load()))
	for t, name := range typeNames {
		ch <- prometheus.MustNewConstMetric(messagesDesc, prometheus.CounterValue, float64(c.messages[t].Load()), name)
	}
	for r, name := range skipNames {
		ch <- prometheus.MustNewConstMetric(skippedDesc, prometheus.CounterValue, float64(c.skipped[r].Load()), name)
	}
	ch <- prometheus.MustNewConstMetric(errorsDesc, prometheus.CounterValue, float64(c.errors.Load()))
	ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.CounterValue, float64(c.routeLimit.Load()))
}
