package main

import (
	"github.com/spf13/cobra"

	"forkvm/internal/linux"
)

func syscallsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "syscalls",
		Short: "Print the system call compatibility table as markdown (docs/syscalls.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(linux.CompatibilityMarkdown())
			return err
		},
	}
}
