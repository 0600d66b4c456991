// SPDX-License-Identifier: AGPL-3.0-only

package main

// How the CLI answers a command line it does not understand: one line on
// stderr and exit status 1, so a typo in a script fails instead of
// printing help and "succeeding".

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
)

// commandGroup makes cmd, which only holds subcommands, reject an
// unknown subcommand and a missing one. Cobra alone prints the help and
// exits 0 for both when cmd is not the root.
func commandGroup(cmd *cobra.Command) *cobra.Command {
	cmd.Args = rejectArgsAsCommands
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return fmt.Errorf("%s needs a command: %s (see %s --help)",
			cmd.CommandPath(), strings.Join(subcommandNames(cmd), ", "), cmd.CommandPath())
	}
	return cmd
}

// rejectArgsAsCommands is the Args check of a command that takes no
// arguments: a word left over is an unknown command.
func rejectArgsAsCommands(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return unknownCommand(cmd, args[0])
	}
	return nil
}

// unknownCommand names the word and, when one is close, the command the
// user probably meant, on one line.
func unknownCommand(cmd *cobra.Command, word string) error {
	msg := fmt.Sprintf("unknown command %q for %q", word, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, which it sets only on the root
	}
	if s := cmd.SuggestionsFor(word); len(s) > 0 {
		quoted := make([]string, len(s))
		for i, name := range s {
			quoted[i] = fmt.Sprintf("%q", name)
		}
		msg += "; did you mean " + strings.Join(quoted, " or ") + "?"
	}
	return errors.New(msg)
}

func subcommandNames(cmd *cobra.Command) []string {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	return names
}

// helpCommand replaces cobra's, which answers an unknown topic with the
// root's usage and exit status 0.
func helpCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil {
				return err
			}
			if len(rest) > 0 {
				return unknownCommand(target, rest[0])
			}
			return target.Help()
		},
	}
}

// negativeNumberFlag matches pflag's error for a negative number, which
// it reads as a cluster of shorthand flags ("-5").
var negativeNumberFlag = regexp.MustCompile(`^unknown shorthand flag: '.' in (-[0-9][0-9.]*)$`)

// flagError turns a negative number taken for a flag into the error the
// command gives for that value ("sample rate "-5": want ..."), and keeps
// every other flag error as it is (one line already).
func flagError(cmd *cobra.Command, err error) error {
	if m := negativeNumberFlag.FindStringSubmatch(err.Error()); m != nil && cmd.Args != nil {
		if argErr := cmd.ValidateArgs([]string{m[1]}); argErr != nil {
			return argErr
		}
	}
	return err
}
