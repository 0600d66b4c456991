// SPDX-License-Identifier: AGPL-3.0-only

// Command rfm is the router flow monitor: `rfm agent` attaches eBPF
// programs to interfaces and serves flow metrics.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/stepbrobd/rfm/internal/agent"
	"github.com/stepbrobd/rfm/internal/config"
)

func main() {
	if err := rootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "rfm: "+firstLine(err.Error()))
		os.Exit(1)
	}
}

// firstLine keeps user-facing errors on one line.
func firstLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "rfm",
		Short: "Router flow monitor: eBPF packet counters, sampled flows, Prometheus and IPFIX export",
		Long: `rfm attaches eBPF TC programs to a Linux router's interfaces, counts every
packet per interface, direction and family, samples 1 in N packets into
flows, optionally labels them with ASNs and cities (MMDB files, BMP-fed
RIB), and exports Prometheus metrics and IPFIX.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Without arguments the root prints its help; a word that is no
		// command is an error (cobra's own says so over several lines).
		Args: rejectArgsAsCommands,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(flagError)
	root.SetHelpCommand(helpCommand())
	root.AddCommand(agentCommand(), configCommand(), versionCommand(),
		statusCommand(), flowsCommand(), ribCommand(), setCommand(), reloadCommand(), blockCommand())
	return root
}

func agentCommand() *cobra.Command {
	var path, level string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the flow monitoring agent",
		Long: `Run the agent in the foreground: load and validate the config, attach to the
configured interfaces, and serve metrics until SIGINT or SIGTERM. On exit
every active flow is exported and all programs are detached. SIGHUP
re-reads the config file and applies what changed (see rfm reload).

Needs root, or CAP_BPF + CAP_NET_ADMIN (+ CAP_PERFMON on some kernels).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lv slog.Level
			if err := lv.UnmarshalText([]byte(level)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return agent.Run(ctx, agent.Options{ConfigPath: path, Logger: log, Reload: reloadSignals(ctx)})
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", config.DefaultPath, "path of the TOML config file")
	cmd.Flags().StringVar(&level, "log-level", "warn", "log level: debug, info, warn or error")
	return cmd
}

// reloadSignals turns each SIGHUP into a reload request.
func reloadSignals(ctx context.Context) <-chan struct{} {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case out <- struct{}{}:
				default: // a reload is already pending
				}
			}
		}
	}()
	return out
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the rfm version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Printf("rfm %s (%s %s/%s)\n", agent.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}

func configCommand() *cobra.Command {
	cmd := commandGroup(&cobra.Command{
		Use:   "config",
		Short: "Work with the config file",
	})
	var path string
	var offline bool
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate a config file and print the effective config",
		Long: `Validate a config file exactly as the agent does at start (syntax, unknown
keys, values, interfaces present on this machine, MMDB files readable) and
print the effective config with every default filled in. Exits 1 with one
line naming the key and the bad value when the file is invalid.

With --offline only the file's content is checked (syntax, keys, values),
not this machine nor the file's owner and mode: for validating a config
built for another host, as the NixOS module does at build time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			load := func(p string) (*config.Config, error) { return config.LoadAndValidate(p, nil) }
			if offline {
				load = config.LoadOffline
			}
			cfg, err := load(path)
			if err != nil {
				return err
			}
			for _, w := range config.XDPWarnings(cfg) {
				fmt.Fprintf(cmd.ErrOrStderr(), "rfm: warning: %s\n", w)
			}
			return cfg.Encode(cmd.OutOrStdout())
		},
	}
	check.Flags().StringVarP(&path, "config", "c", config.DefaultPath, "path of the TOML config file")
	check.Flags().BoolVar(&offline, "offline", false, "check only the file, not this machine's interfaces and files")
	cmd.AddCommand(check)
	return cmd
}
