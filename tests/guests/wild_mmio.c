/*
 * Writes to and reads from guest-physical addresses no device owns (in the
 * 32-bit hole and far above RAM). hearth-vmm must log them, answer reads with
 * all-ones, and keep the VM running.
 */
#include "lib/guest.h"

void guest_main(const uint8_t *bp);
void guest_main(const uint8_t *bp)
{
	(void)bp;
	mmio_write32(0xe0001000ull, 0xdeadbeef);
	uint32_t v = mmio_read32(0xe0002000ull);
	mmio_write32(0xfebff000ull, 1);
	puts_uart("wild mmio guest: read ");
	put_hex(v);
	puts_uart(", still alive\n");
	guest_reset();
}
