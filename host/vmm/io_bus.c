#include "io_bus.h"

int io_bus_add(struct io_bus *b, uint64_t base, uint64_t len, io_handler fn, void *opaque)
{
	if (b->n >= IO_BUS_MAX || len == 0 || base + len < base)
		return -1;
	for (int i = 0; i < b->n; i++)
		if (base < b->r[i].base + b->r[i].len && b->r[i].base < base + len)
			return -1;
	b->r[b->n++] = (struct io_range){ base, len, fn, opaque };
	return 0;
}

bool io_bus_dispatch(const struct io_bus *b, uint64_t addr, uint8_t *data, uint32_t len,
		     bool is_write)
{
	for (int i = 0; i < b->n; i++) {
		const struct io_range *r = &b->r[i];
		if (addr >= r->base && addr - r->base < r->len && len <= r->len - (addr - r->base)) {
			r->fn(r->opaque, addr - r->base, data, len, is_write);
			return true;
		}
	}
	return false;
}
