// Package linux is the Linux ABI a kernel-less guest sees: ELF loading, the
// process image, the address space, file descriptors, and the system call
// table with its handlers. A Process owns one vm.Machine and plays its
// kernel: each guest `syscall` reaches Process.dispatch through the stub.
package linux

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"forkvm/internal/kvm"
	"forkvm/internal/vfs"
	"forkvm/internal/vm"

	"golang.org/x/sys/unix"
)

// Config describes a program to run.
type Config struct {
	// Path is the program: a guest path when FS has a root, otherwise a
	// host path to a static executable.
	Path string
	Args []string // argv, including argv[0]
	Env  []string

	MemorySize  uint64        // guest physical memory (and so the memory limit)
	Timeout     time.Duration // wall-clock limit; 0 for none
	OutputLimit int64         // bytes of stdout+stderr allowed; 0 for the default

	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Trace          io.Writer // if set, each system call is printed here

	// Root is the host directory shown as the guest's "/" ("" for none).
	Root string
	// WritableLimit caps the in-memory writable file layer.
	WritableLimit int64

	// Template makes fd 0 a request channel and fd 3 a control channel
	// (written to Control): Run returns with Status.Reason "snapshot" when
	// the program first reads fd 0.
	Template bool
	Control  io.Writer
}

// DefaultEnv is the environment guest programs get by default: no threads
// for BLAS libraries (sandboxes have one vCPU and no threads), a PATH, a
// writable HOME and a UTF-8 locale.
var DefaultEnv = []string{
	"PATH=/usr/local/bin:/usr/bin:/bin",
	"HOME=/tmp",
	"LANG=C.UTF-8",
	"OPENBLAS_NUM_THREADS=1",
	"OMP_NUM_THREADS=1",
	"MKL_NUM_THREADS=1",
	"NUMEXPR_NUM_THREADS=1",
	"PYTHONDONTWRITEBYTECODE=1",
}

// DefaultOutputLimit is the stdout+stderr cap when Config.OutputLimit is 0.
const DefaultOutputLimit = 16 << 20

// Status is how a program ended.
type Status struct {
	// Code is the exit status a shell would report: the program's own
	// status, 128+signal for a fault, 124 for a timeout.
	Code int
	// Message explains an abnormal end (empty when the program exited).
	Message string
	// Reason classifies the end: "exit", "fault", "timeout", "output",
	// "memory", "error".
	Reason string
}

// Stats counts what a run cost.
type Stats struct {
	Syscalls    uint64
	Exits       uint64
	Unsupported map[string]int // unimplemented calls by name
	PageTables  uint64
	QueuedPTEs  uint64
	Frames      uint64 // guest frames in use at the end
}

// Process is a guest program and the kernel state the VMM keeps for it.
type Process struct {
	cfg Config
	sys *kvm.System
	m   *vm.Machine
	mm  *AddressSpace
	fds *FDTable
	fs  *vfs.FS
	cwd string

	exePath string
	tidAddr uint64
	sigs    signalState
	umask   uint32

	deadline time.Time
	timedOut atomic.Bool
	stopCh   chan struct{} // closed by stop
	stopOnce sync.Once
	output   *outputCap

	exited bool
	status Status

	// paused is set while the program waits at its snapshot point.
	paused  bool
	request *requestFile
	stdout  *outFile
	stderr  *outFile

	stats  Stats
	start  time.Time
	closed bool
}

// Run loads cfg.Path into a new VM and runs it to completion.
func Run(sys *kvm.System, cfg Config) (Status, Stats, error) {
	p, err := New(sys, cfg)
	if err != nil {
		return Status{}, Stats{}, err
	}
	defer p.Close()
	st, err := p.Run()
	return st, p.Stats(), err
}

// New creates the VM and loads the program into it.
func New(sys *kvm.System, cfg Config) (*Process, error) {
	if cfg.MemorySize == 0 {
		cfg.MemorySize = 1 << 30
	}
	if cfg.OutputLimit == 0 {
		cfg.OutputLimit = DefaultOutputLimit
	}
	if len(cfg.Args) == 0 {
		cfg.Args = []string{cfg.Path}
	}
	m, err := vm.New(sys, vm.Config{MemorySize: cfg.MemorySize})
	if err != nil {
		return nil, err
	}
	p := &Process{cfg: cfg, sys: sys, m: m, cwd: "/", umask: 0o022, stopCh: make(chan struct{})}
	p.mm = newAddressSpace(m)
	p.output = &outputCap{limit: cfg.OutputLimit}
	p.fs, err = vfs.New(vfs.Options{Root: cfg.Root, WritableLimit: cfg.WritableLimit, Maps: p.mm.procMaps})
	if err != nil {
		m.Close()
		return nil, err
	}
	p.fds = newFDTable()
	p.stdout, p.stderr = &outFile{w: p.output.writer(cfg.Stdout)}, &outFile{w: p.output.writer(cfg.Stderr)}
	if cfg.Template {
		p.request = &requestFile{}
		p.fds.install(0, p.request, false)
		control := cfg.Control
		if control == nil {
			control = io.Discard
		}
		p.fds.install(controlFD, &outFile{w: control}, false)
	} else {
		p.fds.install(0, &stdinFile{r: cfg.Stdin}, false)
	}
	p.fds.install(1, p.stdout, false)
	p.fds.install(2, p.stderr, false)
	if err := p.load(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close releases the VM and its memory.
func (p *Process) Close() error {
	if p.fds != nil {
		p.fds.closeAll()
	}
	if p.fs != nil {
		p.fs.Close()
	}
	if p.closed {
		return nil
	}
	p.closed = true
	// p.m stays set: a timeout or Kill racing with Close finds a closed
	// machine, whose Stop does nothing.
	return p.m.Close()
}

// Stats returns the run's counters.
func (p *Process) Stats() Stats {
	s := p.stats
	if !p.closed {
		s.Exits = p.m.Exits
		s.PageTables = p.m.MMU.Tables
		s.QueuedPTEs = p.m.MMU.QueuedWrites
		s.Frames = p.m.Frames.Used
	}
	return s
}

// Run runs the program until it exits, faults, or exceeds a limit.
// An error means forkvm itself failed, not the program.
func (p *Process) Run() (Status, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p.start = time.Now()
	if p.cfg.Timeout > 0 {
		p.deadline = p.start.Add(p.cfg.Timeout)
		t := time.AfterFunc(p.cfg.Timeout, func() {
			p.timedOut.Store(true)
			p.stop()
		})
		defer t.Stop()
	}
	if p.paused {
		// Resume at the snapshot point: complete the pending read.
		p.paused = false
		p.syscall()
	}
	for !p.exited && !p.paused {
		exit, err := p.m.Run()
		if err != nil {
			if vm.IsStopped(err) {
				p.stopped()
				break
			}
			return Status{}, err
		}
		switch exit.Kind {
		case vm.ExitSyscall:
			p.stats.Syscalls++
			p.syscall()
		case vm.ExitFault:
			p.fault(exit)
		default:
			p.end(Status{Code: 70, Reason: "error", Message: "forkvm: guest failure: " + exit.Reason})
		}
		if !p.exited && p.output.exceeded() {
			p.end(Status{Code: 153, Reason: "output",
				Message: fmt.Sprintf("forkvm: output limit reached: the program wrote more than %s to stdout and stderr; stopped", sizeString(p.cfg.OutputLimit))})
		}
	}
	if p.paused && !p.exited {
		return Status{Reason: "snapshot"}, nil
	}
	return p.status, nil
}

// Machine returns the process's VM.
func (p *Process) Machine() *vm.Machine { return p.m }

// SetLimits sets the wall-clock and output limits of the next Run, and
// caps guest memory at memory bytes of frames (0: unchanged).
func (p *Process) SetLimits(timeout time.Duration, output int64, memory uint64) {
	p.cfg.Timeout = timeout
	if output > 0 {
		p.cfg.OutputLimit = output
		p.output.limit = output
	}
	if memory > 0 {
		p.m.Frames.Limit = min(p.m.Mem.Size(), p.m.Frames.Next+memory)
	}
}

// Kill stops the program from another goroutine; Run returns with a
// "killed" status.
func (p *Process) Kill() { p.stop() }

// stop interrupts the vCPU and any host-side sleep of the program.
func (p *Process) stop() {
	p.stopOnce.Do(func() { close(p.stopCh) })
	p.m.Stop()
}

// stopped records why Run was stopped from outside.
func (p *Process) stopped() {
	if p.timedOut.Load() {
		p.end(Status{Code: 124, Reason: "timeout", Message: fmt.Sprintf("forkvm: timed out after %v", p.cfg.Timeout)})
		return
	}
	p.end(Status{Code: 137, Reason: "killed", Message: "forkvm: stopped before the program finished"})
}

func (p *Process) end(s Status) {
	if !p.exited {
		p.exited = true
		p.status = s
	}
}

// fault ends the program for an exception, as Linux would with a signal.
func (p *Process) fault(e vm.Exit) {
	var sig int
	var what string
	switch e.Vector {
	case 0:
		sig, what = int(unix.SIGFPE), fmt.Sprintf("divide error at rip %#x", e.RIP)
	case 3:
		sig, what = int(unix.SIGTRAP), fmt.Sprintf("breakpoint (int3) at rip %#x", e.RIP-1)
	case 6:
		sig, what = int(unix.SIGILL), fmt.Sprintf("invalid opcode at rip %#x", e.RIP)
	case 13:
		sig, what = int(unix.SIGSEGV), fmt.Sprintf("general protection fault at rip %#x (privileged instruction or bad address)", e.RIP)
	case 14:
		sig, what = int(unix.SIGSEGV), fmt.Sprintf("page fault at %#x (rip %#x)%s", e.CR2, e.RIP, pageFaultDetail(e.ErrorCode, e.CR2))
	case 16, 19:
		sig, what = int(unix.SIGFPE), fmt.Sprintf("%s at rip %#x", vm.VectorName(e.Vector), e.RIP)
	default:
		sig, what = int(unix.SIGSEGV), fmt.Sprintf("%s (vector %d) at rip %#x", vm.VectorName(e.Vector), e.Vector, e.RIP)
	}
	p.end(Status{Code: 128 + sig, Reason: "fault", Message: "forkvm: guest fault: " + what})
}

func pageFaultDetail(code, addr uint64) string {
	access := "read"
	switch {
	case code&16 != 0:
		access = "instruction fetch"
	case code&2 != 0:
		access = "write"
	}
	switch {
	case addr >= vm.UserTop:
		return fmt.Sprintf(": %s of kernel memory", access)
	case code&1 != 0:
		return fmt.Sprintf(": %s not permitted by the page's protection", access)
	}
	return fmt.Sprintf(": %s of unmapped memory", access)
}

// outputCap counts bytes written to stdout and stderr together.
type outputCap struct {
	limit   int64
	written int64
	over    bool
}

func (o *outputCap) exceeded() bool { return o.over }

func (o *outputCap) writer(w io.Writer) io.Writer {
	if w == nil {
		w = io.Discard
	}
	return &cappedWriter{o: o, w: w}
}

type cappedWriter struct {
	o *outputCap
	w io.Writer
}

// Write passes p through while under the limit. Past it, the write is cut
// at the limit and the process is stopped by the run loop.
func (c *cappedWriter) Write(p []byte) (int, error) {
	o := c.o
	if o.over {
		return 0, unix.EFBIG
	}
	n := len(p)
	if room := o.limit - o.written; int64(n) > room {
		p = p[:room]
		o.over = true
	}
	o.written += int64(len(p))
	if _, err := c.w.Write(p); err != nil {
		return 0, unix.EIO
	}
	return n, nil
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// errno converts an error from a subsystem to the errno returned to the
// guest.
func errno(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, vm.ErrNoMemory) {
		return unix.ENOMEM
	}
	return unix.EIO
}
