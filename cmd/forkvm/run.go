package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"forkvm/internal/kvm"
	"forkvm/internal/linux"

	"github.com/spf13/cobra"
)

func runCmd() *cobra.Command {
	var (
		timeout time.Duration
		memory  string
		trace   bool
		rootfs  string
		env     []string
		stats   bool
		output  string
	)
	cmd := &cobra.Command{
		Use:   "run [flags] -- PROGRAM [ARGS...]",
		Short: "Run a Linux program in a fresh kernel-less VM",
		Long: `Run loads a Linux x86-64 ELF program into a new KVM virtual machine and runs
it at CPL3 with no guest kernel; forkvm implements its system calls.

Without --rootfs, PROGRAM is a static executable on the host (static or
static-PIE). With --rootfs DIR, PROGRAM is a path inside DIR, which the
program sees as its root directory; dynamically linked programs such as
/usr/bin/python3 then work. The program's stdout and stderr are forkvm's,
and forkvm exits with the program's exit status (128+signal for a fault,
124 for a timeout, 153 when the output limit is reached).`,
		Example: `  forkvm run -- ./hello
  forkvm run --timeout 2s --memory 256M -- ./busy-loop
  forkvm run --rootfs build/rootfs -- /usr/bin/python3 -c 'print(1+1)'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, argv []string) error {
			mem, err := guestMemory(memory)
			if err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			outLimit, err := parseSize(output)
			if err != nil {
				return fmt.Errorf("--output-limit: %w", err)
			}
			if rootfs != "" {
				if st, err := os.Stat(rootfs); err != nil || !st.IsDir() {
					return fmt.Errorf("--rootfs %s: not a directory (build one with 'make rootfs')", rootfs)
				}
				if rootfs, err = filepath.Abs(rootfs); err != nil {
					return err
				}
			}
			sys, err := kvm.Open()
			if err != nil {
				return err
			}
			defer sys.Close()
			cfg := linux.Config{
				Path: argv[0], Args: argv, Env: append(append([]string{}, linux.DefaultEnv...), env...),
				MemorySize: mem, Timeout: timeout, OutputLimit: int64(outLimit),
				Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Root: rootfs,
			}
			if trace {
				cfg.Trace = os.Stderr
			}
			start := time.Now()
			st, s, err := linux.Run(sys, cfg)
			if err != nil {
				return err
			}
			if st.Message != "" {
				fmt.Fprintln(os.Stderr, st.Message)
			}
			if stats || trace {
				printStats(s, time.Since(start))
			}
			if st.Code != 0 {
				return exitError{st.Code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&timeout, "timeout", 0, "wall-clock limit, e.g. 2s (0: none)")
	f.StringVar(&memory, "memory", "1G", "guest memory, which is also the memory limit (e.g. 256M, 2G)")
	f.BoolVar(&trace, "trace", false, "print every system call with its arguments and result on stderr")
	f.StringVar(&rootfs, "rootfs", "", "host directory to show the program as its root directory")
	f.StringArrayVarP(&env, "env", "e", nil, "add NAME=VALUE to the program's environment (repeatable)")
	f.BoolVar(&stats, "stats", false, "print system call and VM exit counts on stderr at the end")
	f.StringVar(&output, "output-limit", "16M", "stop the program once stdout and stderr exceed this size")
	return cmd
}

func printStats(s linux.Stats, d time.Duration) {
	fmt.Fprintf(os.Stderr, "forkvm: %v, %d syscalls, %d VM exits, %d page-table pages, %d queued PTE writes, %d frames in use\n",
		d.Round(time.Microsecond), s.Syscalls, s.Exits, s.PageTables, s.QueuedPTEs, s.Frames)
	if len(s.Unsupported) > 0 {
		var names []string
		for n, c := range s.Unsupported {
			names = append(names, fmt.Sprintf("%s x%d", n, c))
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "forkvm: unimplemented calls (returned ENOSYS): %s\n", strings.Join(names, ", "))
	}
}

// parseSize parses "256M", "2G", "1.5G", "4096" (bytes) and the like.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := 1.0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*mult > 1<<50 {
		return 0, fmt.Errorf("%q is not a size (use e.g. 512M or 2G)", s)
	}
	return int64(v * mult), nil
}

// guestMemory parses a --memory value, rounded up to whole 2 MiB.
func guestMemory(s string) (uint64, error) {
	v, err := parseSize(s)
	if err != nil {
		return 0, err
	}
	const unit = 2 << 20
	return uint64((v + unit - 1) / unit * unit), nil
}
