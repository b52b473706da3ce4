// hello prints one line: the smallest end-to-end test of a guest program.
#include <stdio.h>
int main(void) {
	printf("Hello from inside a KVM VM!\n");
	return 0;
}
