// bomb allocates 1 MiB blocks, touching each, until malloc fails, then
// prints how much it got. Past the memory limit malloc must return NULL
// (mmap and brk fail with ENOMEM), not crash.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
	size_t block = 1 << 20, total = 0;
	for (;;) {
		char *p = malloc(block);
		if (!p) break;
		memset(p, 0xa5, block);
		total += block;
	}
	printf("allocated %zu MiB before ENOMEM (errno %s)\n", total >> 20,
	       errno == ENOMEM ? "ENOMEM" : strerror(errno));
	return 0;
}
