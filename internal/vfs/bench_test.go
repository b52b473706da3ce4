package vfs

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkClone measures Clone of a layer holding a few small files, as
// a sandbox template's would.
func BenchmarkClone(b *testing.B) {
	fx := newFixture(b)
	fs := fx.newFS(b, Options{})
	for i := range 16 {
		if err := writeFile(fs, fmt.Sprintf("/tmp/f%d", i), "some content"); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		c := fs.Clone()
		c.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/clone")
}

// BenchmarkStatHost measures resolving a path four directories deep in
// the host root, the common case of Python's imports.
func BenchmarkStatHost(b *testing.B) {
	fx := newFixture(b)
	fs := fx.newFS(b, Options{})
	for b.Loop() {
		if _, err := fs.Stat("/", "/usr/share/doc/a.txt", true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenReadHost measures open, one pread and close of a host file.
func BenchmarkOpenReadHost(b *testing.B) {
	fx := newFixture(b)
	fs := fx.newFS(b, Options{})
	buf := make([]byte, 4096)
	for b.Loop() {
		f, err := fs.Open("/", "/lib/x.so", unix.O_RDONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		f.Pread(buf, 0)
		f.Close()
	}
}
