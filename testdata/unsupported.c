// unsupported makes a system call forkvm does not implement
// (io_uring_setup) and prints the errno it got.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
	char params[120] = {0};
	long r = syscall(SYS_io_uring_setup, 1, params);
	int e = errno;
	printf("io_uring_setup = %ld errno %d %s\n", r, e, e == ENOSYS ? "ENOSYS" : strerror(e));
	return 0;
}
