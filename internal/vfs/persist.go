package vfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"golang.org/x/sys/unix"
)

// A template on disk keeps the memory layer and the open files of the
// process it was taken from. The encoding is private to this package and
// versioned; internal/snapshot stores the bytes.
//
//	"forkvm-vfs-layer" version
//	nextID nextIno rootID count
//	count × node: id dev ino mode linked cost atime mtime ctime
//	              data target lower children(name id)… whiteouts(name)…
//	CRC-32C of all of the above
//
// Integers are varints, strings and byte slices length-prefixed.

const (
	layerMagic   = "forkvm-vfs-layer"
	layerVersion = 1
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// MarshalLayer encodes the memory layer: every file, directory, symlink
// and whiteout, and files removed but still open, so that Files can be
// restored with Reopen.
func (fs *FS) MarshalLayer() []byte {
	var e encoder
	e.str(layerMagic)
	e.uint(layerVersion)
	e.uint(fs.nextID)
	e.uint(fs.nextIno)
	e.uint(fs.mroot.id)
	e.uint(uint64(len(fs.nodes)))
	for _, n := range fs.nodes {
		e.uint(n.id)
		e.uint(n.dev)
		e.uint(n.ino)
		e.uint(uint64(n.mode))
		e.bool(n.linked)
		e.int(n.cost)
		for _, t := range []unix.Timespec{n.atime, n.mtime, n.ctime} {
			e.int(t.Sec)
			e.int(t.Nsec)
		}
		e.bytes(n.bytes())
		e.str(n.target)
		e.str(n.lower)
		e.uint(uint64(len(n.children)))
		for name, c := range n.children {
			e.str(name)
			e.uint(c.id)
		}
		e.uint(uint64(len(n.whiteouts)))
		for name := range n.whiteouts {
			e.str(name)
		}
	}
	return binary.LittleEndian.AppendUint32(e.b, crc32.Checksum(e.b, crcTable))
}

// UnmarshalLayer replaces the memory layer of fs, which must be fresh from
// New, with one MarshalLayer encoded. It refuses other versions, damaged
// or inconsistent data, and a layer bigger than fs's writable limit.
func (fs *FS) UnmarshalLayer(b []byte) error {
	if err := fs.unmarshalLayer(b); err != nil {
		return fmt.Errorf("vfs: restore memory layer: %w", err)
	}
	return nil
}

var errCorrupt = errors.New("damaged or inconsistent data")

func (fs *FS) unmarshalLayer(b []byte) error {
	if len(b) < 4 {
		return errCorrupt
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	d := decoder{b: body}
	if d.str() != layerMagic {
		return errors.New("not a memory layer")
	}
	if v := d.uint(); v != layerVersion {
		return fmt.Errorf("version %d, this build reads version %d", v, layerVersion)
	}
	if crc32.Checksum(body, crcTable) != sum {
		return errors.New("checksum mismatch")
	}
	nextID, nextIno, rootID := d.uint(), d.uint(), d.uint()
	count := d.count()
	nodes := make(map[uint64]*mnode, count)
	kids := make(map[uint64][]uint64, count) // parent → children, for the checks below
	for range count {
		n := &mnode{id: d.uint(), dev: d.uint(), ino: d.uint()}
		mode := d.uint()
		n.linked = d.bool()
		n.cost = d.int()
		for _, t := range []*unix.Timespec{&n.atime, &n.mtime, &n.ctime} {
			t.Sec, t.Nsec = d.int(), d.int()
		}
		if data := d.bytes(); len(data) > 0 {
			n.data = &fileData{b: data}
		}
		n.target, n.lower = d.str(), d.str()
		if d.err != nil {
			return d.err
		}
		n.mode = uint32(mode)
		if uint64(n.mode) != mode || n.mode&^(unix.S_IFMT|0o7777) != 0 || n.id == 0 || n.id > nextID || nodes[n.id] != nil {
			return errCorrupt
		}
		switch {
		case n.isReg():
			if n.target != "" || n.lower != "" {
				return errCorrupt
			}
		case n.isLink():
			if n.data != nil || n.lower != "" || n.target == "" || len(n.target) >= unix.PathMax || strings.IndexByte(n.target, 0) >= 0 {
				return errCorrupt
			}
		case n.isDir():
			if n.data != nil || n.target != "" || (n.lower != "" && !validHostPath(n.lower)) {
				return errCorrupt
			}
			n.children = map[string]*mnode{}
		default:
			return errCorrupt
		}
		if n.cost != 0 && n.cost != metaCost+int64(len(n.target)) {
			return errCorrupt
		}
		for range d.count() {
			name, id := d.str(), d.uint()
			if !validName(name) || !n.isDir() || n.children[name] != nil {
				return errCorrupt
			}
			n.children[name] = &mnode{id: id} // placeholder, resolved below
			kids[n.id] = append(kids[n.id], id)
		}
		for range d.count() {
			name := d.str()
			if !validName(name) || !n.isDir() {
				return errCorrupt
			}
			if n.whiteouts == nil {
				n.whiteouts = map[string]struct{}{}
			}
			n.whiteouts[name] = struct{}{}
		}
		if d.err != nil {
			return d.err
		}
		nodes[n.id] = n
	}
	if d.err != nil || len(d.b) != 0 {
		return errCorrupt
	}

	// The linked nodes must form one tree under the root; nodes that are
	// not linked (removed but open) must hang nowhere.
	root := nodes[rootID]
	if root == nil || !root.isDir() || !root.linked {
		return errCorrupt
	}
	parents := make(map[uint64]int, len(nodes))
	for _, n := range nodes {
		for name, p := range n.children {
			c := nodes[p.id]
			if c == nil || !c.linked || c == root {
				return errCorrupt
			}
			if parents[c.id]++; parents[c.id] > 1 {
				return errCorrupt
			}
			n.children[name] = c
		}
	}
	reached := 0
	var visit func(*mnode)
	visit = func(n *mnode) {
		reached++
		for _, c := range n.children {
			visit(c)
		}
	}
	visit(root) // terminates: every node has at most one parent and the root none
	linked, used := 0, int64(0)
	for _, n := range nodes {
		if n.linked {
			linked++
		}
		used += n.held()
	}
	if reached != linked {
		return errCorrupt
	}
	if used > fs.limit {
		return unix.ENOSPC
	}
	fs.nodes, fs.mroot, fs.used = nodes, root, used
	fs.nextID, fs.nextIno = nextID, nextIno
	return nil
}

// validName reports whether s can be a directory entry.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= maxName && strings.IndexByte(s, '/') < 0 && strings.IndexByte(s, 0) < 0
}

// FileState is what a snapshot keeps of an open File.
type FileState struct {
	Path   string // canonical guest path at open
	Flags  int
	Offset int64
	Node   uint64 // the memory node it refers to, 0 if none
}

// State describes f for a snapshot; Reopen makes it a File again.
func (f *File) State() FileState {
	s := FileState{Path: f.path, Flags: f.flags, Offset: f.off}
	if n := f.loc.mem; n != nil {
		s.Node = n.id
	}
	return s
}

// Reopen restores a File from its State, after UnmarshalLayer has
// restored the memory layer it was taken with. Memory files are found by
// node, so renamed and removed files come back; others are opened again
// by path, and synthetic contents are generated afresh.
func (fs *FS) Reopen(s FileState) (*File, error) {
	if s.Offset < 0 {
		return nil, unix.EINVAL
	}
	w, err := fs.walk("/", s.Path, false)
	if err != nil && s.Node == 0 {
		return nil, err
	}
	if s.Node != 0 {
		n := fs.nodes[s.Node]
		if n == nil {
			return nil, unix.ENOENT
		}
		if err != nil || w.node.mem != n {
			// Moved or removed since it was opened: the node is all there is.
			w = &walked{node: loc{path: s.Path, mem: n}, dirs: []loc{fs.rootLoc()}}
		}
	} else if !w.node.exists() {
		return nil, unix.ENOENT
	}
	if s.Flags&unix.O_PATH == 0 && w.node.isLink() {
		return nil, unix.ELOOP
	}
	f, err := fs.openWalked(w, s.Flags)
	if err != nil {
		return nil, err
	}
	f.off = s.Offset
	return f, nil
}

type encoder struct{ b []byte }

func (e *encoder) uint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) int(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)  { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(b []byte) {
	e.uint(uint64(len(b)))
	e.b = append(e.b, b...)
}
func (e *encoder) bool(v bool) {
	if v {
		e.uint(1)
	} else {
		e.uint(0)
	}
}

// decoder reads what encoder wrote; after the first error every read
// returns zero and err stays set.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errCorrupt, nil }

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bool() bool {
	switch d.uint() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

// count reads a number of items, each at least one byte long, so a
// damaged count cannot make us allocate more than the input holds.
func (d *decoder) count() int {
	v := d.uint()
	if v > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.count()
	if d.err != nil || n == 0 {
		return nil
	}
	b := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return b
}

func (d *decoder) str() string { return string(d.bytes()) }
