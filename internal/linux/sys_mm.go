package linux

import (
	"bytes"
	"forkvm/internal/vm"

	"golang.org/x/sys/unix"
)

const (
	mapFixedNoreplace = 0x100000
	mremapMaymove     = 1
	mremapFixed       = 2
	mremapDontunmap   = 4
)

func sysBrk(p *Process, a args) (uint64, error) { return p.mm.setBrk(a[0]), nil }

func sysMmap(p *Process, a args) (uint64, error) {
	addr, length, prot, flags, fd, off := a[0], a[1], int(a[2]), int(a[3]), int(int32(a[4])), a[5]
	if length == 0 || off%vm.PageSize != 0 || addr%vm.PageSize != 0 && flags&(unix.MAP_FIXED|mapFixedNoreplace) != 0 {
		return 0, unix.EINVAL
	}
	if flags&(unix.MAP_PRIVATE|unix.MAP_SHARED) == 0 {
		return 0, unix.EINVAL
	}
	length = pageUp(length)
	if length == 0 || length > vm.UserTop {
		return 0, unix.ENOMEM
	}
	var src file
	if flags&unix.MAP_ANONYMOUS == 0 {
		f, err := p.fds.get(fd)
		if err != nil {
			return 0, err
		}
		if _, ok := f.(preadWriter); !ok {
			return 0, unix.ENODEV
		}
		src = f
	}
	start, err := p.mm.place(addr, length, flags)
	if err != nil {
		return 0, err
	}
	name := ""
	if src != nil {
		name = "file"
		if n, ok := src.(interface{ Path() string }); ok {
			name = n.Path()
		}
	}
	if err := p.mm.mapAnon(start, start+length, prot, name); err != nil {
		return 0, err
	}
	if src != nil {
		v := p.mm.lookup(start)
		v.offset = off
		if st, ok := src.(stater); ok {
			if s, err := st.Stat(); err == nil {
				v.dev, v.ino = s.Dev, s.Ino
			}
		}
		if err := p.mm.fill(start, length, src.(preadWriter), int64(off)); err != nil {
			p.mm.unmap(start, start+length)
			return 0, err
		}
	}
	return start, nil
}

// pread is a file that can be read at an offset.
type pread interface {
	Pread(p []byte, off int64) (int, error)
}

// inUser reports whether [addr, addr+length) lies in the user half.
func inUser(addr, length uint64) bool {
	return length <= vm.UserTop && addr <= vm.UserTop-length
}

// place chooses where a new mapping of length bytes goes.
func (as *AddressSpace) place(addr, length uint64, flags int) (uint64, error) {
	if flags&(unix.MAP_FIXED|mapFixedNoreplace) != 0 {
		if addr < mmapMinAddr {
			return 0, unix.EPERM
		}
		if !inUser(addr, length) {
			return 0, unix.ENOMEM
		}
		if flags&unix.MAP_FIXED == 0 && !as.free(addr, addr+length) {
			return 0, unix.EEXIST
		}
		return addr, nil
	}
	if addr != 0 {
		addr = pageDown(addr)
		if addr >= mmapBottom && length <= mmapTop && addr <= mmapTop-length && as.free(addr, addr+length) {
			return addr, nil
		}
	}
	start, ok := as.findGap(length)
	if !ok {
		return 0, unix.ENOMEM
	}
	return start, nil
}

// fill copies a file's bytes into [start, start+length); pages past the
// end of the file stay zero.
func (as *AddressSpace) fill(start, length uint64, f pread, off int64) error {
	for va := start; va < start+length; va += vm.PageSize {
		page := as.physSlice(va)
		if page == nil {
			return nil // PROT_NONE: no frames yet
		}
		n, err := f.Pread(page, off)
		if err != nil {
			return err
		}
		if n < len(page) {
			return nil
		}
		off += vm.PageSize
	}
	return nil
}

func sysMunmap(p *Process, a args) (uint64, error) {
	addr, length := a[0], pageUp(a[1])
	if addr%vm.PageSize != 0 || length == 0 || !inUser(addr, length) {
		return 0, unix.EINVAL
	}
	return 0, p.mm.unmap(addr, addr+length)
}

func sysMprotect(p *Process, a args) (uint64, error) {
	addr, length, prot := a[0], pageUp(a[1]), int(a[2])
	if addr%vm.PageSize != 0 || prot&^(unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC|unix.PROT_GROWSDOWN|unix.PROT_GROWSUP) != 0 {
		return 0, unix.EINVAL
	}
	if length == 0 {
		return 0, nil
	}
	if !inUser(addr, length) {
		return 0, unix.ENOMEM
	}
	return 0, p.mm.protect(addr, addr+length, prot&(unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC))
}

func sysMremap(p *Process, a args) (uint64, error) {
	old, oldLen, newLen, flags, newAddr := a[0], pageUp(a[1]), pageUp(a[2]), int(a[3]), a[4]
	if old%vm.PageSize != 0 || newLen == 0 || oldLen == 0 || flags&mremapDontunmap != 0 ||
		flags&mremapFixed != 0 && flags&mremapMaymove == 0 {
		return 0, unix.EINVAL
	}
	if !inUser(old, oldLen) || !inUser(0, newLen) {
		return 0, unix.EFAULT
	}
	as := p.mm
	v := as.lookup(old)
	if v == nil || oldLen > v.end-old {
		return 0, unix.EFAULT
	}
	if flags&mremapFixed == 0 {
		if newLen <= oldLen {
			return old, as.unmap(old+newLen, old+oldLen)
		}
		if inUser(old, newLen) && as.free(old+oldLen, old+newLen) {
			if err := as.populate(old+oldLen, old+newLen, v.prot); err != nil {
				return 0, err
			}
			grown := *v
			grown.start, grown.end = old+oldLen, old+newLen
			if v.ino != 0 {
				grown.offset = v.offset + (grown.start - v.start)
			}
			as.insert(&grown)
			as.merge(old)
			return old, nil
		}
		if flags&mremapMaymove == 0 {
			return 0, unix.ENOMEM
		}
		var ok bool
		if newAddr, ok = as.findGap(newLen); !ok {
			return 0, unix.ENOMEM
		}
	} else {
		if newAddr%vm.PageSize != 0 || newAddr < mmapMinAddr || !inUser(newAddr, newLen) || rangesOverlap(old, oldLen, newAddr, newLen) {
			return 0, unix.EINVAL
		}
		if err := as.unmap(newAddr, newAddr+newLen); err != nil {
			return 0, err
		}
	}
	return newAddr, as.move(old, oldLen, newAddr, newLen)
}

func rangesOverlap(a, alen, b, blen uint64) bool { return a < b+blen && b < a+alen }

// move relocates the mapping at [old, old+oldLen), which one vma holds, to
// newAddr (a free range), growing or shrinking it to newLen. Frames move
// with their pages; the mapping keeps its protection, name and file.
func (as *AddressSpace) move(old, oldLen, newAddr, newLen uint64) error {
	v := *as.lookup(old)
	if v.ino != 0 {
		v.offset += old - v.start
	}
	keep := min(oldLen, newLen)
	// Room for the page tables of the new place, so the move cannot fail
	// half-way.
	if keep/(2<<20)+8 > as.m.Frames.Available() {
		return unix.ENOMEM
	}
	if newLen > oldLen {
		if err := as.populate(newAddr+oldLen, newAddr+newLen, v.prot); err != nil {
			return err
		}
	}
	type entry struct{ va, e uint64 }
	var moved []entry
	as.m.MMU.Range(old, old+keep, func(va, e uint64) { moved = append(moved, entry{va, e}) })
	for _, m := range moved {
		as.m.MMU.Clear(m.va)
		if err := as.m.MMU.Set(newAddr+(m.va-old), m.e); err != nil {
			if pa, ok := frameIn(as.m, m.e); ok {
				as.m.Frames.Release(pa)
			}
		}
	}
	if err := as.unmap(old, old+oldLen); err != nil {
		return err
	}
	v.start, v.end = newAddr, newAddr+newLen
	as.insert(&v)
	return nil
}

// merge joins the vma at addr with its right neighbour when they match.
func (as *AddressSpace) merge(addr uint64) {
	i := as.find(addr)
	if i+1 < len(as.vmas) {
		a, b := as.vmas[i], as.vmas[i+1]
		if a.end == b.start && a.prot == b.prot && a.name == b.name && a.ino == 0 && b.ino == 0 {
			a.end = b.end
			as.vmas = append(as.vmas[:i+1], as.vmas[i+2:]...)
		}
	}
}

func sysMadvise(p *Process, a args) (uint64, error) {
	addr, length := a[0], pageUp(a[1])
	if addr%vm.PageSize != 0 || !inUser(addr, length) {
		return 0, unix.EINVAL
	}
	if a[2] != unix.MADV_DONTNEED {
		return 0, nil
	}
	end := addr + length
	for i := p.mm.find(addr); i < len(p.mm.vmas) && p.mm.vmas[i].start < end; i++ {
		v := p.mm.vmas[i]
		lo, hi := max(v.start, addr), min(v.end, end)
		p.m.MMU.Range(lo, hi, func(_, e uint64) {
			if pa, ok := frameIn(p.m, e); ok {
				p.m.Mem.ZeroPage(pa)
			}
		})
		if v.ino != 0 {
			// File-backed private pages go back to the file's contents.
			p.refill(v, lo, hi)
		}
	}
	return 0, nil
}

// refill copies a file mapping's contents back into [start, end).
func (p *Process) refill(v *vma, start, end uint64) {
	f, err := p.fs.Open("/", v.name, unix.O_RDONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_ = p.mm.fill(start, end-start, f, int64(v.offset+start-v.start))
}

func sysMincore(p *Process, a args) (uint64, error) {
	addr, length := a[0], pageUp(a[1])
	if addr%vm.PageSize != 0 {
		return 0, unix.EINVAL
	}
	if !inUser(addr, length) {
		return 0, unix.ENOMEM
	}
	// Every page must be mapped; each mapped page is resident.
	for va := addr; va < addr+length; {
		v := p.mm.lookup(va)
		if v == nil {
			return 0, unix.ENOMEM
		}
		va = v.end
	}
	const chunk = 64 << 10
	ones := bytes.Repeat([]byte{1}, chunk)
	for n, out := length/vm.PageSize, a[2]; n > 0; {
		c := min(n, chunk)
		if err := p.copyOut(out, ones[:c]); err != nil {
			return 0, err
		}
		n, out = n-c, out+c
	}
	return 0, nil
}
