#include "irq.h"

#include "guest.h"

#define VIRTIO_VECTOR 0x30
#define LAPIC 0xfee00000ull
#define IOAPIC 0xfec00000ull

struct idt_entry {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
	uint32_t off_hi, zero;
} __attribute__((packed));

static struct idt_entry idt[256] __attribute__((aligned(16)));
static volatile uint64_t isr_base;
static volatile uint64_t isr_count;

struct interrupt_frame;

__attribute__((interrupt)) static void virtio_isr(struct interrupt_frame *f)
{
	(void)f;
	uint32_t st = mmio_read32(isr_base + 0x60);
	mmio_write32(isr_base + 0x64, st);
	isr_count++;
	mmio_write32(LAPIC + 0xb0, 0);
}

__attribute__((interrupt)) static void spurious_isr(struct interrupt_frame *f)
{
	(void)f;
}

static void set_gate(unsigned v, void (*h)(struct interrupt_frame *))
{
	uint64_t a = (uint64_t)(uintptr_t)h;
	idt[v].off_lo = (uint16_t)a;
	idt[v].sel = 0x10;
	idt[v].ist = 0;
	idt[v].type = 0x8e; /* present, interrupt gate */
	idt[v].off_mid = (uint16_t)(a >> 16);
	idt[v].off_hi = (uint32_t)(a >> 32);
	idt[v].zero = 0;
}

static void ioapic_write(uint32_t reg, uint32_t v)
{
	mmio_write32(IOAPIC, reg);
	mmio_write32(IOAPIC + 0x10, v);
}

void irq_setup_virtio(uint64_t base, unsigned irq)
{
	isr_base = base;
	set_gate(VIRTIO_VECTOR, virtio_isr);
	set_gate(0xff, spurious_isr);
	struct __attribute__((packed)) {
		uint16_t limit;
		uint64_t base;
	} idtr = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" ::"m"(idtr));
	outb(0x21, 0xff); /* mask the legacy PICs */
	outb(0xa1, 0xff);
	mmio_write32(LAPIC + 0xf0, 0x100 | 0xff); /* software-enable, spurious vector 0xff */
	mmio_write32(LAPIC + 0x80, 0);             /* accept every priority */
	/* Level-triggered, active high, fixed delivery to APIC 0, unmasked. */
	ioapic_write(0x10 + 2 * irq + 1, 0);
	ioapic_write(0x10 + 2 * irq, VIRTIO_VECTOR | (1u << 15));
}

void irq_wait(int (*ready)(void))
{
	__asm__ volatile("cli");
	if (ready()) {
		__asm__ volatile("sti");
		return;
	}
	/* sti's one-instruction shadow makes "sti; hlt" race-free. */
	__asm__ volatile("sti; hlt" ::: "memory");
}
