package vfs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMemoryLayer(t *testing.T) {
	fx := newFixture(t)
	fs := fx.newFS(t, Options{})
	steps := []struct {
		name string
		do   func() error
		err  error
	}{
		{"write new file", func() error { return writeFile(fs, "/tmp/a.txt", "hello") }, nil},
		{"read back", func() error { mustRead(t, fs, "/tmp/a.txt", "hello"); return nil }, nil},
		{"truncate shorter", func() error { return fs.Truncate("/", "/tmp/a.txt", 2) }, nil},
		{"read truncated", func() error { mustRead(t, fs, "/tmp/a.txt", "he"); return nil }, nil},
		{"truncate longer zero-fills", func() error { return fs.Truncate("/", "/tmp/a.txt", 4) }, nil},
		{"read zero-filled", func() error { mustRead(t, fs, "/tmp/a.txt", "he\x00\x00"); return nil }, nil},
		{"mkdir", func() error { return fs.Mkdir("/", "/tmp/d", 0o750) }, nil},
		{"mkdir again", func() error { return fs.Mkdir("/", "/tmp/d", 0o750) }, unix.EEXIST},
		{"mkdir with missing parent", func() error { return fs.Mkdir("/", "/tmp/x/y", 0o750) }, unix.ENOENT},
		{"mkdir in /proc", func() error { return fs.Mkdir("/", "/proc/x", 0o750) }, unix.EACCES},
		{"file in new dir", func() error { return writeFile(fs, "/tmp/d/f", "in d") }, nil},
		{"relative create", func() error {
			f, err := fs.Open("/tmp/d", "g", unix.O_CREAT|unix.O_WRONLY, 0o600)
			if err == nil {
				f.Close()
			}
			return err
		}, nil},
		{"rmdir non-empty", func() error { return fs.Rmdir("/", "/tmp/d") }, unix.ENOTEMPTY},
		{"unlink dir", func() error { return fs.Unlink("/", "/tmp/d") }, unix.EISDIR},
		{"rmdir file", func() error { return fs.Rmdir("/", "/tmp/d/f") }, unix.ENOTDIR},
		{"rename file", func() error { return fs.Rename("/", "/tmp/d/f", "/tmp/f2") }, nil},
		{"renamed content", func() error { mustRead(t, fs, "/tmp/f2", "in d"); return nil }, nil},
		{"old name gone", func() error { _, err := fs.Stat("/", "/tmp/d/f", false); return err }, unix.ENOENT},
		{"unlink", func() error { return fs.Unlink("/", "/tmp/d/g") }, nil},
		{"unlink again", func() error { return fs.Unlink("/", "/tmp/d/g") }, unix.ENOENT},
		{"rename dir", func() error { return fs.Rename("/", "/tmp/d", "/tmp/e") }, nil},
		{"rename dir into itself", func() error { return fs.Rename("/", "/tmp/e", "/tmp/e/sub") }, unix.EINVAL},
		{"rename file over dir", func() error { return fs.Rename("/", "/tmp/f2", "/tmp/e") }, unix.EISDIR},
		{"rename dir over file", func() error { return fs.Rename("/", "/tmp/e", "/tmp/f2") }, unix.ENOTDIR},
		{"rename over file", func() error { return fs.Rename("/", "/tmp/a.txt", "/tmp/f2") }, nil},
		{"replaced content", func() error { mustRead(t, fs, "/tmp/f2", "he\x00\x00"); return nil }, nil},
		{"rmdir", func() error { return fs.Rmdir("/", "/tmp/e") }, nil},
		{"rmdir root", func() error { return fs.Rmdir("/", "/") }, unix.EBUSY},
		{"symlink", func() error { return fs.Symlink("/", "f2", "/tmp/l") }, nil},
		{"symlink exists", func() error { return fs.Symlink("/", "f2", "/tmp/l") }, unix.EEXIST},
		{"read via symlink", func() error { mustRead(t, fs, "/tmp/l", "he\x00\x00"); return nil }, nil},
		{"chmod keeps mode", func() error {
			if err := fs.Chmod("/", "/tmp/f2", 0o4711); err != nil {
				return err
			}
			st, err := fs.Stat("/", "/tmp/f2", true)
			if err == nil && st.Mode != unix.S_IFREG|0o4711 {
				t.Fatalf("mode %o", st.Mode)
			}
			return err
		}, nil},
		{"mkdir mode kept", func() error {
			st, err := fs.Stat("/", "/tmp", true)
			if err == nil && st.Mode != unix.S_IFDIR|0o1777 {
				t.Fatalf("/tmp mode %o", st.Mode)
			}
			return err
		}, nil},
		{"host untouched", func() error {
			for _, p := range []string{"tmp/f2", "tmp/l", "tmp/a.txt"} {
				if _, err := os.Lstat(filepath.Join(fx.root, p)); err == nil {
					t.Fatalf("%s reached the host", p)
				}
			}
			return nil
		}, nil},
	}
	for _, s := range steps {
		mustErr(t, s.name, s.do(), s.err)
	}
}

func TestDirectoryMtimeChanges(t *testing.T) {
	// Python's import machinery caches directory listings by mtime.
	fs := newFixture(t).newFS(t, Options{})
	before, err := fs.Stat("/", "/usr/lib", true)
	mustOK(t, "stat", err)
	mustOK(t, "write", writeFile(fs, "/usr/lib/new.py", "x = 1\n"))
	after, err := fs.Stat("/", "/usr/lib", true)
	mustOK(t, "stat", err)
	if after.Mtime == before.Mtime {
		t.Fatal("creating a file did not change the directory's mtime")
	}
}

func TestWhiteout(t *testing.T) {
	fx := newFixture(t)
	fs := fx.newFS(t, Options{})
	mustOK(t, "unlink host file", fs.Unlink("/", "/etc/os-release"))
	_, err := fs.Stat("/", "/etc/os-release", false)
	mustErr(t, "stat after unlink", err, unix.ENOENT)
	if contains(names(listDir(t, fs, "/etc")), "os-release") {
		t.Fatal("whiteout listed")
	}
	_, err = readFile(fs, "/", "/usr/lib/up") // a symlink to it
	mustErr(t, "read via symlink", err, unix.ENOENT)
	mustOK(t, "recreate", writeFile(fs, "/etc/os-release", "ID=new\n"))
	mustRead(t, fs, "/etc/os-release", "ID=new\n")
	mustOK(t, "unlink again", fs.Unlink("/", "/etc/os-release"))
	_, err = fs.Stat("/", "/etc/os-release", false)
	mustErr(t, "stat after second unlink", err, unix.ENOENT)

	// Directories: rmdir of a host dir, then mkdir gives an empty one.
	mustOK(t, "unlink a.txt", fs.Unlink("/", "/usr/share/doc/a.txt"))
	mustErr(t, "rmdir non-empty", fs.Rmdir("/", "/usr/share/doc"), unix.ENOTEMPTY)
	mustOK(t, "unlink b.txt", fs.Unlink("/", "/usr/share/doc/b.txt"))
	mustOK(t, "rmdir emptied host dir", fs.Rmdir("/", "/usr/share/doc"))
	mustOK(t, "mkdir again", fs.Mkdir("/", "/usr/share/doc", 0o755))
	if got := names(listDir(t, fs, "/usr/share/doc")); len(got) != 2 {
		t.Fatalf("recreated dir lists %v", got)
	}
	mustOK(t, "rmdir empty host dir", fs.Rmdir("/", "/var/empty"))
	mustOK(t, "unlink host symlink", fs.Unlink("/", "/lib"))
	_, err = fs.Stat("/", "/lib/x.so", true)
	mustErr(t, "through removed symlink", err, unix.ENOENT)
	mustRead(t, fs, "/usr/lib/x.so", xsoText)

	// None of it reached the host.
	for _, p := range []string{"etc/os-release", "usr/share/doc/a.txt", "var/empty", "lib"} {
		if _, err := os.Lstat(filepath.Join(fx.root, p)); err != nil {
			t.Fatalf("host %s: %v", p, err)
		}
	}
}

func TestCopyUp(t *testing.T) {
	fx := newFixture(t)
	fs := fx.newFS(t, Options{})
	tests := []struct {
		name, path string
		flags      int
		write      string
		want       string
	}{
		{"rdwr overwrite start", "/etc/passwd", unix.O_RDWR, "ROOT", "ROOT" + passwdText[4:]},
		{"append", "/etc/os-release", unix.O_WRONLY | unix.O_APPEND, "VERSION=1\n", osRelease + "VERSION=1\n"},
		{"trunc", "/usr/lib/y.so", unix.O_WRONLY | unix.O_TRUNC, "new", "new"},
		{"through symlinks", "/lib/rel", unix.O_RDWR, "!", "!" + xsoText[1:]},
		{"rdonly trunc", "/usr/share/doc/a.txt", unix.O_RDONLY | unix.O_TRUNC, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hostBefore, _ := os.ReadFile(filepath.Join(fx.root, strings.TrimPrefix(tt.path, "/")))
			f, err := fs.Open("/", tt.path, tt.flags, 0)
			mustOK(t, "open", err)
			if tt.write != "" {
				_, err = f.Write([]byte(tt.write))
				mustOK(t, "write", err)
			}
			mustOK(t, "close", f.Close())
			got, err := readFile(fs, "/", tt.path)
			mustOK(t, "read back", err)
			if got != tt.want {
				t.Fatalf("after copy-up %q, want %q", got, tt.want)
			}
			hostAfter, _ := os.ReadFile(filepath.Join(fx.root, strings.TrimPrefix(tt.path, "/")))
			if !bytes.Equal(hostBefore, hostAfter) {
				t.Fatal("host file changed")
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(fx.root, "usr/lib/x.so")); string(b) != xsoText {
		t.Fatal("host x.so changed")
	}
	// A host file that is only read is not copied.
	used := fs.WritableUsed()
	_, err := readFile(fs, "/", "/usr/bin/python3")
	mustOK(t, "read", err)
	if fs.WritableUsed() != used {
		t.Fatal("reading copied up")
	}
	// Truncate by path copies only what is kept.
	mustOK(t, "truncate host file", fs.Truncate("/", "/usr/bin/python3", 3))
	mustRead(t, fs, "/usr/bin/python3", "#!f")
	st, err := fs.Stat("/", "/usr/bin/python3", true)
	mustOK(t, "stat", err)
	if st.Mode&0o777 != 0o755 {
		t.Fatalf("copy-up lost the mode: %o", st.Mode)
	}
}

func TestRenameHost(t *testing.T) {
	fx := newFixture(t)
	fs := fx.newFS(t, Options{})
	mustOK(t, "rename host file", fs.Rename("/", "/etc/passwd", "/tmp/passwd"))
	mustRead(t, fs, "/tmp/passwd", passwdText)
	_, err := fs.Stat("/", "/etc/passwd", false)
	mustErr(t, "old name", err, unix.ENOENT)
	_, err = readFile(fs, "/", "/etc/pwlink")
	mustErr(t, "symlink to the old name", err, unix.ENOENT)

	// A host directory moves without copying its contents.
	used := fs.WritableUsed()
	mustOK(t, "rename host dir", fs.Rename("/", "/usr/share", "/tmp/share"))
	if fs.WritableUsed()-used > 4*metaCost {
		t.Fatalf("renaming a directory cost %d bytes", fs.WritableUsed()-used)
	}
	mustRead(t, fs, "/tmp/share/doc/a.txt", "doc a")
	_, err = fs.Stat("/", "/usr/share", false)
	mustErr(t, "old dir", err, unix.ENOENT)
	mustOK(t, "write into moved dir", writeFile(fs, "/tmp/share/doc/c.txt", "c"))
	if got := strings.Join(names(listDir(t, fs, "/tmp/share/doc")), " "); got != ". .. a.txt b.txt c.txt" {
		t.Fatalf("moved dir lists %q", got)
	}
	mustOK(t, "move it back", fs.Rename("/", "/tmp/share", "/usr/share"))
	mustRead(t, fs, "/usr/share/doc/c.txt", "c")
	mustRead(t, fs, "/usr/share/doc/b.txt", "doc b")

	mustOK(t, "rename host symlink", fs.Rename("/", "/lib", "/lib64"))
	mustRead(t, fs, "/lib64/x.so", xsoText)
	mustErr(t, "rename synthetic", fs.Rename("/", "/etc/hostname", "/tmp/h"), unix.EBUSY)
	mustErr(t, "rename onto synthetic", fs.Rename("/", "/tmp/passwd", "/etc/hostname"), unix.EBUSY)
	mustErr(t, "rename into /dev", fs.Rename("/", "/tmp/passwd", "/dev/p"), unix.EXDEV)
	mustErr(t, "rename missing", fs.Rename("/", "/tmp/none", "/tmp/x"), unix.ENOENT)
	mustErr(t, "rename onto non-empty dir", fs.Rename("/", "/usr/share/doc", "/usr/lib"), unix.ENOTEMPTY)
	mustOK(t, "rename to itself", fs.Rename("/", "/usr/lib/x.so", "/lib64/x.so"))
	if _, err := os.Stat(filepath.Join(fx.root, "etc/passwd")); err != nil {
		t.Fatal("host changed")
	}
}

func TestOpenFlags(t *testing.T) {
	fs := newFixture(t).newFS(t, Options{})
	mustOK(t, "write", writeFile(fs, "/tmp/f", "0123456789"))
	tests := []struct {
		name  string
		path  string
		flags int
		err   error
	}{
		{"excl on existing", "/tmp/f", unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY, unix.EEXIST},
		{"excl on dangling symlink", "/dangling", unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY, unix.EEXIST},
		{"directory on a file", "/tmp/f", unix.O_DIRECTORY, unix.ENOTDIR},
		{"nofollow on symlink", "/lib", unix.O_NOFOLLOW, unix.ELOOP},
		{"path nofollow on symlink", "/lib", unix.O_PATH | unix.O_NOFOLLOW, nil},
		{"write a directory", "/usr", unix.O_WRONLY, unix.EISDIR},
		{"creat a directory", "/usr", unix.O_CREAT, unix.EISDIR},
		{"creat and directory", "/tmp/new", unix.O_CREAT | unix.O_DIRECTORY, unix.EINVAL},
		{"bad access mode", "/tmp/f", unix.O_ACCMODE, unix.EINVAL},
		{"missing", "/tmp/none", unix.O_RDONLY, unix.ENOENT},
		{"creat with trailing slash", "/tmp/newdir/", unix.O_CREAT | unix.O_WRONLY, unix.EISDIR},
		{"creat in /proc", "/proc/new", unix.O_CREAT | unix.O_WRONLY, unix.EACCES},
		{"write /proc/cpuinfo", "/proc/cpuinfo", unix.O_WRONLY, unix.EACCES},
		{"host fifo", "/usr/lib/fifo", unix.O_RDONLY, unix.EACCES},
		{"directory ok", "/usr/lib", unix.O_RDONLY | unix.O_DIRECTORY, nil},
		{"creat through dangling symlink", "/dangling", unix.O_CREAT | unix.O_WRONLY, unix.ENOENT}, // target's parent is missing
	}
	for _, tt := range tests {
		f, err := fs.Open("/", tt.path, tt.flags, 0o644)
		mustErr(t, tt.name, err, tt.err)
		if err == nil {
			f.Close()
		}
	}

	// O_CREAT follows a dangling symlink and creates its target.
	mustOK(t, "symlink", fs.Symlink("/", "/tmp/target", "/tmp/dl"))
	f, err := fs.Open("/", "/tmp/dl", unix.O_CREAT|unix.O_WRONLY, 0o600)
	mustOK(t, "creat via symlink", err)
	if f.Path() != "/tmp/target" {
		t.Fatalf("path %q", f.Path())
	}
	f.Close()
	mustRead(t, fs, "/tmp/target", "")

	// Access modes are enforced on the description.
	f, err = fs.Open("/", "/tmp/f", unix.O_RDONLY, 0)
	mustOK(t, "open", err)
	_, err = f.Write([]byte("x"))
	mustErr(t, "write on O_RDONLY", err, unix.EBADF)
	mustErr(t, "ftruncate on O_RDONLY", f.Truncate(0), unix.EINVAL)
	f.Close()
	mustErr(t, "double close", f.Close(), unix.EBADF)
	f, err = fs.Open("/", "/tmp/f", unix.O_WRONLY, 0)
	mustOK(t, "open", err)
	_, err = f.Read(make([]byte, 1))
	mustErr(t, "read on O_WRONLY", err, unix.EBADF)
	f.Close()
	f, err = fs.Open("/", "/etc/passwd", unix.O_RDONLY, 0)
	mustOK(t, "open host", err)
	_, err = f.Write([]byte("x"))
	mustErr(t, "write on host O_RDONLY", err, unix.EBADF)
	f.Close()

	// O_PATH handles only stat.
	f, err = fs.Open("/", "/lib", unix.O_PATH|unix.O_NOFOLLOW, 0)
	mustOK(t, "O_PATH", err)
	st, err := f.Stat()
	mustOK(t, "fstat O_PATH", err)
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Fatalf("O_PATH|O_NOFOLLOW stat mode %o", st.Mode)
	}
	_, err = f.Read(make([]byte, 1))
	mustErr(t, "read O_PATH", err, unix.EBADF)
	f.Close()

	// Offsets, O_APPEND, SetFlags and Seek.
	f, err = fs.Open("/", "/tmp/f", unix.O_RDWR, 0)
	mustOK(t, "open", err)
	buf := make([]byte, 4)
	n, _ := f.Read(buf)
	if string(buf[:n]) != "0123" {
		t.Fatalf("read %q", buf[:n])
	}
	f.SetFlags(unix.O_APPEND | unix.O_WRONLY) // only O_APPEND takes effect
	if f.Flags()&unix.O_ACCMODE != unix.O_RDWR || f.Flags()&unix.O_APPEND == 0 {
		t.Fatalf("flags %#x", f.Flags())
	}
	f.Write([]byte("ab"))
	if off, _ := f.Seek(0, unix.SEEK_CUR); off != 12 {
		t.Fatalf("offset after append %d", off)
	}
	f.Pwrite([]byte("Z"), 0) // Linux appends with O_APPEND
	mustRead(t, fs, "/tmp/f", "0123456789abZ")
	f.SetFlags(0)
	f.Pwrite([]byte("Z"), 0)
	mustRead(t, fs, "/tmp/f", "Z123456789abZ")
	for _, tt := range []struct {
		off    int64
		whence int
		want   int64
		err    error
	}{
		{3, unix.SEEK_SET, 3, nil},
		{2, unix.SEEK_CUR, 5, nil},
		{-1, unix.SEEK_END, 12, nil},
		{-100, unix.SEEK_CUR, 0, unix.EINVAL},
		{4, unix.SEEK_DATA, 4, nil},
		{4, unix.SEEK_HOLE, 13, nil},
		{13, unix.SEEK_DATA, 0, unix.ENXIO},
		{0, 9, 0, unix.EINVAL},
	} {
		got, err := f.Seek(tt.off, tt.whence)
		mustErr(t, "seek", err, tt.err)
		if err == nil && got != tt.want {
			t.Fatalf("Seek(%d, %d) = %d, want %d", tt.off, tt.whence, got, tt.want)
		}
	}
	f.Seek(20, unix.SEEK_SET)
	f.Write([]byte("!")) // a hole fills with zeros
	if f.Size() != 21 {
		t.Fatalf("size %d", f.Size())
	}
	mustOK(t, "ftruncate", f.Truncate(1))
	f.Close()
	mustRead(t, fs, "/tmp/f", "Z")
}

func TestUnlinkedOpenFile(t *testing.T) {
	fs := newFixture(t).newFS(t, Options{})
	base := fs.WritableUsed()
	f, err := fs.Open("/", "/tmp/scratch", unix.O_RDWR|unix.O_CREAT, 0o600)
	mustOK(t, "create", err)
	f.Write([]byte("still here"))
	mustOK(t, "unlink", fs.Unlink("/", "/tmp/scratch"))
	if fs.WritableUsed() == base {
		t.Fatal("open unlinked file stopped counting")
	}
	b := make([]byte, 32)
	n, err := f.Pread(b, 0)
	mustOK(t, "pread", err)
	if string(b[:n]) != "still here" {
		t.Fatalf("read %q", b[:n])
	}
	st, _ := f.Stat()
	if st.Nlink != 0 {
		t.Fatalf("nlink %d", st.Nlink)
	}
	f.Close()
	if fs.WritableUsed() != base {
		t.Fatalf("used %d after close, want %d", fs.WritableUsed(), base)
	}
}

func TestWritableLimit(t *testing.T) {
	fx := newFixture(t)
	const limit = 16 << 10
	fs := fx.newFS(t, Options{WritableLimit: limit})
	if fs.WritableUsed() != 0 {
		t.Fatalf("fresh FS uses %d", fs.WritableUsed())
	}
	f, err := fs.Open("/", "/tmp/big", unix.O_RDWR|unix.O_CREAT, 0o644)
	mustOK(t, "create", err)
	defer f.Close()
	if got := fs.WritableUsed(); got != metaCost {
		t.Fatalf("empty file costs %d", got)
	}
	_, err = f.Write(make([]byte, 8<<10))
	mustOK(t, "8 KiB", err)
	n, err := f.Write(make([]byte, 8<<10))
	mustErr(t, "8 KiB more", err, unix.ENOSPC)
	if n != 0 || f.Size() != 8<<10 {
		t.Fatalf("failed write wrote %d, size %d", n, f.Size())
	}
	rest := limit - metaCost - 8<<10
	_, err = f.Write(make([]byte, rest))
	mustOK(t, "exactly the rest", err)
	if fs.WritableUsed() != limit {
		t.Fatalf("used %d, want %d", fs.WritableUsed(), limit)
	}
	_, err = f.Write([]byte{1})
	mustErr(t, "one byte over", err, unix.ENOSPC)
	mustErr(t, "ftruncate over", f.Truncate(limit), unix.ENOSPC)
	mustErr(t, "mkdir at cap", fs.Mkdir("/", "/tmp/d", 0o755), unix.ENOSPC)
	mustErr(t, "symlink at cap", fs.Symlink("/", "x", "/tmp/l"), unix.ENOSPC)
	_, err = fs.Open("/", "/etc/passwd", unix.O_RDWR, 0)
	mustErr(t, "copy-up at cap", err, unix.ENOSPC)
	mustRead(t, fs, "/etc/passwd", passwdText)
	mustOK(t, "shrink", f.Truncate(0))
	if got := fs.WritableUsed(); got != metaCost {
		t.Fatalf("after shrink used %d", got)
	}
	mustOK(t, "unlink", fs.Unlink("/", "/tmp/big"))
	f.Close()
	if got := fs.WritableUsed(); got != 0 {
		t.Fatalf("after unlink used %d", got)
	}
	// Whiteouts count, so deleting host files cannot grow memory unbounded.
	// Here: copies of /usr, /usr/share, /usr/share/doc and one whiteout.
	small := fx.newFS(t, Options{WritableLimit: 4 * metaCost})
	mustOK(t, "unlink a.txt", small.Unlink("/", "/usr/share/doc/a.txt"))
	mustErr(t, "unlink b.txt", small.Unlink("/", "/usr/share/doc/b.txt"), unix.ENOSPC)
	mustRead(t, small, "/usr/share/doc/b.txt", "doc b")
	if small.WritableUsed() != 4*metaCost {
		t.Fatalf("used %d", small.WritableUsed())
	}
}

func TestWritableLimitCopyUp(t *testing.T) {
	fx := newFixture(t)
	big := filepath.Join(fx.root, "usr/lib/big.so")
	if err := os.WriteFile(big, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := fx.newFS(t, Options{WritableLimit: 512 << 10})
	_, err := fs.Open("/", "/usr/lib/big.so", unix.O_WRONLY, 0)
	mustErr(t, "copy-up over the limit", err, unix.ENOSPC)
	st, err := fs.Stat("/", "/usr/lib/big.so", true)
	mustOK(t, "stat", err)
	if st.Size != 1<<20 {
		t.Fatalf("size %d after failed copy-up", st.Size)
	}
	f, err := fs.Open("/", "/usr/lib/big.so", unix.O_WRONLY|unix.O_TRUNC, 0)
	mustOK(t, "O_TRUNC needs no copy", err)
	f.Close()
}

func TestUtimes(t *testing.T) {
	fs := newFixture(t).newFS(t, Options{})
	at, mt := unix.Timespec{Sec: 1000, Nsec: 1}, unix.Timespec{Sec: 2000, Nsec: 2}
	mustOK(t, "write", writeFile(fs, "/tmp/a", "a"))
	for _, p := range []string{"/tmp/a", "/etc/passwd", "/usr/lib"} {
		mustOK(t, "utimes "+p, fs.Utimes("/", p, &at, &mt, true))
		st, err := fs.Stat("/", p, true)
		mustOK(t, "stat", err)
		if st.Atime != at || st.Mtime != mt {
			t.Fatalf("%s: atime %v mtime %v", p, st.Atime, st.Mtime)
		}
	}
	omit := unix.Timespec{Nsec: unix.UTIME_OMIT}
	mustOK(t, "omit atime", fs.Utimes("/", "/tmp/a", &omit, nil, true))
	st, _ := fs.Stat("/", "/tmp/a", true)
	if st.Atime != at || st.Mtime == mt {
		t.Fatalf("UTIME_OMIT/now: atime %v mtime %v", st.Atime, st.Mtime)
	}
	mustRead(t, fs, "/etc/passwd", passwdText)
	mustOK(t, "utimes /dev/null", fs.Utimes("/", "/dev/null", nil, nil, true))
	mustErr(t, "utimes /proc/cpuinfo", fs.Utimes("/", "/proc/cpuinfo", nil, nil, true), unix.EPERM)
	mustErr(t, "utimes missing", fs.Utimes("/", "/tmp/none", nil, nil, true), unix.ENOENT)
}
