package sandbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"forkvm/internal/sandbox"
)

// TestTouchedForks checks forks whose working set was touched ahead (the
// pool's touch pass): they run code correctly, keep their own random
// state, and leave the template's memory as it was.
func TestTouchedForks(t *testing.T) {
	_, tmpl := template(t)
	before := memoryHash(t, tmpl)
	e := engine(t, 1) // target 1: every preparation runs the touch pass
	deadline := time.Now().Add(30 * time.Second)
	for n, _ := e.PoolSize(); n < 1; n, _ = e.PoolSize() {
		if time.Now().After(deadline) {
			t.Fatalf("pool did not fill: %s", e.LastPrepareError())
		}
		time.Sleep(10 * time.Millisecond)
	}
	seen := map[string]bool{}
	for i, code := range []string{
		"print(1+1)",
		"import numpy as np, random, os; print(np.arange(10).sum(), random.random(), os.urandom(8).hex())",
	} {
		res, err := e.Exec(context.Background(), sandbox.Request{Code: code})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Pooled || !res.Touched {
			t.Errorf("exec %d: pooled %v touched %v; want a touched pooled fork", i, res.Pooled, res.Touched)
		}
		out := string(res.Stdout)
		if res.ExitCode != 0 || (i == 0 && out != "2\n") || (i == 1 && !strings.HasPrefix(out, "45 ")) {
			t.Errorf("exec %d: exit %d, stdout %q, stderr %q", i, res.ExitCode, out, res.Stderr)
		}
		if seen[out] {
			t.Errorf("exec %d repeated an earlier output %q", i, out)
		}
		seen[out] = true
		for n, _ := e.PoolSize(); n < 1 && time.Now().Before(deadline); n, _ = e.PoolSize() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if after := memoryHash(t, tmpl); after != before {
		t.Error("the template's memory changed")
	}
}

// TestCancelWhileSleeping checks that cancelling a request ends a sandbox
// that sleeps on the host (nanosleep), not only one that computes. Were the
// sleep not interrupted, the sandbox would run into its own timeout and
// report "timeout" instead.
func TestCancelWhileSleeping(t *testing.T) {
	e := engine(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := e.Exec(ctx, sandbox.Request{Code: "import time; time.sleep(60)", Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != "error" || !strings.Contains(res.Error, "stopped") {
		t.Errorf("outcome %q, error %q; want the sandbox stopped by the cancellation", res.Outcome, res.Error)
	}
}
