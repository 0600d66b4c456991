// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"github.com/spf13/cobra"

	"github.com/stepbrobd/rfm/internal/control"
)

func statusCommand() *cobra.Command {
	return controlCommand(&cobra.Command{
		Use:   "status",
		Short: "Show the running agent's state",
		Long: `Show the running agent's state, asked over its control socket: version,
uptime, config file, sample rate, the flow table (active flows, capacity,
idle timeout, evictions), ring buffer drops and malformed packets, IPFIX
export and the BMP station, then every attached interface with its
packet and byte counters per direction (every packet, not sampled).

The socket is mode 0600: run as the agent's user (usually root).`,
		Example: `  rfm status
  rfm status --json | jq .flows
  rfm status --socket /run/rfm-lab/rfm.sock`,
	}, control.StatusCall(), renderStatus)
}
