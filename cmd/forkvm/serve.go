package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"forkvm/internal/sandbox"
	"forkvm/internal/server"

	"github.com/spf13/cobra"
)

// engineExecutor serves the HTTP API from a sandbox engine per language.
type engineExecutor struct {
	engines map[string]*sandbox.Engine // by language
}

func (x *engineExecutor) Exec(ctx context.Context, req server.ExecRequest) (server.ExecResult, error) {
	e, ok := x.engines[req.Language]
	if !ok {
		return server.ExecResult{}, fmt.Errorf("no engine for %q", req.Language)
	}
	r, err := e.Exec(ctx, sandbox.Request{Code: req.Code, Timeout: req.Timeout})
	if err == nil && ctx.Err() != nil {
		// The client went away or the shutdown gave up: the sandbox was
		// stopped, which is not the code's result.
		err = ctx.Err()
	}
	if err != nil {
		return server.ExecResult{}, err
	}
	return server.ExecResult{
		Stdout: string(r.Stdout), Stderr: string(r.Stderr), ExitCode: r.ExitCode,
		ForkTime: r.ForkTime, ExecTime: r.ExecTime, PrivateBytes: r.PrivateBytes,
		Error: r.Error, Outcome: r.Outcome, StdoutTruncated: r.StdoutTruncated, StderrTruncated: r.StderrTruncated,
	}, nil
}

func (x *engineExecutor) Languages() []string {
	var l []string
	for lang := range x.engines {
		l = append(l, lang)
	}
	return l
}

func (x *engineExecutor) Status() server.EngineStatus {
	st := server.EngineStatus{Ready: len(x.engines) > 0}
	for _, e := range x.engines {
		m := e.Template().Manifest
		st.Templates = append(st.Templates, server.TemplateInfo{Name: m.Name, Language: m.Language, Created: m.Created, MemoryBytes: int64(m.MemorySize)})
		n, target := e.PoolSize()
		st.PoolSize += n
		st.PoolTarget += target
		st.Live += e.Live()
	}
	return st
}

func serveCmd() *cobra.Command {
	var (
		stateDir, name, logFormat string
		cfg                       server.Config
		pool                      int
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API: POST /v1/exec runs code in a fresh sandbox",
		Long: `Serve listens for the HTTP API (docs/api.md): POST /v1/exec and
/v1/exec/batch run code in sandboxes forked from a template, GET /v1/health
and /v1/metrics (Prometheus) report on the service, GET /v1/openapi.json
describes it. With --keys FILE (a JSON array of keys; or FORKVM_API_KEYS_FILE)
every request needs "Authorization: Bearer <key>"; without it auth is off.
SIGTERM or SIGINT stops accepting, finishes what is in flight and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := server.NewLogger(os.Stderr, logFormat, slog.LevelInfo)
			if err != nil {
				return err
			}
			if cfg.KeysFile == "" {
				cfg.KeysFile = os.Getenv(server.KeysFileEnv)
			}
			cfg.Logger, cfg.Version = logger, version
			sys, t, err := openTemplate(stateDir, name)
			if err != nil {
				return err
			}
			defer sys.Close()
			defer t.Close()
			e := sandbox.NewEngine(sys, t, pool)
			defer e.Close()
			lang := t.Manifest.Language
			srv, err := server.New(cfg, &engineExecutor{engines: map[string]*sandbox.Engine{lang: e}})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			// After the first signal starts the drain, a second one ends
			// the process at once (the default action).
			go func() { <-ctx.Done(); stop() }()
			return srv.ListenAndServe(ctx)
		},
	}
	f := cmd.Flags()
	addStateDirFlag(cmd, &stateDir)
	f.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address to listen on (loopback by default)")
	f.StringVar(&cfg.KeysFile, "keys", "", "JSON array of API keys (env "+server.KeysFileEnv+"); none: auth off")
	f.IntVar(&pool, "pool", 4, "prepared forks kept ready")
	f.IntVar(&cfg.MaxConcurrent, "max-concurrent", 0, "sandboxes running at once (default 2 x CPUs)")
	f.IntVar(&cfg.QueueDepth, "queue", 0, "requests waiting for a sandbox before 503 (default 4 x max-concurrent)")
	f.Float64Var(&cfg.RatePerSecond, "rate", 0, "requests per second per key (default 100; negative: no limit)")
	f.DurationVar(&cfg.MaxTimeout, "max-timeout", 5*time.Minute, "largest timeout_seconds honoured")
	f.StringVarP(&name, "template", "t", "python", "template to fork sandboxes from")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
}
