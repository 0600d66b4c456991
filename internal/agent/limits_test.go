// SPDX-License-Identifier: AGPL-3.0-only

package agent

import (
	"testing"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/flow"
)

// The config check and the flow table must agree on the ceiling that
// max_flows = 0 stands for.
func TestMaxFlowsCeilingAgrees(t *testing.T) {
	if config.MaxFlowsCeiling != flow.MaxFlowsCeiling {
		t.Fatalf("config allows max_flows up to %d, the flow table holds %d", config.MaxFlowsCeiling, flow.MaxFlowsCeiling)
	}
}
