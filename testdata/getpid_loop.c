// getpid_loop makes N getpid system calls (default 10000): a syscall
// round-trip benchmark.
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
	long n = argc > 1 ? atol(argv[1]) : 10000;
	for (long i = 0; i < n; i++) syscall(SYS_getpid);
	return 0;
}
