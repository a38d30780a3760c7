/*
 * virtio_mmio.h - the virtio-mmio transport, modern interface (version 2,
 * virtio 1.x section 4.2), kept apart from the devices behind it.
 *
 * A device supplies struct virtio_dev_ops; the transport owns the register
 * file, feature negotiation, the queues' configuration (struct virtq), the
 * interrupt status and the IRQ line. Devices pop and push chains through
 * virtq.h and raise interrupts through virtio_mmio_interrupt().
 *
 * Failed state: when a device (or the transport) finds the driver broke the
 * rules - a bad ring or chain - it calls virtio_mmio_fail(). The device then
 * sets DEVICE_NEEDS_RESET, raises a configuration-change interrupt, ignores
 * further notifications, and says why once on stderr. Only a driver reset
 * (status 0) brings it back. The VM and hearth-vmm carry on.
 *
 * Every handler runs with the VM's device lock held.
 */
#ifndef HEARTH_VMM_VIRTIO_MMIO_H
#define HEARTH_VMM_VIRTIO_MMIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtq.h"

#define VIRTIO_MMIO_SIZE 0x200
#define VIRTIO_MAX_QUEUES 4
#define VIRTIO_F_VERSION_1 (1ull << 32)

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_INT_USED 1
#define VIRTIO_INT_CONFIG 2

struct vm;
struct virtio_mmio_dev;
struct snap_builder;
struct snap;

struct virtio_dev_ops {
	const char *name;
	uint32_t device_id;
	uint64_t features; /* offered; the transport adds VIRTIO_F_VERSION_1 */
	unsigned nqueues;
	uint16_t queue_max;
	/* Device config space read (offset from 0x100); unset bytes read as 0. */
	void (*config_read)(void *dev, uint32_t off, uint8_t *data, uint32_t len);
	/* The driver kicked queue q (only while DRIVER_OK and not failed). */
	void (*notify)(void *dev, unsigned q);
	/* The driver reset the device, or the device failed: drop all device state. */
	void (*reset)(void *dev);
	/* The driver set DRIVER_OK. */
	void (*activate)(void *dev);
	/* Device state into / out of the transport's snapshot node (optional). */
	int (*save)(void *dev, struct snap_builder *b);
	int (*restore)(void *dev, const struct snap *s, const char *node, char *err, size_t errlen);
};

/* Transport registers; plain data so snapshots can save it. */
struct virtio_mmio_regs {
	uint32_t status;
	uint32_t dev_features_sel, drv_features_sel;
	uint32_t queue_sel;
	uint32_t int_status;
	uint32_t config_gen;
	uint64_t drv_features;
	uint32_t failed;
};

struct virtio_mmio_dev {
	struct vm *vm;
	uint64_t base;
	unsigned irq;
	const struct virtio_dev_ops *ops;
	void *dev;
	struct virtio_mmio_regs r;
	struct virtq q[VIRTIO_MAX_QUEUES];
	uint64_t fail_count;
};

/* Registers the device's MMIO window; fatal if the bus is full (set-up). */
void virtio_mmio_init(struct virtio_mmio_dev *t, struct vm *vm, uint64_t base, unsigned irq,
		      const struct virtio_dev_ops *ops, void *dev);
/* Appends " virtio_mmio.device=4K@0x...:irq" to cmdline (of capacity cap); -1 if it does not fit. */
int virtio_mmio_cmdline(const struct virtio_mmio_dev *t, char *cmdline, size_t cap);
void virtio_mmio_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
void virtio_mmio_interrupt(struct virtio_mmio_dev *t, uint32_t bits);
void virtio_mmio_fail(struct virtio_mmio_dev *t, const char *why);
/* DRIVER_OK and not failed. */
bool virtio_mmio_active(const struct virtio_mmio_dev *t);
/* Re-drives the IRQ line from r.int_status (after restore). */
void virtio_mmio_sync_irq(struct virtio_mmio_dev *t);
/*
 * Node "virtio@<base>": transport registers, every queue, then the device's
 * own properties. Restore re-checks each enabled queue against guest RAM.
 */
int virtio_mmio_save(const struct virtio_mmio_dev *t, struct snap_builder *b);
int virtio_mmio_restore(struct virtio_mmio_dev *t, const struct snap *s, char *err, size_t errlen);

#endif
