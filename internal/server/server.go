// Package server is forkvm's HTTP API. It authenticates and rate-limits
// callers, validates requests, admits them to a bounded number of sandboxes,
// and reports results, one log line per request and Prometheus metrics. The
// sandbox engine sits behind the Executor interface; nothing in this package
// knows how a sandbox is made.
//
// A request meets these gates in order; the first that refuses it answers:
//
//	route and method        404, 405
//	API key                 401   (routes that need one)
//	rate limit per key      429   (with Retry-After)
//	admission               503   (all sandbox slots and queue places taken; with Retry-After)
//	body size               413
//	JSON, fields, language  400
//	wait for a free slot, then Executor.Exec → 200, or 500 when the engine fails
//
// Admission happens before the body is read, so the memory the server spends
// on requests is bounded by MaxConcurrent+QueueDepth bodies of at most
// MaxBodyBytes each, and the number of sandboxes alive at once by
// MaxConcurrent, however hard the server is pushed.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"
)

// Executor runs code in sandboxes. forkvm's sandbox engine implements it.
type Executor interface {
	// Exec runs one request. ctx is cancelled when the client goes away or
	// the server shuts down hard. The error is only for engine failures
	// (answered with 500), never for failures of the guest code.
	Exec(ctx context.Context, req ExecRequest) (ExecResult, error)
	// Languages lists the languages with a ready template, e.g. ["python"].
	Languages() []string
	// Status reports the engine's state for /v1/health and the metrics.
	Status() EngineStatus
}

// ExecRequest is one piece of code to run, already validated: Language is one
// of Executor.Languages() and Timeout is positive and at most Config.MaxTimeout.
type ExecRequest struct {
	Language string
	Code     string
	Timeout  time.Duration
}

// ExecResult is what became of one ExecRequest.
type ExecResult struct {
	Stdout, Stderr string
	ExitCode       int
	// ForkTime is the time to make the sandbox, ExecTime the time the code ran.
	ForkTime, ExecTime time.Duration
	// PrivateBytes is the memory the sandbox dirtied: its cost.
	PrivateBytes int64
	// Error is set when a limit or fault ended the sandbox ("timed out after
	// 2s", "memory limit ...", "guest fault: ...").
	Error string
	// Outcome is one of "ok", "error", "timeout", "memory", "fault"; it labels
	// the forkvm_sandboxes_total counter. Empty means "ok" for exit code 0 and
	// "error" otherwise.
	Outcome string
	// StdoutTruncated and StderrTruncated report output cut at the engine's cap.
	StdoutTruncated, StderrTruncated bool
}

// Outcomes of a sandbox, as reported in ExecResult.Outcome.
const (
	OutcomeOK      = "ok"      // the code ran and exited 0
	OutcomeError   = "error"   // the code ran and exited non-zero (an exception, sys.exit(n))
	OutcomeTimeout = "timeout" // the time limit ended it
	OutcomeMemory  = "memory"  // the memory limit ended it
	OutcomeFault   = "fault"   // the guest faulted or did something the sandbox does not allow
)

var outcomes = []string{OutcomeOK, OutcomeError, OutcomeTimeout, OutcomeMemory, OutcomeFault}

// EngineStatus is the engine's state.
type EngineStatus struct {
	Ready      bool // templates are loaded and sandboxes can be made
	Templates  []TemplateInfo
	PoolSize   int // prepared sandboxes waiting to be used
	PoolTarget int // the number the pool is refilled to
	Live       int // sandboxes that exist now
}

// TemplateInfo describes one template a sandbox can be forked from.
type TemplateInfo struct {
	Name, Language string
	Created        time.Time
	MemoryBytes    int64
}

// Config configures a Server. Zero fields take the defaults listed beside them.
type Config struct {
	Addr          string        // listen address; default "127.0.0.1:8080" (loopback)
	KeysFile      string        // JSON array of API keys; empty turns auth off (see KeysFileEnv)
	RatePerSecond float64       // requests per second per key; default 100, negative for no limit
	Burst         int           // rate-limit bucket size; default 2×RatePerSecond, at least MaxBatch
	MaxConcurrent int           // sandboxes running at once; default 2×GOMAXPROCS
	QueueDepth    int           // requests waiting for a sandbox slot; default 4×MaxConcurrent, negative for none
	MaxTimeout    time.Duration // largest timeout_seconds honoured (larger ones are clamped); default 5m
	MaxBatch      int           // executions per batch; default 100
	MaxBodyBytes  int64         // request body limit; default 1 MiB
	Version       string        // reported by /v1/health; default "dev"
	Logger        *slog.Logger  // default slog.Default()

	// ShutdownTimeout is how long a graceful shutdown waits for requests in
	// flight before cancelling their sandboxes (they are then answered with
	// 503). Default MaxTimeout + 15s.
	ShutdownTimeout time.Duration
}

// KeysFileEnv is the environment variable the CLI reads the keys file path
// from when --keys is not given. New itself does not read the environment.
const KeysFileEnv = "FORKVM_API_KEYS_FILE"

// DefaultTimeout is the time limit of a request that does not set timeout_seconds.
const DefaultTimeout = 30 * time.Second

// execGrace is how long past its own timeout a sandbox may take before the
// server gives up on the engine and answers 500: the engine enforces timeouts,
// this only guards against an engine that never returns.
const execGrace = 10 * time.Second

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.RatePerSecond == 0 {
		c.RatePerSecond = 100
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 2 * runtime.GOMAXPROCS(0)
	}
	if c.QueueDepth == 0 {
		c.QueueDepth = 4 * c.MaxConcurrent
	} else if c.QueueDepth < 0 {
		c.QueueDepth = 0
	}
	if c.MaxTimeout == 0 {
		c.MaxTimeout = 5 * time.Minute
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 100
	}
	if c.Burst == 0 {
		c.Burst = max(int(2*c.RatePerSecond), c.MaxBatch)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = c.MaxTimeout + 15*time.Second
	}
	switch {
	case c.MaxConcurrent < 0:
		return fmt.Errorf("max concurrent sandboxes must be positive, got %d", c.MaxConcurrent)
	case c.MaxTimeout < 0:
		return fmt.Errorf("max timeout must be positive, got %s", c.MaxTimeout)
	case c.MaxBatch < 0:
		return fmt.Errorf("max batch size must be positive, got %d", c.MaxBatch)
	case c.MaxBodyBytes < 0:
		return fmt.Errorf("max body size must be positive, got %d", c.MaxBodyBytes)
	case c.RatePerSecond > 0 && c.Burst < c.MaxBatch:
		return fmt.Errorf("rate-limit burst %d is smaller than the largest batch (%d executions), which could then never pass; raise the burst or lower the batch size", c.Burst, c.MaxBatch)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("shutdown timeout must not be negative, got %s", c.ShutdownTimeout)
	}
	return nil
}

// Server is forkvm's HTTP API server. Make one with New.
type Server struct {
	cfg     Config
	ex      Executor
	log     *slog.Logger
	keys    *keyring // nil when auth is off
	limits  *rateLimiter
	adm     *admission
	metrics *metrics
	routes  []route
	handler http.Handler
	openapi []byte // the OpenAPI document, with this server's version

	draining atomic.Bool
	// hard is cancelled when a graceful shutdown runs out of time: sandboxes
	// still running are cancelled and their requests answered with 503.
	hard       context.Context
	cancelHard context.CancelFunc
}

// New makes a Server that runs code with ex. It loads cfg.KeysFile (an empty
// KeysFile turns auth off) and fills zero fields of cfg with defaults.
func New(cfg Config, ex Executor) (*Server, error) {
	if ex == nil {
		return nil, errors.New("server: no executor")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		ex:      ex,
		log:     cfg.Logger,
		limits:  newRateLimiter(cfg.RatePerSecond, cfg.Burst),
		adm:     newAdmission(cfg.MaxConcurrent, cfg.QueueDepth),
		metrics: newMetrics(ex),
	}
	if cfg.KeysFile != "" {
		keys, err := LoadKeys(cfg.KeysFile)
		if err != nil {
			return nil, err
		}
		s.keys = newKeyring(keys)
	}
	s.metrics.addServerGauges(s.adm)
	s.hard, s.cancelHard = context.WithCancel(context.Background())
	s.routes = s.makeRoutes()
	s.openapi = openAPIDocument(cfg.Version)
	s.handler = s.newHandler()
	return s, nil
}

// Handler returns the HTTP handler serving the whole API.
func (s *Server) Handler() http.Handler { return s.handler }

// Config returns the configuration in use, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// ListenAndServe listens on cfg.Addr and serves until ctx is cancelled, then
// shuts down gracefully: it stops accepting connections, answers every
// request in flight and returns nil.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is ListenAndServe on a listener the caller made (for example on
// 127.0.0.1:0 to get a free port). It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.logStart(ln.Addr())

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	s.draining.Store(true)
	s.log.Info("shutting down: no new connections; finishing requests in flight",
		"running", s.adm.running(), "waiting", s.adm.waiting(), "grace", s.cfg.ShutdownTimeout)
	graceCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(graceCtx); err != nil {
		// Out of patience: cancel the sandboxes still running and waiting.
		// Their handlers answer 503; Shutdown again waits until those
		// answers are written and the connections idle.
		s.log.Warn("shutdown grace period over; cancelling sandboxes still running",
			"running", s.adm.running(), "waiting", s.adm.waiting())
		s.cancelHard()
		lastCtx, cancel := context.WithTimeout(context.Background(), execGrace)
		defer cancel()
		if err := hs.Shutdown(lastCtx); err != nil {
			s.log.Error("requests still unanswered after cancelling their sandboxes; closing their connections")
			hs.Close()
		}
	}
	<-served // http.ErrServerClosed
	s.log.Info("server stopped")
	return nil
}

func (s *Server) logStart(addr net.Addr) {
	auth := "on"
	if s.keys == nil {
		auth = "off"
	}
	s.log.Info("forkvm API listening", "addr", addr.String(), "version", s.cfg.Version, "auth", auth,
		"max_concurrent", s.cfg.MaxConcurrent, "queue_depth", s.cfg.QueueDepth,
		"rate_per_second", s.cfg.RatePerSecond, "burst", s.cfg.Burst, "max_timeout", s.cfg.MaxTimeout)
	if s.keys != nil {
		return
	}
	if tcp, ok := addr.(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		s.log.Warn("authentication is OFF and the server is reachable beyond this host: anyone who can connect can run code; give a keys file with --keys or " + KeysFileEnv)
		return
	}
	s.log.Warn("authentication is OFF: every local user can run code; give a keys file with --keys or " + KeysFileEnv)
}
