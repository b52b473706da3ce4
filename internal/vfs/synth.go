package vfs

import (
	"bytes"
	"os"
	"regexp"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// synKind says what a synthetic node is and how it reads.
type synKind uint8

const (
	synDir    synKind = iota
	synFile           // content generated at open time
	synLink           // symlink, target computed per FS
	synNull           // reads EOF, swallows writes
	synZero           // reads zeros, swallows writes
	synRandom         // reads host entropy, swallows writes
)

// synNode is one entry of the synthetic tree. The tree is built once and
// never changed, so every FS and clone shares it.
type synNode struct {
	name string
	kind synKind
	ino  uint64
	perm uint32
	rdev uint64
	size int64 // st_size reported (procfs reports 0, sysfs 4096); -1: the content's length

	// transparent directories show the memory and host directories at the
	// same path beneath their own entries; opaque ones show only these.
	transparent bool
	children    []*synNode // sorted by name

	content func(fs *FS) []byte
	target  func(fs *FS) string
}

func (s *synNode) child(name string) *synNode {
	i := sort.Search(len(s.children), func(i int) bool { return s.children[i].name >= name })
	if i < len(s.children) && s.children[i].name == name {
		return s.children[i]
	}
	return nil
}

func (s *synNode) mode() uint32 {
	switch s.kind {
	case synDir:
		return unix.S_IFDIR | s.perm
	case synLink:
		return unix.S_IFLNK | s.perm
	case synNull, synZero, synRandom:
		return unix.S_IFCHR | s.perm
	}
	return unix.S_IFREG | s.perm
}

func (s *synNode) isDevice() bool {
	return s.kind == synNull || s.kind == synZero || s.kind == synRandom
}

func (s *synNode) stat(fs *FS) Stat {
	st := Stat{
		Dev: synDev, Ino: s.ino, Mode: s.mode(), Nlink: 1, Rdev: s.rdev,
		Size: s.size, Blksize: 4096,
		Atime: bootTime, Mtime: bootTime, Ctime: bootTime,
	}
	if s.kind == synDir {
		st.Nlink = 2
	}
	if s.kind == synLink {
		st.Size = int64(len(s.target(fs)))
	}
	if st.Size < 0 {
		st.Size = int64(len(s.content(fs)))
	}
	return st
}

// bootTime is the timestamp every synthetic node carries.
var bootTime = unix.NsecToTimespec(time.Now().UnixNano())

func dir(name string, perm uint32, transparent bool, children ...*synNode) *synNode {
	sort.Slice(children, func(i, j int) bool { return children[i].name < children[j].name })
	return &synNode{name: name, kind: synDir, perm: perm, transparent: transparent, children: children}
}

func file(name string, perm uint32, size int64, content func(fs *FS) []byte) *synNode {
	return &synNode{name: name, kind: synFile, perm: perm, size: size, content: content}
}

func symlink(name string, target func(fs *FS) string) *synNode {
	return &synNode{name: name, kind: synLink, perm: 0o777, target: target}
}

func device(name string, kind synKind, major, minor uint32) *synNode {
	return &synNode{name: name, kind: kind, perm: 0o666, rdev: unix.Mkdev(major, minor)}
}

func constant(s string) func(*FS) []byte { return func(*FS) []byte { return []byte(s) } }

// synRoot is the top of the synthetic tree, at the guest "/".
var synRoot = func() *synNode {
	root := dir("", 0o755, true,
		dir("dev", 0o755, false,
			device("null", synNull, 1, 3),
			device("zero", synZero, 1, 5),
			device("random", synRandom, 1, 8),
			device("urandom", synRandom, 1, 9),
		),
		dir("proc", 0o555, false,
			dir("self", 0o555, false,
				symlink("exe", func(fs *FS) string { return fs.exePath }),
				file("maps", 0o444, 0, func(fs *FS) []byte {
					if fs.maps == nil {
						return nil
					}
					return bytes.Clone(fs.maps())
				}),
				symlink("root", func(*FS) string { return "/" }),
			),
			file("cpuinfo", 0o444, 0, func(*FS) []byte { return hostCPUInfo() }),
		),
		dir("sys", 0o555, false,
			dir("devices", 0o755, false,
				dir("system", 0o755, false,
					dir("cpu", 0o755, false,
						file("online", 0o444, 4096, constant("0\n")),
						file("possible", 0o444, 4096, constant("0\n")),
					),
				),
			),
		),
		dir("etc", 0o755, true,
			file("hostname", 0o644, 0, func(fs *FS) []byte { return []byte(fs.hostname + "\n") }),
		),
	)
	ino := uint64(1)
	var number func(*synNode)
	number = func(s *synNode) {
		s.ino = ino
		ino++
		for _, c := range s.children {
			number(c)
		}
	}
	number(root)
	// Regular files report their length where the real kernel does too.
	root.child("etc").child("hostname").size = -1
	return root
}()

// hostCPUInfo is the host's /proc/cpuinfo cut down to processor 0, since
// the guest has exactly one CPU. It is read once per process; this is the
// VMM reading its own host file, not a guest path.
var hostCPUInfo = sync.OnceValue(func() []byte {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return nil
	}
	return firstCPU(b)
})

var (
	reSiblings = regexp.MustCompile(`(?m)^(siblings\s*:\s*)\d+$`)
	reCores    = regexp.MustCompile(`(?m)^(cpu cores\s*:\s*)\d+$`)
)

// firstCPU keeps the first processor block of a cpuinfo text (blocks end
// with an empty line) and makes its topology fields say one CPU.
func firstCPU(b []byte) []byte {
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		b = b[:i+2]
	}
	b = reSiblings.ReplaceAll(b, []byte("${1}1"))
	b = reCores.ReplaceAll(b, []byte("${1}1"))
	return b
}
