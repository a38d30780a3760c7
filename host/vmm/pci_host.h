/*
 * pci_host.h - PCI configuration mechanism #1 (ports 0xcf8-0xcff) over a bus
 * that holds nothing but a host bridge at 00:00.0.
 *
 * hearth-vmm has no PCI devices (virtio is on MMIO), but a guest kernel built
 * with PCI support wants a way to read configuration space: without one,
 * x86 Linux logs "PCI: Fatal: No config space access function found", and
 * pci=off does not silence it (pci_arch_init() prints it whenever no access
 * method was set up, and pci=off stops it from probing for one). A host
 * bridge and nothing else is the smallest machine Linux's conf1 sanity check
 * accepts, and scanning the empty bus costs the guest a few dozen port exits.
 *
 * Port 0xcf9 is the PIIX-style reset control register: a write with bit 2
 * set resets the machine (Linux's reboot=pci, and its fallback once conf1
 * works), through the reset callback.
 *
 * Everything the guest writes is a latch or ignored; reads of configuration
 * space are bounded to the 256 bytes of the one function that exists, and
 * every other address reads all ones ("no device").
 */
#ifndef HEARTH_VMM_PCI_HOST_H
#define HEARTH_VMM_PCI_HOST_H

#include <stdbool.h>
#include <stdint.h>

#define PCI_HOST_PORT 0xcf8
#define PCI_HOST_PORTS 8

struct pci_host {
	uint32_t addr; /* configuration address register (0xcf8) */
	void (*reset)(void *ctx); /* called with the device lock held */
	void *ctx;
};

void pci_host_init(struct pci_host *p, void (*reset)(void *ctx), void *ctx);
/* io_bus handler for ports 0xcf8..0xcff (registered as one range of 8). */
void pci_host_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

#endif
