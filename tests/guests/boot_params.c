/*
 * Reports what the boot protocol handed over, for tests/vmm to compare with
 * what it asked hearth-vmm for: the e820 map, the command line, and the
 * initrd's address, size and FNV-1a hash. Also checks the fields a Linux
 * kernel checks at entry (boot flag, "HdrS" magic, loader type).
 */
#include "lib/guest.h"

void guest_main(const uint8_t *bp);
void guest_main(const uint8_t *bp)
{
	uint16_t flag;
	uint32_t magic, rd_addr, rd_size;
	memcpy(&flag, bp + 0x1fe, 2);
	memcpy(&magic, bp + 0x202, 4);
	memcpy(&rd_addr, bp + 0x218, 4);
	memcpy(&rd_size, bp + 0x21c, 4);
	puts_uart("boot_flag=");
	put_hex(flag);
	puts_uart(" magic=");
	put_hex(magic);
	puts_uart(" loader=");
	put_hex(bp[0x210]);
	puts_uart("\n");

	uint8_t n = bp[0x1e8];
	puts_uart("e820 entries=");
	put_dec(n);
	puts_uart("\n");
	for (uint8_t i = 0; i < n && i < 128; i++) {
		const uint8_t *e = bp + 0x2d0 + (size_t)i * 20;
		uint64_t addr, size;
		uint32_t type;
		memcpy(&addr, e, 8);
		memcpy(&size, e + 8, 8);
		memcpy(&type, e + 16, 4);
		puts_uart("e820 ");
		put_hex(addr);
		puts_uart(" ");
		put_hex(size);
		puts_uart(" ");
		put_dec(type);
		puts_uart("\n");
	}
	puts_uart("cmdline=[");
	puts_uart(bp_cmdline(bp));
	puts_uart("]\n");

	uint64_t h = 0xcbf29ce484222325ull;
	const uint8_t *rd = (const uint8_t *)(uintptr_t)rd_addr;
	for (uint32_t i = 0; i < rd_size; i++) {
		h ^= rd[i];
		h *= 0x100000001b3ull;
	}
	puts_uart("initrd addr=");
	put_hex(rd_addr);
	puts_uart(" size=");
	put_dec(rd_size);
	puts_uart(" fnv1a=");
	put_hex(h);
	puts_uart("\n");

	/* Probe the UART the way Linux's 8250 driver does: scratch, loopback, FIFO/IIR. */
	outb(0x3f8 + 7, 0x55);
	int scr = inb(0x3f8 + 7) == 0x55;
	outb(0x3f8 + 4, 0x10 | 0x0a); /* loopback, RTS, OUT2 */
	int loop = (inb(0x3f8 + 6) & 0xf0) == 0x90; /* CTS and DCD follow RTS and OUT2 */
	outb(0x3f8 + 4, 0x08);
	outb(0x3f8 + 2, 0x01); /* enable FIFOs */
	uint8_t iir = inb(0x3f8 + 2);
	uint8_t lsr = inb(0x3f8 + 5);
	puts_uart("uart probe scratch=");
	puts_uart(scr ? "ok" : "BAD");
	puts_uart(" loopback=");
	puts_uart(loop ? "ok" : "BAD");
	puts_uart(" iir=");
	put_hex(iir);
	puts_uart(" lsr=");
	put_hex(lsr);
	puts_uart("\nboot_params done\n");
	guest_reset();
}
