#include "virtio_mmio.h"

#include <err.h>
#include <stdio.h>
#include <string.h>

#include "snapshot.h"
#include "vm.h"

#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_VENDOR_ID 0x00c
#define REG_DEV_FEATURES 0x010
#define REG_DEV_FEATURES_SEL 0x014
#define REG_DRV_FEATURES 0x020
#define REG_DRV_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_INT_STATUS 0x060
#define REG_INT_ACK 0x064
#define REG_STATUS 0x070
#define REG_QUEUE_DESC_LO 0x080
#define REG_QUEUE_DESC_HI 0x084
#define REG_QUEUE_DRIVER_LO 0x090
#define REG_QUEUE_DRIVER_HI 0x094
#define REG_QUEUE_DEVICE_LO 0x0a0
#define REG_QUEUE_DEVICE_HI 0x0a4
#define REG_CONFIG_GEN 0x0fc
#define REG_CONFIG 0x100

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */
#define HEARTH_VENDOR_ID 0x48525448  /* "HRTH" */

void virtio_mmio_init(struct virtio_mmio_dev *t, struct vm *vm, uint64_t base, unsigned irq,
		      const struct virtio_dev_ops *ops, void *dev)
{
	memset(t, 0, sizeof(*t));
	t->vm = vm;
	t->base = base;
	t->irq = irq;
	t->ops = ops;
	t->dev = dev;
	if (io_bus_add(&vm->mmio, base, VIRTIO_MMIO_SIZE, virtio_mmio_io, t) < 0 ||
	    vm->nvirtio >= VMM_MAX_VIRTIO)
		errx(VMM_EXIT_ERROR, "virtio-mmio: cannot register %s at 0x%llx", ops->name,
		     (unsigned long long)base);
	vm->virtio[vm->nvirtio++] = t;
}

int virtio_mmio_cmdline(const struct virtio_mmio_dev *t, char *cmdline, size_t cap)
{
	size_t len = strlen(cmdline);
	int n = snprintf(cmdline + len, cap - len, "%svirtio_mmio.device=4K@0x%llx:%u",
			 len ? " " : "", (unsigned long long)t->base, t->irq);
	return (n < 0 || (size_t)n >= cap - len) ? -1 : 0;
}

bool virtio_mmio_active(const struct virtio_mmio_dev *t)
{
	return (t->r.status & VIRTIO_STATUS_DRIVER_OK) && !t->r.failed;
}

void virtio_mmio_sync_irq(struct virtio_mmio_dev *t)
{
	vm_set_irq(t->vm, t->irq, t->r.int_status ? 1 : 0);
}

void virtio_mmio_interrupt(struct virtio_mmio_dev *t, uint32_t bits)
{
	t->r.int_status |= bits;
	virtio_mmio_sync_irq(t);
}

void virtio_mmio_fail(struct virtio_mmio_dev *t, const char *why)
{
	if (t->r.failed)
		return;
	t->r.failed = 1;
	t->fail_count++;
	fprintf(stderr, "hearth-vmm: %s device failed: %s; it needs a driver reset\n",
		t->ops->name, why);
	if (t->ops->reset)
		t->ops->reset(t->dev);
	t->r.status |= VIRTIO_STATUS_NEEDS_RESET;
	virtio_mmio_interrupt(t, VIRTIO_INT_CONFIG);
}

static void device_reset(struct virtio_mmio_dev *t)
{
	if (t->ops->reset)
		t->ops->reset(t->dev);
	memset(&t->r, 0, sizeof(t->r));
	memset(t->q, 0, sizeof(t->q));
	virtio_mmio_sync_irq(t);
}

static struct virtq *cur_queue(struct virtio_mmio_dev *t)
{
	return t->r.queue_sel < t->ops->nqueues ? &t->q[t->r.queue_sel] : NULL;
}

static uint32_t reg_read(struct virtio_mmio_dev *t, uint64_t off)
{
	struct virtq *q = cur_queue(t);
	uint64_t feats = t->ops->features | VIRTIO_F_VERSION_1;
	switch (off) {
	case REG_MAGIC: return VIRTIO_MMIO_MAGIC;
	case REG_VERSION: return 2;
	case REG_DEVICE_ID: return t->ops->device_id;
	case REG_VENDOR_ID: return HEARTH_VENDOR_ID;
	case REG_DEV_FEATURES:
		return t->r.dev_features_sel == 0 ? (uint32_t)feats
		       : t->r.dev_features_sel == 1 ? (uint32_t)(feats >> 32) : 0;
	case REG_QUEUE_NUM_MAX: return q ? t->ops->queue_max : 0;
	case REG_QUEUE_READY: return q ? q->ready : 0;
	case REG_INT_STATUS: return t->r.int_status;
	case REG_STATUS: return t->r.status;
	case REG_CONFIG_GEN: return t->r.config_gen;
	default: return 0;
	}
}

static void set_hi_lo(uint64_t *v, uint32_t val, bool hi)
{
	*v = hi ? (*v & 0xffffffffull) | ((uint64_t)val << 32) : (*v & ~0xffffffffull) | val;
}

static void status_write(struct virtio_mmio_dev *t, uint32_t v)
{
	if (v == 0) {
		device_reset(t);
		return;
	}
	uint32_t old = t->r.status;
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		/* Modern only: a driver that did not accept VERSION_1 cannot drive us. */
		uint64_t offered = t->ops->features | VIRTIO_F_VERSION_1;
		if (!(t->r.drv_features & VIRTIO_F_VERSION_1) || (t->r.drv_features & ~offered))
			v &= ~VIRTIO_STATUS_FEATURES_OK;
	}
	t->r.status = v | (old & VIRTIO_STATUS_NEEDS_RESET);
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK) && !t->r.failed &&
	    t->ops->activate)
		t->ops->activate(t->dev);
}

static void reg_write(struct virtio_mmio_dev *t, uint64_t off, uint32_t v)
{
	struct virtq *q = cur_queue(t);
	/* Queue layout may change only while the queue is disabled. */
	bool q_writable = q && !q->ready;
	switch (off) {
	case REG_DEV_FEATURES_SEL: t->r.dev_features_sel = v; break;
	case REG_DRV_FEATURES_SEL: t->r.drv_features_sel = v; break;
	case REG_DRV_FEATURES:
		if (!(t->r.status & VIRTIO_STATUS_FEATURES_OK) && t->r.drv_features_sel < 2)
			set_hi_lo(&t->r.drv_features, v, t->r.drv_features_sel == 1);
		break;
	case REG_QUEUE_SEL: t->r.queue_sel = v; break;
	case REG_QUEUE_NUM:
		if (q_writable)
			q->num = v;
		break;
	case REG_QUEUE_DESC_LO: case REG_QUEUE_DESC_HI:
		if (q_writable)
			set_hi_lo(&q->desc_gpa, v, off == REG_QUEUE_DESC_HI);
		break;
	case REG_QUEUE_DRIVER_LO: case REG_QUEUE_DRIVER_HI:
		if (q_writable)
			set_hi_lo(&q->avail_gpa, v, off == REG_QUEUE_DRIVER_HI);
		break;
	case REG_QUEUE_DEVICE_LO: case REG_QUEUE_DEVICE_HI:
		if (q_writable)
			set_hi_lo(&q->used_gpa, v, off == REG_QUEUE_DEVICE_HI);
		break;
	case REG_QUEUE_READY:
		if (!q)
			break;
		if (v & 1) {
			const char *why;
			if (q->num > t->ops->queue_max) {
				virtio_mmio_fail(t, "queue size above QueueNumMax");
				break;
			}
			if (virtq_check(q, &t->vm->mem, &why) < 0) {
				virtio_mmio_fail(t, why);
				break;
			}
			q->last_avail = q->used_idx = 0;
			q->ready = 1;
		} else {
			q->ready = 0;
		}
		break;
	case REG_QUEUE_NOTIFY:
		if (v < t->ops->nqueues && t->q[v].ready && virtio_mmio_active(t) && t->ops->notify)
			t->ops->notify(t->dev, v);
		break;
	case REG_INT_ACK:
		t->r.int_status &= ~v;
		virtio_mmio_sync_irq(t);
		break;
	case REG_STATUS: status_write(t, v); break;
	default: break;
	}
}

void virtio_mmio_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct virtio_mmio_dev *t = opaque;
	if (off >= REG_CONFIG) {
		if (is_write)
			return; /* no writable config fields in our devices */
		memset(data, 0, len);
		if (t->ops->config_read)
			t->ops->config_read(t->dev, (uint32_t)(off - REG_CONFIG), data, len);
		return;
	}
	/* Registers are 32-bit wide and aligned; anything else is ignored / reads 0. */
	if (len != 4 || (off & 3)) {
		if (!is_write)
			memset(data, 0, len);
		return;
	}
	if (is_write) {
		uint32_t v;
		memcpy(&v, data, 4);
		reg_write(t, off, v);
	} else {
		uint32_t v = reg_read(t, off);
		memcpy(data, &v, 4);
	}
}

int virtio_mmio_save(const struct virtio_mmio_dev *t, struct snap_builder *b)
{
	char name[32];
	snprintf(name, sizeof(name), "virtio@%llx", (unsigned long long)t->base);
	if (snap_node_begin(b, name) < 0 || snap_prop(b, "regs", &t->r, sizeof(t->r)) < 0 ||
	    snap_prop(b, "queues", t->q, sizeof(t->q)) < 0)
		return -1;
	if (t->ops->save && t->ops->save(t->dev, b) < 0)
		return -1;
	return snap_node_end(b);
}

int virtio_mmio_restore(struct virtio_mmio_dev *t, const struct snap *s, char *err, size_t errlen)
{
	char node[40];
	snprintf(node, sizeof(node), "/virtio@%llx", (unsigned long long)t->base);
	const void *r = snap_prop_get(s, node, "regs", sizeof(t->r), err, errlen);
	const void *q = r ? snap_prop_get(s, node, "queues", sizeof(t->q), err, errlen) : NULL;
	if (!q)
		return -1;
	memcpy(&t->r, r, sizeof(t->r));
	memcpy(t->q, q, sizeof(t->q));
	for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++) {
		const char *why;
		if (!t->q[i].ready)
			continue;
		if (i >= t->ops->nqueues || t->q[i].num > t->ops->queue_max ||
		    virtq_check(&t->q[i], &t->vm->mem, &why) < 0) {
			snprintf(err, errlen, "state file: %s queue %u is not a valid queue", node, i);
			return -1;
		}
	}
	if (t->ops->restore && t->ops->restore(t->dev, s, node, err, errlen) < 0)
		return -1;
	virtio_mmio_sync_irq(t);
	return 0;
}
