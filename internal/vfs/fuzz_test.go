package vfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzResolve resolves arbitrary paths, through guest-made symlinks with
// arbitrary targets, and checks that nothing outside the root is touched:
// every host path used is a plain relative path whose directory really
// lies under the root, every host file opened is under the root, the
// secret outside is never read, canonical paths are canonical and errors
// are errnos.
func FuzzResolve(f *testing.F) {
	fx := newFixture(f)
	rel := strings.TrimPrefix(fx.secretFile, "/")
	for _, seed := range [][2]string{
		{"/etc", "/../../etc/passwd"},
		{"/", "/proc/self/root/../../etc/shadow"},
		{fx.secretFile, "/secretlink"},
		{"../../../../../" + rel, fx.secretFile},
		{fx.secretDir, "../../" + rel},
		{"/usr/lib/esc", "/usr/lib/esc"},
		{"..", "/lib/../../../x"},
		{"/tmp/l", "/loop1"},
		{"/proc/self/exe", "/tmp/l/x"},
		{".", "//..//./"},
		{"/proc/self/root/..", "/proc/self/exe"},
		{"a\x00b", "\x00"},
		{"/dev/../etc", "/dev/../etc/hostname"},
		{"/secretdir", "/tmp/d/l2/shadow"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, target, p string) {
		testHookHostPath = func(rel string) { checkHostPath(t, fx.root, rel) }
		defer func() { testHookHostPath = nil }()
		fs, err := New(Options{Root: fx.root, ExePath: target})
		if err != nil {
			t.Fatal(err)
		}
		defer fs.Close()
		fs.Symlink("/", target, "/tmp/l")
		fs.Mkdir("/", "/tmp/d", 0o755)
		fs.Symlink("/", target, "/tmp/d/l2")
		for _, path := range []string{p, "/tmp/l/" + p, "/tmp/d/l2/" + p, "/proc/self/exe/" + p, target} {
			for _, cwd := range []string{"/", "/usr/lib", "/tmp/d"} {
				checkResolution(t, fx, fs, cwd, path)
			}
		}
	})
}

func checkHostPath(t *testing.T, root, rel string) {
	if !validHostPath(rel) {
		t.Fatalf("host path %q is not a plain relative path", rel)
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(root, filepath.Dir(rel)))
	if err != nil {
		return // the walk will find out too
	}
	if dir != root && !strings.HasPrefix(dir, root+"/") {
		t.Fatalf("host path %q lies in %q, outside the root", rel, dir)
	}
	if filepath.Join(root, filepath.Dir(rel)) != dir {
		t.Fatalf("host path %q goes through a symlink", rel)
	}
}

func checkResolution(t *testing.T, fx *fixture, fs *FS, cwd, path string) {
	checkErr := func(op string, err error) {
		if err == nil {
			return
		}
		if _, ok := err.(unix.Errno); !ok {
			t.Fatalf("%s(%q, %q): error %T %v is not an errno", op, cwd, path, err, err)
		}
	}
	f, err := fs.Open(cwd, path, unix.O_RDONLY, 0)
	checkErr("Open", err)
	if err == nil {
		checkCanonical(t, f.Path())
		if f.kind == kindHost {
			hp, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.fd))
			if err != nil || !strings.HasPrefix(hp, fx.root+"/") {
				t.Fatalf("Open(%q) opened host %q (%v), outside %q", path, hp, err, fx.root)
			}
		}
		if !f.IsDir() {
			b := make([]byte, 256)
			n, _ := f.Pread(b, 0)
			if strings.Contains(string(b[:n]), secretText) {
				t.Fatalf("Open(%q) read the host secret", path)
			}
		}
		f.Close()
	}
	_, err = fs.Stat(cwd, path, false)
	checkErr("Stat", err)
	_, err = fs.Stat(cwd, path, true)
	checkErr("Stat", err)
	_, err = fs.Readlink(cwd, path)
	checkErr("Readlink", err)
	if r, err := fs.Resolve(cwd, path); err == nil {
		checkCanonical(t, r)
	} else {
		checkErr("Resolve", err)
	}
}

func checkCanonical(t *testing.T, p string) {
	if p == "/" {
		return
	}
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
		t.Fatalf("path %q is not canonical", p)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == "." || c == ".." {
			t.Fatalf("path %q is not canonical", p)
		}
	}
}
