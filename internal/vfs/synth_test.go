package vfs

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSyntheticFiles(t *testing.T) {
	fx := newFixture(t)
	maps := "00400000-00401000 r-xp 00000000 00:00 0 /usr/bin/python3\n"
	fs := fx.newFS(t, Options{ExePath: "/usr/bin/python3", Maps: func() []byte { return []byte(maps) }})
	tests := []struct {
		path string
		want string
	}{
		{"/dev/null", ""},
		{"/sys/devices/system/cpu/online", "0\n"},
		{"/sys/devices/system/cpu/possible", "0\n"},
		{"/etc/hostname", "forkvm\n"},
		{"/proc/self/maps", maps},
		{"/proc/self/exe", "#!fake python"},
		{"/proc/self/root/etc/os-release", osRelease},
	}
	for _, tt := range tests {
		mustRead(t, fs, tt.path, tt.want)
	}

	// The generators run at open time.
	f, err := fs.Open("/", "/proc/self/maps", unix.O_RDONLY, 0)
	mustOK(t, "open maps", err)
	maps = "changed\n"
	b := make([]byte, 100)
	n, _ := f.Read(b)
	if !strings.HasPrefix(string(b[:n]), "00400000") {
		t.Fatalf("maps changed under an open file: %q", b[:n])
	}
	f.Close()
	mustRead(t, fs, "/proc/self/maps", "changed\n")
	fs.SetMaps(nil)
	mustRead(t, fs, "/proc/self/maps", "")

	got, err := fs.Readlink("/", "/proc/self/exe")
	mustOK(t, "readlink exe", err)
	if got != "/usr/bin/python3" {
		t.Fatalf("exe -> %q", got)
	}
	fs.SetExePath("/usr/lib/x.so")
	mustRead(t, fs, "/proc/self/exe", xsoText)
	fs.SetExePath("")
	_, err = fs.Readlink("/", "/proc/self/exe")
	mustErr(t, "readlink exe unset", err, unix.ENOENT)

	custom := fx.newFS(t, Options{Hostname: "box"})
	mustRead(t, custom, "/etc/hostname", "box\n")
	st, err := custom.Stat("/", "/etc/hostname", true)
	mustOK(t, "stat hostname", err)
	if st.Size != 4 {
		t.Fatalf("hostname size %d", st.Size)
	}
	// /etc stays the host's /etc beneath the synthetic file.
	mustRead(t, custom, "/etc/passwd", passwdText)
}

func TestDevices(t *testing.T) {
	fs := newFixture(t).newFS(t, Options{})
	tests := []struct {
		path string
		rdev uint64
	}{
		{"/dev/null", unix.Mkdev(1, 3)},
		{"/dev/zero", unix.Mkdev(1, 5)},
		{"/dev/random", unix.Mkdev(1, 8)},
		{"/dev/urandom", unix.Mkdev(1, 9)},
	}
	for _, tt := range tests {
		st, err := fs.Stat("/", tt.path, true)
		mustOK(t, "stat "+tt.path, err)
		if st.Mode != unix.S_IFCHR|0o666 || st.Rdev != tt.rdev {
			t.Errorf("%s: mode %o rdev %x", tt.path, st.Mode, st.Rdev)
		}
		f, err := fs.Open("/", tt.path, unix.O_RDWR|unix.O_TRUNC, 0)
		mustOK(t, "open "+tt.path, err)
		n, err := f.Write([]byte("discarded"))
		if err != nil || n != 9 {
			t.Errorf("%s: write %d, %v", tt.path, n, err)
		}
		f.Close()
	}
	zero, _ := fs.Open("/", "/dev/zero", unix.O_RDONLY, 0)
	b := bytes.Repeat([]byte{0xff}, 64)
	if n, _ := zero.Read(b); n != 64 || !bytes.Equal(b, make([]byte, 64)) {
		t.Fatal("/dev/zero is not zero")
	}
	zero.Close()
	for _, p := range []string{"/dev/urandom", "/dev/random"} {
		f, _ := fs.Open("/", p, unix.O_RDONLY, 0)
		a, c := make([]byte, 32), make([]byte, 32)
		f.Read(a)
		f.Pread(c, 0)
		if bytes.Equal(a, c) || bytes.Equal(a, make([]byte, 32)) {
			t.Fatalf("%s repeats itself", p)
		}
		f.Close()
	}
	null, _ := fs.Open("/", "/dev/null", unix.O_RDONLY, 0)
	if n, err := null.Read(make([]byte, 10)); n != 0 || err != nil {
		t.Fatal("/dev/null is not empty")
	}
	null.Close()
	// The root's own /dev is hidden by the synthetic one.
	if got := strings.Join(names(listDir(t, fs, "/dev")), " "); got != ". .. null random urandom zero" {
		t.Fatalf("ls /dev = %q", got)
	}
	_, err := fs.Stat("/", "/dev/sda", true)
	mustErr(t, "root's /dev/sda", err, unix.ENOENT)
	mustErr(t, "unlink /dev/null", fs.Unlink("/", "/dev/null"), unix.EBUSY)
	mustErr(t, "rmdir /proc", fs.Rmdir("/", "/proc"), unix.EBUSY)
	mustErr(t, "unlink /etc/hostname", fs.Unlink("/", "/etc/hostname"), unix.EBUSY)
	mustErr(t, "truncate /proc/cpuinfo", fs.Truncate("/", "/proc/cpuinfo", 0), unix.EACCES)
}

func TestCPUInfo(t *testing.T) {
	host := []byte("processor\t: 0\nvendor_id\t: X\nsiblings\t: 2\ncpu cores\t: 2\nflags\t\t: fpu sse\n\n" +
		"processor\t: 1\nvendor_id\t: X\nsiblings\t: 2\n\n")
	want := "processor\t: 0\nvendor_id\t: X\nsiblings\t: 1\ncpu cores\t: 1\nflags\t\t: fpu sse\n\n"
	if got := string(firstCPU(host)); got != want {
		t.Fatalf("firstCPU = %q, want %q", got, want)
	}
	fs := newFixture(t).newFS(t, Options{})
	got, err := readFile(fs, "/", "/proc/cpuinfo")
	mustOK(t, "read cpuinfo", err)
	if n := strings.Count(got, "processor\t:"); got != "" && n != 1 {
		t.Fatalf("cpuinfo shows %d processors", n)
	}
}

func TestReadDirMerge(t *testing.T) {
	fx := newFixture(t)
	fs := fx.newFS(t, Options{})
	mustOK(t, "write", writeFile(fs, "/etc/zz-new", "n"))
	mustOK(t, "unlink", fs.Unlink("/", "/etc/passwd"))
	mustOK(t, "copy-up", writeFile(fs, "/etc/os-release", "ID=x\n"))

	ents := listDir(t, fs, "/etc")
	if got := strings.Join(names(ents), " "); got != ". .. hostname os-release pwlink shadow zz-new" {
		t.Fatalf("ls /etc = %q", got)
	}
	root := names(listDir(t, fs, "/"))
	for _, want := range []string{".", "..", "dev", "etc", "proc", "sys", "tmp", "usr", "lib", "loop1"} {
		if !contains(root, want) {
			t.Errorf("ls / lacks %q: %v", want, root)
		}
	}
	if strings.Join(root[:2], " ") != ". .." {
		t.Fatalf("ls / starts with %v", root[:2])
	}
	// Every entry's inode and type agree with lstat.
	for _, dir := range []string{"/", "/etc", "/usr/lib", "/proc", "/proc/self", "/dev", "/tmp"} {
		for _, e := range listDir(t, fs, dir) {
			p := joinPath(dir, e.Name)
			st, err := fs.Stat("/", p, false)
			mustOK(t, "lstat "+p, err)
			if e.Name != ".." && (st.Ino != e.Ino || dtype(st.Mode) != e.Type) {
				t.Errorf("%s: dirent ino %d type %d, lstat ino %d type %d", p, e.Ino, e.Type, st.Ino, dtype(st.Mode))
			}
		}
	}
	// ".." of /usr/lib is /usr.
	usr, _ := fs.Stat("/", "/usr", true)
	if ents := listDir(t, fs, "/usr/lib"); ents[1].Ino != usr.Ino {
		t.Fatal(`".." has the wrong inode`)
	}
	f, err := fs.Open("/", "/etc/os-release", unix.O_RDONLY, 0)
	mustOK(t, "open", err)
	_, err = f.ReadDir()
	mustErr(t, "readdir of a file", err, unix.ENOTDIR)
	f.Close()

	// A directory removed while open lists nothing.
	mustOK(t, "mkdir", fs.Mkdir("/", "/tmp/gone", 0o755))
	d, err := fs.Open("/", "/tmp/gone", unix.O_RDONLY, 0)
	mustOK(t, "open dir", err)
	mustOK(t, "rmdir", fs.Rmdir("/", "/tmp/gone"))
	if ents, err := d.ReadDir(); err != nil || len(ents) != 0 {
		t.Fatalf("removed dir lists %v, %v", ents, err)
	}
	d.Close()
}
