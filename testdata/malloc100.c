// malloc100 allocates 100 MB, writes every byte, sums it, frees it and
// prints the checksum.
#include <stdio.h>
#include <stdlib.h>
int main(void) {
	size_t n = 100u << 20;
	unsigned char *p = malloc(n);
	if (!p) {
		printf("malloc failed\n");
		return 1;
	}
	for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7);
	unsigned long sum = 0;
	for (size_t i = 0; i < n; i++) sum += p[i];
	free(p);
	printf("checksum %lu\n", sum);
	return 0;
}
