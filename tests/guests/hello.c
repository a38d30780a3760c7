/* Prints a greeting over the UART and resets the machine. */
#include "lib/guest.h"

void guest_main(const uint8_t *bp);
void guest_main(const uint8_t *bp)
{
	(void)bp;
	puts_uart("hello from the hearth test guest\n");
	guest_reset();
}
