package kvm

import (
	"encoding/binary"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

var kvmGetStatsFD = io(0xce)

// Stats reads the vCPU's binary statistics (KVM_GET_STATS_FD): counters
// such as "exits", "pf_taken" (guest page faults KVM handled) and
// "insn_emulation", by name. Histogram statistics are left out.
func (c *VCPU) Stats() (map[string]uint64, error) {
	fd, err := ioctl(c.fd, kvmGetStatsFD, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_STATS_FD: %w", err)
	}
	defer unix.Close(fd)
	var hdr [24]byte
	if _, err := unix.Pread(fd, hdr[:], 0); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	nameSize, num := le.Uint32(hdr[4:]), le.Uint32(hdr[8:])
	descOff, dataOff := le.Uint32(hdr[16:]), le.Uint32(hdr[20:])
	descSize := 16 + nameSize
	if num > 4096 || nameSize > 1024 {
		return nil, fmt.Errorf("KVM stats header: %d descriptors of %d-byte names", num, nameSize)
	}
	descs := make([]byte, int(num)*int(descSize))
	if _, err := unix.Pread(fd, descs, int64(descOff)); err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for i := uint32(0); i < num; i++ {
		d := descs[i*descSize:]
		size, off := le.Uint16(d[6:]), le.Uint32(d[8:])
		if size != 1 {
			continue // histograms
		}
		name := strings.TrimRight(string(d[16:16+nameSize]), "\x00")
		var v [8]byte
		if _, err := unix.Pread(fd, v[:], int64(dataOff+off)); err != nil {
			return nil, err
		}
		out[name] = le.Uint64(v[:])
	}
	return out, nil
}
