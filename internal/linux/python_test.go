package linux

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"forkvm/internal/kvm"
)

// pythonEnv is the environment guest python gets: one BLAS thread (the
// guest has one vCPU and no threads), a writable HOME, a UTF-8 locale.
var pythonEnv = []string{
	"OPENBLAS_NUM_THREADS=1",
	"HOME=/tmp",
	"LANG=C.UTF-8",
	"PATH=/usr/bin:/bin",
}

// runPython runs `python3 -c script args...` in the rootfs with 2 GiB of
// memory. The timeout is a safety net so that a hang fails the test.
func runPython(t *testing.T, sys *kvm.System, root, script string, args ...string) result {
	t.Helper()
	return run(t, sys, Config{
		Path:       "/usr/bin/python3",
		Args:       append([]string{"python3", "-c", script}, args...),
		Env:        pythonEnv,
		Root:       root,
		MemorySize: 2 << 30,
		Timeout:    2 * time.Minute,
	})
}

// pySnippet is a piece of python and the exact stdout it must print.
type pySnippet struct {
	name, code, want string
}

// snippetDriver runs the snippets given as argv pairs (name, code) in one
// interpreter, each in a fresh namespace, printing a marker before each
// and any exception's traceback to stdout so that it shows in the
// snippet's own output. One process keeps the suite fast: starting python
// (and importing numpy) costs more than most snippets.
const snippetDriver = `
import sys, traceback
args = sys.argv[1:]
for i in range(0, len(args), 2):
    name, src = args[i], args[i + 1]
    print("\x00snippet " + name, flush=True)
    try:
        exec(compile(src, name, "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc(file=sys.stdout)
    sys.stdout.flush()
print("\x00done", flush=True)
`

// runSnippets runs snippets in one python process, then checks each
// snippet's output in its own subtest.
func runSnippets(t *testing.T, sys *kvm.System, root string, snippets []pySnippet) {
	t.Helper()
	var args []string
	for _, s := range snippets {
		args = append(args, s.name, s.code)
	}
	r := runPython(t, sys, root, snippetDriver, args...)
	if r.Code != 0 || r.Reason != "exit" || !strings.HasSuffix(r.Stdout, "\x00done\n") {
		t.Fatalf("python: status %+v\nstdout:\n%s\nstderr:\n%s", r.Status, r.Stdout, r.Stderr)
	}
	got := map[string]string{}
	for _, part := range strings.Split(strings.TrimSuffix(r.Stdout, "\x00done\n"), "\x00snippet ")[1:] {
		name, out, _ := strings.Cut(part, "\n")
		got[name] = out
	}
	for _, s := range snippets {
		t.Run(s.name, func(t *testing.T) {
			out, ok := got[s.name]
			if !ok {
				t.Fatalf("snippet did not run; stdout:\n%s", r.Stdout)
			}
			if out != s.want {
				t.Errorf("python:\n%s\nprinted:\n%s\nwant:\n%s", s.code, out, s.want)
			}
		})
	}
}

// TestPython runs the standard library through its paces in one guest
// python.
func TestPython(t *testing.T) {
	sys := requireKVM(t)
	root := rootfs(t)
	t.Parallel()
	runSnippets(t, sys, root, []pySnippet{
		{"arithmetic", `
print(2**100, 7 // 2, -7 // 2, 7 % 3, -7 % 3, 1 / 3)
print(10**20 // 3, round(2.675, 2), 0.1 + 0.2, float("1e308") * 10)
print(sum(range(1, 101)), pow(3, 1000, 1000007), (1 + 2j) * (3 - 1j))
import math, fractions, decimal
print(math.factorial(20), math.isqrt(10**30), fractions.Fraction(3, 4) + fractions.Fraction(1, 6))
print(decimal.Decimal("1.1") + decimal.Decimal("2.2"), math.pi, math.sqrt(2))
`, "1267650600228229401496703205376 3 -4 1 2 0.3333333333333333\n" +
			"33333333333333333333 2.67 0.30000000000000004 inf\n" +
			"5050 " + fmt.Sprint(powMod(3, 1000, 1000007)) + " (5+5j)\n" +
			"2432902008176640000 1000000000000000 11/12\n" +
			"3.3 3.141592653589793 1.4142135623730951\n"},
		{"json", `
import json
print(json.dumps({"b": [1, 2.5, None, True], "a": "é"}, sort_keys=True))
print(json.loads('{"x": [1, {"y": "z"}], "n": -1.5e3}')["x"][1]["y"], json.loads("[-1.5e3]")[0])
print(json.dumps({"k": "é"}, ensure_ascii=False))
`, `{"a": "\u00e9", "b": [1, 2.5, null, true]}` + "\nz -1500.0\n" + `{"k": "é"}` + "\n"},
		{"re", `
import re
print(re.findall(r"(\w+)@(\w+)\.com", "a@b.com, cc@dd.com"))
print(re.sub(r"\d+", lambda m: str(int(m.group()) * 2), "a1b22c333"))
m = re.fullmatch(r"(?P<year>\d{4})-(?P<month>\d\d)", "2024-06")
print(m.group("year"), m["month"], bool(re.match("é+", "éé", re.I)))
`, "[('a', 'b'), ('cc', 'dd')]\na2b44c666\n2024 06 True\n"},
		{"datetime", `
import datetime as dt
d = dt.date(2024, 2, 28) + dt.timedelta(days=2)
print(d, d.strftime("%A"), d.isocalendar()[1])
print(dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc).timestamp())
print(dt.datetime.fromisoformat("2021-03-04T05:06:07+02:00").astimezone(dt.timezone.utc).isoformat())
now = dt.datetime.now(dt.timezone.utc)
print(now.year >= 2024, abs((dt.datetime.now(dt.timezone.utc) - now).total_seconds()) < 5)
`, "2024-03-01 Friday 9\n946684800.0\n2021-03-04T03:06:07+00:00\nTrue True\n"},
		{"hashlib", `
import hashlib, hmac, base64, zlib
print(hashlib.sha256(b"abc").hexdigest())
print(hashlib.md5(b"").hexdigest(), zlib.crc32(b"abc"))
print(base64.b64encode(hmac.new(b"key", b"msg", "sha1").digest()).decode())
`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n" +
			"d41d8cd98f00b204e9800998ecf8427e 891568578\n" +
			"ECkAtyt78QMe7Ha0gEtmBSN2iWs=\n"}, // from the host's python3
		{"collections", `
from collections import Counter, deque, OrderedDict, defaultdict, namedtuple
print(Counter("abracadabra").most_common(2))
d = deque(range(5)); d.rotate(2); print(list(d))
dd = defaultdict(list)
for k, v in [("a", 1), ("b", 2), ("a", 3)]:
    dd[k].append(v)
print(dict(dd))
P = namedtuple("P", "x y"); print(P(1, y=2), P(1, 2)._asdict())
o = OrderedDict(a=1, b=2); o.move_to_end("a"); print(list(o))
print(sorted({3, 1, 2} | {5}), {"x": 1} | {"y": 2})
`, "[('a', 5), ('b', 2)]\n[3, 4, 0, 1, 2]\n{'a': [1, 3], 'b': [2]}\n" +
			"P(x=1, y=2) {'x': 1, 'y': 2}\n['b', 'a']\n[1, 2, 3, 5] {'x': 1, 'y': 2}\n"},
		{"classes", `
from dataclasses import dataclass, field
class Shape:
    def area(self): raise NotImplementedError
    def __repr__(self): return f"{type(self).__name__}(area={self.area()})"
class Square(Shape):
    def __init__(self, s): self.s = s
    def area(self): return self.s ** 2
    @property
    def side(self): return self.s
class Cube(Square):
    def area(self): return 6 * super().area()
@dataclass(order=True)
class Item:
    price: float
    name: str = field(compare=False)
print(Square(3), Cube(2), Cube(2).side, isinstance(Cube(1), Shape), Cube.__mro__[1].__name__)
print(sorted([Item(2.5, "b"), Item(1.0, "a")]))
`, "Square(area=9) Cube(area=24) 2 True Square\n[Item(price=1.0, name='a'), Item(price=2.5, name='b')]\n"},
		{"generators", `
import itertools
def squares(n):
    for i in range(n):
        yield i * i
def chain(*gs):
    for g in gs:
        yield from g
def naturals():
    n = 0
    while True:
        yield n
        n += 1
def acc():
    total = 0
    while True:
        total += yield total
print(sum(squares(10)), list(chain(squares(3), "ab")), list(itertools.islice(naturals(), 3, 6)))
g = acc(); next(g); g.send(5); print(g.send(10))
print([x for x in (i * 2 for i in range(10)) if x % 3 == 0], list(zip(*[(1, "a"), (2, "b")])))
`, "285 [0, 1, 4, 'a', 'b'] [3, 4, 5]\n15\n[0, 6, 12, 18] [(1, 2), ('a', 'b')]\n"},
		{"files", `
import os
d = "/tmp/forkvm-files"
os.makedirs(d)
for name, text in [("b.txt", "bee\n"), ("a.txt", "ay\n" * 3)]:
    with open(os.path.join(d, name), "w") as f:
        f.write(text)
with open(os.path.join(d, "a.txt"), "a") as f:
    f.write("more")
print(sorted(os.listdir(d)))
print(repr(open(os.path.join(d, "a.txt")).read()), os.path.getsize(os.path.join(d, "b.txt")))
os.rename(os.path.join(d, "b.txt"), os.path.join(d, "c.txt"))
print(sorted(os.listdir(d)))
for name in os.listdir(d):
    os.remove(os.path.join(d, name))
print(os.listdir(d), os.path.exists(os.path.join(d, "a.txt")))
os.rmdir(d)
print(os.path.exists(d))
`, "['a.txt', 'b.txt']\n'ay\\nay\\nay\\nmore' 4\n['a.txt', 'c.txt']\n[] False\nFalse\n"},
		{"os-release", `
text = open("/etc/os-release").read()
print("bookworm" in text, "Debian GNU/Linux 12" in text)
`, "True True\n"},
		{"proc-self-root", `
import os
a = open("/proc/self/root/../../etc/os-release").read()
print(a == open("/etc/os-release").read(), "bookworm" in a)
# The manifest exists only in a forkvm rootfs, never on a host.
print(os.path.exists("/proc/self/root/../../etc/forkvm-rootfs.manifest"))
print(sorted(os.listdir("/proc/self/root/../..")) == sorted(os.listdir("/")))
`, "True True\nTrue\nTrue\n"},
		{"realpath", `
import os
print(os.path.realpath("/../../.."), os.path.realpath("/proc/self/root/../../.."), os.path.realpath("/../etc/../../usr"))
os.symlink("../../../../../../../../etc", "/tmp/forkvm-up")
print(os.path.realpath("/tmp/forkvm-up"), os.path.exists("/tmp/forkvm-up/forkvm-rootfs.manifest"))
os.remove("/tmp/forkvm-up")
os.chdir("/"); os.chdir(".."); os.chdir("../../..")
print(os.getcwd(), os.path.exists("etc/forkvm-rootfs.manifest"), os.path.exists("../etc/forkvm-rootfs.manifest"))
`, "/ / /usr\n/etc True\n/ True True\n"},
	})
}

// powMod is pow(b, e, m) for the arithmetic snippet's expected output.
func powMod(b, e, m uint64) uint64 {
	r := uint64(1)
	for b %= m; e > 0; e >>= 1 {
		if e&1 == 1 {
			r = r * b % m
		}
		b = b * b % m
	}
	return r
}

// TestPythonNumpy runs numpy in one guest python: BLAS, FFT, the seeded
// random generator, a large array, and an allocation beyond the guest's
// memory, which must raise MemoryError rather than crash.
func TestPythonNumpy(t *testing.T) {
	sys := requireKVM(t)
	root := rootfs(t)
	t.Parallel()
	runSnippets(t, sys, root, []pySnippet{
		{"arange", `
import numpy as np
print(np.arange(10).sum(), np.arange(12).reshape(3, 4).sum(axis=0).tolist())
`, "45 [12, 15, 18, 21]\n"},
		{"linalg-solve", `
import numpy as np
a = np.array([[3.0, 1.0], [1.0, 2.0]])
x = np.linalg.solve(a, np.array([9.0, 8.0]))
print(np.allclose(x, [2.0, 3.0]), np.allclose(a @ x, [9.0, 8.0]), round(float(np.linalg.det(a)), 6))
m = np.random.default_rng(0).random((50, 50)) + 50 * np.eye(50)
print(np.allclose(np.linalg.inv(m) @ m, np.eye(50)))
`, "True True 5.0\nTrue\n"},
		{"fft", `
import numpy as np
f = np.fft.fft([1.0, 2.0, 3.0, 4.0])
print(np.allclose(f, [10, -2 + 2j, -2, -2 - 2j]), np.allclose(np.fft.ifft(f).real, [1, 2, 3, 4]))
`, "True True\n"},
		// The value CPython+numpy print on any machine for this seed (PCG64).
		{"random", `
import numpy as np
print(repr(np.random.default_rng(42).random()))
`, "0.7739560485559633\n"},
		{"200MB", `
import numpy as np
a = np.ones(25_000_000)
print(a.nbytes, a.sum())
del a
`, "200000000 25000000.0\n"},
		{"3GB-MemoryError", `
import numpy as np
try:
    a = np.ones(3 * 2**30 // 8)
    print("allocated", a.nbytes)
except MemoryError:
    print("MemoryError")
print(np.ones(1000).sum())
`, "MemoryError\n1000.0\n"},
	})
}

// TestPythonExit checks how python's own endings reach the Status.
func TestPythonExit(t *testing.T) {
	sys := requireKVM(t)
	root := rootfs(t)
	t.Run("exception", func(t *testing.T) {
		r := runPython(t, sys, root, "print('before')\ndef f():\n    raise ValueError('boom 42')\nf()\n")
		if r.Code != 1 || r.Reason != "exit" || r.Message != "" {
			t.Errorf("status = %+v, want code 1, reason exit", r.Status)
		}
		if r.Stdout != "before\n" {
			t.Errorf("stdout = %q, want %q", r.Stdout, "before\n")
		}
		for _, want := range []string{"Traceback (most recent call last)", "in f", "ValueError: boom 42"} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("stderr does not contain %q:\n%s", want, r.Stderr)
			}
		}
	})
	t.Run("sys.exit(3)", func(t *testing.T) {
		r := runPython(t, sys, root, "import sys\nprint('bye')\nsys.exit(3)\n")
		if r.Code != 3 || r.Reason != "exit" || r.Stdout != "bye\n" || r.Stderr != "" {
			t.Errorf("status = %+v, stdout %q, stderr %q; want code 3, reason exit, stdout \"bye\\n\"", r.Status, r.Stdout, r.Stderr)
		}
	})
}

// TestPythonHostFilesInvisible checks that a file that exists only on the
// host cannot be opened by its host path from inside the guest.
func TestPythonHostFilesInvisible(t *testing.T) {
	sys := requireKVM(t)
	root := rootfs(t)
	f, err := os.CreateTemp("/tmp", "forkvm-host-only-*")
	if err != nil {
		t.Fatal(err)
	}
	path := f.Name()
	f.WriteString("HOST SECRET")
	f.Close()
	t.Cleanup(func() { os.Remove(path) })
	script := fmt.Sprintf(`
import os, sys
path = %q
try:
    print(open(path).read())
except FileNotFoundError as e:
    print("FileNotFoundError", e.filename)
print(os.path.exists(path), os.path.basename(path) in os.listdir("/tmp"))
for p in ["/proc/self/root" + path, "/../../.." + path, "/tmp/../../tmp/" + os.path.basename(path)]:
    try:
        print(open(p).read())
    except FileNotFoundError:
        print("FileNotFoundError")
`, path)
	r := runPython(t, sys, root, script)
	want := fmt.Sprintf("FileNotFoundError %s\nFalse False\nFileNotFoundError\nFileNotFoundError\nFileNotFoundError\n", path)
	if r.Code != 0 || r.Stdout != want {
		t.Errorf("status %+v\nstdout:\n%s\nwant:\n%s\nstderr:\n%s", r.Status, r.Stdout, want, r.Stderr)
	}
	if strings.Contains(r.Stdout, "HOST SECRET") {
		t.Errorf("the guest read a host file")
	}
	if _, err := os.Stat(filepath.Join(root, path)); err == nil {
		t.Errorf("%s appeared in the rootfs", path)
	}
}
