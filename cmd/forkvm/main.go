// Command forkvm runs untrusted programs in KVM virtual machines with no
// guest kernel, and forks sandboxes from snapshots of a warm runtime.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// exitError carries a process exit status out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	root := &cobra.Command{
		Use:   "forkvm",
		Short: "Run untrusted code in sub-millisecond, hardware-isolated VMs",
		Long: `forkvm runs programs inside KVM virtual machines that have no guest kernel:
the program runs at CPL3 and forkvm (the VMM) implements its Linux system
calls. Sandboxes are forked from a snapshot of a warm runtime (CPython with
numpy imported) as copy-on-write views of its memory.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(runCmd(), templateCmd(), execCmd(), benchCmd(), serveCmd(), versionCmd(), syscallsCmd())
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "forkvm:", err)
		os.Exit(1)
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print forkvm's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "forkvm", version)
		},
	}
}
