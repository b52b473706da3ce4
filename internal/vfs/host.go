package vfs

import (
	"encoding/binary"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// hostLayer is the read-only host directory that is the guest's "/". It is
// shared by an FS and all its clones, so everything in it is immutable or
// locked.
type hostLayer struct {
	root    string
	fd      *hostFD
	rootDev uint64
	refs    atomic.Int64 // FS values (original and clones) not yet closed

	mu   sync.Mutex
	devs map[uint64]uint64 // host st_dev → guest st_dev, for roots spanning file systems
}

// hostFD closes a descriptor exactly once, whether from Close or from a
// cleanup after every FS sharing it became unreachable.
type hostFD struct {
	fd     int
	closed atomic.Bool
}

func (h *hostFD) close() {
	if h.closed.CompareAndSwap(false, true) {
		unix.Close(h.fd)
	}
}

func openHostLayer(root string) (*hostLayer, error) {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	h := &hostLayer{root: root, fd: &hostFD{fd: fd}, rootDev: st.Dev, devs: map[uint64]uint64{st.Dev: hostDevBase}}
	h.refs.Store(1)
	runtime.AddCleanup(h, func(f *hostFD) { f.close() }, h.fd)
	return h, nil
}

func (h *hostLayer) release() {
	if h.refs.Add(-1) == 0 {
		h.fd.close()
	}
}

// guestDev maps a host device number to the one the guest sees, so host
// identities never leak and never collide with the memory layer's.
func (h *hostLayer) guestDev(dev uint64) uint64 {
	if dev == h.rootDev {
		return hostDevBase
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d, ok := h.devs[dev]
	if !ok {
		d = hostDevBase + uint64(len(h.devs))
		h.devs[dev] = d
	}
	return d
}

// hostJoin appends one checked name to a host path relative to the root.
// It is the only way host paths are built, and it refuses anything that
// could move the path out of the directory it extends.
func hostJoin(dir, name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.IndexByte(name, '/') >= 0 || strings.IndexByte(name, 0) >= 0 {
		return "", unix.EINVAL
	}
	if dir == "." {
		return name, nil
	}
	return dir + "/" + name, nil
}

// validHostPath reports whether rel is "." or a "/"-separated list of
// ordinary names, the only shape hostJoin produces.
func validHostPath(rel string) bool {
	if rel == "." {
		return true
	}
	if rel == "" || rel[0] == '/' {
		return false
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." || strings.IndexByte(c, 0) >= 0 {
			return false
		}
	}
	return true
}

// lstat stats rel without following a final symlink. Intermediate
// components were all checked by the walk to be real directories.
func (h *hostLayer) lstat(rel string, st *unix.Stat_t) error {
	if testHookHostPath != nil {
		testHookHostPath(rel)
	}
	if !validHostPath(rel) {
		return unix.EINVAL
	}
	if h.fd.closed.Load() {
		return unix.EBADF
	}
	for {
		err := unix.Fstatat(h.fd.fd, rel, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return errno(err)
		}
	}
}

func (h *hostLayer) readlink(rel string) (string, error) {
	if testHookHostPath != nil {
		testHookHostPath(rel)
	}
	if !validHostPath(rel) {
		return "", unix.EINVAL
	}
	if h.fd.closed.Load() {
		return "", unix.EBADF
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(h.fd.fd, rel, buf)
	if err != nil {
		return "", errno(err)
	}
	return string(buf[:n]), nil
}

// testHookHostPath, when set by a test, sees every host path used.
var testHookHostPath func(rel string)

var noOpenat2 atomic.Bool // set once openat2 turned out to be missing (Linux < 5.6)

// open opens rel read-only and without following symlinks anywhere in the
// path: openat2 refuses symlinks and anything not beneath the root, which
// guards against the host tree changing after the walk looked at it.
func (h *hostLayer) open(rel string, flags int) (int, error) {
	if testHookHostPath != nil {
		testHookHostPath(rel)
	}
	if !validHostPath(rel) {
		return -1, unix.EINVAL
	}
	if h.fd.closed.Load() {
		return -1, unix.EBADF
	}
	flags |= unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	if !noOpenat2.Load() {
		how := unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
		fd, err := retryEINTR(func() (int, error) { return unix.Openat2(h.fd.fd, rel, &how) })
		if err != unix.ENOSYS {
			return fd, errno(err)
		}
		noOpenat2.Store(true)
	}
	fd, err := retryEINTR(func() (int, error) { return unix.Openat(h.fd.fd, rel, flags, 0) })
	return fd, errno(err)
}

// openChecked opens rel and makes sure it is still the object the walk
// saw (same inode, same type), so a swapped file is refused.
func (h *hostLayer) openChecked(rel string, want *unix.Stat_t, flags int) (int, error) {
	fd, err := h.open(rel, flags)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, errno(err)
	}
	if st.Dev != want.Dev || st.Ino != want.Ino || st.Mode&unix.S_IFMT != want.Mode&unix.S_IFMT {
		unix.Close(fd)
		return -1, unix.ESTALE
	}
	return fd, nil
}

// hostDirent is one entry of a host directory.
type hostDirent struct {
	name string
	ino  uint64
	typ  uint8
}

// list reads a whole host directory, "." and ".." excluded.
func (h *hostLayer) list(rel string) ([]hostDirent, error) {
	fd, err := h.open(rel, unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []hostDirent
	buf := make([]byte, 32<<10)
	for {
		n, err := retryEINTR(func() (int, error) { return unix.Getdents(fd, buf) })
		if err != nil {
			return nil, errno(err)
		}
		if n <= 0 {
			break
		}
		out = parseDirents(buf[:n], out)
	}
	for i := range out {
		if out[i].typ == unix.DT_UNKNOWN {
			var st unix.Stat_t
			if p, err := hostJoin(rel, out[i].name); err == nil && h.lstat(p, &st) == nil {
				out[i].typ = dtype(st.Mode)
			}
		}
	}
	return out, nil
}

// parseDirents decodes struct linux_dirent64 records:
// u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[].
func parseDirents(b []byte, out []hostDirent) []hostDirent {
	for len(b) >= 19 {
		reclen := int(binary.LittleEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		if i := indexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if s := string(name); s != "." && s != ".." && s != "" {
			out = append(out, hostDirent{name: s, ino: binary.LittleEndian.Uint64(b[0:8]), typ: b[18]})
		}
		b = b[reclen:]
	}
	return out
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// preadFull reads len(p) bytes at off unless EOF comes first.
func preadFull(fd int, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, errno(err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// errno turns any error into the unix.Errno the guest should see.
func errno(err error) error {
	if err == nil {
		return nil
	}
	if e, ok := err.(unix.Errno); ok {
		return e
	}
	return unix.EIO
}
