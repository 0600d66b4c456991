// SPDX-License-Identifier: AGPL-3.0-only

package main

// Shared plumbing of the commands that talk to a running agent over its
// control socket (HTTP, see internal/control and docs/api.md): rfm
// status, flows, rib, set and reload.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/stepbrobd/rfm/internal/config"
	"github.com/stepbrobd/rfm/internal/control"
)

// controlFlags are the flags every control command has.
type controlFlags struct {
	socket string
	json   bool
}

func (f *controlFlags) register(cmd *cobra.Command) { f.registerOn(cmd.Flags()) }

// registerPersistent puts the flags on a command group, for all of its
// subcommands.
func (f *controlFlags) registerPersistent(cmd *cobra.Command) { f.registerOn(cmd.PersistentFlags()) }

func (f *controlFlags) registerOn(fs *pflag.FlagSet) {
	fs.StringVar(&f.socket, "socket", config.DefaultControlSocket, "control socket of the running agent (its agent.control.socket)")
	fs.BoolVar(&f.json, "json", false, "print the agent's answer as JSON instead of a table")
}

// controlGroup is a command group whose subcommands talk to the agent.
// The control flags go on the group, so `rfm set WORD --socket PATH`
// fails on WORD, not on the flag.
func controlGroup(use, short string) (*cobra.Command, *controlFlags) {
	cmd := commandGroup(&cobra.Command{Use: use, Short: short})
	f := &controlFlags{}
	f.registerPersistent(cmd)
	return cmd, f
}

// controlCommand completes cmd, a command without arguments outside a
// group, to make call and print the answer with render.
func controlCommand[T any](cmd *cobra.Command, call control.Call, render func(io.Writer, T) error) *cobra.Command {
	f := &controlFlags{}
	f.register(cmd)
	return queryCommand(cmd, f, call, render)
}

// queryCommand completes cmd, a command without arguments, to make call
// and print the answer with render.
func queryCommand[T any](cmd *cobra.Command, f *controlFlags, call control.Call, render func(io.Writer, T) error) *cobra.Command {
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return query(cmd, f, call, render) }
	return cmd
}

// queryOneValue completes cmd, a command that takes one value (what:
// "one address"), to make the call made of it and print the answer with
// render. parse checks the value before the agent is asked, so a bad
// one is a usage error.
func queryOneValue[V, T any](cmd *cobra.Command, f *controlFlags, what string, parse func(string) (V, error), call func(V) control.Call, render func(io.Writer, T) error) *cobra.Command {
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s takes %s; got %d arguments", cmd.CommandPath(), what, len(args))
		}
		_, err := parse(args[0])
		return err
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		v, err := parse(args[0])
		if err != nil {
			return err
		}
		return query(cmd, f, call(v), render)
	}
	return cmd
}

// query makes one call to the agent's control API at f.socket: the
// raw answer with --json, else the decoded answer rendered by render.
func query[T any](cmd *cobra.Command, f *controlFlags, call control.Call, render func(io.Writer, T) error) error {
	c := control.NewClient(f.socket)
	defer c.Close()
	return queryOn(commandContext(cmd), c, cmd.OutOrStdout(), f.json, call, render)
}

func queryOn[T any](ctx context.Context, c *control.Client, w io.Writer, asJSON bool, call control.Call, render func(io.Writer, T) error) error {
	if asJSON {
		var raw json.RawMessage
		if err := c.Do(ctx, call, &raw); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "%s\n", raw)
		return err
	}
	var v T
	if err := c.Do(ctx, call, &v); err != nil {
		return err
	}
	return render(w, v)
}

// commandContext is the command's context, or a background one when the
// command runs outside Execute (tests).
func commandContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// isTerminal reports whether w is a terminal, for redrawing in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
