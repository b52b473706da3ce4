package linux

import (
	"encoding/binary"

	"forkvm/internal/vm"

	"golang.org/x/sys/unix"
)

// Access to the program's memory from the VMM, as copy_from_user and
// copy_to_user are in Linux: every page is translated through the guest's
// page tables and checked for user access (and write permission when
// writing), so a bad pointer gives EFAULT rather than touching memory the
// program cannot.

// copyIn reads len(dst) bytes at guest address va.
func (p *Process) copyIn(va uint64, dst []byte) error {
	return p.userRange(va, uint64(len(dst)), false, func(host []byte, off int) {
		copy(dst[off:], host)
	})
}

// copyOut writes src at guest address va.
func (p *Process) copyOut(va uint64, src []byte) error {
	return p.userRange(va, uint64(len(src)), true, func(host []byte, off int) {
		copy(host, src[off:])
	})
}

// userRange calls fn with the host bytes backing [va, va+n), page by page.
func (p *Process) userRange(va, n uint64, write bool, fn func(host []byte, off int)) error {
	if n == 0 {
		return nil
	}
	if va+n < va || va+n > vm.UserTop {
		return unix.EFAULT
	}
	mem := p.m.Mem.Data
	off := 0
	for n > 0 {
		pa, ok := p.m.MMU.Translate(va, write)
		if !ok {
			return unix.EFAULT
		}
		chunk := vm.PageSize - va%vm.PageSize
		if chunk > n {
			chunk = n
		}
		fn(mem[pa:pa+chunk], off)
		off += int(chunk)
		va += chunk
		n -= chunk
	}
	return nil
}

// readString reads a NUL-terminated string of at most max bytes.
func (p *Process) readString(va uint64, max int) (string, error) {
	var buf []byte
	for len(buf) < max {
		pa, ok := p.m.MMU.Translate(va, false)
		if !ok {
			return "", unix.EFAULT
		}
		chunk := int(vm.PageSize - va%vm.PageSize)
		page := p.m.Mem.Data[pa : pa+uint64(chunk)]
		for i, c := range page {
			if c == 0 {
				return string(append(buf, page[:i]...)), nil
			}
		}
		buf = append(buf, page...)
		va += uint64(chunk)
	}
	return "", unix.ENAMETOOLONG
}

func (p *Process) readU64(va uint64) (uint64, error) {
	var b [8]byte
	if err := p.copyIn(va, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func (p *Process) writeU64(va, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return p.copyOut(va, b[:])
}

func (p *Process) writeU32(va uint64, v uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return p.copyOut(va, b[:])
}
