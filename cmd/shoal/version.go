package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"shoal/internal/buildinfo"
)

// version is set at build time with -ldflags "-X main.version=..."; it
// stays "dev" otherwise.
var version = "dev"

func versionCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print shoal's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := buildinfo.Read(version)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), in)
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), in.String("shoal"))
			return err
		},
	}
	jsonFlag(cmd, &asJSON, `print {"version", "commit", "go"}`)
	return cmd
}
