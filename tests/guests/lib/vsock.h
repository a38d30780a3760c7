/*
 * vsock.h - a polling virtio-vsock driver for the test guests: RX_BUFS
 * receive buffers, TX_BUFS one-descriptor transmit buffers, one event buffer.
 */
#ifndef HEARTH_GUEST_VSOCK_H
#define HEARTH_GUEST_VSOCK_H

#include <stdint.h>

#include "virtio.h"

struct vsock_hdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port;
	uint32_t len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

#define VS_OP_REQUEST 1
#define VS_OP_RESPONSE 2
#define VS_OP_RST 3
#define VS_OP_SHUTDOWN 4
#define VS_OP_RW 5
#define VS_OP_CREDIT_UPDATE 6
#define VS_OP_CREDIT_REQUEST 7

#define VS_BUF 4096
#define VS_MAX_DATA (VS_BUF - sizeof(struct vsock_hdr))

/* Length of the rx buffers posted (default VS_BUF); set before vs_init. */
extern uint32_t vs_rx_len;
/* While set, consumed rx buffers are not posted again. */
extern int vs_rx_hold;

struct vsock_drv {
	uint64_t base;
	uint64_t cid;
	struct vq rx, tx, ev;
	uint32_t tx_busy; /* bitmap of tx buffers the device still owns */
};

/* Finds and starts the device; 0 or -1 (printed). */
int vs_init(struct vsock_drv *d, const char *cmdline);
/* Sends one packet (data may be NULL/0). Waits for a free tx buffer. */
void vs_send(struct vsock_drv *d, const struct vsock_hdr *h, const void *data, uint32_t len);
/*
 * Returns the next received packet (header then data in the same buffer) and
 * its buffer id, or NULL. Give the buffer back with vs_rx_done().
 */
const struct vsock_hdr *vs_recv(struct vsock_drv *d, uint32_t *id);
void vs_rx_done(struct vsock_drv *d, uint32_t id);
/* Takes back tx buffers the device has finished with. */
void vs_send_reclaim(struct vsock_drv *d);
/* Whether the device returned rx or event buffers not yet taken (no side effects). */
int vs_pending(struct vsock_drv *d);
/* 1 if the device posted a transport-reset event (the buffer is re-posted). */
int vs_event(struct vsock_drv *d);

/* Raw access for the hostile guest. */
extern struct vq_mem vs_tx_mem;
extern uint8_t vs_tx_bufs[][VS_BUF];

#endif
