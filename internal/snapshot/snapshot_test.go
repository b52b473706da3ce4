package snapshot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"forkvm/internal/kvm"
	"forkvm/internal/sandbox"
	"forkvm/internal/snapshot"
)

// rootfsDir is the guest root directory built by `make rootfs`, relative
// to this package's directory, where `go test` runs.
const rootfsDir = "../../build/rootfs"

// shared is the template the tests copy and corrupt, built once per test
// binary (about a second) into a directory TestMain removes.
var shared struct {
	once     sync.Once
	sys      *kvm.System
	kvmErr   error
	fsErr    error
	stateDir string
	dir      string // the template
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.stateDir != "" {
		os.RemoveAll(shared.stateDir)
	}
	if shared.sys != nil {
		shared.sys.Close()
	}
	os.Exit(code)
}

// template returns the host's KVM system and the directory of a freshly
// built template, building it on first use. Without KVM or a guest root
// directory the test is skipped, or fails when FORKVM_REQUIRE_KVM=1.
func template(t *testing.T) (*kvm.System, string) {
	t.Helper()
	shared.once.Do(func() {
		shared.sys, shared.kvmErr = kvm.Open()
		rootfs, err := filepath.Abs(rootfsDir)
		if err == nil {
			_, err = os.Stat(filepath.Join(rootfs, "etc/forkvm-rootfs.manifest"))
		}
		shared.fsErr = err
		if shared.kvmErr != nil || shared.fsErr != nil {
			return
		}
		if shared.stateDir, shared.err = os.MkdirTemp("", "forkvm-snapshot-test-"); shared.err != nil {
			return
		}
		_, shared.err = sandbox.Build(shared.sys, sandbox.BuildOptions{
			Name: "python", Rootfs: rootfs, StateDir: shared.stateDir,
			Preload: []string{"numpy"}, MemorySize: 2 << 30, Version: "test",
		})
		shared.dir = sandbox.TemplateDir(shared.stateDir, "python")
	})
	fail := t.Skipf
	if os.Getenv("FORKVM_REQUIRE_KVM") == "1" {
		fail = t.Fatalf
	}
	if shared.kvmErr != nil {
		fail("KVM is not usable here: %v", shared.kvmErr)
	}
	if shared.fsErr != nil {
		fail("no guest root directory at %s (run `make rootfs`): %v", rootfsDir, shared.fsErr)
	}
	if shared.err != nil {
		t.Fatalf("build the template: %v", shared.err)
	}
	return shared.sys, shared.dir
}

// copyTemplate copies the template directory src into a new temporary
// directory and returns the copy's path.
func copyTemplate(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "python")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// editManifest rewrites dir's manifest.json through a generic JSON object,
// so that fields this test does not know about are kept.
func editManifest(t *testing.T, dir string, edit func(m map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, "manifest.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if b, err = json.MarshalIndent(m, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile writes data as dir/name and records its checksum and size in
// the manifest, so that only the content itself is wrong.
func replaceFile(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	editManifest(t, dir, func(m map[string]any) {
		m["files"].(map[string]any)[name] = hex.EncodeToString(sum[:])
		m["sizes"].(map[string]any)[name] = len(data)
	})
}

func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestLoadRefusesCorruptTemplates damages a copy of a template in one way
// per case and checks that Load refuses it whole, with an error that says
// what is wrong.
func TestLoadRefusesCorruptTemplates(t *testing.T) {
	sys, src := template(t)
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string) // nil: an intact copy, which must load
		wantIs  error
		wantAll []string // each must be in the message
		wantAny []string // one of them must be in the message
	}{
		{name: "intact copy"},
		{
			name: "memory.img byte flipped",
			damage: func(t *testing.T, dir string) {
				b := readFile(t, dir, "memory.img")
				b[len(b)/2] ^= 0x40
				if err := os.WriteFile(filepath.Join(dir, "memory.img"), b, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"memory.img", "checksum"},
		},
		{
			name: "cpu.bin truncated",
			damage: func(t *testing.T, dir string) {
				b := readFile(t, dir, "cpu.bin")
				if err := os.Truncate(filepath.Join(dir, "cpu.bin"), int64(len(b)-100)); err != nil {
					t.Fatal(err)
				}
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"cpu.bin"}, wantAny: []string{"truncated", "size", "bytes"},
		},
		{
			name: "memory.img truncated",
			damage: func(t *testing.T, dir string) {
				if err := os.Truncate(filepath.Join(dir, "memory.img"), 4096); err != nil {
					t.Fatal(err)
				}
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"memory.img"}, wantAny: []string{"truncated", "size", "bytes"},
		},
		{
			name: "format version 999",
			damage: func(t *testing.T, dir string) {
				editManifest(t, dir, func(m map[string]any) { m["format_version"] = 999 })
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"format version", "999"},
		},
		{
			name: "manifest not JSON",
			damage: func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte("{\"format_version\": 1, "), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"manifest.json"},
		},
		{
			name: "manifest without a file",
			damage: func(t *testing.T, dir string) {
				editManifest(t, dir, func(m map[string]any) { delete(m["files"].(map[string]any), "process.json") })
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"process.json"},
		},
		{
			name: "memory.img missing",
			damage: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "memory.img")); err != nil {
					t.Fatal(err)
				}
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"memory.img"},
		},
		{
			name:   "template missing",
			damage: func(t *testing.T, dir string) { os.RemoveAll(dir) },
			wantIs: os.ErrNotExist,
		},
		{
			name: "process.json garbage, checksum fixed",
			damage: func(t *testing.T, dir string) {
				replaceFile(t, dir, "process.json", []byte("\x00\xffnot a process state\n"))
			},
			wantIs:  snapshot.ErrCorrupt,
			wantAll: []string{"process.json"},
		},
		{
			name: "process.json cut short, checksum fixed",
			damage: func(t *testing.T, dir string) {
				b := readFile(t, dir, "process.json")
				replaceFile(t, dir, "process.json", b[:len(b)/2])
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"process.json"},
		},
		{
			name:    "process.json without a process, checksum fixed",
			damage:  func(t *testing.T, dir string) { replaceFile(t, dir, "process.json", []byte("{}\n")) },
			wantIs:  snapshot.ErrCorrupt,
			wantAll: []string{"process.json"},
		},
		{
			// Well-formed, but of a layout this forkvm does not read: it
			// must be refused by Load, not by every fork.
			name: "process.json of another state version, checksum fixed",
			damage: func(t *testing.T, dir string) {
				var pf map[string]any
				if err := json.Unmarshal(readFile(t, dir, "process.json"), &pf); err != nil {
					t.Fatal(err)
				}
				pf["process"].(map[string]any)["Version"] = 999
				b, err := json.Marshal(pf)
				if err != nil {
					t.Fatal(err)
				}
				replaceFile(t, dir, "process.json", b)
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"process.json", "version 999"},
		},
		{
			name: "cpu.bin cut short, checksum fixed",
			damage: func(t *testing.T, dir string) {
				b := readFile(t, dir, "cpu.bin")
				replaceFile(t, dir, "cpu.bin", b[:len(b)-100])
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"cpu.bin"},
		},
		{
			name: "memory.img bad magic, checksum fixed",
			damage: func(t *testing.T, dir string) {
				b := readFile(t, dir, "memory.img")
				copy(b, "NOTANIMG")
				replaceFile(t, dir, "memory.img", b)
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"memory.img"},
		},
		{
			name: "memory.img page outside memory, checksum fixed",
			damage: func(t *testing.T, dir string) {
				b := readFile(t, dir, "memory.img")
				// The first page index, after magic, size and count.
				copy(b[24:32], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f})
				replaceFile(t, dir, "memory.img", b)
			},
			wantIs: snapshot.ErrCorrupt, wantAll: []string{"memory.img", "outside"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyTemplate(t, src)
			if tt.damage != nil {
				tt.damage(t, dir)
			}
			fds := openFDs(t)
			tmpl, err := snapshot.Load(dir, sys)
			if tt.damage == nil {
				if err != nil {
					t.Fatalf("Load of an intact copy: %v", err)
				}
				tmpl.Close()
				return
			}
			if err == nil {
				tmpl.Close()
				t.Fatal("Load accepted the damaged template")
			}
			t.Logf("error: %v", err)
			if tmpl != nil {
				t.Errorf("Load returned a template with its error %v", err)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tt.wantIs)
			}
			msg := err.Error()
			for _, s := range tt.wantAll {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not mention %q", msg, s)
				}
			}
			if len(tt.wantAny) > 0 && !slices.ContainsFunc(tt.wantAny, func(s string) bool { return strings.Contains(msg, s) }) {
				t.Errorf("error %q mentions none of %q", msg, tt.wantAny)
			}
			if strings.Contains(msg, "<nil>") || strings.Contains(msg, "%!") {
				t.Errorf("error %q does not say what is wrong", msg)
			}
			if n := openFDs(t); n != fds {
				t.Errorf("%d file descriptors open after the failed Load, %d before", n, fds)
			}
		})
	}
}

// TestLoadRoundTrip loads a freshly built template and runs a fork of it.
func TestLoadRoundTrip(t *testing.T) {
	sys, dir := template(t)
	m, err := snapshot.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := snapshot.Load(dir, sys)
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Close()
	if tmpl.Manifest.FormatVersion != snapshot.FormatVersion || tmpl.Manifest.Name != "python" ||
		tmpl.Manifest.MemorySize != 2<<30 || !slices.Contains(tmpl.Manifest.Preload, "numpy") ||
		tmpl.Manifest.ImagePages == 0 || tmpl.Manifest.ForkvmVersion != "test" {
		t.Errorf("manifest %+v does not describe the template built", tmpl.Manifest)
	}
	if fmt.Sprint(tmpl.Manifest) != fmt.Sprint(m) {
		t.Errorf("Load's manifest %+v differs from ReadManifest's %+v", tmpl.Manifest, m)
	}
	for _, name := range []string{"memory.img", "cpu.bin", "process.json"} {
		if tmpl.Manifest.Files[name] == "" || tmpl.Manifest.Sizes[name] <= 0 {
			t.Errorf("manifest has no checksum or size for %s", name)
		}
	}
	if tmpl.Memory.Size != 2<<30 || tmpl.Memory.FramesNext == 0 || tmpl.Process == nil ||
		tmpl.CPU == nil || len(tmpl.CPU.XSAVE) != sys.XSAVESize || tmpl.MemFD < 0 {
		t.Errorf("template state incomplete: memory %+v, process %v, XSAVE %d bytes, memfd %d",
			tmpl.Memory, tmpl.Process != nil, len(tmpl.CPU.XSAVE), tmpl.MemFD)
	}

	e := sandbox.NewEngine(sys, tmpl, 0)
	defer e.Close()
	res, err := e.Exec(context.Background(), sandbox.Request{Code: "print(1+1)"})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "2\n" || res.ExitCode != 0 || res.Outcome != "ok" {
		t.Errorf("fork of the loaded template: outcome %q, exit %d, stdout %q, stderr %q",
			res.Outcome, res.ExitCode, res.Stdout, res.Stderr)
	}
}
