package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// httpTestEngine is a TEST DOUBLE of the sandbox engine, for tests of the
// HTTP layer only: it runs no sandbox and no code. It interprets the "code"
// of a request as a command, so tests can make executions that take time,
// print, fail or time out:
//
//	sleep 200ms    wait (until ctx ends), then print "slept 200ms"
//	echo TEXT      print TEXT
//	exit N         exit with code N
//	stderr TEXT    print TEXT to stderr
//	timeout        report that the time limit ended the sandbox
//	memory         report that the memory limit ended the sandbox
//	engine-fail    fail as the engine (the server answers 500)
//	anything else  print the code back
type httpTestEngine struct {
	languages []string
	notReady  bool

	mu       sync.Mutex
	requests []ExecRequest

	running, maxRunning atomic.Int64
	cancelled           atomic.Int64 // executions whose ctx ended before they finished
}

func newTestEngine() *httpTestEngine {
	return &httpTestEngine{languages: []string{"python", "node"}}
}

func (e *httpTestEngine) Languages() []string { return e.languages }

func (e *httpTestEngine) Status() EngineStatus {
	return EngineStatus{
		Ready: !e.notReady,
		Templates: []TemplateInfo{{Name: "python-test", Language: "python",
			Created: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), MemoryBytes: 64 << 20}},
		PoolSize: 3, PoolTarget: 4, Live: int(e.running.Load()),
	}
}

func (e *httpTestEngine) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	n := e.running.Add(1)
	defer e.running.Add(-1)
	for {
		m := e.maxRunning.Load()
		if n <= m || e.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	e.mu.Lock()
	e.requests = append(e.requests, req)
	e.mu.Unlock()

	res := ExecResult{ForkTime: 300 * time.Microsecond, ExecTime: time.Millisecond, PrivateBytes: 1500}
	cmd, arg, _ := strings.Cut(req.Code, " ")
	switch cmd {
	case "sleep":
		d, err := time.ParseDuration(arg)
		if err != nil {
			return res, err
		}
		select {
		case <-time.After(d):
			res.Stdout = "slept " + arg + "\n"
			res.ExecTime = d
		case <-ctx.Done():
			e.cancelled.Add(1)
			return res, ctx.Err()
		}
	case "echo":
		res.Stdout = arg + "\n"
	case "stderr":
		res.Stderr = arg + "\n"
	case "exit":
		res.ExitCode, _ = strconv.Atoi(arg)
	case "timeout":
		res.ExitCode, res.Error, res.Outcome = -1, fmt.Sprintf("timed out after %s", req.Timeout), OutcomeTimeout
	case "memory":
		res.ExitCode, res.Error, res.Outcome = -1, "memory limit of 256 MiB reached", OutcomeMemory
	case "engine-fail":
		return res, errors.New("vCPU exploded")
	default:
		res.Stdout = req.Code
	}
	return res, nil
}

func (e *httpTestEngine) seen() []ExecRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]ExecRequest(nil), e.requests...)
}

// testServer is a Server serving on a real loopback listener.
type testServer struct {
	*Server
	URL    string
	logs   *syncBuffer
	stop   context.CancelFunc
	served chan error // Serve's result
}

// startServer serves cfg and e on 127.0.0.1 with an unused port.
func startServer(t *testing.T, cfg Config, e Executor) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	s, err := New(cfg, e)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, URL: "http://" + ln.Addr().String(), logs: logs, stop: cancel, served: make(chan error, 1)}
	go func() { ts.served <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.served:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	return ts
}

// answer is an HTTP answer as a test sees it.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errorMessage(t *testing.T) string {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(a.body, &e); err != nil || e.Error == nil {
		t.Fatalf("status %d: body is not a JSON error: %q", a.status, a.body)
	}
	return *e.Error
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("status %d: decode %q: %v", a.status, a.body, err)
	}
}

func do(t *testing.T, method, url, key string, body any) answer {
	t.Helper()
	a, err := tryDo(context.Background(), method, url, key, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tryDo sends a request; body is JSON-encoded unless it is a string or []byte.
func tryDo(ctx context.Context, method, url, key string, body any) (answer, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return answer{}, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return answer{}, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// waitFor polls cond until it holds or a few seconds have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
