// kwrite writes to the VMM's kernel half of the address space.
int main(void) {
	*(volatile char *)0xffff800000004000 = 1;
	return 0;
}
