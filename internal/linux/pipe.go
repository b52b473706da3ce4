package linux

import (
	"bytes"
	"errors"

	"forkvm/internal/vfs"

	"golang.org/x/sys/unix"
)

// pipeSize is the capacity of a pipe, as on Linux.
const pipeSize = 64 << 10

// errWouldBlockForever is returned by a pipe operation that would block
// with no other thread to unblock it.
var errWouldBlockForever = errors.New("would block forever")

type pipe struct {
	buf              bytes.Buffer
	readers, writers int
	nonblock         bool
}

// pipeEnd is one end of an in-memory pipe.
type pipeEnd struct {
	p     *pipe
	write bool
	flags int
}

func newPipe(nonblock bool) (*pipeEnd, *pipeEnd) {
	p := &pipe{readers: 1, writers: 1, nonblock: nonblock}
	fl := 0
	if nonblock {
		fl = unix.O_NONBLOCK
	}
	return &pipeEnd{p: p, flags: fl}, &pipeEnd{p: p, write: true, flags: fl | unix.O_WRONLY}
}

func (e *pipeEnd) Read(b []byte) (int, error) {
	if e.write {
		return 0, unix.EBADF
	}
	if e.p.buf.Len() == 0 {
		if e.p.writers == 0 {
			return 0, nil
		}
		if e.flags&unix.O_NONBLOCK != 0 {
			return 0, unix.EAGAIN
		}
		return 0, errWouldBlockForever
	}
	n, _ := e.p.buf.Read(b)
	return n, nil
}

func (e *pipeEnd) Write(b []byte) (int, error) {
	if !e.write {
		return 0, unix.EBADF
	}
	if e.p.readers == 0 {
		return 0, unix.EPIPE
	}
	room := pipeSize - e.p.buf.Len()
	if room <= 0 {
		if e.flags&unix.O_NONBLOCK != 0 {
			return 0, unix.EAGAIN
		}
		return 0, errWouldBlockForever
	}
	if len(b) > room {
		b = b[:room]
	}
	return e.p.buf.Write(b)
}

func (e *pipeEnd) Close() error {
	if e.write {
		e.p.writers--
	} else {
		e.p.readers--
	}
	return nil
}

func (e *pipeEnd) Readable() bool { return !e.write && (e.p.buf.Len() > 0 || e.p.writers == 0) }
func (e *pipeEnd) Writable() bool { return e.write && (e.p.buf.Len() < pipeSize || e.p.readers == 0) }
func (e *pipeEnd) peerClosed() bool {
	if e.write {
		return e.p.readers == 0
	}
	return e.p.writers == 0
}
func (e *pipeEnd) Flags() int      { return e.flags }
func (e *pipeEnd) SetFlags(fl int) { e.flags = e.flags&unix.O_ACCMODE | fl&unix.O_NONBLOCK }
func (e *pipeEnd) Stat() (vfs.Stat, error) {
	return vfs.Stat{Dev: 0xc, Ino: 1000, Mode: unix.S_IFIFO | 0o600, Nlink: 1, Blksize: 4096}, nil
}
