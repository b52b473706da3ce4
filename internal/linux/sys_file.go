package linux

import (
	"encoding/binary"
	"time"

	"forkvm/internal/vfs"

	"golang.org/x/sys/unix"
)

const (
	atFDCWD           = -100
	atEmptyPath       = 0x1000
	atSymlinkNofollow = 0x100
	atRemovedir       = 0x200
	maxPath           = 4096
	maxRW             = 64 << 20 // bytes moved by one read or write call
	maxIOV            = 1024
	renameNoreplace   = 1

	fionread = 0x541b // <asm-generic/ioctls.h>
	fionclex = 0x5450
	fioclex  = 0x5451
)

// fileSyscalls are the calls on files, directories and descriptors.
func fileSyscalls() map[uintptr]Syscall {
	return map[uintptr]Syscall{
		unix.SYS_READ:       supported("read", sysRead),
		unix.SYS_WRITE:      supported("write", sysWrite),
		unix.SYS_PREAD64:    supported("pread64", sysPread),
		unix.SYS_PWRITE64:   supported("pwrite64", sysPwrite),
		unix.SYS_READV:      supported("readv", sysReadv),
		unix.SYS_WRITEV:     supported("writev", sysWritev),
		unix.SYS_OPEN:       partial("open", sysOpen, "Files of the read-only root, the in-memory writable layer and the synthetic /dev, /proc/self, /sys files; O_DIRECT, O_TMPFILE and O_ASYNC are ignored."),
		unix.SYS_OPENAT:     partial("openat", sysOpenat, "As open."),
		unix.SYS_CREAT:      supported("creat", sysCreat),
		unix.SYS_CLOSE:      supported("close", sysClose),
		unix.SYS_LSEEK:      supported("lseek", sysLseek),
		unix.SYS_FSTAT:      supported("fstat", sysFstat),
		unix.SYS_STAT:       supported("stat", sysStat),
		unix.SYS_LSTAT:      supported("lstat", sysLstat),
		unix.SYS_NEWFSTATAT: supported("newfstatat", sysNewfstatat),
		unix.SYS_STATX:      partial("statx", sysStatx, "Reports STATX_BASIC_STATS; no birth time."),
		unix.SYS_STATFS:     partial("statfs", sysStatfs, "Describes an in-memory file system."),
		unix.SYS_FSTATFS:    partial("fstatfs", sysFstatfs, "As statfs."),
		unix.SYS_GETDENTS64: supported("getdents64", sysGetdents64),
		unix.SYS_READLINK:   supported("readlink", sysReadlink),
		unix.SYS_READLINKAT: supported("readlinkat", sysReadlinkat),
		unix.SYS_GETCWD:     supported("getcwd", sysGetcwd),
		unix.SYS_CHDIR:      supported("chdir", sysChdir),
		unix.SYS_FCHDIR:     supported("fchdir", sysFchdir),
		unix.SYS_ACCESS:     supported("access", sysAccess),
		unix.SYS_FACCESSAT:  supported("faccessat", sysFaccessat),
		unix.SYS_FACCESSAT2: supported("faccessat2", sysFaccessat),
		unix.SYS_FCNTL:      partial("fcntl", sysFcntl, "F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL, F_SETFL; record locks always succeed (one process); others return EINVAL."),
		unix.SYS_DUP:        supported("dup", sysDup),
		unix.SYS_DUP2:       supported("dup2", sysDup2),
		unix.SYS_DUP3:       supported("dup3", sysDup3),
		unix.SYS_PIPE:       partial("pipe", sysPipe, "In-memory pipes within the sandbox; a read or write that could never complete ends the sandbox with an error."),
		unix.SYS_PIPE2:      partial("pipe2", sysPipe2, "As pipe."),
		unix.SYS_IOCTL:      partial("ioctl", sysIoctl, "TCGETS and TIOCGWINSZ return ENOTTY (no terminal); FIONREAD, FIOCLEX, FIONCLEX; others return ENOTTY."),
		unix.SYS_UNLINK:     supported("unlink", sysUnlink),
		unix.SYS_UNLINKAT:   supported("unlinkat", sysUnlinkat),
		unix.SYS_MKDIR:      supported("mkdir", sysMkdir),
		unix.SYS_MKDIRAT:    supported("mkdirat", sysMkdirat),
		unix.SYS_RMDIR:      supported("rmdir", sysRmdir),
		unix.SYS_RENAME:     supported("rename", sysRename),
		unix.SYS_RENAMEAT:   supported("renameat", sysRenameat),
		unix.SYS_RENAMEAT2:  partial("renameat2", sysRenameat2, "RENAME_NOREPLACE; RENAME_EXCHANGE and RENAME_WHITEOUT return EINVAL."),
		unix.SYS_SYMLINK:    supported("symlink", sysSymlink),
		unix.SYS_SYMLINKAT:  supported("symlinkat", sysSymlinkat),
		unix.SYS_LINK:       fails("link", unix.EPERM, "Hard links are not supported."),
		unix.SYS_LINKAT:     fails("linkat", unix.EPERM, "Hard links are not supported."),
		unix.SYS_FTRUNCATE:  supported("ftruncate", sysFtruncate),
		unix.SYS_TRUNCATE:   supported("truncate", sysTruncate),
		unix.SYS_FSYNC:      partial("fsync", sysFsyncFd, "No effect: files live in memory."),
		unix.SYS_FDATASYNC:  partial("fdatasync", sysFsyncFd, "No effect: files live in memory."),
		unix.SYS_UMASK:      supported("umask", sysUmask),
		unix.SYS_CHMOD:      supported("chmod", sysChmod),
		unix.SYS_FCHMOD:     supported("fchmod", sysFchmod),
		unix.SYS_FCHMODAT:   supported("fchmodat", sysFchmodat),
		unix.SYS_CHOWN:      partial("chown", sysZero, "Accepted; owners are always root."),
		unix.SYS_FCHOWN:     partial("fchown", sysZero, "Accepted; owners are always root."),
		unix.SYS_LCHOWN:     partial("lchown", sysZero, "Accepted; owners are always root."),
		unix.SYS_FCHOWNAT:   partial("fchownat", sysZero, "Accepted; owners are always root."),
		unix.SYS_UTIMENSAT:  supported("utimensat", sysUtimensat),
		unix.SYS_FADVISE64:  partial("fadvise64", sysZero, "Accepted and ignored."),
		unix.SYS_FLOCK:      partial("flock", sysZero, "Always succeeds (one process)."),
		unix.SYS_POLL:       partial("poll", sysPoll, "On the sandbox's own descriptors; waiting forever on descriptors that can never become ready ends the sandbox with an error."),
		unix.SYS_PPOLL:      partial("ppoll", sysPpoll, "As poll; the signal mask is ignored."),
		unix.SYS_SELECT:     partial("select", sysSelect, "As poll."),
		unix.SYS_PSELECT6:   partial("pselect6", sysPselect6, "As poll; the signal mask is ignored."),
		unix.SYS_SOCKET:     fails("socket", unix.EACCES, "Sandboxes have no network."),
		unix.SYS_SOCKETPAIR: fails("socketpair", unix.EACCES, "Sandboxes have no sockets."),
	}
}

// vfsFile is an open file of the guest file system.
type vfsFile struct {
	*vfs.File
	dir    []vfs.Dirent // directory listing, read at the first getdents64
	dirPos int
}

func (f *vfsFile) Readable() bool { return true }
func (f *vfsFile) Writable() bool { return true }

// pathAt returns the directory that a relative path in an *at call is
// resolved against, and the path.
func (p *Process) pathAt(dirfd int, va uint64) (string, string, error) {
	path, err := p.readString(va, maxPath)
	if err != nil {
		return "", "", err
	}
	dir, err := p.dirOf(dirfd, path)
	return dir, path, err
}

func (p *Process) dirOf(dirfd int, path string) (string, error) {
	if len(path) > 0 && path[0] == '/' || dirfd == atFDCWD {
		return p.cwd, nil
	}
	f, err := p.fds.get(dirfd)
	if err != nil {
		return "", err
	}
	vf, ok := f.(*vfsFile)
	if !ok || !vf.IsDir() {
		return "", unix.ENOTDIR
	}
	return vf.Path(), nil
}

func (p *Process) open(dirfd int, va uint64, flags int, mode uint32) (uint64, error) {
	dir, path, err := p.pathAt(dirfd, va)
	if err != nil {
		return 0, err
	}
	f, err := p.fs.Open(dir, path, flags, mode&^p.umask)
	if err != nil {
		return 0, err
	}
	fd, err := p.fds.add(&vfsFile{File: f}, flags&unix.O_CLOEXEC != 0)
	if err != nil {
		f.Close()
		return 0, err
	}
	return uint64(fd), nil
}

func sysOpen(p *Process, a args) (uint64, error) {
	return p.open(atFDCWD, a[0], int(a[1]), uint32(a[2]))
}

func sysOpenat(p *Process, a args) (uint64, error) {
	return p.open(int(int32(a[0])), a[1], int(a[2]), uint32(a[3]))
}

func sysCreat(p *Process, a args) (uint64, error) {
	return p.open(atFDCWD, a[0], unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC, uint32(a[1]))
}

func sysClose(p *Process, a args) (uint64, error) { return 0, p.fds.close(int(int32(a[0]))) }

func (p *Process) file(fd uint64) (file, error) { return p.fds.get(int(int32(fd))) }

func sysRead(p *Process, a args) (uint64, error) {
	f, err := p.file(a[0])
	if err != nil {
		return 0, err
	}
	buf := make([]byte, min(a[2], maxRW))
	n, err := p.readFile(f, buf)
	if err != nil {
		return 0, err
	}
	return uint64(n), p.copyOut(a[1], buf[:n])
}

// readFile reads from f, treating a read that could never complete as a
// deadlock of the sandbox.
func (p *Process) readFile(f file, buf []byte) (int, error) {
	n, err := f.Read(buf)
	if err == errWouldBlockForever {
		p.end(Status{Code: 134, Reason: "error", Message: "forkvm: deadlock: the program reads from a pipe that nothing can ever write to (sandboxes have one thread)"})
		return 0, unix.EINTR
	}
	return n, err
}

func sysWrite(p *Process, a args) (uint64, error) {
	f, err := p.file(a[0])
	if err != nil {
		return 0, err
	}
	buf := make([]byte, min(a[2], maxRW))
	if err := p.copyIn(a[1], buf); err != nil {
		return 0, err
	}
	return p.writeFile(f, buf)
}

func (p *Process) writeFile(f file, buf []byte) (uint64, error) {
	n, err := f.Write(buf)
	if err == errWouldBlockForever {
		p.end(Status{Code: 134, Reason: "error", Message: "forkvm: deadlock: the program writes to a full pipe that nothing can ever read (sandboxes have one thread)"})
		return 0, unix.EINTR
	}
	if err != nil && n == 0 {
		return 0, err
	}
	return uint64(n), nil
}

// positional returns the file of a pread64/pwrite64 call (fd, buf, count,
// offset) and a host buffer for its data.
func (p *Process) positional(a args) (preadWriter, []byte, error) {
	f, err := p.file(a[0])
	if err != nil {
		return nil, nil, err
	}
	pf, ok := f.(preadWriter)
	if !ok {
		return nil, nil, unix.ESPIPE
	}
	if int64(a[3]) < 0 {
		return nil, nil, unix.EINVAL
	}
	return pf, make([]byte, min(a[2], maxRW)), nil
}

func sysPread(p *Process, a args) (uint64, error) {
	pf, buf, err := p.positional(a)
	if err != nil {
		return 0, err
	}
	n, err := pf.Pread(buf, int64(a[3]))
	if err != nil {
		return 0, err
	}
	return uint64(n), p.copyOut(a[1], buf[:n])
}

func sysPwrite(p *Process, a args) (uint64, error) {
	pf, buf, err := p.positional(a)
	if err != nil {
		return 0, err
	}
	if err := p.copyIn(a[1], buf); err != nil {
		return 0, err
	}
	n, err := pf.Pwrite(buf, int64(a[3]))
	return uint64(n), err
}

type iovec struct{ base, len uint64 }

func (p *Process) iovecs(va, n uint64) ([]iovec, uint64, error) {
	if n > maxIOV {
		return nil, 0, unix.EINVAL
	}
	raw := make([]byte, 16*n)
	if err := p.copyIn(va, raw); err != nil {
		return nil, 0, err
	}
	iov := make([]iovec, n)
	var total uint64
	for i := range iov {
		iov[i] = iovec{binary.LittleEndian.Uint64(raw[16*i:]), binary.LittleEndian.Uint64(raw[16*i+8:])}
		if int64(iov[i].len) < 0 {
			return nil, 0, unix.EINVAL
		}
		total += iov[i].len
	}
	return iov, min(total, maxRW), nil
}

func sysReadv(p *Process, a args) (uint64, error) {
	f, err := p.file(a[0])
	if err != nil {
		return 0, err
	}
	iov, total, err := p.iovecs(a[1], a[2])
	if err != nil {
		return 0, err
	}
	buf := make([]byte, total)
	n, err := p.readFile(f, buf)
	if err != nil {
		return 0, err
	}
	rest := buf[:n]
	for _, v := range iov {
		c := min(v.len, uint64(len(rest)))
		if err := p.copyOut(v.base, rest[:c]); err != nil {
			return 0, err
		}
		rest = rest[c:]
	}
	return uint64(n), nil
}

func sysWritev(p *Process, a args) (uint64, error) {
	f, err := p.file(a[0])
	if err != nil {
		return 0, err
	}
	iov, total, err := p.iovecs(a[1], a[2])
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 0, total)
	for _, v := range iov {
		c := min(v.len, total-uint64(len(buf)))
		chunk := buf[len(buf) : len(buf)+int(c)]
		if err := p.copyIn(v.base, chunk); err != nil {
			return 0, err
		}
		buf = buf[:len(buf)+int(c)]
	}
	return p.writeFile(f, buf)
}

func sysLseek(p *Process, a args) (uint64, error) {
	f, err := p.file(a[0])
	if err != nil {
		return 0, err
	}
	s, ok := f.(seeker)
	if !ok {
		return 0, unix.ESPIPE
	}
	off, err := s.Seek(int64(a[1]), int(a[2]))
	return uint64(off), err
}

// encodeStat writes struct stat (x86-64).
func encodeStat(s vfs.Stat) []byte {
	b := make([]byte, 144)
	le := binary.LittleEndian
	le.PutUint64(b[0:], s.Dev)
	le.PutUint64(b[8:], s.Ino)
	le.PutUint64(b[16:], s.Nlink)
	le.PutUint32(b[24:], s.Mode)
	le.PutUint32(b[28:], s.UID)
	le.PutUint32(b[32:], s.GID)
	le.PutUint64(b[40:], s.Rdev)
	le.PutUint64(b[48:], uint64(s.Size))
	le.PutUint64(b[56:], uint64(s.Blksize))
	le.PutUint64(b[64:], uint64(s.Blocks))
	for i, t := range []unix.Timespec{s.Atime, s.Mtime, s.Ctime} {
		le.PutUint64(b[72+16*i:], uint64(t.Sec))
		le.PutUint64(b[80+16*i:], uint64(t.Nsec))
	}
	return b
}

// encodeStatx writes struct statx with STATX_BASIC_STATS.
func encodeStatx(s vfs.Stat) []byte {
	b := make([]byte, 256)
	le := binary.LittleEndian
	le.PutUint32(b[0:], unix.STATX_BASIC_STATS)
	le.PutUint32(b[4:], uint32(s.Blksize))
	le.PutUint32(b[16:], uint32(s.Nlink))
	le.PutUint32(b[20:], s.UID)
	le.PutUint32(b[24:], s.GID)
	le.PutUint16(b[28:], uint16(s.Mode))
	le.PutUint64(b[32:], s.Ino)
	le.PutUint64(b[40:], uint64(s.Size))
	le.PutUint64(b[48:], uint64(s.Blocks))
	for off, t := range map[int]unix.Timespec{64: s.Atime, 96: s.Ctime, 112: s.Mtime} {
		le.PutUint64(b[off:], uint64(t.Sec))
		le.PutUint32(b[off+8:], uint32(t.Nsec))
	}
	le.PutUint32(b[128:], uint32(unix.Major(s.Rdev)))
	le.PutUint32(b[132:], uint32(unix.Minor(s.Rdev)))
	le.PutUint32(b[136:], uint32(unix.Major(s.Dev)))
	le.PutUint32(b[140:], uint32(unix.Minor(s.Dev)))
	return b
}

func (p *Process) fstat(fd uint64) (vfs.Stat, error) {
	f, err := p.file(fd)
	if err != nil {
		return vfs.Stat{}, err
	}
	s, ok := f.(stater)
	if !ok {
		return vfs.Stat{}, unix.EBADF
	}
	return s.Stat()
}

// statAt implements the path-or-descriptor stat of the *at calls.
func (p *Process) statAt(dirfd int, va uint64, flags int) (vfs.Stat, error) {
	path, err := p.readString(va, maxPath)
	if err != nil {
		return vfs.Stat{}, err
	}
	if path == "" {
		if flags&atEmptyPath == 0 {
			return vfs.Stat{}, unix.ENOENT
		}
		if dirfd == atFDCWD {
			return p.fs.Stat(p.cwd, ".", true)
		}
		return p.fstat(uint64(dirfd))
	}
	dir, err := p.dirOf(dirfd, path)
	if err != nil {
		return vfs.Stat{}, err
	}
	return p.fs.Stat(dir, path, flags&atSymlinkNofollow == 0)
}

func sysFstat(p *Process, a args) (uint64, error) {
	s, err := p.fstat(a[0])
	if err != nil {
		return 0, err
	}
	return 0, p.copyOut(a[1], encodeStat(s))
}

func sysStat(p *Process, a args) (uint64, error) {
	return sysNewfstatat(p, args{uint64(atFDCWD & 0xffffffff), a[0], a[1], 0})
}

func sysLstat(p *Process, a args) (uint64, error) {
	return sysNewfstatat(p, args{uint64(atFDCWD & 0xffffffff), a[0], a[1], atSymlinkNofollow})
}

func sysNewfstatat(p *Process, a args) (uint64, error) {
	s, err := p.statAt(int(int32(a[0])), a[1], int(a[3]))
	if err != nil {
		return 0, err
	}
	return 0, p.copyOut(a[2], encodeStat(s))
}

func sysStatx(p *Process, a args) (uint64, error) {
	s, err := p.statAt(int(int32(a[0])), a[1], int(a[2]))
	if err != nil {
		return 0, err
	}
	return 0, p.copyOut(a[4], encodeStatx(s))
}

func (p *Process) statfs(va uint64) (uint64, error) {
	b := make([]byte, 120)
	le := binary.LittleEndian
	le.PutUint64(b[0:], 0x01021994) // TMPFS_MAGIC
	le.PutUint64(b[8:], 4096)
	le.PutUint64(b[16:], uint64(p.fs.WritableLimit()/4096))
	free := uint64((p.fs.WritableLimit() - p.fs.WritableUsed()) / 4096)
	le.PutUint64(b[24:], free)
	le.PutUint64(b[32:], free)
	le.PutUint64(b[40:], 1<<20)
	le.PutUint64(b[48:], 1<<20)
	le.PutUint64(b[64:], 255) // f_namelen
	le.PutUint64(b[72:], 4096)
	return 0, p.copyOut(va, b)
}

func sysStatfs(p *Process, a args) (uint64, error) {
	path, err := p.readString(a[0], maxPath)
	if err != nil {
		return 0, err
	}
	if _, err := p.fs.Stat(p.cwd, path, true); err != nil {
		return 0, err
	}
	return p.statfs(a[1])
}

func sysFstatfs(p *Process, a args) (uint64, error) {
	if _, err := p.file(a[0]); err != nil {
		return 0, err
	}
	return p.statfs(a[1])
}

func sysGetdents64(p *Process, a args) (uint64, error) {
	f, err := p.file(a[0])
	if err != nil {
		return 0, err
	}
	vf, ok := f.(*vfsFile)
	if !ok {
		return 0, unix.ENOTDIR
	}
	if vf.dir == nil {
		if vf.dir, err = vf.ReadDir(); err != nil {
			return 0, err
		}
	}
	var out []byte
	for vf.dirPos < len(vf.dir) {
		d := vf.dir[vf.dirPos]
		reclen := (19 + len(d.Name) + 1 + 7) &^ 7
		if len(out)+reclen > int(a[2]) {
			if len(out) == 0 {
				return 0, unix.EINVAL
			}
			break
		}
		rec := make([]byte, reclen)
		binary.LittleEndian.PutUint64(rec[0:], d.Ino)
		binary.LittleEndian.PutUint64(rec[8:], uint64(vf.dirPos+1))
		binary.LittleEndian.PutUint16(rec[16:], uint16(reclen))
		rec[18] = d.Type
		copy(rec[19:], d.Name)
		out = append(out, rec...)
		vf.dirPos++
	}
	return uint64(len(out)), p.copyOut(a[1], out)
}

func (p *Process) readlink(dirfd int, pathVA, buf, size uint64) (uint64, error) {
	if int64(size) <= 0 {
		return 0, unix.EINVAL
	}
	dir, path, err := p.pathAt(dirfd, pathVA)
	if err != nil {
		return 0, err
	}
	target, err := p.fs.Readlink(dir, path)
	if err != nil {
		return 0, err
	}
	b := []byte(target)
	if uint64(len(b)) > size {
		b = b[:size]
	}
	return uint64(len(b)), p.copyOut(buf, b)
}

func sysReadlink(p *Process, a args) (uint64, error) { return p.readlink(atFDCWD, a[0], a[1], a[2]) }
func sysReadlinkat(p *Process, a args) (uint64, error) {
	return p.readlink(int(int32(a[0])), a[1], a[2], a[3])
}

func sysGetcwd(p *Process, a args) (uint64, error) {
	b := append([]byte(p.cwd), 0)
	if uint64(len(b)) > a[1] {
		return 0, unix.ERANGE
	}
	return uint64(len(b)), p.copyOut(a[0], b)
}

func sysChdir(p *Process, a args) (uint64, error) {
	path, err := p.readString(a[0], maxPath)
	if err != nil {
		return 0, err
	}
	dir, err := p.fs.Resolve(p.cwd, path)
	if err != nil {
		return 0, err
	}
	p.cwd = dir
	return 0, nil
}

func sysFchdir(p *Process, a args) (uint64, error) {
	f, err := p.file(a[0])
	if err != nil {
		return 0, err
	}
	vf, ok := f.(*vfsFile)
	if !ok || !vf.IsDir() {
		return 0, unix.ENOTDIR
	}
	p.cwd = vf.Path()
	return 0, nil
}

func sysAccess(p *Process, a args) (uint64, error) {
	return sysFaccessat(p, args{uint64(atFDCWD & 0xffffffff), a[0], a[1]})
}

func sysFaccessat(p *Process, a args) (uint64, error) {
	dir, path, err := p.pathAt(int(int32(a[0])), a[1])
	if err != nil {
		return 0, err
	}
	return 0, p.fs.Access(dir, path, uint32(a[2]))
}

func sysFcntl(p *Process, a args) (uint64, error) {
	fd := int(int32(a[0]))
	f, err := p.fds.get(fd)
	if err != nil {
		return 0, err
	}
	switch a[1] {
	case unix.F_DUPFD, unix.F_DUPFD_CLOEXEC:
		if int64(a[2]) < 0 || a[2] >= maxFDs {
			return 0, unix.EINVAL
		}
		n, err := p.fds.dup(fd, -1, int(a[2]), a[1] == unix.F_DUPFD_CLOEXEC)
		return uint64(n), err
	case unix.F_GETFD:
		if p.fds.fds[fd].cloexec {
			return unix.FD_CLOEXEC, nil
		}
		return 0, nil
	case unix.F_SETFD:
		p.fds.fds[fd].cloexec = a[2]&unix.FD_CLOEXEC != 0
		return 0, nil
	case unix.F_GETFL:
		if fl, ok := f.(flagger); ok {
			return uint64(fl.Flags()), nil
		}
		if _, ok := f.(*outFile); ok {
			return unix.O_WRONLY, nil
		}
		return unix.O_RDONLY, nil
	case unix.F_SETFL:
		if fl, ok := f.(flagger); ok {
			fl.SetFlags(int(a[2]))
		}
		return 0, nil
	case unix.F_GETLK:
		// No other process holds locks: report the region unlocked.
		var b [2]byte
		binary.LittleEndian.PutUint16(b[:], unix.F_UNLCK)
		return 0, p.copyOut(a[2], b[:])
	case unix.F_SETLK, unix.F_SETLKW, unix.F_OFD_SETLK, unix.F_OFD_SETLKW:
		return 0, nil
	}
	return 0, unix.EINVAL
}

func sysDup(p *Process, a args) (uint64, error) {
	n, err := p.fds.dup(int(int32(a[0])), -1, 0, false)
	return uint64(n), err
}

func sysDup2(p *Process, a args) (uint64, error) {
	old, nfd := int(int32(a[0])), int(int32(a[1]))
	if _, err := p.fds.get(old); err != nil {
		return 0, err
	}
	if nfd < 0 || nfd >= maxFDs {
		return 0, unix.EBADF
	}
	if old == nfd {
		return uint64(nfd), nil
	}
	n, err := p.fds.dup(old, nfd, 0, false)
	return uint64(n), err
}

func sysDup3(p *Process, a args) (uint64, error) {
	old, nfd := int(int32(a[0])), int(int32(a[1]))
	if old == nfd || a[2]&^unix.O_CLOEXEC != 0 {
		return 0, unix.EINVAL
	}
	if nfd < 0 || nfd >= maxFDs {
		return 0, unix.EBADF
	}
	n, err := p.fds.dup(old, nfd, 0, a[2]&unix.O_CLOEXEC != 0)
	return uint64(n), err
}

func sysPipe(p *Process, a args) (uint64, error) { return sysPipe2(p, args{a[0], 0}) }

func sysPipe2(p *Process, a args) (uint64, error) {
	if a[1]&^(unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_DIRECT) != 0 {
		return 0, unix.EINVAL
	}
	r, w := newPipe(a[1]&unix.O_NONBLOCK != 0)
	cloexec := a[1]&unix.O_CLOEXEC != 0
	rfd, err := p.fds.add(r, cloexec)
	if err != nil {
		return 0, err
	}
	wfd, err := p.fds.add(w, cloexec)
	if err != nil {
		p.fds.close(rfd)
		return 0, err
	}
	var b [8]byte
	binary.LittleEndian.PutUint32(b[:], uint32(rfd))
	binary.LittleEndian.PutUint32(b[4:], uint32(wfd))
	if err := p.copyOut(a[0], b[:]); err != nil {
		p.fds.close(rfd)
		p.fds.close(wfd)
		return 0, err
	}
	return 0, nil
}

func sysIoctl(p *Process, a args) (uint64, error) {
	fd := int(int32(a[0]))
	f, err := p.fds.get(fd)
	if err != nil {
		return 0, err
	}
	switch a[1] {
	case fionread:
		n := 0
		switch f := f.(type) {
		case *pipeEnd:
			n = f.p.buf.Len()
		case *vfsFile:
			if off, err := f.Seek(0, 1); err == nil {
				n = int(max(f.Size()-off, 0))
			}
		}
		return 0, p.writeU32(a[2], uint32(n))
	case fioclex, fionclex:
		p.fds.fds[fd].cloexec = a[1] == fioclex
		return 0, nil
	}
	return 0, unix.ENOTTY
}

func (p *Process) unlinkAt(dirfd int, va uint64, flags int) (uint64, error) {
	dir, path, err := p.pathAt(dirfd, va)
	if err != nil {
		return 0, err
	}
	if flags&atRemovedir != 0 {
		return 0, p.fs.Rmdir(dir, path)
	}
	return 0, p.fs.Unlink(dir, path)
}

func sysUnlink(p *Process, a args) (uint64, error) { return p.unlinkAt(atFDCWD, a[0], 0) }
func sysUnlinkat(p *Process, a args) (uint64, error) {
	return p.unlinkAt(int(int32(a[0])), a[1], int(a[2]))
}
func sysRmdir(p *Process, a args) (uint64, error) { return p.unlinkAt(atFDCWD, a[0], atRemovedir) }

func (p *Process) mkdirAt(dirfd int, va uint64, mode uint32) (uint64, error) {
	dir, path, err := p.pathAt(dirfd, va)
	if err != nil {
		return 0, err
	}
	return 0, p.fs.Mkdir(dir, path, mode&^p.umask)
}

func sysMkdir(p *Process, a args) (uint64, error) { return p.mkdirAt(atFDCWD, a[0], uint32(a[1])) }
func sysMkdirat(p *Process, a args) (uint64, error) {
	return p.mkdirAt(int(int32(a[0])), a[1], uint32(a[2]))
}

func (p *Process) renameAt(olddirfd int, oldVA uint64, newdirfd int, newVA uint64, flags uint64) (uint64, error) {
	if flags&^renameNoreplace != 0 {
		return 0, unix.EINVAL
	}
	odir, opath, err := p.pathAt(olddirfd, oldVA)
	if err != nil {
		return 0, err
	}
	ndir, npath, err := p.pathAt(newdirfd, newVA)
	if err != nil {
		return 0, err
	}
	if opath == "" || npath == "" {
		return 0, unix.ENOENT
	}
	if flags&renameNoreplace != 0 {
		if _, err := p.fs.Stat(ndir, npath, false); err == nil {
			return 0, unix.EEXIST
		}
	}
	return 0, p.fs.Rename("/", joinGuest(odir, opath), joinGuest(ndir, npath))
}

// joinGuest makes path absolute against dir.
func joinGuest(dir, path string) string {
	if len(path) > 0 && path[0] == '/' {
		return path
	}
	if dir == "/" {
		return "/" + path
	}
	return dir + "/" + path
}

func sysRename(p *Process, a args) (uint64, error) {
	return p.renameAt(atFDCWD, a[0], atFDCWD, a[1], 0)
}
func sysRenameat(p *Process, a args) (uint64, error) {
	return p.renameAt(int(int32(a[0])), a[1], int(int32(a[2])), a[3], 0)
}
func sysRenameat2(p *Process, a args) (uint64, error) {
	return p.renameAt(int(int32(a[0])), a[1], int(int32(a[2])), a[3], a[4])
}

func (p *Process) symlinkAt(targetVA uint64, dirfd int, linkVA uint64) (uint64, error) {
	target, err := p.readString(targetVA, maxPath)
	if err != nil {
		return 0, err
	}
	dir, path, err := p.pathAt(dirfd, linkVA)
	if err != nil {
		return 0, err
	}
	return 0, p.fs.Symlink(dir, target, path)
}

func sysSymlink(p *Process, a args) (uint64, error) { return p.symlinkAt(a[0], atFDCWD, a[1]) }
func sysSymlinkat(p *Process, a args) (uint64, error) {
	return p.symlinkAt(a[0], int(int32(a[1])), a[2])
}

func sysFtruncate(p *Process, a args) (uint64, error) {
	f, err := p.file(a[0])
	if err != nil {
		return 0, err
	}
	vf, ok := f.(*vfsFile)
	if !ok {
		return 0, unix.EINVAL
	}
	if int64(a[1]) < 0 {
		return 0, unix.EINVAL
	}
	return 0, vf.Truncate(int64(a[1]))
}

func sysTruncate(p *Process, a args) (uint64, error) {
	path, err := p.readString(a[0], maxPath)
	if err != nil {
		return 0, err
	}
	if int64(a[1]) < 0 {
		return 0, unix.EINVAL
	}
	return 0, p.fs.Truncate(p.cwd, path, int64(a[1]))
}

func sysFsyncFd(p *Process, a args) (uint64, error) {
	_, err := p.file(a[0])
	return 0, err
}

func sysUmask(p *Process, a args) (uint64, error) {
	old := p.umask
	p.umask = uint32(a[0]) & 0o777
	return uint64(old), nil
}

func sysChmod(p *Process, a args) (uint64, error) {
	return sysFchmodat(p, args{uint64(atFDCWD & 0xffffffff), a[0], a[1]})
}

func sysFchmod(p *Process, a args) (uint64, error) {
	f, err := p.file(a[0])
	if err != nil {
		return 0, err
	}
	vf, ok := f.(*vfsFile)
	if !ok {
		return 0, nil
	}
	return 0, vf.Chmod(uint32(a[1]))
}

func sysFchmodat(p *Process, a args) (uint64, error) {
	dir, path, err := p.pathAt(int(int32(a[0])), a[1])
	if err != nil {
		return 0, err
	}
	return 0, p.fs.Chmod(dir, path, uint32(a[2]))
}

func sysUtimensat(p *Process, a args) (uint64, error) {
	var times *[2]unix.Timespec
	if a[2] != 0 {
		var b [32]byte
		if err := p.copyIn(a[2], b[:]); err != nil {
			return 0, err
		}
		times = &[2]unix.Timespec{}
		for i := range times {
			times[i] = unix.Timespec{Sec: int64(binary.LittleEndian.Uint64(b[16*i:])), Nsec: int64(binary.LittleEndian.Uint64(b[16*i+8:]))}
		}
	}
	var path string
	var dir string
	if a[1] == 0 { // futimens
		f, err := p.file(a[0])
		if err != nil {
			return 0, err
		}
		vf, ok := f.(*vfsFile)
		if !ok {
			return 0, nil
		}
		dir, path = "/", vf.Path()
	} else {
		var err error
		if dir, path, err = p.pathAt(int(int32(a[0])), a[1]); err != nil {
			return 0, err
		}
	}
	now := unix.NsecToTimespec(time.Now().UnixNano())
	at, mt := &now, &now
	if times != nil {
		at, mt = pickTime(times[0], now), pickTime(times[1], now)
	}
	return 0, p.fs.Utimes(dir, path, at, mt, a[3]&atSymlinkNofollow == 0)
}

func pickTime(t, now unix.Timespec) *unix.Timespec {
	switch t.Nsec {
	case unix.UTIME_NOW:
		return &now
	case unix.UTIME_OMIT:
		return nil
	}
	return &t
}

// Poll and select: regular files are always ready; pipes are ready when
// they have data, room, or a closed peer.

const (
	pollIn   = 0x1
	pollOut  = 0x4
	pollErr  = 0x8
	pollHup  = 0x10
	pollNval = 0x20
)

func (p *Process) readiness(fd int, events int16) int16 {
	f, err := p.fds.get(fd)
	if err != nil {
		return pollNval
	}
	var r int16
	pf, ok := f.(poller)
	if !ok {
		return events & (pollIn | pollOut)
	}
	if events&pollIn != 0 && pf.Readable() {
		r |= pollIn
	}
	if events&pollOut != 0 && pf.Writable() {
		r |= pollOut
	}
	if pe, ok := f.(*pipeEnd); ok && pe.peerClosed() {
		r |= pollHup
	}
	return r
}

// waitNothing handles a poll that found nothing ready: sleep for the
// timeout, or end the sandbox when the wait could never end.
func (p *Process) waitNothing(timeout time.Duration, forever bool) {
	if forever {
		p.end(Status{Code: 134, Reason: "error", Message: "forkvm: deadlock: the program waits forever for descriptors that can never become ready (sandboxes have one thread)"})
		return
	}
	p.sleep(timeout)
}

func (p *Process) poll(va, n uint64, timeout time.Duration, forever bool) (uint64, error) {
	if n > maxFDs {
		return 0, unix.EINVAL
	}
	raw := make([]byte, 8*n)
	if err := p.copyIn(va, raw); err != nil {
		return 0, err
	}
	ready := 0
	for i := uint64(0); i < n; i++ {
		fd := int(int32(binary.LittleEndian.Uint32(raw[8*i:])))
		ev := int16(binary.LittleEndian.Uint16(raw[8*i+4:]))
		var rev int16
		if fd >= 0 {
			rev = p.readiness(fd, ev)
		}
		binary.LittleEndian.PutUint16(raw[8*i+6:], uint16(rev))
		if rev != 0 {
			ready++
		}
	}
	if ready == 0 {
		p.waitNothing(timeout, forever)
	}
	return uint64(ready), p.copyOut(va, raw)
}

func sysPoll(p *Process, a args) (uint64, error) {
	ms := int32(a[2])
	return p.poll(a[0], a[1], time.Duration(ms)*time.Millisecond, ms < 0)
}

func sysPpoll(p *Process, a args) (uint64, error) {
	if a[2] == 0 {
		return p.poll(a[0], a[1], 0, true)
	}
	d, err := p.readTimespec(a[2])
	if err != nil {
		return 0, err
	}
	return p.poll(a[0], a[1], d, false)
}

func (p *Process) selectFDs(n int, rVA, wVA, eVA uint64, timeout time.Duration, forever bool) (uint64, error) {
	if n < 0 || n > maxFDs {
		return 0, unix.EINVAL
	}
	words := (n + 63) / 64
	sets := make([][]uint64, 3)
	for i, va := range []uint64{rVA, wVA, eVA} {
		if va == 0 {
			continue
		}
		raw := make([]byte, 8*words)
		if err := p.copyIn(va, raw); err != nil {
			return 0, err
		}
		sets[i] = make([]uint64, words)
		for w := range sets[i] {
			sets[i][w] = binary.LittleEndian.Uint64(raw[8*w:])
		}
	}
	out := [3][]uint64{make([]uint64, words), make([]uint64, words), make([]uint64, words)}
	ready := 0
	for fd := 0; fd < n; fd++ {
		bit := uint64(1) << (fd % 64)
		for i, ev := range []int16{pollIn, pollOut} {
			if sets[i] == nil || sets[i][fd/64]&bit == 0 {
				continue
			}
			r := p.readiness(fd, ev)
			if r&pollNval != 0 {
				return 0, unix.EBADF
			}
			if r&(ev|pollHup) != 0 {
				out[i][fd/64] |= bit
				ready++
			}
		}
	}
	if ready == 0 {
		p.waitNothing(timeout, forever)
	}
	for i, va := range []uint64{rVA, wVA, eVA} {
		if va == 0 {
			continue
		}
		raw := make([]byte, 8*words)
		for w, v := range out[i] {
			binary.LittleEndian.PutUint64(raw[8*w:], v)
		}
		if err := p.copyOut(va, raw); err != nil {
			return 0, err
		}
	}
	return uint64(ready), nil
}

func sysSelect(p *Process, a args) (uint64, error) {
	if a[4] == 0 {
		return p.selectFDs(int(int32(a[0])), a[1], a[2], a[3], 0, true)
	}
	var b [16]byte
	if err := p.copyIn(a[4], b[:]); err != nil {
		return 0, err
	}
	d := time.Duration(binary.LittleEndian.Uint64(b[:]))*time.Second + time.Duration(binary.LittleEndian.Uint64(b[8:]))*time.Microsecond
	return p.selectFDs(int(int32(a[0])), a[1], a[2], a[3], d, false)
}

func sysPselect6(p *Process, a args) (uint64, error) {
	if a[4] == 0 {
		return p.selectFDs(int(int32(a[0])), a[1], a[2], a[3], 0, true)
	}
	d, err := p.readTimespec(a[4])
	if err != nil {
		return 0, err
	}
	return p.selectFDs(int(int32(a[0])), a[1], a[2], a[3], d, false)
}
