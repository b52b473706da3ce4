// Command testserver is a DEVELOPMENT SERVER FOR THE SDK TESTS ONLY. It
// serves forkvm's real HTTP API (package server) but runs each request's code
// with the host's `python3 -c` in a plain subprocess: it provides NO
// ISOLATION WHATSOEVER. Never expose it to code you do not trust. It exists
// so the SDKs can be tested against the real HTTP layer before forkvm's
// sandbox engine is ready; `forkvm serve` replaces it.
//
//	go run ./internal/server/testserver -addr 127.0.0.1:8080 [-keys keys.json]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"forkvm/internal/server"
)

func main() {
	var (
		cfg       server.Config
		logFormat string
	)
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "listen address")
	flag.StringVar(&cfg.KeysFile, "keys", os.Getenv(server.KeysFileEnv), "JSON array of API keys (default $"+server.KeysFileEnv+"; none: auth off)")
	flag.Float64Var(&cfg.RatePerSecond, "rate", 0, "requests per second per key (0: server default, <0: unlimited)")
	flag.IntVar(&cfg.Burst, "burst", 0, "rate-limit burst (0: server default)")
	flag.IntVar(&cfg.MaxConcurrent, "max-concurrent", 0, "executions at once (0: server default)")
	flag.IntVar(&cfg.QueueDepth, "queue-depth", 0, "requests that may wait (0: server default)")
	flag.DurationVar(&cfg.MaxTimeout, "max-timeout", 0, "largest timeout honoured (0: server default)")
	flag.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	flag.Parse()
	cfg.Version = "testserver"

	logger, err := server.NewLogger(os.Stderr, logFormat, slog.LevelInfo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(2)
	}
	cfg.Logger = logger
	cfg.Logger.Warn("this is the SDK test server: code runs on the host with python3 and NO isolation")

	srv, err := server.New(cfg, &hostPython{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.ListenAndServe(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
}

// outputCap is how much of stdout and stderr is kept; the rest is reported
// as truncated.
const outputCap = 1 << 20

// errTimedOut marks the request's own time limit, as opposed to the client
// going away.
var errTimedOut = errors.New("time limit reached")

// hostPython implements server.Executor with `python3 -c`. NO ISOLATION.
type hostPython struct {
	live atomic.Int64
}

func (*hostPython) Languages() []string { return []string{"python"} }

func (p *hostPython) Status() server.EngineStatus {
	return server.EngineStatus{
		Ready:     true,
		Templates: []server.TemplateInfo{{Name: "host-python3", Language: "python"}},
		Live:      int(p.live.Load()),
	}
}

func (p *hostPython) Exec(ctx context.Context, req server.ExecRequest) (server.ExecResult, error) {
	p.live.Add(1)
	defer p.live.Add(-1)

	t0 := time.Now()
	ctx, cancel := context.WithTimeoutCause(ctx, req.Timeout, errTimedOut)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "-c", req.Code)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1", "LANG=C.UTF-8"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdout, stderr := &capped{}, &capped{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return server.ExecResult{}, fmt.Errorf("start python3: %w", err)
	}
	t1 := time.Now()
	err := cmd.Wait()
	res := server.ExecResult{
		Stdout: stdout.String(), Stderr: stderr.String(),
		StdoutTruncated: stdout.truncated, StderrTruncated: stderr.truncated,
		ForkTime: t1.Sub(t0), ExecTime: time.Since(t1),
		Outcome: server.OutcomeOK,
	}
	if context.Cause(ctx) == errTimedOut {
		res.ExitCode, res.Outcome = -1, server.OutcomeTimeout
		res.Error = fmt.Sprintf("timed out after %s", req.Timeout)
		return res, nil
	}
	if ctx.Err() != nil {
		return res, context.Cause(ctx) // the client went away, or the server gave up
	}
	if exitErr, ok := errors.AsType[*exec.ExitError](err); ok {
		res.ExitCode = exitErr.ExitCode()
		res.Outcome = server.OutcomeError
		if res.ExitCode < 0 {
			res.Outcome = server.OutcomeFault
			res.Error = exitErr.String()
		}
	} else if err != nil {
		return res, fmt.Errorf("wait for python3: %w", err)
	}
	return res, nil
}

// capped keeps the first outputCap bytes written to it.
type capped struct {
	buf       bytes.Buffer
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	room := outputCap - c.buf.Len()
	if len(p) > room {
		c.truncated = true
		c.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return c.buf.Write(p)
}

func (c *capped) String() string { return c.buf.String() }
