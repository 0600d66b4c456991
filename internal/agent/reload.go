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
	var newExp *ipfix.Exporter
	ipfixChanged := !c.IPFIX.Equal(n.IPFIX)
	if ipfixChanged && n.IPFIX.Enabled() {
		// With the same fixed bind port the new socket shares the port
		// with the old one (SO_REUSEPORT) until the old exporter has
		// flushed; a new bind address must be free, as at start.
		exclusive := n.IPFIX.Bind != c.IPFIX.Bind
		if newExp, err = newExporter(n.IPFIX, a.sampleRate.Load(), exclusive, a.log); err != nil {
			return res, err
		}
		// The new exporter may send templates at once: exclude its
		// socket from sampling now, next to the running one's.
		both := a.datapathConfig(a.sampleRate.Load())
		both.ExcludeAlso = datapath.Tuple{Src: newExp.LocalAddr(), Dst: newExp.RemoteAddr()}
		if err := a.dp.SetConfig(both); err != nil {
			_ = newExp.Close()
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
				_ = newExp.Close()
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
		// While the old exporter flushes, exclude both sockets from
		// sampling, so neither exporter's packets become flows.
		old := a.ipfix.cur.Load()
		dpCfg := datapath.Config{SampleRate: a.sampleRate.Load()}
		if newExp != nil {
			dpCfg.Exclude = datapath.Tuple{Src: newExp.LocalAddr(), Dst: newExp.RemoteAddr()}
		}
		if old != nil {
			dpCfg.ExcludeAlso = datapath.Tuple{Src: old.LocalAddr(), Dst: old.RemoteAddr()}
		}
		if err := a.dp.SetConfig(dpCfg); err != nil {
			a.log.Warn("reload: updating the exporter exclusion", "err", err)
		}
		a.ipfix.cur.Store(newExp)
		if newExp != nil {
			a.ipfix.setInterfaces(a.dp.Interfaces())
		}
		if old != nil {
			_ = old.Close()
		}
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
