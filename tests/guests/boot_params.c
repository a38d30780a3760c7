/*
 * Reports what the boot protocol handed over, for tests/vmm to compare with
 * what it asked hearth-vmm for: the e820 map, the command line, and the
 * initrd's address, size and FNV-1a hash. Also checks the fields a Linux
 * kernel checks at entry (boot flag, "HdrS" magic, loader type), and walks
 * the MP table the way Linux's mpparse does (signatures, lengths, checksums),
 * reporting what it describes.
 */
#include "lib/guest.h"

static uint8_t sum8(const uint8_t *p, uint32_t n)
{
	uint8_t s = 0;
	for (uint32_t i = 0; i < n; i++)
		s += p[i];
	return s;
}

/* One line: "mptable ok cpus=N bsp=ID ... " or "mptable BAD <why>". */
static void report_mptable(void)
{
	const uint8_t *mpf = (const uint8_t *)(uintptr_t)0x9fc00;
	uint32_t phys;
	memcpy(&phys, mpf + 4, 4);
	puts_uart("mptable ");
	if (memcmp(mpf, "_MP_", 4) || mpf[8] != 1 || mpf[9] != 4 || sum8(mpf, 16)) {
		puts_uart("BAD floating pointer\n");
		return;
	}
	if (phys < 0x9fc00 || phys > 0x9fc00 + 0x400 - 44) {
		puts_uart("BAD table address\n");
		return;
	}
	const uint8_t *t = (const uint8_t *)(uintptr_t)phys;
	uint16_t len, count;
	uint32_t lapic;
	memcpy(&len, t + 4, 2);
	memcpy(&count, t + 34, 2);
	memcpy(&lapic, t + 36, 4);
	if (memcmp(t, "PCMP", 4) || t[6] != 4 || len < 44 || phys + len > 0x9fc00 + 0x400 ||
	    sum8(t, len)) {
		puts_uart("BAD configuration table\n");
		return;
	}
	uint32_t off = 44, cpus = 0, bsp = 0xff, ioapic = 0, ioapic_id = 0, intsrc = 0, lint = 0;
	for (uint16_t i = 0; i < count; i++) {
		if (off >= len) {
			puts_uart("BAD entry count\n");
			return;
		}
		const uint8_t *e = t + off;
		if (e[0] == 0) {
			cpus += (e[3] & 1) ? 1 : 0;
			if (e[3] & 2)
				bsp = e[1];
			off += 20;
			continue;
		}
		if (e[0] == 2) {
			memcpy(&ioapic, e + 4, 4);
			ioapic_id = e[1];
		}
		intsrc += e[0] == 3;
		lint += e[0] == 4;
		off += 8;
	}
	if (off != len) {
		puts_uart("BAD table length\n");
		return;
	}
	puts_uart("ok cpus=");
	put_dec(cpus);
	puts_uart(" bsp=");
	put_dec(bsp);
	puts_uart(" lapic=");
	put_hex(lapic);
	puts_uart(" ioapic=");
	put_hex(ioapic);
	puts_uart(" id=");
	put_dec(ioapic_id);
	puts_uart(" intsrc=");
	put_dec(intsrc);
	puts_uart(" lint=");
	put_dec(lint);
	puts_uart("\n");
}

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
	report_mptable();
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
