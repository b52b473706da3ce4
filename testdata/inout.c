// inout reads and writes an I/O port at CPL3.
int main(void) {
	unsigned char v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"((unsigned short)0x80));
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"((unsigned short)0x80));
	return v;
}
