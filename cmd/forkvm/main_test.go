package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"forkvm/internal/kvm"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"4096", 4096, true}, {"512M", 512 << 20, true}, {"2G", 2 << 30, true}, {"1.5g", 3 << 29, true},
		{"64KiB", 64 << 10, true}, {"1x", 0, false}, {"", 0, false}, {"-1M", 0, false}, {"M", 0, false},
	} {
		got, err := parseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
	if got, _ := guestMemory("3M"); got != 4<<20 {
		t.Errorf("guestMemory(3M) = %d, want 4 MiB", got)
	}
}

// TestCLI drives the forkvm binary the way a user would: build a template,
// list, inspect and verify it, exec code in a fork, remove it, and get a
// clear error afterwards.
func TestCLI(t *testing.T) {
	if _, err := kvm.Open(); err != nil {
		if os.Getenv("FORKVM_REQUIRE_KVM") == "1" {
			t.Fatalf("KVM is not usable: %v", err)
		}
		t.Skipf("KVM is not usable: %v", err)
	}
	rootfs, _ := filepath.Abs("../../build/rootfs")
	if _, err := os.Stat(filepath.Join(rootfs, "usr/bin/python3")); err != nil {
		if os.Getenv("FORKVM_REQUIRE_KVM") == "1" {
			t.Fatalf("no rootfs at %s (run `make rootfs`)", rootfs)
		}
		t.Skip("no rootfs (run `make rootfs`)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "forkvm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	state := filepath.Join(dir, "state")
	run := func(wantCode int, args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("forkvm %v: %v", args, err)
		}
		if code != wantCode {
			t.Fatalf("forkvm %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, wantCode, stdout.String(), stderr.String())
		}
		return stdout.String(), stderr.String()
	}
	out, _ := run(0, "template", "build", "--state-dir", state, "--rootfs", rootfs, "--memory", "512M", "--preload", "numpy,json")
	if !strings.Contains(out, "template python built") {
		t.Errorf("build said %q", out)
	}
	if out, _ = run(0, "template", "ls", "--state-dir", state); !strings.Contains(out, "python") || !strings.Contains(out, "numpy,json") {
		t.Errorf("ls said %q", out)
	}
	if out, _ = run(0, "template", "inspect", "--verify", "--state-dir", state, "python"); !strings.Contains(out, `"format_version": 1`) {
		t.Errorf("inspect said %q", out)
	}
	out, errOut := run(0, "exec", "--state-dir", state, "import numpy as np; print(np.arange(10).sum())")
	if out != "45\n" || !strings.Contains(errOut, "fork ") || !strings.Contains(errOut, "KiB private memory") {
		t.Errorf("exec: stdout %q, stderr %q", out, errOut)
	}
	if _, errOut = run(3, "exec", "-q", "--state-dir", state, "import sys; sys.exit(3)"); errOut != "" {
		t.Errorf("exec -q printed %q", errOut)
	}
	run(0, "template", "rm", "--state-dir", state, "python")
	if _, errOut = run(1, "exec", "--state-dir", state, "print(1)"); !strings.Contains(errOut, "forkvm template build python") {
		t.Errorf("exec without a template said %q", errOut)
	}
	if _, errOut = run(1, "run", "--memory", "lots", "--", "/bin/true"); !strings.Contains(errOut, `"lots" is not a size`) {
		t.Errorf("bad --memory said %q", errOut)
	}
}
