package linux

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadELF loads arbitrary bytes as a program: the loader must refuse
// them with an error or build a process image, never panic, whatever the
// ELF headers claim.
func FuzzLoadELF(f *testing.F) {
	sys := requireKVM(f)
	for _, mode := range []linkMode{static, staticPIE} {
		b, err := os.ReadFile(program(f, "hello", mode))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if len(b) > 4096 {
			f.Add(b[:4096]) // headers, segments cut off
		}
	}
	f.Add([]byte("\x7fELF"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "prog")
		if err := os.WriteFile(path, data, 0o755); err != nil {
			t.Fatal(err)
		}
		p, err := New(sys, Config{Path: path, MemorySize: 8 << 20})
		if err == nil {
			p.Close()
		}
	})
}
