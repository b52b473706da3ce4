package vfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestEscapes tries every way out of the root we know: "..", the
// /proc/self/root symlink, absolute and relative symlinks aimed at host
// paths, and loops. Each either stays inside the root or fails.
func TestEscapes(t *testing.T) {
	fx := newFixture(t)
	fs := fx.newFS(t, Options{})
	tests := []struct {
		name, cwd, path string
		want            string
		err             error
	}{
		{"dotdot above root", "/", "/../../etc/passwd", passwdText, nil},
		{"dotdot mixed", "/", "/usr/../../usr/../etc/./passwd", passwdText, nil},
		{"relative dotdot from cwd", "/usr/lib", "../../../../../etc/passwd", passwdText, nil},
		{"proc self root", "/", "/proc/self/root/../../etc/passwd", passwdText, nil},
		{"proc self root deep", "/", "/proc/self/root/proc/self/root/etc/../../../etc/os-release", osRelease, nil},
		{"absolute symlink to etc/shadow", "/", "/shadowlink", "root:*:fake-shadow-in-root", nil},
		{"absolute symlink to host secret path", "/", "/secretlink", insideText, nil},
		{"host secret path named directly", "/", fx.secretFile, insideText, nil},
		{"relative symlink far above root", "/", "/usr/lib/esc", insideText, nil},
		{"symlink to host dir outside root", "/", "/secretdir/shadow", insideText, nil},
		{"absolute dir symlink", "/", "/lib/x.so", xsoText, nil},
		{"relative symlink", "/", "/usr/lib/rel", xsoText, nil},
		{"relative symlink upwards", "/", "/usr/lib/up", osRelease, nil},
		{"symlink to file", "/", "/etc/pwlink", passwdText, nil},
		{"relative via symlinked dir", "/lib", "../../etc/passwd", passwdText, nil},
		{"symlink target with trailing slash to a file", "/", "/usr/lib/slash", "", unix.ENOTDIR},
		{"symlink target with trailing slash to a dir", "/", "/libslash/x.so", xsoText, nil},
		{"loop", "/", "/loop1", "", unix.ELOOP},
		{"self loop as directory", "/", "/selfloop/x", "", unix.ELOOP},
		{"dangling symlink", "/", "/dangling", "", unix.ENOENT},
		{"file as directory", "/", "/usr/lib/x.so/", "", unix.ENOTDIR},
		{"file as directory, deeper", "/", "/usr/lib/x.so/..", "", unix.ENOTDIR},
		{"missing", "/", "/nonexistent/x", "", unix.ENOENT},
		{"empty path", "/", "", "", unix.ENOENT},
		{"long name", "/", "/" + strings.Repeat("a", 256), "", unix.ENAMETOOLONG},
		{"long path", "/", strings.Repeat("/a", 2100), "", unix.ENAMETOOLONG},
		{"NUL byte", "/", "/etc/passwd\x00/x", "", unix.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readFile(fs, tt.cwd, tt.path)
			mustErr(t, "open "+tt.path, err, tt.err)
			if got != tt.want {
				t.Fatalf("read %q = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

// TestSymlinkLimit checks that 40 symlinks resolve and 41 give ELOOP,
// using symlinks made in the memory layer.
func TestSymlinkLimit(t *testing.T) {
	fs := newFixture(t).newFS(t, Options{})
	mustOK(t, "write", writeFile(fs, "/tmp/end", "end"))
	for i := 0; i < 41; i++ {
		next := fmt.Sprintf("/tmp/c%d", i+1)
		if i == 40 {
			next = "/tmp/end"
		}
		mustOK(t, "symlink", fs.Symlink("/", next, fmt.Sprintf("/tmp/c%d", i)))
	}
	mustRead(t, fs, "/tmp/c1", "end") // 40 links
	_, err := readFile(fs, "/", "/tmp/c0")
	mustErr(t, "41 links", err, unix.ELOOP)
}

// TestSecretNeverReadable throws many spellings at every entry point and
// checks that nothing returns the secret's bytes or its host metadata.
func TestSecretNeverReadable(t *testing.T) {
	fx := newFixture(t)
	fs := fx.newFS(t, Options{})
	var secretSt unix.Stat_t
	mustOK(t, "stat secret", unix.Stat(fx.secretFile, &secretSt))
	rel := strings.TrimPrefix(fx.secretFile, "/")
	paths := []string{
		fx.secretFile, "/secretlink", "/usr/lib/esc", "/secretdir/shadow",
		"../../../../../../" + rel, "/proc/self/root/" + rel,
		"/proc/self/root/../" + rel, "/lib/../../../" + rel,
		"/usr/lib/up/../../" + rel, "//" + rel, "/./" + rel,
	}
	// The same, reached through symlinks the guest makes itself.
	mustOK(t, "symlink", fs.Symlink("/", fx.secretFile, "/tmp/s1"))
	mustOK(t, "symlink", fs.Symlink("/", "../../../../../../../"+rel, "/tmp/s2"))
	mustOK(t, "symlink", fs.Symlink("/", fx.secretDir, "/tmp/s3"))
	paths = append(paths, "/tmp/s1", "/tmp/s2", "/tmp/s3/shadow")
	for _, p := range paths {
		for _, cwd := range []string{"/", "/usr/lib", "/tmp"} {
			if got, _ := readFile(fs, cwd, p); strings.Contains(got, secretText) {
				t.Fatalf("read %q from %q returned the host secret", p, cwd)
			}
			for _, follow := range []bool{true, false} {
				if st, err := fs.Stat(cwd, p, follow); err == nil && st.Ino == secretSt.Ino && st.Size == secretSt.Size {
					t.Fatalf("stat %q from %q shows the host secret", p, cwd)
				}
			}
			if f, err := fs.Open(cwd, p, unix.O_RDWR, 0); err == nil {
				b := make([]byte, 100)
				n, _ := f.Pread(b, 0)
				if strings.Contains(string(b[:n]), secretText) {
					t.Fatalf("copy-up of %q read the host secret", p)
				}
				f.Close()
			}
		}
	}
	if b, _ := os.ReadFile(fx.secretFile); string(b) != secretText {
		t.Fatalf("host secret was modified: %q", b)
	}
}

func TestEmptyRoot(t *testing.T) {
	fs, err := New(Options{})
	mustOK(t, "New", err)
	defer fs.Close()
	ents, err := fs.Open("/", "/", unix.O_RDONLY, 0)
	mustOK(t, "open /", err)
	list, err := ents.ReadDir()
	mustOK(t, "readdir /", err)
	if got, want := strings.Join(names(list), " "), ". .. dev etc proc sys tmp"; got != want {
		t.Fatalf("ls / = %q, want %q", got, want)
	}
	mustRead(t, fs, "/etc/hostname", "forkvm\n")
	mustOK(t, "write /tmp/a", writeFile(fs, "/tmp/a", "a"))
	mustOK(t, "mkdir /etc/x", fs.Mkdir("/", "/etc/x", 0o755))
	mustOK(t, "mkdir /home", fs.Mkdir("/", "/home", 0o755))
	mustRead(t, fs, "/tmp/a", "a")
	_, err = fs.Stat("/", "/usr", true)
	mustErr(t, "stat /usr", err, unix.ENOENT)
}

func TestResolve(t *testing.T) {
	fs := newFixture(t).newFS(t, Options{})
	tests := []struct {
		cwd, path, want string
		err             error
	}{
		{"/", "/usr/lib", "/usr/lib", nil},
		{"/", "/lib", "/usr/lib", nil},
		{"/", "/lib/", "/usr/lib", nil},
		{"/usr", "lib/../share/./doc", "/usr/share/doc", nil},
		{"/usr/lib", "..", "/usr", nil},
		{"/", "/..", "/", nil},
		{"/", "/proc/self/root", "/", nil},
		{"/", "/proc/self", "/proc/self", nil},
		{"/", "/tmp", "/tmp", nil},
		{"/", "/lib/x.so", "", unix.ENOTDIR},
		{"/", "/nope", "", unix.ENOENT},
		{"/", "/loop1", "", unix.ELOOP},
	}
	for _, tt := range tests {
		got, err := fs.Resolve(tt.cwd, tt.path)
		mustErr(t, "resolve "+tt.path, err, tt.err)
		if got != tt.want {
			t.Errorf("Resolve(%q, %q) = %q, want %q", tt.cwd, tt.path, got, tt.want)
		}
	}
}

func TestStatAndReadlink(t *testing.T) {
	fx := newFixture(t)
	fs := fx.newFS(t, Options{})
	var host unix.Stat_t
	mustOK(t, "host stat", unix.Stat(filepath.Join(fx.root, "usr/lib/x.so"), &host))

	st, err := fs.Stat("/", "/lib/x.so", true)
	mustOK(t, "stat", err)
	if st.Size != host.Size || st.Mode != host.Mode || st.Mtime != host.Mtim || st.UID != 0 || st.GID != 0 || st.Ino != host.Ino {
		t.Fatalf("stat = %+v, host %+v", st, host)
	}
	lst, err := fs.Stat("/", "/lib", false)
	mustOK(t, "lstat", err)
	if lst.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Fatalf("lstat /lib mode %o", lst.Mode)
	}
	for _, tt := range []struct{ path, want string }{
		{"/lib", "/usr/lib"}, {"/usr/lib/rel", "x.so"}, {"/secretlink", fx.secretFile}, {"/proc/self/root", "/"},
	} {
		got, err := fs.Readlink("/", tt.path)
		mustOK(t, "readlink "+tt.path, err)
		if got != tt.want {
			t.Errorf("readlink %s = %q, want %q", tt.path, got, tt.want)
		}
	}
	_, err = fs.Readlink("/", "/etc/passwd")
	mustErr(t, "readlink of a file", err, unix.EINVAL)
	_, err = fs.Readlink("/", "/nope")
	mustErr(t, "readlink of nothing", err, unix.ENOENT)
}

func TestInodesStable(t *testing.T) {
	fs := newFixture(t).newFS(t, Options{})
	ino := func(p string, follow bool) (uint64, uint64) {
		t.Helper()
		st, err := fs.Stat("/", p, follow)
		mustOK(t, "stat "+p, err)
		return st.Dev, st.Ino
	}
	d1, i1 := ino("/usr/lib/x.so", true)
	d2, i2 := ino("/lib/x.so", true)
	d3, i3 := ino("/usr/lib/rel", true)
	if d1 != d2 || i1 != i2 || d1 != d3 || i1 != i3 {
		t.Fatal("one file, several identities")
	}
	if _, i := ino("/usr/lib/y.so", true); i == i1 {
		t.Fatal("two files, one inode")
	}
	// Copy-up keeps the identity.
	f, err := fs.Open("/", "/usr/lib/x.so", unix.O_RDWR, 0)
	mustOK(t, "open rw", err)
	f.Close()
	if d, i := ino("/usr/lib/x.so", true); d != d1 || i != i1 {
		t.Fatal("copy-up changed the identity")
	}
	// Directories keep theirs when copied up to hold a new file.
	dd, di := ino("/usr/share/doc", true)
	mustOK(t, "write", writeFile(fs, "/usr/share/doc/new", "n"))
	if d, i := ino("/usr/share/doc", true); d != dd || i != di {
		t.Fatal("copy-up of a directory changed its identity")
	}
	// Memory and synthetic nodes: stable, and distinct from each other.
	mustOK(t, "write", writeFile(fs, "/tmp/m", "m"))
	md, mi := ino("/tmp/m", true)
	if d, i := ino("/tmp/m", true); d != md || i != mi {
		t.Fatal("memory inode changed")
	}
	sd, si := ino("/dev/null", true)
	if sd == md || sd == d1 || md == d1 {
		t.Fatalf("layers share a device number: syn %x mem %x host %x", sd, md, d1)
	}
	if d, i := ino("/dev/null", true); d != sd || i != si {
		t.Fatal("synthetic inode changed")
	}
}

func TestAccess(t *testing.T) {
	fs := newFixture(t).newFS(t, Options{})
	mustOK(t, "write", writeFile(fs, "/tmp/noexec", "x"))
	tests := []struct {
		path string
		mode uint32
		err  error
	}{
		{"/usr/bin/python3", unix.X_OK, nil},
		{"/usr/bin/python3", unix.R_OK | unix.W_OK, nil},
		{"/etc/passwd", unix.X_OK, unix.EACCES},
		{"/etc/passwd", unix.F_OK, nil},
		{"/etc/passwd", unix.W_OK, nil}, // writable through copy-up
		{"/tmp/noexec", unix.X_OK, unix.EACCES},
		{"/usr/lib", unix.X_OK, nil},
		{"/lib", unix.R_OK | unix.X_OK, nil},
		{"/proc/cpuinfo", unix.R_OK, nil},
		{"/proc/cpuinfo", unix.W_OK, unix.EACCES},
		{"/dev/null", unix.W_OK, nil},
		{"/nope", unix.F_OK, unix.ENOENT},
		{"/dangling", unix.F_OK, unix.ENOENT},
		{"/etc/passwd", 8, unix.EINVAL},
	}
	for _, tt := range tests {
		mustErr(t, fmt.Sprintf("access(%s, %d)", tt.path, tt.mode), fs.Access("/", tt.path, tt.mode), tt.err)
	}
}
