// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"errors"
	"slices"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/internal/datapath"
	"github.com/stepbrobd/rfm/internal/enrich/mmdb"
	"github.com/stepbrobd/rfm/internal/export/ipfix"
)

// reload re-reads the config file and applies what changed. Steps that
// can fail (opening MMDB files, resolving the collector, binding the
// metrics port) run first; if one fails nothing changes.
func (a *agent) reload() (control.ReloadResult, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var res control.ReloadResult
	next, err := config.Load(a.configPath)
	if err != nil {
		return res, err
	}
	if err := config.ValidateFiles(next); err != nil {
		var e *config.Error
		if errors.As(err, &e) {
			e.Source = a.configPath
		}
		return res, err
	}
	cur := a.cfg
	c, n := &cur.Agent, &next.Agent
	// Sample rate changes made over the control socket stay until the
	// file itself changes the rate.
	fileRate := a.fileSampleRate
	changed := func(key string, differs bool) bool {
		if differs {
			res.Applied = append(res.Applied, key)
		}
		return differs
	}

	// Fallible preparation.
	var newDB *mmdb.DB
	dbPathsChanged := c.Enrich.MMDB != n.Enrich.MMDB
	if dbPathsChanged {
		if newDB, err = openMMDB(n.Enrich.MMDB); err != nil {
			return res, err
		}
	} else if db := a.enricher.DB(); db != nil {
		// Same paths: pick up replaced files.
		if err := db.Reopen(); err != nil {
			return res, err
		}
	}
	var newExp *ipfix.Fanout
	ipfixChanged := !c.IPFIX.Equal(n.IPFIX)
	if ipfixChanged && n.IPFIX.Enabled() {
		// Collectors whose settings did not change keep their exporter
		// (socket, templates, sequence numbers); the others get new
		// ones. A fixed bind port a running exporter holds is shared
		// with it (SO_REUSEPORT) until it has flushed.
		running := map[config.IPFIXCollector]*ipfix.Exporter{}
		for i, e := range a.ipfix.exporters() {
			running[c.IPFIX.Targets()[i]] = e
		}
		sameShared := c.IPFIX.ObservationDomainID == n.IPFIX.ObservationDomainID &&
			c.IPFIX.TemplateRefresh == n.IPFIX.TemplateRefresh && c.IPFIX.MaxMessageSize == n.IPFIX.MaxMessageSize
		if newExp, err = newFanout(n.IPFIX, a.sampleRate.Load(), running, sameShared, a.log); err != nil {
			return res, err
		}
		// The new exporters may send templates at once: exclude their
		// sockets from sampling now, next to the running ones.
		both := a.datapathConfig(a.sampleRate.Load())
		both.Exclude = append(both.Exclude, excludeTuples(added(newExp, a.ipfix.exporters()))...)
		if err := a.dp.SetConfig(both); err != nil {
			closeExporters(added(newExp, a.ipfix.exporters()))
			return res, err
		}
		newExp.Start()
	}
	// The metrics server goes last among the fallible steps: once the
	// new one answers, nothing below can fail. A new address gets a new
	// socket (the old one answers until the new one does); a change of
	// web_config alone keeps the socket and hands it to a server with
	// the new settings, since binding the same address again would fail
	// while the old listener is open.
	var newMetrics *metricsServer
	cHost, cPort, cWeb := c.Prometheus.Listener()
	nHost, nPort, nWeb := n.Prometheus.Listener()
	if cHost != nHost || cPort != nPort || cWeb != nWeb {
		if cHost != nHost || cPort != nPort {
			newMetrics, err = listenMetrics(next, a.log)
		} else {
			newMetrics, err = a.metrics.withWebConfig(nWeb)
		}
		if err == nil {
			if err = newMetrics.serve(a.reg, a.core, a.healthy); err != nil && newMetrics.ln != a.metrics.ln {
				newMetrics.ln.Close()
			}
		}
		if err != nil {
			if newExp != nil {
				closeExporters(added(newExp, a.ipfix.exporters()))
				_ = a.dp.SetConfig(a.datapathConfig(a.sampleRate.Load()))
			}
			return res, err
		}
	}

	// Apply.
	if dbPathsChanged {
		a.enricher.SetDB(newDB)
		res.Applied = append(res.Applied, "agent.enrich.mmdb")
	}
	if ipfixChanged {
		// While the removed exporters flush, exclude their sockets and
		// the new ones from sampling, so no exporter's packets become
		// flows.
		old := a.ipfix.exporters()
		removed := added(a.ipfix.cur.Load(), newExp.Exporters())
		dpCfg := datapath.Config{SampleRate: a.sampleRate.Load(), Exclude: excludeTuples(newExp.Exporters(), removed)}
		if err := a.dp.SetConfig(dpCfg); err != nil {
			a.log.Warn("reload: updating the exporter exclusion", "err", err)
		}
		if newExp != nil {
			a.ipfix.cur.Store(newExp)
			// New collectors learn the interfaces; the others already know them.
			ifaces := exportInterfaces(a.dp.Interfaces())
			for _, e := range added(newExp, old) {
				e.SetInterfaces(ifaces)
			}
		} else {
			a.ipfix.cur.Store(nil)
		}
		closeExporters(removed)
		if err := a.dp.SetConfig(a.datapathConfig(a.sampleRate.Load())); err != nil {
			a.log.Warn("reload: updating the exporter exclusion", "err", err)
		}
		res.Applied = append(res.Applied, "agent.ipfix")
	}
	if newMetrics != nil {
		if newMetrics.ln == a.metrics.ln {
			a.metrics.retire()
		} else {
			a.metrics.close()
		}
		a.metrics = newMetrics
		res.Applied = append(res.Applied, "agent.prometheus")
	}
	maxSetsChanged := changed("agent.prometheus.max_label_sets", c.Prometheus.MaxLabelSets != n.Prometheus.MaxLabelSets)
	expiryChanged := changed("agent.prometheus.label_set_expiry", c.Prometheus.LabelSetExpiry != n.Prometheus.LabelSetExpiry)
	if maxSetsChanged || expiryChanged {
		a.table.SetLabelSetLimits(n.Prometheus.MaxLabelSets, n.Prometheus.LabelSetExpiry.Duration)
	}
	if n.BPF.SampleRate != fileRate {
		if _, err := a.setSampleRate(n.BPF.SampleRate); err != nil {
			a.log.Warn("reload: setting the sample rate", "err", err)
		} else {
			res.Applied = append(res.Applied, "agent.bpf.sample_rate")
		}
		a.fileSampleRate = n.BPF.SampleRate
	}
	n.BPF.SampleRate = a.sampleRate.Load()
	if changed("agent.collector.max_flows", c.Collector.MaxFlows != n.Collector.MaxFlows) {
		a.table.SetMaxFlows(n.Collector.MaxFlows)
	}
	if changed("agent.collector.eviction_timeout", c.Collector.EvictionTimeout != n.Collector.EvictionTimeout) {
		a.table.SetIdleTimeout(n.Collector.EvictionTimeout.Duration)
	}
	if changed("agent.collector.active_timeout", c.Collector.ActiveTimeout != n.Collector.ActiveTimeout) {
		a.table.SetActiveTimeout(n.Collector.ActiveTimeout.Duration)
	}
	if changed("agent.interfaces", !slices.Equal(c.Interfaces, n.Interfaces)) {
		a.links.ifMu.Lock()
		a.links.selector = config.NewInterfaceSelector(n.Interfaces)
		a.links.ifMu.Unlock()
		if a.watch != nil {
			sel := a.links.currentSelector()
			a.watch.SetSelect(sel.Match)
		}
	}

	// What only a restart changes keeps its running value, so the next
	// reload compares against what is really in effect.
	if c.BPF.RingBufSize != n.BPF.RingBufSize {
		res.NeedsRestart = append(res.NeedsRestart, "agent.bpf.ring_buf_size")
		n.BPF.RingBufSize = c.BPF.RingBufSize
	}
	if !bmpEqual(c.Enrich.RIB.BMP, n.Enrich.RIB.BMP) {
		res.NeedsRestart = append(res.NeedsRestart, "agent.enrich.rib.bmp")
		n.Enrich.RIB.BMP = c.Enrich.RIB.BMP
	}
	if c.Control != n.Control {
		res.NeedsRestart = append(res.NeedsRestart, "agent.control.socket")
		n.Control = c.Control
	}
	a.cfg = next
	return res, nil
}

// added returns the exporters of f that are not in running.
func added(f *ipfix.Fanout, running []*ipfix.Exporter) []*ipfix.Exporter {
	var out []*ipfix.Exporter
	for _, e := range f.Exporters() {
		if !slices.Contains(running, e) {
			out = append(out, e)
		}
	}
	return out
}

// closeExporters closes exps, which flush in parallel.
func closeExporters(exps []*ipfix.Exporter) {
	if len(exps) > 0 {
		_ = ipfix.NewFanout(exps...).Close()
	}
}

func bmpEqual(a, b config.BMP) bool {
	return a.Host == b.Host && a.Port == b.Port && a.Keep == b.Keep && slices.Equal(a.Allow, b.Allow) &&
		a.MaxSessions == b.MaxSessions && a.MaxMessageSize == b.MaxMessageSize &&
		slices.Equal(a.LabelVRFs, b.LabelVRFs) && a.MaxRoutesPerPeer == b.MaxRoutesPerPeer
}

func (a *agent) logReload(applied, restart []string) {
	if len(applied) == 0 && len(restart) == 0 {
		a.log.Info("reloaded: no changes", "config", a.configPath)
	} else {
		a.log.Info("reloaded", "config", a.configPath, "applied", applied)
	}
	if len(restart) > 0 {
		a.log.Warn("reload: these keys changed but take effect only after a restart", "keys", restart)
	}
}
