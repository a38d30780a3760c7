/*
 * i8042.h - just enough of the PS/2 controller for the guest to reset the
 * machine: writing 0xfe (pulse reset line) to port 0x64 ends the VM with
 * "guest reset", which is how `reboot` in a Linux guest stops a microVM.
 * Other reads answer "no data", so the guest's probe finds no keyboard.
 */
#ifndef HEARTH_VMM_I8042_H
#define HEARTH_VMM_I8042_H

#include <stdbool.h>
#include <stdint.h>

#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT 0x64

struct i8042 {
	void (*reset)(void *ctx); /* called with the device lock held */
	void *ctx;
};

/* io_bus handler for ports 0x60..0x64 (registered as one range of 5). */
void i8042_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

#endif
