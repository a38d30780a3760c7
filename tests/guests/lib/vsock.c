#include "vsock.h"

#include "guest.h"

#define RX_BUFS 8
#define TX_BUFS 8

static struct vq_mem rx_mem, ev_mem;
struct vq_mem vs_tx_mem;
static uint8_t rx_bufs[RX_BUFS][VS_BUF] __attribute__((aligned(4096)));
uint8_t vs_tx_bufs[TX_BUFS][VS_BUF] __attribute__((aligned(4096)));
static uint32_t ev_buf;
uint32_t vs_rx_len = VS_BUF;
int vs_rx_hold;

static void post_rx(struct vsock_drv *d, uint32_t i)
{
	struct vring_desc *ds = &d->rx.m->desc[i];
	ds->addr = (uint64_t)(uintptr_t)rx_bufs[i];
	ds->len = vs_rx_len;
	ds->flags = VRING_DESC_F_WRITE;
	ds->next = 0;
	vq_publish(&d->rx, (uint16_t)i);
}

static void post_ev(struct vsock_drv *d)
{
	struct vring_desc *ds = &d->ev.m->desc[0];
	ds->addr = (uint64_t)(uintptr_t)&ev_buf;
	ds->len = sizeof(ev_buf);
	ds->flags = VRING_DESC_F_WRITE;
	vq_publish(&d->ev, 0);
}

int vs_init(struct vsock_drv *d, const char *cmdline)
{
	memset(d, 0, sizeof(*d));
	d->base = vmmio_find(cmdline);
	if (!d->base) {
		puts_uart("vsock: no virtio_mmio.device on the command line\n");
		return -1;
	}
	if (vmmio_begin(d->base, 19) < 0)
		return -1;
	if (vq_init(&d->rx, d->base, 0, &rx_mem) < 0 || vq_init(&d->tx, d->base, 1, &vs_tx_mem) < 0 ||
	    vq_init(&d->ev, d->base, 2, &ev_mem) < 0) {
		puts_uart("vsock: queue set-up failed\n");
		return -1;
	}
	uint32_t lo = mmio_read32(d->base + VIRTIO_MMIO_CONFIG);
	uint32_t hi = mmio_read32(d->base + VIRTIO_MMIO_CONFIG + 4);
	d->cid = ((uint64_t)hi << 32) | lo;
	vmmio_driver_ok(d->base);
	for (uint32_t i = 0; i < RX_BUFS; i++)
		post_rx(d, i);
	post_ev(d);
	vq_notify(&d->rx);
	vq_notify(&d->ev);
	return 0;
}

static void reclaim_tx(struct vsock_drv *d)
{
	uint32_t id, len;
	while (vq_used(&d->tx, &id, &len))
		if (id < TX_BUFS)
			d->tx_busy &= ~(1u << id);
}

void vs_send(struct vsock_drv *d, const struct vsock_hdr *h, const void *data, uint32_t len)
{
	uint32_t i;
	for (;;) {
		reclaim_tx(d);
		for (i = 0; i < TX_BUFS; i++)
			if (!(d->tx_busy & (1u << i)))
				break;
		if (i < TX_BUFS)
			break;
		__asm__ volatile("pause");
	}
	if (len > VS_MAX_DATA)
		len = VS_MAX_DATA;
	uint8_t *b = vs_tx_bufs[i];
	memcpy(b, h, sizeof(*h));
	struct vsock_hdr *ph = (struct vsock_hdr *)b;
	ph->len = len;
	if (len)
		memcpy(b + sizeof(*h), data, len);
	struct vring_desc *ds = &d->tx.m->desc[i];
	ds->addr = (uint64_t)(uintptr_t)b;
	ds->len = (uint32_t)sizeof(*h) + len;
	ds->flags = 0;
	ds->next = 0;
	d->tx_busy |= 1u << i;
	vq_publish(&d->tx, (uint16_t)i);
	vq_notify(&d->tx);
}

const struct vsock_hdr *vs_recv(struct vsock_drv *d, uint32_t *id)
{
	uint32_t len;
	if (!vq_used(&d->rx, id, &len) || *id >= RX_BUFS)
		return 0;
	return (const struct vsock_hdr *)rx_bufs[*id];
}

void vs_rx_done(struct vsock_drv *d, uint32_t id)
{
	if (vs_rx_hold)
		return;
	post_rx(d, id);
	vq_notify(&d->rx);
}

int vs_event(struct vsock_drv *d)
{
	uint32_t id, len;
	if (!vq_used(&d->ev, &id, &len))
		return 0;
	int reset = len >= 4 && ev_buf == 0;
	post_ev(d);
	vq_notify(&d->ev);
	return reset;
}

int vs_pending(struct vsock_drv *d)
{
	return *(volatile uint16_t *)&d->rx.m->used.idx != d->rx.last_used ||
	       *(volatile uint16_t *)&d->ev.m->used.idx != d->ev.last_used;
}

void vs_send_reclaim(struct vsock_drv *d)
{
	reclaim_tx(d);
}
