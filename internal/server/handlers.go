package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// route is one endpoint of the API. The route table is the list of what the
// server answers; the OpenAPI document must describe exactly these routes and
// status codes (a test checks).
type route struct {
	method, path string
	public       bool   // answered without an API key and without rate limiting
	idPrefix     string // of the request id
	statuses     []int  // every status code the route answers with (besides 404/405)
	handle       func(w *statusWriter, r *http.Request, rc *reqCtx)
}

// statusClientClosed is logged and counted (never sent: nobody is listening)
// when the client went away before its answer was ready.
const statusClientClosed = 499

func (s *Server) makeRoutes() []route {
	execStatuses := []int{200, 400, 401, 413, 429, 500, 503}
	return []route{
		{method: "POST", path: "/v1/exec", idPrefix: "exec_", statuses: execStatuses, handle: s.handleExec},
		{method: "POST", path: "/v1/exec/batch", idPrefix: "batch_", statuses: execStatuses, handle: s.handleBatch},
		{method: "GET", path: "/v1/health", public: true, idPrefix: "req_", statuses: []int{200}, handle: s.handleHealth},
		{method: "GET", path: "/v1/metrics", idPrefix: "req_", statuses: []int{200, 401, 429}, handle: s.handleMetrics},
		{method: "GET", path: "/v1/openapi.json", public: true, idPrefix: "req_", statuses: []int{200}, handle: s.handleOpenAPI},
	}
}

// reqCtx is what the server knows about a request while answering it; the
// request's log line is made from it.
type reqCtx struct {
	id     string
	caller string // key id, or client address when auth is off
	start  time.Time
	attrs  []slog.Attr // added by the handler
	errMsg string
}

func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// statusWriter records the status and size of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) newHandler() http.Handler {
	byPath := map[string][]*route{}
	for i := range s.routes {
		rt := &s.routes[i]
		byPath[rt.path] = append(byPath[rt.path], rt)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rt *route
		var allowed []string
		for _, c := range byPath[r.URL.Path] {
			allowed = append(allowed, c.method)
			if c.method == r.Method {
				rt = c
			}
		}
		endpoint, prefix := "other", "req_"
		if rt != nil {
			endpoint, prefix = rt.path, rt.idPrefix
		}
		rc := &reqCtx{id: newID(prefix), start: time.Now()}
		sw := &statusWriter{ResponseWriter: w}
		sw.Header().Set("X-Request-Id", rc.id)
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic while serving a request", "id", rc.id, "panic", p, "stack", string(debug.Stack()))
				if sw.status == 0 {
					s.fail(sw, rc, &apiError{status: http.StatusInternalServerError, msg: "internal server error"})
				}
			}
			if sw.status == 0 {
				sw.status = http.StatusOK
			}
			d := time.Since(rc.start)
			s.metrics.observeRequest(endpoint, sw.status, d)
			s.logRequest(r, rc, sw, d)
		}()

		switch {
		case rt == nil && allowed == nil:
			s.fail(sw, rc, &apiError{status: http.StatusNotFound,
				msg: fmt.Sprintf("no such endpoint: %s %s; the API is described at /v1/openapi.json", r.Method, r.URL.Path)})
			return
		case rt == nil:
			sw.Header().Set("Allow", strings.Join(allowed, ", "))
			s.fail(sw, rc, &apiError{status: http.StatusMethodNotAllowed,
				msg: fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, " or "))})
			return
		}
		if !rt.public {
			caller, err := s.authenticate(r)
			if err != nil {
				sw.Header().Set("WWW-Authenticate", `Bearer realm="forkvm"`)
				s.fail(sw, rc, err)
				return
			}
			rc.caller = caller
			if ok, wait := s.limits.take(caller, 1, time.Now()); !ok {
				s.fail(sw, rc, s.rateLimited(wait, 1))
				return
			}
		}
		rt.handle(sw, r, rc)
	})
}

func (s *Server) rateLimited(wait time.Duration, n int) *apiError {
	what := "request"
	if n > 1 {
		what = fmt.Sprintf("batch of %d executions", n)
	}
	who := "this key"
	if s.keys == nil {
		who = "each client address"
	}
	return &apiError{status: http.StatusTooManyRequests, retryAfter: wait,
		msg: fmt.Sprintf("rate limit exceeded: %s may run %g executions per second (bursts of %d); the %s may be retried in %s",
			who, s.cfg.RatePerSecond, s.cfg.Burst, what, wait.Round(time.Millisecond))}
}

func (s *Server) busy() *apiError {
	return &apiError{status: http.StatusServiceUnavailable, retryAfter: time.Second,
		msg: fmt.Sprintf("server busy: all %d sandbox slots and %d queue places are taken; retry shortly",
			s.cfg.MaxConcurrent, s.cfg.QueueDepth)}
}

// cancelled explains why a request's context ended.
func (s *Server) cancelled() *apiError {
	if s.hard.Err() != nil {
		return &apiError{status: http.StatusServiceUnavailable, retryAfter: time.Second,
			msg: "the server is shutting down and cancelled this execution; retry on a running server"}
	}
	return &apiError{status: statusClientClosed, msg: "the client closed the request"}
}

func (s *Server) limitsView() limitsView {
	return limitsView{maxTimeout: s.cfg.MaxTimeout, maxBatch: s.cfg.MaxBatch, languages: s.ex.Languages()}
}

// execContext is the context sandboxes run under: it ends when the client
// goes away or when a shutdown gives up waiting.
func (s *Server) execContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	stop := context.AfterFunc(s.hard, cancel)
	return ctx, func() { stop(); cancel() }
}

func (s *Server) handleExec(w *statusWriter, r *http.Request, rc *reqCtx) {
	if !s.adm.admit(1) {
		s.fail(w, rc, s.busy())
		return
	}
	// The ticket is given back before the answer is written, so a client
	// that does not read its answer holds no slot (see writeResult).
	released := false
	release := func() {
		if !released {
			released = true
			s.adm.release(1)
		}
	}
	defer release()
	body, aerr := s.readBodyDeadline(w, r)
	if aerr != nil {
		s.fail(w, rc, aerr)
		return
	}
	req, aerr := parseExec(body, "", s.limitsView())
	if aerr != nil {
		s.fail(w, rc, aerr)
		return
	}
	rc.attrs = append(rc.attrs, slog.String("language", req.Language), slog.Duration("timeout", req.Timeout))
	ctx, stop := s.execContext(r.Context())
	defer stop()
	resp, aerr := s.run(ctx, rc.id, req, rc.start)
	if aerr != nil {
		s.fail(w, rc, aerr)
		return
	}
	rc.attrs = append(rc.attrs,
		slog.String("outcome", resp.Outcome), slog.Int("exit_code", resp.ExitCode),
		slog.Float64("fork_ms", resp.ForkTimeMS), slog.Float64("exec_ms", resp.ExecTimeMS),
		slog.Int64("private_kib", resp.PrivateKiB))
	if resp.Error != "" {
		rc.attrs = append(rc.attrs, slog.String("sandbox_error", resp.Error))
	}
	release()
	s.writeResult(w, resp)
}

// bodyReadTimeout bounds how long a client may take to send its body once
// it holds an admission ticket.
const bodyReadTimeout = 10 * time.Second

// resultWriteTimeout bounds how long a client may take to read an answer.
const resultWriteTimeout = 60 * time.Second

// readBodyDeadline reads the body with a deadline, so that a client that
// trickles its body cannot hold an admission ticket for long.
func (s *Server) readBodyDeadline(w *statusWriter, r *http.Request) ([]byte, *apiError) {
	rc := http.NewResponseController(w.ResponseWriter)
	_ = rc.SetWriteDeadline(time.Time{}) // a keep-alive connection may carry one from its last answer
	_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	defer rc.SetReadDeadline(time.Time{})
	return readBody(w.ResponseWriter, r, s.cfg.MaxBodyBytes)
}

// writeResult writes a 200 answer with a write deadline.
func (s *Server) writeResult(w *statusWriter, v any) {
	_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(resultWriteTimeout))
	s.writeJSON(w, http.StatusOK, v)
}

// runRecover is run for a batch's worker goroutines: a panic becomes a
// 500 for the batch instead of ending the server.
func (s *Server) runRecover(ctx context.Context, id string, req ExecRequest, since time.Time) (resp execResponseJSON, aerr *apiError) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("sandbox engine panicked", "id", id, "panic", v)
			aerr = &apiError{status: http.StatusInternalServerError, msg: fmt.Sprintf("the sandbox engine failed: %v", v)}
		}
	}()
	return s.run(ctx, id, req, since)
}

// run waits for a sandbox slot and runs req. since is when the request
// arrived; total_time_ms counts from there.
func (s *Server) run(ctx context.Context, id string, req ExecRequest, since time.Time) (execResponseJSON, *apiError) {
	release, err := s.adm.acquireSlot(ctx)
	if err != nil {
		return execResponseJSON{}, s.cancelled()
	}
	res, err := func() (ExecResult, error) {
		defer release()
		ectx, cancel := context.WithTimeout(ctx, req.Timeout+execGrace)
		defer cancel()
		return s.ex.Exec(ectx, req)
	}()
	if err != nil {
		if ctx.Err() != nil {
			return execResponseJSON{}, s.cancelled()
		}
		s.log.Error("sandbox engine failed", "id", id, "language", req.Language, "err", err)
		return execResponseJSON{}, &apiError{status: http.StatusInternalServerError,
			msg: fmt.Sprintf("the sandbox engine failed: %v", err)}
	}
	outcome := normalizeOutcome(res)
	s.metrics.observeSandbox(res, outcome)
	return toResponse(id, res, outcome, time.Since(since)), nil
}

func (s *Server) handleBatch(w *statusWriter, r *http.Request, rc *reqCtx) {
	if !s.adm.admit(1) {
		s.fail(w, rc, s.busy())
		return
	}
	held := 1
	defer func() { s.adm.release(held) }()
	body, aerr := s.readBodyDeadline(w, r)
	if aerr != nil {
		s.fail(w, rc, aerr)
		return
	}
	reqs, aerr := parseBatch(body, s.limitsView())
	if aerr != nil {
		s.fail(w, rc, aerr)
		return
	}
	rc.attrs = append(rc.attrs, slog.Int("executions", len(reqs)))
	// The first execution was paid for on the way in.
	if ok, wait := s.limits.take(rc.caller, len(reqs)-1, time.Now()); !ok {
		s.fail(w, rc, s.rateLimited(wait, len(reqs)))
		return
	}
	// One worker per slot the batch may use; each holds a ticket, so a batch
	// takes its share of the queue rather than slipping past it.
	workers := min(len(reqs), s.cfg.MaxConcurrent)
	if !s.adm.admit(workers - 1) {
		s.fail(w, rc, s.busy())
		return
	}
	held = workers

	ctx, stop := s.execContext(r.Context())
	defer stop()
	ctx, abandon := context.WithCancel(ctx)
	defer abandon()
	results := make([]execResponseJSON, len(reqs))
	var (
		mu       sync.Mutex
		firstErr *apiError
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(reqs) || ctx.Err() != nil {
					return
				}
				res, err := s.runRecover(ctx, newID("exec_"), reqs[i], rc.start)
				if err != nil {
					mu.Lock()
					// An engine failure explains the batch's failure better
					// than the cancellations it causes in the others.
					if firstErr == nil || (err.status == http.StatusInternalServerError && firstErr.status != err.status) {
						firstErr = err
					}
					mu.Unlock()
					abandon() // the batch has failed; do not start the rest
					continue
				}
				results[i] = res
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = s.cancelled()
	}
	if firstErr != nil {
		s.fail(w, rc, firstErr)
		return
	}
	counts := map[string]int{}
	for _, res := range results {
		counts[res.Outcome]++
	}
	for _, o := range outcomes {
		if counts[o] > 0 {
			rc.attrs = append(rc.attrs, slog.Int(o, counts[o]))
		}
	}
	s.adm.release(held) // before writing: see handleExec
	held = 0
	s.writeResult(w, batchResponseJSON{Results: results})
}

func (s *Server) handleHealth(w *statusWriter, r *http.Request, rc *reqCtx) {
	st := s.ex.Status()
	h := healthJSON{
		Status:    "ok",
		Ready:     st.Ready && !s.draining.Load(),
		Version:   s.cfg.Version,
		Languages: s.ex.Languages(),
		Templates: []templateJSON{},
		Pool:      poolJSON{Size: st.PoolSize, Target: st.PoolTarget, Live: st.Live},
		Queue: queueJSON{Running: s.adm.running(), Waiting: s.adm.waiting(),
			MaxConcurrent: s.cfg.MaxConcurrent, QueueDepth: s.cfg.QueueDepth},
	}
	switch {
	case s.draining.Load():
		h.Status = "draining"
	case !st.Ready:
		h.Status = "starting"
	}
	if h.Languages == nil {
		h.Languages = []string{}
	}
	for _, t := range st.Templates {
		h.Templates = append(h.Templates, templateJSON{Name: t.Name, Language: t.Language,
			Created: t.Created.UTC(), MemoryBytes: t.MemoryBytes})
	}
	s.writeJSON(w, http.StatusOK, h)
}

func (s *Server) handleMetrics(w *statusWriter, r *http.Request, rc *reqCtx) {
	s.metrics.handler.ServeHTTP(w, r)
}

func (s *Server) handleOpenAPI(w *statusWriter, r *http.Request, rc *reqCtx) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(s.openapi)
}

// fail answers with err as a JSON error body.
func (s *Server) fail(w *statusWriter, rc *reqCtx, err *apiError) {
	rc.errMsg = err.msg
	if err.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(err.retryAfter.Seconds()))))
	}
	s.writeJSON(w, err.status, errorJSON{Error: err.msg})
}

func (s *Server) writeJSON(w *statusWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		// Only the server's own types are marshalled; this is a bug.
		panic(fmt.Sprintf("marshal %T: %v", v, err))
	}
	data = append(data, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(data)
}

func (s *Server) logRequest(r *http.Request, rc *reqCtx, w *statusWriter, d time.Duration) {
	status := w.status
	attrs := []slog.Attr{
		slog.String("id", rc.id),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Float64("duration_ms", millis(d)),
		slog.Int("bytes", w.bytes),
		slog.String("remote", r.RemoteAddr),
	}
	if rc.caller != "" {
		attrs = append(attrs, slog.String("caller", rc.caller))
	}
	attrs = append(attrs, rc.attrs...)
	if rc.errMsg != "" {
		attrs = append(attrs, slog.String("error", rc.errMsg))
	}
	level := slog.LevelInfo
	if status >= 500 && status != http.StatusServiceUnavailable {
		level = slog.LevelError
	}
	s.log.LogAttrs(context.Background(), level, "request", attrs...)
}
