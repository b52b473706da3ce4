// Package vfs is the file system one sandbox's guest sees.
//
// The guest has no kernel, so every path it names reaches this package
// through the syscall layer. An FS stacks three layers and resolves each
// path component by component, consulting the layers top to bottom:
//
//	guest path ──► walk (our own; ".." stops at "/", ≤ 40 symlinks)
//	                 │
//	                 ▼ per component, first layer that has the name wins
//	 ┌──────────────────────────────────────────────────────────────────┐
//	 │ 1. synthetic   /dev/{null,zero,random,urandom}  /proc/self/{exe, │
//	 │                maps,root}  /proc/cpuinfo  /sys/devices/system/cpu │
//	 │                /{online,possible}  /etc/hostname      read-only  │
//	 ├──────────────────────────────────────────────────────────────────┤
//	 │ 2. memory      per-sandbox writable layer: files, directories,   │
//	 │                symlinks, whiteouts; /tmp; capped in bytes        │
//	 ├──────────────────────────────────────────────────────────────────┤
//	 │ 3. host root   read-only view of Options.Root, read with pread   │
//	 │                on host fds opened beneath that directory         │
//	 └──────────────────────────────────────────────────────────────────┘
//
// /dev, /proc and /sys are opaque: only their synthetic entries exist,
// whatever the root holds there. "/" and /etc are transparent: their
// synthetic entries sit on top of the memory and host directories.
//
// The memory layer behaves like an overlayfs upper directory. Opening a
// host file for writing (or truncating, renaming or chmod-ing it) first
// copies it up into memory, creating memory directories for its parents
// that remember which host directory lies beneath them ("lower"). Removing
// a name that the host still has leaves a whiteout so the name stays gone;
// renaming a host directory moves its memory node, which keeps pointing at
// the original host directory. Nothing is ever written to the host.
//
// Escaping the root is impossible by construction: symlink targets are
// parsed by the walk, absolute ones restart at the guest "/", ".." at "/"
// stays there, and every host access is a path relative to a file
// descriptor for the root made only of names the walk has checked (no
// ".", "..", "/" or symlink inside). Opens additionally use openat2 with
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, so a symlink that appeared since
// the walk fails the open instead of leading out. Stat and readlink rely on
// the root not being changed by host processes while sandboxes use it; it
// is a build artifact.
//
// Errors returned to callers are unix.Errno values, ready to be handed to
// the guest as -errno.
//
// An FS is used by one goroutine at a time. Clone gives a forked sandbox
// its own FS: nodes are copied and file contents are shared copy-on-write,
// so clones may then be used concurrently. Several goroutines may Clone
// the same idle FS at once.
package vfs
