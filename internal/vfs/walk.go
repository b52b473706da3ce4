package vfs

import (
	"strings"

	"golang.org/x/sys/unix"
)

// Limits of Linux path resolution.
const (
	maxSymlinks = 40 // MAXSYMLINKS
	maxName     = 255
)

// loc is what one guest path shows: the synthetic node, memory node and
// host object found there, top layer first. A transparent synthetic
// directory may carry the memory or host directory beneath it.
type loc struct {
	path string // canonical guest path
	syn  *synNode
	mem  *mnode
	host string      // host path relative to the root when mem is nil; "" for none
	hst  unix.Stat_t // lstat of host
}

func (l *loc) exists() bool { return l.syn != nil || l.mem != nil || l.host != "" }

// top reports whether the synthetic node is what this location shows.
func (l *loc) synTop() bool {
	return l.syn != nil && (!l.syn.transparent || (l.mem == nil && l.host == ""))
}

func (l *loc) mode() uint32 {
	switch {
	case l.synTop():
		return l.syn.mode()
	case l.mem != nil:
		return l.mem.mode
	case l.host != "":
		return l.hst.Mode
	}
	return 0
}

func (l *loc) isDir() bool  { return l.mode()&unix.S_IFMT == unix.S_IFDIR }
func (l *loc) isLink() bool { return l.mode()&unix.S_IFMT == unix.S_IFLNK }

// opaqueSyn reports whether l is a synthetic directory nothing can be
// created in.
func (l *loc) opaqueSyn() bool { return l.syn != nil && !l.syn.transparent }

func (l *loc) name() string { return l.path[strings.LastIndexByte(l.path, '/')+1:] }

func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// maxCanonicalPath is the longest canonical guest path: PATH_MAX.
const maxCanonicalPath = 4096

func (fs *FS) rootLoc() loc {
	return loc{path: "/", syn: synRoot, mem: fs.mroot}
}

// lookup finds name in directory dir, layer by layer. A missing name is
// not an error: the returned loc simply does not exist.
func (fs *FS) lookup(dir *loc, name string) (loc, error) {
	if len(dir.path)+1+len(name) > maxCanonicalPath {
		// Deeper names could not be named by getcwd either; refusing them
		// keeps a walk's cost (each step holds its whole path) bounded.
		return loc{}, unix.ENAMETOOLONG
	}
	if dir.syn != nil {
		if s := dir.syn.child(name); s != nil {
			child := loc{path: joinPath(dir.path, name), syn: s}
			if s.transparent {
				u, err := fs.lookupLower(dir, name)
				if err == nil && u.isDir() {
					child.mem, child.host, child.hst = u.mem, u.host, u.hst
				}
			}
			return child, nil
		}
		if !dir.syn.transparent {
			return loc{path: joinPath(dir.path, name)}, nil
		}
	}
	return fs.lookupLower(dir, name)
}

// lookupLower finds name in the memory and host parts of dir.
func (fs *FS) lookupLower(dir *loc, name string) (loc, error) {
	child := loc{path: joinPath(dir.path, name)}
	var hostDir string
	switch {
	case dir.mem != nil:
		if n, ok := dir.mem.children[name]; ok {
			child.mem = n
			return child, nil
		}
		if _, ok := dir.mem.whiteouts[name]; ok {
			return child, nil
		}
		hostDir = dir.mem.lower
	case dir.host != "":
		hostDir = dir.host
	}
	if hostDir == "" || fs.host == nil {
		return child, nil
	}
	rel, err := hostJoin(hostDir, name)
	if err != nil {
		return child, err
	}
	switch err := fs.host.lstat(rel, &child.hst); err {
	case nil:
		child.host = rel
	case unix.ENOENT, unix.ENOTDIR:
	default:
		return child, err
	}
	return child, nil
}

// walked is the result of resolving a guest path.
type walked struct {
	// dirs are the directories from "/" down to the parent of node; empty
	// when node is "/" itself.
	dirs []loc
	// name is node's name in its parent, "" when the path ended in "/",
	// "." or "..": such a node exists and is a directory.
	name     string
	node     loc  // may not exist, when only the last component is missing
	trailing bool // the path ended in "/": node must be a directory
}

func (w *walked) parent() *loc { return &w.dirs[len(w.dirs)-1] }

// walk resolves path against cwd one component at a time, entirely inside
// the guest's tree: ".." at "/" stays at "/", absolute symlink targets
// restart at the guest "/", and after maxSymlinks symlinks it gives up with
// ELOOP. A final symlink is followed when follow is set or the path ends in
// "/". Every intermediate component must exist and be a directory.
func (fs *FS) walk(cwd, path string, follow bool) (*walked, error) {
	if fs.closed {
		return nil, unix.EBADF
	}
	if path == "" {
		return nil, unix.ENOENT
	}
	if len(path) >= unix.PathMax {
		return nil, unix.ENAMETOOLONG
	}
	if strings.IndexByte(path, 0) >= 0 || strings.IndexByte(cwd, 0) >= 0 {
		return nil, unix.EINVAL
	}
	w := &walked{trailing: strings.HasSuffix(path, "/")}
	if path[0] != '/' {
		path = "/" + cwd + "/" + path
	}
	// todo holds the components still to resolve, last one first, so that
	// a symlink's target can be pushed in front of the rest cheaply.
	todo := pushComponents(nil, path)
	stack := []loc{fs.rootLoc()}
	links := 0
	for len(todo) > 0 {
		name := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		last := len(todo) == 0
		switch name {
		case ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		if len(name) > maxName {
			return nil, unix.ENAMETOOLONG
		}
		child, err := fs.lookup(&stack[len(stack)-1], name)
		if err != nil {
			return nil, err
		}
		if !child.exists() {
			if !last {
				return nil, unix.ENOENT
			}
			w.dirs, w.name, w.node = stack, name, child
			return w, nil
		}
		if child.isLink() && (!last || follow || w.trailing) {
			links++
			if links > maxSymlinks {
				return nil, unix.ELOOP
			}
			target, err := fs.readlinkLoc(&child)
			if err != nil {
				return nil, err
			}
			if target == "" {
				return nil, unix.ENOENT
			}
			if target[0] == '/' {
				stack = stack[:1]
			}
			if target[len(target)-1] == '/' {
				todo = append(todo, ".") // "dir/": what it names must be a directory
			}
			todo = pushComponents(todo, target)
			continue
		}
		if last {
			w.dirs, w.name, w.node = stack, name, child
			if w.trailing && !child.isDir() {
				return nil, unix.ENOTDIR
			}
			return w, nil
		}
		if !child.isDir() {
			return nil, unix.ENOTDIR
		}
		stack = append(stack, child)
	}
	// The path ended in "/", "." or "..": the node is the current directory.
	w.node = stack[len(stack)-1]
	w.dirs = stack[:len(stack)-1]
	return w, nil
}

// pushComponents pushes the non-empty components of p onto todo so that
// the first component is popped first.
func pushComponents(todo []string, p string) []string {
	parts := strings.Split(p, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		if parts[i] != "" {
			todo = append(todo, parts[i])
		}
	}
	return todo
}

// readlinkLoc is the target of the symlink at l.
func (fs *FS) readlinkLoc(l *loc) (string, error) {
	switch {
	case l.synTop():
		if l.syn.kind != synLink {
			return "", unix.EINVAL
		}
		t := l.syn.target(fs)
		if t == "" {
			return "", unix.ENOENT
		}
		return t, nil
	case l.mem != nil:
		if !l.mem.isLink() {
			return "", unix.EINVAL
		}
		return l.mem.target, nil
	case l.host != "":
		if l.hst.Mode&unix.S_IFMT != unix.S_IFLNK {
			return "", unix.EINVAL
		}
		return fs.host.readlink(l.host)
	}
	return "", unix.ENOENT
}

// ensureDir makes sure every directory in dirs has a memory node, copying
// host directories up (as nodes that merge the host directory beneath
// them), and returns the memory node of the last one. It is how anything
// gets created below a directory that so far only the host had.
func (fs *FS) ensureDir(dirs []loc) (*mnode, error) {
	if len(dirs) == 0 {
		return fs.mroot, nil
	}
	for i := range dirs {
		d := &dirs[i]
		if d.mem != nil {
			continue
		}
		if d.opaqueSyn() {
			return nil, unix.EACCES
		}
		parent := dirs[i-1].mem // dirs[0] is "/", which always has one
		name := d.name()
		if n := parent.children[name]; n != nil && n.isDir() {
			d.mem = n // created through another walk of the same path
			continue
		}
		perm := uint32(0o755)
		if d.syn != nil {
			perm = d.syn.perm
		}
		n, err := fs.newNode(unix.S_IFDIR|perm, 0)
		if err != nil {
			return nil, err
		}
		if d.host != "" {
			n.lower = d.host
			n.mode = unix.S_IFDIR | d.hst.Mode&0o7777
			n.dev, n.ino = fs.host.guestDev(d.hst.Dev), d.hst.Ino
			n.atime, n.mtime, n.ctime = d.hst.Atim, d.hst.Mtim, d.hst.Ctim
		}
		fs.link(parent, name, n)
		// Copying up is invisible: the parent's times stay as they were.
		d.mem, d.host = n, ""
	}
	return dirs[len(dirs)-1].mem, nil
}

// hostHas reports whether the host directory beneath memory directory dir
// has name, i.e. whether removing name from dir needs a whiteout.
func (fs *FS) hostHas(dir *mnode, name string) bool {
	if dir.lower == "" || fs.host == nil {
		return false
	}
	rel, err := hostJoin(dir.lower, name)
	if err != nil {
		return false
	}
	var st unix.Stat_t
	return fs.host.lstat(rel, &st) == nil
}
