// Package bench measures forkvm against the baselines a user would
// otherwise pick, in one run, for `forkvm bench`.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"forkvm/internal/kvm"
	"forkvm/internal/linux"
	"forkvm/internal/sandbox"
	"forkvm/internal/snapshot"
)

// Config says what to measure.
type Config struct {
	Forks      int   // forks for the fork-latency rows (>= 1000 for the report)
	Execs      int   // fork+exec runs of print(1+1) (>= 200)
	Alive      []int // sandboxes alive at once, e.g. 10, 100, 1000
	Baselines  int   // runs of each baseline
	Rootfs     string
	Progress   io.Writer
	SkipAlive  bool
	PoolTarget int
}

// Latency summarises a set of durations in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Min float64 `json:"min_ms"`
	Max float64 `json:"max_ms"`
}

func summarise(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) float64 { return ms(s[min(len(s)-1, int(p*float64(len(s))))]) }
	return Latency{N: len(s), P50: q(0.50), P95: q(0.95), P99: q(0.99), Min: ms(s[0]), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// AliveRow is one "N sandboxes alive at once" measurement.
type AliveRow struct {
	N              int     `json:"sandboxes"`
	TotalMS        float64 `json:"total_ms"`
	PrivateKiBEach float64 `json:"private_kib_per_sandbox"`
	HostPSSKiBEach float64 `json:"host_pss_kib_per_sandbox"`
	HostMemKiBEach float64 `json:"host_memory_kib_per_sandbox"`
	Failures       int     `json:"failures"`
	FirstFailure   string  `json:"first_failure,omitempty"`
}

// Report is everything `forkvm bench` measured.
type Report struct {
	Host             string     `json:"host"`
	Date             string     `json:"date"`
	ForkPooled       Latency    `json:"fork_pooled"`
	ForkUnpooled     Latency    `json:"fork_unpooled"`
	ForkExec         Latency    `json:"fork_exec_print"`
	ForkExecNumpy    Latency    `json:"fork_exec_numpy"`
	PoolPrepare      Latency    `json:"pool_prepare"`
	PoolPrepareTouch Latency    `json:"pool_prepare_touch"`
	ExecOnly         Latency    `json:"exec_print"`
	ExecPrivateKiB   float64    `json:"exec_private_kib_p50"`
	ExecSyscalls     uint64     `json:"exec_syscalls"`
	Alive            []AliveRow `json:"alive"`
	HostProcess      Latency    `json:"baseline_host_process"`
	HostZygote       Latency    `json:"baseline_host_zygote_fork"`
	ColdVM           Latency    `json:"baseline_cold_vm"`
	TemplateImageMiB float64    `json:"template_image_mib"`
}

// numpySnippet is a second workload, unlike the snippets the engine's
// warm-up records (print(1+1); numpy arange, linalg.solve, random), so the
// report shows what code outside the recorded working set costs.
const numpySnippet = "import json, re, numpy as np\nd = json.loads('{\"a\": [1, 2, 3]}')\nx = np.fft.fft(np.arange(8.0))\nprint(len(d['a']), re.findall(r'\\d', 'a1b2c3'), round(float(np.abs(x).sum()), 3), np.std([1.0, 2.0, 3.0]).round(3))"

// numpyWant is numpySnippet's output (as python3 prints it on the host).
const numpyWant = "3 ['1', '2', '3'] 72.878 0.816\n"

// Run measures with template t.
func Run(sys *kvm.System, t *snapshot.Template, cfg Config) (*Report, error) {
	say := func(format string, a ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "forkvm bench: "+format+"\n", a...)
		}
	}
	r := &Report{Host: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU()), Date: time.Now().UTC().Format(time.RFC3339),
		TemplateImageMiB: float64(t.Manifest.Sizes["memory.img"]) / (1 << 20)}
	ctx := context.Background()

	say("fork latency, unpooled: %d forks", cfg.Forks)
	e := sandbox.NewEngine(sys, t, 0)
	var ds []time.Duration
	for i := 0; i < cfg.Forks; i++ {
		s, err := e.Fork(sandbox.Request{Code: "pass"})
		if err != nil {
			return nil, err
		}
		ds = append(ds, s.Result().ForkTime)
		s.Close()
	}
	r.ForkUnpooled = summarise(ds)
	e.Close()

	say("fork latency, pooled: %d forks (each taken when a prepared fork is waiting)", cfg.Forks)
	target := max(cfg.PoolTarget, 8)
	e = sandbox.NewEngine(sys, t, target)
	ds = ds[:0]
	for i := 0; i < cfg.Forks; i++ {
		for n, _ := e.PoolSize(); n == 0; n, _ = e.PoolSize() {
			time.Sleep(100 * time.Microsecond)
		}
		s, err := e.Fork(sandbox.Request{Code: "pass"})
		if err != nil {
			return nil, err
		}
		ds = append(ds, s.Result().ForkTime)
		go s.Close()
	}
	r.ForkPooled = summarise(ds)

	// Exec rows measure a service that is keeping up: the pool is full, so
	// its forks have had their touch pass.
	full := func() {
		for n, _ := e.PoolSize(); n < target; n, _ = e.PoolSize() {
			time.Sleep(100 * time.Microsecond)
		}
	}
	say("fork + exec of print(1+1): %d runs (pooled, pool full)", cfg.Execs)
	var total, execs []time.Duration
	var priv []float64
	for i := 0; i < cfg.Execs; i++ {
		full()
		res, err := e.Exec(ctx, sandbox.Request{Code: "print(1+1)"})
		if err != nil {
			return nil, err
		}
		if string(res.Stdout) != "2\n" || res.ExitCode != 0 {
			return nil, fmt.Errorf("print(1+1) gave %q (exit %d, %s)", res.Stdout, res.ExitCode, res.Error)
		}
		total = append(total, res.ForkTime+res.ExecTime)
		execs = append(execs, res.ExecTime)
		priv = append(priv, float64(res.PrivateBytes)/1024)
		r.ExecSyscalls = res.Syscalls
	}
	say("fork + exec of json, re and numpy code unlike the warm-up's: %d runs (pooled)", cfg.Execs/2)
	var numpyTimes []time.Duration
	for i := 0; i < cfg.Execs/2; i++ {
		full()
		res, err := e.Exec(ctx, sandbox.Request{Code: numpySnippet})
		if err != nil {
			return nil, err
		}
		if string(res.Stdout) != numpyWant || res.ExitCode != 0 {
			return nil, fmt.Errorf("numpy snippet gave %q (exit %d, %s)", res.Stdout, res.ExitCode, res.Error)
		}
		numpyTimes = append(numpyTimes, res.ForkTime+res.ExecTime)
	}
	plain, touched := e.PrepareTimes()
	r.PoolPrepare, r.PoolPrepareTouch = summarise(plain), summarise(touched)
	e.Close()
	r.ForkExec, r.ExecOnly, r.ForkExecNumpy = summarise(total), summarise(execs), summarise(numpyTimes)
	sort.Float64s(priv)
	if len(priv) > 0 {
		r.ExecPrivateKiB = priv[len(priv)/2]
	}

	if !cfg.SkipAlive {
		for _, n := range cfg.Alive {
			say("%d sandboxes alive at once", n)
			r.Alive = append(r.Alive, alive(sys, t, n))
		}
	}

	if cfg.Baselines > 0 && cfg.Rootfs != "" {
		say("baseline: fresh host process (python3 -c 'import numpy; print(1+1)' in the rootfs, no VM): %d runs", cfg.Baselines)
		r.HostProcess = hostProcess(cfg.Rootfs, cfg.Baselines)
		say("baseline: os.fork() of a warm host python with numpy (no VM): %d forks", cfg.Baselines*10)
		r.HostZygote = hostZygote(cfg.Rootfs, cfg.Baselines*10)
		say("baseline: cold start in a VM without a template: %d runs", cfg.Baselines)
		r.ColdVM = coldVM(sys, cfg.Rootfs, cfg.Baselines)
	}
	return r, nil
}

// alive forks n sandboxes, runs print(1+1) in each and keeps them all
// alive, then reports the time and memory per sandbox.
func alive(sys *kvm.System, t *snapshot.Template, n int) AliveRow {
	row := AliveRow{N: n}
	e := sandbox.NewEngine(sys, t, 0)
	defer e.Close()
	runtime.GC()
	pss0, avail0 := procKiB("/proc/self/smaps_rollup", "Pss:"), procKiB("/proc/meminfo", "MemAvailable:")
	start := time.Now()
	var boxes []*sandbox.Sandbox
	var private int64
	for i := 0; i < n; i++ {
		s, err := e.Fork(sandbox.Request{Code: "print(1+1)"})
		if err == nil {
			var res sandbox.Result
			res, err = s.Run(context.Background())
			if err == nil && string(res.Stdout) != "2\n" {
				err = fmt.Errorf("output %q, %s", res.Stdout, res.Error)
			}
			private += res.PrivateBytes
			boxes = append(boxes, s)
		}
		if err != nil {
			row.Failures++
			if row.FirstFailure == "" {
				row.FirstFailure = fmt.Sprintf("sandbox %d: %v", i, err)
			}
		}
	}
	row.TotalMS = ms(time.Since(start))
	if len(boxes) > 0 {
		row.PrivateKiBEach = float64(private) / 1024 / float64(len(boxes))
		row.HostPSSKiBEach = float64(procKiB("/proc/self/smaps_rollup", "Pss:")-pss0) / float64(len(boxes))
		row.HostMemKiBEach = float64(avail0-procKiB("/proc/meminfo", "MemAvailable:")) / float64(len(boxes))
	}
	for _, s := range boxes {
		s.Close()
	}
	return row
}

// procKiB reads a "Name:  N kB" line of a /proc file.
func procKiB(path, name string) int64 {
	b, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) {
			f := strings.Fields(l)
			if len(f) >= 2 {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}

func hostProcess(rootfs string, n int) Latency {
	var ds []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		cmd := exec.Command("chroot", rootfs, "/usr/bin/python3", "-c", "import numpy; print(1+1)")
		cmd.Env = linux.DefaultEnv
		if out, err := cmd.Output(); err != nil || string(out) != "2\n" {
			continue
		}
		ds = append(ds, time.Since(start))
	}
	return summarise(ds)
}

// zygoteScript forks a warm interpreter n times; each child runs the code
// as the agent would and writes its output to a pipe. It prints the
// per-fork times in nanoseconds as JSON.
const zygoteScript = `
import os, sys, time, json, numpy
times = []
for i in range(int(sys.argv[1])):
    r, w = os.pipe()
    t = time.perf_counter_ns()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        exec(compile("print(1+1)", "<sandbox>", "exec"), {"__name__": "__main__"})
        sys.stdout.flush()
        os._exit(0)
    os.close(w)
    out = os.read(r, 100)
    os.close(r)
    os.waitpid(pid, 0)
    times.append(time.perf_counter_ns() - t)
    assert out == b"2\n", out
print(json.dumps(times))
`

func hostZygote(rootfs string, n int) Latency {
	cmd := exec.Command("chroot", rootfs, "/usr/bin/python3", "-c", zygoteScript, strconv.Itoa(n))
	cmd.Env = linux.DefaultEnv
	out, err := cmd.Output()
	if err != nil {
		return Latency{}
	}
	var ns []int64
	if json.Unmarshal(out, &ns) != nil {
		return Latency{}
	}
	ds := make([]time.Duration, len(ns))
	for i, v := range ns {
		ds[i] = time.Duration(v)
	}
	return summarise(ds)
}

func coldVM(sys *kvm.System, rootfs string, n int) Latency {
	var ds []time.Duration
	abs, _ := filepath.Abs(rootfs)
	for i := 0; i < n; i++ {
		var out strings.Builder
		start := time.Now()
		st, _, err := linux.Run(sys, linux.Config{Path: "/usr/bin/python3", Args: []string{"python3", "-c", "import numpy; print(1+1)"},
			Env: linux.DefaultEnv, Root: abs, MemorySize: 2 << 30, Stdout: &out, Timeout: time.Minute})
		if err != nil || st.Code != 0 || out.String() != "2\n" {
			continue
		}
		ds = append(ds, time.Since(start))
	}
	return summarise(ds)
}

// Markdown renders the report as a table, with ratios against forkvm's
// fork+exec.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "forkvm bench on %s, %s (template image %.1f MiB)\n\n", r.Host, r.Date, r.TemplateImageMiB)
	b.WriteString("| measurement | n | p50 ms | p95 ms | p99 ms | vs forkvm fork+exec p50 |\n|---|---:|---:|---:|---:|---:|\n")
	row := func(name string, l Latency) {
		ratio := "—"
		if r.ForkExec.P50 > 0 && l.P50 > 0 {
			ratio = fmt.Sprintf("%.2fx", l.P50/r.ForkExec.P50)
		}
		fmt.Fprintf(&b, "| %s | %d | %.3f | %.3f | %.3f | %s |\n", name, l.N, l.P50, l.P95, l.P99, ratio)
	}
	row("fork, pooled (request in hand → vCPU about to run)", r.ForkPooled)
	row("fork, unpooled (new VM, vCPU, memory slot, state)", r.ForkUnpooled)
	row("fork + exec `print(1+1)` (pooled)", r.ForkExec)
	row("exec `print(1+1)` alone", r.ExecOnly)
	row("fork + exec of json, re and numpy (fft, std) code, pooled", r.ForkExecNumpy)
	row("background: preparing a pooled fork (VM, memory, state)", r.PoolPrepare)
	row("background: preparing a pooled fork with the touch pass", r.PoolPrepareTouch)
	row("baseline: fresh host process `python3 -c 'import numpy; print(1+1)'`", r.HostProcess)
	row("baseline: os.fork() of a warm host python with numpy (no VM isolation)", r.HostZygote)
	row("baseline: cold start in a VM, no template", r.ColdVM)
	fmt.Fprintf(&b, "\nprint(1+1): %.0f KiB private memory per sandbox (p50), %d syscalls.\n", r.ExecPrivateKiB, r.ExecSyscalls)
	if len(r.Alive) > 0 {
		b.WriteString("\nPrivate: guest pages the sandbox made its own (pagemap). Host PSS: forkvm's proportional set size growth, shared template pages split among the sandboxes mapping them. Host memory: the drop in MemAvailable, which also counts KVM's own memory (shadow page tables, vCPU state).\n")
	}
	if len(r.Alive) > 0 {
		b.WriteString("\n| sandboxes alive at once | total ms | private KiB each | host PSS KiB each | host memory KiB each | failures |\n|---:|---:|---:|---:|---:|---:|\n")
		for _, a := range r.Alive {
			fmt.Fprintf(&b, "| %d | %.1f | %.0f | %.0f | %.0f | %d |\n", a.N, a.TotalMS, a.PrivateKiBEach, a.HostPSSKiBEach, a.HostMemKiBEach, a.Failures)
			if a.FirstFailure != "" {
				fmt.Fprintf(&b, "\nfirst failure at %d: %s\n", a.N, a.FirstFailure)
			}
		}
	}
	return b.String()
}
