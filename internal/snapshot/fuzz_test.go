package snapshot

import (
	"bytes"
	"encoding/binary"
	"testing"

	"forkvm/internal/vm"

	"golang.org/x/sys/unix"
)

// FuzzLoadImage feeds arbitrary bytes to the memory-image reader: it must
// refuse or accept them without panicking, and never write outside memory.
func FuzzLoadImage(f *testing.F) {
	page := bytes.Repeat([]byte{0xab}, vm.PageSize)
	var img bytes.Buffer
	mem := make([]byte, 4*vm.PageSize)
	copy(mem[2*vm.PageSize:], page)
	if _, err := writeImage(&img, mem, 4<<20); err != nil {
		f.Fatal(err)
	}
	f.Add(img.Bytes())
	f.Add([]byte("FKVMMEM1"))
	f.Add(append([]byte("FKVMMEM1"), make([]byte, 16)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		fd, err := loadImage(b, 4<<20)
		if err == nil {
			unix.Close(fd)
		}
	})
}

// FuzzReadCPU feeds arbitrary bytes to the vCPU state reader.
func FuzzReadCPU(f *testing.F) {
	var b bytes.Buffer
	c := &vm.CPUState{XSAVE: make([]byte, 4096)}
	if err := writeCPU(&b, c); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add(b.Bytes()[:100])
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := readCPU(data)
		if err == nil && len(c.XSAVE) != int(binary.LittleEndian.Uint32(data[len(data)-len(c.XSAVE)-4:])) {
			t.Fatalf("XSAVE area of %d bytes from a header that says otherwise", len(c.XSAVE))
		}
	})
}
