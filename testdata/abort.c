// abort calls abort(3), which raises SIGABRT.
#include <stdlib.h>
int main(void) {
	abort();
}
