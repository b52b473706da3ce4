package vm

import "encoding/binary"

// The stub is the only code that runs at CPL0. On this machine every CPL0
// instruction is emulated (~1 us each), so each path is a handful of
// instructions. Offsets are within the stub page (StubPhys).
const (
	StubSyscall   = 0x000 // LSTAR: syscall entry
	StubApply     = 0x010 // apply the page-table write queue, then iretq
	StubQueueDone = 0x080 // iretq target of a mid-call queue flush
	StubTouch     = 0x0a0 // CPL3: touch a list of pages (see Machine.Touch)
	StubVectors   = 0x100 // vector v's handler is at StubVectors + 8*v
)

// insn is one hand-encoded instruction and its disassembly in Go (Plan 9)
// syntax as golang.org/x/arch/x86/x86asm prints it, so a test can check the
// bytes against the text.
type insn struct {
	code []byte
	asm  string
}

// stubRoutine is a sequence of instructions placed at an offset.
type stubRoutine struct {
	name   string
	offset int
	insns  []insn
}

func imm64(op []byte, v uint64) []byte {
	b := append([]byte{}, op...)
	return binary.LittleEndian.AppendUint64(b, v)
}

// stubRoutines returns the stub's code.
func stubRoutines() []stubRoutine {
	queueVA := uint64(DirectMap + QueuePhys)
	r := []stubRoutine{
		{"syscall", StubSyscall, []insn{
			{[]byte{0xe6, PortSyscall}, "OUTL AL, $0x10"}, // exit to the VMM, which returns to CPL3 itself
			{[]byte{0xf4}, "HLT"},                         // never reached
		}},
		// The queue is a list of (entry virtual address, value) pairs
		// ending with a zero address. rcx and r11 are free: syscall
		// clobbers them, and the iretq frame holds the user's rip and
		// rflags.
		{"apply", StubApply, []insn{
			{[]byte{0x50}, "PUSHQ AX"}, // save rax (the syscall result)
			{imm64([]byte{0x48, 0xb9}, queueVA), "MOVQ $0xffff800000050000, CX"}, // rcx = queue
			{[]byte{0x4c, 0x8b, 0x19}, "MOVQ 0(CX), R11"},                        // loop: r11 = entry address
			{[]byte{0x4d, 0x85, 0xdb}, "TESTQ R11, R11"},                         //
			{[]byte{0x74, 0x0d}, "JE .+13"},                                      // zero address ends the queue
			{[]byte{0x48, 0x8b, 0x41, 0x08}, "MOVQ 0x8(CX), AX"},                 // rax = value
			{[]byte{0x49, 0x89, 0x03}, "MOVQ AX, 0(R11)"},                        // write the entry
			{[]byte{0x48, 0x83, 0xc1, 0x10}, "ADDQ $0x10, CX"},                   // next pair
			{[]byte{0xeb, 0xeb}, "JMP .-21"},                                     // back to loop
			{[]byte{0x0f, 0x20, 0xd8}, "MOVL CR3, AX"},                           // done: flush the TLB (64-bit move; x86asm prints L)
			{[]byte{0x0f, 0x22, 0xd8}, "MOVL AX, CR3"},                           //
			{[]byte{0x58}, "POPQ AX"},                                            // restore rax
			{[]byte{0x48, 0xcf}, "IRETQ"},                                        // to the frame the host wrote
		}},
		// Runs at CPL3 from the stub's user mapping. rsi points at a
		// zero-terminated list of page addresses; bit 0 set means
		// write the byte back (a no-op write that makes the page
		// writable in KVM's shadow page tables). The final `out` faults
		// (#GP, IOPL 0), which is how the pass reports that it is done.
		{"touch", StubTouch, []insn{
			{[]byte{0x48, 0x8b, 0x06}, "MOVQ 0(SI), AX"},            // loop: rax = next entry
			{[]byte{0x48, 0x85, 0xc0}, "TESTQ AX, AX"},              //
			{[]byte{0x74, 0x11}, "JE .+17"},                         // zero ends the list
			{[]byte{0x48, 0x0f, 0xba, 0xf0, 0x00}, "BTRQ $0x0, AX"}, // CF = write flag; clear it
			{[]byte{0x8a, 0x10}, "MOVB 0(AX), DL"},                  // read a byte of the page
			{[]byte{0x73, 0x02}, "JAE .+2"},                         // no write flag: skip
			{[]byte{0x88, 0x10}, "MOVB DL, 0(AX)"},                  // write the same byte back
			{[]byte{0x48, 0x83, 0xc6, 0x08}, "ADDQ $0x8, SI"},       // next entry
			{[]byte{0xeb, 0xe7}, "JMP .-25"},                        // back to loop
			{[]byte{0xe6, PortTouchDone}, "OUTL AL, $0x13"},         // done: #GP at CPL3
		}},
		{"queue-done", StubQueueDone, []insn{
			{[]byte{0xe6, PortQueueDone}, "OUTL AL, $0x12"}, // tell the VMM the queue is applied
			{[]byte{0xf4}, "HLT"},
		}},
	}
	for v := 0; v < 32; v++ {
		r = append(r, stubRoutine{vectorName(v), StubVectors + 8*v, []insn{
			{[]byte{0xe6, byte(PortFaultBase + v)}, ""}, // OUTL AL, $(0x20+v) (x86asm prints OUTL for the byte form): report vector v
			{[]byte{0xf4}, "HLT"},
		}})
	}
	return r
}

// touchRoutine is the index of the touch routine in stubRoutines.
const touchRoutine = 2

// code returns the routine's bytes.
func (r stubRoutine) code() []byte {
	var b []byte
	for _, in := range r.insns {
		b = append(b, in.code...)
	}
	return b
}

// stubPage assembles the stub into one page.
func stubPage() []byte {
	page := make([]byte, PageSize)
	for i := range page {
		page[i] = 0xf4 // hlt everywhere else
	}
	for _, r := range stubRoutines() {
		off := r.offset
		for _, in := range r.insns {
			off += copy(page[off:], in.code)
		}
	}
	return page
}

// vectorNames are the x86 exception names, indexed by vector.
var vectorNames = [32]string{
	0: "divide error", 1: "debug", 2: "NMI", 3: "breakpoint", 4: "overflow",
	5: "bound range", 6: "invalid opcode", 7: "device not available",
	8: "double fault", 10: "invalid TSS", 11: "segment not present",
	12: "stack fault", 13: "general protection fault", 14: "page fault",
	16: "x87 floating-point error", 17: "alignment check", 18: "machine check",
	19: "SIMD floating-point error", 20: "virtualization exception",
	21: "control protection",
}

func vectorName(v int) string {
	if v < len(vectorNames) && vectorNames[v] != "" {
		return vectorNames[v]
	}
	return "reserved vector"
}

// VectorName names exception vector v.
func VectorName(v int) string { return vectorName(v) }

// vectorHasErrorCode reports whether the CPU pushes an error code for v.
func vectorHasErrorCode(v int) bool {
	switch v {
	case 8, 10, 11, 12, 13, 14, 17, 21, 29, 30:
		return true
	}
	return false
}
