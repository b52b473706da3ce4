package vm

import (
	"fmt"
)

// MMU maintains the guest's four-level page tables.
//
// Entries are read from guest memory (with queued writes taking
// precedence). Writes go straight to guest memory while the guest has not
// yet walked the table (before its first run, or a table allocated since it
// last ran); otherwise they are queued for the stub's apply routine, because
// the host's writes to a table the guest has used may never reach the
// guest's view on shadow-paging KVM.
type MMU struct {
	mem    *Memory
	frames *Frames

	// live is set once the guest has run with these tables.
	live bool
	// fresh holds the tables allocated since the guest last ran.
	fresh map[uint64]struct{}
	// pending maps an entry's physical address to its queued value.
	pending map[uint64]uint64
	// order lists queued entry addresses in the order first written.
	order []uint64

	// Tables counts page-table pages in use (they are never freed).
	Tables uint64
	// QueuedWrites counts entries written through the queue.
	QueuedWrites uint64
}

// NewMMU returns an MMU over mem whose PML4 is at PML4Phys.
func NewMMU(mem *Memory, frames *Frames) *MMU {
	return &MMU{mem: mem, frames: frames, fresh: map[uint64]struct{}{}, pending: map[uint64]uint64{}}
}

func (m *MMU) read(pa uint64) uint64 {
	if v, ok := m.pending[pa]; ok {
		return v
	}
	return m.mem.u64(pa)
}

func (m *MMU) write(pa, v uint64) {
	if !m.live {
		m.mem.setU64(pa, v)
		return
	}
	if _, ok := m.fresh[pa&^(PageSize-1)]; ok {
		m.mem.setU64(pa, v)
		return
	}
	if _, ok := m.pending[pa]; !ok {
		m.order = append(m.order, pa)
	}
	m.pending[pa] = v
}

// Pending is the number of queued entry writes.
func (m *MMU) Pending() int { return len(m.order) }

// maxQueue is the number of (address, value) pairs the queue holds, leaving
// room for the terminator.
const maxQueue = QueueSize/16 - 1

// fillQueue writes up to maxQueue queued entries into the queue area and
// reports whether entries remain.
func (m *MMU) fillQueue() (more bool) {
	n := len(m.order)
	if n > maxQueue {
		n = maxQueue
	}
	q := uint64(QueuePhys)
	for _, pa := range m.order[:n] {
		m.mem.setU64(q, DirectMap+pa)
		m.mem.setU64(q+8, m.pending[pa])
		delete(m.pending, pa)
		q += 16
	}
	m.mem.setU64(q, 0)
	m.QueuedWrites += uint64(n)
	m.order = m.order[n:]
	if len(m.order) == 0 {
		m.order = nil
	}
	return len(m.order) > 0
}

// ran records that the guest has run with the current tables.
func (m *MMU) ran() {
	m.live = true
	if len(m.fresh) > 0 {
		clear(m.fresh)
	}
}

func (m *MMU) newTable() (uint64, error) {
	pa, err := m.frames.Alloc()
	if err != nil {
		return 0, err
	}
	// A recycled frame was zeroed by Alloc; the guest has never used it as
	// a table, so it is written directly until the guest next runs.
	m.fresh[pa] = struct{}{}
	m.Tables++
	return pa, nil
}

func index(va uint64, level int) uint64 { return (va >> (12 + 9*uint(level))) & 511 }

// validTable reports whether pa can be a user page table: a frame of
// guest memory. Entries are written only by the host, but the checks keep
// a corrupted entry from sending the VMM outside guest memory.
func (m *MMU) validTable(pa uint64) bool {
	return pa >= FramesStart && pa+PageSize <= m.mem.Size()
}

// entry returns the physical address of va's leaf (level 0) entry, creating
// intermediate tables when create is set. ok is false when a table is
// missing and create is not set, and for addresses outside the user half.
func (m *MMU) entry(va uint64, create bool) (pa uint64, ok bool, err error) {
	if va >= UserTop {
		return 0, false, nil
	}
	table := uint64(PML4Phys)
	for level := 3; level > 0; level-- {
		e := table + 8*index(va, level)
		v := m.read(e)
		if v&PTEPresent == 0 {
			if !create {
				return 0, false, nil
			}
			t, err := m.newTable()
			if err != nil {
				return 0, false, err
			}
			v = t | PTEPresent | PTEWrite | PTEUser | PTEAccessed
			m.write(e, v)
		}
		table = v & PTEAddrMask
		if v&PTEHuge != 0 || !m.validTable(table) {
			return 0, false, nil
		}
	}
	return table + 8*index(va, 0), true, nil
}

// Range calls fn for each non-zero leaf entry of [start, end) in the user
// half, in address order, skipping the parts no table covers; its cost
// grows with the tables present, not with the size of the range.
func (m *MMU) Range(start, end uint64, fn func(va, pte uint64)) {
	end = min(end, UserTop)
	var walk func(table uint64, level int, base uint64)
	walk = func(table uint64, level int, base uint64) {
		span := uint64(PageSize) << (9 * uint(level)) // bytes one entry covers
		for i := uint64(0); i < 512; i++ {
			lo := base + i*span
			if lo+span <= start || lo >= end {
				continue
			}
			v := m.read(table + 8*i)
			if level == 0 {
				if v != 0 {
					fn(lo, v)
				}
				continue
			}
			if v&PTEPresent == 0 || v&PTEHuge != 0 || !m.validTable(v&PTEAddrMask) {
				continue
			}
			walk(v&PTEAddrMask, level-1, lo)
		}
	}
	if start < end {
		walk(PML4Phys, 3, 0)
	}
}

// Lookup returns va's leaf entry (zero if none).
func (m *MMU) Lookup(va uint64) uint64 {
	e, ok, _ := m.entry(va, false)
	if !ok {
		return 0
	}
	return m.read(e)
}

// Set writes va's leaf entry, creating tables as needed.
func (m *MMU) Set(va, pte uint64) error {
	if va >= UserTop {
		return fmt.Errorf("vm: map of kernel address %#x", va)
	}
	e, _, err := m.entry(va, true)
	if err != nil {
		return err
	}
	m.write(e, pte)
	return nil
}

// Clear zeroes va's leaf entry if it exists and returns the old value.
func (m *MMU) Clear(va uint64) uint64 {
	e, ok, _ := m.entry(va, false)
	if !ok {
		return 0
	}
	old := m.read(e)
	if old != 0 {
		m.write(e, 0)
	}
	return old
}

// Translate returns the physical address of va, checking that the page is
// present, user-accessible and (for writes) writable.
func (m *MMU) Translate(va uint64, write bool) (uint64, bool) {
	if va >= UserTop {
		return 0, false
	}
	pte := m.Lookup(va)
	if pte&(PTEPresent|PTEUser) != PTEPresent|PTEUser || (write && pte&PTEWrite == 0) {
		return 0, false
	}
	pa := pte & PTEAddrMask
	if pa < FramesStart || pa+PageSize > m.mem.Size() {
		return 0, false // the stub's user mapping, or a corrupted entry
	}
	return pa | va&(PageSize-1), true
}

// setupKernel writes the fixed tables (PML4 and the direct map) before
// the guest first runs.
func (m *MMU) setupKernel() {
	size := m.mem.Size()
	m.mem.setU64(PML4Phys+8*index(DirectMap, 3), DirectPDPT|PTEPresent|PTEWrite|PTEAccessed)
	for gib := uint64(0); gib*(1<<30) < size; gib++ {
		pd := DirectPDs + gib*PageSize
		m.mem.setU64(DirectPDPT+8*gib, pd|PTEPresent|PTEWrite|PTEAccessed)
		for i := uint64(0); i < 512; i++ {
			pa := gib<<30 | i<<21
			if pa >= size {
				break
			}
			v := pa | PTEPresent | PTEWrite | PTEAccessed | PTEDirty | PTEHuge
			if pa != 0 {
				v |= PTENoExec // only the first 2 MiB (the stub) is executable
			}
			m.mem.setU64(pd+8*i, v)
		}
	}
}
