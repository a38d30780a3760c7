/* i8042.c - the PS/2 controller. What it answers and why: i8042.h. */
#include "i8042.h"

#include <string.h>

#define CMD_OFF (I8042_CMD_PORT - I8042_DATA_PORT)

/* Status register (port 0x64 read). */
#define STR_OBF 0x01
#define STR_SYS 0x04
#define STR_CMD 0x08
#define STR_UNLOCKED 0x10 /* keylock off; Linux warns "Keylock active" without it */

/* Control register bits. */
#define CTR_KBDINT 0x01
#define CTR_SYS 0x04
#define CTR_KBDDIS 0x10
#define CTR_AUXDIS 0x20
#define CTR_XLATE 0x40

enum {
	CMD_READ_CTR = 0x20,
	CMD_WRITE_CTR = 0x60,
	CMD_AUX_DISABLE = 0xa7,
	CMD_AUX_ENABLE = 0xa8,
	CMD_AUX_TEST = 0xa9,
	CMD_SELF_TEST = 0xaa,
	CMD_KBD_TEST = 0xab,
	CMD_KBD_DISABLE = 0xad,
	CMD_KBD_ENABLE = 0xae,
	CMD_READ_OUTPORT = 0xd0,
	CMD_WRITE_OUTPORT = 0xd1,
	CMD_WRITE_KBD_OBUF = 0xd2,
	CMD_WRITE_AUX_OBUF = 0xd3, /* Linux's AUX loop-back */
	CMD_WRITE_AUX = 0xd4,
	CMD_PULSE_FIRST = 0xf0,
};

#define SELF_TEST_OK 0x55
#define KBD_TEST_OK 0x00
#define AUX_TEST_CLOCK_HIGH 0x02 /* an unconnected AUX clock line: no device there */
#define OUTPORT_DEFAULT 0x03     /* reset line not asserted, A20 enabled */
#define PULSE_RESET_LINE 0x01    /* in 0xf0..0xff a clear bit pulses that output line */

void i8042_init(struct i8042 *k, void (*reset)(void *ctx), void *ctx)
{
	memset(k, 0, sizeof(*k));
	k->reset = reset;
	k->ctx = ctx;
	/* Keyboard interrupt on, POST passed, translation on, no AUX port in use. */
	k->ctr = CTR_KBDINT | CTR_SYS | CTR_AUXDIS | CTR_XLATE;
	k->outport = OUTPORT_DEFAULT;
}

static void reply(struct i8042 *k, uint8_t v)
{
	k->obuf = v;
	k->obf = true;
}

static void command(struct i8042 *k, uint8_t cmd)
{
	k->pending = 0;
	switch (cmd) {
	case CMD_READ_CTR:
		reply(k, k->ctr);
		break;
	case CMD_WRITE_CTR:
	case CMD_WRITE_OUTPORT:
	case CMD_WRITE_KBD_OBUF:
	case CMD_WRITE_AUX_OBUF:
	case CMD_WRITE_AUX:
		k->pending = cmd;
		break;
	case CMD_AUX_DISABLE:
		k->ctr |= CTR_AUXDIS;
		break;
	case CMD_AUX_ENABLE:
		k->ctr &= (uint8_t)~CTR_AUXDIS;
		break;
	case CMD_AUX_TEST:
		reply(k, AUX_TEST_CLOCK_HIGH);
		break;
	case CMD_SELF_TEST:
		reply(k, SELF_TEST_OK);
		break;
	case CMD_KBD_TEST:
		reply(k, KBD_TEST_OK);
		break;
	case CMD_KBD_DISABLE:
		k->ctr |= CTR_KBDDIS;
		break;
	case CMD_KBD_ENABLE:
		k->ctr &= (uint8_t)~CTR_KBDDIS;
		break;
	case CMD_READ_OUTPORT:
		reply(k, k->outport);
		break;
	default:
		if (cmd >= CMD_PULSE_FIRST && !(cmd & PULSE_RESET_LINE) && k->reset)
			k->reset(k->ctx);
		/* Anything else (internal RAM, vendor extensions) is ignored, as absent features are. */
		break;
	}
}

static void data_write(struct i8042 *k, uint8_t v)
{
	uint8_t cmd = k->pending;
	k->pending = 0;
	switch (cmd) {
	case CMD_WRITE_CTR:
		k->ctr = v;
		break;
	case CMD_WRITE_OUTPORT:
		k->outport = v;
		break;
	case CMD_WRITE_KBD_OBUF:
	case CMD_WRITE_AUX_OBUF:
		/*
		 * The AUX loop-back byte comes back as keyboard data: with no AUX port
		 * there is nothing to loop it through. Linux reads that as "no AUX"
		 * right away instead of waiting 0.5 s for a reply that never comes.
		 */
		reply(k, v);
		break;
	default:
		/* For the keyboard or the AUX device, neither of which is attached. */
		break;
	}
}

void i8042_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct i8042 *k = opaque;
	if (len != 1 || (off != 0 && off != CMD_OFF)) {
		/* Not a register: reads float high, writes go nowhere. */
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	if (is_write) {
		k->last_was_cmd = off == CMD_OFF;
		if (off == CMD_OFF)
			command(k, data[0]);
		else
			data_write(k, data[0]);
		return;
	}
	if (off == CMD_OFF) {
		data[0] = (uint8_t)((k->obf ? STR_OBF : 0) | ((k->ctr & CTR_SYS) ? STR_SYS : 0) |
				    (k->last_was_cmd ? STR_CMD : 0) | STR_UNLOCKED);
		return;
	}
	data[0] = k->obuf;
	k->obf = false;
}
