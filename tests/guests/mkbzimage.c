/*
 * mkbzimage - wraps a test guest ELF into a minimal bzImage (boot protocol
 * 2.15, XLF_KERNEL_64), so tests can exercise hearth-vmm's bzImage loader
 * with a guest that runs under emulation. The protected-mode payload is the
 * guest's loadable segments laid out flat from their lowest physical address;
 * the 64-bit entry is at payload + 0x200, as in a real bzImage.
 * usage: mkbzimage IN.elf OUT.bzImage
 */
#include <elf.h>
#include <err.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

int main(int argc, char **argv)
{
	if (argc != 3)
		errx(2, "usage: mkbzimage IN.elf OUT.bzImage");
	FILE *f = fopen(argv[1], "rb");
	if (!f)
		err(1, "%s", argv[1]);
	static uint8_t elf[4 << 20];
	size_t len = fread(elf, 1, sizeof(elf), f);
	fclose(f);
	Elf64_Ehdr eh;
	if (len < sizeof(eh))
		errx(1, "%s: too short", argv[1]);
	memcpy(&eh, elf, sizeof(eh));
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_phoff + (size_t)eh.e_phnum * sizeof(Elf64_Phdr) > len)
		errx(1, "%s: bad ELF", argv[1]);
	uint64_t lo = UINT64_MAX, hi_file = 0, hi_mem = 0;
	for (int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, elf + eh.e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		if (ph.p_paddr < lo) lo = ph.p_paddr;
		if (ph.p_paddr + ph.p_filesz > hi_file) hi_file = ph.p_paddr + ph.p_filesz;
		if (ph.p_paddr + ph.p_memsz > hi_mem) hi_mem = ph.p_paddr + ph.p_memsz;
	}
	if (lo == UINT64_MAX || eh.e_entry != lo + 0x200)
		errx(1, "%s: entry must be 0x200 past the lowest segment", argv[1]);
	size_t payload = hi_file - lo;
	uint8_t *img = calloc(1, 1024 + payload);
	if (!img)
		err(1, "calloc");
	for (int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, elf + eh.e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_LOAD && ph.p_offset + ph.p_filesz <= len)
			memcpy(img + 1024 + (ph.p_paddr - lo), elf + ph.p_offset, ph.p_filesz);
	}
	img[0x1f1] = 1;              /* setup_sects */
	put16(img + 0x1fe, 0xaa55);  /* boot_flag */
	img[0x200] = 0xeb;           /* jmp over the header */
	img[0x201] = 0x6a;           /* header ends at 0x26c */
	put32(img + 0x202, 0x53726448);
	put16(img + 0x206, 0x020f);
	img[0x211] = 0x01;           /* LOADED_HIGH */
	put32(img + 0x214, (uint32_t)lo);
	put32(img + 0x22c, 0x7fffffff);
	put32(img + 0x230, 0x200000);
	put16(img + 0x236, 0x1);     /* XLF_KERNEL_64 */
	put32(img + 0x238, 2047);
	put64(img + 0x258, lo);      /* pref_address */
	put32(img + 0x260, (uint32_t)(hi_mem - lo)); /* init_size */
	FILE *o = fopen(argv[2], "wb");
	if (!o || fwrite(img, 1, 1024 + payload, o) != 1024 + payload || fclose(o))
		err(1, "%s", argv[2]);
	free(img);
	return 0;
}
