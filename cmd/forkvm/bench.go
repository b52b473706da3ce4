package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"forkvm/internal/bench"
	"forkvm/internal/server"

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
			sys, t, err := openTemplate(stateDir, name)
			if err != nil {
				return err
			}
			defer sys.Close()
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
	cmd.AddCommand(benchLoadCmd())
	return cmd
}

func benchLoadCmd() *cobra.Command {
	var (
		stateDir, url, key, code string
		clients, requests, pool  int
		duration                 time.Duration
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Load-test a forkvm server on loopback: throughput, p50/p99, errors, server RSS",
		Long: `Load sends requests from N concurrent clients for a duration (or a number
of requests) and reports throughput, latency percentiles, the errors, and
the server's resident memory before and after. Without --url it starts
'forkvm serve' as a child process on a free loopback port (with
--max-concurrent equal to --clients, so the load stays below the cap) and
stops it afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var serverLog *os.File
			if url == "" {
				c, err := startServer(ctx, stateDir, clients, pool)
				if err != nil {
					return err
				}
				serverLog = c.logs
				defer c.stop()
				url = c.url
			}
			before, err := server.ServerRSS(ctx, url, key)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "forkvm bench load: %d clients against %s (%s)\n", clients, url, loadSpan(requests, duration))
			rep, err := server.Load(ctx, server.LoadConfig{BaseURL: url, APIKey: key, Clients: clients, Duration: duration, Requests: requests, Code: code})
			if err != nil {
				return err
			}
			after, err := server.ServerRSS(ctx, url, key)
			if err != nil {
				if serverLog != nil {
					return fmt.Errorf("%w; the server's log ends with:\n%s", err, tail(serverLog, 4096))
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), rep.String())
			fmt.Fprintf(cmd.OutOrStdout(), "server RSS: %.1f MiB before, %.1f MiB after %d requests\n", float64(before)/(1<<20), float64(after)/(1<<20), rep.Requests)
			return nil
		},
	}
	f := cmd.Flags()
	addStateDirFlag(cmd, &stateDir)
	f.StringVar(&url, "url", "", "server to load (default: start one)")
	f.StringVar(&key, "key", "", "API key for --url")
	f.IntVar(&clients, "clients", 2, "concurrent clients")
	f.IntVar(&requests, "requests", 10000, "stop after this many requests (0: run for --duration)")
	f.DurationVar(&duration, "duration", 0, "how long to run (0: until --requests are done)")
	f.StringVar(&code, "code", "print(1+1)", "code every request runs")
	f.IntVar(&pool, "pool", 4, "prepared forks of the started server")
	return cmd
}

func loadSpan(requests int, d time.Duration) string {
	if requests > 0 {
		return fmt.Sprintf("%d requests", requests)
	}
	return d.String()
}

// child is a `forkvm serve` started by bench load.
type child struct {
	cmd    *exec.Cmd
	url    string
	logs   *os.File
	exited chan struct{} // closed when the process has been waited for
}

// stop ends the server gracefully and waits for it.
func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	<-c.exited
}

// startServer runs `forkvm serve` on a free loopback port and waits until
// it is ready.
func startServer(ctx context.Context, stateDir string, maxConcurrent, pool int) (*child, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "serve", "--addr", addr, "--state-dir", stateDir, "--pool", strconv.Itoa(pool),
		"--max-concurrent", strconv.Itoa(maxConcurrent), "--rate", "-1", "--log-format", "json")
	// Auth stays off: bench load sends no key to the server it starts.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, server.KeysFileEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	logs, err := os.CreateTemp("", "forkvm-serve-*.log")
	if err != nil {
		return nil, err
	}
	os.Remove(logs.Name()) // unlinked: the child's log dies with us
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, url: "http://" + addr, logs: logs, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(c.exited) }()
	deadline := time.After(60 * time.Second)
	for {
		resp, err := http.Get(c.url + "/v1/health")
		if err == nil {
			var h struct{ Ready bool }
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if h.Ready {
				return c, nil
			}
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("forkvm serve exited before it was ready: %s", tail(logs, 4096))
		case <-ctx.Done():
			cmd.Process.Kill()
			<-c.exited
			return nil, ctx.Err()
		case <-deadline:
			cmd.Process.Kill()
			<-c.exited
			return nil, fmt.Errorf("forkvm serve did not become ready: %s", tail(logs, 4096))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tail returns the last n bytes of f.
func tail(f *os.File, n int64) string {
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	f.ReadAt(b, off)
	return string(b)
}
