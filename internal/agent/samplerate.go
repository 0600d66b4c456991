// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"errors"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/flow"
)

// setSampleRate rewrites the BPF config map at once, then ends the flows
// sampled at the old rate (forced end), so they are exported now rather
// than at their idle timeout. The exporter is not told anything: every
// event carries the rate that sampled it, a flow keeps one rate (its
// first event of another rate ends it), and each IPFIX record goes out
// under the sampling options of its own rate, so records of the old rate
// are scaled by it wherever they wait (the table, the exporter's queue, a
// message being filled). Caller holds a.mu.
func (a *agent) setSampleRate(rate uint32) (uint32, error) {
	if rate == 0 {
		return 0, errors.New("sample rate must be at least 1")
	}
	prev := a.sampleRate.Load()
	if err := a.dp.SetConfig(a.datapathConfig(rate)); err != nil {
		return prev, err
	}
	a.sampleRate.Store(rate)
	if prev != rate {
		a.table.Flush(flow.EndForced)
	}
	a.cfg.Agent.BPF.SampleRate = rate
	return prev, nil
}

// samplingStage applies agent.bpf.sample_rate at reload. The datapath
// stage sets the rate at start; it comes after the IPFIX stage so that
// the flows a rate change ends go to the exporter the same reload set.
type samplingStage struct {
	a *agent
	// fileRate is the rate the config file last asked for; a rate set
	// over the control socket stays until the file changes it.
	fileRate uint32
}

func (a *agent) newSampling() (component, error) {
	return &samplingStage{a: a, fileRate: a.cfg.Agent.BPF.SampleRate}, nil
}

func (s *samplingStage) name() string { return "sample rate" }
func (s *samplingStage) start() error { return nil }
func (s *samplingStage) stop() error  { return nil }

func (s *samplingStage) reconfigure(_, next *config.Config) (reconfig, error) {
	n := &next.Agent.BPF
	return reconfig{commit: func() []string {
		var applied []string
		if n.SampleRate != s.fileRate {
			if _, err := s.a.setSampleRate(n.SampleRate); err != nil {
				s.a.log.Warn("reload: setting the sample rate", "err", err)
			} else {
				applied = append(applied, "agent.bpf.sample_rate")
			}
			s.fileRate = n.SampleRate
		}
		n.SampleRate = s.a.sampleRate.Load()
		return applied
	}}, nil
}
