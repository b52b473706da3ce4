package linux

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"forkvm/internal/kvm"
	"forkvm/internal/vfs"
	"forkvm/internal/vm"

	"golang.org/x/sys/unix"
)

// A template process stops at its snapshot point: its first read of the
// request channel (fd 0) while no request is there. A fork resumes it
// there with a request in the channel.

// errSnapshotPoint is returned by the request channel's Read when the
// program waits for a request.
var errSnapshotPoint = errors.New("snapshot point")

// requestFile is fd 0 of a sandbox: it delivers one request.
type requestFile struct {
	data      []byte
	delivered bool
}

func (f *requestFile) Read(p []byte) (int, error) {
	if !f.delivered {
		return 0, errSnapshotPoint
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}
func (f *requestFile) Write([]byte) (int, error) { return 0, unix.EBADF }
func (f *requestFile) Close() error              { return nil }
func (f *requestFile) Stat() (vfs.Stat, error)   { return charDevStat(0), nil }
func (f *requestFile) Readable() bool            { return true }
func (f *requestFile) Writable() bool            { return false }

// controlFD is the descriptor on which a sandbox's agent reports its
// completion frame.
const controlFD = 3

// State is a process's kernel-side state at its snapshot point, in a form
// that can be stored. Guest memory and the vCPU are saved by package vm.
type State struct {
	Version  int
	Path     string
	Root     string
	Cwd      string
	Umask    uint32
	ExePath  string
	TidAddr  uint64
	BrkStart uint64
	Brk      uint64
	VMAs     []VMAState
	FDs      []FDState
	SigMask  uint64
	SigActs  map[int][]byte
	AltStack []byte
	Syscalls uint64
}

// VMAState is one mapping.
type VMAState struct {
	Start, End, Offset, Dev, Ino uint64
	Prot                         int
	Shared                       bool
	Name                         string
}

// FDState is one descriptor. Kind is "request", "stdout", "stderr",
// "control" or "file"; files are reopened by path at Offset.
type FDState struct {
	FD      int
	Kind    string
	Path    string
	Flags   int
	Offset  int64
	Cloexec bool
}

// StateVersion is the version of State's layout.
const StateVersion = 1

// Snapshot returns the process's state at its snapshot point. The VM's
// memory and vCPU are saved separately (vm.Machine.SaveCPU and
// SaveMemoryState).
func (p *Process) Snapshot() (*State, error) {
	if !p.paused {
		return nil, errors.New("process is not at its snapshot point")
	}
	if used := p.fs.WritableUsed(); used != 0 {
		return nil, fmt.Errorf("the template wrote %d bytes of files; templates must not write files before their first request", used)
	}
	s := &State{Version: StateVersion, Path: p.cfg.Path, Root: p.cfg.Root, Cwd: p.cwd, Umask: p.umask,
		ExePath: p.exePath, TidAddr: p.tidAddr, BrkStart: p.mm.brkStart, Brk: p.mm.brk,
		SigMask: p.sigs.mask, AltStack: append([]byte(nil), p.sigs.altstk[:]...), SigActs: map[int][]byte{},
		Syscalls: p.stats.Syscalls}
	for sig, a := range p.sigs.actions {
		if a != ([32]byte{}) {
			s.SigActs[sig] = append([]byte(nil), a[:]...)
		}
	}
	for _, v := range p.mm.vmas {
		s.VMAs = append(s.VMAs, VMAState{v.start, v.end, v.offset, v.dev, v.ino, v.prot, v.shared, v.name})
	}
	for fd, e := range p.fds.fds {
		if e == nil {
			continue
		}
		st := FDState{FD: fd, Cloexec: e.cloexec}
		switch f := e.f.(type) {
		case *requestFile:
			st.Kind = "request"
		case *outFile:
			switch f {
			case p.stdout:
				st.Kind = "stdout"
			case p.stderr:
				st.Kind = "stderr"
			default:
				st.Kind = "control"
			}
		case *vfsFile:
			off, err := f.Seek(0, io.SeekCurrent)
			if err != nil {
				off = 0
			}
			st.Kind, st.Path, st.Flags, st.Offset = "file", f.Path(), f.Flags(), off
		default:
			return nil, fmt.Errorf("descriptor %d (%T) cannot be saved in a template", fd, e.f)
		}
		if *e.refs > 1 {
			return nil, fmt.Errorf("descriptor %d is shared (dup) and cannot be saved in a template", fd)
		}
		s.FDs = append(s.FDs, st)
	}
	return s, nil
}

// SaveMachine returns the VM state of a process at its snapshot point.
func (p *Process) SaveMachine() (*vm.CPUState, vm.MemoryState, error) {
	cpu, err := p.m.SaveCPU()
	if err != nil {
		return nil, vm.MemoryState{}, err
	}
	ms, err := p.m.SaveMemoryState()
	return cpu, ms, err
}

// Memory returns the guest memory of the process (for writing a template).
func (p *Process) Memory() []byte { return p.m.Mem.Data }

// Paused reports whether Run stopped at the snapshot point.
func (p *Process) Paused() bool { return p.paused }

// IO is where a restored process's output goes.
type IO struct {
	Stdout, Stderr, Control io.Writer
	OutputLimit             int64
	Timeout                 time.Duration
	WritableLimit           int64
	Trace                   io.Writer
}

// Restore rebuilds a process from its state on machine m (a fork of the
// template's memory and vCPU), with its request channel empty.
func Restore(sys *kvm.System, m *vm.Machine, s *State, o IO) (*Process, error) {
	if s.Version != StateVersion {
		return nil, fmt.Errorf("process state version %d, want %d", s.Version, StateVersion)
	}
	cfg := Config{Path: s.Path, Root: s.Root, Timeout: o.Timeout, OutputLimit: o.OutputLimit,
		WritableLimit: o.WritableLimit, Trace: o.Trace, MemorySize: m.Mem.Size()}
	if cfg.OutputLimit == 0 {
		cfg.OutputLimit = DefaultOutputLimit
	}
	p := &Process{cfg: cfg, sys: sys, m: m, cwd: s.Cwd, umask: s.Umask, exePath: s.ExePath,
		tidAddr: s.TidAddr, paused: true, stopCh: make(chan struct{})}
	p.mm = newAddressSpace(m)
	p.mm.brkStart, p.mm.brk = s.BrkStart, s.Brk
	for _, v := range s.VMAs {
		p.mm.vmas = append(p.mm.vmas, &vma{start: v.Start, end: v.End, offset: v.Offset, dev: v.Dev, ino: v.Ino, prot: v.Prot, shared: v.Shared, name: v.Name})
	}
	p.sigs.mask = s.SigMask
	copy(p.sigs.altstk[:], s.AltStack)
	for sig, a := range s.SigActs {
		if sig > 0 && sig < len(p.sigs.actions) {
			copy(p.sigs.actions[sig][:], a)
		}
	}
	p.stats.Syscalls = s.Syscalls
	p.output = &outputCap{limit: cfg.OutputLimit}
	var err error
	p.fs, err = vfs.New(vfs.Options{Root: s.Root, WritableLimit: o.WritableLimit, Maps: p.mm.procMaps, ExePath: s.ExePath})
	if err != nil {
		return nil, err
	}
	p.fds = newFDTable()
	p.stdout = &outFile{w: p.output.writer(o.Stdout)}
	p.stderr = &outFile{w: p.output.writer(o.Stderr)}
	for _, fd := range s.FDs {
		var f file
		switch fd.Kind {
		case "request":
			p.request = &requestFile{}
			f = p.request
		case "stdout":
			f = p.stdout
		case "stderr":
			f = p.stderr
		case "control":
			w := o.Control
			if w == nil {
				w = io.Discard
			}
			f = &outFile{w: w}
		case "file":
			vf, err := p.fs.Open("/", fd.Path, fd.Flags&^(unix.O_CREAT|unix.O_TRUNC|unix.O_EXCL), 0)
			if err != nil {
				p.fds.closeAll()
				p.fs.Close()
				return nil, fmt.Errorf("reopen %s: %w", fd.Path, err)
			}
			vf.Seek(fd.Offset, io.SeekStart)
			f = &vfsFile{File: vf}
		default:
			p.fds.closeAll()
			p.fs.Close()
			return nil, fmt.Errorf("descriptor %d: unknown kind %q", fd.FD, fd.Kind)
		}
		p.fds.install(fd.FD, f, fd.Cloexec)
	}
	if p.request == nil {
		p.fds.closeAll()
		p.fs.Close()
		return nil, errors.New("template has no request channel on fd 0")
	}
	return p, nil
}

// Deliver puts a request in the channel; the next Run completes the read
// the program is blocked in.
func (p *Process) Deliver(parts ...[]byte) {
	p.request.data = bytes.Join(parts, nil)
	p.request.delivered = true
}

// ClearAccessed clears the accessed and dirty bits of every page of the
// program, so that AccessedPages can tell afterwards which pages the guest
// touched. Call it on a fork before its first run (the host may then write
// page tables directly).
func (p *Process) ClearAccessed() error {
	for _, v := range p.mm.vmas {
		for a := v.start; a < v.end; a += vm.PageSize {
			e := p.m.MMU.Lookup(a)
			if e&vm.PTEPresent != 0 {
				if err := p.m.MMU.Set(a, e&^(vm.PTEAccessed|vm.PTEDirty)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// AccessedPages returns the user pages whose accessed bit is set, for
// vm.Machine.Touch; those whose frame is in written (guest physical pages
// known to have been written, e.g. from vm.Machine.TouchedPages) carry
// vm.TouchWriteFlag. The CPU (or KVM, walking the guest's tables) sets the
// accessed bit on the guest's first access. The dirty bit is no guide to
// writes here: KVM may set it when it maps a writable page for a read.
func (p *Process) AccessedPages(written []uint64) []uint64 {
	w := make(map[uint64]bool, len(written))
	for _, pa := range written {
		w[pa] = true
	}
	var out []uint64
	for _, v := range p.mm.vmas {
		for a := v.start; a < v.end; a += vm.PageSize {
			e := p.m.MMU.Lookup(a)
			if e&(vm.PTEPresent|vm.PTEUser|vm.PTEAccessed) != vm.PTEPresent|vm.PTEUser|vm.PTEAccessed {
				continue
			}
			if e&vm.PTEWrite != 0 {
				if !w[e&vm.PTEAddrMask] {
					// Reading a writable page through the pass makes
					// KVM map it writable, which copies it: leave such
					// pages to the exec.
					continue
				}
				a |= vm.TouchWriteFlag
			}
			out = append(out, a)
		}
	}
	return out
}
