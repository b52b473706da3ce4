package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var execIDPattern = regexp.MustCompile(`^exec_[0-9a-f]{16}$`)

func TestExecOK(t *testing.T) {
	e := newTestEngine()
	ts := startServer(t, Config{}, e)

	a := do(t, "POST", ts.URL+"/v1/exec", "", map[string]any{"code": "echo hello"})
	if a.status != 200 {
		t.Fatalf("status %d: %s", a.status, a.body)
	}
	var res map[string]any
	a.decode(t, &res)
	for _, f := range []string{"id", "stdout", "stderr", "exit_code", "fork_time_ms", "exec_time_ms",
		"total_time_ms", "private_kib", "outcome", "stdout_truncated", "stderr_truncated"} {
		if _, ok := res[f]; !ok {
			t.Errorf("answer has no field %q: %s", f, a.body)
		}
	}
	if _, ok := res["error"]; ok {
		t.Errorf("error field present on success: %s", a.body)
	}
	id, _ := res["id"].(string)
	if !execIDPattern.MatchString(id) || a.header.Get("X-Request-Id") != id {
		t.Errorf("id %q, X-Request-Id %q: want equal and exec_<16 hex>", id, a.header.Get("X-Request-Id"))
	}
	if res["stdout"] != "hello\n" || res["exit_code"] != 0.0 || res["outcome"] != "ok" {
		t.Errorf("unexpected result %s", a.body)
	}
	if res["fork_time_ms"] != 0.3 || res["exec_time_ms"] != 1.0 || res["private_kib"] != 2.0 {
		t.Errorf("timings or memory wrong: %s", a.body)
	}
	if total := res["total_time_ms"].(float64); total < 0 {
		t.Errorf("total_time_ms %v", total)
	}
	got := e.seen()
	if len(got) != 1 || got[0] != (ExecRequest{Language: "python", Code: "echo hello", Timeout: 30 * time.Second}) {
		t.Errorf("engine got %+v; want python, 30s defaults", got)
	}
}

func TestExecOutcomes(t *testing.T) {
	ts := startServer(t, Config{}, newTestEngine())
	for _, tc := range []struct {
		code, outcome, errSub string
		exit                  int
	}{
		{"exit 3", "error", "", 3},
		{"timeout", "timeout", "timed out after 2s", -1},
		{"memory", "memory", "memory limit", -1},
	} {
		a := do(t, "POST", ts.URL+"/v1/exec", "", map[string]any{"code": tc.code, "timeout_seconds": 2})
		var res execResponseJSON
		a.decode(t, &res)
		if a.status != 200 || res.Outcome != tc.outcome || res.ExitCode != tc.exit || !strings.Contains(res.Error, tc.errSub) {
			t.Errorf("%q: status %d, %s", tc.code, a.status, a.body)
		}
	}
}

func TestTimeoutClampedAndLanguage(t *testing.T) {
	e := newTestEngine()
	ts := startServer(t, Config{MaxTimeout: 10 * time.Second}, e)
	for _, body := range []string{
		`{"code": "a", "timeout_seconds": 99999}`,
		`{"code": "b", "timeout_seconds": 0.25, "language": "node"}`,
		`{"code": "c"}`,
		`{"code": "d", "language": null, "timeout_seconds": null}`,
	} {
		if a := do(t, "POST", ts.URL+"/v1/exec", "", body); a.status != 200 {
			t.Fatalf("%s: status %d: %s", body, a.status, a.body)
		}
	}
	want := []ExecRequest{
		{Language: "python", Code: "a", Timeout: 10 * time.Second},
		{Language: "node", Code: "b", Timeout: 250 * time.Millisecond},
		{Language: "python", Code: "c", Timeout: 10 * time.Second}, // the 30s default, clamped
		{Language: "python", Code: "d", Timeout: 10 * time.Second},
	}
	got := e.seen()
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Errorf("request %d: engine got %+v, want %+v", i, got, want[i])
		}
	}
}

// TestErrorStatuses checks each refusal: its status, that the body is a JSON
// error, and that the sentence names what was wrong.
func TestErrorStatuses(t *testing.T) {
	e := newTestEngine()
	ts := startServer(t, Config{MaxBatch: 3, MaxBodyBytes: 4096}, e)
	big := `{"code": "` + strings.Repeat("x", 5000) + `"}`
	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		want               string // in the error sentence
	}{
		{"bad JSON", "POST", "/v1/exec", `{"code": `, 400, "not valid JSON"},
		{"syntax", "POST", "/v1/exec", `{"code" "x"}`, 400, "not valid JSON"},
		{"empty body", "POST", "/v1/exec", ``, 400, "request body is empty"},
		{"not an object", "POST", "/v1/exec", `["x"]`, 400, "request body: expected an object, got an array"},
		{"trailing data", "POST", "/v1/exec", `{"code": "x"} {}`, 400, "data after its JSON value"},
		{"missing code", "POST", "/v1/exec", `{"language": "python"}`, 400, `field "code" is required`},
		{"code wrong type", "POST", "/v1/exec", `{"code": 5}`, 400, `field "code": expected a string, got a number`},
		{"timeout wrong type", "POST", "/v1/exec", `{"code": "x", "timeout_seconds": "5"}`, 400, `field "timeout_seconds": expected a number, got a string`},
		{"language wrong type", "POST", "/v1/exec", `{"code": "x", "language": true}`, 400, `field "language": expected a string, got a boolean`},
		{"timeout zero", "POST", "/v1/exec", `{"code": "x", "timeout_seconds": 0}`, 400, `field "timeout_seconds": must be a number of seconds greater than 0`},
		{"timeout negative", "POST", "/v1/exec", `{"code": "x", "timeout_seconds": -1}`, 400, `greater than 0`},
		{"unknown field", "POST", "/v1/exec", `{"code": "x", "timeout": 5}`, 400, `field "timeout": unknown field; known fields are code, language, timeout_seconds`},
		{"unknown language", "POST", "/v1/exec", `{"code": "x", "language": "ruby"}`, 400, `language "ruby" is not available; available languages: python, node`},
		{"too large", "POST", "/v1/exec", big, 413, "larger than the limit of 4096 bytes"},
		{"batch too large body", "POST", "/v1/exec/batch", `{"executions": [` + big + `]}`, 413, "larger than the limit"},
		{"batch missing", "POST", "/v1/exec/batch", `{}`, 400, `field "executions" is required`},
		{"batch empty", "POST", "/v1/exec/batch", `{"executions": []}`, 400, `batch is empty`},
		{"batch not array", "POST", "/v1/exec/batch", `{"executions": {"code": "x"}}`, 400, `field "executions": expected an array, got an object`},
		{"batch too big", "POST", "/v1/exec/batch", `{"executions": [{"code":"1"},{"code":"2"},{"code":"3"},{"code":"4"}]}`, 400, "at most 3 executions, got 4"},
		{"batch item type", "POST", "/v1/exec/batch", `{"executions": [{"code":"1"},{"code":"2","timeout_seconds":"x"}]}`, 400, `field "executions[1].timeout_seconds": expected a number, got a string`},
		{"batch item unknown", "POST", "/v1/exec/batch", `{"executions": [{"code":"1","lang":"x"}]}`, 400, `field "executions[0].lang": unknown field`},
		{"batch item not object", "POST", "/v1/exec/batch", `{"executions": ["print(1)"]}`, 400, `field "executions[0]": expected an object, got a string`},
		{"batch item null", "POST", "/v1/exec/batch", `{"executions": [null]}`, 400, `field "executions[0]": expected an object, got null`},
		{"batch item language", "POST", "/v1/exec/batch", `{"executions": [{"code":"1"},{"code":"2","language":"cobol"}]}`, 400, `field "executions[1].language": language "cobol" is not available`},
		{"engine failure", "POST", "/v1/exec", `{"code": "engine-fail"}`, 500, "the sandbox engine failed: vCPU exploded"},
		{"batch engine failure", "POST", "/v1/exec/batch", `{"executions": [{"code":"echo 1"},{"code":"engine-fail"}]}`, 500, "vCPU exploded"},
		{"not found", "GET", "/v1/nothing", nil, 404, "no such endpoint: GET /v1/nothing"},
		{"wrong method", "GET", "/v1/exec", nil, 405, "method GET is not allowed on /v1/exec; use POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, ts.URL+tc.path, "", tc.body)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.body)
			}
			if msg := a.errorMessage(t); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not contain %q", msg, tc.want)
			}
			if a.header.Get("Content-Type") != "application/json" || a.header.Get("X-Request-Id") == "" {
				t.Errorf("headers %v", a.header)
			}
		})
	}
}

func TestEngineNotReady(t *testing.T) {
	e := newTestEngine()
	e.languages, e.notReady = nil, true
	ts := startServer(t, Config{}, e)
	a := do(t, "POST", ts.URL+"/v1/exec", "", `{"code": "x"}`)
	if a.status != 503 || a.header.Get("Retry-After") == "" || !strings.Contains(a.errorMessage(t), "no sandbox templates are loaded yet") {
		t.Errorf("status %d, Retry-After %q: %s", a.status, a.header.Get("Retry-After"), a.body)
	}
	var h healthJSON
	a = do(t, "GET", ts.URL+"/v1/health", "", nil)
	a.decode(t, &h)
	if a.status != 200 || h.Ready || h.Status != "starting" {
		t.Errorf("health %d %s", a.status, a.body)
	}
}

func writeKeys(t *testing.T, keys ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys.json")
	data, _ := json.Marshal(keys)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAuthOn(t *testing.T) {
	ts := startServer(t, Config{KeysFile: writeKeys(t, "key-one-0123456789", "key-two-0123456789")}, newTestEngine())
	exec := ts.URL + "/v1/exec"
	body := `{"code": "echo hi"}`
	for _, tc := range []struct {
		name, header string
		status       int
		want         string
	}{
		{"no header", "", 401, "missing API key"},
		{"wrong key", "Bearer nope", 401, "invalid API key"},
		{"prefix of a key", "Bearer key-one", 401, "invalid API key"},
		{"wrong scheme", "Basic a2V5LW9uZQ==", 401, "malformed Authorization header"},
		{"no scheme", "key-one-0123456789", 401, "malformed Authorization header"},
		{"first key", "Bearer key-one-0123456789", 200, ""},
		{"second key, lower-case scheme", "bearer key-two-0123456789", 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", exec, strings.NewReader(body))
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e errorJSON
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("status %d (want %d), error %q (want %q)", resp.StatusCode, tc.status, e.Error, tc.want)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// Health and the OpenAPI document are public; metrics are not.
	for path, status := range map[string]int{"/v1/health": 200, "/v1/openapi.json": 200, "/v1/metrics": 401} {
		if a := do(t, "GET", ts.URL+path, "", nil); a.status != status {
			t.Errorf("GET %s without a key: %d, want %d", path, a.status, status)
		}
	}
	if a := do(t, "GET", ts.URL+"/v1/metrics", "key-two-0123456789", nil); a.status != 200 {
		t.Errorf("GET /v1/metrics with a key: %d", a.status)
	}
	if strings.Contains(ts.logs.String(), "key-one-0123456789") {
		t.Error("an API key appears in the log")
	}
	if strings.Contains(ts.logs.String(), "authentication is OFF") {
		t.Error("auth-off warning logged with auth on")
	}
}

func TestAuthOff(t *testing.T) {
	ts := startServer(t, Config{}, newTestEngine())
	if a := do(t, "POST", ts.URL+"/v1/exec", "", `{"code":"x"}`); a.status != 200 {
		t.Errorf("no key, auth off: %d %s", a.status, a.body)
	}
	if a := do(t, "POST", ts.URL+"/v1/exec", "whatever", `{"code":"x"}`); a.status != 200 {
		t.Errorf("any key, auth off: %d %s", a.status, a.body)
	}
	if !strings.Contains(ts.logs.String(), "authentication is OFF") {
		t.Errorf("no warning that auth is off in the log:\n%s", ts.logs)
	}
}

func TestLoadKeys(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, err string }{
		{"ok", `["a", "b"]`, ""},
		{"not json", `a, b`, "must be a JSON array of strings"},
		{"object", `{"keys": ["a"]}`, "must be a JSON array of strings"},
		{"empty", `[]`, "holds no keys"},
		{"blank key", `["a", " "]`, "key 1 is empty"},
		{"padded key", `["a "]`, "whitespace"},
		{"duplicate", `["a", "a"]`, "key 1 appears twice"},
	} {
		path := filepath.Join(dir, tc.name+".json")
		os.WriteFile(path, []byte(tc.content), 0o600)
		keys, err := LoadKeys(path)
		if tc.err == "" && (err != nil || len(keys) != 2) {
			t.Errorf("%s: %v %v", tc.name, keys, err)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
		}
	}
	if _, err := LoadKeys(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
	if _, err := New(Config{KeysFile: filepath.Join(dir, "missing.json")}, newTestEngine()); err == nil {
		t.Error("New with a missing keys file: no error")
	}
}

func TestRateLimit(t *testing.T) {
	ts := startServer(t, Config{
		KeysFile:      writeKeys(t, "alice-key", "bob-key"),
		RatePerSecond: 0.5, Burst: 3, MaxBatch: 3,
	}, newTestEngine())
	exec := ts.URL + "/v1/exec"
	for i := range 3 {
		if a := do(t, "POST", exec, "alice-key", `{"code":"x"}`); a.status != 200 {
			t.Fatalf("request %d within the burst: %d %s", i, a.status, a.body)
		}
	}
	a := do(t, "POST", exec, "alice-key", `{"code":"x"}`)
	if a.status != 429 {
		t.Fatalf("past the burst: %d %s", a.status, a.body)
	}
	if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Errorf("Retry-After %q, want 1 or 2 seconds", a.header.Get("Retry-After"))
	}
	if !strings.Contains(a.errorMessage(t), "rate limit exceeded") {
		t.Errorf("error %s", a.body)
	}
	// Another key has its own bucket; a batch costs one token per execution.
	if a := do(t, "POST", ts.URL+"/v1/exec/batch", "bob-key", `{"executions":[{"code":"1"},{"code":"2"}]}`); a.status != 200 {
		t.Fatalf("bob's first batch: %d %s", a.status, a.body)
	}
	a = do(t, "POST", ts.URL+"/v1/exec/batch", "bob-key", `{"executions":[{"code":"1"},{"code":"2"}]}`)
	if a.status != 429 || a.header.Get("Retry-After") == "" || !strings.Contains(a.errorMessage(t), "batch of 2 executions") {
		t.Fatalf("bob's second batch: %d %s", a.status, a.body)
	}
}

func TestRateLimitAuthOffIsPerAddress(t *testing.T) {
	ts := startServer(t, Config{RatePerSecond: 1, Burst: 1, MaxBatch: 1}, newTestEngine())
	do(t, "POST", ts.URL+"/v1/exec", "", `{"code":"x"}`)
	if a := do(t, "POST", ts.URL+"/v1/exec", "", `{"code":"x"}`); a.status != 429 {
		t.Errorf("second request from one address at 1/s: %d", a.status)
	}
}

// TestQueueOverflow fills the one slot and the one queue place, and checks
// that the next request is turned away at once while the others finish.
func TestQueueOverflow(t *testing.T) {
	e := newTestEngine()
	ts := startServer(t, Config{MaxConcurrent: 1, QueueDepth: 1}, e)
	var wg sync.WaitGroup
	answers := make([]answer, 2)
	for i := range 2 {
		if i == 1 {
			waitFor(t, "the first request to run", func() bool { return e.running.Load() == 1 })
		}
		wg.Go(func() { answers[i] = do(t, "POST", ts.URL+"/v1/exec", "", `{"code":"sleep 300ms"}`) })
	}
	waitFor(t, "the second request to queue", func() bool { return ts.adm.waiting() == 1 })

	start := time.Now()
	for _, path := range []string{"/v1/exec", "/v1/exec/batch"} {
		body := `{"code":"x"}`
		if path == "/v1/exec/batch" {
			body = `{"executions":[{"code":"x"}]}`
		}
		a := do(t, "POST", ts.URL+path, "", body)
		if a.status != 503 || a.header.Get("Retry-After") != "1" || !strings.Contains(a.errorMessage(t), "server busy") {
			t.Errorf("%s with a full queue: %d, Retry-After %q, %s", path, a.status, a.header.Get("Retry-After"), a.body)
		}
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("503 took %s; it should not wait", d)
	}
	wg.Wait()
	for i, a := range answers {
		if a.status != 200 {
			t.Errorf("request %d: %d %s", i, a.status, a.body)
		}
	}
	if m := e.maxRunning.Load(); m != 1 {
		t.Errorf("%d executions ran at once with MaxConcurrent 1", m)
	}
	var h healthJSON
	do(t, "GET", ts.URL+"/v1/health", "", nil).decode(t, &h)
	if h.Queue.Running != 0 || h.Queue.Waiting != 0 || h.Queue.MaxConcurrent != 1 || h.Queue.QueueDepth != 1 {
		t.Errorf("health queue after the load: %+v", h.Queue)
	}
}

// TestBatch checks that a batch runs in parallel up to the slot limit and
// answers in request order, even though later executions finish first.
func TestBatch(t *testing.T) {
	e := newTestEngine()
	ts := startServer(t, Config{MaxConcurrent: 4}, e)
	const n = 12
	var execs []map[string]any
	for i := range n {
		// Earlier executions sleep longer, so they finish last.
		execs = append(execs, map[string]any{"code": fmt.Sprintf("sleep %dms", 20*(n-i))})
	}
	execs[5] = map[string]any{"code": "exit 7"}
	execs[6] = map[string]any{"code": "echo six", "language": "node", "timeout_seconds": 5}
	start := time.Now()
	a := do(t, "POST", ts.URL+"/v1/exec/batch", "", map[string]any{"executions": execs})
	elapsed := time.Since(start)
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.body)
	}
	var out batchResponseJSON
	a.decode(t, &out)
	if len(out.Results) != n {
		t.Fatalf("%d results for %d executions", len(out.Results), n)
	}
	ids := map[string]bool{}
	for i, r := range out.Results {
		want := fmt.Sprintf("slept %dms\n", 20*(n-i))
		switch i {
		case 5:
			want = ""
		case 6:
			want = "six\n"
		}
		if r.Stdout != want {
			t.Errorf("result %d: stdout %q, want %q", i, r.Stdout, want)
		}
		if !execIDPattern.MatchString(r.ID) || ids[r.ID] {
			t.Errorf("result %d: id %q not a fresh exec id", i, r.ID)
		}
		ids[r.ID] = true
	}
	if out.Results[5].ExitCode != 7 || out.Results[5].Outcome != "error" {
		t.Errorf("result 5: %+v", out.Results[5])
	}
	if !strings.HasPrefix(a.header.Get("X-Request-Id"), "batch_") {
		t.Errorf("batch request id %q", a.header.Get("X-Request-Id"))
	}
	if m := e.maxRunning.Load(); m != 4 {
		t.Errorf("%d executions ran at once; want exactly the limit of 4", m)
	}
	var serial time.Duration
	for i := range n {
		serial += time.Duration(20*(n-i)) * time.Millisecond
	}
	if elapsed > serial*2/3 {
		t.Errorf("batch took %s; serially it would take %s, so it did not run in parallel", elapsed, serial)
	}
}

// TestClientGoesAway checks that a sandbox is cancelled when its client disconnects.
func TestClientGoesAway(t *testing.T) {
	e := newTestEngine()
	ts := startServer(t, Config{}, e)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := tryDo(ctx, "POST", ts.URL+"/v1/exec", "", `{"code":"sleep 10s"}`); err == nil {
		t.Fatal("request outlived its client timeout")
	}
	waitFor(t, "the sandbox to be cancelled", func() bool { return e.cancelled.Load() == 1 })
	waitFor(t, "the 499 to be logged", func() bool { return strings.Contains(ts.logs.String(), `"status":499`) })
}

// TestShutdownFinishesInFlight cancels the server's context while requests
// run and wait, and checks that every one of them is answered with 200.
func TestShutdownFinishesInFlight(t *testing.T) {
	e := newTestEngine()
	ts := startServer(t, Config{MaxConcurrent: 2, QueueDepth: 10}, e)
	const n = 6
	answers := make([]answer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			answers[i], errs[i] = tryDo(context.Background(), "POST", ts.URL+"/v1/exec", "", `{"code":"sleep 300ms"}`)
		})
	}
	waitFor(t, "2 running and 4 waiting", func() bool { return ts.adm.running() == 2 && ts.adm.waiting() == 4 })
	ts.stop()
	select {
	case err := <-ts.served:
		if err != nil {
			t.Errorf("Serve returned %v after a graceful shutdown", err)
		}
		ts.served <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || answers[i].status != 200 {
			t.Errorf("request %d: %v, status %d %s", i, errs[i], answers[i].status, answers[i].body)
		}
	}
	if _, err := tryDo(context.Background(), "GET", ts.URL+"/v1/health", "", nil); err == nil {
		t.Error("server still accepts connections after shutdown")
	}
	if !strings.Contains(ts.logs.String(), "server stopped") {
		t.Error("no shutdown in the log")
	}
}

// TestShutdownHard checks that when the grace period runs out, running and
// waiting requests are answered with 503 rather than dropped.
func TestShutdownHard(t *testing.T) {
	e := newTestEngine()
	ts := startServer(t, Config{MaxConcurrent: 1, ShutdownTimeout: 200 * time.Millisecond}, e)
	answers := make([]answer, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			answers[i], errs[i] = tryDo(context.Background(), "POST", ts.URL+"/v1/exec", "", `{"code":"sleep 1m"}`)
		})
	}
	waitFor(t, "1 running, 1 waiting", func() bool { return ts.adm.running() == 1 && ts.adm.waiting() == 1 })
	start := time.Now()
	ts.stop()
	err := <-ts.served
	ts.served <- err
	if err != nil || time.Since(start) > 5*time.Second {
		t.Errorf("Serve returned %v after %s", err, time.Since(start))
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil || answers[i].status != 503 || !strings.Contains(answers[i].errorMessage(t), "shutting down") {
			t.Errorf("request %d: %v, status %d %s", i, errs[i], answers[i].status, answers[i].body)
		}
	}
}

func TestHealth(t *testing.T) {
	ts := startServer(t, Config{Version: "1.2.3"}, newTestEngine())
	a := do(t, "GET", ts.URL+"/v1/health", "", nil)
	var h healthJSON
	a.decode(t, &h)
	if a.status != 200 || h.Status != "ok" || !h.Ready || h.Version != "1.2.3" ||
		strings.Join(h.Languages, ",") != "python,node" || len(h.Templates) != 1 ||
		h.Templates[0].MemoryBytes != 64<<20 || h.Pool != (poolJSON{Size: 3, Target: 4, Live: 0}) {
		t.Errorf("health: %d %s", a.status, a.body)
	}
	if !strings.HasPrefix(a.header.Get("X-Request-Id"), "req_") {
		t.Errorf("X-Request-Id %q", a.header.Get("X-Request-Id"))
	}
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, Config{}, newTestEngine())
	do(t, "POST", ts.URL+"/v1/exec", "", `{"code":"echo x"}`)
	do(t, "POST", ts.URL+"/v1/exec", "", `{"code":"timeout"}`)
	do(t, "POST", ts.URL+"/v1/exec", "", `{"code":`)
	a := do(t, "GET", ts.URL+"/v1/metrics", "", nil)
	if a.status != 200 {
		t.Fatalf("%d %s", a.status, a.body)
	}
	text := string(a.body)
	for _, want := range []string{
		"forkvm_fork_seconds_bucket", "forkvm_fork_seconds_count 2",
		"forkvm_exec_seconds_bucket", "forkvm_exec_seconds_count 2",
		`forkvm_request_duration_seconds_bucket{endpoint="/v1/exec"`,
		`forkvm_requests_total{endpoint="/v1/exec",status="200"} 2`,
		`forkvm_requests_total{endpoint="/v1/exec",status="400"} 1`,
		`forkvm_sandboxes_total{outcome="ok"} 1`,
		`forkvm_sandboxes_total{outcome="timeout"} 1`,
		`forkvm_sandboxes_total{outcome="error"} 0`,
		`forkvm_sandboxes_total{outcome="memory"} 0`,
		`forkvm_sandboxes_total{outcome="fault"} 0`,
		"forkvm_sandboxes_live 0", "forkvm_pool_size 3", "forkvm_pool_target 4", "forkvm_engine_ready 1",
		"forkvm_requests_running 0", "forkvm_requests_waiting 0", "forkvm_max_concurrent ",
		"process_resident_memory_bytes", "go_goroutines",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestRequestLog checks the one log line per request.
func TestRequestLog(t *testing.T) {
	ts := startServer(t, Config{}, newTestEngine())
	a := do(t, "POST", ts.URL+"/v1/exec", "", `{"code":"echo x"}`)
	b := do(t, "POST", ts.URL+"/v1/exec", "", `{"code": 1}`)
	var lines []map[string]any
	for line := range strings.Lines(ts.logs.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if m["msg"] == "request" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d request lines for 2 requests:\n%s", len(lines), ts.logs)
	}
	if lines[0]["id"] != a.header.Get("X-Request-Id") || lines[0]["status"] != 200.0 ||
		lines[0]["outcome"] != "ok" || lines[0]["fork_ms"] != 0.3 || lines[0]["duration_ms"] == nil {
		t.Errorf("first line %v", lines[0])
	}
	if lines[1]["id"] != b.header.Get("X-Request-Id") || lines[1]["status"] != 400.0 ||
		!strings.Contains(fmt.Sprint(lines[1]["error"]), `field "code"`) {
		t.Errorf("second line %v", lines[1])
	}
}

func TestConfigDefaults(t *testing.T) {
	s, err := New(Config{}, newTestEngine())
	if err != nil {
		t.Fatal(err)
	}
	c := s.Config()
	if c.Addr != "127.0.0.1:8080" || c.RatePerSecond != 100 || c.Burst < c.MaxBatch || c.MaxConcurrent < 1 ||
		c.QueueDepth < 1 || c.MaxTimeout != 5*time.Minute || c.MaxBodyBytes != 1<<20 || c.MaxBatch != 100 {
		t.Errorf("defaults %+v", c)
	}
	if _, err := New(Config{RatePerSecond: 10, Burst: 5, MaxBatch: 10}, newTestEngine()); err == nil {
		t.Error("burst below the batch limit accepted")
	}
	if _, err := New(Config{MaxConcurrent: -1}, newTestEngine()); err == nil {
		t.Error("negative MaxConcurrent accepted")
	}
}

// onlyReader hides a reader's length, so the client sends the body chunked
// and the server finds out it is too large only while reading it.
type onlyReader struct{ r *strings.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestBodyTooLargeStreamed(t *testing.T) {
	ts := startServer(t, Config{}, newTestEngine())
	for _, size := range []int{1<<20 + 1, 3 << 20} {
		body := `{"code": "` + strings.Repeat("x", size) + `"}`
		for _, chunked := range []bool{false, true} {
			var r io.Reader = strings.NewReader(body)
			if chunked {
				r = onlyReader{strings.NewReader(body)}
			}
			resp, err := http.Post(ts.URL+"/v1/exec", "application/json", r)
			if err != nil {
				t.Fatalf("%d bytes, chunked %v: %v", size, chunked, err)
			}
			var e errorJSON
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != 413 || !strings.Contains(e.Error, "larger than the limit of 1048576 bytes") {
				t.Errorf("%d bytes, chunked %v: %d %q", size, chunked, resp.StatusCode, e.Error)
			}
		}
	}
	// Just under the limit is fine.
	body := `{"code": "` + strings.Repeat("x", 1<<20-20) + `"}`
	if a := do(t, "POST", ts.URL+"/v1/exec", "", body); a.status != 200 {
		t.Errorf("body just under 1 MiB: %d %s", a.status, a.body)
	}
}

func TestNewLogger(t *testing.T) {
	var buf strings.Builder
	for format, want := range map[string]string{"": "msg=hi", "text": "msg=hi", "json": `"msg":"hi"`} {
		buf.Reset()
		l, err := NewLogger(&buf, format, slog.LevelInfo)
		if err != nil {
			t.Fatal(err)
		}
		l.Info("hi")
		if !strings.Contains(buf.String(), want) {
			t.Errorf("format %q: %q", format, buf.String())
		}
	}
	if _, err := NewLogger(&buf, "xml", slog.LevelInfo); err == nil {
		t.Error("xml accepted")
	}
}
