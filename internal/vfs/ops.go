package vfs

import (
	"strings"

	"golang.org/x/sys/unix"
)

// Open opens path like open(2). flags are Linux O_* values: the access
// mode, O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY, O_NOFOLLOW,
// O_NONBLOCK and O_PATH are honoured, O_CLOEXEC and the rest are the
// caller's business. mode is used as given for a new file: the caller
// applies the umask. Opening a host file for writing or with O_TRUNC
// copies it into the memory layer first.
func (fs *FS) Open(cwd, path string, flags int, mode uint32) (*File, error) {
	if flags&unix.O_PATH != 0 {
		flags &= unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	}
	acc := flags & unix.O_ACCMODE
	if acc == unix.O_ACCMODE {
		return nil, unix.EINVAL
	}
	creat, excl := flags&unix.O_CREAT != 0, flags&unix.O_EXCL != 0
	wantDir := flags&unix.O_DIRECTORY != 0
	if creat && wantDir {
		return nil, unix.EINVAL
	}
	w, err := fs.walk(cwd, path, flags&unix.O_NOFOLLOW == 0 && !(creat && excl))
	if err != nil {
		return nil, err
	}
	l := &w.node
	if !l.exists() {
		if !creat {
			return nil, unix.ENOENT
		}
		if w.trailing {
			return nil, unix.EISDIR
		}
		return fs.create(w, flags, mode)
	}
	if creat && excl {
		return nil, unix.EEXIST
	}
	if wantDir && !l.isDir() {
		return nil, unix.ENOTDIR
	}
	if flags&unix.O_PATH != 0 {
		return fs.newFile(kindPath, w, flags), nil
	}
	if l.isLink() {
		return nil, unix.ELOOP
	}
	write := acc != unix.O_RDONLY
	trunc := flags&unix.O_TRUNC != 0
	switch {
	case l.isDir():
		if write || trunc || creat {
			return nil, unix.EISDIR
		}
	case l.synTop():
		if !l.syn.isDevice() && (write || trunc) {
			return nil, unix.EACCES
		}
	case l.mem != nil:
		if trunc {
			if err := fs.setSize(l.mem, 0); err != nil {
				return nil, err
			}
		}
	case l.hst.Mode&unix.S_IFMT != unix.S_IFREG:
		// FIFOs, sockets and device nodes in the root stay closed: opening
		// them would block the VMM or reach host devices.
		return nil, unix.EACCES
	case write || trunc:
		limit := int64(-1)
		if trunc {
			limit = 0
		}
		if err := fs.copyUp(w, limit); err != nil {
			return nil, err
		}
	}
	return fs.openWalked(w, flags)
}

// openWalked makes the File for what w found, after Open's checks and
// side effects (or when a snapshot is restored).
func (fs *FS) openWalked(w *walked, flags int) (*File, error) {
	l := &w.node
	switch {
	case flags&unix.O_PATH != 0:
		return fs.newFile(kindPath, w, flags), nil
	case l.isDir():
		return fs.newFile(kindDir, w, flags), nil
	case l.synTop():
		f := fs.newFile(kindSyn, w, flags)
		if !l.syn.isDevice() {
			f.content = l.syn.content(fs)
		}
		return f, nil
	case l.mem != nil:
		if !l.mem.isReg() {
			return nil, unix.ELOOP
		}
		return fs.newFile(kindMem, w, flags), nil
	}
	if l.hst.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, unix.EACCES
	}
	fd, err := fs.host.openChecked(l.host, &l.hst, 0)
	if err != nil {
		return nil, err
	}
	f := fs.newFile(kindHost, w, flags)
	f.fd, f.size = fd, l.hst.Size
	return f, nil
}

// create makes a new regular file where w found nothing and opens it.
func (fs *FS) create(w *walked, flags int, mode uint32) (*File, error) {
	if w.parent().opaqueSyn() {
		return nil, unix.EACCES
	}
	parent, err := fs.ensureDir(w.dirs)
	if err != nil {
		return nil, err
	}
	n, err := fs.newNode(unix.S_IFREG|mode&0o7777, 0)
	if err != nil {
		return nil, err
	}
	fs.link(parent, w.name, n)
	parent.touch()
	w.node.mem = n
	return fs.newFile(kindMem, w, flags), nil
}

// copyUp brings the host object w found into the memory layer, with at
// most limit bytes of a regular file's content (all when limit < 0).
func (fs *FS) copyUp(w *walked, limit int64) error {
	parent, err := fs.ensureDir(w.dirs)
	if err != nil {
		return err
	}
	n, err := fs.copyUpNode(&w.node, limit)
	if err != nil {
		return err
	}
	fs.link(parent, w.name, n)
	w.node.mem, w.node.host = n, ""
	return nil
}

// copyUpNode makes a memory node with the content and identity of the
// host object at l, not yet linked into any directory. A directory is not
// copied: its node merges the host directory beneath it.
func (fs *FS) copyUpNode(l *loc, limit int64) (*mnode, error) {
	st := &l.hst
	var n *mnode
	var err error
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		size := st.Size
		if limit >= 0 && limit < size {
			size = limit
		}
		if err := fs.charge(size); err != nil {
			return nil, err
		}
		b := make([]byte, size)
		if size > 0 {
			b, err = fs.readHost(l, b)
		}
		if err == nil {
			n, err = fs.newNode(unix.S_IFREG|st.Mode&0o7777, 0)
		}
		fs.used -= size
		if err != nil {
			return nil, err
		}
		fs.used += int64(len(b))
		n.data = &fileData{b: b}
	case unix.S_IFLNK:
		target, err := fs.host.readlink(l.host)
		if err != nil {
			return nil, err
		}
		if n, err = fs.newNode(unix.S_IFLNK|0o777, int64(len(target))); err != nil {
			return nil, err
		}
		n.target = target
	case unix.S_IFDIR:
		if n, err = fs.newNode(unix.S_IFDIR|st.Mode&0o7777, 0); err != nil {
			return nil, err
		}
		n.lower = l.host
	default:
		return nil, unix.EPERM
	}
	n.dev, n.ino = fs.host.guestDev(st.Dev), st.Ino
	n.atime, n.mtime, n.ctime = st.Atim, st.Mtim, st.Ctim
	return n, nil
}

// readHost fills b from the host file at l; the result is shorter if the
// file is.
func (fs *FS) readHost(l *loc, b []byte) ([]byte, error) {
	fd, err := fs.host.openChecked(l.host, &l.hst, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n, err := preadFull(fd, b, 0)
	return b[:n], err
}

// Stat stats path like stat(2), or lstat(2) when follow is false.
func (fs *FS) Stat(cwd, path string, follow bool) (Stat, error) {
	w, err := fs.walk(cwd, path, follow)
	if err != nil {
		return Stat{}, err
	}
	return fs.statLoc(&w.node)
}

// Readlink returns the target of the symlink at path.
func (fs *FS) Readlink(cwd, path string) (string, error) {
	w, err := fs.walk(cwd, path, false)
	if err != nil {
		return "", err
	}
	if !w.node.exists() {
		return "", unix.ENOENT
	}
	if !w.node.isLink() {
		return "", unix.EINVAL
	}
	return fs.readlinkLoc(&w.node)
}

// Access checks path like access(2) for root: F_OK and R_OK need the file
// to exist, W_OK fails only where opening for writing would, and X_OK
// needs an x bit on anything but a directory.
func (fs *FS) Access(cwd, path string, mode uint32) error {
	if mode&^uint32(unix.R_OK|unix.W_OK|unix.X_OK) != 0 {
		return unix.EINVAL
	}
	w, err := fs.walk(cwd, path, true)
	if err != nil {
		return err
	}
	l := &w.node
	if !l.exists() {
		return unix.ENOENT
	}
	if mode&unix.W_OK != 0 && l.synTop() && !l.syn.isDevice() {
		return unix.EACCES
	}
	if mode&unix.X_OK != 0 && !l.isDir() && l.mode()&0o111 == 0 {
		return unix.EACCES
	}
	return nil
}

// Mkdir makes a directory in the memory layer; mode is used as given.
func (fs *FS) Mkdir(cwd, path string, mode uint32) error {
	w, err := fs.walk(cwd, path, false)
	if err != nil {
		return err
	}
	if w.node.exists() {
		return unix.EEXIST
	}
	if w.parent().opaqueSyn() {
		return unix.EACCES
	}
	parent, err := fs.ensureDir(w.dirs)
	if err != nil {
		return err
	}
	n, err := fs.newNode(unix.S_IFDIR|mode&0o7777, 0)
	if err != nil {
		return err
	}
	fs.link(parent, w.name, n)
	parent.touch()
	return nil
}

// Symlink makes a symlink at linkpath pointing to target.
func (fs *FS) Symlink(cwd, target, linkpath string) error {
	if target == "" {
		return unix.ENOENT
	}
	if len(target) >= unix.PathMax {
		return unix.ENAMETOOLONG
	}
	if strings.IndexByte(target, 0) >= 0 {
		return unix.EINVAL
	}
	w, err := fs.walk(cwd, linkpath, false)
	if err != nil {
		return err
	}
	if w.node.exists() {
		return unix.EEXIST
	}
	if w.trailing {
		return unix.ENOENT
	}
	if w.parent().opaqueSyn() {
		return unix.EACCES
	}
	parent, err := fs.ensureDir(w.dirs)
	if err != nil {
		return err
	}
	n, err := fs.newNode(unix.S_IFLNK|0o777, int64(len(target)))
	if err != nil {
		return err
	}
	n.target = target
	fs.link(parent, w.name, n)
	parent.touch()
	return nil
}

// Unlink removes a non-directory. Removing a name the host root has
// leaves a whiteout in the memory layer.
func (fs *FS) Unlink(cwd, path string) error {
	w, err := fs.walk(cwd, path, false)
	if err != nil {
		return err
	}
	if !w.node.exists() {
		return unix.ENOENT
	}
	if w.name == "" || w.node.isDir() {
		return unix.EISDIR
	}
	return fs.remove(w)
}

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(cwd, path string) error {
	w, err := fs.walk(cwd, path, false)
	if err != nil {
		return err
	}
	if !w.node.exists() {
		return unix.ENOENT
	}
	if w.name == "" {
		if len(w.dirs) == 0 {
			return unix.EBUSY
		}
		return unix.EINVAL
	}
	if !w.node.isDir() {
		return unix.ENOTDIR
	}
	if w.node.syn != nil {
		return unix.EBUSY
	}
	if empty, err := fs.isEmpty(&w.node); err != nil {
		return err
	} else if !empty {
		return unix.ENOTEMPTY
	}
	return fs.remove(w)
}

// remove takes w's node out of its parent, leaving a whiteout if the host
// has the name.
func (fs *FS) remove(w *walked) error {
	if w.node.syn != nil {
		return unix.EBUSY // synthetic entries are like mount points
	}
	parent, err := fs.ensureDir(w.dirs)
	if err != nil {
		return err
	}
	whiteout := fs.hostHas(parent, w.name)
	need := int64(0)
	if whiteout {
		need = metaCost
	}
	if n := w.node.mem; n != nil && n.opens == 0 {
		need -= n.held()
	}
	if need > 0 && fs.used+need > fs.limit {
		return unix.ENOSPC
	}
	fs.unlinkChild(parent, w.name, whiteout)
	parent.touch()
	return nil
}

func (fs *FS) isEmpty(l *loc) (bool, error) {
	if l.mem != nil && l.mem.lower == "" && l.syn == nil {
		return len(l.mem.children) == 0, nil
	}
	ents, err := fs.list(l)
	return len(ents) == 0, err
}

// Rename renames like rename(2), for files, symlinks and directories. A
// host directory is renamed without copying what it holds: its memory
// node keeps merging the original host directory.
func (fs *FS) Rename(cwd, oldpath, newpath string) error {
	ow, err := fs.walk(cwd, oldpath, false)
	if err != nil {
		return err
	}
	if !ow.node.exists() {
		return unix.ENOENT
	}
	nw, err := fs.walk(cwd, newpath, false)
	if err != nil {
		return err
	}
	src, dst := &ow.node, &nw.node
	if ow.name == "" || nw.name == "" || src.syn != nil || dst.syn != nil {
		return unix.EBUSY
	}
	if ow.parent().opaqueSyn() || nw.parent().opaqueSyn() {
		return unix.EXDEV
	}
	srcDir := src.isDir()
	if (ow.trailing || nw.trailing) && !srcDir {
		return unix.ENOTDIR
	}
	if src.path == dst.path {
		return nil
	}
	if srcDir && strings.HasPrefix(dst.path, src.path+"/") {
		return unix.EINVAL
	}
	if dst.exists() {
		switch dstDir := dst.isDir(); {
		case srcDir && !dstDir:
			return unix.ENOTDIR
		case !srcDir && dstDir:
			return unix.EISDIR
		case dstDir:
			if empty, err := fs.isEmpty(dst); err != nil {
				return err
			} else if !empty {
				return unix.ENOTEMPTY
			}
		}
	}

	oldParent, err := fs.ensureDir(ow.dirs)
	if err != nil {
		return err
	}
	newParent, err := fs.ensureDir(nw.dirs)
	if err != nil {
		return err
	}
	n := src.mem
	if n == nil {
		if n, err = fs.copyUpNode(src, -1); err != nil {
			return err
		}
		n.linked = false
	}
	whiteout := fs.hostHas(oldParent, ow.name)
	if whiteout && fs.used+metaCost > fs.limit {
		fs.release(n)
		return unix.ENOSPC
	}
	if dst.mem != nil {
		fs.unlinkChild(newParent, nw.name, false)
	}
	delete(oldParent.children, ow.name)
	if whiteout {
		if oldParent.whiteouts == nil {
			oldParent.whiteouts = map[string]struct{}{}
		}
		oldParent.whiteouts[ow.name] = struct{}{}
		fs.used += metaCost
	}
	fs.link(newParent, nw.name, n)
	oldParent.touch()
	newParent.touch()
	n.ctime = now()
	return nil
}

// Truncate sets the size of the regular file at path, copying a host file
// up first (only the part that is kept).
func (fs *FS) Truncate(cwd, path string, size int64) error {
	if size < 0 {
		return unix.EINVAL
	}
	w, err := fs.walk(cwd, path, true)
	if err != nil {
		return err
	}
	l := &w.node
	switch {
	case !l.exists():
		return unix.ENOENT
	case l.isDir():
		return unix.EISDIR
	case l.synTop():
		if l.syn.isDevice() {
			return unix.EINVAL
		}
		return unix.EACCES
	case l.mem == nil:
		if l.hst.Mode&unix.S_IFMT != unix.S_IFREG {
			return unix.EINVAL
		}
		if err := fs.copyUp(w, size); err != nil {
			return err
		}
	}
	if !l.mem.isReg() {
		return unix.EINVAL
	}
	return fs.setSize(l.mem, size)
}

// Chmod sets the permission bits (07777) of path, following symlinks.
func (fs *FS) Chmod(cwd, path string, mode uint32) error {
	w, err := fs.walk(cwd, path, true)
	if err != nil {
		return err
	}
	n, err := fs.writableNode(w)
	if err != nil {
		return err
	}
	n.mode = n.mode&unix.S_IFMT | mode&0o7777
	n.ctime = now()
	return nil
}

// Utimes sets the access and modification times of path like
// utimensat(2): a nil time means now, and a time whose Nsec is
// UTIME_OMIT is left alone.
func (fs *FS) Utimes(cwd, path string, atime, mtime *unix.Timespec, follow bool) error {
	w, err := fs.walk(cwd, path, follow)
	if err != nil {
		return err
	}
	if w.node.exists() && w.node.synTop() && w.node.syn.isDevice() {
		return nil
	}
	n, err := fs.writableNode(w)
	if err != nil {
		return err
	}
	t := now()
	set := func(dst *unix.Timespec, src *unix.Timespec) {
		switch {
		case src == nil || src.Nsec == unix.UTIME_NOW:
			*dst = t
		case src.Nsec != unix.UTIME_OMIT:
			*dst = *src
		}
	}
	set(&n.atime, atime)
	set(&n.mtime, mtime)
	n.ctime = t
	return nil
}

// writableNode returns the memory node of what w found, copying a host
// object up if needed, for a metadata change.
func (fs *FS) writableNode(w *walked) (*mnode, error) {
	l := &w.node
	switch {
	case !l.exists():
		return nil, unix.ENOENT
	case l.synTop():
		return nil, unix.EPERM
	case l.mem != nil:
		return l.mem, nil
	case l.isDir():
		return fs.ensureLast(w)
	}
	if err := fs.copyUp(w, -1); err != nil {
		return nil, err
	}
	return l.mem, nil
}

// ensureLast returns the memory node of w.node after ensureDir on it.
func (fs *FS) ensureLast(w *walked) (*mnode, error) {
	dirs := append(append([]loc(nil), w.dirs...), w.node)
	n, err := fs.ensureDir(dirs)
	if err == nil {
		w.node.mem = n
	}
	return n, err
}

// Resolve returns the canonical guest path of the directory at path, for
// chdir; ENOTDIR if it is not a directory.
func (fs *FS) Resolve(cwd, path string) (string, error) {
	w, err := fs.walk(cwd, path, true)
	if err != nil {
		return "", err
	}
	if !w.node.exists() {
		return "", unix.ENOENT
	}
	if !w.node.isDir() {
		return "", unix.ENOTDIR
	}
	return w.node.path, nil
}
