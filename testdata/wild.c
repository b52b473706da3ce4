// wild writes to an address that is not mapped.
int main(void) {
	*(volatile char *)0xdeadbeef000 = 1;
	return 0;
}
