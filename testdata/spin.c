// spin loops forever without making system calls.
int main(void) {
	for (volatile unsigned long i = 0;; i++) {
	}
}
