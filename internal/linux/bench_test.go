package linux

import (
	"bytes"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// BenchmarkVMCreate measures a whole VM's life: create it, load hello,
// run it to exit, destroy it.
func BenchmarkVMCreate(b *testing.B) {
	sys := requireKVM(b)
	hello := program(b, "hello", static)
	var out bytes.Buffer
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		out.Reset()
		p, err := New(sys, Config{Path: hello, Stdout: &out})
		if err != nil {
			b.Fatal(err)
		}
		st, err := p.Run()
		p.Close()
		if err != nil || st.Code != 0 {
			b.Fatalf("hello: %+v %v", st, err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "us/vm")
}

// BenchmarkSyscall measures a system call's round trip (guest → VMM →
// guest) with getpid, 100,000 calls per run. VM creation and teardown
// are not timed.
func BenchmarkSyscall(b *testing.B) {
	const calls = 100_000
	sys := requireKVM(b)
	loop := program(b, "getpid_loop", static)
	var elapsed time.Duration
	var syscalls, exits uint64
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		p, err := New(sys, Config{Path: loop, Args: []string{"getpid_loop", strconv.Itoa(calls)}})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		st, err := p.Run()
		elapsed += time.Since(start)
		b.StopTimer()
		s := p.Stats()
		syscalls, exits = syscalls+s.Syscalls, exits+s.Exits
		p.Close()
		if err != nil || st.Code != 0 {
			b.Fatalf("getpid_loop: %+v %v", st, err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(elapsed.Nanoseconds())/1e3/float64(b.N*calls), "us/syscall")
	b.ReportMetric(float64(exits)/float64(syscalls), "exits/syscall")
}

// BenchmarkPythonImportNumpy measures `python3 -c 'import numpy'` in the
// rootfs, from VM creation to exit.
func BenchmarkPythonImportNumpy(b *testing.B) {
	sys := requireKVM(b)
	root := rootfs(b)
	var syscalls, exits uint64
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		var stderr bytes.Buffer
		st, s, err := Run(sys, Config{
			Path: "/usr/bin/python3", Args: []string{"python3", "-c", "import numpy"},
			Env: pythonEnv, Root: root, MemorySize: 2 << 30, Stderr: &stderr,
		})
		if err != nil || st.Code != 0 {
			b.Fatalf("import numpy: %+v %v\n%s", st, err, stderr.String())
		}
		syscalls, exits = syscalls+s.Syscalls, exits+s.Exits
	}
	n := float64(b.N)
	guest := float64(time.Since(start).Microseconds()) / 1e3 / n
	// The same interpreter and numpy on the host, without a VM (chroot into
	// the rootfs), in the same run.
	b.StopTimer()
	hostStart := time.Now()
	for range b.N {
		cmd := exec.Command("chroot", root, "/usr/bin/python3", "-c", "import numpy")
		cmd.Env = pythonEnv
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("host import numpy: %v\n%s", err, out)
		}
	}
	host := float64(time.Since(hostStart).Microseconds()) / 1e3 / n
	b.ReportMetric(guest, "ms/import")
	b.ReportMetric(host, "host-ms/import")
	b.ReportMetric(guest/host, "guest/host")
	b.ReportMetric(float64(syscalls)/n, "syscalls/op")
	b.ReportMetric(float64(exits)/n, "exits/op")
}
