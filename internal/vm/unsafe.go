package vm

import "unsafe"

// uintptrOf returns the address of b's first byte, to give KVM the host
// address of guest memory. Safe: b is an mmap'd region that Go's garbage
// collector does not move or free; it stays mapped until Memory.Close,
// after the VM using it is closed.
func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
