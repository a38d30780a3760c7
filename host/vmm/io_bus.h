/*
 * io_bus.h - routes port I/O and MMIO exits to the device that owns the range.
 *
 * Devices register fixed ranges at set-up (before vCPUs run); the table is
 * never changed afterwards, so lookups need no lock. Handlers are called from
 * vCPU threads with the VM's device lock held (see vm.h).
 */
#ifndef HEARTH_VMM_IO_BUS_H
#define HEARTH_VMM_IO_BUS_H

#include <stdbool.h>
#include <stdint.h>

/* offset is relative to the range base; len is 1, 2, 4 or 8. */
typedef void (*io_handler)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
			   bool is_write);

#define IO_BUS_MAX 16

struct io_range {
	uint64_t base, len;
	io_handler fn;
	void *opaque;
};

struct io_bus {
	struct io_range r[IO_BUS_MAX];
	int n;
};

/* Returns 0, or -1 if the table is full or the range overlaps another. */
int io_bus_add(struct io_bus *b, uint64_t base, uint64_t len, io_handler fn, void *opaque);
/* Returns false if no device owns addr (the caller decides what that means). */
bool io_bus_dispatch(const struct io_bus *b, uint64_t addr, uint8_t *data, uint32_t len,
		     bool is_write);

#endif
