// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"github.com/spf13/cobra"

	"github.com/stepbrobd/rfm/internal/control"
)

func reloadCommand() *cobra.Command {
	return controlCommand(&cobra.Command{
		Use:   "reload",
		Short: "Make the running agent re-read its config file",
		Long: `Make the running agent re-read and validate its config file, like SIGHUP,
and print what it applied. Changes apply without losing active flows:
interfaces, sample rate, eviction timeout, max_flows, IPFIX target, MMDB
files and the Prometheus listener. Keys that only take effect after a
restart are listed. An invalid file is refused with the reason, and the
running config stays in effect (exit status 1).`,
		Example: `  rfm reload
  reloaded: applied agent.collector.eviction_timeout, agent.interfaces`,
	}, control.ReloadCall(), renderReload)
}
