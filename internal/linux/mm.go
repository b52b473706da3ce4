package linux

import (
	"bytes"
	"fmt"
	"sort"

	"forkvm/internal/vm"

	"golang.org/x/sys/unix"
)

// Address-space layout, as on x86-64 Linux without randomisation.
const (
	stackTop    = 0x7fff_ffff_f000
	stackSize   = 8 << 20
	mmapTop     = stackTop - stackSize - 256<<20 // below the stack and a guard gap
	mmapBottom  = 0x1000_0000
	pieBase     = 0x5555_5555_4000
	maxMapCount = 65530
	// mmapMinAddr is the lowest address a program may map, as Linux's
	// vm.mmap_min_addr: below it lie the stub's user mapping and the
	// touch pass's list.
	mmapMinAddr = 0x10000
)

// vma is one mapping: [start, end) with its protection and name.
type vma struct {
	start, end uint64
	prot       int
	shared     bool
	name       string // "[heap]", "[stack]", a path, or ""
	offset     uint64 // file offset of start
	dev, ino   uint64
}

// AddressSpace is the program's virtual memory: its mappings and the page
// tables that back them. Every accessible page is present from the moment
// it is mapped (frames are allocated eagerly; the host backs them lazily),
// so the guest never takes a page fault on valid memory.
type AddressSpace struct {
	m    *vm.Machine
	vmas []*vma // sorted by start, non-overlapping

	brkStart, brk uint64
}

func newAddressSpace(m *vm.Machine) *AddressSpace { return &AddressSpace{m: m} }

func pageUp(x uint64) uint64   { return (x + vm.PageSize - 1) &^ (vm.PageSize - 1) }
func pageDown(x uint64) uint64 { return x &^ (vm.PageSize - 1) }

// pte returns the leaf entry for a page with protection prot and frame pa.
func pte(pa uint64, prot int) uint64 {
	if prot&(unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC) == 0 {
		return pa | vm.PTEHeld
	}
	v := pa | vm.PTEPresent | vm.PTEUser | vm.PTEAccessed
	if prot&unix.PROT_WRITE != 0 {
		v |= vm.PTEWrite | vm.PTEDirty
	}
	if prot&unix.PROT_EXEC == 0 {
		v |= vm.PTENoExec
	}
	return v
}

// frameOf returns the frame behind a page, whatever its protection.
func (as *AddressSpace) frameOf(va uint64) (uint64, bool) {
	return frameIn(as.m, as.m.MMU.Lookup(va))
}

// frameIn returns the frame a leaf entry holds, if it holds a frame of
// the program's memory.
func frameIn(m *vm.Machine, e uint64) (uint64, bool) {
	pa := e & vm.PTEAddrMask
	if e&(vm.PTEPresent|vm.PTEHeld) == 0 || pa < vm.FramesStart || pa+vm.PageSize > m.Mem.Size() {
		return 0, false
	}
	return pa, true
}

// populate gives every page of [start, end) a fresh zeroed frame with
// protection prot. PROT_NONE pages get no frame until they are made
// accessible. On failure nothing stays mapped.
func (as *AddressSpace) populate(start, end uint64, prot int) error {
	if prot&(unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC) == 0 {
		return nil
	}
	if (end-start)/vm.PageSize > as.m.Frames.Available() {
		return unix.ENOMEM // refuse before allocating anything
	}
	for va := start; va < end; va += vm.PageSize {
		pa, err := as.m.Frames.Alloc()
		if err == nil {
			err = as.m.MMU.Set(va, pte(pa, prot))
			if err != nil {
				as.m.Frames.Release(pa)
			}
		}
		if err != nil {
			as.release(start, va)
			return unix.ENOMEM
		}
	}
	return nil
}

// release unmaps the pages of [start, end) and frees their frames. Its
// cost is in the pages mapped, not the size of the range.
func (as *AddressSpace) release(start, end uint64) {
	var vas []uint64
	as.m.MMU.Range(start, end, func(va, _ uint64) { vas = append(vas, va) })
	for _, va := range vas {
		if pa, ok := frameIn(as.m, as.m.MMU.Clear(va)); ok {
			as.m.Frames.Release(pa)
		}
	}
}

// reprotect changes the protection of the pages of [start, end), giving
// frames to pages that become accessible for the first time.
func (as *AddressSpace) reprotect(start, end uint64, prot int) error {
	held := map[uint64]uint64{} // va -> frame
	as.m.MMU.Range(start, end, func(va, e uint64) {
		if pa, ok := frameIn(as.m, e); ok {
			held[va] = pa
		}
	})
	accessible := prot&(unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC) != 0
	if !accessible {
		for va, pa := range held {
			if err := as.m.MMU.Set(va, pte(pa, prot)); err != nil {
				return unix.ENOMEM
			}
		}
		return nil
	}
	if need := (end-start)/vm.PageSize - uint64(len(held)); need > as.m.Frames.Available() {
		return unix.ENOMEM
	}
	for va := start; va < end; va += vm.PageSize {
		pa, ok := held[va]
		if !ok {
			var err error
			if pa, err = as.m.Frames.Alloc(); err != nil {
				return unix.ENOMEM
			}
		}
		if err := as.m.MMU.Set(va, pte(pa, prot)); err != nil {
			if !ok {
				as.m.Frames.Release(pa)
			}
			return unix.ENOMEM
		}
	}
	return nil
}

// find returns the index of the first vma that ends above addr.
func (as *AddressSpace) find(addr uint64) int {
	return sort.Search(len(as.vmas), func(i int) bool { return as.vmas[i].end > addr })
}

// lookup returns the vma containing addr, or nil.
func (as *AddressSpace) lookup(addr uint64) *vma {
	i := as.find(addr)
	if i < len(as.vmas) && as.vmas[i].start <= addr {
		return as.vmas[i]
	}
	return nil
}

// free reports whether [start, end) overlaps no mapping.
func (as *AddressSpace) free(start, end uint64) bool {
	i := as.find(start)
	return i == len(as.vmas) || as.vmas[i].start >= end
}

// findGap returns the highest free range of length bytes below mmapTop.
func (as *AddressSpace) findGap(length uint64) (uint64, bool) {
	top := uint64(mmapTop)
	for i := len(as.vmas) - 1; i >= -1; i-- {
		lo := uint64(mmapBottom)
		if i >= 0 {
			v := as.vmas[i]
			if v.start >= top {
				continue
			}
			lo = v.end
		}
		if top >= lo+length && top-length >= mmapBottom {
			return top - length, true
		}
		if i >= 0 {
			top = as.vmas[i].start
		}
	}
	return 0, false
}

// splitAt makes addr a vma boundary if it falls inside one.
func (as *AddressSpace) splitAt(addr uint64) {
	i := as.find(addr)
	if i == len(as.vmas) {
		return
	}
	v := as.vmas[i]
	if v.start >= addr {
		return
	}
	right := *v
	right.start = addr
	if v.name != "" && v.ino != 0 {
		right.offset += addr - v.start
	}
	v.end = addr
	as.vmas = append(as.vmas, nil)
	copy(as.vmas[i+2:], as.vmas[i+1:])
	as.vmas[i+1] = &right
}

// insert adds a vma for a range known to be free.
func (as *AddressSpace) insert(v *vma) {
	i := as.find(v.start)
	as.vmas = append(as.vmas, nil)
	copy(as.vmas[i+1:], as.vmas[i:])
	as.vmas[i] = v
}

// unmap removes all mappings in [start, end). Splitting a mapping can fail
// with ENOMEM at the mapping-count limit, as on Linux.
func (as *AddressSpace) unmap(start, end uint64) error {
	if len(as.vmas)+1 >= maxMapCount {
		return unix.ENOMEM
	}
	as.splitAt(start)
	as.splitAt(end)
	i := as.find(start)
	j := i
	for j < len(as.vmas) && as.vmas[j].start < end {
		v := as.vmas[j]
		as.release(v.start, v.end)
		j++
	}
	as.vmas = append(as.vmas[:i], as.vmas[j:]...)
	return nil
}

// mapAnon maps [start, end) as fresh zeroed memory, replacing any mapping.
func (as *AddressSpace) mapAnon(start, end uint64, prot int, name string) error {
	if len(as.vmas) >= maxMapCount {
		return unix.ENOMEM
	}
	if err := as.unmap(start, end); err != nil {
		return err
	}
	if err := as.populate(start, end, prot); err != nil {
		return err
	}
	as.insert(&vma{start: start, end: end, prot: prot, name: name})
	return nil
}

// protect changes the protection of [start, end), which must be mapped.
func (as *AddressSpace) protect(start, end uint64, prot int) error {
	for a := start; a < end; {
		v := as.lookup(a)
		if v == nil {
			return unix.ENOMEM
		}
		a = v.end
	}
	if len(as.vmas)+2 >= maxMapCount {
		return unix.ENOMEM
	}
	as.splitAt(start)
	as.splitAt(end)
	for i := as.find(start); i < len(as.vmas) && as.vmas[i].start < end; i++ {
		as.vmas[i].prot = prot
	}
	return as.reprotect(start, end, prot)
}

// writePhys copies data into the program's memory at va regardless of
// page protection (for the loader and file mappings).
func (as *AddressSpace) writePhys(va uint64, data []byte) {
	for len(data) > 0 {
		pa, ok := as.frameOf(va)
		n := vm.PageSize - va%vm.PageSize
		if n > uint64(len(data)) {
			n = uint64(len(data))
		}
		if ok {
			copy(as.m.Mem.Data[pa+va%vm.PageSize:], data[:n])
		}
		data = data[n:]
		va += n
	}
}

// physSlice returns the host bytes of the page at va (protection ignored).
func (as *AddressSpace) physSlice(va uint64) []byte {
	pa, ok := as.frameOf(va)
	if !ok {
		return nil
	}
	return as.m.Mem.Data[pa : pa+vm.PageSize]
}

// setBrk implements brk(2).
func (as *AddressSpace) setBrk(addr uint64) uint64 {
	if addr < as.brkStart || addr > mmapTop {
		return as.brk
	}
	oldEnd, newEnd := pageUp(as.brk), pageUp(addr)
	switch {
	case newEnd > oldEnd:
		if !as.free(oldEnd, newEnd) {
			return as.brk
		}
		if err := as.populate(oldEnd, newEnd, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return as.brk
		}
		if v := as.lookup(oldEnd - 1); v != nil && v.name == "[heap]" && v.end == oldEnd {
			v.end = newEnd
		} else {
			as.insert(&vma{start: oldEnd, end: newEnd, prot: unix.PROT_READ | unix.PROT_WRITE, name: "[heap]"})
		}
	case newEnd < oldEnd:
		if as.unmap(newEnd, oldEnd) != nil {
			return as.brk
		}
	}
	as.brk = addr
	return as.brk
}

// procMaps renders /proc/self/maps.
func (as *AddressSpace) procMaps() []byte {
	var b bytes.Buffer
	for _, v := range as.vmas {
		perm := []byte("---p")
		if v.prot&unix.PROT_READ != 0 {
			perm[0] = 'r'
		}
		if v.prot&unix.PROT_WRITE != 0 {
			perm[1] = 'w'
		}
		if v.prot&unix.PROT_EXEC != 0 {
			perm[2] = 'x'
		}
		if v.shared {
			perm[3] = 's'
		}
		line := fmt.Sprintf("%08x-%08x %s %08x %02x:%02x %d", v.start, v.end, perm, v.offset, v.dev>>8, v.dev&0xff, v.ino)
		if v.name != "" {
			line = fmt.Sprintf("%-72s %s", line, v.name)
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}
