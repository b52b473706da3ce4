// Package kvm is a thin, typed binding of the Linux KVM ioctl interface
// (Documentation/virt/kvm/api.rst) on golang.org/x/sys/unix.
//
// It knows nothing about guests: it opens /dev/kvm, creates VMs, memory slots
// and vCPUs, and moves register state in and out. Struct layouts mirror the
// kernel's <linux/kvm.h> exactly; field names follow the C names so that a
// reader can grep the kernel for them.
package kvm

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl request encoding from <asm-generic/ioctl.h>.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
	kvmio    = 0xAE
)

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | kvmio<<8 | nr }
func io(nr uintptr) uintptr             { return ioc(iocNone, nr, 0) }
func iow(nr, size uintptr) uintptr      { return ioc(iocWrite, nr, size) }
func ior(nr, size uintptr) uintptr      { return ioc(iocRead, nr, size) }
func iowr(nr, size uintptr) uintptr     { return ioc(iocRead|iocWrite, nr, size) }

// ioctl numbers used by forkvm.
var (
	kvmGetAPIVersion       = io(0x00)
	kvmCreateVM            = io(0x01)
	kvmCheckExtension      = io(0x03)
	kvmGetVCPUMmapSize     = io(0x04)
	kvmGetSupportedCPUID   = iowr(0x05, 8)
	kvmCreateVCPU          = io(0x41)
	kvmGetDirtyLog         = iow(0x42, 16)
	kvmSetUserMemoryRegion = iow(0x46, unsafe.Sizeof(UserspaceMemoryRegion{}))
	kvmRun                 = io(0x80)
	kvmGetRegs             = ior(0x81, unsafe.Sizeof(Regs{}))
	kvmSetRegs             = iow(0x82, unsafe.Sizeof(Regs{}))
	kvmGetSregs            = ior(0x83, unsafe.Sizeof(Sregs{}))
	kvmSetSregs            = iow(0x84, unsafe.Sizeof(Sregs{}))
	kvmGetMSRs             = iowr(0x88, 8)
	kvmSetMSRs             = iow(0x89, 8)
	kvmGetFPU              = ior(0x8c, unsafe.Sizeof(FPU{}))
	kvmSetFPU              = iow(0x8d, unsafe.Sizeof(FPU{}))
	kvmSetCPUID2           = iow(0x90, 8)
	kvmGetXSAVE            = ior(0xa4, 4096)
	kvmSetXSAVE            = iow(0xa5, 4096)
	kvmGetXCRs             = ior(0xa6, unsafe.Sizeof(XCRs{}))
	kvmSetXCRs             = iow(0xa7, unsafe.Sizeof(XCRs{}))
	kvmGetXSAVE2           = ior(0xcf, 4096)
	kvmSetTSSAddr          = io(0x47)
	kvmSetIdentityMapAddr  = iow(0x48, 8)
	_                      = kvmSetIdentityMapAddr
)

// Capabilities checked with KVM_CHECK_EXTENSION.
const (
	CapUserMemory = 3
	CapNrMemslots = 10
	CapSyncRegs   = 74
	CapXSAVE2     = 208
)

// Exit reasons (kvm_run.exit_reason).
const (
	ExitUnknown       = 0
	ExitException     = 1
	ExitIO            = 2
	ExitHypercall     = 3
	ExitDebug         = 4
	ExitHLT           = 5
	ExitMMIO          = 6
	ExitShutdown      = 8
	ExitFailEntry     = 9
	ExitIntr          = 10
	ExitInternalError = 17
	ExitSystemEvent   = 24
)

// ExitName returns a readable name for an exit reason.
func ExitName(r uint32) string {
	switch r {
	case ExitUnknown:
		return "unknown"
	case ExitException:
		return "exception"
	case ExitIO:
		return "io"
	case ExitHLT:
		return "hlt"
	case ExitMMIO:
		return "mmio"
	case ExitShutdown:
		return "shutdown (triple fault)"
	case ExitFailEntry:
		return "entry failed"
	case ExitIntr:
		return "interrupted"
	case ExitInternalError:
		return "internal error"
	case ExitSystemEvent:
		return "system event"
	}
	return fmt.Sprintf("exit reason %d", r)
}

// Sync register bits for kvm_run.kvm_valid_regs / kvm_dirty_regs.
const (
	SyncX86Regs   = 1 << 0
	SyncX86Sregs  = 1 << 1
	SyncX86Events = 1 << 2
)

// System is an open /dev/kvm.
type System struct {
	fd       int
	mmapSize int
	// XSAVESize is the size of the XSAVE buffer KVM_GET_XSAVE2 uses (>= 4096).
	XSAVESize int
}

// Open opens /dev/kvm and checks the API version and the capabilities
// forkvm relies on.
func Open() (*System, error) {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("open /dev/kvm: %w (is KVM available on this host?)", err)
		}
		return nil, fmt.Errorf("open /dev/kvm: %w", err)
	}
	s := &System{fd: fd}
	v, err := s.ioctl(kvmGetAPIVersion, 0)
	if err != nil || v != 12 {
		unix.Close(fd)
		return nil, fmt.Errorf("/dev/kvm: unsupported API version %d (%v)", v, err)
	}
	if n, _ := s.CheckExtension(CapSyncRegs); n == 0 {
		unix.Close(fd)
		return nil, errors.New("/dev/kvm lacks KVM_CAP_SYNC_REGS")
	}
	sz, err := s.ioctl(kvmGetVCPUMmapSize, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	s.mmapSize = int(sz)
	s.XSAVESize = 4096
	if n, _ := s.CheckExtension(CapXSAVE2); n > 4096 {
		s.XSAVESize = n
	}
	return s, nil
}

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error { return unix.Close(s.fd) }

func (s *System) ioctl(req, arg uintptr) (int, error) { return ioctl(s.fd, req, arg) }

func ioctl(fd int, req, arg uintptr) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return int(r), e
	}
	return int(r), nil
}

// CheckExtension returns KVM_CHECK_EXTENSION for cap.
func (s *System) CheckExtension(cap int) (int, error) {
	return s.ioctl(kvmCheckExtension, uintptr(cap))
}

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	n := 128
	for {
		buf := make([]byte, 8+n*int(unsafe.Sizeof(CPUIDEntry{})))
		*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(n)
		_, err := s.ioctl(kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&buf[0])))
		if err == unix.E2BIG {
			n *= 2
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		got := int(*(*uint32)(unsafe.Pointer(&buf[0])))
		out := make([]CPUIDEntry, got)
		// Safe: buf holds a kvm_cpuid2 header followed by got entries.
		copy(out, unsafe.Slice((*CPUIDEntry)(unsafe.Pointer(&buf[8])), got))
		return out, nil
	}
}

// VM is one KVM virtual machine.
type VM struct {
	sys *System
	fd  int
}

// CreateVM creates a VM.
func (s *System) CreateVM() (*VM, error) {
	for {
		fd, err := s.ioctl(kvmCreateVM, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
		}
		unix.CloseOnExec(fd)
		return &VM{sys: s, fd: fd}, nil
	}
}

// Close destroys the VM (once its vCPUs are closed too).
func (vm *VM) Close() error { return unix.Close(vm.fd) }

// UserspaceMemoryRegion is struct kvm_userspace_memory_region.
type UserspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// Memory region flags.
const (
	MemLogDirtyPages = 1 << 0
	MemReadonly      = 1 << 1
)

// SetUserMemoryRegion installs (or, with size 0, removes) a memory slot
// backed by host memory at hostAddr.
func (vm *VM) SetUserMemoryRegion(r *UserspaceMemoryRegion) error {
	_, err := ioctl(vm.fd, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(r)))
	if err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	return nil
}

// SetTSSAddr sets the three-page region Intel VMX needs below 4 GiB.
func (vm *VM) SetTSSAddr(addr uint64) error {
	_, err := ioctl(vm.fd, kvmSetTSSAddr, uintptr(addr))
	return err
}

// GetDirtyLog fills bitmap (one bit per page of the slot) with the pages
// written since the previous call. The slot must have MemLogDirtyPages.
func (vm *VM) GetDirtyLog(slot uint32, bitmap []uint64) error {
	var d struct {
		slot   uint32
		pad    uint32
		bitmap uint64
	}
	d.slot = slot
	d.bitmap = uint64(uintptr(unsafe.Pointer(&bitmap[0])))
	_, err := ioctl(vm.fd, kvmGetDirtyLog, uintptr(unsafe.Pointer(&d)))
	if err != nil {
		return fmt.Errorf("KVM_GET_DIRTY_LOG: %w", err)
	}
	return nil
}

// VCPU is one virtual CPU with its shared kvm_run area.
type VCPU struct {
	vm  *VM
	fd  int
	run []byte
	// Run is the mmap'd struct kvm_run.
	Run *RunData
}

// CreateVCPU creates vCPU id and maps its kvm_run area.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(vm.fd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	unix.CloseOnExec(fd)
	m, err := unix.Mmap(fd, 0, vm.sys.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mmap kvm_run: %w", err)
	}
	// Safe: the mapping is at least sizeof(struct kvm_run) and page aligned.
	return &VCPU{vm: vm, fd: fd, run: m, Run: (*RunData)(unsafe.Pointer(&m[0]))}, nil
}

// Close unmaps kvm_run and closes the vCPU.
func (c *VCPU) Close() error {
	err := unix.Munmap(c.run)
	c.Run = nil
	if e := unix.Close(c.fd); err == nil {
		err = e
	}
	return err
}

// RunOnce calls KVM_RUN once. EINTR is returned to the caller, which decides
// whether to resume (Go's preemption signals) or stop (a kick).
func (c *VCPU) RunOnce() error {
	_, err := ioctl(c.fd, kvmRun, 0)
	return err
}

// GetRegs reads the general registers.
func (c *VCPU) GetRegs(r *Regs) error { return c.call(kvmGetRegs, unsafe.Pointer(r), "KVM_GET_REGS") }

// SetRegs writes the general registers.
func (c *VCPU) SetRegs(r *Regs) error { return c.call(kvmSetRegs, unsafe.Pointer(r), "KVM_SET_REGS") }

// GetSregs reads the special registers.
func (c *VCPU) GetSregs(s *Sregs) error {
	return c.call(kvmGetSregs, unsafe.Pointer(s), "KVM_GET_SREGS")
}

// SetSregs writes the special registers.
func (c *VCPU) SetSregs(s *Sregs) error {
	return c.call(kvmSetSregs, unsafe.Pointer(s), "KVM_SET_SREGS")
}

// GetFPU reads the legacy FPU/SSE state.
func (c *VCPU) GetFPU(f *FPU) error { return c.call(kvmGetFPU, unsafe.Pointer(f), "KVM_GET_FPU") }

// SetFPU writes the legacy FPU/SSE state.
func (c *VCPU) SetFPU(f *FPU) error { return c.call(kvmSetFPU, unsafe.Pointer(f), "KVM_SET_FPU") }

// GetXCRs reads the extended control registers.
func (c *VCPU) GetXCRs(x *XCRs) error { return c.call(kvmGetXCRs, unsafe.Pointer(x), "KVM_GET_XCRS") }

// SetXCRs writes the extended control registers.
func (c *VCPU) SetXCRs(x *XCRs) error { return c.call(kvmSetXCRs, unsafe.Pointer(x), "KVM_SET_XCRS") }

// GetXSAVE reads the XSAVE area; buf must be System.XSAVESize bytes.
func (c *VCPU) GetXSAVE(buf []byte) error {
	req := kvmGetXSAVE
	if len(buf) > 4096 {
		req = kvmGetXSAVE2
	}
	return c.call(req, unsafe.Pointer(&buf[0]), "KVM_GET_XSAVE")
}

// SetXSAVE writes the XSAVE area.
func (c *VCPU) SetXSAVE(buf []byte) error {
	return c.call(kvmSetXSAVE, unsafe.Pointer(&buf[0]), "KVM_SET_XSAVE")
}

// SetCPUID sets the CPUID entries the guest sees.
func (c *VCPU) SetCPUID(entries []CPUIDEntry) error {
	buf := make([]byte, 8+len(entries)*int(unsafe.Sizeof(CPUIDEntry{})))
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(entries))
	copy(unsafe.Slice((*CPUIDEntry)(unsafe.Pointer(&buf[8])), len(entries)), entries)
	return c.call(kvmSetCPUID2, unsafe.Pointer(&buf[0]), "KVM_SET_CPUID2")
}

// SetMSRs writes model-specific registers.
func (c *VCPU) SetMSRs(entries []MSREntry) error {
	buf := msrBuf(entries)
	n, err := ioctl(c.fd, kvmSetMSRs, uintptr(unsafe.Pointer(&buf[0])))
	if err != nil {
		return fmt.Errorf("KVM_SET_MSRS: %w", err)
	}
	if n != len(entries) {
		return fmt.Errorf("KVM_SET_MSRS: set %d of %d (msr %#x refused)", n, len(entries), entries[n].Index)
	}
	return nil
}

// GetMSRs reads the MSRs named by entries[i].Index into entries[i].Data.
func (c *VCPU) GetMSRs(entries []MSREntry) error {
	buf := msrBuf(entries)
	n, err := ioctl(c.fd, kvmGetMSRs, uintptr(unsafe.Pointer(&buf[0])))
	if err != nil {
		return fmt.Errorf("KVM_GET_MSRS: %w", err)
	}
	if n != len(entries) {
		return fmt.Errorf("KVM_GET_MSRS: read %d of %d", n, len(entries))
	}
	copy(entries, unsafe.Slice((*MSREntry)(unsafe.Pointer(&buf[8])), len(entries)))
	return nil
}

func msrBuf(entries []MSREntry) []byte {
	buf := make([]byte, 8+len(entries)*16)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(entries))
	copy(unsafe.Slice((*MSREntry)(unsafe.Pointer(&buf[8])), len(entries)), entries)
	return buf
}

func (c *VCPU) call(req uintptr, p unsafe.Pointer, name string) error {
	if _, err := ioctl(c.fd, req, uintptr(p)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Kick makes the vCPU's current or next KVM_RUN return EINTR: it sets
// immediate_exit and signals thread tid, which must be running the vCPU.
func (c *VCPU) Kick(tid int) {
	if r := c.Run; r != nil {
		r.ImmediateExit = 1
	}
	_ = unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
}
