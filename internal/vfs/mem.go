package vfs

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Accounting of the memory layer. Metadata is charged too, or a guest
// could exhaust host memory with millions of empty files.
const (
	defaultWritableLimit = 64 << 20
	// metaCost is charged for every memory file, directory, symlink and
	// whiteout, on top of file contents and symlink targets.
	metaCost = 512
	// maxFileSize bounds offsets so that sizes never overflow.
	maxFileSize = 1 << 40
)

// Device numbers the guest sees for each layer.
const (
	synDev      = 0x05   // synthetic nodes
	memDev      = 0x2e   // nodes born in the memory layer
	hostDevBase = 0x0801 // host root; further host file systems count up
	memInoBase  = 1 << 32
)

// mnode is one node of the memory layer: a regular file, a directory or a
// symlink. Nodes copied up from the host keep the host's identity (dev and
// ino), as overlayfs does, so a file's inode number does not change when
// it is written.
type mnode struct {
	id       uint64 // identity inside the layer, kept across Clone
	dev, ino uint64
	mode     uint32
	linked   bool // reachable from the root; false once removed
	opens    int  // open Files referring to it
	cost     int64
	atime    unix.Timespec
	mtime    unix.Timespec
	ctime    unix.Timespec

	data   *fileData // regular files; nil means empty
	target string    // symlinks

	// Directories.
	children  map[string]*mnode
	whiteouts map[string]struct{} // host names deleted in this layer
	lower     string              // host directory merged beneath, relative to the root; "" for none
}

// fileData is the content of a memory file. After Clone it is shared by
// both copies and marked shared; the first to write makes its own copy.
type fileData struct {
	b      []byte
	shared atomic.Bool
}

func (n *mnode) isDir() bool  { return n.mode&unix.S_IFMT == unix.S_IFDIR }
func (n *mnode) isReg() bool  { return n.mode&unix.S_IFMT == unix.S_IFREG }
func (n *mnode) isLink() bool { return n.mode&unix.S_IFMT == unix.S_IFLNK }

func (n *mnode) size() int64 {
	switch {
	case n.isReg():
		if n.data == nil {
			return 0
		}
		return int64(len(n.data.b))
	case n.isLink():
		return int64(len(n.target))
	}
	return 4096
}

func (n *mnode) bytes() []byte {
	if n.data == nil {
		return nil
	}
	return n.data.b
}

func (n *mnode) stat() Stat {
	st := Stat{
		Dev: n.dev, Ino: n.ino, Mode: n.mode, Nlink: 1,
		Size: n.size(), Blksize: 4096,
		Atime: n.atime, Mtime: n.mtime, Ctime: n.ctime,
	}
	st.Blocks = (st.Size + 511) / 512
	if n.isDir() {
		st.Nlink = 2
	}
	if !n.linked {
		st.Nlink = 0
	}
	return st
}

func now() unix.Timespec { return unix.NsecToTimespec(time.Now().UnixNano()) }

func (n *mnode) touch() {
	t := now()
	n.mtime, n.ctime = t, t
}

// charge reserves n bytes of the writable limit.
func (fs *FS) charge(n int64) error {
	if n > 0 && fs.used+n > fs.limit {
		return unix.ENOSPC
	}
	fs.used += n
	return nil
}

// newNode creates an unlinked-to-any-directory node, charging metaCost
// plus extra. The caller links it with link.
func (fs *FS) newNode(mode uint32, extra int64) (*mnode, error) {
	if err := fs.charge(metaCost + extra); err != nil {
		return nil, err
	}
	fs.nextID++
	fs.nextIno++
	t := now()
	n := &mnode{
		id: fs.nextID, dev: memDev, ino: fs.nextIno, mode: mode, linked: true,
		cost: metaCost + extra, atime: t, mtime: t, ctime: t,
	}
	if n.isDir() {
		n.children = map[string]*mnode{}
	}
	fs.nodes[n.id] = n
	return n, nil
}

// link puts n into dir under name, replacing any whiteout there. It does
// not touch dir's times: copy-up is invisible, creation calls touch.
func (fs *FS) link(dir *mnode, name string, n *mnode) {
	if _, ok := dir.whiteouts[name]; ok {
		delete(dir.whiteouts, name)
		fs.used -= metaCost
	}
	dir.children[name] = n
	n.linked = true
}

// unlinkChild removes name from dir. If whiteout is set (the host still
// has the name beneath dir), a whiteout takes its place; the caller has
// made room for it.
func (fs *FS) unlinkChild(dir *mnode, name string, whiteout bool) {
	if n := dir.children[name]; n != nil {
		delete(dir.children, name)
		n.linked = false
		fs.release(n)
	}
	if whiteout {
		if dir.whiteouts == nil {
			dir.whiteouts = map[string]struct{}{}
		}
		dir.whiteouts[name] = struct{}{}
		fs.used += metaCost
	}
}

// release frees an unlinked node once no File refers to it.
func (fs *FS) release(n *mnode) {
	if n.linked || n.opens > 0 {
		return
	}
	if fs.nodes[n.id] != n {
		return
	}
	delete(fs.nodes, n.id)
	fs.used -= n.held()
}

// held is what n counts against the writable limit.
func (n *mnode) held() int64 {
	return n.cost + int64(len(n.bytes())) + metaCost*int64(len(n.whiteouts))
}

// own makes n's content private to this FS before it is modified.
func (n *mnode) own() {
	if n.data == nil {
		n.data = &fileData{}
	} else if n.data.shared.Load() {
		n.data = &fileData{b: append([]byte(nil), n.data.b...)}
	}
}

// setSize truncates or zero-extends a regular file.
func (fs *FS) setSize(n *mnode, size int64) error {
	if size < 0 {
		return unix.EINVAL
	}
	if size > maxFileSize {
		return unix.EFBIG
	}
	old := n.size()
	if size == old {
		n.touch()
		return nil
	}
	if size > old {
		if err := fs.charge(size - old); err != nil {
			return err
		}
	} else {
		fs.used -= old - size
	}
	if size < old && n.data.shared.Load() {
		n.data = &fileData{b: append([]byte(nil), n.data.b[:size]...)}
	} else {
		n.own()
		n.data.b = resize(n.data.b, size)
	}
	n.touch()
	return nil
}

// resize returns b with length size; bytes beyond the old length are zero.
// The capacity stays within twice the length (and within the length plus
// 1 MiB), so the memory a file holds is never much more than the bytes
// charged to the writable limit for it: shrinking gives memory back.
func resize(b []byte, size int64) []byte {
	old := int64(len(b))
	limit := min(2*size, size+1<<20)
	if size <= old {
		if int64(cap(b)) > limit {
			return append([]byte(nil), b[:size]...)
		}
		return b[:size]
	}
	if size <= int64(cap(b)) {
		b = b[:size]
		clear(b[old:])
		return b
	}
	c := min(max(size, 2*int64(cap(b))), limit)
	nb := make([]byte, size, c)
	copy(nb, b)
	return nb
}

// writeAt writes p at off, growing the file. A write that does not fit in
// the writable limit fails whole with ENOSPC and changes nothing.
func (fs *FS) writeAt(n *mnode, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, unix.EINVAL
	}
	end := off + int64(len(p))
	if end > maxFileSize || end < off {
		return 0, unix.EFBIG
	}
	if len(p) == 0 {
		return 0, nil
	}
	old := n.size()
	if end > old {
		if err := fs.charge(end - old); err != nil {
			return 0, err
		}
	}
	n.own()
	if end > old {
		n.data.b = resize(n.data.b, end)
	}
	copy(n.data.b[off:], p)
	n.touch()
	return len(p), nil
}
