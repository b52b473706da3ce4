package linux

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"forkvm/internal/kvm"
)

// repoRoot is the module root relative to this package's directory, where
// `go test` runs.
const repoRoot = "../.."

// binDir holds the test programs compiled from testdata/*.c. It lives for
// the whole test binary (created in TestMain, removed after the tests):
// a t.TempDir would vanish when the first test that built a program ends,
// while the cache below must outlive it.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "forkvm-linux-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "forkvm tests: create a directory for test programs:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// linkMode is how a test program is linked.
type linkMode string

const (
	static    linkMode = "static"     // fixed addresses, no interpreter
	staticPIE linkMode = "static-pie" // self-relocating, loaded at pieBase
)

// modes are the link modes a test program is run in.
var modes = []linkMode{static, staticPIE}

// build is one compiled test program; once makes each (file, mode) pair
// compile once per test binary whatever the number of tests that use it.
type build struct {
	once sync.Once
	path string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*build{}
)

// program compiles testdata/NAME.c with `gcc -MODE -O1` (once per test
// binary) and returns the executable's host path.
func program(t testing.TB, name string, mode linkMode) string {
	t.Helper()
	key := name + "." + string(mode)
	buildsMu.Lock()
	b := builds[key]
	if b == nil {
		b = &build{}
		builds[key] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() {
		src := filepath.Join(repoRoot, "testdata", name+".c")
		out := filepath.Join(binDir, key)
		cmd := exec.Command("gcc", "-"+string(mode), "-O1", "-o", out, src)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			b.err = fmt.Errorf("gcc -%s -O1 %s: %v\n%s", mode, src, err, stderr.String())
			return
		}
		b.path = out
	})
	if b.err != nil {
		t.Fatalf("build test program: %v", b.err)
	}
	return b.path
}

// symbolRange returns the run-time address range of a function in a test
// program: its symbol's value and size, plus pieBase for a static-PIE.
func symbolRange(t testing.TB, path, sym string) (lo, hi uint64) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var base uint64
	if f.Type == elf.ET_DYN {
		base = pieBase
	}
	for _, s := range syms {
		if s.Name == sym && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			return base + s.Value, base + s.Value + s.Size
		}
	}
	t.Fatalf("%s: no function %q", path, sym)
	return 0, 0
}

// requireKVMEnv, when "1", turns a missing /dev/kvm or rootfs into a test
// failure instead of a skip (CI machines that must run everything set it).
const requireKVMEnv = "FORKVM_REQUIRE_KVM"

// requireKVM opens /dev/kvm for one test, closing it when the test ends.
// Without KVM the test is skipped, or fails if FORKVM_REQUIRE_KVM=1.
func requireKVM(t testing.TB) *kvm.System {
	t.Helper()
	sys, err := kvm.Open()
	if err != nil {
		if os.Getenv(requireKVMEnv) == "1" {
			t.Fatalf("KVM is required (%s=1) but unavailable: %v", requireKVMEnv, err)
		}
		t.Skipf("KVM unavailable: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

// rootfs returns the absolute path of build/rootfs, the Debian root that
// `make rootfs` builds. Without it the test is skipped, or fails if
// FORKVM_REQUIRE_KVM=1.
func rootfs(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join(repoRoot, "build", "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "usr", "bin", "python3")); err != nil {
		if os.Getenv(requireKVMEnv) == "1" {
			t.Fatalf("no rootfs at %s: run `make rootfs` (%v)", dir, err)
		}
		t.Skipf("no rootfs at %s: run `make rootfs` to build it", dir)
	}
	return dir
}

// result is what a test run produced.
type result struct {
	Status
	Stats
	Stdout, Stderr string
}

// run runs cfg to completion, capturing stdout and stderr unless cfg
// already sets them. An error from Run (forkvm itself failing) fails the
// test.
func run(t testing.TB, sys *kvm.System, cfg Config) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if cfg.Stdout == nil {
		cfg.Stdout = &stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = &stderr
	}
	st, stats, err := Run(sys, cfg)
	if err != nil {
		t.Fatalf("Run(%s): %v", cfg.Path, err)
	}
	return result{Status: st, Stats: stats, Stdout: stdout.String(), Stderr: stderr.String()}
}
