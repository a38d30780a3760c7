/*
 * virtq.h - the device side of a split virtqueue (virtio 1.x, section 2.7).
 *
 * Everything here reads guest memory through guest_mem.h only. The rings
 * live in guest RAM that other vCPUs may rewrite at any moment, so:
 *  - the ring addresses and size are host-side copies taken when the driver
 *    enabled the queue (and checked then to lie inside RAM);
 *  - a descriptor chain is copied out of the table once, descriptor by
 *    descriptor, and validated (in RAM, no loop, no indirect, readable before
 *    writable, at most VIRTQ_MAX_CHAIN descriptors and VIRTQ_MAX_CHAIN_BYTES
 *    bytes) before the device looks at a single payload byte;
 *  - a malformed ring or chain is reported as an error with a reason; the
 *    transport then fails the device (virtio_mmio.h). Nothing here aborts.
 *
 * The struct is plain data so a snapshot can save and restore it.
 */
#ifndef HEARTH_VMM_VIRTQ_H
#define HEARTH_VMM_VIRTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "guest_mem.h"

#define VIRTQ_MAX_SIZE 256
#define VIRTQ_MAX_CHAIN 16
#define VIRTQ_MAX_CHAIN_BYTES (256u * 1024u)

struct virtq {
	uint32_t num;      /* queue size chosen by the driver (power of two <= max) */
	uint32_t ready;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	uint16_t last_avail; /* next avail ring slot the device will consume */
	uint16_t used_idx;   /* the device's used index (what it last published) */
};

struct virtq_seg {
	uint64_t gpa;
	uint32_t len;
};

/* A validated copy of one descriptor chain. */
struct virtq_chain {
	uint16_t head;
	unsigned n_out, n_in; /* device-readable, then device-writable segments */
	struct virtq_seg out[VIRTQ_MAX_CHAIN], in[VIRTQ_MAX_CHAIN];
	uint64_t out_len, in_len;
};

/* Checks that an enabled queue's rings lie inside RAM; 0 or -EINVAL (*why set). */
int virtq_check(const struct virtq *q, const struct guest_mem *m, const char **why);
/* 1 = a chain was popped into *c, 0 = nothing available, -EINVAL = bad ring/chain (*why set). */
int virtq_pop(struct virtq *q, const struct guest_mem *m, struct virtq_chain *c, const char **why);
/* Publishes a used element for head with `written` bytes; 0 or -EFAULT. */
int virtq_push(struct virtq *q, const struct guest_mem *m, uint16_t head, uint32_t written);
/* Copies from the chain's readable part starting at off; returns bytes copied. */
size_t virtq_chain_read(const struct guest_mem *m, const struct virtq_chain *c, uint64_t off,
			void *buf, size_t len);
/* Copies into the chain's writable part starting at off; returns bytes copied. */
size_t virtq_chain_write(const struct guest_mem *m, const struct virtq_chain *c, uint64_t off,
			 const void *buf, size_t len);

#endif

/* Gives back the chain last popped (nothing was pushed for it since). */
static inline void virtq_unpop(struct virtq *q)
{
	q->last_avail--;
}
