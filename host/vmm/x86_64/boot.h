/*
 * boot.h - the Linux x86-64 64-bit boot protocol (Documentation/arch/x86/boot.rst).
 *
 * x86_boot_load() puts a kernel into guest RAM, either an uncompressed vmlinux
 * (ELF64, loaded by its physical addresses) or a bzImage (protected-mode part
 * loaded at its preferred address, entered at +0x200, the 64-bit entry). It
 * writes the zero page (boot_params, with the e820 map, command line and
 * initrd), the GDT and identity page tables covering the low 4 GiB (RAM and the
 * 32-bit MMIO hole). x86_vcpu_boot_regs() then puts a vCPU in long mode at the
 * entry point with %rsi = the zero page, as the protocol wants.
 *
 * Kernel and initrd files are host input, but still untrusted in shape: every
 * offset and size read from them is checked before use.
 *
 * Guest-physical layout (below 1 MiB): GDT 0x500, IDT 0x520, zero page 0x7000,
 * boot stack top 0x8ff0, page tables 0x9000-0xefff, command line 0x20000.
 * e820: RAM [0, 0x9fc00), reserved [0x9fc00, 1 MiB), RAM [1 MiB, mem end).
 */
#ifndef HEARTH_VMM_X86_BOOT_H
#define HEARTH_VMM_X86_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "../vm.h"

#define BOOT_ZERO_PAGE 0x7000ul
#define BOOT_CMDLINE_ADDR 0x20000ul
#define BOOT_CMDLINE_MAX 4096ul
#define BOOT_HIMEM 0x100000ul

struct boot_info {
	uint64_t entry;
	uint64_t kernel_start, kernel_end;
	uint64_t initrd_addr, initrd_size;
	int is_bzimage;
};

/* Returns 0, or -1 with a message in errbuf. Nothing is run. */
int x86_boot_load(struct vm *vm, const char *kernel, const char *initrd, const char *cmdline,
		  struct boot_info *bi, char *errbuf, size_t errlen);

/* Registers, segments, FPU, boot MSRs and LAPIC LINT pins of one vCPU (fatal on KVM errors). */
void x86_vcpu_boot_regs(struct vcpu *c, uint64_t entry);

#endif
