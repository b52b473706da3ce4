package vfs_test

import (
	"fmt"

	"forkvm/internal/vfs"

	"golang.org/x/sys/unix"
)

// A sandbox writes a file; its fork sees the file, and what the fork
// writes afterwards stays in the fork.
func Example() {
	fs, err := vfs.New(vfs.Options{Hostname: "sandbox"}) // no host root: synthetic files and memory only
	if err != nil {
		panic(err)
	}
	defer fs.Close()

	f, _ := fs.Open("/", "/tmp/greeting", unix.O_WRONLY|unix.O_CREAT, 0o644)
	f.Write([]byte("hello"))
	f.Close()

	fork := fs.Clone()
	defer fork.Close()
	g, _ := fork.Open("/tmp", "greeting", unix.O_WRONLY|unix.O_APPEND, 0)
	g.Write([]byte(", fork"))
	g.Close()

	for _, s := range []*vfs.FS{fs, fork} {
		f, _ := s.Open("/", "/tmp/greeting", unix.O_RDONLY, 0)
		b := make([]byte, 64)
		n, _ := f.Read(b)
		f.Close()
		fmt.Printf("%s\n", b[:n])
	}
	_, err = fs.Open("/", "/proc/self/root/../../etc/hostname", unix.O_WRONLY, 0)
	fmt.Println(err == unix.EACCES)
	// Output:
	// hello
	// hello, fork
	// true
}
