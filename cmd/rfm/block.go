// SPDX-License-Identifier: AGPL-3.0-only

package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/stepbrobd/rfm/internal/control"
	"github.com/stepbrobd/rfm/internal/datapath/xdp"
)

func blockCommand() *cobra.Command {
	cmd := commandGroup(&cobra.Command{
		Use:   "block",
		Short: "Change the XDP fast path's live blocklist",
		Long: `The live blocklist drops packets in XDP whose source or destination lies
in a listed prefix (IPv4 or IPv6), on every interface of agent.xdp.interfaces.
Entries take effect at once, expire on their own when given --for, and
survive a restart (agent.xdp.state_file).`,
	})
	var f controlFlags
	f.registerPersistent(cmd)
	var forDur time.Duration
	var reason string
	add := &cobra.Command{
		Use:   "add PREFIX",
		Short: "Drop traffic from or to PREFIX",
		Example: `  rfm block add 198.18.7.0/24 --for 10m --reason "scanner"
  rfm block add 2001:db8:bad::/48`,
		Args: prefixArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, _ := xdp.ParsePrefix(args[0])
			if forDur < 0 {
				return fmt.Errorf("--for %s: must not be negative", forDur)
			}
			if len(reason) > xdp.MaxReasonLen {
				return fmt.Errorf("--reason of %d bytes: at most %d", len(reason), xdp.MaxReasonLen)
			}
			return query(cmd, &f, control.BlockAddCall(p, forDur, reason), renderBlockEntry)
		},
	}
	add.Flags().DurationVar(&forDur, "for", 0, "remove the entry after this long (10m, 1h); default: until removed")
	add.Flags().StringVar(&reason, "reason", "", "why, shown by rfm block list")
	del := &cobra.Command{
		Use:     "del PREFIX",
		Short:   "Stop dropping traffic of PREFIX",
		Example: `  rfm block del 198.18.7.0/24`,
		Args:    prefixArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, _ := xdp.ParsePrefix(args[0])
			return query(cmd, &f, control.BlockDelCall(p), renderBlockDel)
		},
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the live blocklist",
		Example: `  rfm block list --json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return query(cmd, &f, control.BlockListCall(), renderBlocklist)
		},
	}
	cmd.AddCommand(add, del, list)
	return cmd
}

func prefixArg(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%s takes one prefix; got %d arguments", cmd.CommandPath(), len(args))
	}
	_, err := xdp.ParsePrefix(args[0])
	if err != nil {
		return fmt.Errorf("prefix %w", err)
	}
	return nil
}

func renderBlockEntry(w io.Writer, e control.BlockEntry) error {
	until := "until removed"
	if e.Expires != nil {
		until = "until " + e.Expires.UTC().Format(time.RFC3339)
	}
	_, err := fmt.Fprintf(w, "blocking %s %s\n", e.Prefix, until)
	return err
}

func renderBlockDel(w io.Writer, r control.BlockDelResult) error {
	var err error
	if r.Removed {
		_, err = fmt.Fprintf(w, "removed %s\n", r.Prefix)
	} else {
		_, err = fmt.Fprintf(w, "%s was not on the blocklist\n", r.Prefix)
	}
	return err
}

func renderBlocklist(w io.Writer, l control.Blocklist) error {
	if len(l.Entries) == 0 {
		_, err := fmt.Fprintln(w, "the blocklist is empty")
		return err
	}
	t := newTable(w)
	row(t, "PREFIX", "ADDED", "EXPIRES", "REASON")
	for _, e := range l.Entries {
		exp := "-"
		if e.Expires != nil {
			exp = e.Expires.UTC().Format(time.RFC3339)
		}
		row(t, e.Prefix, e.Added.UTC().Format(time.RFC3339), exp, e.Reason)
	}
	return t.Flush()
}

// renderXDPStatus writes the XDP part of rfm status: each interface's
// mode and what each rule did there.
func renderXDPStatus(w io.Writer, x *control.XDPStatus) error {
	if x == nil {
		return nil
	}
	fmt.Fprintf(w, "\nxdp: %s, %s on the blocklist, %s\n", plural(x.Rules, "rule", "rules"),
		plural(x.Blocklist, "prefix", "prefixes"), plural(x.Blackholes, "blackhole", "blackholes"))
	for _, f := range x.Failed {
		fmt.Fprintf(w, "not attached (ifindex %d): %s\n", f.Index, f.Error)
	}
	if len(x.Interfaces) == 0 {
		_, err := fmt.Fprintln(w, "no interface runs the XDP program")
		return err
	}
	t := newTable(w)
	row(t, "XDP INTERFACE", "MODE", "RULE", "ACTION", "PACKETS", "BYTES")
	for _, ifc := range x.Interfaces {
		mode := ifc.Mode
		if !ifc.Attached {
			mode += " (DETACHED)"
		}
		if len(ifc.Hits) == 0 {
			row(t, ifc.Name, mode, "-", "", "0", "")
			continue
		}
		for i, h := range ifc.Hits {
			name, m := ifc.Name, mode
			if i > 0 {
				name, m = "", ""
			}
			row(t, name, m, h.Rule, h.Action, strconv.FormatUint(h.Packets, 10), humanBytes(h.Bytes))
		}
	}
	return t.Flush()
}
