package vfs

import (
	"crypto/rand"
	"sort"

	"golang.org/x/sys/unix"
)

// fileKind says which layer an open File reads from.
type fileKind uint8

const (
	kindPath fileKind = iota // O_PATH: a handle for Stat and Path only
	kindDir                  // any directory
	kindHost                 // regular file of the host root, read with pread
	kindMem                  // regular file of the memory layer
	kindSyn                  // synthetic file or device
)

// File is one open file description. Duplicated descriptors share it, and
// with it the offset and status flags.
//
// A File reading a host file keeps reading it even if the path is later
// copied up and changed through another File, as with overlayfs; Files
// opened on the memory layer all see each other's writes.
type File struct {
	fs     *FS
	kind   fileKind
	path   string
	flags  int
	off    int64
	closed bool

	loc       loc    // what was opened; loc.mem is the memory node, if any
	parentIno uint64 // ".." in ReadDir
	fd        int    // kindHost: host descriptor, O_RDONLY
	size      int64  // kindHost: size at open; the root does not change
	content   []byte // kindSyn files: content generated at open
}

// statusFlags are the flags open keeps in the file description, like
// Linux's f_flags.
const statusFlags = ^(unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_TRUNC | unix.O_CLOEXEC)

func (fs *FS) newFile(kind fileKind, w *walked, flags int) *File {
	f := &File{fs: fs, kind: kind, path: w.node.path, flags: flags & statusFlags, loc: w.node, fd: -1}
	if kind == kindDir {
		p := &w.node // ".." of "/" is "/"
		if len(w.dirs) > 0 {
			p = w.parent()
		}
		if st, err := fs.statLoc(p); err == nil {
			f.parentIno = st.Ino
		}
	}
	if n := f.loc.mem; n != nil {
		n.opens++
	}
	return f
}

func (f *File) canRead() bool {
	return f.kind != kindPath && f.flags&unix.O_ACCMODE != unix.O_WRONLY
}

func (f *File) canWrite() bool {
	return f.kind != kindPath && f.flags&unix.O_ACCMODE != unix.O_RDONLY
}

// Read reads at the file offset and advances it; 0, nil at end of file.
func (f *File) Read(p []byte) (int, error) {
	n, err := f.pread(p, f.off)
	if f.kind != kindSyn || !f.loc.syn.isDevice() {
		f.off += int64(n)
	}
	return n, err
}

// Pread reads at off without moving the file offset.
func (f *File) Pread(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, unix.EINVAL
	}
	return f.pread(p, off)
}

func (f *File) pread(p []byte, off int64) (int, error) {
	if f.closed || !f.canRead() {
		return 0, unix.EBADF
	}
	switch f.kind {
	case kindDir:
		return 0, unix.EISDIR
	case kindHost:
		if len(p) == 0 {
			return 0, nil
		}
		n, err := retryEINTR(func() (int, error) { return unix.Pread(f.fd, p, off) })
		if err != nil {
			return 0, errno(err)
		}
		return n, nil
	case kindMem:
		b := f.loc.mem.bytes()
		if off >= int64(len(b)) {
			return 0, nil
		}
		return copy(p, b[off:]), nil
	}
	switch f.loc.syn.kind {
	case synNull:
		return 0, nil
	case synZero:
		clear(p)
		return len(p), nil
	case synRandom:
		rand.Read(p) // never fails on Linux (getrandom)
		return len(p), nil
	}
	if off >= int64(len(f.content)) {
		return 0, nil
	}
	return copy(p, f.content[off:]), nil
}

// Write writes at the file offset (at the end with O_APPEND) and advances
// it. A write that does not fit in the writable limit writes nothing and
// fails with ENOSPC.
func (f *File) Write(p []byte) (int, error) {
	if f.closed || !f.canWrite() {
		return 0, unix.EBADF
	}
	off := f.off
	if f.kind == kindMem && f.flags&unix.O_APPEND != 0 {
		off = f.loc.mem.size()
	}
	n, err := f.pwrite(p, off)
	if f.kind == kindMem {
		f.off = off + int64(n)
	}
	return n, err
}

// Pwrite writes at off without moving the file offset. As on Linux, a
// file opened with O_APPEND is appended to whatever off says.
func (f *File) Pwrite(p []byte, off int64) (int, error) {
	if f.closed || !f.canWrite() {
		return 0, unix.EBADF
	}
	if off < 0 {
		return 0, unix.EINVAL
	}
	if f.kind == kindMem && f.flags&unix.O_APPEND != 0 {
		off = f.loc.mem.size()
	}
	return f.pwrite(p, off)
}

func (f *File) pwrite(p []byte, off int64) (int, error) {
	switch f.kind {
	case kindMem:
		return f.fs.writeAt(f.loc.mem, p, off)
	case kindSyn:
		if f.loc.syn.isDevice() {
			return len(p), nil // discarded, as by the kernel's null, zero and random
		}
	}
	return 0, unix.EBADF
}

// Seek moves the file offset like lseek(2). SEEK_DATA and SEEK_HOLE treat
// every file as one extent of data. Devices always stay at 0.
func (f *File) Seek(off int64, whence int) (int64, error) {
	if f.closed || f.kind == kindPath {
		return 0, unix.EBADF
	}
	if f.kind == kindSyn && f.loc.syn.isDevice() {
		return 0, nil
	}
	var base int64
	switch whence {
	case unix.SEEK_SET:
	case unix.SEEK_CUR:
		base = f.off
	case unix.SEEK_END:
		if f.kind == kindDir {
			return 0, unix.EINVAL
		}
		base = f.Size()
	case unix.SEEK_DATA, unix.SEEK_HOLE:
		size := f.Size()
		if f.kind == kindDir || off < 0 {
			return 0, unix.EINVAL
		}
		if off >= size {
			return 0, unix.ENXIO
		}
		if whence == unix.SEEK_HOLE {
			off = size
		}
		f.off = off
		return off, nil
	default:
		return 0, unix.EINVAL
	}
	n := base + off
	if (off > 0 && n < base) || n < 0 {
		return 0, unix.EINVAL
	}
	f.off = n
	return n, nil
}

// Stat is fstat(2).
func (f *File) Stat() (Stat, error) {
	if f.closed {
		return Stat{}, unix.EBADF
	}
	if f.kind == kindHost {
		var st unix.Stat_t
		if err := unix.Fstat(f.fd, &st); err != nil {
			return Stat{}, errno(err)
		}
		return f.fs.hostStat(&st), nil
	}
	if f.loc.host != "" && f.loc.mem == nil && !f.loc.synTop() {
		// A host directory or O_PATH handle: look again, it is cheap.
		var st unix.Stat_t
		if err := f.fs.host.lstat(f.loc.host, &st); err != nil {
			return Stat{}, err
		}
		return f.fs.hostStat(&st), nil
	}
	return f.fs.statLoc(&f.loc)
}

// Truncate is ftruncate(2); the file must be open for writing.
func (f *File) Truncate(size int64) error {
	if f.closed || f.kind == kindPath {
		return unix.EBADF
	}
	if f.kind != kindMem || !f.canWrite() {
		return unix.EINVAL
	}
	return f.fs.setSize(f.loc.mem, size)
}

// Chmod is fchmod(2). A host file is copied up by its path first; this
// File keeps reading the host copy, which has the same content.
func (f *File) Chmod(mode uint32) error {
	if f.closed {
		return unix.EBADF
	}
	if n := f.loc.mem; n != nil {
		n.mode = n.mode&unix.S_IFMT | mode&0o7777
		n.ctime = now()
		return nil
	}
	return f.fs.Chmod("/", f.path, mode)
}

// ReadDir lists a directory whole, "." and ".." first, then the merged
// entries of all layers sorted by name, whiteouts hidden. Callers keep
// their own position (getdents) in it.
func (f *File) ReadDir() ([]Dirent, error) {
	if f.closed {
		return nil, unix.EBADF
	}
	if f.kind != kindDir {
		if f.kind == kindPath {
			return nil, unix.EBADF
		}
		return nil, unix.ENOTDIR
	}
	if n := f.loc.mem; n != nil && !n.linked {
		return nil, nil // removed while open: empty, as on Linux
	}
	ents, err := f.fs.list(&f.loc)
	if err != nil {
		return nil, err
	}
	self, err := f.fs.statLoc(&f.loc)
	if err != nil {
		return nil, err
	}
	out := make([]Dirent, 0, len(ents)+2)
	out = append(out, Dirent{Name: ".", Ino: self.Ino, Type: unix.DT_DIR}, Dirent{Name: "..", Ino: f.parentIno, Type: unix.DT_DIR})
	return append(out, ents...), nil
}

// list merges the entries of directory l across the layers.
func (fs *FS) list(l *loc) ([]Dirent, error) {
	var out []Dirent
	seen := map[string]bool{}
	if s := l.syn; s != nil {
		for _, c := range s.children {
			d := Dirent{Name: c.name, Ino: c.ino, Type: dtype(c.mode())}
			if c.transparent {
				if cl, err := fs.lookup(l, c.name); err == nil {
					if st, err := fs.statLoc(&cl); err == nil {
						d.Ino = st.Ino
					}
				}
			}
			out = append(out, d)
			seen[c.name] = true
		}
		if !s.transparent {
			return out, nil
		}
	}
	lower := l.host
	if n := l.mem; n != nil {
		for name, c := range n.children {
			if !seen[name] {
				out = append(out, Dirent{Name: name, Ino: c.ino, Type: dtype(c.mode)})
				seen[name] = true
			}
		}
		for name := range n.whiteouts {
			seen[name] = true
		}
		lower = n.lower
	}
	if lower != "" && fs.host != nil {
		ents, err := fs.host.list(lower)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if !seen[e.name] {
				out = append(out, Dirent{Name: e.name, Ino: e.ino, Type: e.typ})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Path is the canonical guest path the file was opened at.
func (f *File) Path() string { return f.path }

// Flags are the access mode and status flags, for fcntl(F_GETFL).
func (f *File) Flags() int { return f.flags }

// SetFlags changes O_APPEND and O_NONBLOCK, for fcntl(F_SETFL); other bits
// are ignored, as by Linux.
func (f *File) SetFlags(flags int) {
	const changeable = unix.O_APPEND | unix.O_NONBLOCK
	f.flags = f.flags&^changeable | flags&changeable
}

// IsDir reports whether the file is a directory.
func (f *File) IsDir() bool { return f.kind == kindDir || (f.kind == kindPath && f.loc.isDir()) }

// Size is the current size of the file in bytes.
func (f *File) Size() int64 {
	switch f.kind {
	case kindHost:
		return f.size
	case kindMem:
		return f.loc.mem.size()
	case kindSyn:
		return int64(len(f.content))
	}
	st, _ := f.Stat()
	return st.Size
}

// Close releases the file description: its host descriptor, and a memory
// file that was removed while open.
func (f *File) Close() error {
	if f.closed {
		return unix.EBADF
	}
	f.closed = true
	if f.kind == kindHost {
		unix.Close(f.fd)
		f.fd = -1
	}
	if n := f.loc.mem; n != nil {
		n.opens--
		f.fs.release(n)
	}
	return nil
}

// CloneInto returns the same open file description in dst, a Clone of
// the FS f belongs to, for a forked process: same path, flags and offset,
// and the memory file it refers to is dst's copy (brought along if it was
// removed while open). Call it once per description, not per descriptor,
// to keep descriptors that share an offset sharing it.
func (f *File) CloneInto(dst *FS) (*File, error) {
	if f.closed {
		return nil, unix.EBADF
	}
	g := *f
	g.fs = dst
	if n := f.loc.mem; n != nil {
		m := dst.nodes[n.id]
		if m == nil {
			m = dst.copyNode(n)
			m.linked = false
			if m.children != nil {
				m.children = map[string]*mnode{}
			}
			dst.nodes[m.id] = m
		}
		m.opens++
		g.loc.mem = m
	}
	if f.kind == kindHost {
		fd, err := unix.FcntlInt(uintptr(f.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			if m := g.loc.mem; m != nil {
				m.opens--
			}
			return nil, errno(err)
		}
		g.fd = fd
	}
	return &g, nil
}
