package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"forkvm/internal/sandbox"

	"github.com/spf13/cobra"
)

func execCmd() *cobra.Command {
	var (
		stateDir, name, memory string
		timeout                time.Duration
		quiet, trace           bool
	)
	cmd := &cobra.Command{
		Use:   "exec [flags] CODE",
		Short: "Fork a sandbox from a template and run Python code in it",
		Long: `Exec forks a new sandbox VM from a template (default "python"; build it with
'forkvm template build') and runs CODE in it (use - to read the code from
stdin). The code's stdout and stderr are printed as they were captured;
a summary line with the fork and exec times and the memory the sandbox
made its own goes to stderr. forkvm exits with the code's exit status.`,
		Example: `  forkvm exec 'import numpy as np; print(np.random.rand(3))'
  echo 'print(1+1)' | forkvm exec -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			code := args[0]
			if code == "-" {
				b, err := io.ReadAll(os.Stdin)
				if err != nil {
					return err
				}
				code = string(b)
			}
			mem, err := parseSize(memory)
			if err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			sys, t, err := openTemplate(stateDir, name)
			if err != nil {
				return err
			}
			defer sys.Close()
			defer t.Close()
			e := sandbox.NewEngine(sys, t, 0)
			if trace {
				e.Trace = os.Stderr
			}
			defer e.Close()
			res, err := e.Exec(context.Background(), sandbox.Request{Code: code, Timeout: timeout, MemoryLimit: uint64(mem)})
			if err != nil {
				return err
			}
			os.Stdout.Write(res.Stdout)
			os.Stderr.Write(res.Stderr)
			if res.Error != "" {
				fmt.Fprintf(os.Stderr, "forkvm: %s\n", res.Error)
			}
			if !quiet {
				fmt.Fprintf(os.Stderr, "forkvm: fork %.3f ms (a fresh fork; forkvm serve keeps forks ready), exec %.3f ms, %d KiB private memory (%d pages written, %d read, %d page faults), %d syscalls, %d VM exits (%s)\n",
					ms(res.ForkTime), ms(res.ExecTime), res.PrivateBytes>>10, res.PagesWritten, res.PagesRead, res.PageFaults, res.Syscalls, res.Exits, res.Outcome)
			}
			if res.ExitCode != 0 {
				return exitError{res.ExitCode}
			}
			return nil
		},
	}
	f := cmd.Flags()
	addStateDirFlag(cmd, &stateDir)
	f.StringVarP(&name, "template", "t", "python", "template to fork")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "wall-clock limit")
	f.StringVar(&memory, "memory", "0", "memory the code may allocate beyond the template's (0: up to the template's memory size)")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not print the timing summary")
	f.BoolVar(&trace, "trace", false, "print the sandbox's system calls on stderr")
	return cmd
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
