package vfs

import "golang.org/x/sys/unix"

// Stat is what stat(2) reports about a file, with Linux values: Mode is
// S_IFMT bits plus permissions. Owners are always root (0).
type Stat struct {
	Dev, Ino uint64
	Mode     uint32
	Nlink    uint64
	UID, GID uint32
	Rdev     uint64
	Size     int64
	Blksize  int64
	Blocks   int64
	Atime    unix.Timespec
	Mtime    unix.Timespec
	Ctime    unix.Timespec
}

// IsDir reports whether the file is a directory.
func (s *Stat) IsDir() bool { return s.Mode&unix.S_IFMT == unix.S_IFDIR }

// Dirent is one directory entry; Type is a DT_* value.
type Dirent struct {
	Name string
	Ino  uint64
	Type uint8
}

// dtype is the DT_* value for a file of the given mode.
func dtype(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFLNK:
		return unix.DT_LNK
	case unix.S_IFCHR:
		return unix.DT_CHR
	case unix.S_IFBLK:
		return unix.DT_BLK
	case unix.S_IFIFO:
		return unix.DT_FIFO
	case unix.S_IFSOCK:
		return unix.DT_SOCK
	}
	return unix.DT_UNKNOWN
}

// hostStat is the guest's view of a host stat: sizes, modes and times
// pass through, owners are root and the device is the guest's number.
func (fs *FS) hostStat(st *unix.Stat_t) Stat {
	s := Stat{
		Dev: fs.host.guestDev(st.Dev), Ino: st.Ino, Mode: st.Mode, Nlink: st.Nlink,
		Size: st.Size, Blksize: st.Blksize, Blocks: st.Blocks,
		Atime: st.Atim, Mtime: st.Mtim, Ctime: st.Ctim,
	}
	if t := st.Mode & unix.S_IFMT; t == unix.S_IFCHR || t == unix.S_IFBLK {
		s.Rdev = st.Rdev
	}
	return s
}

// statLoc stats what l shows.
func (fs *FS) statLoc(l *loc) (Stat, error) {
	switch {
	case l.synTop():
		return l.syn.stat(fs), nil
	case l.mem != nil:
		return l.mem.stat(), nil
	case l.host != "":
		return fs.hostStat(&l.hst), nil
	}
	return Stat{}, unix.ENOENT
}
