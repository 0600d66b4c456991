// SPDX-License-Identifier: AGPL-3.0-only

// Package scale runs the real `rfm` agent against many veth interfaces
// created and deleted while a few carry traffic, as on a Kubernetes node
// with pods coming and going, and checks that nothing leaks (BPF links,
// programs, maps, file descriptors, goroutines), that the counters of
// the interfaces that stay are exact and that deleted interfaces leave
// no series. Needs root; the size is set by RFM_SCALE_CHURN (interfaces
// created and deleted, default 500) and RFM_SCALE_BATCH (how many exist
// at once, default 100). bench/scale.sh runs it at 2,000.
package scale

import (
	"os"
	"testing"

	"github.com/stepbrobd/rfm/test/lab"
)

// rfmBin is the agent binary built once by TestMain.
var rfmBin string

func TestMain(m *testing.M) { os.Exit(lab.RunWithAgent(m, "scale", &rfmBin)) }
