package vm

import (
	"encoding/binary"
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
	// Registers and special registers go in through the sync area on the
	// next KVM_RUN (below); XCR0 and the XSAVE area need their ioctls.
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

// TouchedPages returns the guest physical pages of this machine that the
// host has mapped: written (private) and only read (still the snapshot's).
func (m *Machine) TouchedPages() (written, read []uint64, err error) {
	err = m.scanPagemap(func(pa uint64, present, file bool) {
		switch {
		case present && !file:
			written = append(written, pa)
		case present:
			read = append(read, pa)
		}
	})
	return written, read, err
}

// scanPagemap calls fn for each page below the allocator's high-water mark.
func (m *Machine) scanPagemap(fn func(pa uint64, present, file bool)) error {
	limit := m.Frames.Next
	fd, err := unix.Open("/proc/self/pagemap", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	base := uint64(uintptrOf(m.Mem.Data))
	buf := make([]byte, 8*4096)
	for pa := uint64(0); pa < limit; {
		pages := min((limit-pa)/PageSize, 4096)
		b := buf[:8*pages]
		if _, err := unix.Pread(fd, b, int64((base+pa)/PageSize*8)); err != nil {
			return err
		}
		for i := uint64(0); i < pages; i++ {
			e := binary.LittleEndian.Uint64(b[8*i:])
			fn(pa+i*PageSize, e&(1<<63) != 0, e&(1<<61) != 0)
		}
		pa += pages * PageSize
	}
	return nil
}

// PrefaultAsync runs Prefault on another goroutine, so that a fork need
// not wait for it: pages the guest reaches first it copies itself. Close
// waits for it.
func (m *Machine) PrefaultAsync(pages []uint64) {
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		m.Prefault(pages)
	}()
}

// Prefault copies the given guest pages (sorted) into private memory now,
// ahead of the guest's first writes to them (MADV_POPULATE_WRITE): the
// guest's first write then costs only KVM's fault, not the host's copy as
// well. (Mapping read pages ahead, MADV_POPULATE_READ, was measured to
// gain nothing here.)
func (m *Machine) Prefault(pages []uint64) {
	for i := 0; i < len(pages); {
		j := i + 1
		for j < len(pages) && pages[j] == pages[j-1]+PageSize {
			j++
		}
		_ = unix.Madvise(m.Mem.Data[pages[i]:pages[j-1]+PageSize], unix.MADV_POPULATE_WRITE)
		i = j
	}
}

// Stats returns the vCPU's KVM statistics (see kvm.VCPU.Stats).
func (m *Machine) Stats() (map[string]uint64, error) { return m.vcpu.Stats() }

// InstallKernel writes this forkvm's GDT, IDT, TSS and stub into a
// snapshot's memory (a memfd), replacing what the forkvm that built the
// snapshot wrote there, so that forks always run the current stub.
func InstallKernel(memfd int) error {
	mem := &Memory{Data: make([]byte, KStackBottom)}
	writeKernel(mem)
	if _, err := unix.Pwrite(memfd, mem.Data[GDTPhys:KStackBottom], GDTPhys); err != nil {
		return fmt.Errorf("install the stub in snapshot memory: %w", err)
	}
	return nil
}
