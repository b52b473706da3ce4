package linux

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Support is how completely forkvm implements a system call.
type Support int

// Support levels, as in gVisor's syscall tables.
const (
	Unimplemented Support = iota // returns ENOSYS and is counted
	Supported                    // implemented as Linux documents it
	Partial                      // implemented with the limits in the note
	ErrorOnly                    // always fails with a fixed error, by design
)

func (s Support) String() string {
	switch s {
	case Supported:
		return "supported"
	case Partial:
		return "partial"
	case ErrorOnly:
		return "error"
	}
	return "unimplemented"
}

// args are a system call's six arguments (rdi, rsi, rdx, r10, r8, r9).
type args [6]uint64

// handler implements a system call. Its error is a unix.Errno.
type handler func(p *Process, a args) (uint64, error)

// Syscall describes one system call: its handler and how well it is
// supported. The table is the compatibility documentation.
type Syscall struct {
	Name   string
	Fn     handler
	Status Support
	Note   string
}

func supported(name string, fn handler) Syscall {
	return Syscall{Name: name, Fn: fn, Status: Supported}
}

func partial(name string, fn handler, note string) Syscall {
	return Syscall{Name: name, Fn: fn, Status: Partial, Note: note}
}

func fails(name string, e unix.Errno, note string) Syscall {
	return Syscall{Name: name, Status: ErrorOnly, Note: note,
		Fn: func(*Process, args) (uint64, error) { return 0, e }}
}

// Table returns the system call table: every x86-64 system call number
// with its entry (unimplemented ones included), sorted by number.
func Table() []TableEntry {
	var out []TableEntry
	for nr, name := range syscallNames {
		e := TableEntry{Number: int(nr), Syscall: Syscall{Name: name, Status: Unimplemented}}
		if s, ok := syscalls[nr]; ok {
			e.Syscall = s
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

// TableEntry is a numbered row of Table.
type TableEntry struct {
	Number int
	Syscall
}

// syscall handles the system call the program just made.
func (p *Process) syscall() {
	r := p.m.Regs()
	nr := r.RAX
	defer func() {
		// A bug in a handler must end this sandbox, not the service.
		if v := recover(); v != nil {
			p.end(Status{Code: 70, Reason: "error",
				Message: fmt.Sprintf("forkvm: internal error in system call %d (%s): %v", nr, syscallNames[uintptr(nr)], v)})
		}
	}()
	a := args{r.RDI, r.RSI, r.RDX, r.R10, r.R8, r.R9}
	s, ok := syscalls[uintptr(nr)]
	var ret uint64
	var err error
	if ok {
		ret, err = s.Fn(p, a)
	} else {
		err = unix.ENOSYS
		name := syscallNames[uintptr(nr)]
		if name == "" {
			name = fmt.Sprintf("syscall_%d", nr)
		}
		if p.stats.Unsupported == nil {
			p.stats.Unsupported = map[string]int{}
		}
		p.stats.Unsupported[name]++
		s.Name = name
	}
	if err == errSnapshotPoint {
		p.paused = true // leave the call pending; a fork completes it
		return
	}
	if err != nil {
		ret = uint64(-int64(errno(err)))
	}
	if p.cfg.Trace != nil {
		p.trace(nr, s, a, ret, err, ok)
	}
	if !p.exited {
		p.m.ReturnFromSyscall(ret)
	}
}

func (p *Process) trace(nr uint64, s Syscall, a args, ret uint64, err error, known bool) {
	var b strings.Builder
	fmt.Fprintf(&b, "[forkvm %9.3fms] %s(", float64(timeSince(p.start).Microseconds())/1000, s.Name)
	for i, v := range a {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%#x", v)
	}
	b.WriteString(")")
	switch {
	case p.exited:
		b.WriteString(" = ?")
	case err != nil:
		e := errno(err)
		fmt.Fprintf(&b, " = -%d %s (%s)", int(e), unix.ErrnoName(e), e.Error())
		if !known {
			b.WriteString(" [not implemented]")
		}
	default:
		fmt.Fprintf(&b, " = %#x", ret)
	}
	b.WriteByte('\n')
	fmt.Fprint(p.cfg.Trace, b.String())
}

// syscalls is the table of implemented (and deliberately failing) calls.
var syscalls map[uintptr]Syscall

func init() {
	syscalls = map[uintptr]Syscall{
		// Process lifetime and identity.
		unix.SYS_EXIT:            partial("exit", sysExit, "Ends the process (there is one thread)."),
		unix.SYS_EXIT_GROUP:      supported("exit_group", sysExit),
		unix.SYS_GETPID:          partial("getpid", sysGetpid, "Always 1."),
		unix.SYS_GETTID:          partial("gettid", sysGetpid, "Always 1."),
		unix.SYS_GETPPID:         partial("getppid", sysZero, "Always 0."),
		unix.SYS_GETUID:          partial("getuid", sysZero, "Always 0 (root inside the sandbox)."),
		unix.SYS_GETEUID:         partial("geteuid", sysZero, "Always 0."),
		unix.SYS_GETGID:          partial("getgid", sysZero, "Always 0."),
		unix.SYS_GETEGID:         partial("getegid", sysZero, "Always 0."),
		unix.SYS_GETPGRP:         partial("getpgrp", sysGetpid, "Always 1."),
		unix.SYS_GETPGID:         partial("getpgid", sysGetpid, "Always 1."),
		unix.SYS_GETSID:          partial("getsid", sysGetpid, "Always 1."),
		unix.SYS_SETSID:          partial("setsid", sysGetpid, "No effect; returns 1."),
		unix.SYS_GETGROUPS:       partial("getgroups", sysZero, "No supplementary groups."),
		unix.SYS_GETRESUID:       partial("getresuid", sysGetres, "All 0."),
		unix.SYS_GETRESGID:       partial("getresgid", sysGetres, "All 0."),
		unix.SYS_SET_TID_ADDRESS: partial("set_tid_address", sysSetTidAddress, "Recorded; returns the thread id 1."),
		unix.SYS_SET_ROBUST_LIST: partial("set_robust_list", sysZero, "Accepted and ignored (one thread)."),
		unix.SYS_RSEQ:            fails("rseq", unix.ENOSYS, "Restartable sequences are not provided; glibc copes."),
		unix.SYS_ARCH_PRCTL:      partial("arch_prctl", sysArchPrctl, "ARCH_SET_FS, ARCH_GET_FS, ARCH_SET_GS, ARCH_GET_GS; ARCH_CET_STATUS and others return EINVAL."),
		unix.SYS_PRCTL:           partial("prctl", sysPrctl, "PR_SET_NAME, PR_GET_NAME, PR_SET_DUMPABLE, PR_GET_DUMPABLE, PR_SET_PDEATHSIG are accepted; others return EINVAL."),
		unix.SYS_UNAME:           supported("uname", sysUname),
		unix.SYS_CLONE:           fails("clone", unix.EAGAIN, "Threads and child processes are not supported yet: EAGAIN (shown with --trace)."),
		unix.SYS_CLONE3:          fails("clone3", unix.ENOSYS, "glibc falls back to clone, which returns EAGAIN."),
		unix.SYS_FORK:            fails("fork", unix.EAGAIN, "Child processes are not supported yet."),
		unix.SYS_VFORK:           fails("vfork", unix.EAGAIN, "Child processes are not supported yet."),
		unix.SYS_EXECVE:          fails("execve", unix.EACCES, "Running another program is not supported yet."),
		unix.SYS_WAIT4:           fails("wait4", unix.ECHILD, "There are never children."),
		unix.SYS_KILL:            partial("kill", sysKill, "Only the process itself (pid 1, 0 or -1): a signal without a handler ends it as Linux's default action would; handled signals are not delivered."),
		unix.SYS_TGKILL:          partial("tgkill", sysTgkill, "As kill, for the one thread."),
		unix.SYS_TKILL:           partial("tkill", sysTkill, "As kill, for the one thread."),

		// Memory.
		unix.SYS_BRK:      supported("brk", sysBrk),
		unix.SYS_MMAP:     partial("mmap", sysMmap, "Anonymous and private file mappings. MAP_SHARED file mappings are private copies (writes do not reach the file). Pages are allocated when mapped; the memory limit applies to them."),
		unix.SYS_MUNMAP:   supported("munmap", sysMunmap),
		unix.SYS_MPROTECT: supported("mprotect", sysMprotect),
		unix.SYS_MREMAP:   partial("mremap", sysMremap, "MREMAP_MAYMOVE and MREMAP_FIXED; MREMAP_DONTUNMAP returns EINVAL."),
		unix.SYS_MADVISE:  partial("madvise", sysMadvise, "MADV_DONTNEED zeroes anonymous pages and restores file pages; other advice is accepted and ignored."),
		unix.SYS_MSYNC:    partial("msync", sysZero, "No effect: there are no shared file mappings."),
		unix.SYS_MLOCK:    partial("mlock", sysZero, "No effect: guest memory is never swapped by the guest."),
		unix.SYS_MUNLOCK:  partial("munlock", sysZero, "No effect."),
		unix.SYS_MINCORE:  partial("mincore", sysMincore, "Every mapped page is reported resident."),

		// Time.
		unix.SYS_CLOCK_GETTIME:   partial("clock_gettime", sysClockGettime, "REALTIME, MONOTONIC, BOOTTIME and their COARSE/RAW variants from the host; process and thread CPU clocks report wall time since start."),
		unix.SYS_CLOCK_GETRES:    supported("clock_getres", sysClockGetres),
		unix.SYS_GETTIMEOFDAY:    supported("gettimeofday", sysGettimeofday),
		unix.SYS_TIME:            supported("time", sysTime),
		unix.SYS_NANOSLEEP:       partial("nanosleep", sysNanosleep, "Sleeps on the host, cut short by the sandbox's timeout."),
		unix.SYS_CLOCK_NANOSLEEP: partial("clock_nanosleep", sysClockNanosleep, "Relative and TIMER_ABSTIME sleeps; cut short by the sandbox's timeout."),
		unix.SYS_TIMES:           partial("times", sysTimes, "User time is wall time since start; system time is 0."),
		unix.SYS_GETRUSAGE:       partial("getrusage", sysGetrusage, "ru_utime is wall time since start; ru_maxrss is the guest memory in use; other fields are 0."),

		// Randomness, limits, system information.
		unix.SYS_GETRANDOM:         supported("getrandom", sysGetrandom),
		unix.SYS_PRLIMIT64:         partial("prlimit64", sysPrlimit, "Reports the sandbox's limits (stack 8 MiB, 1024 files, address space = guest memory); new limits are accepted and ignored."),
		unix.SYS_GETRLIMIT:         partial("getrlimit", sysGetrlimit, "As prlimit64."),
		unix.SYS_SETRLIMIT:         partial("setrlimit", sysZero, "Accepted and ignored."),
		unix.SYS_SYSINFO:           partial("sysinfo", sysSysinfo, "Memory figures are the guest's; one process; loads are 0."),
		unix.SYS_SCHED_GETAFFINITY: partial("sched_getaffinity", sysSchedGetaffinity, "One CPU."),
		unix.SYS_SCHED_SETAFFINITY: partial("sched_setaffinity", sysZero, "Accepted and ignored."),
		unix.SYS_SCHED_YIELD:       supported("sched_yield", sysZero),
		unix.SYS_GETCPU:            partial("getcpu", sysGetcpu, "CPU 0, node 0."),

		// Signals.
		unix.SYS_RT_SIGACTION:   partial("rt_sigaction", sysRtSigaction, "Dispositions are recorded and reported back; handlers are never called (faults end the sandbox)."),
		unix.SYS_RT_SIGPROCMASK: partial("rt_sigprocmask", sysRtSigprocmask, "The mask is recorded; no signal is ever pending."),
		unix.SYS_SIGALTSTACK:    partial("sigaltstack", sysSigaltstack, "Recorded and reported back; never used."),
		unix.SYS_RT_SIGRETURN:   fails("rt_sigreturn", unix.ENOSYS, "Handlers are never called, so there is nothing to return from."),

		// Synchronisation.
		unix.SYS_FUTEX: partial("futex", sysFutex, "Single-thread semantics: WAKE returns 0; WAIT returns EAGAIN if the value differs, ETIMEDOUT after a timeout, and ends the sandbox with an error when nothing could ever wake it."),
	}
	for nr, s := range fileSyscalls() {
		syscalls[nr] = s
	}
}
