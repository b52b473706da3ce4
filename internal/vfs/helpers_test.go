package vfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const (
	secretText = "HOST-SECRET-7f3a9c" // outside the root; must never be read
	insideText = "inside-the-root"    // at <root>/<secret's host path>
	passwdText = "root:x:0:0:fake:/root:/bin/sh\n"
	osRelease  = "ID=fakeos\n"
	xsoText    = "\x7fELF-fake-x.so"
)

// fixture is a small fake root in a temp dir, and a host secret outside it.
type fixture struct {
	root       string // host path of the root, symlinks resolved
	secretDir  string // host directory holding the secret, outside root
	secretFile string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	secretDir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{root: root, secretDir: secretDir, secretFile: filepath.Join(secretDir, "shadow")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel, content string, perm os.FileMode) {
		t.Helper()
		p := filepath.Join(root, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, []byte(content), perm))
	}
	link := func(target, rel string) {
		t.Helper()
		p := filepath.Join(root, rel)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.Symlink(target, p))
	}
	must(os.WriteFile(fx.secretFile, []byte(secretText), 0o600))

	write("etc/os-release", osRelease, 0o644)
	write("etc/passwd", passwdText, 0o644)
	write("etc/shadow", "root:*:fake-shadow-in-root", 0o640)
	write("usr/lib/x.so", xsoText, 0o755)
	write("usr/lib/y.so", "y", 0o644)
	write("usr/bin/python3", "#!fake python", 0o755)
	write("usr/share/doc/a.txt", "doc a", 0o644)
	write("usr/share/doc/b.txt", "doc b", 0o644)
	write("dev/sda", "not a device: /dev is synthetic", 0o644)
	write(strings.TrimPrefix(fx.secretFile, "/"), insideText, 0o644)
	link("x.so", "usr/lib/rel")                                                           // relative
	link("../../etc/os-release", "usr/lib/up")                                            // relative, upwards
	link("/usr/lib", "lib")                                                               // absolute
	link("/etc/passwd", "etc/pwlink")                                                     // absolute, to a file
	link("/etc/shadow", "shadowlink")                                                     // the classic host path
	link(fx.secretFile, "secretlink")                                                     // absolute host path of the secret
	link(strings.Repeat("../", 12)+strings.TrimPrefix(fx.secretFile, "/"), "usr/lib/esc") // ".." far above the root
	link(secretDir, "secretdir")                                                          // a host directory outside the root
	link("x.so/", "usr/lib/slash")                                                        // a file named as a directory
	link("/usr/lib/", "libslash")                                                         // a directory named as one
	link("loop2", "loop1")
	link("loop1", "loop2")
	link("selfloop", "selfloop")
	link("/nonexistent/target", "dangling")
	must(unix.Mkfifo(filepath.Join(root, "usr/lib/fifo"), 0o644))
	must(os.MkdirAll(filepath.Join(root, "var/empty"), 0o755))
	return fx
}

func (fx *fixture) newFS(t testing.TB, opts Options) *FS {
	t.Helper()
	if opts.Root == "" {
		opts.Root = fx.root
	}
	fs, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs
}

// readFile opens path read-only and reads it whole.
func readFile(fs *FS, cwd, path string) (string, error) {
	f, err := fs.Open(cwd, path, unix.O_RDONLY, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return sb.String(), err
		}
		if n == 0 {
			return sb.String(), nil
		}
		sb.Write(buf[:n])
		if sb.Len() > 1<<20 {
			return sb.String(), nil // endless devices
		}
	}
}

// writeFile creates or truncates path and writes content.
func writeFile(fs *FS, path, content string) error {
	f, err := fs.Open("/", path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := f.Write([]byte(content))
	if err == nil && n != len(content) {
		err = unix.EIO
	}
	return err
}

func mustRead(t *testing.T, fs *FS, path, want string) {
	t.Helper()
	got, err := readFile(fs, "/", path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if got != want {
		t.Fatalf("read %s = %q, want %q", path, got, want)
	}
}

func mustErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
	if err != nil {
		if _, ok := err.(unix.Errno); !ok {
			t.Fatalf("%s: err %T is not a unix.Errno", what, err)
		}
	}
}

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func names(ents []Dirent) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	return out
}

func listDir(t *testing.T, fs *FS, path string) []Dirent {
	t.Helper()
	f, err := fs.Open("/", path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	ents, err := f.ReadDir()
	if err != nil {
		t.Fatalf("readdir %s: %v", path, err)
	}
	return ents
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// openFDs counts this process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
