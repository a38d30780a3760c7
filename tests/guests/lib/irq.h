/*
 * irq.h - interrupts for the test guests, so that an idle guest can `hlt`
 * instead of spinning: an IDT, the LAPIC enabled, the legacy PIC masked, and
 * one IOAPIC pin routed to a handler that acknowledges a virtio-mmio
 * device's interrupt (so the level-triggered line drops) and sends EOI.
 * hearth-vmm's in-kernel irqchip delivers it; KVM's emulator on PVM hosts
 * can deliver such host-injected interrupts (not guest-raised exceptions).
 */
#ifndef HEARTH_GUEST_IRQ_H
#define HEARTH_GUEST_IRQ_H

#include <stdint.h>

/* Routes IOAPIC pin `irq` to the virtio-mmio device at base. */
void irq_setup_virtio(uint64_t base, unsigned irq);
/* Halts until an interrupt if ready() is false (checked with interrupts off). */
void irq_wait(int (*ready)(void));

#endif
