// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/stepbrobd/rfm/internal/control"
)

func flowsCommand() *cobra.Command {
	var f controlFlags
	var args control.FlowsArgs
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "Show the live flow table, like a small iftop",
		Long: `Show the running agent's active flows, largest first: interface,
direction, protocol, source and destination, estimated packets and bytes
(sampled counts times the sample rate), and ASNs and cities when
enrichment is configured.

With --watch the table is redrawn every --interval until Ctrl-C (in place
on a terminal; otherwise tables follow each other, separated by a blank
line, or one JSON object per line with --json).`,
		Example: `  rfm flows
  rfm flows --top 5 --sort packets --iface eth0
  rfm flows --watch --interval 1s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if args.Top < 0 {
				return fmt.Errorf("--top %d: must be 0 (all flows) or more", args.Top)
			}
			if args.Sort != "bytes" && args.Sort != "packets" {
				return fmt.Errorf("--sort %q: want bytes or packets", args.Sort)
			}
			if interval <= 0 {
				return fmt.Errorf("--interval %s: must be positive", interval)
			}
			if !watch {
				return query(cmd, &f, control.FlowsCall(args), func(w io.Writer, fl control.Flows) error {
					return renderFlows(w, fl, args)
				})
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return watchFlows(ctx, cmd.OutOrStdout(), f, args, interval)
		},
	}
	f.register(cmd)
	cmd.Flags().IntVar(&args.Top, "top", 20, "show the N largest flows (0: all)")
	cmd.Flags().StringVar(&args.Sort, "sort", "bytes", "order by estimated bytes or packets")
	cmd.Flags().StringVar(&args.Iface, "iface", "", "only flows of this interface")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw every --interval until Ctrl-C")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "refresh interval of --watch")
	return cmd
}

// Terminal control: cursor home, clear screen.
const clearScreen = "\x1b[H\x1b[2J"

// watchFlows redraws the flow table every interval until ctx ends,
// keeping one connection open between frames (the client dials again
// when the agent closed it: idle timeout, agent restart).
func watchFlows(ctx context.Context, w io.Writer, f controlFlags, args control.FlowsArgs, interval time.Duration) error {
	c := control.NewClient(f.socket)
	defer c.Close()
	tty := isTerminal(w) && !f.json
	render := func(w io.Writer, fl control.Flows) error { return renderFlows(w, fl, args) }
	call := control.FlowsCall(args)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for first := true; ; first = false {
		var frame bytes.Buffer
		err := queryOn(ctx, c, &frame, f.json, call, render)
		var answer *control.Error
		if err != nil && ctx.Err() == nil && !errors.As(err, &answer) {
			// One retry on a fresh connection when the call failed on
			// the way (an agent restarting); an error answer from the
			// agent (bad --iface) ends the watch.
			c.Close()
			frame.Reset()
			err = queryOn(ctx, c, &frame, f.json, call, render)
		}
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
		if err != nil {
			return err
		}
		// One write per frame, so a terminal never shows half a table.
		var out bytes.Buffer
		switch {
		case tty:
			fmt.Fprintf(&out, "%severy %s, Ctrl-C to stop, %s\n\n", clearScreen, interval, time.Now().Format("15:04:05"))
		case !f.json && !first:
			out.WriteByte('\n')
		}
		out.Write(frame.Bytes())
		if _, err := w.Write(out.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
