package linux

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// programCase is one run of a testdata program and what must come of it.
type programCase struct {
	name string
	prog string   // testdata/<prog>.c
	args []string // after argv[0]
	env  []string
	cfg  func(*Config) // adjusts the configuration (limits)

	code     int
	reason   string
	stdout   string         // exact stdout, unless stdoutRE is set
	stdoutRE *regexp.Regexp // stdout must match
	msg      []string       // substrings of Status.Message ("" for none: Message must be empty)
	// faultIn, if set, is the function that holds the faulting instruction:
	// the rip in Message must lie inside it.
	faultIn string
	check   func(t *testing.T, r result)
}

func programCases() []programCase {
	guestFault := "forkvm: guest fault: "
	return []programCase{
		{name: "hello", prog: "hello", reason: "exit",
			stdout: "Hello from inside a KVM VM!\n"},
		{name: "args", prog: "args", args: []string{"one", "two words", "", "--flag=x"},
			env:    []string{"FOO=foo value", "OTHER=1"},
			reason: "exit",
			stdout: "argc=5\nargv[0]=args\nargv[1]=one\nargv[2]=two words\nargv[3]=\nargv[4]=--flag=x\nFOO=foo value\nBAR=(unset)\n"},
		{name: "malloc100", prog: "malloc100", reason: "exit",
			// Byte i is i*7 mod 256, a permutation of 0..255 every 256
			// bytes: 100 MiB/256 periods of 255*256/2.
			stdout: "checksum " + strconv.Itoa((100<<20)/256*(255*256/2)) + "\n"},
		{name: "checksum", prog: "checksum", reason: "exit",
			stdout: "fb3ebe4c96f09cd3\n"}, // from the same program run natively on the host
		{name: "exit-0", prog: "exitcode", args: []string{"0"}, reason: "exit", code: 0},
		{name: "exit-3", prog: "exitcode", args: []string{"3"}, reason: "exit", code: 3},
		{name: "exit-42", prog: "exitcode", args: []string{"42"}, reason: "exit", code: 42},
		{name: "exit-255", prog: "exitcode", args: []string{"255"}, reason: "exit", code: 255},
		{name: "exit-256", prog: "exitcode", args: []string{"256"}, reason: "exit", code: 0}, // the status is the low 8 bits, as on Linux
		{name: "unsupported", prog: "unsupported", reason: "exit",
			stdout: "io_uring_setup = -1 errno 38 ENOSYS\n",
			check: func(t *testing.T, r result) {
				if n := r.Unsupported["io_uring_setup"]; n != 1 {
					t.Errorf("Stats.Unsupported[io_uring_setup] = %d, want 1 (map %v)", n, r.Unsupported)
				}
			}},
		{name: "abort", prog: "abort", code: 134, reason: "fault", msg: []string{"SIGABRT"}},

		// Hostile programs: each must end with the signal Linux would send.
		{name: "segv", prog: "segv", code: 139, reason: "fault", faultIn: "main",
			msg: []string{guestFault, "page fault at 0x0 ", "read of unmapped memory"}},
		{name: "wild", prog: "wild", code: 139, reason: "fault", faultIn: "main",
			msg: []string{guestFault, "page fault at 0xdeadbeef000 ", "write of unmapped memory"}},
		{name: "ud2", prog: "ud2", code: 132, reason: "fault", faultIn: "main",
			msg: []string{guestFault, "invalid opcode"}},
		{name: "int3", prog: "int3", code: 133, reason: "fault", faultIn: "main",
			msg: []string{guestFault, "breakpoint"}},
		{name: "hlt", prog: "hlt", code: 139, reason: "fault", faultIn: "main",
			msg: []string{guestFault, "general protection fault"}},
		{name: "cli", prog: "cli", code: 139, reason: "fault", faultIn: "main",
			msg: []string{guestFault, "general protection fault"}},
		{name: "inout", prog: "inout", code: 139, reason: "fault", faultIn: "main",
			msg: []string{guestFault, "general protection fault"}},
		{name: "kwrite", prog: "kwrite", code: 139, reason: "fault", faultIn: "main",
			msg: []string{guestFault, "page fault at 0xffff800000004000 ", "write of kernel memory"}},
		{name: "divzero", prog: "divzero", code: 136, reason: "fault", faultIn: "main",
			msg: []string{guestFault, "divide error"}},

		// Limits.
		{name: "bomb", prog: "bomb", reason: "exit",
			cfg:      func(c *Config) { c.MemorySize = 256 << 20 },
			stdoutRE: regexp.MustCompile(`^allocated (\d+) MiB before ENOMEM \(errno ENOMEM\)\n$`),
			check: func(t *testing.T, r result) {
				m := regexp.MustCompile(`allocated (\d+) MiB`).FindStringSubmatch(r.Stdout)
				if m == nil {
					return // reported by the stdout check
				}
				if n, _ := strconv.Atoi(m[1]); n < 128 || n >= 256 {
					t.Errorf("bomb got %d MiB of a 256 MiB guest; want most of it, and less than all", n)
				}
			}},
		{name: "flood", prog: "flood", code: 153, reason: "output",
			cfg: func(c *Config) { c.OutputLimit = 1 << 20 },
			msg: []string{"output limit", "1 MiB"},
			check: func(t *testing.T, r result) {
				if len(r.Stdout) != 1<<20 {
					t.Errorf("flood wrote %d bytes to stdout, want exactly the 1 MiB limit", len(r.Stdout))
				}
				if strings.Trim(r.Stdout, "y\n") != "" || strings.Contains(r.Stdout, "yy") || strings.Contains(r.Stdout, "\n\n") {
					t.Errorf("flood's output is not a run of \"y\\n\"")
				}
			}},
		{name: "timeout", prog: "spin", code: 124, reason: "timeout",
			cfg: func(c *Config) { c.Timeout = 2 * time.Second },
			msg: []string{"timed out after 2s"}},
	}
}

// ripRE finds the faulting instruction's address in a fault message.
var ripRE = regexp.MustCompile(`rip (0x[0-9a-f]+)`)

// TestPrograms runs each testdata program, linked static and static-PIE,
// and checks its output and how it ended.
func TestPrograms(t *testing.T) {
	sys := requireKVM(t)
	for _, tc := range programCases() {
		for _, mode := range modes {
			t.Run(tc.name+"/"+string(mode), func(t *testing.T) {
				t.Parallel()
				path := program(t, tc.prog, mode)
				cfg := Config{
					Path: path,
					Args: append([]string{tc.prog}, tc.args...),
					Env:  tc.env,
				}
				if tc.cfg != nil {
					tc.cfg(&cfg)
				}
				r := run(t, sys, cfg)
				if r.Code != tc.code || r.Reason != tc.reason {
					t.Errorf("status = %d %q, want %d %q (message %q, stderr %q)",
						r.Code, r.Reason, tc.code, tc.reason, r.Message, r.Stderr)
				}
				if len(tc.msg) == 0 && r.Message != "" {
					t.Errorf("Message = %q, want none", r.Message)
				}
				for _, want := range tc.msg {
					if !strings.Contains(r.Message, want) {
						t.Errorf("Message = %q, want it to contain %q", r.Message, want)
					}
				}
				switch {
				case tc.stdoutRE != nil:
					if !tc.stdoutRE.MatchString(r.Stdout) {
						t.Errorf("stdout = %q, want a match for %s", r.Stdout, tc.stdoutRE)
					}
				case tc.check == nil || tc.stdout != "":
					if r.Stdout != tc.stdout {
						t.Errorf("stdout = %q, want %q", r.Stdout, tc.stdout)
					}
				}
				if tc.faultIn != "" {
					checkFaultRIP(t, path, tc.faultIn, r.Message)
				}
				if tc.check != nil {
					tc.check(t, r)
				}
			})
		}
	}
}

// checkFaultRIP checks that the rip a fault message reports is the
// program's own instruction, inside function fn, and not an address in
// the VMM's stub.
func checkFaultRIP(t *testing.T, path, fn, msg string) {
	t.Helper()
	m := ripRE.FindStringSubmatch(msg)
	if m == nil {
		t.Errorf("Message %q reports no rip", msg)
		return
	}
	rip, err := strconv.ParseUint(m[1], 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := symbolRange(t, path, fn)
	if rip < lo || rip >= hi {
		t.Errorf("Message %q: rip %#x is not in %s [%#x, %#x): the fault must be reported at the program's instruction", msg, rip, fn, lo, hi)
	}
}

// TestTrace checks that Config.Trace gets one line per system call,
// naming it.
func TestTrace(t *testing.T) {
	sys := requireKVM(t)
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			var trace bytes.Buffer
			r := run(t, sys, Config{Path: program(t, "hello", mode), Trace: &trace})
			if r.Code != 0 || r.Stdout != "Hello from inside a KVM VM!\n" {
				t.Fatalf("hello: status %+v, stdout %q", r.Status, r.Stdout)
			}
			out := trace.String()
			for _, want := range []string{"write(0x1, ", "exit_group(0x0, "} {
				if !strings.Contains(out, want) {
					t.Errorf("trace has no %q:\n%s", want, out)
				}
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if uint64(len(lines)) != r.Syscalls {
				t.Errorf("trace has %d lines for %d system calls:\n%s", len(lines), r.Syscalls, out)
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "[forkvm ") || !strings.Contains(l, ") = ") {
					t.Errorf("trace line %q is not \"[forkvm TIME] name(args) = result\"", l)
				}
			}
			if last := lines[len(lines)-1]; !strings.Contains(last, "exit_group(") || !strings.HasSuffix(last, " = ?") {
				t.Errorf("last trace line = %q, want exit_group with no result", last)
			}
		})
	}
}

// TestUnsupportedTrace checks that an unimplemented call is marked in the
// trace.
func TestUnsupportedTrace(t *testing.T) {
	sys := requireKVM(t)
	var trace bytes.Buffer
	r := run(t, sys, Config{Path: program(t, "unsupported", static), Trace: &trace})
	if r.Code != 0 {
		t.Fatalf("status %+v", r.Status)
	}
	if !regexp.MustCompile(`(?m)io_uring_setup\(.*\) = -38 ENOSYS .*\[not implemented\]$`).MatchString(trace.String()) {
		t.Errorf("trace does not show io_uring_setup failing with ENOSYS [not implemented]:\n%s", trace.String())
	}
}

// TestNoLeaks creates and destroys many VMs and checks that forkvm keeps
// neither file descriptors nor memory.
func TestNoLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 1,000 VMs")
	}
	sys := requireKVM(t)
	hello := program(t, "hello", static)
	runHello := func() {
		t.Helper()
		var out bytes.Buffer
		st, _, err := Run(sys, Config{Path: hello, Stdout: &out})
		if err != nil || st.Code != 0 || out.String() != "Hello from inside a KVM VM!\n" {
			t.Fatalf("hello: %+v %v %q", st, err, out.String())
		}
	}
	// Warm up: the Go runtime and the heap reach their steady state.
	for range 20 {
		runHello()
	}
	runtime.GC()
	debug.FreeOSMemory()
	fds0, rss0 := openFDs(t), rssBytes(t)

	const n = 1000
	start := time.Now()
	for range n {
		runHello()
	}
	elapsed := time.Since(start)
	runtime.GC()
	debug.FreeOSMemory()
	fds1, rss1 := openFDs(t), rssBytes(t)
	t.Logf("%d VMs in %v (%v each); fds %d -> %d; RSS %d -> %d MiB",
		n, elapsed.Round(time.Millisecond), (elapsed / n).Round(time.Microsecond), fds0, fds1, rss0>>20, rss1>>20)
	if fds1 != fds0 {
		t.Errorf("open file descriptors went from %d to %d after %d VMs", fds0, fds1, n)
	}
	if growth := rss1 - rss0; growth > 64<<20 {
		t.Errorf("RSS grew by %d MiB after %d VMs (from %d MiB)", growth>>20, n, rss0>>20)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// rssBytes is this process's resident set size (VmRSS).
func rssBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/self/status")
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// TestSyscallDocs checks that docs/syscalls.md is the table as
// CompatibilityMarkdown renders it.
func TestSyscallDocs(t *testing.T) {
	path := filepath.Join(repoRoot, "docs", "syscalls.md")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("docs/syscalls.md is stale: run `make docs` (%v)", err)
	}
	want := CompatibilityMarkdown()
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
			i++
		}
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		t.Fatalf("docs/syscalls.md is stale: run `make docs` (line %d is %q, the table says %q)", i+1, g, w)
	}
}
