package linux

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"forkvm/internal/vm"

	"golang.org/x/sys/unix"
)

var timeSince = time.Since

func sysZero(*Process, args) (uint64, error)   { return 0, nil }
func sysGetpid(*Process, args) (uint64, error) { return 1, nil }

func sysExit(p *Process, a args) (uint64, error) {
	p.end(Status{Code: int(a[0] & 0xff), Reason: "exit"})
	return 0, nil
}

func sysGetres(p *Process, a args) (uint64, error) {
	for _, va := range a[:3] {
		if err := p.writeU32(va, 0); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

func sysSetTidAddress(p *Process, a args) (uint64, error) {
	p.tidAddr = a[0]
	return 1, nil
}

const (
	archSetGS = 0x1001
	archSetFS = 0x1002
	archGetFS = 0x1003
	archGetGS = 0x1004
)

func sysArchPrctl(p *Process, a args) (uint64, error) {
	s := p.m.Sregs()
	switch a[0] {
	case archSetFS, archSetGS:
		if a[1] >= vm.UserTop {
			return 0, unix.EPERM
		}
		if a[0] == archSetFS {
			s.FS.Base = a[1]
		} else {
			s.GS.Base = a[1]
		}
		p.m.SregsChanged()
		return 0, nil
	case archGetFS:
		return 0, p.writeU64(a[1], s.FS.Base)
	case archGetGS:
		return 0, p.writeU64(a[1], s.GS.Base)
	}
	return 0, unix.EINVAL
}

func sysPrctl(p *Process, a args) (uint64, error) {
	switch a[0] {
	case unix.PR_SET_NAME, unix.PR_SET_DUMPABLE, unix.PR_SET_PDEATHSIG:
		return 0, nil
	case unix.PR_GET_DUMPABLE:
		return 1, nil
	case unix.PR_GET_NAME:
		name := make([]byte, 16)
		copy(name, "python3")
		return 0, p.copyOut(a[1], name)
	}
	return 0, unix.EINVAL
}

// Utsname values the guest sees.
const (
	unameSysname = "Linux"
	unameRelease = "6.1.0-forkvm"
	unameVersion = "#1 SMP PREEMPT_DYNAMIC forkvm"
	unameMachine = "x86_64"
)

func sysUname(p *Process, a args) (uint64, error) {
	var u [6 * 65]byte
	for i, s := range []string{unameSysname, "forkvm", unameRelease, unameVersion, unameMachine, "(none)"} {
		copy(u[i*65:], s)
	}
	return 0, p.copyOut(a[0], u[:])
}

// Signals: dispositions are recorded so that sigaction reports back what
// was set; no handler is ever run.
type signalState struct {
	actions [65][32]byte // struct kernel_sigaction per signal (handler, flags, restorer, mask)
	mask    uint64
	altstk  [24]byte
}

func sysRtSigaction(p *Process, a args) (uint64, error) {
	sig := int(a[0])
	if sig < 1 || sig > 64 || a[3] != 8 {
		return 0, unix.EINVAL
	}
	if a[2] != 0 {
		if err := p.copyOut(a[2], p.sigs.actions[sig][:]); err != nil {
			return 0, err
		}
	}
	if a[1] != 0 {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			return 0, unix.EINVAL
		}
		var act [32]byte
		if err := p.copyIn(a[1], act[:]); err != nil {
			return 0, err
		}
		p.sigs.actions[sig] = act
	}
	return 0, nil
}

func sysRtSigprocmask(p *Process, a args) (uint64, error) {
	if a[3] != 8 {
		return 0, unix.EINVAL
	}
	old := p.sigs.mask
	if a[1] != 0 {
		set, err := p.readU64(a[1])
		if err != nil {
			return 0, err
		}
		switch a[0] {
		case unix.SIG_BLOCK:
			p.sigs.mask |= set
		case unix.SIG_UNBLOCK:
			p.sigs.mask &^= set
		case unix.SIG_SETMASK:
			p.sigs.mask = set
		default:
			return 0, unix.EINVAL
		}
	}
	if a[2] != 0 {
		return 0, p.writeU64(a[2], old)
	}
	return 0, nil
}

func sysSigaltstack(p *Process, a args) (uint64, error) {
	if a[1] != 0 {
		if err := p.copyOut(a[1], p.sigs.altstk[:]); err != nil {
			return 0, err
		}
	}
	if a[0] != 0 {
		return 0, p.copyIn(a[0], p.sigs.altstk[:])
	}
	return 0, nil
}

// signal ends the process as an unhandled signal would, unless the
// program ignores it.
func (p *Process) signal(sig int) (uint64, error) {
	if sig == 0 {
		return 0, nil
	}
	if sig < 1 || sig > 64 {
		return 0, unix.EINVAL
	}
	handler := binary.LittleEndian.Uint64(p.sigs.actions[sig][:])
	if handler == 1 { // SIG_IGN
		return 0, nil
	}
	switch unix.Signal(sig) {
	case unix.SIGCHLD, unix.SIGURG, unix.SIGWINCH, unix.SIGCONT:
		return 0, nil // ignored by default
	}
	p.end(Status{Code: 128 + sig, Reason: "fault",
		Message: fmt.Sprintf("forkvm: program killed by %s", unix.SignalName(unix.Signal(sig)))})
	return 0, nil
}

func sysKill(p *Process, a args) (uint64, error) {
	pid := int64(a[0])
	if pid != 1 && pid != 0 && pid != -1 {
		return 0, unix.ESRCH
	}
	return p.signal(int(a[1]))
}

func sysTgkill(p *Process, a args) (uint64, error) {
	if a[0] != 1 || a[1] != 1 {
		return 0, unix.ESRCH
	}
	return p.signal(int(a[2]))
}

func sysTkill(p *Process, a args) (uint64, error) {
	if a[0] != 1 {
		return 0, unix.ESRCH
	}
	return p.signal(int(a[1]))
}

// Time.

func (p *Process) clock(id uint64) (time.Duration, error) {
	switch id {
	case unix.CLOCK_REALTIME, unix.CLOCK_REALTIME_COARSE, unix.CLOCK_TAI:
		return time.Duration(time.Now().UnixNano()), nil
	case unix.CLOCK_MONOTONIC, unix.CLOCK_MONOTONIC_COARSE, unix.CLOCK_MONOTONIC_RAW, unix.CLOCK_BOOTTIME:
		return monotonic(), nil
	case unix.CLOCK_PROCESS_CPUTIME_ID, unix.CLOCK_THREAD_CPUTIME_ID:
		return time.Since(p.start), nil
	}
	return 0, unix.EINVAL
}

var bootTime = time.Now()

// monotonic is the guest's CLOCK_MONOTONIC: host monotonic time since
// forkvm started, plus a day so that it is never small.
func monotonic() time.Duration { return time.Since(bootTime) + 24*time.Hour }

func (p *Process) writeTimespec(va uint64, d time.Duration) error {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], uint64(d/time.Second))
	binary.LittleEndian.PutUint64(b[8:], uint64(d%time.Second))
	return p.copyOut(va, b[:])
}

func (p *Process) readTimespec(va uint64) (time.Duration, error) {
	var b [16]byte
	if err := p.copyIn(va, b[:]); err != nil {
		return 0, err
	}
	sec, nsec := int64(binary.LittleEndian.Uint64(b[:])), int64(binary.LittleEndian.Uint64(b[8:]))
	if sec < 0 || nsec < 0 || nsec >= 1e9 {
		return 0, unix.EINVAL
	}
	if sec > 1<<32 {
		sec = 1 << 32
	}
	return time.Duration(sec)*time.Second + time.Duration(nsec), nil
}

func sysClockGettime(p *Process, a args) (uint64, error) {
	d, err := p.clock(a[0])
	if err != nil {
		return 0, err
	}
	return 0, p.writeTimespec(a[1], d)
}

func sysClockGetres(p *Process, a args) (uint64, error) {
	if _, err := p.clock(a[0]); err != nil {
		return 0, err
	}
	if a[1] == 0 {
		return 0, nil
	}
	return 0, p.writeTimespec(a[1], time.Nanosecond)
}

func sysGettimeofday(p *Process, a args) (uint64, error) {
	if a[0] != 0 {
		now := time.Now()
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:], uint64(now.Unix()))
		binary.LittleEndian.PutUint64(b[8:], uint64(now.Nanosecond()/1000))
		if err := p.copyOut(a[0], b[:]); err != nil {
			return 0, err
		}
	}
	if a[1] != 0 {
		return 0, p.copyOut(a[1], make([]byte, 8))
	}
	return 0, nil
}

func sysTime(p *Process, a args) (uint64, error) {
	t := uint64(time.Now().Unix())
	if a[0] != 0 {
		if err := p.writeU64(a[0], t); err != nil {
			return 0, err
		}
	}
	return t, nil
}

// sleep waits for d on the host, or until the sandbox is stopped.
func (p *Process) sleep(d time.Duration) {
	if !p.deadline.IsZero() {
		if left := time.Until(p.deadline); d > left {
			d = left + time.Millisecond
		}
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-p.stopCh: // killed or timed out: Run stops on re-entry
		}
	}
}

func sysNanosleep(p *Process, a args) (uint64, error) {
	d, err := p.readTimespec(a[0])
	if err != nil {
		return 0, err
	}
	p.sleep(d)
	return 0, nil
}

func sysClockNanosleep(p *Process, a args) (uint64, error) {
	d, err := p.readTimespec(a[2])
	if err != nil {
		return 0, err
	}
	if a[1]&unix.TIMER_ABSTIME != 0 {
		now, err := p.clock(a[0])
		if err != nil {
			return 0, err
		}
		d -= now
	} else if _, err := p.clock(a[0]); err != nil {
		return 0, err
	}
	p.sleep(d)
	return 0, nil
}

func sysTimes(p *Process, a args) (uint64, error) {
	ticks := uint64(time.Since(p.start) / (10 * time.Millisecond))
	if a[0] != 0 {
		var b [32]byte
		binary.LittleEndian.PutUint64(b[:], ticks)
		if err := p.copyOut(a[0], b[:]); err != nil {
			return 0, err
		}
	}
	return uint64(monotonic() / (10 * time.Millisecond)), nil
}

func sysGetrusage(p *Process, a args) (uint64, error) {
	var b [144]byte
	el := time.Since(p.start)
	binary.LittleEndian.PutUint64(b[0:], uint64(el/time.Second))
	binary.LittleEndian.PutUint64(b[8:], uint64(el%time.Second/time.Microsecond))
	binary.LittleEndian.PutUint64(b[32:], p.m.Frames.Used*4) // ru_maxrss in KiB
	return 0, p.copyOut(a[1], b[:])
}

// Randomness, limits, system information.

func sysGetrandom(p *Process, a args) (uint64, error) {
	n := a[1]
	if n > 1<<25 {
		n = 1 << 25
	}
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		return 0, unix.EIO
	}
	return n, p.copyOut(a[0], buf)
}

const rlimInfinity = ^uint64(0)

func (p *Process) rlimit(res uint64) (uint64, uint64, error) {
	switch res {
	case unix.RLIMIT_STACK:
		return stackSize, rlimInfinity, nil
	case unix.RLIMIT_NOFILE:
		return maxFDs, maxFDs, nil
	case unix.RLIMIT_AS, unix.RLIMIT_DATA:
		return p.m.Mem.Size(), p.m.Mem.Size(), nil
	case unix.RLIMIT_CORE:
		return 0, 0, nil
	}
	if res >= 16 {
		return 0, 0, unix.EINVAL
	}
	return rlimInfinity, rlimInfinity, nil
}

func sysPrlimit(p *Process, a args) (uint64, error) {
	if a[0] != 0 && a[0] != 1 {
		return 0, unix.ESRCH
	}
	cur, max, err := p.rlimit(a[1])
	if err != nil {
		return 0, err
	}
	if a[3] != 0 {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:], cur)
		binary.LittleEndian.PutUint64(b[8:], max)
		return 0, p.copyOut(a[3], b[:])
	}
	return 0, nil
}

func sysGetrlimit(p *Process, a args) (uint64, error) {
	return sysPrlimit(p, args{0, a[0], 0, a[1]})
}

func sysSysinfo(p *Process, a args) (uint64, error) {
	var b [112]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(monotonic()/time.Second))
	binary.LittleEndian.PutUint64(b[32:], p.m.Mem.Size())
	binary.LittleEndian.PutUint64(b[40:], p.m.Frames.Available()*vm.PageSize)
	binary.LittleEndian.PutUint16(b[80:], 1)  // procs
	binary.LittleEndian.PutUint32(b[104:], 1) // mem_unit
	return 0, p.copyOut(a[0], b[:])
}

func sysSchedGetaffinity(p *Process, a args) (uint64, error) {
	if a[1] < 8 {
		return 0, unix.EINVAL
	}
	b := make([]byte, 8)
	b[0] = 1
	return 8, p.copyOut(a[2], b)
}

func sysGetcpu(p *Process, a args) (uint64, error) {
	for _, va := range a[:2] {
		if va != 0 {
			if err := p.writeU32(va, 0); err != nil {
				return 0, err
			}
		}
	}
	return 0, nil
}

// Futexes with one thread: nothing can wake a waiter.

// futex operations (<linux/futex.h>).
const (
	futexWait          = 0
	futexWake          = 1
	futexRequeue       = 3
	futexCmpRequeue    = 4
	futexWakeOp        = 5
	futexWaitBitset    = 9
	futexWakeBitset    = 10
	futexPrivateFlag   = 128
	futexClockRealtime = 256
)

func sysFutex(p *Process, a args) (uint64, error) {
	op := a[1] &^ (futexPrivateFlag | futexClockRealtime)
	switch op {
	case futexWake, futexWakeBitset, futexWakeOp, futexRequeue, futexCmpRequeue:
		return 0, nil
	case futexWait, futexWaitBitset:
		var b [4]byte
		if err := p.copyIn(a[0], b[:]); err != nil {
			return 0, err
		}
		if binary.LittleEndian.Uint32(b[:]) != uint32(a[2]) {
			return 0, unix.EAGAIN
		}
		if a[3] == 0 {
			p.end(Status{Code: 134, Reason: "error",
				Message: fmt.Sprintf("forkvm: deadlock: the program waits on futex %#x, which no thread can wake (sandboxes have one thread)", a[0])})
			return 0, nil
		}
		d, err := p.readTimespec(a[3])
		if err != nil {
			return 0, err
		}
		if op == futexWaitBitset { // absolute timeout
			now, _ := p.clock(unix.CLOCK_MONOTONIC)
			if a[1]&futexClockRealtime != 0 {
				now, _ = p.clock(unix.CLOCK_REALTIME)
			}
			d -= now
		}
		p.sleep(d)
		return 0, unix.ETIMEDOUT
	}
	return 0, unix.ENOSYS
}
