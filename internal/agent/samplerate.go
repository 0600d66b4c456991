// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"errors"

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
