package vfs

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDeepPathsAndTruncateMemory checks two limits on what a guest can
// make the host hold: canonical paths stop at PATH_MAX, and truncating a
// file releases its buffer.
func TestDeepPathsAndTruncateMemory(t *testing.T) {
	fs, err := New(Options{WritableLimit: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	dir := "/tmp"
	name := strings.Repeat("d", 255)
	var last error
	for i := 0; i < 100; i++ {
		dir += "/" + name
		if last = fs.Mkdir("/", dir, 0o755); last != nil {
			break
		}
	}
	if !errors.Is(last, unix.ENAMETOOLONG) {
		t.Errorf("a 100-deep chain of 255-byte names: %v, want ENAMETOOLONG", last)
	}
	// Truncating a file gives its memory back (the limit counts bytes).
	f, err := fs.Open("/", "/tmp/big", unix.O_CREAT|unix.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 6<<20)); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	w, err := fs.walk("/", "/tmp/big", true)
	if err != nil || w.node.mem == nil {
		t.Fatalf("walk: %v", err)
	}
	if c := cap(w.node.mem.data.b); c > 1<<20 {
		t.Errorf("a truncated file still holds %d bytes", c)
	}
}
