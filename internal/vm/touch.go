package vm

import (
	"encoding/binary"
	"fmt"

	"forkvm/internal/kvm"
)

// Where Touch puts its list of addresses: user-readable pages below the
// lowest address a program may map (64 KiB), above the stub's user mapping.
const (
	touchListVA    = 0x6000
	touchListEnd   = 0x10000
	maxTouchList   = (touchListEnd-touchListVA)/8 - 1
	TouchWriteFlag = 1 // set in an address given to Touch: write the byte back
)

// Touch runs the stub's touch routine in the guest, before the fork's
// request arrives: it reads one byte of each listed page (and writes it
// back, unchanged, where TouchWriteFlag is set), so that KVM builds its
// shadow mappings for them now instead of during the request. On this
// machine each first guest touch of a page costs ~16 us of KVM fault
// handling; this moves that work off the request path. Afterwards the
// vCPU is put back exactly in state cpu. Addresses beyond the list's room
// are ignored. The guest must be stopped at a point where no other code
// can observe memory (a snapshot point).
func (m *Machine) Touch(addrs []uint64, cpu *CPUState) error {
	if len(addrs) == 0 {
		return nil
	}
	if len(addrs) > maxTouchList {
		addrs = addrs[:maxTouchList]
	}
	list := make([]byte, 0, 8*(len(addrs)+1))
	for _, a := range addrs {
		list = binary.LittleEndian.AppendUint64(list, a)
	}
	list = binary.LittleEndian.AppendUint64(list, 0)
	var frames []uint64
	defer func() {
		// Unmap the list again (through the queue, applied on the way back
		// to the program) so that touched and untouched forks look alike.
		for i, pa := range frames {
			m.MMU.Clear(touchListVA + uint64(i)*PageSize)
			m.Frames.Release(pa)
		}
	}()
	for off := uint64(0); off < uint64(len(list)); off += PageSize {
		pa, err := m.Frames.Alloc()
		if err != nil {
			return err
		}
		frames = append(frames, pa)
		copy(m.Mem.Data[pa:pa+PageSize], list[off:])
		if err := m.MMU.Set(touchListVA+off, pa|PTEPresent|PTEUser|PTEAccessed|PTENoExec); err != nil {
			return err
		}
	}
	r := &m.run.S.Regs
	r.RIP, r.RSI, r.RFLAGS = StubPhys+StubTouch, touchListVA, rflagsFixed|rflagsIF
	m.run.S.Sregs.CS, m.run.S.Sregs.SS = userCode, userData
	m.run.KVMDirtyRegs |= kvm.SyncX86Regs | kvm.SyncX86Sregs
	var runErr error
	if err := m.enter(); err != nil {
		runErr = err
	} else if e, _ := m.decode(); e.Kind != ExitFault || e.Vector != 13 || e.RIP != touchDoneRIP() {
		runErr = fmt.Errorf("vm: touch pass ended with %+v (rsi %#x rax %#x)", e, m.run.S.Regs.RSI, m.run.S.Regs.RAX)
	}
	if err := m.restoreCPU(cpu); err != nil {
		return err
	}
	return runErr
}

// touchDoneRIP is the address of the touch routine's final `out`.
func touchDoneRIP() uint64 {
	r := stubRoutines()[touchRoutine]
	return StubPhys + uint64(r.offset+len(r.code())-2)
}
