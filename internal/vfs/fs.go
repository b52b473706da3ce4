package vfs

import (
	"fmt"
	"maps"

	"golang.org/x/sys/unix"
)

// Options configures a new FS.
type Options struct {
	// Root is the host directory that is the guest's "/", or "" for a root
	// holding only the synthetic and memory parts. It is never written.
	Root string
	// WritableLimit is how many bytes the in-memory layer may hold,
	// contents plus metaCost (512) per file, directory, symlink and
	// whiteout; 0 means 64 MiB.
	WritableLimit int64
	// Hostname is what /etc/hostname says; "" means "forkvm".
	Hostname string
	// ExePath is the absolute guest path of the running program, the
	// target of /proc/self/exe.
	ExePath string
	// Maps returns the contents of /proc/self/maps when it is opened; nil
	// means an empty file.
	Maps func() []byte
}

// FS is the file system of one sandbox: synthetic files over a writable
// memory layer over a read-only host directory. See the package comment.
type FS struct {
	host     *hostLayer // nil when Options.Root is ""
	closed   bool
	hostname string
	exePath  string
	maps     func() []byte

	limit, used int64
	mroot       *mnode            // the memory layer's "/"
	nodes       map[uint64]*mnode // every linked or open memory node, by id
	nextID      uint64
	nextIno     uint64
}

// New makes the file system of a fresh sandbox. Its error, if any, wraps
// the unix.Errno from opening Options.Root.
func New(opts Options) (*FS, error) {
	fs := &FS{
		hostname: opts.Hostname,
		exePath:  opts.ExePath,
		maps:     opts.Maps,
		limit:    opts.WritableLimit,
		nodes:    map[uint64]*mnode{},
		nextIno:  memInoBase,
	}
	if fs.hostname == "" {
		fs.hostname = "forkvm"
	}
	if fs.limit <= 0 {
		fs.limit = defaultWritableLimit
	}
	if opts.Root != "" {
		h, err := openHostLayer(opts.Root)
		if err != nil {
			return nil, fmt.Errorf("vfs: open root %q: %w", opts.Root, err)
		}
		fs.host = h
	}

	// The root and /tmp exist in the memory layer from the start, free of
	// charge: the guest did not ask for them.
	fs.mroot = fs.baseDir(0o755, ".")
	tmp := fs.baseDir(0o1777, "tmp")
	fs.mroot.children["tmp"] = tmp
	fs.used = 0
	return fs, nil
}

// baseDir makes a memory directory over the host directory rel if there
// is one, taking its identity.
func (fs *FS) baseDir(perm uint32, rel string) *mnode {
	n, _ := fs.newNode(unix.S_IFDIR|perm, -metaCost)
	n.cost = 0
	var st unix.Stat_t
	if fs.host != nil && fs.host.lstat(rel, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		n.lower = rel
		n.dev, n.ino = fs.host.guestDev(st.Dev), st.Ino
		n.mtime, n.atime, n.ctime = st.Mtim, st.Atim, st.Ctim
		if rel == "." {
			n.mode = unix.S_IFDIR | st.Mode&0o7777
		}
	}
	return n
}

// Clone returns an independent copy for a forked sandbox: later changes
// in either are invisible to the other. Memory nodes are copied (the cost
// is proportional to how many the layer holds, a few for a fresh sandbox)
// and file contents are shared until one side writes them. Nodes that
// were removed but are still open are not copied; File.CloneInto brings
// them along with the File.
//
// Clone only reads fs, so several goroutines may clone the same FS at
// once as long as nothing else uses it meanwhile.
func (fs *FS) Clone() *FS {
	c := &FS{
		host:     fs.host,
		hostname: fs.hostname,
		exePath:  fs.exePath,
		maps:     fs.maps,
		limit:    fs.limit,
		nodes:    make(map[uint64]*mnode, len(fs.nodes)),
		nextID:   fs.nextID,
		nextIno:  fs.nextIno,
	}
	if c.host != nil {
		c.host.refs.Add(1)
	}
	for id, n := range fs.nodes {
		if n.linked {
			c.nodes[id] = c.copyNode(n)
		}
	}
	for _, n := range c.nodes {
		if n.children != nil {
			kids := make(map[string]*mnode, len(n.children))
			for name, k := range n.children {
				kids[name] = c.nodes[k.id]
			}
			n.children = kids
		}
	}
	c.mroot = c.nodes[fs.mroot.id]
	return c
}

// copyNode copies n into fs's accounting, sharing its content. Children
// still point into the source; Clone fixes them.
func (fs *FS) copyNode(n *mnode) *mnode {
	m := *n
	m.opens = 0
	if m.data != nil {
		m.data.shared.Store(true)
	}
	m.whiteouts = maps.Clone(n.whiteouts)
	fs.used += m.held()
	return &m
}

// Close releases the host root directory once fs and all its clones are
// closed. Open Files keep working until they are closed themselves.
func (fs *FS) Close() error {
	if fs.closed {
		return unix.EBADF
	}
	fs.closed = true
	if fs.host != nil {
		fs.host.release()
	}
	return nil
}

// SetExePath sets the target of /proc/self/exe, after an execve.
func (fs *FS) SetExePath(p string) { fs.exePath = p }

// SetMaps sets the generator of /proc/self/maps.
func (fs *FS) SetMaps(f func() []byte) { fs.maps = f }

// WritableUsed is how many bytes of the writable limit the memory layer
// holds: file contents, symlink targets, and metaCost per node and
// whiteout. Files removed while still open count until they are closed.
func (fs *FS) WritableUsed() int64 { return fs.used }

// WritableLimit is the cap on WritableUsed.
func (fs *FS) WritableLimit() int64 { return fs.limit }
