/*
 * i8042.h - the PS/2 controller, as much of it as a Linux guest uses: the
 * commands its i8042 driver sends at probe (read and write the control
 * register, self-test, interface tests, enable/disable of the two ports,
 * output port, AUX loop-back) and the reset line. Writing 0xfe (pulse the
 * reset line) to port 0x64 ends the VM with "guest reset", which is how
 * `reboot` in a Linux guest stops a microVM.
 *
 * No keyboard and no AUX (mouse) device are attached: bytes sent to the
 * keyboard are dropped, and the AUX loop-back and interface test answer the
 * way a controller without an AUX port does, so the driver gives the port up
 * at once instead of waiting out its timeouts. The controller raises no
 * interrupts; Linux polls it during probe. Every guest write is one byte
 * handled at once (the input buffer is never full), and any byte sequence,
 * width or offset is answered without touching anything but this struct.
 *
 * Its state is not part of snapshots: a guest reads the control register at
 * probe and writes it back at shutdown, both of which a clone has behind or
 * ahead of it with the defaults.
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
	uint8_t ctr;         /* the control ("command byte") register */
	uint8_t outport;     /* output port (0xd0/0xd1): reset line and A20, stored only */
	uint8_t obuf;        /* output buffer, valid while obf */
	bool obf;
	uint8_t pending;     /* command waiting for its data byte on port 0x60, or 0 */
	bool last_was_cmd;   /* status bit 3: the last write went to port 0x64 */
};

/* Power-on state, as firmware leaves it; the reset callback is set by the caller. */
void i8042_init(struct i8042 *k, void (*reset)(void *ctx), void *ctx);
/* io_bus handler for ports 0x60..0x64 (registered as one range of 5). */
void i8042_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

#endif
