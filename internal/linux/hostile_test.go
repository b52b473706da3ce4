package linux

import (
	"strings"
	"testing"
	"time"
)

// TestHostileMemoryCalls runs system calls aimed at the VMM's own memory
// and bookkeeping: each must fail (or succeed) the way Linux's would, and
// the program must keep running.
func TestHostileMemoryCalls(t *testing.T) {
	sys := requireKVM(t)
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			r := run(t, sys, Config{Path: program(t, "hostile_mm", mode), MemorySize: 256 << 20, Timeout: time.Minute})
			if r.Status.Code != 0 {
				t.Fatalf("status %+v\nstdout: %s\nstderr: %s", r.Status, r.Stdout, r.Stderr)
			}
			want := map[string]string{
				"mmap_fixed_stub":     "-1",  // EPERM
				"mprotect_stub":       "-12", // ENOMEM: nothing mapped there
				"madvise_kernel":      "-22", // EINVAL
				"madvise_huge":        "0",
				"mincore_huge":        "-12",
				"mmap_hint_user":      "1",
				"mmap_big":            "1",
				"munmap_big":          "0",
				"mremap_fixed_zero":   "-22",
				"brk_minus_one_keeps": "1",
				"dupfd_negative":      "-22",
				"dup2_negative":       "-9",
				"dup3_negative":       "-9",
				"still_running":       "1",
			}
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
				if k, v, ok := strings.Cut(line, " "); ok {
					got[k] = v
				}
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

// TestRenameAt checks renameat between two directory descriptors and with
// an empty path (which once crashed the VMM).
func TestRenameAt(t *testing.T) {
	sys := requireKVM(t)
	root := rootfs(t)
	r := runPython(t, sys, root, `
import os
os.makedirs("/tmp/a"); os.makedirs("/tmp/b")
open("/tmp/a/f", "w").write("x")
a, b = os.open("/tmp/a", os.O_RDONLY), os.open("/tmp/b", os.O_RDONLY)
os.rename("f", "g", src_dir_fd=a, dst_dir_fd=b)
print(sorted(os.listdir("/tmp/a")), sorted(os.listdir("/tmp/b")), open("/tmp/b/g").read())
try:
    os.rename("", "h", src_dir_fd=a)
except FileNotFoundError:
    print("empty path: FileNotFoundError")
`)
	want := "[] ['g'] x\nempty path: FileNotFoundError\n"
	if r.Status.Code != 0 || r.Stdout != want {
		t.Errorf("status %+v, stdout %q, want %q; stderr %s", r.Status, r.Stdout, want, r.Stderr)
	}
}
