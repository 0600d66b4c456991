// SPDX-License-Identifier: AGPL-3.0-only

package main

// Shared plumbing of the commands that talk to a running agent over its
// control socket: rfm status, flows, rib, set and reload.

import (
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

// query runs one command against the agent at f.socket: the raw answer
// with --json, else the decoded answer rendered by render.
func query[T any](cmd *cobra.Command, f *controlFlags, name string, args any, render func(io.Writer, T) error) error {
	c, err := control.Dial(f.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	return queryOn(c, cmd.OutOrStdout(), f.json, name, args, render)
}

func queryOn[T any](c *control.Client, w io.Writer, asJSON bool, name string, args any, render func(io.Writer, T) error) error {
	if asJSON {
		var raw json.RawMessage
		if err := c.Do(name, args, &raw); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "%s\n", raw)
		return err
	}
	var v T
	if err := c.Do(name, args, &v); err != nil {
		return err
	}
	return render(w, v)
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
