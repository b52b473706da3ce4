package sandbox_test

import (
	"context"
	"testing"
	"time"

	"forkvm/internal/sandbox"
)

// BenchmarkForkUnpooled measures a fork with no prepared fork waiting: a
// new VM, vCPU, memory slot, CPU and process state.
func BenchmarkForkUnpooled(b *testing.B) {
	e := engine(b, 0)
	var total time.Duration
	for b.Loop() {
		s, err := e.Fork(sandbox.Request{Code: "pass"})
		if err != nil {
			b.Fatal(err)
		}
		total += s.Result().ForkTime
		s.Close()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "us/fork")
}

// BenchmarkForkPooled measures a fork taken from the pool: request in hand
// to vCPU about to run. Only the fork is timed; the loop waits for the
// pool to refill between forks.
func BenchmarkForkPooled(b *testing.B) {
	e := engine(b, 4)
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		for n, _ := e.PoolSize(); n == 0; n, _ = e.PoolSize() {
			time.Sleep(100 * time.Microsecond)
		}
		b.StartTimer()
		s, err := e.Fork(sandbox.Request{Code: "pass"})
		if err != nil {
			b.Fatal(err)
		}
		total += s.Result().ForkTime
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Nanoseconds())/1e3/float64(b.N), "us/fork")
}

// BenchmarkForkExec measures fork + exec of print(1+1) from a pooled fork,
// with the private memory and pages each sandbox cost.
func BenchmarkForkExec(b *testing.B) {
	e := engine(b, 2)
	var total time.Duration
	var private, written, read int64
	for b.Loop() {
		res, err := e.Exec(context.Background(), sandbox.Request{Code: "print(1+1)"})
		if err != nil || string(res.Stdout) != "2\n" {
			b.Fatalf("print(1+1): %q %v %s", res.Stdout, err, res.Error)
		}
		total += res.ForkTime + res.ExecTime
		private += res.PrivateBytes
		written += int64(res.PagesWritten)
		read += int64(res.PagesRead)
	}
	n := float64(b.N)
	b.ReportMetric(float64(total.Microseconds())/1000/n, "ms/exec")
	b.ReportMetric(float64(private)/1024/n, "KiB-private/sandbox")
	b.ReportMetric(float64(written)/n, "pages-written/exec")
	b.ReportMetric(float64(read)/n, "pages-read/exec")
}
