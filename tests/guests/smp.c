/*
 * SMP guest: the BSP wakes every other vCPU with INIT-SIPI-SIPI through its
 * LAPIC; each AP runs the trampoline (lib/smp.S) into long mode and reports
 * its APIC id and the CPUID topology hearth-vmm gave it. The BSP prints what
 * all vCPUs saw. Shows that N vCPU threads really run guest code.
 */
#include "lib/guest.h"

#define LAPIC 0xfee00000ull
#define MAX_CPUS 16

extern const uint8_t smp_trampoline[], smp_trampoline_end[];
static volatile uint32_t up_count;
static volatile uint32_t apic_ids[MAX_CPUS], logical[MAX_CPUS];

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

void ap_main(uint32_t slot);
void ap_main(uint32_t slot)
{
	uint32_t r[4];
	cpuid(1, 0, r);
	if (slot + 1 < MAX_CPUS) {
		apic_ids[slot + 1] = r[1] >> 24;
		logical[slot + 1] = (r[1] >> 16) & 0xff;
	}
	__atomic_add_fetch(&up_count, 1, __ATOMIC_SEQ_CST);
}

void guest_main(const uint8_t *bp);
void guest_main(const uint8_t *bp)
{
	(void)bp;
	uint32_t r[4];
	cpuid(1, 0, r);
	uint32_t n = (r[1] >> 16) & 0xff;
	apic_ids[0] = r[1] >> 24;
	logical[0] = n;
	puts_uart("smp: cpuid says ");
	put_dec(n);
	puts_uart(" logical cpus, hypervisor bit ");
	put_dec((r[2] >> 31) & 1);
	puts_uart("\n");
	if (n > MAX_CPUS)
		n = MAX_CPUS;
	memcpy((void *)0x10000, smp_trampoline, (size_t)(smp_trampoline_end - smp_trampoline));
	mmio_write32(LAPIC + 0xf0, 0x1ff);
	/* INIT, then two SIPIs (vector 0x10 -> 0x10000), to all but self. */
	mmio_write32(LAPIC + 0x310, 0);
	mmio_write32(LAPIC + 0x300, 0x000c4500);
	mmio_write32(LAPIC + 0x300, 0x000c4610);
	mmio_write32(LAPIC + 0x300, 0x000c4610);
	for (uint64_t spin = 0; up_count < n - 1 && spin < 2000000; spin++)
		__asm__ volatile("pause");
	puts_uart("smp: ");
	put_dec(up_count + 1);
	puts_uart(" cpus up, apic ids");
	for (uint32_t i = 0; i < up_count + 1 && i < MAX_CPUS; i++) {
		puts_uart(" ");
		put_dec(apic_ids[i]);
		puts_uart("/");
		put_dec(logical[i]);
	}
	puts_uart("\n");
	guest_reset();
}
