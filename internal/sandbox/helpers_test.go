package sandbox_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"forkvm/internal/kvm"
	"forkvm/internal/sandbox"
	"forkvm/internal/snapshot"

	"golang.org/x/sys/unix"
)

// rootfsDir is the guest root directory built by `make rootfs`, relative
// to this package's directory, where `go test` runs.
const rootfsDir = "../../build/rootfs"

// host is the KVM system and guest root every test shares: /dev/kvm is
// opened once per test binary.
var host struct {
	once   sync.Once
	sys    *kvm.System
	rootfs string // absolute
	kvmErr error  // why KVM is unusable, if it is
	fsErr  error  // why the rootfs is unusable, if it is
}

// shared is the one template all the tests of the package fork: building
// it takes about a second, so it is built once, on first use, into a
// state directory that TestMain removes after the tests.
var shared struct {
	once     sync.Once
	stateDir string
	manifest snapshot.Manifest
	tmpl     *snapshot.Template
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.tmpl != nil {
		shared.tmpl.Close()
	}
	if shared.stateDir != "" {
		os.RemoveAll(shared.stateDir)
	}
	if host.sys != nil {
		host.sys.Close()
	}
	os.Exit(code)
}

// requireKVM returns the host's KVM system, or skips the test when there
// is no usable /dev/kvm or no guest root directory — unless
// FORKVM_REQUIRE_KVM=1, as in CI, where either is a failure.
func requireKVM(t testing.TB) *kvm.System {
	t.Helper()
	host.once.Do(func() {
		host.sys, host.kvmErr = kvm.Open()
		abs, err := filepath.Abs(rootfsDir)
		if err != nil {
			host.fsErr = err
			return
		}
		host.rootfs = abs
		if _, err := os.Stat(filepath.Join(abs, "etc/forkvm-rootfs.manifest")); err != nil {
			host.fsErr = err
		}
	})
	fail := t.Skipf
	if os.Getenv("FORKVM_REQUIRE_KVM") == "1" {
		fail = t.Fatalf
	}
	if host.kvmErr != nil {
		fail("KVM is not usable here: %v", host.kvmErr)
	}
	if host.fsErr != nil {
		fail("no guest root directory at %s (run `make rootfs`): %v", rootfsDir, host.fsErr)
	}
	return host.sys
}

// template returns the shared template (numpy preloaded, 2 GiB of guest
// memory), building and loading it on first use.
func template(t testing.TB) (*kvm.System, *snapshot.Template) {
	t.Helper()
	sys := requireKVM(t)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "forkvm-sandbox-test-")
		if err != nil {
			shared.err = err
			return
		}
		shared.stateDir = dir
		start := time.Now()
		shared.manifest, shared.err = sandbox.Build(sys, sandbox.BuildOptions{
			Name: "python", Rootfs: host.rootfs, StateDir: dir,
			Preload:    []string{"numpy", "json", "random"},
			MemorySize: 2 << 30, Version: "test",
		})
		if shared.err != nil {
			shared.err = fmt.Errorf("build the template: %w", shared.err)
			return
		}
		shared.tmpl, shared.err = snapshot.Load(sandbox.TemplateDir(dir, "python"), sys)
		if shared.err != nil {
			shared.err = fmt.Errorf("load the template: %w", shared.err)
			return
		}
		t.Logf("template built and loaded in %v: %d image pages, %d build syscalls",
			time.Since(start).Round(time.Millisecond), shared.manifest.ImagePages, shared.manifest.Syscalls)
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return sys, shared.tmpl
}

// engine returns a new engine on the shared template, closed when the test
// ends, after its sandboxes are torn down so that the next test starts
// with none alive.
func engine(t testing.TB, poolSize int) *sandbox.Engine {
	t.Helper()
	sys, tmpl := template(t)
	e := sandbox.NewEngine(sys, tmpl, poolSize)
	t.Cleanup(func() {
		e.Close()
		waitNoneLive(t, e)
	})
	return e
}

// run executes req and fails the test on an error of forkvm itself.
func run(t testing.TB, e *sandbox.Engine, req sandbox.Request) sandbox.Result {
	t.Helper()
	res, err := e.Exec(context.Background(), req)
	if err != nil {
		t.Fatalf("Exec(%q): %v", req.Code, err)
	}
	return res
}

// waitNoneLive waits for the engine's sandboxes to be torn down, which
// Exec does in the background after it returns, and fails the test if some
// are still alive after a few seconds.
func waitNoneLive(t testing.TB, e *sandbox.Engine) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.Live() != 0 {
		if time.Now().After(deadline) {
			t.Errorf("Live() = %d five seconds after every Exec returned", e.Live())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// describe is a one-line summary of a result for failure messages and logs.
func describe(r sandbox.Result) string {
	return fmt.Sprintf("outcome=%q exit=%d error=%q stdout=%q stderr=%q fork=%v exec=%v private=%d KiB pooled=%v",
		r.Outcome, r.ExitCode, r.Error, clip(r.Stdout), clip(r.Stderr), r.ForkTime, r.ExecTime, r.PrivateBytes>>10, r.Pooled)
}

func clip(b []byte) string {
	const n = 300
	if len(b) > n {
		return string(b[:n/2]) + fmt.Sprintf("...(%d bytes)...", len(b)) + string(b[len(b)-n/2:])
	}
	return string(b)
}

// openFDs lists this process's open file descriptors with what they refer
// to.
func openFDs(t testing.TB) map[string]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]string{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the descriptor ReadDir itself used, closed by now
		}
		fds[e.Name()] = target
	}
	return fds
}

// newFDs lists the descriptors in now that are not in before.
func newFDs(before, now map[string]string) []string {
	var out []string
	for fd, target := range now {
		if before[fd] != target {
			out = append(out, fd+" -> "+target)
		}
	}
	sort.Strings(out)
	return out
}

// memoryHash hashes the template's memory up to the allocator's high-water
// mark: what every fork starts from.
func memoryHash(t testing.TB, tmpl *snapshot.Template) string {
	t.Helper()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < int64(tmpl.Memory.FramesNext); off += int64(len(buf)) {
		n, err := unix.Pread(tmpl.MemFD, buf, off)
		if err != nil {
			t.Fatalf("read template memory at %#x: %v", off, err)
		}
		h.Write(buf[:n])
		if n < len(buf) {
			break
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
