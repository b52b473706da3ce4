// args prints its arguments, one per line, then the values of the
// environment variables FOO and BAR (or "(unset)").
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
	printf("argc=%d\n", argc);
	for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
	const char *names[] = {"FOO", "BAR"};
	for (int i = 0; i < 2; i++) {
		const char *v = getenv(names[i]);
		printf("%s=%s\n", names[i], v ? v : "(unset)");
	}
	return 0;
}
