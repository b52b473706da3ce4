package vfs

import (
	"fmt"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCloneIsolation(t *testing.T) {
	fx := newFixture(t)
	parent := fx.newFS(t, Options{})
	mustOK(t, "write", writeFile(parent, "/tmp/shared", "original"))
	mustOK(t, "mkdir", parent.Mkdir("/", "/tmp/dir", 0o755))
	mustOK(t, "write", writeFile(parent, "/tmp/dir/f", "in dir"))
	mustOK(t, "unlink host", parent.Unlink("/", "/etc/os-release"))
	used := parent.WritableUsed()

	child := parent.Clone()
	defer child.Close()
	if child.WritableUsed() != used {
		t.Fatalf("clone uses %d, parent %d", child.WritableUsed(), used)
	}
	mustRead(t, child, "/tmp/shared", "original")
	mustRead(t, child, "/tmp/dir/f", "in dir")
	_, err := child.Stat("/", "/etc/os-release", false)
	mustErr(t, "whiteout cloned", err, unix.ENOENT)

	steps := []struct {
		name string
		do   func() error
	}{
		{"child overwrites", func() error { return writeFile(child, "/tmp/shared", "child") }},
		{"parent appends", func() error {
			f, err := parent.Open("/", "/tmp/shared", unix.O_WRONLY|unix.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte("+parent"))
			return err
		}},
		{"child creates", func() error { return writeFile(child, "/tmp/only-child", "c") }},
		{"parent creates", func() error { return writeFile(parent, "/tmp/only-parent", "p") }},
		{"child removes a dir's file", func() error { return child.Unlink("/", "/tmp/dir/f") }},
		{"parent removes host file", func() error { return parent.Unlink("/", "/etc/passwd") }},
		{"child copies up", func() error { return writeFile(child, "/usr/lib/x.so", "child x") }},
		{"child renames", func() error { return child.Rename("/", "/tmp/dir", "/tmp/dir2") }},
		{"parent truncates", func() error { return parent.Truncate("/", "/tmp/dir/f", 2) }},
	}
	for _, s := range steps {
		mustOK(t, s.name, s.do())
	}
	mustRead(t, parent, "/tmp/shared", "original+parent")
	mustRead(t, child, "/tmp/shared", "child")
	mustRead(t, parent, "/tmp/dir/f", "in")
	_, err = child.Stat("/", "/tmp/dir2/f", false)
	mustErr(t, "child's removal", err, unix.ENOENT)
	mustRead(t, parent, "/usr/lib/x.so", xsoText)
	mustRead(t, child, "/usr/lib/x.so", "child x")
	mustRead(t, child, "/etc/passwd", passwdText)
	_, err = parent.Stat("/", "/etc/passwd", false)
	mustErr(t, "parent's removal", err, unix.ENOENT)
	for _, c := range []struct {
		fs   *FS
		path string
	}{{parent, "/tmp/only-child"}, {child, "/tmp/only-parent"}, {parent, "/tmp/dir2"}, {child, "/tmp/dir"}} {
		_, err := c.fs.Stat("/", c.path, false)
		mustErr(t, "other side's "+c.path, err, unix.ENOENT)
	}
}

func TestCloneOpenFiles(t *testing.T) {
	fx := newFixture(t)
	parent := fx.newFS(t, Options{})
	mem, err := parent.Open("/", "/tmp/log", unix.O_RDWR|unix.O_CREAT, 0o644)
	mustOK(t, "create", err)
	mem.Write([]byte("abc"))
	host, err := parent.Open("/", "/etc/passwd", unix.O_RDONLY, 0)
	mustOK(t, "open host", err)
	host.Seek(5, unix.SEEK_SET)
	tmp, err := parent.Open("/", "/tmp/tmpfile", unix.O_RDWR|unix.O_CREAT, 0o600)
	mustOK(t, "create", err)
	tmp.Write([]byte("unlinked"))
	mustOK(t, "unlink", parent.Unlink("/", "/tmp/tmpfile"))
	dir, err := parent.Open("/", "/tmp", unix.O_RDONLY, 0)
	mustOK(t, "open dir", err)

	child := parent.Clone()
	defer child.Close()
	var clones []*File
	for _, f := range []*File{mem, host, tmp, dir} {
		g, err := f.CloneInto(child)
		mustOK(t, "CloneInto "+f.Path(), err)
		clones = append(clones, g)
	}
	cmem, chost, ctmp, cdir := clones[0], clones[1], clones[2], clones[3]

	cmem.Write([]byte("-child"))
	mem.Write([]byte("-parent"))
	mustRead(t, parent, "/tmp/log", "abc-parent")
	mustRead(t, child, "/tmp/log", "abc-child")

	b := make([]byte, 3)
	chost.Read(b)
	if string(b) != passwdText[5:8] {
		t.Fatalf("cloned host file read %q", b)
	}
	host.Close() // the clone has its own descriptor
	chost.Read(b)
	if string(b) != passwdText[8:11] {
		t.Fatalf("cloned host file read %q after parent closed", b)
	}

	n, _ := ctmp.Pread(b, 0)
	if string(b[:n]) != "unl" {
		t.Fatalf("cloned unlinked file read %q", b[:n])
	}
	usedWithTmp := child.WritableUsed()
	ctmp.Close()
	if child.WritableUsed() >= usedWithTmp {
		t.Fatal("closing the cloned unlinked file freed nothing")
	}
	ents, err := cdir.ReadDir()
	mustOK(t, "readdir", err)
	if !contains(names(ents), "log") {
		t.Fatalf("cloned dir lists %v", names(ents))
	}
	for _, f := range []*File{mem, tmp, dir, cmem, chost, cdir} {
		f.Close()
	}
}

// TestCloneConcurrent clones one idle FS from many goroutines and uses
// the clones concurrently; run with -race.
func TestCloneConcurrent(t *testing.T) {
	fx := newFixture(t)
	template := fx.newFS(t, Options{})
	mustOK(t, "write", writeFile(template, "/tmp/seed", "seed"))
	mustOK(t, "copy-up", writeFile(template, "/etc/os-release", "ID=template\n"))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := template.Clone()
			defer c.Close()
			for j := range 20 {
				want := fmt.Sprintf("clone %d write %d", i, j)
				if err := writeFile(c, "/tmp/seed", want); err != nil {
					errs <- err
					return
				}
				f, err := c.Open("/", "/etc/os-release", unix.O_WRONLY|unix.O_APPEND, 0)
				if err != nil {
					errs <- err
					return
				}
				f.Write([]byte("x"))
				f.Close()
				if got, _ := readFile(c, "/", "/tmp/seed"); got != want {
					errs <- fmt.Errorf("clone %d read %q, want %q", i, got, want)
					return
				}
			}
			if got, _ := readFile(c, "/", "/etc/os-release"); got != "ID=template\n"+"xxxxxxxxxxxxxxxxxxxx" {
				errs <- fmt.Errorf("clone %d os-release %q", i, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mustRead(t, template, "/tmp/seed", "seed")
	mustRead(t, template, "/etc/os-release", "ID=template\n")
}

func TestFDLeak(t *testing.T) {
	fx := newFixture(t)
	fs := fx.newFS(t, Options{})
	mustOK(t, "write", writeFile(fs, "/tmp/m", "m"))
	before := openFDs(t)
	paths := []string{"/usr/lib/x.so", "/lib/rel", "/etc", "/usr/lib", "/tmp/m", "/proc/cpuinfo", "/dev/null", "/etc/os-release"}
	buf := make([]byte, 16)
	for i := range 10000 {
		p := paths[i%len(paths)]
		f, err := fs.Open("/", p, unix.O_RDONLY, 0)
		mustOK(t, "open "+p, err)
		if f.IsDir() {
			_, err = f.ReadDir()
		} else {
			_, err = f.Pread(buf, 0)
		}
		mustOK(t, "read "+p, err)
		if i%100 == 0 {
			g, err := f.CloneInto(fs) // a clone into the same FS still owns a descriptor
			mustOK(t, "CloneInto", err)
			g.Close()
		}
		mustOK(t, "close "+p, f.Close())
		if _, err := fs.Open("/", "/usr/lib/fifo", unix.O_RDONLY, 0); err == nil {
			t.Fatal("fifo opened")
		}
	}
	for range 100 {
		c := fs.Clone()
		c.Close()
		g, err := New(Options{Root: fx.root})
		mustOK(t, "New", err)
		g.Close()
	}
	if after := openFDs(t); after != before {
		t.Fatalf("%d descriptors open before, %d after", before, after)
	}
}
