// flood writes "y\n" forever, like yes(1).
#include <unistd.h>
int main(void) {
	static char buf[4096];
	for (int i = 0; i < (int)sizeof buf; i += 2) {
		buf[i] = 'y';
		buf[i + 1] = '\n';
	}
	for (;;) {
		if (write(1, buf, sizeof buf) < 0) return 1;
	}
}
