// Package snapshot is the on-disk template format: a versioned manifest,
// a sparse memory image, the vCPU state and the process state, each file
// with a SHA-256 checksum in the manifest. A template is written to a
// temporary directory and renamed into place, and is refused whole — never
// half-loaded — when its version, checksums or sizes are wrong.
//
//	<dir>/manifest.json   Manifest (format version, sizes, checksums)
//	<dir>/memory.img      "FKVMMEM1", size, page count, page indices, pages
//	<dir>/cpu.bin         vm.CPUState, little-endian
//	<dir>/process.json    linux.State and vm.MemoryState
package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"forkvm/internal/kvm"
	"forkvm/internal/linux"
	"forkvm/internal/vm"

	"golang.org/x/sys/unix"
)

// FormatVersion is the version of the template format this forkvm reads
// and writes.
const FormatVersion = 1

// Manifest describes a template.
type Manifest struct {
	FormatVersion  int               `json:"format_version"`
	Name           string            `json:"name"`
	Language       string            `json:"language"`
	Created        time.Time         `json:"created"`
	ForkvmVersion  string            `json:"forkvm_version"`
	Rootfs         string            `json:"rootfs"`
	RootfsManifest string            `json:"rootfs_manifest_sha256"`
	AgentSHA256    string            `json:"agent_sha256"`
	Preload        []string          `json:"preload"`
	MemorySize     uint64            `json:"memory_size"`
	ImagePages     uint64            `json:"image_pages"`
	BuildTime      time.Duration     `json:"build_time_ns"`
	Syscalls       uint64            `json:"build_syscalls"`
	Files          map[string]string `json:"files"` // name -> sha256
	Sizes          map[string]int64  `json:"sizes"`
}

// processFile is process.json.
type processFile struct {
	Process *linux.State   `json:"process"`
	Memory  vm.MemoryState `json:"memory"`
}

// Template is a loaded template: its memory as a memfd that forks map
// copy-on-write, and the states they resume from.
type Template struct {
	Manifest Manifest
	Dir      string
	MemFD    int
	CPU      *vm.CPUState
	Memory   vm.MemoryState
	Process  *linux.State
}

// Close releases the template's memory.
func (t *Template) Close() error {
	if t.MemFD < 0 {
		return nil
	}
	err := unix.Close(t.MemFD)
	t.MemFD = -1
	return err
}

// ErrCorrupt is wrapped by Load's errors for templates that must be rebuilt.
var ErrCorrupt = errors.New("template is unusable")

// Write stores a template in dir (which must not exist) atomically.
func Write(dir string, m Manifest, mem []byte, cpu *vm.CPUState, ms vm.MemoryState, ps *linux.State) error {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	m.FormatVersion = FormatVersion
	m.Files, m.Sizes = map[string]string{}, map[string]int64{}
	write := func(name string, fill func(w io.Writer) error) error {
		f, err := os.Create(filepath.Join(tmp, name))
		if err != nil {
			return err
		}
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(f, h)}
		if err := fill(cw); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", name, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		m.Files[name] = hex.EncodeToString(h.Sum(nil))
		m.Sizes[name] = cw.n
		return nil
	}
	if err := write("memory.img", func(w io.Writer) error {
		n, err := writeImage(w, mem[:ms.FramesNext], ms.Size)
		m.ImagePages = n
		return err
	}); err != nil {
		return err
	}
	if err := write("cpu.bin", func(w io.Writer) error { return writeCPU(w, cpu) }); err != nil {
		return err
	}
	if err := write("process.json", func(w io.Writer) error {
		e := json.NewEncoder(w)
		e.SetIndent("", " ")
		return e.Encode(processFile{Process: ps, Memory: ms})
	}); err != nil {
		return err
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), append(mb, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("install template: %w", err)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

var imageMagic = []byte("FKVMMEM1")

// writeImage writes the non-zero pages of mem and returns their number.
func writeImage(w io.Writer, mem []byte, size uint64) (uint64, error) {
	var idx []uint64
	for pa := 0; pa+vm.PageSize <= len(mem); pa += vm.PageSize {
		if !zeroPage(mem[pa : pa+vm.PageSize]) {
			idx = append(idx, uint64(pa/vm.PageSize))
		}
	}
	hdr := append([]byte{}, imageMagic...)
	hdr = binary.LittleEndian.AppendUint64(hdr, size)
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(len(idx)))
	for _, i := range idx {
		hdr = binary.LittleEndian.AppendUint64(hdr, i)
	}
	if _, err := w.Write(hdr); err != nil {
		return 0, err
	}
	for _, i := range idx {
		if _, err := w.Write(mem[i*vm.PageSize : (i+1)*vm.PageSize]); err != nil {
			return 0, err
		}
	}
	return uint64(len(idx)), nil
}

func zeroPage(p []byte) bool {
	for i := 0; i < len(p); i += 8 {
		if binary.NativeEndian.Uint64(p[i:]) != 0 {
			return false
		}
	}
	return true
}

func writeCPU(w io.Writer, c *vm.CPUState) error {
	for _, v := range []any{c.Regs, c.Sregs, c.XCRs, uint32(len(c.XSAVE))} {
		if err := binary.Write(w, binary.LittleEndian, v); err != nil {
			return err
		}
	}
	_, err := w.Write(c.XSAVE)
	return err
}

func readCPU(b []byte) (*vm.CPUState, error) {
	r := bytes.NewReader(b)
	c := &vm.CPUState{}
	var n uint32
	for _, v := range []any{&c.Regs, &c.Sregs, &c.XCRs, &n} {
		if err := binary.Read(r, binary.LittleEndian, v); err != nil {
			return nil, err
		}
	}
	if int(n) != r.Len() || n < 512 || n > 1<<20 {
		return nil, fmt.Errorf("XSAVE area of %d bytes with %d bytes left", n, r.Len())
	}
	c.XSAVE = make([]byte, n)
	_, err := io.ReadFull(r, c.XSAVE)
	return c, err
}

// ReadManifest reads and checks a template's manifest only.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return m, fmt.Errorf("template %s: %w", dir, os.ErrNotExist)
		}
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: manifest.json: %v", ErrCorrupt, err)
	}
	if m.FormatVersion != FormatVersion {
		return m, fmt.Errorf("%w: format version %d, this forkvm reads version %d", ErrCorrupt, m.FormatVersion, FormatVersion)
	}
	return m, nil
}

// Load reads a template, verifying every checksum, and puts its memory in
// a memfd. sys is used to check that the host can restore the vCPU state.
func Load(dir string, sys *kvm.System) (*Template, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	read := func(name string) ([]byte, error) {
		want, ok := m.Files[name]
		if !ok {
			return nil, fmt.Errorf("%w: manifest lists no %s", ErrCorrupt, name)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if int64(len(b)) != m.Sizes[name] {
			return nil, fmt.Errorf("%w: %s is %d bytes, the manifest says %d (truncated?)", ErrCorrupt, name, len(b), m.Sizes[name])
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != want {
			return nil, fmt.Errorf("%w: %s has the wrong checksum", ErrCorrupt, name)
		}
		return b, nil
	}
	cb, err := read("cpu.bin")
	if err != nil {
		return nil, err
	}
	cpu, err := readCPU(cb)
	if err != nil {
		return nil, fmt.Errorf("%w: cpu.bin: %v", ErrCorrupt, err)
	}
	if len(cpu.XSAVE) != sys.XSAVESize {
		return nil, fmt.Errorf("%w: built on a CPU with a %d-byte XSAVE area, this one has %d", ErrCorrupt, len(cpu.XSAVE), sys.XSAVESize)
	}
	pb, err := read("process.json")
	if err != nil {
		return nil, err
	}
	var pf processFile
	if err := json.Unmarshal(pb, &pf); err != nil {
		return nil, fmt.Errorf("%w: process.json: %v", ErrCorrupt, err)
	}
	if pf.Process == nil {
		return nil, fmt.Errorf("%w: process.json holds no process state", ErrCorrupt)
	}
	if pf.Process.Version != linux.StateVersion {
		return nil, fmt.Errorf("%w: process.json: process state version %d, this forkvm reads version %d", ErrCorrupt, pf.Process.Version, linux.StateVersion)
	}
	if err := checkMemoryState(pf.Memory); err != nil {
		return nil, fmt.Errorf("%w: process.json: %v", ErrCorrupt, err)
	}
	ib, err := read("memory.img")
	if err != nil {
		return nil, err
	}
	fd, err := loadImage(ib, pf.Memory.Size)
	if err != nil {
		return nil, fmt.Errorf("%w: memory.img: %v", ErrCorrupt, err)
	}
	if err := vm.InstallKernel(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &Template{Manifest: m, Dir: dir, MemFD: fd, CPU: cpu, Memory: pf.Memory, Process: pf.Process}, nil
}

// checkMemoryState checks the allocator state against the memory size.
func checkMemoryState(ms vm.MemoryState) error {
	if ms.Size == 0 || ms.Size > vm.MaxMemory || ms.Size%vm.PageSize != 0 {
		return fmt.Errorf("memory size %d", ms.Size)
	}
	if ms.FramesNext < vm.FramesStart || ms.FramesNext > ms.Size || ms.FramesNext%vm.PageSize != 0 {
		return fmt.Errorf("allocator high-water mark %#x outside memory of %d bytes", ms.FramesNext, ms.Size)
	}
	for _, f := range ms.FramesFree {
		if f < vm.FramesStart || f >= ms.FramesNext || f%vm.PageSize != 0 {
			return fmt.Errorf("free frame %#x outside the allocated frames", f)
		}
	}
	return nil
}

// loadImage copies a memory image into a new memfd of size bytes.
func loadImage(b []byte, size uint64) (int, error) {
	if len(b) < 24 || !bytes.Equal(b[:8], imageMagic) {
		return -1, errors.New("not a forkvm memory image")
	}
	if binary.LittleEndian.Uint64(b[8:]) != size || size > vm.MaxMemory {
		return -1, errors.New("memory size does not match the process state")
	}
	n := binary.LittleEndian.Uint64(b[16:])
	if n > size/vm.PageSize || uint64(len(b)) != 24+n*8+n*vm.PageSize {
		return -1, fmt.Errorf("%d pages do not fit a %d-byte image", n, len(b))
	}
	fd, err := unix.MemfdCreate("forkvm-template", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, err
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return -1, err
	}
	data := b[24+n*8:]
	for i := uint64(0); i < n; i++ {
		page := binary.LittleEndian.Uint64(b[24+8*i:])
		if page >= size/vm.PageSize {
			unix.Close(fd)
			return -1, fmt.Errorf("page %d is outside memory", page)
		}
		if _, err := unix.Pwrite(fd, data[i*vm.PageSize:(i+1)*vm.PageSize], int64(page*vm.PageSize)); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}
