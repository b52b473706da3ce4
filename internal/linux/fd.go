package linux

import (
	"io"

	"forkvm/internal/vfs"

	"golang.org/x/sys/unix"
)

// file is an open file description as the syscall layer sees it. Errors
// are unix.Errno values.
type file interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Close() error
}

// Optional capabilities of a file.
type (
	seeker interface {
		Seek(off int64, whence int) (int64, error)
	}
	preadWriter interface {
		Pread(p []byte, off int64) (int, error)
		Pwrite(p []byte, off int64) (int, error)
	}
	stater interface {
		Stat() (vfs.Stat, error)
	}
	// flagger files keep the O_* status flags for fcntl.
	flagger interface {
		Flags() int
		SetFlags(int)
	}
	// poller files report readiness for poll/select.
	poller interface {
		Readable() bool
		Writable() bool
	}
)

// fdEntry is one slot of the descriptor table.
type fdEntry struct {
	f       file
	cloexec bool
	refs    *int // open descriptors sharing f (dup)
}

// FDTable maps descriptor numbers to open files.
type FDTable struct {
	fds []*fdEntry
}

const maxFDs = 1024

func newFDTable() *FDTable { return &FDTable{} }

func (t *FDTable) install(fd int, f file, cloexec bool) {
	for len(t.fds) <= fd {
		t.fds = append(t.fds, nil)
	}
	n := 1
	t.fds[fd] = &fdEntry{f: f, cloexec: cloexec, refs: &n}
}

// get returns the file for fd.
func (t *FDTable) get(fd int) (file, error) {
	if fd < 0 || fd >= len(t.fds) || t.fds[fd] == nil {
		return nil, unix.EBADF
	}
	return t.fds[fd].f, nil
}

// lowest returns the lowest free descriptor >= from.
func (t *FDTable) lowest(from int) (int, error) {
	for fd := max(from, 0); fd < maxFDs; fd++ {
		if fd >= len(t.fds) || t.fds[fd] == nil {
			return fd, nil
		}
	}
	return 0, unix.EMFILE
}

// add installs f at the lowest free descriptor.
func (t *FDTable) add(f file, cloexec bool) (int, error) {
	fd, err := t.lowest(0)
	if err != nil {
		return 0, err
	}
	t.install(fd, f, cloexec)
	return fd, nil
}

// dup makes newfd (or the lowest free >= min when newfd < 0) refer to
// oldfd's file.
func (t *FDTable) dup(oldfd, newfd, min int, cloexec bool) (int, error) {
	if oldfd < 0 || oldfd >= len(t.fds) || t.fds[oldfd] == nil {
		return 0, unix.EBADF
	}
	e := t.fds[oldfd]
	if newfd < 0 {
		var err error
		if newfd, err = t.lowest(min); err != nil {
			return 0, err
		}
	} else if newfd >= maxFDs {
		return 0, unix.EBADF
	} else {
		t.close(newfd)
	}
	for len(t.fds) <= newfd {
		t.fds = append(t.fds, nil)
	}
	*e.refs++
	t.fds[newfd] = &fdEntry{f: e.f, cloexec: cloexec, refs: e.refs}
	return newfd, nil
}

// close closes fd, and its file when no descriptor refers to it any more.
func (t *FDTable) close(fd int) error {
	if fd < 0 || fd >= len(t.fds) || t.fds[fd] == nil {
		return unix.EBADF
	}
	e := t.fds[fd]
	t.fds[fd] = nil
	*e.refs--
	if *e.refs == 0 {
		return e.f.Close()
	}
	return nil
}

func (t *FDTable) closeAll() {
	for fd := range t.fds {
		if t.fds[fd] != nil {
			t.close(fd)
		}
	}
}

// stdinFile is fd 0: the program's input.
type stdinFile struct {
	r io.Reader
}

func (f *stdinFile) Read(p []byte) (int, error) {
	if f.r == nil {
		return 0, nil
	}
	n, err := f.r.Read(p)
	if err != nil && err != io.EOF && n == 0 {
		return 0, unix.EIO
	}
	return n, nil
}
func (f *stdinFile) Write(p []byte) (int, error) { return 0, unix.EBADF }
func (f *stdinFile) Close() error                { return nil }
func (f *stdinFile) Stat() (vfs.Stat, error)     { return charDevStat(0), nil }
func (f *stdinFile) Readable() bool              { return true }
func (f *stdinFile) Writable() bool              { return false }

// outFile is fd 1 or 2: captured output.
type outFile struct {
	w io.Writer
}

func (f *outFile) Read(p []byte) (int, error) { return 0, unix.EBADF }
func (f *outFile) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, nil
}
func (f *outFile) Close() error            { return nil }
func (f *outFile) Stat() (vfs.Stat, error) { return charDevStat(1), nil }
func (f *outFile) Readable() bool          { return false }
func (f *outFile) Writable() bool          { return true }

// charDevStat describes the standard streams: character devices that are
// not terminals (so isatty is false and output is block-buffered).
func charDevStat(n uint64) vfs.Stat {
	return vfs.Stat{Dev: 0x16, Ino: 3 + n, Mode: unix.S_IFIFO | 0o600, Nlink: 1, Blksize: 4096}
}
