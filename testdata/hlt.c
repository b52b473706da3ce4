// hlt executes the privileged hlt instruction at CPL3.
int main(void) {
	__asm__ volatile("hlt");
	return 0;
}
