#include "virtio.h"

#include "guest.h"

#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEV_FEATURES 0x010
#define R_DEV_FEATURES_SEL 0x014
#define R_DRV_FEATURES 0x020
#define R_DRV_FEATURES_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_DESC_LO 0x080
#define R_QUEUE_DESC_HI 0x084
#define R_QUEUE_DRIVER_LO 0x090
#define R_QUEUE_DRIVER_HI 0x094
#define R_QUEUE_DEVICE_LO 0x0a0
#define R_QUEUE_DEVICE_HI 0x0a4

uint64_t vmmio_find(const char *cmdline)
{
	size_t len;
	const char *v = cmdline_get(cmdline, "virtio_mmio.device", &len);
	if (!v)
		return 0;
	for (size_t i = 0; i + 1 < len; i++)
		if (v[i] == '@')
			return parse_u64(v + i + 1, len - i - 1);
	return 0;
}

unsigned vmmio_irq(const char *cmdline)
{
	size_t len;
	const char *v = cmdline_get(cmdline, "virtio_mmio.device", &len);
	for (size_t i = 0; v && i + 1 < len; i++)
		if (v[i] == ':')
			return (unsigned)parse_u64(v + i + 1, len - i - 1);
	return 5;
}

uint32_t vmmio_status(uint64_t base)
{
	return mmio_read32(base + VIRTIO_MMIO_STATUS);
}

int vmmio_begin(uint64_t base, uint32_t device_id)
{
	if (mmio_read32(base + R_MAGIC) != 0x74726976 || mmio_read32(base + R_VERSION) != 2 ||
	    mmio_read32(base + R_DEVICE_ID) != device_id) {
		puts_uart("virtio: no modern device of the expected type\n");
		return -1;
	}
	mmio_write32(base + VIRTIO_MMIO_STATUS, 0);
	mmio_write32(base + VIRTIO_MMIO_STATUS, 1 | 2);
	mmio_write32(base + R_DEV_FEATURES_SEL, 1);
	uint32_t hi = mmio_read32(base + R_DEV_FEATURES);
	if (!(hi & 1)) {
		puts_uart("virtio: device does not offer VERSION_1\n");
		return -1;
	}
	mmio_write32(base + R_DRV_FEATURES_SEL, 0);
	mmio_write32(base + R_DRV_FEATURES, 0);
	mmio_write32(base + R_DRV_FEATURES_SEL, 1);
	mmio_write32(base + R_DRV_FEATURES, 1);
	mmio_write32(base + VIRTIO_MMIO_STATUS, 1 | 2 | 8);
	if (!(mmio_read32(base + VIRTIO_MMIO_STATUS) & 8)) {
		puts_uart("virtio: FEATURES_OK refused\n");
		return -1;
	}
	return 0;
}

int vq_init(struct vq *q, uint64_t base, unsigned index, struct vq_mem *m)
{
	q->base = base;
	q->index = index;
	q->m = m;
	q->avail_idx = 0;
	q->last_used = 0;
	mmio_write32(base + R_QUEUE_SEL, index);
	if (mmio_read32(base + R_QUEUE_NUM_MAX) < VQ_NUM)
		return -1;
	mmio_write32(base + R_QUEUE_NUM, VQ_NUM);
	uint64_t d = (uint64_t)(uintptr_t)m->desc, a = (uint64_t)(uintptr_t)&m->avail,
		 u = (uint64_t)(uintptr_t)&m->used;
	mmio_write32(base + R_QUEUE_DESC_LO, (uint32_t)d);
	mmio_write32(base + R_QUEUE_DESC_HI, (uint32_t)(d >> 32));
	mmio_write32(base + R_QUEUE_DRIVER_LO, (uint32_t)a);
	mmio_write32(base + R_QUEUE_DRIVER_HI, (uint32_t)(a >> 32));
	mmio_write32(base + R_QUEUE_DEVICE_LO, (uint32_t)u);
	mmio_write32(base + R_QUEUE_DEVICE_HI, (uint32_t)(u >> 32));
	mmio_write32(base + R_QUEUE_READY, 1);
	return mmio_read32(base + R_QUEUE_READY) == 1 ? 0 : -1;
}

void vmmio_driver_ok(uint64_t base)
{
	mmio_write32(base + VIRTIO_MMIO_STATUS, 1 | 2 | 8 | 4);
}

void vq_publish(struct vq *q, uint16_t head)
{
	q->m->avail.ring[q->avail_idx % VQ_NUM] = head;
	mb();
	q->avail_idx++;
	*(volatile uint16_t *)&q->m->avail.idx = q->avail_idx;
	mb();
}

void vq_notify(struct vq *q)
{
	mmio_write32(q->base + VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

int vq_used(struct vq *q, uint32_t *id, uint32_t *len)
{
	uint16_t idx = *(volatile uint16_t *)&q->m->used.idx;
	if (idx == q->last_used)
		return 0;
	mb();
	*id = q->m->used.ring[q->last_used % VQ_NUM].id;
	*len = q->m->used.ring[q->last_used % VQ_NUM].len;
	q->last_used++;
	return 1;
}
