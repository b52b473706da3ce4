package linux

import (
	"crypto/rand"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"forkvm/internal/vm"

	"golang.org/x/sys/unix"
)

// Auxiliary vector keys (<linux/auxvec.h>, <asm/auxvec.h>).
const (
	atNull          = 0
	atPhdr          = 3
	atPhent         = 4
	atPhnum         = 5
	atPagesz        = 6
	atBase          = 7
	atFlags         = 8
	atEntry         = 9
	atUID           = 11
	atEUID          = 12
	atGID           = 13
	atEGID          = 14
	atPlatform      = 15
	atHwcap         = 16
	atClktck        = 17
	atSecure        = 23
	atRandom        = 25
	atHwcap2        = 26
	atExecfn        = 31
	atMinsigstksz   = 51
	hwcap2FSGSBASE  = 1 << 1
	maxInterpLength = 4096
)

// image is an ELF file mapped into the address space.
type image struct {
	bias   uint64 // load address minus link address
	entry  uint64
	phdr   uint64 // address of the program headers in memory
	phnum  int
	end    uint64 // end of the highest segment
	interp string
}

// openExec opens the program file: through the guest's file system when
// it has a root, otherwise from the host path (static programs only).
func (p *Process) openExec(path string) (io.ReaderAt, uint64, uint64, func(), error) {
	if p.cfg.Root == "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, 0, nil, err
		}
		return f, 0, 0, func() { f.Close() }, nil
	}
	f, err := p.fs.Open(p.cwd, path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, 0, 0, nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	st, _ := f.Stat()
	return readerAt{f}, st.Dev, st.Ino, func() { f.Close() }, nil
}

// readerAt adapts a file with Pread to io.ReaderAt.
type readerAt struct{ f pread }

func (r readerAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := r.f.Pread(b, off)
	if err == nil && n < len(b) {
		err = io.EOF
	}
	return n, err
}

// load maps the program (and its interpreter) and builds the initial stack.
func (p *Process) load() error {
	exe, err := p.loadELF(p.cfg.Path, false)
	if err != nil {
		return err
	}
	p.exePath = joinGuest(p.cwd, p.cfg.Path)
	if p.cfg.Root == "" {
		if abs, err := filepath.Abs(p.cfg.Path); err == nil {
			p.exePath = abs
		}
	}
	p.fs.SetExePath(p.exePath)
	entry, base := exe.entry, uint64(0)
	if exe.interp != "" {
		if p.cfg.Root == "" {
			return fmt.Errorf("%s is dynamically linked (interpreter %s): give a root directory (--rootfs) that holds its libraries", p.cfg.Path, exe.interp)
		}
		in, err := p.loadELF(exe.interp, true)
		if err != nil {
			return fmt.Errorf("interpreter of %s: %w", p.cfg.Path, err)
		}
		if in.interp != "" {
			return fmt.Errorf("interpreter %s has an interpreter itself", exe.interp)
		}
		entry, base = in.entry, in.bias
	}
	p.mm.brkStart = pageUp(exe.end)
	p.mm.brk = p.mm.brkStart
	sp, err := p.buildStack(exe, base)
	if err != nil {
		return err
	}
	return p.m.SetEntry(entry, sp)
}

// loadELF maps an ELF executable or shared object.
func (p *Process) loadELF(path string, interp bool) (*image, error) {
	r, dev, ino, done, err := p.openExec(path)
	if err != nil {
		return nil, err
	}
	defer done()
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("%s: not an ELF executable: %w", path, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("%s: not an x86-64 ELF executable (%v, %v)", path, f.Class, f.Machine)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return nil, fmt.Errorf("%s: ELF type %v is not executable", path, f.Type)
	}
	img := &image{phnum: len(f.Progs)}
	var lo, hi uint64 = ^uint64(0), 0
	for _, ph := range f.Progs {
		switch ph.Type {
		case elf.PT_LOAD:
			if ph.Memsz < ph.Filesz || ph.Vaddr+ph.Memsz < ph.Vaddr {
				return nil, fmt.Errorf("%s: malformed PT_LOAD segment", path)
			}
			lo = min(lo, pageDown(ph.Vaddr))
			hi = max(hi, pageUp(ph.Vaddr+ph.Memsz))
		case elf.PT_INTERP:
			if interp {
				return nil, fmt.Errorf("%s: interpreter has PT_INTERP", path)
			}
			if ph.Filesz == 0 || ph.Filesz > maxInterpLength {
				return nil, fmt.Errorf("%s: malformed PT_INTERP", path)
			}
			b := make([]byte, ph.Filesz)
			if _, err := r.ReadAt(b, int64(ph.Off)); err != nil {
				return nil, fmt.Errorf("%s: read PT_INTERP: %w", path, err)
			}
			img.interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if hi == 0 || hi-lo > 1<<40 {
		return nil, fmt.Errorf("%s: no loadable segments", path)
	}
	if f.Type == elf.ET_DYN {
		base := uint64(pieBase)
		if interp || !p.mm.free(base, base+hi-lo) {
			var ok bool
			if base, ok = p.mm.findGap(hi - lo); !ok {
				return nil, fmt.Errorf("%s: no room in the address space", path)
			}
		}
		img.bias = base - lo
	} else if lo < 0x10000 {
		return nil, fmt.Errorf("%s: segment at %#x is below the lowest mappable address", path, lo)
	}
	img.phdr, err = phdrAddr(r, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	img.phdr += img.bias
	img.entry = f.Entry + img.bias
	for _, ph := range f.Progs {
		if ph.Type != elf.PT_LOAD || ph.Memsz == 0 {
			continue
		}
		if err := p.loadSegment(r, ph, img.bias, path, dev, ino); err != nil {
			return nil, err
		}
		img.end = max(img.end, img.bias+ph.Vaddr+ph.Memsz)
	}
	return img, nil
}

// phdrAddr returns the link-time address of the program headers: PT_PHDR
// if present, else where the segment holding e_phoff puts them.
func phdrAddr(r io.ReaderAt, f *elf.File) (uint64, error) {
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_PHDR {
			return ph.Vaddr, nil
		}
	}
	var b [8]byte
	if _, err := r.ReadAt(b[:], 32); err != nil { // e_phoff
		return 0, err
	}
	off := binary.LittleEndian.Uint64(b[:])
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_LOAD && ph.Off <= off && off < ph.Off+ph.Filesz {
			return ph.Vaddr + off - ph.Off, nil
		}
	}
	return 0, errors.New("program headers are not in a loadable segment")
}

func segProt(fl elf.ProgFlag) int {
	prot := 0
	if fl&elf.PF_R != 0 {
		prot |= unix.PROT_READ
	}
	if fl&elf.PF_W != 0 {
		prot |= unix.PROT_WRITE
	}
	if fl&elf.PF_X != 0 {
		prot |= unix.PROT_EXEC
	}
	return prot
}

// loadSegment maps one PT_LOAD segment and copies its file bytes in.
func (p *Process) loadSegment(r io.ReaderAt, ph *elf.Prog, bias uint64, path string, dev, ino uint64) error {
	va := bias + ph.Vaddr
	start, end := pageDown(va), pageUp(va+ph.Memsz)
	prot := segProt(ph.Flags)
	if v := p.mm.lookup(start); v != nil {
		// The first page is shared with the previous segment.
		if err := p.mm.protect(start, start+vm.PageSize, v.prot|prot); err != nil {
			return err
		}
		start += vm.PageSize
	}
	if start < end {
		if !p.mm.free(start, end) {
			return fmt.Errorf("%s: segment at %#x overlaps another mapping", path, va)
		}
		if err := p.mm.mapAnon(start, end, prot, path); err != nil {
			return fmt.Errorf("%s: map segment at %#x: %w", path, va, errnoText(err))
		}
		v := p.mm.lookup(start)
		v.offset, v.dev, v.ino = pageDown(ph.Off)+(start-pageDown(va)), dev, ino
	}
	// Copy from the start of the file page holding the segment, as mmap of
	// the file would show it; bytes past Filesz stay zero.
	off := pageDown(ph.Off)
	dst := pageDown(va)
	n := ph.Filesz + (ph.Off - off)
	buf := make([]byte, 1<<20)
	for n > 0 {
		chunk := min(n, uint64(len(buf)))
		got, err := r.ReadAt(buf[:chunk], int64(off))
		if err != nil && !(errors.Is(err, io.EOF) && uint64(got) == chunk) {
			return fmt.Errorf("%s: read segment: %w", path, err)
		}
		p.mm.writePhys(dst, buf[:chunk])
		off, dst, n = off+chunk, dst+chunk, n-chunk
	}
	return nil
}

func errnoText(err error) error {
	if errors.Is(err, unix.ENOMEM) {
		return errors.New("out of guest memory (raise --memory)")
	}
	return err
}

// buildStack maps the stack and writes argc, argv, envp and auxv.
func (p *Process) buildStack(exe *image, interpBase uint64) (uint64, error) {
	if err := p.mm.mapAnon(stackTop-stackSize, stackTop, unix.PROT_READ|unix.PROT_WRITE, "[stack]"); err != nil {
		return 0, fmt.Errorf("map stack: %w", errnoText(err))
	}
	sp := uint64(stackTop)
	push := func(b []byte) uint64 {
		sp -= uint64(len(b))
		p.mm.writePhys(sp, b)
		return sp
	}
	pushStr := func(s string) uint64 { return push(append([]byte(s), 0)) }
	execfn := pushStr(p.cfg.Path)
	var argv, envp []uint64
	for _, a := range p.cfg.Args {
		argv = append(argv, pushStr(a))
	}
	for _, e := range p.cfg.Env {
		envp = append(envp, pushStr(e))
	}
	platform := pushStr("x86_64")
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return 0, err
	}
	random := push(rnd[:])
	hwcap, hwcap2 := p.hwcaps()
	auxv := []uint64{
		atPhdr, exe.phdr, atPhent, 56, atPhnum, uint64(exe.phnum),
		atPagesz, vm.PageSize, atBase, interpBase, atFlags, 0,
		atEntry, exe.entry, atUID, 0, atEUID, 0, atGID, 0, atEGID, 0,
		atSecure, 0, atRandom, random, atHwcap, hwcap, atHwcap2, hwcap2,
		atPlatform, platform, atExecfn, execfn, atClktck, 100,
		atMinsigstksz, uint64(p.sys.XSAVESize) + 1024,
		atNull, 0,
	}
	words := 1 + len(argv) + 1 + len(envp) + 1 + len(auxv)
	sp = (sp - uint64(8*words)) &^ 15
	if stackTop-sp > stackSize/2 {
		return 0, errors.New("arguments and environment are too large (E2BIG)")
	}
	w := make([]byte, 0, 8*words)
	put := func(v uint64) { w = binary.LittleEndian.AppendUint64(w, v) }
	put(uint64(len(argv)))
	for _, a := range argv {
		put(a)
	}
	put(0)
	for _, e := range envp {
		put(e)
	}
	put(0)
	for _, a := range auxv {
		put(a)
	}
	p.mm.writePhys(sp, w)
	return sp, nil
}

// hwcaps returns AT_HWCAP (CPUID.1:EDX, as Linux reports it) and AT_HWCAP2.
func (p *Process) hwcaps() (uint64, uint64) {
	entries, _, fsgs, err := vm.GuestCPUID(p.sys)
	if err != nil {
		return 0, 0
	}
	var hw uint64
	for _, e := range entries {
		if e.Function == 1 {
			hw = uint64(e.EDX)
		}
	}
	var hw2 uint64
	if fsgs {
		hw2 |= hwcap2FSGSBASE
	}
	return hw, hw2
}
