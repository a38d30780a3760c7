/* pci_host.c - configuration mechanism #1 with a lone host bridge. See pci_host.h. */
#include "pci_host.h"

#include <string.h>

#define ADDR_ENABLE 0x80000000u
#define ADDR_BUS(a) (((a) >> 16) & 0xffu)
#define ADDR_DEVFN(a) (((a) >> 8) & 0xffu)
#define ADDR_REG(a) ((a) & 0xfcu)
#define DATA_OFF 4 /* 0xcfc - 0xcf8 */
#define RESET_CONTROL_OFF 1 /* 0xcf9 */
#define RESET_CONTROL_RESET 0x04

/*
 * The host bridge's configuration header: Red Hat's "QEMU PCIe host bridge"
 * id (1b36:0008), which no Linux quirk or MMCONFIG probe matches; class 0x0600
 * (host bridge), header type 0, no BARs, no capabilities, no interrupt pin.
 * Read-only: writes (BAR sizing included) change nothing.
 */
static const uint8_t bridge_cfg[16] = {
	0x36, 0x1b, 0x08, 0x00, /* vendor, device */
	0x00, 0x00, 0x00, 0x00, /* command, status */
	0x00, 0x00, 0x00, 0x06, /* revision, prog-if, subclass, class */
	0x00, 0x00, 0x00, 0x00, /* cache line, latency, header type 0, BIST */
};

void pci_host_init(struct pci_host *p, void (*reset)(void *ctx), void *ctx)
{
	memset(p, 0, sizeof(*p));
	p->reset = reset;
	p->ctx = ctx;
}

static uint8_t cfg_byte(uint32_t addr, unsigned reg)
{
	if (!(addr & ADDR_ENABLE) || ADDR_BUS(addr) != 0 || ADDR_DEVFN(addr) != 0)
		return 0xff;
	return reg < sizeof(bridge_cfg) ? bridge_cfg[reg] : 0;
}

void pci_host_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct pci_host *p = opaque;
	if (off == 0 && len == 4) {
		/* Only a full dword access reaches the address register, as on real chipsets. */
		if (is_write)
			memcpy(&p->addr, data, 4);
		else
			memcpy(data, &p->addr, 4);
		return;
	}
	if (off == RESET_CONTROL_OFF && len == 1) {
		if (is_write && (data[0] & RESET_CONTROL_RESET) && p->reset)
			p->reset(p->ctx);
		else if (!is_write)
			data[0] = 0;
		return;
	}
	if (off >= DATA_OFF) {
		/* io_bus keeps off + len within the 8 ports, so reg + i stays below 256. */
		unsigned reg = ADDR_REG(p->addr) + (unsigned)(off - DATA_OFF);
		for (uint32_t i = 0; i < len; i++)
			if (!is_write)
				data[i] = cfg_byte(p->addr, reg + i);
		return;
	}
	if (!is_write)
		memset(data, 0xff, len);
}
