// Package vm is one kernel-less virtual machine: its guest physical memory,
// the page tables the host builds for the guest program, the few bytes of
// CPL0 code (the stub) that turn the guest's syscalls and exceptions into
// VM exits, and the vCPU run loop.
//
// The guest has no kernel. The program runs at CPL3; its `syscall`
// instructions land in the stub, whose first instruction is an `out` that
// exits to the VMM. The VMM (package linux) performs the call and returns
// straight to CPL3 by setting RIP/RFLAGS/CS/SS. Exceptions (vectors 0-31)
// reach one `out` per vector the same way.
//
// Guest physical memory (one KVM memory slot):
//
//	0x000000 +------------------------+
//	         | unused (null page)     |
//	0x001000 | GDT                    |
//	0x002000 | IDT (vectors 0-31)     |
//	0x003000 | TSS (RSP0 = kstack top)|
//	0x004000 | stub code              |
//	0x005000 | kernel stack (12 KiB)  |
//	0x008000 | PML4                   |
//	0x009000 | direct-map PDPT        |
//	0x00a000 | direct-map PDs (<=64)  |
//	0x050000 | page-table write queue |
//	0x100000 +------------------------+
//	         | frames: page tables and|
//	         | program memory, handed |
//	         | out by Frames          |
//	   size  +------------------------+
//
// Guest virtual memory: the lower half is the Linux user address space; all
// of physical memory is also mapped supervisor-only (U=0) at DirectMap in
// the upper half, which is where the GDT, IDT, TSS, stub, kernel stack and
// the page tables themselves are reached from CPL0.
//
// Page tables: before the guest first runs, the host writes them directly.
// After that, a host write to a table the guest has used may never be seen
// (shadow paging on nested KVM keeps a stale copy), so such writes are queued
// and applied by the stub's apply routine, which writes each entry through
// the direct map and reloads CR3. Tables allocated since the guest last ran
// are still unseen by it and are written directly.
package vm

// Guest physical layout.
const (
	PageSize = 0x1000

	GDTPhys      = 0x1000
	IDTPhys      = 0x2000
	TSSPhys      = 0x3000
	StubPhys     = 0x4000
	KStackBottom = 0x5000
	KStackTop    = 0x8000
	PML4Phys     = 0x8000
	DirectPDPT   = 0x9000
	DirectPDs    = 0xa000
	MaxMemory    = 64 << 30 // one direct-map PD per GiB, 64 PDs
	QueuePhys    = 0x50000
	QueueSize    = 0x40000
	FramesStart  = 0x100000

	// DirectMap is where guest physical address 0 appears in the guest's
	// virtual address space (supervisor-only).
	DirectMap uint64 = 0xffff_8000_0000_0000

	// UserTop is the end of the user half of the address space.
	UserTop = 0x0000_8000_0000_0000
)

// Segment selectors in the GDT.
const (
	KernelCS = 0x08
	KernelSS = 0x10
	UserSS   = 0x18 | 3
	UserCS   = 0x20 | 3
	TSSSel   = 0x28
)

// I/O ports the stub uses to exit to the VMM.
const (
	PortSyscall   = 0x10
	PortQueueDone = 0x12
	PortTouchDone = 0x13
	PortFaultBase = 0x20 // + vector, for vectors 0-31
)

// Page-table entry bits.
const (
	PTEPresent  = 1 << 0
	PTEWrite    = 1 << 1
	PTEUser     = 1 << 2
	PTEAccessed = 1 << 5
	PTEDirty    = 1 << 6
	PTEHuge     = 1 << 7
	// PTEHeld marks a not-present entry that still owns its frame (a page
	// made PROT_NONE keeps its contents). Bit 9 is ignored by the CPU.
	PTEHeld     = 1 << 9
	PTENoExec   = 1 << 63
	PTEAddrMask = 0x000f_ffff_ffff_f000
)

// Control register and MSR values.
const (
	cr0PE = 1 << 0
	cr0MP = 1 << 1
	cr0ET = 1 << 4
	cr0NE = 1 << 5
	cr0WP = 1 << 16
	cr0PG = 1 << 31

	cr4PAE        = 1 << 5
	cr4OSFXSR     = 1 << 9
	cr4OSXMMEXCPT = 1 << 10
	cr4FSGSBASE   = 1 << 16
	cr4OSXSAVE    = 1 << 18

	eferSCE = 1 << 0
	eferLME = 1 << 8
	eferLMA = 1 << 10
	eferNXE = 1 << 11

	msrSTAR   = 0xc0000081
	msrLSTAR  = 0xc0000082
	msrCSTAR  = 0xc0000083
	msrSFMASK = 0xc0000084

	// rflagsUserMask is what a user program may set in RFLAGS: the
	// arithmetic flags, TF, DF, OF, AC, ID. IOPL stays 0 and IF stays set.
	rflagsUserMask = 0x00254dd5
	rflagsFixed    = 0x2
	rflagsIF       = 0x200
)
