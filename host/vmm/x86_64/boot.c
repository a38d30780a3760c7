#include "boot.h"
#include "fileref.h"

#include <elf.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define GDT_ADDR 0x500ul
#define IDT_ADDR 0x520ul
#define BOOT_STACK 0x8ff0ul
#define PML4_ADDR 0x9000ul
#define PDPT_ADDR 0xa000ul
#define PD_ADDR 0xb000ul /* four PDs: 0xb000..0xefff, 4 GiB in 2 MiB pages */
#define EBDA_START 0x9fc00ul

/* struct boot_params offsets (arch/x86/include/uapi/asm/bootparam.h). */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_HDR 0x1f1
#define BP_SETUP_SECTS 0x1f1
#define BP_BOOT_FLAG 0x1fe
#define BP_JUMP 0x200
#define BP_HEADER 0x202
#define BP_VERSION 0x206
#define BP_TYPE_OF_LOADER 0x210
#define BP_LOADFLAGS 0x211
#define BP_CODE32_START 0x214
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_HEAP_END_PTR 0x224
#define BP_CMD_LINE_PTR 0x228
#define BP_INITRD_ADDR_MAX 0x22c
#define BP_KERNEL_ALIGNMENT 0x230
#define BP_CMDLINE_SIZE 0x238
#define BP_XLOADFLAGS 0x236
#define BP_PREF_ADDRESS 0x258
#define BP_INIT_SIZE 0x260
#define BP_E820_TABLE 0x2d0
#define BP_SIZE 0x1000
#define E820_MAX 128

#define HDRS_MAGIC 0x53726448u /* "HdrS" */
#define XLF_KERNEL_64 0x1
#define LOADED_HIGH 0x01
#define CAN_USE_HEAP 0x80
#define E820_RAM 1
#define E820_RESERVED 2

static int fail(char *eb, size_t el, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *eb, size_t el, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(eb, el, fmt, ap);
	va_end(ap);
	return -1;
}

static uint8_t *read_file(const char *path, size_t *len, char *eb, size_t el)
{
	int fd = fref_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0) {
		fail(eb, el, "cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)GM_MAX_SIZE) {
		fail(eb, el, "%s: not a regular file of sane size", path);
		close(fd);
		return NULL;
	}
	uint8_t *buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	size_t have = 0;
	while (buf && have < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + have, (size_t)st.st_size - have);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			free(buf);
			buf = NULL;
			fail(eb, el, "%s: read failed", path);
		} else {
			have += (size_t)n;
		}
	}
	close(fd);
	if (!buf && !*eb)
		fail(eb, el, "%s: out of memory", path);
	*len = have;
	return buf;
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static int load_elf(struct vm *vm, const uint8_t *f, size_t len, struct boot_info *bi, char *eb,
		    size_t el)
{
	if (len < sizeof(Elf64_Ehdr))
		return fail(eb, el, "kernel: ELF header truncated");
	Elf64_Ehdr eh;
	memcpy(&eh, f, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh.e_machine != EM_X86_64 || (eh.e_type != ET_EXEC && eh.e_type != ET_DYN))
		return fail(eb, el, "kernel: not a little-endian x86-64 ELF executable");
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum > 64 ||
	    eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
		return fail(eb, el, "kernel: bad program header table");
	bi->kernel_start = UINT64_MAX;
	bi->kernel_end = 0;
	int loads = 0;
	for (int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, f + eh.e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		if (ph.p_filesz > ph.p_memsz || ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
			return fail(eb, el, "kernel: segment %d lies outside the file", i);
		if (ph.p_paddr < BOOT_HIMEM || !gm_valid(&vm->mem, ph.p_paddr, ph.p_memsz))
			return fail(eb, el,
				    "kernel: segment %d at 0x%llx+0x%llx is below 1 MiB or beyond RAM",
				    i, (unsigned long long)ph.p_paddr, (unsigned long long)ph.p_memsz);
		gm_write(&vm->mem, ph.p_paddr, f + ph.p_offset, ph.p_filesz);
		uint8_t *bss = gm_ptr(&vm->mem, ph.p_paddr + ph.p_filesz, ph.p_memsz - ph.p_filesz);
		memset(bss, 0, ph.p_memsz - ph.p_filesz);
		if (ph.p_paddr < bi->kernel_start)
			bi->kernel_start = ph.p_paddr;
		if (ph.p_paddr + ph.p_memsz > bi->kernel_end)
			bi->kernel_end = ph.p_paddr + ph.p_memsz;
		loads++;
	}
	if (!loads)
		return fail(eb, el, "kernel: no loadable segment");
	/* vmlinux links startup_64 at a virtual address; its physical one is what we enter. */
	uint64_t entry = eh.e_entry;
	if (entry >= 0xffffffff80000000ull)
		entry -= 0xffffffff80000000ull;
	if (entry < bi->kernel_start || entry >= bi->kernel_end)
		return fail(eb, el, "kernel: entry point 0x%llx outside the loaded image",
			    (unsigned long long)eh.e_entry);
	bi->entry = entry;
	return 0;
}

static int load_bzimage(struct vm *vm, const uint8_t *f, size_t len, uint8_t *bp,
			struct boot_info *bi, char *eb, size_t el)
{
	if (len < 0x270)
		return fail(eb, el, "kernel: bzImage header truncated");
	uint16_t version = get16(f + BP_VERSION);
	if (version < 0x20c)
		return fail(eb, el, "kernel: boot protocol %u.%02u too old for 64-bit entry (need 2.12)",
			    version >> 8, version & 0xff);
	if (!(get16(f + BP_XLOADFLAGS) & XLF_KERNEL_64))
		return fail(eb, el, "kernel: bzImage has no 64-bit entry point (XLF_KERNEL_64)");
	unsigned setup_sects = f[BP_SETUP_SECTS] ? f[BP_SETUP_SECTS] : 4;
	size_t off = (size_t)(setup_sects + 1) * 512;
	if (off >= len)
		return fail(eb, el, "kernel: bzImage setup (%u sectors) larger than the file",
			    setup_sects);
	/* The setup header runs from 0x1f1 to the end given by the jump at 0x200. */
	size_t hdr_end = 0x202 + f[0x201];
	if (hdr_end > BP_SIZE || hdr_end > len)
		return fail(eb, el, "kernel: bzImage setup header length out of range");
	memcpy(bp + BP_HDR, f + BP_HDR, hdr_end - BP_HDR);

	uint64_t load = get64(f + BP_PREF_ADDRESS);
	uint64_t init_size = get32(f + BP_INIT_SIZE);
	uint64_t payload = len - off;
	if (init_size < payload)
		init_size = payload;
	if (load < BOOT_HIMEM || !gm_valid(&vm->mem, load, init_size))
		load = BOOT_HIMEM;
	if (!gm_valid(&vm->mem, load, init_size))
		return fail(eb, el, "kernel: bzImage needs 0x%llx bytes at 0x%llx, RAM too small",
			    (unsigned long long)init_size, (unsigned long long)load);
	gm_write(&vm->mem, load, f + off, payload);
	bi->kernel_start = load;
	bi->kernel_end = load + init_size;
	bi->entry = load + 0x200;
	bi->is_bzimage = 1;
	put32(bp + BP_CODE32_START, (uint32_t)load);
	return 0;
}

static void write_page_tables(struct vm *vm)
{
	uint64_t e = PDPT_ADDR | 0x3; /* present, writable */
	gm_write(&vm->mem, PML4_ADDR, &e, 8);
	for (uint64_t i = 0; i < 4; i++) {
		e = (PD_ADDR + i * 0x1000) | 0x3;
		gm_write(&vm->mem, PDPT_ADDR + i * 8, &e, 8);
	}
	for (uint64_t i = 0; i < 4 * 512; i++) {
		e = (i << 21) | 0x83; /* present, writable, 2 MiB page */
		gm_write(&vm->mem, PD_ADDR + i * 8, &e, 8);
	}
}

static void write_gdt(struct vm *vm)
{
	static const uint64_t gdt[] = {
		0,                     /* null */
		0,                     /* null (Linux's __BOOT_CS is 0x10) */
		0x00af9b000000ffffull, /* 0x10: 64-bit code */
		0x00cf93000000ffffull, /* 0x18: data */
		0x00808b0000000000ull, /* 0x20: TSS */
	};
	gm_write(&vm->mem, GDT_ADDR, gdt, sizeof(gdt));
	uint64_t idt = 0;
	gm_write(&vm->mem, IDT_ADDR, &idt, sizeof(idt));
}

static void add_e820(uint8_t *bp, uint64_t addr, uint64_t size, uint32_t type)
{
	uint8_t n = bp[BP_E820_ENTRIES];
	if (n >= E820_MAX)
		return;
	uint8_t *e = bp + BP_E820_TABLE + (size_t)n * 20;
	put64(e, addr);
	put64(e + 8, size);
	put32(e + 16, type);
	bp[BP_E820_ENTRIES] = n + 1;
}

int x86_boot_load(struct vm *vm, const char *kernel, const char *initrd, const char *cmdline,
		  struct boot_info *bi, char *eb, size_t el)
{
	memset(bi, 0, sizeof(*bi));
	eb[0] = 0;
	if (vm->mem.size < 2 * BOOT_HIMEM)
		return fail(eb, el, "guest RAM of %llu bytes is too small to boot",
			    (unsigned long long)vm->mem.size);
	size_t clen = strlen(cmdline);
	if (clen >= BOOT_CMDLINE_MAX)
		return fail(eb, el, "command line is %zu bytes, limit %lu", clen,
			    BOOT_CMDLINE_MAX - 1);

	uint8_t bp[BP_SIZE];
	memset(bp, 0, sizeof(bp));
	size_t klen = 0;
	uint8_t *k = read_file(kernel, &klen, eb, el);
	if (!k)
		return -1;
	int rc;
	if (klen >= 4 && memcmp(k, ELFMAG, SELFMAG) == 0)
		rc = load_elf(vm, k, klen, bi, eb, el);
	else if (klen >= 0x206 && get32(k + BP_HEADER) == HDRS_MAGIC)
		rc = load_bzimage(vm, k, klen, bp, bi, eb, el);
	else
		rc = fail(eb, el, "kernel %s: neither an ELF vmlinux nor a bzImage", kernel);
	free(k);
	if (rc < 0)
		return rc;

	if (!bi->is_bzimage) {
		put16(bp + BP_BOOT_FLAG, 0xaa55);
		put32(bp + BP_HEADER, HDRS_MAGIC);
		put16(bp + BP_VERSION, 0x020f);
		put32(bp + BP_KERNEL_ALIGNMENT, 0x1000000);
		put32(bp + BP_INITRD_ADDR_MAX, 0x7fffffff);
	}
	bp[BP_TYPE_OF_LOADER] = 0xff;
	bp[BP_LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP;
	put16(bp + BP_HEAP_END_PTR, 0xfe00);
	put32(bp + BP_CMD_LINE_PTR, BOOT_CMDLINE_ADDR);
	put32(bp + BP_CMDLINE_SIZE, (uint32_t)clen);
	gm_write(&vm->mem, BOOT_CMDLINE_ADDR, cmdline, clen + 1);

	if (initrd) {
		size_t ilen = 0;
		uint8_t *ird = read_file(initrd, &ilen, eb, el);
		if (!ird)
			return -1;
		uint64_t max = (uint64_t)get32(bp + BP_INITRD_ADDR_MAX) + 1;
		uint64_t top = vm->mem.size < max ? vm->mem.size : max;
		uint64_t addr = ilen <= top ? ((top - ilen) & ~0xfffull) : 0;
		if (ilen == 0 || addr < bi->kernel_end || !gm_valid(&vm->mem, addr, ilen)) {
			free(ird);
			return fail(eb, el, "initrd %s (%zu bytes) does not fit above the kernel",
				    initrd, ilen);
		}
		gm_write(&vm->mem, addr, ird, ilen);
		free(ird);
		bi->initrd_addr = addr;
		bi->initrd_size = ilen;
		put32(bp + BP_RAMDISK_IMAGE, (uint32_t)addr);
		put32(bp + BP_RAMDISK_SIZE, (uint32_t)ilen);
		put32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(addr >> 32));
		put32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)((uint64_t)ilen >> 32));
	}
	(void)get64;

	add_e820(bp, 0, EBDA_START, E820_RAM);
	add_e820(bp, EBDA_START, BOOT_HIMEM - EBDA_START, E820_RESERVED);
	add_e820(bp, BOOT_HIMEM, vm->mem.size - BOOT_HIMEM, E820_RAM);
	gm_write(&vm->mem, BOOT_ZERO_PAGE, bp, sizeof(bp));
	write_gdt(vm);
	write_page_tables(vm);
	return 0;
}

static struct kvm_segment seg(uint16_t sel, uint8_t type, uint8_t s, uint8_t l, uint8_t db)
{
	return (struct kvm_segment){ .base = 0, .limit = 0xfffff, .selector = sel, .type = type,
				     .present = 1, .dpl = 0, .db = db, .s = s, .l = l, .g = 1 };
}

/* The MSR values Linux expects at entry (as Firecracker and kvmtool set them). */
static void set_boot_msrs(struct vcpu *c)
{
	static const struct { uint32_t idx; uint64_t val; } boot[] = {
		{ 0x174, 0 },           /* SYSENTER_CS */
		{ 0x175, 0 },           /* SYSENTER_ESP */
		{ 0x176, 0 },           /* SYSENTER_EIP */
		{ 0xc0000081, 0 },      /* STAR */
		{ 0xc0000082, 0 },      /* LSTAR */
		{ 0xc0000083, 0 },      /* CSTAR */
		{ 0xc0000084, 0 },      /* SYSCALL_MASK */
		{ 0xc0000102, 0 },      /* KERNEL_GS_BASE */
		{ 0x10, 0 },            /* TSC */
		{ 0x1a0, 1 },           /* MISC_ENABLE: fast strings */
		{ 0x2ff, (1 << 11) | 6 }, /* MTRRdefType: enabled, write-back */
	};
	size_t n = sizeof(boot) / sizeof(boot[0]);
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[16];
	} m;
	memset(&m, 0, sizeof(m));
	m.hdr.nmsrs = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		m.e[i].index = boot[i].idx;
		m.e[i].data = boot[i].val;
	}
	int set = ioctl(c->fd, KVM_SET_MSRS, &m);
	if (set < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (SET_MSRS) failed");
	if ((size_t)set != n)
		errx(VMM_EXIT_ERROR, "KVM: ioctl (SET_MSRS) set %d of %zu boot MSRs (0x%x refused)",
		     set, n, m.e[set].index);
}

static void set_lint(struct vcpu *c)
{
	struct kvm_lapic_state l;
	if (ioctl(c->fd, KVM_GET_LAPIC, &l) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (GET_LAPIC) failed");
	uint32_t v;
	/* LINT0 = ExtINT (the PIC), LINT1 = NMI, as firmware leaves them. */
	memcpy(&v, l.regs + 0x350, 4);
	v = (v & ~0x700u) | (7u << 8);
	memcpy(l.regs + 0x350, &v, 4);
	memcpy(&v, l.regs + 0x360, 4);
	v = (v & ~0x700u) | (4u << 8);
	memcpy(l.regs + 0x360, &v, 4);
	if (ioctl(c->fd, KVM_SET_LAPIC, &l) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (SET_LAPIC) failed");
}

void x86_vcpu_boot_regs(struct vcpu *c, uint64_t entry)
{
	struct kvm_sregs s;
	if (ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (GET_SREGS) failed");
	s.cs = seg(0x10, 0xb, 1, 1, 0);
	s.ds = s.es = s.fs = s.gs = s.ss = seg(0x18, 0x3, 1, 0, 1);
	s.tr = seg(0x20, 0xb, 0, 0, 0);
	s.tr.g = 0;
	s.tr.limit = 0xffff;
	s.gdt.base = GDT_ADDR;
	s.gdt.limit = 5 * 8 - 1;
	s.idt.base = IDT_ADDR;
	s.idt.limit = 7;
	s.cr3 = PML4_ADDR;
	s.cr4 |= 0x20;                      /* PAE */
	s.cr0 |= 0x1 | 0x10 | 0x80000000u;  /* PE, ET, PG */
	s.efer |= 0x100 | 0x400;            /* LME, LMA */
	if (ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (SET_SREGS) failed");

	struct kvm_regs r;
	memset(&r, 0, sizeof(r));
	r.rflags = 0x2;
	r.rip = entry;
	r.rsp = r.rbp = BOOT_STACK;
	r.rsi = BOOT_ZERO_PAGE;
	if (ioctl(c->fd, KVM_SET_REGS, &r) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (SET_REGS) failed");

	struct kvm_fpu f;
	memset(&f, 0, sizeof(f));
	f.fcw = 0x37f;
	f.mxcsr = 0x1f80;
	if (ioctl(c->fd, KVM_SET_FPU, &f) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (SET_FPU) failed");
	set_boot_msrs(c);
	set_lint(c);
}
