package vm

import (
	"fmt"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// TestStubDisassembly decodes every hand-encoded stub instruction and checks
// it against the disassembly written beside it.
func TestStubDisassembly(t *testing.T) {
	for _, r := range stubRoutines() {
		for i, in := range r.insns {
			got, err := x86asm.Decode(in.code, 64)
			if err != nil {
				t.Fatalf("%s[%d] % x: %v", r.name, i, in.code, err)
			}
			if got.Len != len(in.code) {
				t.Errorf("%s[%d] % x decodes as %d bytes", r.name, i, in.code, got.Len)
			}
			want := in.asm
			if want == "" && len(in.code) == 2 && in.code[0] == 0xe6 {
				want = fmt.Sprintf("OUTL AL, $0x%x", in.code[1])
			}
			if s := x86asm.GoSyntax(got, 0, nil); s != want {
				t.Errorf("%s[%d] % x is %q, comment says %q", r.name, i, in.code, s, want)
			}
		}
	}
}

// TestStubLayout checks that routines fit their slots and do not overlap.
func TestStubLayout(t *testing.T) {
	used := make([]string, PageSize)
	for _, r := range stubRoutines() {
		off := r.offset
		for _, in := range r.insns {
			for range in.code {
				if used[off] != "" {
					t.Fatalf("%s overlaps %s at %#x", r.name, used[off], off)
				}
				used[off] = r.name
				off++
			}
		}
	}
	// The apply loop's branches must land on the loop head and the tail.
	apply := stubRoutines()[1]
	pos := apply.offset
	offs := map[int]int{}
	for i, in := range apply.insns {
		offs[i] = pos
		pos += len(in.code)
	}
	if target := offs[5] + int(int8(apply.insns[4].code[1])); target != offs[9] {
		t.Errorf("je lands at %#x, want %#x", target, offs[9])
	}
	if target := offs[9] + int(int8(apply.insns[8].code[1])); target != offs[2] {
		t.Errorf("jmp lands at %#x, want %#x", target, offs[2])
	}
}

// TestTouchBranches checks the touch routine's branch targets.
func TestTouchBranches(t *testing.T) {
	r := stubRoutines()[touchRoutine]
	if r.name != "touch" {
		t.Fatalf("stubRoutines()[touchRoutine] is %q", r.name)
	}
	offs := make([]int, len(r.insns)+1)
	for i, in := range r.insns {
		offs[i+1] = offs[i] + len(in.code)
	}
	branch := func(i, target int) {
		t.Helper()
		if got := offs[i+1] + int(int8(r.insns[i].code[1])); got != offs[target] {
			t.Errorf("branch %d lands at %d, want %d", i, got, offs[target])
		}
	}
	branch(2, 9) // je done
	branch(5, 7) // jae next
	branch(8, 0) // jmp loop
	if r.insns[9].code[0] != 0xe6 {
		t.Error("the routine must end with its out")
	}
}
