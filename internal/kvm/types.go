package kvm

import "unsafe"

// Regs is struct kvm_regs.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable (GDTR/IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs.
type Sregs struct {
	CS, DS, ES, FS, GS, SS  Segment
	TR, LDT                 Segment
	GDT, IDT                DTable
	CR0, CR2, CR3, CR4, CR8 uint64
	EFER                    uint64
	APICBase                uint64
	InterruptBitmap         [4]uint64
}

// FPU is struct kvm_fpu.
type FPU struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

// XCR is one entry of struct kvm_xcrs.
type XCR struct {
	XCR   uint32
	_     uint32
	Value uint64
}

// XCRs is struct kvm_xcrs.
type XCRs struct {
	NrXCRs uint32
	Flags  uint32
	XCRs   [16]XCR
	_      [16]uint64
}

// CPUIDEntry is struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
	_        [3]uint32
}

// MSREntry is struct kvm_msr_entry.
type MSREntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// IOExit is the io member of the kvm_run exit union.
type IOExit struct {
	Direction  uint8
	Size       uint8
	Port       uint16
	Count      uint32
	DataOffset uint64
}

// SyncRegs is struct kvm_sync_regs (without the events member, which
// forkvm does not use).
type SyncRegs struct {
	Regs  Regs
	Sregs Sregs
}

// RunData is struct kvm_run, the area shared with the kernel.
type RunData struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	_                          [6]uint8
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IfFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
	exit                       [256]byte
	KVMValidRegs               uint64
	KVMDirtyRegs               uint64
	S                          SyncRegs
}

// IO returns the io exit information (valid when ExitReason == ExitIO).
func (r *RunData) IO() *IOExit { return (*IOExit)(unsafe.Pointer(&r.exit[0])) }

// ExitData returns the raw exit union, e.g. for internal errors.
func (r *RunData) ExitData() []uint64 {
	return unsafe.Slice((*uint64)(unsafe.Pointer(&r.exit[0])), 32)
}

// Compile-time checks of the layouts against <linux/kvm.h>.
var (
	_ [144]byte = [unsafe.Sizeof(Regs{})]byte{}
	_ [24]byte  = [unsafe.Sizeof(Segment{})]byte{}
	_ [312]byte = [unsafe.Sizeof(Sregs{})]byte{}
	_ [416]byte = [unsafe.Sizeof(FPU{})]byte{}
	_ [392]byte = [unsafe.Sizeof(XCRs{})]byte{}
	_ [40]byte  = [unsafe.Sizeof(CPUIDEntry{})]byte{}
	_ [304]byte = [unsafe.Offsetof(RunData{}.S)]byte{}
)
