// cli tries to disable interrupts at CPL3.
int main(void) {
	__asm__ volatile("cli");
	return 0;
}
