/*
 * In-process tests of the port-I/O devices a Linux guest probes at boot
 * (host/vmm/i8042.c, host/vmm/pci_host.c): the answers Linux's drivers rely
 * on, and hostile byte sequences, widths and offsets that must change
 * nothing but the device's own state and reset only when asked to.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cmocka_main.h"
#include "i8042.h"
#include "pci_host.h"

static int resets;

static void count_reset(void *ctx)
{
	(void)ctx;
	resets++;
}

static void kbd_out(struct i8042 *k, unsigned port, uint8_t v)
{
	i8042_io(k, port - I8042_DATA_PORT, &v, 1, true);
}

static uint8_t kbd_in(struct i8042 *k, unsigned port)
{
	uint8_t v = 0;
	i8042_io(k, port - I8042_DATA_PORT, &v, 1, false);
	return v;
}

/* What Linux's i8042_command() does: command, parameter, wait for OBF, read. */
static int kbd_cmd(struct i8042 *k, uint8_t cmd, const uint8_t *param, uint8_t *out)
{
	kbd_out(k, I8042_CMD_PORT, cmd);
	if (param)
		kbd_out(k, I8042_DATA_PORT, *param);
	if (!out)
		return 0;
	if (!(kbd_in(k, I8042_CMD_PORT) & 0x01))
		return -1;
	*out = kbd_in(k, I8042_DATA_PORT);
	return 0;
}

static void i8042_linux_probe(void **s)
{
	(void)s;
	struct i8042 k;
	uint8_t v, p;
	resets = 0;
	i8042_init(&k, count_reset, NULL);
	/* Keylock off, output buffer empty: Linux's flush finds a controller. */
	assert_int_equal(kbd_in(&k, I8042_CMD_PORT) & 0x11, 0x10);
	assert_int_equal(kbd_cmd(&k, 0xaa, NULL, &v), 0);
	assert_int_equal(v, 0x55);
	assert_int_equal(kbd_cmd(&k, 0x20, NULL, &v), 0);
	p = (uint8_t)((v | 0x10) & ~0x01);
	assert_int_equal(kbd_cmd(&k, 0x60, &p, NULL), 0);
	assert_int_equal(kbd_cmd(&k, 0x20, NULL, &v), 0);
	assert_int_equal(v, p);
	assert_int_equal(kbd_cmd(&k, 0xab, NULL, &v), 0);
	assert_int_equal(v, 0x00);
	/* No AUX port: the loop-back byte returns, but not as AUX data (status bit 5). */
	p = 0x5a;
	assert_int_equal(kbd_cmd(&k, 0xd3, &p, NULL), 0);
	assert_int_equal(kbd_in(&k, I8042_CMD_PORT) & 0x21, 0x01);
	assert_int_equal(kbd_cmd(&k, 0xa9, NULL, &v), 0);
	assert_true(v != 0 && v != 0xfa && v != 0xff);
	assert_int_equal(kbd_cmd(&k, 0xad, NULL, NULL), 0);
	assert_int_equal(kbd_cmd(&k, 0x20, NULL, &v), 0);
	assert_true(v & 0x10);
	assert_int_equal(kbd_cmd(&k, 0xae, NULL, NULL), 0);
	assert_int_equal(kbd_cmd(&k, 0x20, NULL, &v), 0);
	assert_false(v & 0x10);
	assert_int_equal(resets, 0);
	kbd_out(&k, I8042_CMD_PORT, 0xfe);
	assert_int_equal(resets, 1);
}

static void i8042_hostile(void **s)
{
	(void)s;
	struct i8042 k;
	resets = 0;
	i8042_init(&k, count_reset, NULL);
	int want = 0;
	/* Every command followed by every data byte: only reset-line pulses reset. */
	for (unsigned c = 0; c < 256; c++) {
		for (unsigned d = 0; d < 256; d++) {
			kbd_out(&k, I8042_CMD_PORT, (uint8_t)c);
			want += c >= 0xf0 && !(c & 1);
			kbd_out(&k, I8042_DATA_PORT, (uint8_t)d);
			kbd_in(&k, I8042_DATA_PORT);
			kbd_in(&k, I8042_CMD_PORT);
		}
	}
	assert_int_equal(resets, want);
	/* Odd widths and offsets: reads float high, writes do nothing. */
	srand(1);
	for (int i = 0; i < 100000; i++) {
		uint8_t buf[8];
		uint32_t len = 1u << (rand() % 3);
		uint64_t off = (uint64_t)(rand() % 5);
		if (off + len > 5)
			continue;
		for (int j = 0; j < 8; j++)
			buf[j] = (uint8_t)rand();
		int before = resets;
		bool wr = rand() & 1;
		i8042_io(&k, off, buf, len, wr);
		if (len != 1 && !wr)
			for (uint32_t j = 0; j < len; j++)
				assert_int_equal(buf[j], 0xff);
		if (len != 1 || off == 1 || off == 2 || off == 3)
			assert_int_equal(resets, before);
	}
	/* Still answers after all that. */
	uint8_t v;
	assert_int_equal(kbd_cmd(&k, 0xaa, NULL, &v), 0);
	assert_int_equal(v, 0x55);
}

static uint32_t cfg_read(struct pci_host *p, uint32_t addr, unsigned off, unsigned len)
{
	uint8_t a[4], d[4] = { 0 };
	memcpy(a, &addr, 4);
	pci_host_io(p, 0, a, 4, true);
	pci_host_io(p, 4 + off, d, len, false);
	uint32_t v = 0;
	memcpy(&v, d, len);
	return v;
}

static void pci_host_bridge_only(void **s)
{
	(void)s;
	struct pci_host p;
	resets = 0;
	pci_host_init(&p, count_reset, NULL);
	/* Linux's conf1 check: the address register reads back a dword write. */
	uint8_t a[4] = { 0, 0, 0, 0x80 }, b[4] = { 0 };
	pci_host_io(&p, 0, a, 4, true);
	pci_host_io(&p, 0, b, 4, false);
	assert_memory_equal(a, b, 4);
	/* 00:00.0 is a host bridge (class 0x0600); every other function is absent. */
	assert_int_equal(cfg_read(&p, 0x80000000u, 0, 4), 0x00081b36u);
	assert_int_equal(cfg_read(&p, 0x80000008u, 2, 2), 0x0600);
	assert_int_equal(cfg_read(&p, 0x80000010u, 0, 4), 0); /* no BAR */
	assert_int_equal(cfg_read(&p, 0x80000800u, 0, 4), 0xffffffffu);
	assert_int_equal(cfg_read(&p, 0x80010000u, 0, 4), 0xffffffffu);
	assert_int_equal(cfg_read(&p, 0x00000000u, 0, 4), 0xffffffffu); /* enable bit clear */
	/* Every address, register, width and offset: in bounds, no reset. */
	for (uint32_t reg = 0; reg < 256; reg += 4)
		for (unsigned off = 0; off < 4; off++)
			for (unsigned len = 1; len <= 4 - off; len <<= 1) {
				cfg_read(&p, 0x80000000u | reg, off, len);
				cfg_read(&p, 0xffffffffu, off, len);
			}
	uint8_t junk[4] = { 0xff, 0xff, 0xff, 0xff };
	for (uint64_t off = 0; off < 8; off++)
		for (uint32_t len = 1; len <= 4 && off + len <= 8; len <<= 1)
			if (!(off == 1 && len == 1))
				pci_host_io(&p, off, junk, len, true);
	assert_int_equal(resets, 0);
	uint8_t r = 0x06;
	pci_host_io(&p, 1, &r, 1, true);
	assert_int_equal(resets, 1);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(i8042_linux_probe),
		cmocka_unit_test(i8042_hostile),
		cmocka_unit_test(pci_host_bridge_only),
	};
	return hearth_run_tests("legacy_dev", tests, sizeof(tests) / sizeof(tests[0]), argc, argv);
}
