// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/stepbrobd/rfm/internal/control"
)

func setCommand() *cobra.Command {
	cmd, f := controlGroup("set", "Change a setting of the running agent")
	rate := queryOneValue(&cobra.Command{
		Use:   "sample-rate N",
		Short: "Sample 1 in N packets from now on",
		Long: `Set the running agent's sample rate to 1 in N packets (N >= 1). The BPF
programs sample at the new rate at once; flow estimates in the metrics
and the IPFIX sampling options follow. The change lasts until the agent
restarts or a reload finds a different agent.bpf.sample_rate in the
config file.`,
		Example: `  rfm set sample-rate 10
  sample rate 100 -> 10`,
	}, f, "one value, N", parseSampleRate, control.SetSampleRateCall, renderSampleRate)
	cmd.AddCommand(rate)
	return cmd
}

// parseSampleRate reads N of `set sample-rate N`: a whole number from 1
// to 4294967295.
func parseSampleRate(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("sample rate %q: want a whole number from 1 to 4294967295", s)
	}
	if n < 1 {
		return 0, fmt.Errorf("sample rate %d: must be at least 1", n)
	}
	return uint32(n), nil
}
