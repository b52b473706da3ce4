package vm

import (
	"fmt"

	"forkvm/internal/kvm"

	"golang.org/x/sys/unix"
)

// CPUState is the vCPU state a snapshot keeps: general and special
// registers, the XSAVE area (x87, SSE, AVX, AVX-512 state) and XCR0. The
// MSRs forkvm sets (STAR, LSTAR, CSTAR, SFMASK) are constants and are set
// again on restore, as are CPUID and the FPU defaults.
type CPUState struct {
	Regs  kvm.Regs
	Sregs kvm.Sregs
	XCRs  kvm.XCRs
	XSAVE []byte
}

// SaveCPU captures the vCPU state. Call it between runs (after Run
// returned), on the thread that runs the vCPU.
func (m *Machine) SaveCPU() (*CPUState, error) {
	s := &CPUState{Regs: m.run.S.Regs, Sregs: m.run.S.Sregs, XSAVE: make([]byte, m.sys.XSAVESize)}
	if err := m.vcpu.GetXCRs(&s.XCRs); err != nil {
		return nil, err
	}
	if err := m.vcpu.GetXSAVE(s.XSAVE); err != nil {
		return nil, err
	}
	return s, nil
}

// MemoryState is the allocator and page-table bookkeeping a snapshot keeps
// beside guest memory itself.
type MemoryState struct {
	Size       uint64
	FramesNext uint64
	FramesFree []uint64
	FramesUsed uint64
	Tables     uint64
}

// SaveMemoryState captures the allocator state. The page tables live in
// guest memory; no writes may be queued.
func (m *Machine) SaveMemoryState() (MemoryState, error) {
	if m.MMU.Pending() != 0 {
		return MemoryState{}, fmt.Errorf("vm: snapshot with %d queued page-table writes", m.MMU.Pending())
	}
	return MemoryState{
		Size: m.Mem.Size(), FramesNext: m.Frames.Next, FramesUsed: m.Frames.Used,
		FramesFree: append([]uint64(nil), m.Frames.Free...), Tables: m.MMU.Tables,
	}, nil
}

// Shell is a VM and vCPU created ahead of a fork, with CPUID and the
// constant MSRs set but no memory yet. Creating it is most of the cost of a
// fork, so pools prepare shells off the request path.
type Shell struct {
	m *Machine
}

// NewShell creates a VM shell.
func NewShell(sys *kvm.System) (*Shell, error) {
	v, err := sys.CreateVM()
	if err != nil {
		return nil, err
	}
	m := &Machine{sys: sys, vm: v}
	c, err := v.CreateVCPU(0)
	if err != nil {
		v.Close()
		return nil, err
	}
	m.vcpu, m.run = c, c.Run
	if err := m.initCPU(sys); err != nil {
		m.Close()
		return nil, err
	}
	return &Shell{m: m}, nil
}

// Close destroys an unused shell.
func (s *Shell) Close() error { return s.m.Close() }

// Fork turns a shell into a running copy of a snapshot: guest memory is a
// copy-on-write (MAP_PRIVATE) mapping of memfd, and the vCPU resumes from
// cpu. The shell is consumed.
func (s *Shell) Fork(memfd int, ms MemoryState, cpu *CPUState) (*Machine, error) {
	m := s.m
	mem, err := MapPrivate(memfd, ms.Size)
	if err != nil {
		m.Close()
		return nil, err
	}
	mem.CleanFrom = ms.FramesNext
	m.Mem = mem
	if err := m.attachMemory(mem); err != nil {
		m.Close()
		return nil, err
	}
	m.Frames = &Frames{Next: ms.FramesNext, Limit: ms.Size, Free: append([]uint64(nil), ms.FramesFree...), Used: ms.FramesUsed, mem: mem}
	m.MMU = NewMMU(mem, m.Frames)
	m.MMU.Tables = ms.Tables
	if err := m.restoreCPU(cpu); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Machine) restoreCPU(cpu *CPUState) error {
	sregs, regs, xcrs := cpu.Sregs, cpu.Regs, cpu.XCRs
	if err := m.vcpu.SetSregs(&sregs); err != nil {
		return err
	}
	if err := m.vcpu.SetRegs(&regs); err != nil {
		return err
	}
	if err := m.vcpu.SetXCRs(&xcrs); err != nil {
		return err
	}
	if err := m.vcpu.SetXSAVE(cpu.XSAVE); err != nil {
		return err
	}
	// The first Run reads registers from the sync area: fill it.
	m.run.S.Regs, m.run.S.Sregs = regs, sregs
	m.run.KVMDirtyRegs = kvm.SyncX86Regs | kvm.SyncX86Sregs
	return nil
}

// PrivateBytes reports how much of guest memory this machine has made
// private (copied on write, or newly allocated), from /proc/self/pagemap:
// present pages of the mapping that are anonymous rather than file pages.
func (m *Machine) PrivateBytes() (int64, error) {
	limit := m.Frames.Next
	fd, err := unix.Open("/proc/self/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	base := uint64(uintptrOf(m.Mem.Data))
	buf := make([]byte, 8*4096)
	var n int64
	for pa := uint64(0); pa < limit; {
		pages := min((limit-pa)/PageSize, 4096)
		b := buf[:8*pages]
		if _, err := unix.Pread(fd, b, int64((base+pa)/PageSize*8)); err != nil {
			return 0, err
		}
		for i := uint64(0); i < pages; i++ {
			e := uint64(b[8*i]) | uint64(b[8*i+1])<<8 | uint64(b[8*i+2])<<16 | uint64(b[8*i+3])<<24 |
				uint64(b[8*i+4])<<32 | uint64(b[8*i+5])<<40 | uint64(b[8*i+6])<<48 | uint64(b[8*i+7])<<56
			if e&(1<<63) != 0 && e&(1<<61) == 0 {
				n += PageSize
			}
		}
		pa += pages * PageSize
	}
	return n, nil
}
