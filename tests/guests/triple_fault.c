/*
 * Loads an empty IDT and executes ud2: #UD cannot be delivered, nor can the
 * double fault, so the CPU shuts down (triple fault). Under KVM's emulator on
 * PVM hosts the same guest ends in an emulation failure; hearth-vmm reports
 * both as "guest crashed" (exit 3).
 */
#include "lib/guest.h"

void guest_main(const uint8_t *bp);
void guest_main(const uint8_t *bp)
{
	(void)bp;
	struct __attribute__((packed)) { uint16_t limit; uint64_t base; } idtr = { 0, 0 };
	puts_uart("triple fault guest: about to fault\n");
	__asm__ volatile("lidt %0; ud2" ::"m"(idtr));
	puts_uart("triple fault guest: still running?!\n");
}
