package vfs

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// buildLayer fills a layer with one of everything a snapshot must keep.
func buildLayer(t testing.TB, fs *FS) {
	t.Helper()
	for _, step := range []error{
		writeFile(fs, "/tmp/a", "alpha"),
		fs.Mkdir("/", "/tmp/d", 0o700),
		writeFile(fs, "/tmp/d/b", "beta"),
		fs.Symlink("/", "../a", "/tmp/d/l"),
		fs.Unlink("/", "/etc/passwd"),
		writeFile(fs, "/etc/os-release", "ID=saved\n"),
		fs.Rename("/", "/usr/share", "/opt-share"),
		fs.Chmod("/", "/tmp/a", 0o640),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
}

func TestLayerSnapshot(t *testing.T) {
	fx := newFixture(t)
	src := fx.newFS(t, Options{})
	buildLayer(t, src)
	open := func(p string, flags int) *File {
		f, err := src.Open("/", p, flags, 0o600)
		mustOK(t, "open "+p, err)
		return f
	}
	files := []*File{
		open("/tmp/a", unix.O_RDWR|unix.O_APPEND),
		open("/usr/lib/x.so", unix.O_RDONLY),
		open("/tmp/d", unix.O_RDONLY|unix.O_DIRECTORY),
		open("/tmp/gone", unix.O_RDWR|unix.O_CREAT),
		open("/etc/hostname", unix.O_RDONLY),
		open("/tmp/d/l", unix.O_PATH|unix.O_NOFOLLOW),
	}
	files[0].Seek(2, unix.SEEK_SET)
	files[1].Seek(3, unix.SEEK_SET)
	files[3].Write([]byte("removed but open"))
	mustOK(t, "unlink", src.Unlink("/", "/tmp/gone"))
	mustOK(t, "rename", src.Rename("/", "/tmp/d/b", "/tmp/b2"))
	var states []FileState
	for _, f := range files {
		states = append(states, f.State())
	}
	snap := src.MarshalLayer()

	dst := fx.newFS(t, Options{})
	mustOK(t, "UnmarshalLayer", dst.UnmarshalLayer(snap))
	if dst.WritableUsed() != src.WritableUsed() {
		t.Fatalf("used %d, source %d", dst.WritableUsed(), src.WritableUsed())
	}
	for _, dir := range []string{"/", "/tmp", "/tmp/d", "/etc", "/opt-share/doc", "/usr"} {
		a, b := names(listDir(t, src, dir)), names(listDir(t, dst, dir))
		if strings.Join(a, " ") != strings.Join(b, " ") {
			t.Errorf("ls %s: restored %v, source %v", dir, b, a)
		}
	}
	mustRead(t, dst, "/tmp/a", "alpha")
	mustRead(t, dst, "/tmp/b2", "beta")
	mustRead(t, dst, "/etc/os-release", "ID=saved\n")
	mustRead(t, dst, "/opt-share/doc/a.txt", "doc a")
	got, _ := dst.Readlink("/", "/tmp/d/l")
	if got != "../a" {
		t.Fatalf("symlink -> %q", got)
	}
	for _, p := range []string{"/etc/passwd", "/usr/share"} {
		_, err := dst.Stat("/", p, false)
		mustErr(t, p+" stays removed", err, unix.ENOENT)
	}
	for _, p := range []string{"/tmp/a", "/usr/lib/x.so", "/etc/os-release"} {
		s1, _ := src.Stat("/", p, false)
		s2, _ := dst.Stat("/", p, false)
		if s1 != s2 {
			t.Errorf("stat %s: restored %+v, source %+v", p, s2, s1)
		}
	}

	restored := make([]*File, len(states))
	for i, s := range states {
		f, err := dst.Reopen(s)
		mustOK(t, "Reopen "+s.Path, err)
		restored[i] = f
	}
	b := make([]byte, 64)
	n, _ := restored[0].Read(b)
	if string(b[:n]) != "pha" {
		t.Fatalf("restored offset read %q", b[:n])
	}
	restored[0].Write([]byte("!"))
	mustRead(t, dst, "/tmp/a", "alpha!") // still O_APPEND
	n, _ = restored[1].Read(b[:3])
	if string(b[:n]) != xsoText[3:6] {
		t.Fatalf("restored host file read %q", b[:n])
	}
	ents, err := restored[2].ReadDir()
	mustOK(t, "readdir", err)
	if strings.Join(names(ents), " ") != ". .. l" {
		t.Fatalf("restored dir lists %v", names(ents))
	}
	n, _ = restored[3].Pread(b, 0)
	if string(b[:n]) != "removed but open" {
		t.Fatalf("restored unlinked file read %q", b[:n])
	}
	used := dst.WritableUsed()
	restored[3].Close()
	if dst.WritableUsed() >= used {
		t.Fatal("closing the restored unlinked file freed nothing")
	}
	n, _ = restored[4].Read(b)
	if string(b[:n]) != "forkvm\n" {
		t.Fatalf("restored synthetic read %q", b[:n])
	}
	if st, _ := restored[5].Stat(); st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Fatal("restored O_PATH handle is not the symlink")
	}
	for _, f := range append(files, restored...) {
		f.Close()
	}

	// What must be refused.
	tooSmall := fx.newFS(t, Options{WritableLimit: 1024})
	if err := tooSmall.UnmarshalLayer(snap); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("over the limit: %v", err)
	}
	for i := range snap {
		bad := append([]byte(nil), snap...)
		bad[i] ^= 0x40
		if fresh := fx.newFS(t, Options{}); fresh.UnmarshalLayer(bad) == nil {
			t.Fatalf("damaged byte %d accepted", i)
		}
	}
	newer := withCRC(append(append([]byte(nil), snap[:len(layerMagic)+1]...), append([]byte{2}, snap[len(layerMagic)+2:len(snap)-4]...)...))
	if err := fx.newFS(t, Options{}).UnmarshalLayer(newer); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("newer version: %v", err)
	}
}

// withCRC appends the checksum the layer format ends with.
func withCRC(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// FuzzUnmarshalLayer feeds damaged layers (with valid checksums, so the
// parser itself is exercised) and checks they are refused or usable.
func FuzzUnmarshalLayer(f *testing.F) {
	fx := newFixture(f)
	src, err := New(Options{Root: fx.root})
	if err != nil {
		f.Fatal(err)
	}
	buildLayer(f, src)
	snap := src.MarshalLayer()
	f.Add(snap[:len(snap)-4])
	empty, _ := New(Options{})
	e := empty.MarshalLayer()
	f.Add(e[:len(e)-4])
	f.Fuzz(func(t *testing.T, body []byte) {
		fs, err := New(Options{Root: fx.root})
		if err != nil {
			t.Fatal(err)
		}
		defer fs.Close()
		if fs.UnmarshalLayer(withCRC(body)) != nil {
			return
		}
		// Accepted: it must be a usable tree that round-trips.
		var walk func(string, int)
		walk = func(dir string, depth int) {
			d, err := fs.Open("/", dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				return
			}
			ents, _ := d.ReadDir()
			d.Close()
			for _, e := range ents {
				if e.Name != "." && e.Name != ".." && depth < 8 {
					p := joinPath(dir, e.Name)
					fs.Stat("/", p, false)
					readFile(fs, "/", p)
					walk(p, depth+1)
				}
			}
		}
		walk("/tmp", 0)
		again, _ := New(Options{Root: fx.root})
		defer again.Close()
		if err := again.UnmarshalLayer(fs.MarshalLayer()); err != nil {
			t.Fatalf("accepted layer does not round-trip: %v", err)
		}
	})
}
