package linux

import (
	"os/exec"
	"strings"
	"testing"
)

// cpuFeatures prints the CPU features numpy's runtime dispatch found.
const cpuFeatures = `from numpy.core._multiarray_umath import __cpu_features__ as f
print(" ".join(sorted(k for k, v in f.items() if v)))`

// TestNumpyCPUFeatures checks that numpy in the guest sees the SIMD
// features the host CPU offers: the same list as the same numpy run on the
// host (chroot into the rootfs, no VM).
func TestNumpyCPUFeatures(t *testing.T) {
	sys := requireKVM(t)
	root := rootfs(t)
	r := runPython(t, sys, root, cpuFeatures)
	if r.Status.Code != 0 {
		t.Fatalf("guest: status %+v, stderr %s", r.Status, r.Stderr)
	}
	cmd := exec.Command("chroot", root, "/usr/bin/python3", "-c", cpuFeatures)
	cmd.Env = pythonEnv
	host, err := cmd.Output()
	if err != nil {
		t.Fatalf("host: chroot %s python3: %v", root, err)
	}
	guest := strings.TrimSpace(r.Stdout)
	if want := strings.TrimSpace(string(host)); guest != want {
		t.Errorf("numpy's CPU features differ\nguest: %s\nhost:  %s", guest, want)
	}
	if !strings.Contains(guest, "SSE2") {
		t.Errorf("guest numpy sees no SSE2: %q", guest)
	}
	t.Logf("numpy sees: %s", guest)
}
