package sandbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"forkvm/internal/kvm"
	"forkvm/internal/linux"
	"forkvm/internal/snapshot"
	"forkvm/internal/vm"
)

// Request is one piece of code to run in a fresh sandbox.
type Request struct {
	Code        string
	Env         map[string]string
	Timeout     time.Duration // 0: DefaultTimeout
	MemoryLimit uint64        // bytes of new guest memory; 0: the template's memory size
	OutputLimit int64         // bytes of stdout+stderr; 0: DefaultOutputLimit
}

// Defaults for a Request's zero fields.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultOutputLimit = 1 << 20
)

// Result is what a sandbox did.
type Result struct {
	Stdout, Stderr  []byte
	ExitCode        int
	Outcome         string // ok, error, timeout, memory, fault
	Error           string // why a limit or fault ended the sandbox
	StdoutTruncated bool
	StderrTruncated bool
	ForkTime        time.Duration // request in hand -> vCPU about to run
	ExecTime        time.Duration // vCPU run -> completion
	PrivateBytes    int64         // guest memory this sandbox made its own
	PagesWritten    int           // guest pages made private (written, or copied ahead)
	PagesRead       int           // guest pages read and still shared with the template
	PageFaults      uint64        // guest page faults KVM handled (shadow paging), 0 if unknown
	Syscalls, Exits uint64
	Pooled          bool // the fork was prepared ahead, in the pool
	Touched         bool // ... and its working set was touched ahead (Machine.Touch)
}

// Engine forks sandboxes from one loaded template.
type Engine struct {
	sys  *kvm.System
	tmpl *snapshot.Template

	pool    chan *prepared
	target  int
	stop    chan struct{}
	wg      sync.WaitGroup
	live    atomic.Int64
	closing atomic.Bool

	// Trace, if set before the first Fork, receives the system calls of
	// every sandbox (as forkvm run --trace prints them).
	Trace io.Writer

	// hot lists the guest pages a typical exec writes, and touch the
	// user addresses of the pages it writes and reads, both recorded by a
	// warm-up exec; prepared forks copy and touch them ahead (see
	// prepare).
	hot, touch []uint64

	lastErr atomic.Value // string: the pool's last preparation error

	lastMiss  atomic.Int64 // when a Fork last found the pool empty (Unix ns)
	prepMu    sync.Mutex
	prepTimes [2][]time.Duration // background preparations: [0] without, [1] with the touch pass
}

// prepared is a fork made ahead of its request: VM, memory mapping, vCPU
// state and process state all restored, waiting at the snapshot point.
type prepared struct {
	p                       *linux.Process
	touched                 bool
	stdout, stderr, control bytes.Buffer
}

// NewEngine starts an engine with a pool of poolSize prepared forks
// (0 for none), refilled in the background.
func NewEngine(sys *kvm.System, t *snapshot.Template, poolSize int) *Engine {
	e := &Engine{sys: sys, tmpl: t, target: poolSize, stop: make(chan struct{})}
	e.hot, e.touch = e.warmUp()
	if poolSize > 0 {
		e.pool = make(chan *prepared, poolSize)
		e.wg.Add(1)
		go e.refill()
	}
	return e
}

// Template returns the engine's template.
func (e *Engine) Template() *snapshot.Template { return e.tmpl }

// PrepareTimes returns how long each fork the pool prepared took (VM,
// memory, state), without and with the touch pass: the background cost
// behind each pooled fork.
func (e *Engine) PrepareTimes() (plain, touched []time.Duration) {
	e.prepMu.Lock()
	defer e.prepMu.Unlock()
	return append([]time.Duration(nil), e.prepTimes[0]...), append([]time.Duration(nil), e.prepTimes[1]...)
}

// LastPrepareError returns the pool's most recent failure to prepare a
// fork, if any ("" otherwise).
func (e *Engine) LastPrepareError() string {
	s, _ := e.lastErr.Load().(string)
	return s
}

// PoolSize returns how many prepared forks are waiting, and the target.
func (e *Engine) PoolSize() (int, int) { return len(e.pool), e.target }

// Live returns the number of sandboxes that exist now (forked and not yet
// torn down).
func (e *Engine) Live() int { return int(e.live.Load()) }

func (e *Engine) refill() {
	defer e.wg.Done()
	// The touch pass runs vCPUs here; keep them on one OS thread, as Run
	// does.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		// The touch pass makes a pooled exec several times faster but a
		// preparation slower; while requests find the pool empty, skip it
		// so that the pool refills at the faster rate.
		touch := time.Since(time.Unix(0, e.lastMiss.Load())) > time.Second
		start := time.Now()
		pr, err := e.prepare(touch)
		if err != nil {
			e.lastErr.Store(err.Error())
			select {
			case <-e.stop:
				return
			case <-time.After(100 * time.Millisecond): // e.g. out of file descriptors: retry
				continue
			}
		}
		i := 0
		if touch {
			i = 1
		}
		e.prepMu.Lock()
		if len(e.prepTimes[i]) < 100000 {
			e.prepTimes[i] = append(e.prepTimes[i], time.Since(start))
		}
		e.prepMu.Unlock()
		select {
		case e.pool <- pr:
		case <-e.stop:
			pr.p.Close()
			return
		}
	}
}

// warmUp runs print(1+1) in one fork and records what it touched, so
// that prepared forks can do that work before their request arrives (the
// REAP idea: record a working set, prefetch it). On this machine a guest's
// first write to a page costs ~25 us when the host must copy it during the
// fault and ~2.5 us when it was copied beforehand, and every first touch
// costs ~16 us of KVM shadow-fault handling, which the touch pass moves off
// the request path. The fork runs with the accessed bits of its page
// tables cleared, so that the guest's page walks mark exactly the pages it
// touched (the host's fault-around and KVM's prefetch map neighbours too,
// but set no accessed bits). It returns the guest pages written and the
// touch list (see linux.Process.AccessedPages); errors just mean no
// prefetch.
func (e *Engine) warmUp() (written, touch []uint64) {
	s, err := e.Fork(Request{Code: "print(1+1)", Timeout: 10 * time.Second})
	if err != nil {
		return nil, nil
	}
	defer s.Close()
	if s.pr.p.ClearAccessed() != nil {
		return nil, nil
	}
	if res, err := s.Run(context.Background()); err != nil || res.Outcome != "ok" {
		return nil, nil
	}
	written, _, err = s.TouchedPages()
	if err != nil {
		return nil, nil
	}
	return written, s.pr.p.AccessedPages(written)
}

// prepare forks the template up to the point where only the request is
// missing. With touch set, it also runs the touch pass.
func (e *Engine) prepare(touch bool) (*prepared, error) {
	shell, err := vm.NewShell(e.sys)
	if err != nil {
		return nil, err
	}
	m, err := shell.Fork(e.tmpl.MemFD, e.tmpl.Memory, e.tmpl.CPU)
	if err != nil {
		return nil, err
	}
	if touch {
		m.Prefault(e.hot)
		if err := m.Touch(e.touch, e.tmpl.CPU); err != nil {
			m.Close()
			return nil, fmt.Errorf("touch pass: %w", err)
		}
	} else {
		// A fork on the request path does not wait for the copying: the
		// guest starts at once, on the other CPU if there is one.
		m.PrefaultAsync(e.hot)
	}
	pr := &prepared{touched: touch}
	pr.p, err = linux.Restore(e.sys, m, e.tmpl.Process, linux.IO{Stdout: &pr.stdout, Stderr: &pr.stderr, Control: &pr.control, Trace: e.Trace})
	if err != nil {
		m.Close()
		return nil, err
	}
	return pr, nil
}

// Close stops the pool and releases its prepared forks. Sandboxes already
// forked are not affected; their owners close them.
func (e *Engine) Close() {
	if e.closing.Swap(true) {
		return
	}
	close(e.stop)
	e.wg.Wait()
	if e.pool != nil {
		close(e.pool)
		for pr := range e.pool {
			pr.p.Close()
		}
	}
}

// Sandbox is a forked VM holding one request, ready to run.
type Sandbox struct {
	e      *Engine
	pr     *prepared
	res    Result
	output int64
	ran    bool
	closed bool
}

// Fork makes a sandbox for req: a prepared fork from the pool, or a new
// one when the pool is empty. Result.ForkTime is measured from here to the
// point where only KVM_RUN is left.
func (e *Engine) Fork(req Request) (*Sandbox, error) {
	start := time.Now()
	if e.closing.Load() {
		return nil, ErrClosed
	}
	s := &Sandbox{e: e}
	select {
	case s.pr = <-e.pool:
		s.res.Pooled = s.pr != nil
		s.res.Touched = s.pr != nil && s.pr.touched
	default:
	}
	if s.pr == nil {
		if e.pool != nil {
			e.lastMiss.Store(time.Now().UnixNano())
		}
		var err error
		if s.pr, err = e.prepare(false); err != nil {
			return nil, fmt.Errorf("fork: %w", err)
		}
	}
	timeout, output := req.Timeout, req.OutputLimit
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if output <= 0 {
		output = DefaultOutputLimit
	}
	s.output = output
	p := s.pr.p
	p.SetLimits(timeout, output, req.MemoryLimit)
	frame, err := json.Marshal(map[string]any{"code": req.Code, "env": req.Env})
	if err != nil {
		p.Close()
		return nil, err
	}
	p.Deliver(binary.LittleEndian.AppendUint32(nil, uint32(len(frame))), frame)
	e.live.Add(1)
	s.res.ForkTime = time.Since(start)
	return s, nil
}

// Result returns what is known so far (ForkTime right after Fork).
func (s *Sandbox) Result() Result { return s.res }

// Run runs the sandbox to completion (or until ctx is done). The sandbox
// stays alive, with its memory, until Close.
func (s *Sandbox) Run(ctx context.Context) (Result, error) {
	if s.ran {
		return s.res, errors.New("sandbox already ran")
	}
	s.ran = true
	p := s.pr.p
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		select {
		case <-ctx.Done():
			p.Kill()
		case <-done:
		}
	}()
	runStart := time.Now()
	st, err := p.Run()
	close(done)
	<-finished
	s.res.ExecTime = time.Since(runStart)
	if err != nil {
		return s.res, err
	}
	if st, err := p.Machine().Stats(); err == nil {
		s.res.PageFaults = st["pf_taken"]
	}
	if written, read, err := p.Machine().TouchedPages(); err == nil {
		s.res.PrivateBytes = int64(len(written)) * vm.PageSize
		s.res.PagesWritten, s.res.PagesRead = len(written), len(read)
	}
	stats := p.Stats()
	s.res.Syscalls, s.res.Exits = stats.Syscalls-s.e.tmpl.Process.Syscalls, stats.Exits
	s.res.Stdout, s.res.Stderr = s.pr.stdout.Bytes(), s.pr.stderr.Bytes()
	classify(&s.res, st, s.pr.control.Bytes(), s.output)
	return s.res, nil
}

// TouchedPages returns the guest pages the sandbox wrote and read.
func (s *Sandbox) TouchedPages() (written, read []uint64, err error) {
	return s.pr.p.Machine().TouchedPages()
}

// Close destroys the sandbox's VM and memory.
func (s *Sandbox) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.pr.p.Close()
	s.e.live.Add(-1)
}

// Exec runs req in a new sandbox and tears it down in the background. The
// error is for failures of forkvm itself; what the code did is in the
// Result.
func (e *Engine) Exec(ctx context.Context, req Request) (res Result, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("sandbox failed: %v", v)
		}
	}()
	s, err := e.Fork(req)
	if err != nil {
		return Result{}, err
	}
	defer func() { go s.Close() }() // teardown off the request path, whatever happens
	return s.Run(ctx)
}

// classify sets the result's exit code, outcome and error from how the
// process ended and the agent's completion frame.
func classify(res *Result, st linux.Status, control []byte, output int64) {
	var frame struct {
		ExitCode *int   `json:"exit_code"`
		Error    string `json:"error"`
	}
	hasFrame := json.Unmarshal(control, &frame) == nil && frame.ExitCode != nil
	res.ExitCode = st.Code
	switch st.Reason {
	case "exit":
		if hasFrame {
			res.ExitCode = *frame.ExitCode
		}
		switch {
		case strings.HasPrefix(frame.Error, "MemoryError"):
			res.Outcome, res.Error = "memory", "memory limit reached: the code's allocation failed with MemoryError"
		case res.ExitCode == 0:
			res.Outcome = "ok"
		default:
			res.Outcome = "error"
		}
	case "timeout":
		res.Outcome, res.Error = "timeout", strings.TrimPrefix(st.Message, "forkvm: ")
	case "fault":
		res.Outcome, res.Error = "fault", strings.TrimPrefix(st.Message, "forkvm: ")
	case "output":
		res.Outcome = "error"
		res.Error = fmt.Sprintf("output limit reached: more than %d bytes written to stdout and stderr; the sandbox was stopped", output)
		res.StdoutTruncated, res.StderrTruncated = true, true
	default:
		res.Outcome, res.Error = "error", strings.TrimPrefix(st.Message, "forkvm: ")
	}
}

// ErrClosed is returned by Exec after Close.
var ErrClosed = errors.New("engine closed")
