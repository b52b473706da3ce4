package main

import (
	"encoding/json"
	"fmt"
	"os"

	"forkvm/internal/bench"
	"forkvm/internal/kvm"

	"github.com/spf13/cobra"
)

func benchCmd() *cobra.Command {
	var (
		stateDir, name, rootfs, jsonOut string
		cfg                             bench.Config
		alive                           []int
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure fork and exec latency, memory per sandbox, and the baselines, in one run",
		Long: `Bench forks sandboxes from a template and reports, as a markdown table:
fork latency (pooled and unpooled), fork + exec of print(1+1), how long it
takes to have N sandboxes alive at once and the private memory each costs,
and, measured in the same run, the baselines a user would otherwise pick:
a fresh host python3 process, an os.fork() of a warm host python (no VM
isolation), and a cold start in a VM without a template.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sys, err := kvm.Open()
			if err != nil {
				return err
			}
			defer sys.Close()
			t, err := loadTemplate(sys, stateDir, name)
			if err != nil {
				return err
			}
			defer t.Close()
			cfg.Alive = alive
			cfg.Rootfs = rootfs
			if cfg.Rootfs == "" {
				cfg.Rootfs = t.Manifest.Rootfs
			}
			cfg.Progress = os.Stderr
			r, err := bench.Run(sys, t, cfg)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), r.Markdown())
			if jsonOut != "" {
				b, _ := json.MarshalIndent(r, "", "  ")
				if jsonOut == "-" {
					fmt.Fprintln(cmd.OutOrStdout(), string(b))
				} else if err := os.WriteFile(jsonOut, append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	addStateDirFlag(cmd, &stateDir)
	f.StringVarP(&name, "template", "t", "python", "template to fork")
	f.IntVar(&cfg.Forks, "forks", 1000, "forks measured for each fork-latency row")
	f.IntVar(&cfg.Execs, "execs", 200, "fork + exec runs of print(1+1)")
	f.IntSliceVar(&alive, "alive", []int{10, 100, 1000}, "numbers of sandboxes to keep alive at once")
	f.IntVar(&cfg.Baselines, "baselines", 5, "runs of each baseline (0 to skip them)")
	f.IntVar(&cfg.PoolTarget, "pool", 8, "prepared forks kept ready for the pooled rows")
	f.StringVar(&rootfs, "rootfs", "", "rootfs for the host baselines (default: the template's)")
	f.StringVar(&jsonOut, "json", "", "also write the results as JSON to this file (- for stdout)")
	return cmd
}
