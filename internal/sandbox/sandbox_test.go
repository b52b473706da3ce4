package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"forkvm/internal/sandbox"
)

// These tests fork real VMs running the real CPython of the guest root
// directory. The machine they run on may have two cores, so concurrency is
// explicit (goroutines, a few sandboxes at once) rather than t.Parallel.

func TestExecBasic(t *testing.T) {
	e := engine(t, 0)
	res := run(t, e, sandbox.Request{Code: "print(1+1)"})
	t.Log(describe(res))
	if string(res.Stdout) != "2\n" || len(res.Stderr) != 0 {
		t.Errorf("stdout %q, stderr %q; want %q and nothing", res.Stdout, res.Stderr, "2\n")
	}
	if res.ExitCode != 0 || res.Outcome != "ok" || res.Error != "" {
		t.Errorf("exit %d, outcome %q, error %q; want 0, ok and none", res.ExitCode, res.Outcome, res.Error)
	}
	if res.ForkTime <= 0 || res.ExecTime <= 0 {
		t.Errorf("fork time %v, exec time %v; want both > 0", res.ForkTime, res.ExecTime)
	}
	if res.PrivateBytes <= 0 {
		t.Errorf("private memory %d bytes; a sandbox that ran Python must have dirtied some pages", res.PrivateBytes)
	}
	if res.Syscalls == 0 || res.Exits == 0 {
		t.Errorf("%d syscalls, %d VM exits; want both > 0", res.Syscalls, res.Exits)
	}
	if res.Pooled {
		t.Error("Pooled is true for an engine without a pool")
	}
}

func TestExecExitCodes(t *testing.T) {
	e := engine(t, 0)
	tests := []struct {
		name     string
		req      sandbox.Request
		exit     int
		outcome  string
		stdout   string   // exact
		inStderr []string // each must appear in stderr
	}{
		{name: "ok", req: sandbox.Request{Code: "print(1+1)"}, exit: 0, outcome: "ok", stdout: "2\n"},
		{name: "exception", req: sandbox.Request{Code: "print('before')\nraise ValueError('boom')"},
			exit: 1, outcome: "error", stdout: "before\n",
			inStderr: []string{"Traceback (most recent call last)", `File "<sandbox>", line 2`, "ValueError: boom"}},
		{name: "syntax error", req: sandbox.Request{Code: "def ("},
			exit: 1, outcome: "error", inStderr: []string{"SyntaxError"}},
		{name: "exit 3", req: sandbox.Request{Code: "import sys\nsys.exit(3)"}, exit: 3, outcome: "error"},
		{name: "exit 0", req: sandbox.Request{Code: "import sys\nprint('x')\nsys.exit(0)"}, exit: 0, outcome: "ok", stdout: "x\n"},
		{name: "exit message", req: sandbox.Request{Code: "import sys\nsys.exit('bye')"},
			exit: 1, outcome: "error", inStderr: []string{"bye"}},
		{name: "stderr", req: sandbox.Request{Code: "import sys\nprint('to stderr', file=sys.stderr)"},
			exit: 0, outcome: "ok", inStderr: []string{"to stderr\n"}},
		{name: "environment", req: sandbox.Request{Code: "import os\nprint(os.environ['GREETING'])", Env: map[string]string{"GREETING": "hello"}},
			exit: 0, outcome: "ok", stdout: "hello\n"},
		{name: "numpy", req: sandbox.Request{Code: "import numpy as np\nprint(int(np.arange(1000).sum()), np.linalg.solve([[3, 1], [1, 2]], [9, 8]))"},
			exit: 0, outcome: "ok", stdout: "499500 [2. 3.]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, e, tt.req)
			if res.ExitCode != tt.exit || res.Outcome != tt.outcome {
				t.Errorf("exit %d, outcome %q; want %d, %q\n%s", res.ExitCode, res.Outcome, tt.exit, tt.outcome, describe(res))
			}
			if string(res.Stdout) != tt.stdout {
				t.Errorf("stdout %q, want %q", res.Stdout, tt.stdout)
			}
			for _, s := range tt.inStderr {
				if !bytes.Contains(res.Stderr, []byte(s)) {
					t.Errorf("stderr does not contain %q:\n%s", s, res.Stderr)
				}
			}
			if len(tt.inStderr) == 0 && len(res.Stderr) != 0 {
				t.Errorf("unexpected stderr:\n%s", res.Stderr)
			}
		})
	}
}

// probe is Python that reports the state the isolation test's writer
// changes, as the JSON object state().
const probe = `
import builtins, json, os, time
import numpy as np

def state():
    return {
        "global": "LEAK" in globals(),
        "builtins": getattr(builtins, "LEAK", None),
        "module": getattr(json, "LEAK", None),
        "array": np.polynomial.polynomial.polyx.tolist(),
        "file": open("/tmp/x").read() if os.path.exists("/tmp/x") else None,
        "env": os.environ.get("X"),
    }
`

// sandboxState is what probe's state() reports.
type sandboxState struct {
	Global   bool    `json:"global"`
	Builtins *string `json:"builtins"`
	Module   *string `json:"module"`
	Array    []int   `json:"array"`
	File     *string `json:"file"`
	Env      *string `json:"env"`
}

func (s sandboxState) String() string {
	str := func(p *string) string {
		if p == nil {
			return "unset"
		}
		return fmt.Sprintf("%q", *p)
	}
	return fmt.Sprintf("global=%v builtins=%s module=%s array=%v file=%s env=%s",
		s.Global, str(s.Builtins), str(s.Module), s.Array, str(s.File), str(s.Env))
}

// original is the template's state; written is the writer's after its writes.
var (
	secret   = "secret"
	original = sandboxState{Array: []int{0, 1}}
	written  = sandboxState{Global: true, Builtins: &secret, Module: &secret, Array: []int{42, 42}, File: &secret, Env: &secret}
)

// TestIsolation runs a sandbox that changes everything it can reach —
// a global, a builtin, a preloaded module's attribute, an array in numpy's
// (template) memory, a file, the environment — while other sandboxes run,
// and checks that no other sandbox, concurrent or later, sees any of it.
func TestIsolation(t *testing.T) {
	e := engine(t, 0)
	_, tmpl := template(t)
	before := memoryHash(t, tmpl)

	const writerCode = probe + `
LEAK = "secret"
builtins.LEAK = "secret"
json.LEAK = "secret"
np.polynomial.polynomial.polyx[:] = 42
with open("/tmp/x", "w") as f:
    f.write("secret")
os.environ["X"] = "secret"
written = time.time()
time.sleep(3)
print(json.dumps({"written": written, "end": time.time(), "state": state()}))
`
	// Each reader looks twice, 0.3 s apart, all while the writer sleeps.
	const readerCode = probe + `
t1, s1 = time.time(), state()
time.sleep(0.3)
print(json.dumps({"t1": t1, "s1": s1, "t2": time.time(), "s2": state()}))
`
	type writerOut struct {
		Written, End float64
		State        sandboxState
	}
	type readerOut struct {
		T1, T2 float64
		S1, S2 sandboxState
	}

	const readers = 3
	results := make([]sandbox.Result, 1+readers)
	errs := make([]error, 1+readers)
	var wg sync.WaitGroup
	exec := func(i int, code string) {
		defer wg.Done()
		results[i], errs[i] = e.Exec(context.Background(), sandbox.Request{Code: code, Timeout: 20 * time.Second})
	}
	wg.Add(1)
	go exec(0, writerCode)
	time.Sleep(500 * time.Millisecond) // the writer forks and writes in a few ms
	for i := 1; i <= readers; i++ {
		wg.Add(1)
		go exec(i, readerCode)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("sandbox %d: %v", i, err)
		}
		if results[i].Outcome != "ok" {
			t.Fatalf("sandbox %d: %s", i, describe(results[i]))
		}
	}

	var w writerOut
	if err := json.Unmarshal(results[0].Stdout, &w); err != nil {
		t.Fatalf("writer output %q: %v", results[0].Stdout, err)
	}
	t.Logf("writer: %v; %d KiB private memory", w.State, results[0].PrivateBytes>>10)
	if !reflect.DeepEqual(w.State, written) {
		t.Errorf("the writer's own state after its writes is %v, want %v", w.State, written)
	}
	for i := 1; i <= readers; i++ {
		var r readerOut
		if err := json.Unmarshal(results[i].Stdout, &r); err != nil {
			t.Fatalf("reader %d output %q: %v", i, results[i].Stdout, err)
		}
		// Guest clocks are the host's, so these say the reader really
		// looked while the writer's changes existed.
		if !(w.Written < r.T1 && r.T2 < w.End) {
			t.Errorf("reader %d looked at %.3f and %.3f, not within the writer's changes (%.3f to %.3f): the test did not run them at the same time",
				i, r.T1, r.T2, w.Written, w.End)
		}
		for _, s := range []sandboxState{r.S1, r.S2} {
			if !reflect.DeepEqual(s, original) {
				t.Errorf("reader %d, running at the same time as the writer, sees %v; want the template's %v", i, s, original)
			}
		}
		t.Logf("reader %d: %v; %d KiB private memory", i, r.S2, results[i].PrivateBytes>>10)
	}

	// A sandbox forked after all of them starts from the template's state.
	res := run(t, e, sandbox.Request{Code: probe + "print(json.dumps(state()))"})
	var after sandboxState
	if err := json.Unmarshal(res.Stdout, &after); err != nil {
		t.Fatalf("output %q: %v (%s)", res.Stdout, err, describe(res))
	}
	if !reflect.DeepEqual(after, original) {
		t.Errorf("a sandbox forked after the writer sees %v; want the template's %v", after, original)
	}
	if got := memoryHash(t, tmpl); got != before {
		t.Errorf("the template's memory changed: sha256 %s before the sandboxes, %s after", before, got)
	}
	if b, err := os.ReadFile("/tmp/x"); err == nil && string(b) == secret {
		t.Errorf("the sandbox's /tmp/x reached the host's /tmp/x")
	}
}

// TestEntropy checks that every fork has its own randomness, although all
// start from one snapshot of the random generators' state.
func TestEntropy(t *testing.T) {
	e := engine(t, 0)
	const code = `
import os, random
import numpy as np
print(os.urandom(16).hex())
print(repr(random.random()))
print(repr(np.random.rand()))
`
	const n = 3
	outs := make([][]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.Exec(context.Background(), sandbox.Request{Code: code})
			if err != nil || res.Outcome != "ok" {
				t.Errorf("sandbox %d: %v %s", i, err, describe(res))
				return
			}
			outs[i] = strings.Fields(string(res.Stdout))
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, what := range []string{"os.urandom(16)", "random.random()", "numpy.random.rand()"} {
		seen := map[string]int{}
		for s, out := range outs {
			if len(out) != 3 {
				t.Fatalf("sandbox %d printed %q, want 3 values", s, out)
			}
			if prev, ok := seen[out[i]]; ok {
				t.Errorf("%s is %s in sandboxes %d and %d", what, out[i], prev, s)
			}
			seen[out[i]] = s
		}
	}
	t.Logf("values: %q", outs)
}

// TestLimits runs code that breaks each limit at the same time as
// well-behaved code, which must not notice.
func TestLimits(t *testing.T) {
	e := engine(t, 0)
	type tcase struct {
		name  string
		req   sandbox.Request
		check func(t *testing.T, r sandbox.Result)
	}
	wellBehaved := func(want string) func(t *testing.T, r sandbox.Result) {
		return func(t *testing.T, r sandbox.Result) {
			if r.Outcome != "ok" || r.ExitCode != 0 || string(r.Stdout) != want || len(r.Stderr) != 0 {
				t.Errorf("want outcome ok and stdout %q; got %s", want, describe(r))
			}
		}
	}
	const memLimit = 256 << 20
	const outLimit = 1 << 20
	cases := []tcase{
		{"timeout", sandbox.Request{Code: "while True:\n    pass", Timeout: 2 * time.Second}, func(t *testing.T, r sandbox.Result) {
			if r.Outcome != "timeout" || !strings.Contains(r.Error, "timed out") {
				t.Errorf("want outcome timeout and an error saying it timed out; got %s", describe(r))
			}
			if r.ExecTime < 2*time.Second || r.ExecTime > 6*time.Second {
				t.Errorf("a 2 s timeout took %v to stop the sandbox", r.ExecTime)
			}
		}},
		{"memory", sandbox.Request{Code: "x = []\nwhile True:\n    x.append(bytearray(50 << 20))", MemoryLimit: memLimit}, func(t *testing.T, r sandbox.Result) {
			if r.Outcome != "memory" && !bytes.Contains(r.Stderr, []byte("MemoryError")) {
				t.Errorf("want outcome memory or a MemoryError; got %s", describe(r))
			}
			if r.Outcome == "ok" {
				t.Errorf("a memory bomb ended ok: %s", describe(r))
			}
			// The limit counts new guest memory; what the sandbox made
			// its own may add the template pages it wrote to.
			if r.PrivateBytes > memLimit+64<<20 {
				t.Errorf("%d MiB private memory with a %d MiB limit", r.PrivateBytes>>20, memLimit>>20)
			}
		}},
		{"output", sandbox.Request{Code: "while True:\n    print('y' * 1000)", OutputLimit: outLimit}, func(t *testing.T, r sandbox.Result) {
			if !strings.Contains(r.Error, "output limit") || !r.StdoutTruncated || r.Outcome == "ok" {
				t.Errorf("want an output limit error and truncated stdout; got %s truncated=%v", describe(r), r.StdoutTruncated)
			}
			if n := len(r.Stdout) + len(r.Stderr); n > outLimit {
				t.Errorf("%d bytes of output kept with a limit of %d", n, outLimit)
			}
			if len(r.Stdout) < outLimit/2 || strings.Trim(string(r.Stdout), "y\n") != "" {
				t.Errorf("stdout of %d bytes is not the code's %d bytes of y lines", len(r.Stdout), outLimit)
			}
		}},
		{"segfault", sandbox.Request{Code: "import ctypes\nctypes.string_at(0)"}, func(t *testing.T, r sandbox.Result) {
			if r.Outcome != "fault" || !strings.Contains(r.Error, "page fault") || r.ExitCode == 0 {
				t.Errorf("want outcome fault and a page fault error; got %s", describe(r))
			}
		}},
		{"good print", sandbox.Request{Code: "print(1+1)"}, wellBehaved("2\n")},
		{"good numpy", sandbox.Request{Code: "import numpy as np\na = np.ones((300, 300))\nprint(int((a @ a).sum()))"}, wellBehaved("27000000\n")},
		{"good loop", sandbox.Request{Code: "print(sum(range(3_000_000)))", Timeout: 20 * time.Second}, wellBehaved("4499998500000\n")},
	}

	results := make([]sandbox.Result, len(cases))
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.Exec(context.Background(), c.req)
		}()
	}
	wg.Wait()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if errs[i] != nil {
				t.Fatalf("Exec: %v", errs[i])
			}
			t.Log(describe(results[i]))
			c.check(t, results[i])
		})
	}
	waitNoneLive(t, e)
}

// TestPool checks that a pool fills, serves requests, and leaves no file
// descriptor open after Close.
func TestPool(t *testing.T) {
	sys, tmpl := template(t)
	openFDs(t) // once first, so that anything the runtime opens lazily is open
	before := openFDs(t)

	e := sandbox.NewEngine(sys, tmpl, 4)
	defer e.Close()
	if _, target := e.PoolSize(); target != 4 {
		t.Errorf("PoolSize target %d, want 4", target)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, _ := e.PoolSize()
		if n == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool holds %d prepared forks after 30 s, want 4", n)
		}
		time.Sleep(10 * time.Millisecond)
	}

	const n = 10
	results := make([]sandbox.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.Exec(context.Background(), sandbox.Request{Code: fmt.Sprintf("print(%d * 7)", i)})
		}()
	}
	wg.Wait()
	pooled := 0
	for i := range n {
		r := results[i]
		if errs[i] != nil {
			t.Errorf("request %d: %v", i, errs[i])
			continue
		}
		if want := fmt.Sprintf("%d\n", i*7); r.Outcome != "ok" || string(r.Stdout) != want {
			t.Errorf("request %d: want %q, got %s", i, want, describe(r))
		}
		if r.Pooled {
			pooled++
		}
	}
	t.Logf("%d of %d requests were served from the pool", pooled, n)
	if pooled == 0 {
		t.Error("no request was served from a full pool")
	}
	waitNoneLive(t, e)

	e.Close()
	if _, err := e.Exec(context.Background(), sandbox.Request{Code: "print(1)"}); !errors.Is(err, sandbox.ErrClosed) {
		t.Errorf("Exec after Close: error %v, want ErrClosed", err)
	}
	// Sandboxes are torn down in the background; give that a moment.
	var leaked []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		leaked = newFDs(before, openFDs(t))
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(leaked) != 0 {
		t.Errorf("%d file descriptors left open after Close:\n%s", len(leaked), strings.Join(leaked, "\n"))
	}
}

// TestCancel checks that cancelling the context stops a sandbox promptly,
// long before its own timeout.
func TestCancel(t *testing.T) {
	e := engine(t, 0)
	t.Run("during run", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		res, err := e.Exec(ctx, sandbox.Request{Code: "while True:\n    pass", Timeout: 60 * time.Second})
		elapsed := time.Since(start)
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		t.Logf("ended after %v: %s", elapsed.Round(time.Millisecond), describe(res))
		if elapsed > 5*time.Second {
			t.Errorf("Exec returned %v after its context was cancelled at 1 s", elapsed)
		}
		if res.Outcome == "ok" {
			t.Errorf("a cancelled sandbox ended ok: %s", describe(res))
		}
	})
	t.Run("before exec", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		res, err := e.Exec(ctx, sandbox.Request{Code: "while True:\n    pass", Timeout: 60 * time.Second})
		elapsed := time.Since(start)
		if err == nil {
			t.Logf("ended after %v: %s", elapsed.Round(time.Millisecond), describe(res))
		}
		if elapsed > 5*time.Second {
			t.Errorf("Exec with a cancelled context returned after %v", elapsed)
		}
		if err == nil && res.Outcome == "ok" {
			t.Errorf("a sandbox with a cancelled context ended ok: %s", describe(res))
		}
	})
}
