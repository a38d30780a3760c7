/*
 * virtio.h - a minimal virtio-mmio (modern, version 2) driver for the test
 * guests: device discovery from the command line, feature negotiation
 * (VERSION_1 only), and split virtqueues of VQ_NUM entries in static memory.
 * Polling only: the guests never need an interrupt.
 */
#ifndef HEARTH_GUEST_VIRTIO_H
#define HEARTH_GUEST_VIRTIO_H

#include <stdint.h>

#define VQ_NUM 16

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

struct vq_mem {
	struct vring_desc desc[VQ_NUM];
	struct {
		uint16_t flags, idx, ring[VQ_NUM], used_event;
	} avail;
	uint8_t pad[4096 - 16 * VQ_NUM - 2 * (3 + VQ_NUM) - 2];
	struct {
		uint16_t flags, idx;
		struct {
			uint32_t id, len;
		} ring[VQ_NUM];
		uint16_t avail_event;
	} used;
} __attribute__((aligned(4096)));

struct vq {
	uint64_t base;
	unsigned index;
	struct vq_mem *m;
	uint16_t avail_idx;
	uint16_t last_used;
};

/* MMIO registers the guests use directly. */
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INT_STATUS 0x060
#define VIRTIO_MMIO_CONFIG 0x100
#define VIRTIO_STATUS_NEEDS_RESET 0x40

/* Finds the first "virtio_mmio.device=<size>@<base>:<irq>"; 0 if none. */
uint64_t vmmio_find(const char *cmdline);
/* The IRQ number of that device (after the ':'); 5 if absent. */
unsigned vmmio_irq(const char *cmdline);
/* Resets and negotiates; 0 on success, negative on a mismatch (printed). */
int vmmio_begin(uint64_t base, uint32_t device_id);
int vq_init(struct vq *q, uint64_t base, unsigned index, struct vq_mem *m);
void vmmio_driver_ok(uint64_t base);
uint32_t vmmio_status(uint64_t base);

/* Publishes descriptor chain head `head` (without notifying). */
void vq_publish(struct vq *q, uint16_t head);
void vq_notify(struct vq *q);
/* 1 and the used element if the device returned one, else 0. */
int vq_used(struct vq *q, uint32_t *id, uint32_t *len);

#endif
