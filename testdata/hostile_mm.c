// hostile_mm makes the system calls a hostile program would use to attack
// the VMM's memory and descriptor handling, and prints what each returned.
// None of them may crash or hang forkvm.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static long sys(long nr, long a, long b, long c, long d, long e) {
	long r = syscall(nr, a, b, c, d, e, 0);
	return r < 0 ? -errno : r;
}

int main(void) {
	// The stub's user mapping and the page below 64 KiB cannot be mapped over.
	printf("mmap_fixed_stub %ld\n", sys(SYS_mmap, 0x4000, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1));
	printf("mprotect_stub %ld\n", sys(SYS_mprotect, 0x4000, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, 0, 0));
	// Kernel-half and wrapping ranges.
	printf("madvise_kernel %ld\n", sys(SYS_madvise, 0xffff800000200000L, 4096, MADV_DONTNEED, 0, 0));
	printf("madvise_huge %ld\n", sys(SYS_madvise, 0x10000000, 1L << 46, MADV_DONTNEED, 0, 0)); // clear of both link modes' mappings
	printf("mincore_huge %ld\n", sys(SYS_mincore, 0x10000, 1L << 46, (long)&errno, 0, 0));
	long hint = sys(SYS_mmap, 0xfffffffffffff000L, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	printf("mmap_hint_user %d\n", hint > 0 && hint < 0x800000000000L);
	// A huge PROT_NONE reservation is cheap to make and to unmap.
	long big = sys(SYS_mmap, 0, 1L << 42, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
	printf("mmap_big %d\n", big > 0);
	printf("munmap_big %ld\n", sys(SYS_munmap, big, 1L << 42, 0, 0, 0));
	printf("mremap_fixed_zero %ld\n", sys(SYS_mremap, hint, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, 0));
	// brk(-1) leaves the program as it was.
	long cur = sys(SYS_brk, 0, 0, 0, 0, 0);
	printf("brk_minus_one_keeps %d\n", sys(SYS_brk, -1, 0, 0, 0, 0) == cur);
	// Descriptors.
	printf("dupfd_negative %ld\n", sys(SYS_fcntl, 1, F_DUPFD, -1, 0, 0));
	printf("dup2_negative %ld\n", sys(SYS_dup2, 1, -5, 0, 0, 0));
	printf("dup3_negative %ld\n", sys(SYS_dup3, 1, -5, 0, 0, 0));
	printf("still_running 1\n");
	return 0;
}
