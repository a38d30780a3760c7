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

struct interrupt_frame {
	uint64_t ip, cs, flags, sp, ss;
};

/*
 * Exceptions and stray vectors: without a gate for them, any fault is a
 * triple fault, which says nothing. With one, the console names the vector,
 * the error code and where it happened (real KVM only: PVM's emulator cannot
 * deliver guest-raised exceptions), then the guest stops.
 */
static void __attribute__((noreturn)) report(unsigned v, uint64_t code, const struct interrupt_frame *f)
{
	puts_uart("guest exception: vector ");
	put_dec(v);
	puts_uart(" error ");
	put_hex(code);
	puts_uart(" rip ");
	put_hex(f->ip);
	puts_uart(" rsp ");
	put_hex(f->sp);
	uint64_t cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	puts_uart(" cr2 ");
	put_hex(cr2);
	puts_uart("\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

#define EXC(v) \
	__attribute__((interrupt)) static void exc_##v(struct interrupt_frame *f) { report(v, 0, f); }
#define EXC_CODE(v)                                                                      \
	__attribute__((interrupt)) static void exc_##v(struct interrupt_frame *f, uint64_t code) \
	{                                                                                \
		report(v, code, f);                                                      \
	}
EXC(0) EXC(1) EXC(2) EXC(3) EXC(4) EXC(5) EXC(6) EXC(7) EXC_CODE(8) EXC(9)
EXC_CODE(10) EXC_CODE(11) EXC_CODE(12) EXC_CODE(13) EXC_CODE(14) EXC(16) EXC_CODE(17)
EXC(18) EXC(19) EXC(20) EXC_CODE(21)
__attribute__((interrupt)) static void stray_isr(struct interrupt_frame *f)
{
	report(256, 0, f); /* a vector nobody routed here */
}

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
	static void *const exc[22] = {
		exc_0, exc_1, exc_2, exc_3, exc_4, exc_5, exc_6, exc_7, exc_8, exc_9, exc_10,
		exc_11, exc_12, exc_13, exc_14, 0, exc_16, exc_17, exc_18, exc_19, exc_20, exc_21,
	};
	for (unsigned v = 0; v < 256; v++)
		set_gate(v, v < 22 && exc[v] ? (void (*)(struct interrupt_frame *))exc[v] : stray_isr);
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
