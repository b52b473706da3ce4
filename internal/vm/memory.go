package vm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrNoMemory is returned when the guest's physical memory is exhausted.
var ErrNoMemory = errors.New("guest memory exhausted")

// Memory is the guest's physical memory as the host sees it.
type Memory struct {
	// Data is guest physical memory; Data[pa] is the byte at address pa.
	Data []byte
	// CleanFrom is the lowest address from which the backing (anonymous
	// memory, or a snapshot file) is known to hold only zeros.
	CleanFrom uint64
}

// NewMemory maps size bytes of zeroed, lazily allocated memory.
func NewMemory(size uint64) (*Memory, error) {
	if size < 2*FramesStart || size > MaxMemory || size%(2<<20) != 0 {
		return nil, fmt.Errorf("guest memory size %d: must be a multiple of 2 MiB between 2 MiB and %d GiB", size, MaxMemory>>30)
	}
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("map %d MiB of guest memory: %w", size>>20, err)
	}
	return &Memory{Data: b}, nil
}

// MapPrivate maps size bytes of fd copy-on-write: writes stay private to
// this mapping. This is the fork primitive.
func MapPrivate(fd int, size uint64) (*Memory, error) {
	b, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("map snapshot memory: %w", err)
	}
	return &Memory{Data: b}, nil
}

// Size is the size of guest physical memory.
func (m *Memory) Size() uint64 { return uint64(len(m.Data)) }

// Close unmaps the memory.
func (m *Memory) Close() error {
	if m.Data == nil {
		return nil
	}
	err := unix.Munmap(m.Data)
	m.Data = nil
	return err
}

func (m *Memory) u64(pa uint64) uint64 { return binary.LittleEndian.Uint64(m.Data[pa:]) }
func (m *Memory) setU64(pa, v uint64)  { binary.LittleEndian.PutUint64(m.Data[pa:], v) }

// ZeroPage zeroes the page at pa, giving its host memory back where the
// backing is zero there.
func (m *Memory) ZeroPage(pa uint64) {
	pa &^= PageSize - 1
	if pa+PageSize > m.Size() {
		return
	}
	if pa >= m.CleanFrom {
		_ = unix.Madvise(m.Data[pa:pa+PageSize], unix.MADV_DONTNEED)
		return
	}
	clear(m.Data[pa : pa+PageSize])
}

// Frames hands out guest physical pages above FramesStart.
//
// Frames at or above Next have never been used and are zero; freed frames
// may hold old data and are zeroed when they are handed out again.
type Frames struct {
	Next  uint64   // lowest never-allocated frame
	Limit uint64   // end of allocatable memory
	Free  []uint64 // freed frames, zeroed on reuse
	Used  uint64   // frames in use (program pages and page tables)
	mem   *Memory
}

// NewFrames returns an allocator over mem.
func NewFrames(mem *Memory) *Frames {
	return &Frames{Next: FramesStart, Limit: mem.Size(), mem: mem}
}

// Alloc returns a zeroed frame.
func (f *Frames) Alloc() (uint64, error) {
	if n := len(f.Free); n > 0 {
		pa := f.Free[n-1]
		f.Free = f.Free[:n-1]
		f.mem.ZeroPage(pa)
		f.Used++
		return pa, nil
	}
	if f.Next+PageSize > f.Limit {
		return 0, ErrNoMemory
	}
	pa := f.Next
	f.Next += PageSize
	f.Used++
	return pa, nil
}

// Available is the number of frames that can still be allocated.
func (f *Frames) Available() uint64 {
	return (f.Limit-f.Next)/PageSize + uint64(len(f.Free))
}

// Release returns a frame. Addresses that are not frames (the kernel
// area, beyond memory) are ignored.
func (f *Frames) Release(pa uint64) {
	if pa < FramesStart || pa >= f.Limit || pa%PageSize != 0 {
		return
	}
	f.Free = append(f.Free, pa)
	f.Used--
}
