package vm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"forkvm/internal/kvm"

	"golang.org/x/sys/unix"
)

// ExitKind says why Run returned.
type ExitKind int

// Exit kinds.
const (
	ExitSyscall ExitKind = iota // the program made a system call (number in RAX)
	ExitFault                   // the program raised an exception
	ExitStopped                 // Stop was called
	ExitFailure                 // the VM failed (see Exit.Reason)
)

// Exit describes why the guest stopped running.
type Exit struct {
	Kind      ExitKind
	Vector    int    // ExitFault: exception vector
	ErrorCode uint64 // ExitFault: error code, for vectors that have one
	CR2       uint64 // ExitFault: faulting address, for page faults
	RIP       uint64 // ExitFault: address of the faulting instruction
	Reason    string // ExitFailure: what went wrong
}

// resume says how the next Run enters the guest.
type resume int

const (
	resumeAsIs    resume = iota // registers are already set (first run)
	resumeSyscall               // return to CPL3 at RCX with RFLAGS from R11
)

// Machine is one kernel-less VM with one vCPU.
//
// System call entry: LSTAR points at the stub's `out` at its physical
// address, which is also mapped user-readable in the user half. On
// hardware-virtualised KVM, `syscall` enters CPL0 and the `out` exits to
// the VMM directly. On the nested, shadow-paging KVM this project is
// developed on, `syscall` jumps to LSTAR without leaving CPL3 (the fetch is
// a user access, and CS stays the user's); the `out` then raises #GP
// (IOPL is 0), whose CPL0 handler exits with the saved frame. decode
// recognises both as a system call, so the program may not use I/O ports
// either way.
type Machine struct {
	sys    *kvm.System
	vm     *kvm.VM
	vcpu   *kvm.VCPU
	Mem    *Memory
	MMU    *MMU
	Frames *Frames

	resume resume
	run    *kvm.RunData

	mu      sync.Mutex     // guards vcpu against Stop racing Close
	bg      sync.WaitGroup // background work on the memory (PrefaultAsync)
	stopped atomic.Bool
	tid     atomic.Int32

	// Exits counts VM exits (returns from KVM_RUN other than EINTR).
	Exits uint64
}

// Config describes a new machine.
type Config struct {
	MemorySize uint64 // bytes of guest physical memory
}

// New creates a VM with fresh memory, the fixed kernel structures and a
// vCPU ready to be pointed at a program with SetEntry.
func New(sys *kvm.System, cfg Config) (*Machine, error) {
	mem, err := NewMemory(cfg.MemorySize)
	if err != nil {
		return nil, err
	}
	writeKernel(mem)
	frames := NewFrames(mem)
	mmu := NewMMU(mem, frames)
	mmu.setupKernel()
	// The syscall entry is also mapped at its physical address in the user
	// half, user-readable: see the Machine comment on syscall entry.
	if err := mmu.Set(StubPhys, StubPhys|PTEPresent|PTEAccessed|PTEUser); err != nil {
		mem.Close()
		return nil, err
	}
	m, err := newMachine(sys, mem)
	if err != nil {
		mem.Close()
		return nil, err
	}
	m.Frames, m.MMU = frames, mmu
	if err := m.initCPU(sys); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// newMachine creates the KVM VM, its memory slot and vCPU over mem.
func newMachine(sys *kvm.System, mem *Memory) (*Machine, error) {
	v, err := sys.CreateVM()
	if err != nil {
		return nil, err
	}
	m := &Machine{sys: sys, vm: v, Mem: mem}
	if err := m.attachMemory(mem); err != nil {
		v.Close()
		return nil, err
	}
	c, err := v.CreateVCPU(0)
	if err != nil {
		v.Close()
		return nil, err
	}
	m.vcpu, m.run = c, c.Run
	return m, nil
}

func (m *Machine) attachMemory(mem *Memory) error {
	return m.vm.SetUserMemoryRegion(&kvm.UserspaceMemoryRegion{
		Slot: 0, GuestPhysAddr: 0, MemorySize: mem.Size(),
		UserspaceAddr: uint64(uintptrOf(mem.Data)),
	})
}

// writeKernel writes the GDT, IDT, TSS and stub into fresh memory.
func writeKernel(mem *Memory) {
	gdt := []uint64{
		0,
		0x00209a0000000000, // 0x08 kernel code: present, DPL0, long mode
		0x0000920000000000, // 0x10 kernel data
		0x0000f20000000000, // 0x18 user data: DPL3
		0x0020fa0000000000, // 0x20 user code: DPL3, long mode
	}
	for i, d := range gdt {
		mem.setU64(GDTPhys+uint64(8*i), d)
	}
	// 0x28: 64-bit available TSS, 16 bytes.
	tss := uint64(DirectMap + TSSPhys)
	const tssLimit = 103
	lo := uint64(tssLimit) | (tss&0xffffff)<<16 | 0x89<<40 | ((tss>>24)&0xff)<<56
	mem.setU64(GDTPhys+40, lo)
	mem.setU64(GDTPhys+48, tss>>32)
	// TSS: RSP0 at offset 4; I/O map base beyond the limit (no port access).
	mem.setU64(TSSPhys+4, DirectMap+KStackTop)
	binary.LittleEndian.PutUint16(mem.Data[TSSPhys+102:], tssLimit+1)
	// IDT: interrupt gates for vectors 0-31 to the stub's handlers.
	for v := 0; v < 32; v++ {
		h := DirectMap + StubPhys + StubVectors + 8*uint64(v)
		dpl := uint64(0)
		if v == 3 || v == 4 {
			dpl = 3 // int3 and into from CPL3 report their own vector
		}
		lo := h&0xffff | KernelCS<<16 | (0x8e|dpl<<5)<<40 | (h>>16&0xffff)<<48
		mem.setU64(IDTPhys+uint64(16*v), lo)
		mem.setU64(IDTPhys+uint64(16*v)+8, h>>32)
	}
	copy(mem.Data[StubPhys:], stubPage())
}

// initCPU sets CPUID, control registers, segments, MSRs, XCR0 and the FPU
// for a program at CPL3.
func (m *Machine) initCPU(sys *kvm.System) error {
	cpuid, xcr0, fsgs, err := GuestCPUID(sys)
	if err != nil {
		return err
	}
	if err := m.vcpu.SetCPUID(cpuid); err != nil {
		return err
	}
	var s kvm.Sregs
	if err := m.vcpu.GetSregs(&s); err != nil {
		return err
	}
	s.CR0 = cr0PE | cr0MP | cr0ET | cr0NE | cr0WP | cr0PG
	s.CR4 = cr4PAE | cr4OSFXSR | cr4OSXMMEXCPT | cr4OSXSAVE
	if fsgs {
		s.CR4 |= cr4FSGSBASE
	}
	s.CR3 = PML4Phys
	s.EFER = eferSCE | eferLME | eferLMA | eferNXE
	s.GDT = kvm.DTable{Base: DirectMap + GDTPhys, Limit: 7*8 - 1}
	s.IDT = kvm.DTable{Base: DirectMap + IDTPhys, Limit: 32*16 - 1}
	s.TR = kvm.Segment{Base: DirectMap + TSSPhys, Limit: 103, Selector: TSSSel, Type: 11, Present: 1}
	s.LDT = kvm.Segment{Unusable: 1}
	s.CS = userCode
	s.SS, s.DS, s.ES = userData, userData, userData
	s.FS, s.GS = userData, userData
	if err := m.vcpu.SetSregs(&s); err != nil {
		return err
	}
	err = m.vcpu.SetMSRs([]kvm.MSREntry{
		{Index: msrSTAR, Data: uint64(KernelCS)<<32 | uint64(KernelSS)<<48},
		{Index: msrLSTAR, Data: StubPhys + StubSyscall},
		{Index: msrCSTAR, Data: DirectMap + StubPhys + StubSyscall},
		{Index: msrSFMASK, Data: 0x47700},
	})
	if err != nil {
		return err
	}
	xcrs := kvm.XCRs{NrXCRs: 1}
	xcrs.XCRs[0] = kvm.XCR{XCR: 0, Value: xcr0}
	if err := m.vcpu.SetXCRs(&xcrs); err != nil {
		return fmt.Errorf("set XCR0=%#x: %w", xcr0, err)
	}
	fpu := kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
	return m.vcpu.SetFPU(&fpu)
}

var (
	userCode = kvm.Segment{Limit: 0xffffffff, Selector: UserCS, Type: 11, Present: 1, DPL: 3, S: 1, L: 1, G: 1}
	userData = kvm.Segment{Limit: 0xffffffff, Selector: UserSS, Type: 3, Present: 1, DPL: 3, DB: 1, S: 1, G: 1}
)

// XCR0 state components forkvm enables when the host offers them: x87,
// SSE, AVX, and the three AVX-512 components.
const xcr0Wanted = 0xe7

// GuestCPUID returns the CPUID table the guest sees (what KVM supports,
// less features forkvm does not provide), the XCR0 value to use, and whether
// FSGSBASE may be enabled.
func GuestCPUID(sys *kvm.System) ([]kvm.CPUIDEntry, uint64, bool, error) {
	cpuidCache.Lock()
	defer cpuidCache.Unlock()
	if c, ok := cpuidCache.m[sys]; ok {
		return c.entries, c.xcr0, c.fsgs, nil
	}
	entries, xcr0, fsgs, err := guestCPUID(sys)
	if err != nil {
		return nil, 0, false, err
	}
	if cpuidCache.m == nil {
		cpuidCache.m = map[*kvm.System]cpuidResult{}
	}
	cpuidCache.m[sys] = cpuidResult{entries, xcr0, fsgs}
	return entries, xcr0, fsgs, nil
}

// cpuidCache keeps GuestCPUID's answer per /dev/kvm: it does not change,
// and asking KVM costs an ioctl on every fork.
var cpuidCache struct {
	sync.Mutex
	m map[*kvm.System]cpuidResult
}

type cpuidResult struct {
	entries []kvm.CPUIDEntry
	xcr0    uint64
	fsgs    bool
}

func guestCPUID(sys *kvm.System) ([]kvm.CPUIDEntry, uint64, bool, error) {
	entries, err := sys.SupportedCPUID()
	if err != nil {
		return nil, 0, false, err
	}
	var xcr0 uint64 = 3
	fsgs := false
	for i := range entries {
		e := &entries[i]
		switch {
		case e.Function == 1:
			e.ECX &^= 1 << 5 // VMX: no nested virtualisation
		case e.Function == 7 && e.Index == 0:
			fsgs = e.EBX&1 != 0
			e.ECX &^= 1<<3 | 1<<4 | 1<<16   // PKU, OSPKE, LA57: not provided
			e.EDX &^= 1<<22 | 1<<24 | 1<<25 // AMX: state not enabled
		case e.Function == 0xd && e.Index == 0:
			xcr0 = (uint64(e.EAX) | uint64(e.EDX)<<32) & xcr0Wanted
		}
	}
	return entries, xcr0 | 3, fsgs, nil
}

// SetEntry points the vCPU at a program: user mode at rip with stack sp.
func (m *Machine) SetEntry(rip, sp uint64) error {
	r := kvm.Regs{RIP: rip, RSP: sp, RFLAGS: rflagsFixed | rflagsIF}
	m.resume = resumeAsIs
	return m.vcpu.SetRegs(&r)
}

// Regs returns the guest's general registers, valid after Run returns.
// Changes are written back on the next Run.
func (m *Machine) Regs() *kvm.Regs { return &m.run.S.Regs }

// Sregs returns the guest's special registers, valid after Run returns.
// Call SregsChanged after modifying them.
func (m *Machine) Sregs() *kvm.Sregs { return &m.run.S.Sregs }

// SregsChanged marks the special registers for writing back.
func (m *Machine) SregsChanged() { m.run.KVMDirtyRegs |= kvm.SyncX86Sregs }

// ReturnFromSyscall arranges for the next Run to return ret to the program.
func (m *Machine) ReturnFromSyscall(ret uint64) {
	m.run.S.Regs.RAX = ret
	m.resume = resumeSyscall
}

// Run enters the guest and returns at its next system call, fault, stop
// or failure. It must be called from one locked OS thread.
func (m *Machine) Run() (Exit, error) {
	m.tid.Store(int32(unix.Gettid()))
	if m.resume == resumeSyscall {
		if err := m.prepareReturn(); err != nil {
			return Exit{}, err
		}
		m.resume = resumeAsIs
	}
	if err := m.enter(); err != nil {
		return Exit{}, err
	}
	return m.decode()
}

// enter calls KVM_RUN until the guest exits for a reason other than a
// signal, or a stop was requested.
func (m *Machine) enter() error {
	r := m.run
	for {
		if m.stopped.Load() {
			return errStopped
		}
		r.KVMValidRegs = kvm.SyncX86Regs | kvm.SyncX86Sregs
		if r.KVMDirtyRegs != 0 {
			r.KVMDirtyRegs |= kvm.SyncX86Regs // sregs are written only with regs
		}
		err := m.vcpu.RunOnce()
		if err == unix.EINTR || err == unix.EAGAIN {
			r.KVMDirtyRegs = 0
			continue
		}
		r.KVMDirtyRegs = 0
		if err != nil {
			return fmt.Errorf("KVM_RUN: %w", err)
		}
		m.Exits++
		m.MMU.ran()
		return nil
	}
}

var errStopped = errors.New("stopped")

func (m *Machine) decode() (Exit, error) {
	r := m.run
	if r.ExitReason != kvm.ExitIO {
		return Exit{Kind: ExitFailure, Reason: m.describeFailure()}, nil
	}
	port := r.IO().Port
	switch {
	case port == PortSyscall && r.S.Regs.RIP == StubPhys+StubSyscall+2:
		return Exit{Kind: ExitSyscall}, nil
	case port >= PortFaultBase && port < PortFaultBase+32 &&
		r.S.Regs.RIP == DirectMap+StubPhys+StubVectors+8*uint64(port-PortFaultBase)+2:
		e := m.faultExit(int(port - PortFaultBase))
		if e.Vector == 13 && e.RIP == StubPhys+StubSyscall && m.Mem.u64(r.S.Regs.RSP-DirectMap+16) == UserCS {
			// The stub's `out` ran at CPL3 (see Machine): a system call.
			r.S.Regs.RSP = m.Mem.u64(r.S.Regs.RSP - DirectMap + 32)
			r.KVMDirtyRegs |= kvm.SyncX86Regs
			return Exit{Kind: ExitSyscall}, nil
		}
		return e, nil
	}
	return Exit{Kind: ExitFailure, Reason: fmt.Sprintf("unexpected exit to port %#x at rip %#x", port, r.S.Regs.RIP)}, nil
}

func (m *Machine) describeFailure() string {
	r := m.run
	s := fmt.Sprintf("vCPU %s at rip %#x", kvm.ExitName(r.ExitReason), r.S.Regs.RIP)
	if r.ExitReason == kvm.ExitInternalError {
		d := r.ExitData()
		s += fmt.Sprintf(" (suberror %d)", uint32(d[0]))
	}
	return s
}

// faultExit reads the exception frame the CPU pushed on the kernel stack.
func (m *Machine) faultExit(v int) Exit {
	sp := m.run.S.Regs.RSP - DirectMap
	e := Exit{Kind: ExitFault, Vector: v, CR2: m.run.S.Sregs.CR2}
	frame := uint64(40) // rip, cs, rflags, rsp, ss
	if vectorHasErrorCode(v) {
		frame += 8
	}
	if sp < KStackBottom || sp+frame > KStackTop {
		e.RIP = m.run.S.Regs.RIP
		return e
	}
	if vectorHasErrorCode(v) {
		e.ErrorCode = m.Mem.u64(sp)
		sp += 8
	}
	e.RIP = m.Mem.u64(sp)
	return e
}

// prepareReturn sets the vCPU up to return from a syscall: directly, or
// through the stub's apply routine when page-table writes are queued.
func (m *Machine) prepareReturn() error {
	regs := &m.run.S.Regs
	sregs := &m.run.S.Sregs
	userRIP, userFlags := regs.RCX, regs.R11&rflagsUserMask|rflagsFixed|rflagsIF
	if m.MMU.Pending() == 0 {
		regs.RIP, regs.RFLAGS = userRIP, userFlags
		sregs.CS, sregs.SS = userCode, userData
		m.run.KVMDirtyRegs |= kvm.SyncX86Regs | kvm.SyncX86Sregs
		return nil
	}
	for m.MMU.fillQueue() {
		if err := m.applySync(); err != nil {
			return err
		}
	}
	m.pushIret(userRIP, UserCS, userFlags, regs.RSP, UserSS)
	regs.RIP = DirectMap + StubPhys + StubApply
	regs.RSP = DirectMap + KStackTop - 40
	m.run.KVMDirtyRegs |= kvm.SyncX86Regs
	return nil
}

func (m *Machine) pushIret(rip, cs, rflags, rsp, ss uint64) {
	f := uint64(KStackTop - 40)
	for i, v := range []uint64{rip, cs, rflags, rsp, ss} {
		m.Mem.setU64(f+uint64(8*i), v)
	}
}

// applySync applies the queue now, while the program is stopped in a
// system call, and leaves the registers as they were.
func (m *Machine) applySync() error {
	saved, savedS := m.run.S.Regs, m.run.S.Sregs
	m.pushIret(DirectMap+StubPhys+StubQueueDone, KernelCS, rflagsFixed, DirectMap+KStackTop, KernelSS)
	m.run.S.Regs.RIP = DirectMap + StubPhys + StubApply
	m.run.S.Regs.RSP = DirectMap + KStackTop - 40
	m.run.KVMDirtyRegs |= kvm.SyncX86Regs
	if err := m.enter(); err != nil {
		return err
	}
	if m.run.ExitReason != kvm.ExitIO || m.run.IO().Port != PortQueueDone {
		return fmt.Errorf("page-table queue: %s", m.describeFailure())
	}
	m.run.S.Regs, m.run.S.Sregs = saved, savedS
	m.run.KVMDirtyRegs |= kvm.SyncX86Regs | kvm.SyncX86Sregs
	return nil
}

// IsStopped reports whether Stop has been called (Run returns an error
// wrapping ErrStopped then).
func IsStopped(err error) bool { return errors.Is(err, errStopped) }

// Stop makes Run return as soon as possible, from any goroutine.
func (m *Machine) Stop() {
	m.stopped.Store(true)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.vcpu != nil && m.vcpu.Run != nil {
		if tid := m.tid.Load(); tid != 0 {
			m.vcpu.Kick(int(tid))
		} else {
			m.vcpu.Run.ImmediateExit = 1
		}
	}
}

// Close destroys the VM and unmaps its memory.
func (m *Machine) Close() error {
	m.bg.Wait() // nothing may touch the memory once it is unmapped
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	if m.vcpu != nil {
		err = m.vcpu.Close()
		m.vcpu = nil
	}
	if m.vm != nil {
		if e := m.vm.Close(); err == nil {
			err = e
		}
		m.vm = nil
	}
	if m.Mem != nil {
		if e := m.Mem.Close(); err == nil {
			err = e
		}
		m.Mem = nil
	}
	return err
}
