#include "vsock.h"

#include <err.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "snapshot.h"
#include "vm.h"

#define VSOCK_DEVICE_ID 19
#define Q_RX 0
#define Q_TX 1
#define Q_EVENT 2
#define VSOCK_TYPE_STREAM 1
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define OP_CREDIT_REQUEST 7
#define SHUTDOWN_RCV 1
#define SHUTDOWN_SEND 2
#define EVENT_TRANSPORT_RESET 0
#define HDR_LEN ((uint32_t)sizeof(struct vsock_hdr))
#define FIRST_HOST_PORT (1u << 30)
/*
 * A hybrid-socket client must finish its "CONNECT <port>\n" line, and the
 * guest must answer a host connection request, within this long; past it,
 * the slot is taken back when a new client or connection needs one.
 */
#define HALF_OPEN_MS 3000

static uint8_t scratch[VSOCK_MAX_PKT]; /* payload bounce buffer, used under the device lock */

static struct vsock_dev *dev_of(void *p)
{
	return p;
}

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- connections ---- */

static struct vsock_conn *conn_find(struct vsock_dev *d, uint32_t host_port, uint32_t guest_port)
{
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &d->conns[i];
		if (c->used && c->host_port == host_port && c->guest_port == guest_port)
			return c;
	}
	return NULL;
}

static void conn_event(struct ev_handler *h, uint32_t events);

/*
 * Clears a slot but for its handler, whose callback stays conn_event from
 * vsock_init on: events already taken from epoll may still name a slot that
 * was closed since - by an earlier handler of the same batch (one whose
 * flush failed the device closes every connection), or by a vCPU thread
 * while the main thread dispatches without the lock. They must find a
 * callable handler; conn_event drops them (no device, or not established).
 */
static void conn_wipe(struct vsock_conn *c)
{
	size_t h_at = offsetof(struct vsock_conn, h), h_end = h_at + sizeof(c->h);
	memset(c, 0, h_at);
	memset((char *)c + h_end, 0, sizeof(*c) - h_end);
	c->h.fd = -1;
}

static void conn_close(struct vsock_conn *c);
static bool send_ctrl(struct vsock_dev *d, struct vsock_conn *c, uint32_t host_port,
		      uint32_t guest_port, uint16_t op, uint32_t flags);

/*
 * With every slot taken, the oldest host request the guest has left
 * unanswered past HALF_OPEN_MS gives its slot up: the guest gets a reset for
 * it, the host client an EOF (refused).
 */
static void conn_reclaim(struct vsock_dev *d)
{
	struct vsock_conn *old = NULL;
	int64_t t = now_ms();
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &d->conns[i];
		if (c->used && c->host_initiated && !c->established &&
		    t - c->since_ms > HALF_OPEN_MS && (!old || c->since_ms < old->since_ms))
			old = c;
	}
	if (!old)
		return;
	fprintf(stderr, "hearth-vmm: vsock: the guest left a request to port %u unanswered for "
			"over %d ms; its slot is taken back\n", old->guest_port, HALF_OPEN_MS);
	send_ctrl(d, NULL, old->host_port, old->guest_port, OP_RST, 0);
	conn_close(old);
}

static struct vsock_conn *conn_alloc(struct vsock_dev *d, int fd, uint32_t host_port,
				     uint32_t guest_port)
{
	bool reclaimed = false;
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &d->conns[i];
		if (c->used) {
			if (i == VSOCK_MAX_CONNS - 1 && !reclaimed) {
				reclaimed = true;
				conn_reclaim(d);
				if (!virtio_mmio_active(&d->t))
					return NULL; /* the reset it sent failed the device */
				i = -1; /* look again */
			}
			continue;
		}
		conn_wipe(c);
		c->dev = d;
		c->used = true;
		c->fd = fd;
		c->host_port = host_port;
		c->guest_port = guest_port;
		d->stat_conns++;
		return c;
	}
	return NULL;
}

static void conn_close(struct vsock_conn *c)
{
	if (!c->used)
		return;
	if (c->h.fd >= 0)
		ev_del(c->dev->loop, &c->h);
	close(c->fd);
	free(c->tx);
	conn_wipe(c);
}

/*
 * Watches the host socket for what the connection can use now. With nothing
 * (rx blocked on the guest, no tx pending) the fd leaves the epoll set: epoll
 * reports EPOLLHUP and EPOLLERR even for an fd armed with no events, and a
 * host peer that closed while the guest withheld rx buffers would otherwise
 * wake the main thread in a loop.
 */
static void conn_watch(struct vsock_conn *c)
{
	if (!c->used)
		return; /* closed meanwhile: a control packet's flush failed the device */
	uint32_t ev = (c->rx_blocked ? 0 : EPOLLIN) | (c->tx_len ? EPOLLOUT : 0);
	if (!ev) {
		if (c->h.fd >= 0) {
			ev_del(c->dev->loop, &c->h);
			c->h.fd = -1;
		}
		return;
	}
	if (c->h.fd < 0) {
		if (ev_add(c->dev->loop, &c->h, c->fd, ev) < 0)
			warn("vsock: epoll_ctl (ADD) failed");
	} else {
		ev_mod(c->dev->loop, &c->h, ev);
	}
}

/* ---- device -> guest (rx queue) ---- */

static void fill_hdr(struct vsock_dev *d, struct vsock_hdr *h, const struct vsock_conn *c,
		     uint32_t host_port, uint32_t guest_port, uint16_t op, uint32_t flags)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = VSOCK_HOST_CID;
	h->dst_cid = d->guest_cid;
	h->src_port = host_port;
	h->dst_port = guest_port;
	h->type = VSOCK_TYPE_STREAM;
	h->op = op;
	h->flags = flags;
	h->buf_alloc = VSOCK_BUF_ALLOC;
	h->fwd_cnt = c ? c->fwd_cnt : 0;
}

/* Pops an rx chain able to hold at least a header: 1, 0 (none), -1 (device failed). */
static int rx_pop(struct vsock_dev *d, struct virtq_chain *ch)
{
	const char *why;
	int r = virtq_pop(&d->t.q[Q_RX], &d->vm->mem, ch, &why);
	if (r < 0) {
		virtio_mmio_fail(&d->t, why);
		return -1;
	}
	if (r == 1 && (ch->n_out || ch->in_len < HDR_LEN)) {
		virtio_mmio_fail(&d->t, "rx buffer not writable or smaller than a packet header");
		return -1;
	}
	return r;
}

static void flush_ctrl(struct vsock_dev *d)
{
	bool pushed = false;
	while (d->nctrl && virtio_mmio_active(&d->t) && d->t.q[Q_RX].ready) {
		struct virtq_chain ch;
		if (rx_pop(d, &ch) != 1)
			break;
		virtq_chain_write(&d->vm->mem, &ch, 0, &d->ctrlq[0], HDR_LEN);
		virtq_push(&d->t.q[Q_RX], &d->vm->mem, ch.head, HDR_LEN);
		memmove(&d->ctrlq[0], &d->ctrlq[1], (d->nctrl - 1) * sizeof(d->ctrlq[0]));
		d->nctrl--;
		pushed = true;
	}
	if (pushed)
		virtio_mmio_interrupt(&d->t, VIRTIO_INT_USED);
}

/*
 * Queues a control packet for the guest; false when the queue is full or the
 * device failed (it was not sent). Flushing it may find a bad rx ring and
 * fail the device, which closes every connection, c included: callers must
 * not assume c is still open.
 */
static bool send_ctrl(struct vsock_dev *d, struct vsock_conn *c, uint32_t host_port,
		      uint32_t guest_port, uint16_t op, uint32_t flags)
{
	if (!virtio_mmio_active(&d->t))
		return false; /* failed on the way here: it sends nothing until a reset */
	if (d->nctrl == VSOCK_CTRLQ) {
		fprintf(stderr, "hearth-vmm: vsock: control queue full, dropping op %u\n", op);
		return false;
	}
	fill_hdr(d, &d->ctrlq[d->nctrl++], c, host_port, guest_port, op, flags);
	if (c)
		c->fwd_cnt_announced = c->fwd_cnt;
	flush_ctrl(d);
	return true;
}

static void conn_reset(struct vsock_dev *d, struct vsock_conn *c)
{
	send_ctrl(d, NULL, c->host_port, c->guest_port, OP_RST, 0);
	conn_close(c);
}

/* Moves host socket bytes into guest rx buffers while credit and buffers last. */
static void conn_rx(struct vsock_dev *d, struct vsock_conn *c)
{
	bool pushed = false;
	while (c->used && c->established && !c->rx_blocked) {
		uint32_t credit = c->peer_buf_alloc - (c->rx_cnt - c->peer_fwd_cnt);
		if (credit > c->peer_buf_alloc)
			credit = 0; /* the guest's fwd_cnt ran ahead of what we sent: trust nothing */
		struct virtq_chain ch;
		int r = credit && d->nctrl == 0 && virtio_mmio_active(&d->t) ? rx_pop(d, &ch) : 0;
		if (r <= 0) {
			c->rx_blocked = true;
			conn_watch(c);
			break;
		}
		uint64_t room = ch.in_len - HDR_LEN;
		if (room == 0) {
			/*
			 * A buffer that holds a header and no data cannot carry a
			 * byte (a read of 0 would look like the host's EOF): leave
			 * it for control packets and wait for a bigger one.
			 */
			virtq_unpop(&d->t.q[Q_RX]);
			c->rx_blocked = true;
			conn_watch(c);
			break;
		}
		uint32_t n = credit;
		if (n > room)
			n = (uint32_t)room;
		if (n > VSOCK_MAX_PKT)
			n = VSOCK_MAX_PKT;
		ssize_t got = read(c->fd, scratch, n);
		if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
			virtq_unpop(&d->t.q[Q_RX]);
			break;
		}
		struct vsock_hdr h;
		if (got <= 0) {
			/* The host side closed: tell the guest, then forget the connection. */
			fill_hdr(d, &h, c, c->host_port, c->guest_port, OP_SHUTDOWN,
				 SHUTDOWN_RCV | SHUTDOWN_SEND);
			virtq_chain_write(&d->vm->mem, &ch, 0, &h, HDR_LEN);
			virtq_push(&d->t.q[Q_RX], &d->vm->mem, ch.head, HDR_LEN);
			pushed = true;
			conn_close(c);
			break;
		}
		fill_hdr(d, &h, c, c->host_port, c->guest_port, OP_RW, 0);
		h.len = (uint32_t)got;
		c->fwd_cnt_announced = c->fwd_cnt;
		virtq_chain_write(&d->vm->mem, &ch, 0, &h, HDR_LEN);
		virtq_chain_write(&d->vm->mem, &ch, HDR_LEN, scratch, (size_t)got);
		virtq_push(&d->t.q[Q_RX], &d->vm->mem, ch.head, HDR_LEN + (uint32_t)got);
		c->rx_cnt += (uint32_t)got;
		d->stat_rx_bytes += (uint64_t)got;
		pushed = true;
	}
	if (pushed)
		virtio_mmio_interrupt(&d->t, VIRTIO_INT_USED);
}

static void unblock_all(struct vsock_dev *d)
{
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vsock_conn *c = &d->conns[i];
		if (c->used && c->established && c->rx_blocked) {
			c->rx_blocked = false;
			conn_watch(c);
		}
	}
}

/* ---- guest -> device (tx queue) ---- */

static void conn_flush_tx(struct vsock_dev *d, struct vsock_conn *c)
{
	while (c->tx_len) {
		ssize_t n = write(c->fd, c->tx, c->tx_len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				conn_reset(d, c);
			break;
		}
		memmove(c->tx, c->tx + n, c->tx_len - (size_t)n);
		c->tx_len -= (uint32_t)n;
		c->fwd_cnt += (uint32_t)n;
	}
	if (c->used) {
		if (c->fwd_cnt - c->fwd_cnt_announced >= VSOCK_BUF_ALLOC / 4)
			send_ctrl(d, c, c->host_port, c->guest_port, OP_CREDIT_UPDATE, 0);
		conn_watch(c);
	}
}

static void conn_tx(struct vsock_dev *d, struct vsock_conn *c, const uint8_t *p, uint32_t len)
{
	if ((uint64_t)c->tx_len + len > VSOCK_BUF_ALLOC) {
		fprintf(stderr, "hearth-vmm: vsock: guest port %u overran its credit, resetting\n",
			c->guest_port);
		conn_reset(d, c);
		return;
	}
	if (c->tx_len + len > c->tx_cap) {
		uint32_t cap = c->tx_cap ? c->tx_cap : 4096;
		while (cap < c->tx_len + len)
			cap *= 2;
		uint8_t *nb = realloc(c->tx, cap);
		if (!nb) {
			conn_reset(d, c);
			return;
		}
		c->tx = nb;
		c->tx_cap = cap;
	}
	memcpy(c->tx + c->tx_len, p, len);
	c->tx_len += len;
	d->stat_tx_bytes += len;
	conn_flush_tx(d, c);
}

static void guest_connect(struct vsock_dev *d, const struct vsock_hdr *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", d->uds_path, h->dst_port);
	int fd = -1;
	if (n > 0 && (size_t)n < sizeof(sa.sun_path)) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			close(fd);
			fd = -1;
		}
	}
	struct vsock_conn *c = fd >= 0 ? conn_alloc(d, fd, h->dst_port, h->src_port) : NULL;
	if (!c) {
		if (fd >= 0)
			close(fd);
		send_ctrl(d, NULL, h->dst_port, h->src_port, OP_RST, 0);
		return;
	}
	c->established = true;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	if (!send_ctrl(d, c, c->host_port, c->guest_port, OP_RESPONSE, 0)) {
		conn_close(c); /* the guest never learns of it: it retries or times out */
		return;
	}
	conn_watch(c);
}

/* Returns -1 if the packet is malformed (the device must fail). */
static int handle_tx(struct vsock_dev *d, const struct virtq_chain *ch)
{
	struct vsock_hdr h;
	if (ch->out_len < HDR_LEN || virtq_chain_read(&d->vm->mem, ch, 0, &h, HDR_LEN) != HDR_LEN) {
		virtio_mmio_fail(&d->t, "tx packet shorter than its header");
		return -1;
	}
	if (h.len > VSOCK_MAX_PKT) {
		virtio_mmio_fail(&d->t, "tx packet length above the 64 KiB maximum");
		return -1;
	}
	if (h.len > ch->out_len - HDR_LEN) {
		virtio_mmio_fail(&d->t, "tx packet length beyond its buffers");
		return -1;
	}
	if (h.src_cid != d->guest_cid || h.dst_cid != VSOCK_HOST_CID)
		return 0; /* not addressed to us, or spoofed: drop */
	if (h.type != VSOCK_TYPE_STREAM) {
		send_ctrl(d, NULL, h.dst_port, h.src_port, OP_RST, 0);
		return 0;
	}
	struct vsock_conn *c = conn_find(d, h.dst_port, h.src_port);
	if (c) {
		c->peer_buf_alloc = h.buf_alloc;
		c->peer_fwd_cnt = h.fwd_cnt;
	}
	switch (h.op) {
	case OP_REQUEST:
		if (c)
			conn_reset(d, c);
		else
			guest_connect(d, &h);
		break;
	case OP_RESPONSE:
		if (c && c->host_initiated && !c->established) {
			char ok[32];
			int n = snprintf(ok, sizeof(ok), "OK %u\n", c->host_port);
			c->established = true;
			if (write(c->fd, ok, (size_t)n) != n)
				conn_reset(d, c);
			else
				conn_watch(c);
		} else if (c) {
			conn_reset(d, c);
		} else {
			send_ctrl(d, NULL, h.dst_port, h.src_port, OP_RST, 0);
		}
		break;
	case OP_RW:
		if (!c || !c->established) {
			send_ctrl(d, NULL, h.dst_port, h.src_port, OP_RST, 0);
			break;
		}
		if (h.len) {
			virtq_chain_read(&d->vm->mem, ch, HDR_LEN, scratch, h.len);
			conn_tx(d, c, scratch, h.len);
		}
		break;
	case OP_CREDIT_UPDATE:
		break; /* the credit fields were taken above */
	case OP_CREDIT_REQUEST:
		if (c)
			send_ctrl(d, c, c->host_port, c->guest_port, OP_CREDIT_UPDATE, 0);
		break;
	case OP_SHUTDOWN:
		if (!c)
			break;
		if ((h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND)) == (SHUTDOWN_RCV | SHUTDOWN_SEND)) {
			conn_reset(d, c);
		} else if (h.flags & SHUTDOWN_SEND) {
			if (!c->tx_len)
				shutdown(c->fd, SHUT_WR);
		}
		break;
	case OP_RST:
		if (c)
			conn_close(c);
		break;
	default:
		if (c)
			conn_reset(d, c);
		else
			send_ctrl(d, NULL, h.dst_port, h.src_port, OP_RST, 0);
		break;
	}
	return 0;
}

static void process_tx(struct vsock_dev *d)
{
	struct virtq *q = &d->t.q[Q_TX];
	bool pushed = false;
	/* Bounded: virtq_pop refuses an avail index more than a queue size ahead. */
	for (unsigned i = 0; i < q->num && virtio_mmio_active(&d->t); i++) {
		struct virtq_chain ch;
		const char *why;
		int r = virtq_pop(q, &d->vm->mem, &ch, &why);
		if (r < 0) {
			virtio_mmio_fail(&d->t, why);
			return;
		}
		if (r == 0)
			break;
		/*
		 * A packet can also fail the device indirectly: the reply it
		 * queued (send_ctrl) found a bad rx ring. A failed device
		 * completes nothing more, not even this chain.
		 */
		if (handle_tx(d, &ch) < 0 || !virtio_mmio_active(&d->t))
			return;
		virtq_push(q, &d->vm->mem, ch.head, 0);
		pushed = true;
	}
	if (pushed)
		virtio_mmio_interrupt(&d->t, VIRTIO_INT_USED);
}

static void post_reset_event(struct vsock_dev *d)
{
	struct virtq *q = &d->t.q[Q_EVENT];
	if (!d->reset_event_pending || !virtio_mmio_active(&d->t) || !q->ready)
		return;
	struct virtq_chain ch;
	const char *why;
	int r = virtq_pop(q, &d->vm->mem, &ch, &why);
	if (r < 0) {
		virtio_mmio_fail(&d->t, why);
		return;
	}
	if (r == 0)
		return;
	uint32_t ev = EVENT_TRANSPORT_RESET;
	if (virtq_chain_write(&d->vm->mem, &ch, 0, &ev, sizeof(ev)) != sizeof(ev)) {
		virtio_mmio_fail(&d->t, "event buffer too small");
		return;
	}
	virtq_push(q, &d->vm->mem, ch.head, sizeof(ev));
	d->reset_event_pending = false;
	d->reset_delivered = true;
	virtio_mmio_interrupt(&d->t, VIRTIO_INT_USED);
}

/*
 * The guest hands the event buffer back (and notifies) only after it has
 * handled the event: Linux resets every connected socket first. Host
 * connections accepted before that point would be reset along with the
 * stale ones, so the listening socket sleeps until now.
 */
static void reset_acked(struct vsock_dev *d)
{
	d->reset_delivered = false;
	if (d->listen_fd >= 0 && ev_mod(d->loop, &d->listen_h, EPOLLIN) < 0)
		virtio_mmio_fail(&d->t, "cannot re-arm the host listening socket");
}

static void vsock_notify(void *p, unsigned qi)
{
	struct vsock_dev *d = dev_of(p);
	if (qi == Q_TX)
		process_tx(d);
	if (qi == Q_EVENT) {
		if (d->reset_delivered)
			reset_acked(d);
		post_reset_event(d);
	}
	flush_ctrl(d);
	if (virtio_mmio_active(&d->t))
		unblock_all(d);
}

static void vsock_reset(void *p)
{
	struct vsock_dev *d = dev_of(p);
	for (int i = 0; i < VSOCK_MAX_CONNS; i++)
		conn_close(&d->conns[i]);
	d->nctrl = 0;
}

static void vsock_config_read(void *p, uint32_t off, uint8_t *data, uint32_t len)
{
	struct vsock_dev *d = dev_of(p);
	uint8_t cfg[8];
	memcpy(cfg, &d->guest_cid, 8);
	for (uint32_t i = 0; i < len; i++)
		data[i] = off + i < sizeof(cfg) ? cfg[off + i] : 0;
}

static int vsock_save(void *p, struct snap_builder *b)
{
	return snap_prop_u64(b, "vsock-cid", dev_of(p)->guest_cid);
}

static int vsock_restore(void *p, const struct snap *s, const char *node, char *err, size_t errlen)
{
	const void *cid = snap_prop_get(s, node, "vsock-cid", 8, err, errlen);
	if (!cid)
		return -1;
	uint64_t v;
	memcpy(&v, cid, 8);
	v = __builtin_bswap64(v); /* FDT cells are big-endian */
	if (v <= VSOCK_HOST_CID || v >= UINT32_MAX) {
		snprintf(err, errlen, "state file: vsock CID %llu is not a guest CID",
			 (unsigned long long)v);
		return -1;
	}
	dev_of(p)->guest_cid = v;
	return 0;
}

static const struct virtio_dev_ops vsock_ops = {
	.name = "virtio-vsock",
	.device_id = VSOCK_DEVICE_ID,
	.features = 0,
	.nqueues = 3,
	.queue_max = VIRTQ_MAX_SIZE,
	.config_read = vsock_config_read,
	.notify = vsock_notify,
	.reset = vsock_reset,
	.save = vsock_save,
	.restore = vsock_restore,
};

/* ---- host side: main thread ---- */

static void conn_event(struct ev_handler *h, uint32_t events)
{
	struct vsock_conn *c = (struct vsock_conn *)((char *)h - offsetof(struct vsock_conn, h));
	struct vsock_dev *d = c->dev;
	if (!d)
		return;
	pthread_mutex_lock(&d->vm->dev_lock);
	/* A stale event for a closed or reused slot only costs a read that finds nothing. */
	if (c->used && c->established) {
		if (events & EPOLLOUT)
			conn_flush_tx(d, c);
		if (c->used && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
			conn_rx(d, c);
	}
	pthread_mutex_unlock(&d->vm->dev_lock);
}

static void pending_close(struct vsock_pending *p)
{
	ev_del(p->dev->loop, &p->h);
	close(p->fd);
	p->used = false;
}

static void pending_event(struct ev_handler *h, uint32_t events)
{
	struct vsock_pending *p = (struct vsock_pending *)((char *)h - offsetof(struct vsock_pending, h));
	struct vsock_dev *d = p->dev;
	(void)events;
	if (!p->used)
		return;
	/* One byte at a time: bytes after the newline belong to the stream. */
	char ch;
	ssize_t n = read(p->fd, &ch, 1);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		pending_close(p);
		return;
	}
	if (ch != '\n') {
		if (p->len + 1 >= sizeof(p->line))
			pending_close(p); /* no valid request is this long */
		else
			p->line[p->len++] = ch;
		return;
	}
	p->line[p->len] = 0;
	char *end;
	unsigned long port = 0;
	bool ok = strncmp(p->line, "CONNECT ", 8) == 0 && p->line[8] >= '0' && p->line[8] <= '9';
	if (ok) {
		errno = 0;
		port = strtoul(p->line + 8, &end, 10);
		ok = !errno && *end == 0 && port <= UINT32_MAX;
	}
	pthread_mutex_lock(&d->vm->dev_lock);
	struct vsock_conn *c = NULL;
	if (ok && virtio_mmio_active(&d->t)) {
		uint32_t hp = d->next_host_port++;
		if (d->next_host_port < FIRST_HOST_PORT)
			d->next_host_port = FIRST_HOST_PORT;
		c = conn_alloc(d, p->fd, hp, (uint32_t)port);
	}
	if (c) {
		c->host_initiated = true;
		c->since_ms = now_ms();
		ev_del(d->loop, &p->h);
		p->used = false;
		/* The fd is the connection's now: a request that cannot be queued closes it. */
		if (!send_ctrl(d, c, c->host_port, c->guest_port, OP_REQUEST, 0))
			conn_close(c);
		pthread_mutex_unlock(&d->vm->dev_lock);
		return;
	}
	pthread_mutex_unlock(&d->vm->dev_lock);
	if (!c)
		pending_close(p);
}

static void listen_event(struct ev_handler *h, uint32_t events)
{
	struct vsock_dev *d = (struct vsock_dev *)((char *)h - offsetof(struct vsock_dev, listen_h));
	(void)events;
	int fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	/* Clients that never finished their request line in time make room. */
	int64_t t = now_ms();
	for (int i = 0; i < VSOCK_MAX_PENDING; i++)
		if (d->pending[i].used && t - d->pending[i].since_ms > HALF_OPEN_MS)
			pending_close(&d->pending[i]);
	for (int i = 0; i < VSOCK_MAX_PENDING; i++) {
		struct vsock_pending *p = &d->pending[i];
		if (p->used)
			continue;
		memset(p, 0, sizeof(*p));
		p->used = true;
		p->fd = fd;
		p->dev = d;
		p->since_ms = t;
		p->h.cb = pending_event;
		if (ev_add(d->loop, &p->h, fd, EPOLLIN) < 0) {
			close(fd);
			p->used = false;
		}
		return;
	}
	close(fd); /* too many half-open requests */
}

void vsock_init(struct vsock_dev *d, struct vm *vm, struct evloop *loop, uint64_t base,
		unsigned irq, uint64_t guest_cid, const char *uds_path)
{
	memset(d, 0, sizeof(*d));
	d->vm = vm;
	d->loop = loop;
	d->guest_cid = guest_cid;
	d->next_host_port = FIRST_HOST_PORT;
	d->listen_fd = -1;
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		d->conns[i].h.cb = conn_event; /* for good: see conn_wipe */
		d->conns[i].h.fd = -1;
	}
	virtio_mmio_init(&d->t, vm, base, irq, &vsock_ops, d);
	if (!uds_path)
		return;
	if (strlen(uds_path) + 12 > sizeof(d->uds_path))
		errx(VMM_EXIT_USAGE, "vsock socket path too long: %s", uds_path);
	char e[300];
	if (vsock_listen(d, uds_path, e, sizeof(e)) < 0)
		errx(VMM_EXIT_ERROR, "vsock: %s", e);
}

int vsock_listen(struct vsock_dev *d, const char *uds_path, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	/* Leave room for "_<port>" of guest-initiated connections. */
	if (d->listen_fd >= 0 || strlen(uds_path) + 12 > sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path too long (or already listening): %s", uds_path);
		return -1;
	}
	snprintf(d->uds_path, sizeof(d->uds_path), "%s", uds_path);
	strcpy(sa.sun_path, uds_path);
	unlink(uds_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	const char *step = "socket";
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		step = "bind";
	else if (fd >= 0 && listen(fd, 64) < 0)
		step = "listen";
	else if (fd >= 0)
		step = NULL;
	if (step) {
		snprintf(err, errlen, "%s %s failed: %s", step, uds_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		d->uds_path[0] = 0;
		return -1;
	}
	d->listen_fd = fd;
	d->listen_h.cb = listen_event;
	if (ev_add(d->loop, &d->listen_h, d->listen_fd, EPOLLIN) < 0) {
		snprintf(err, errlen, "epoll_ctl failed: %s", strerror(errno));
		return -1;
	}
	return 0;
}

void vsock_after_restore(struct vsock_dev *d)
{
	vsock_reset(d);
	d->reset_event_pending = true;
	if (d->listen_fd >= 0 && ev_mod(d->loop, &d->listen_h, 0) < 0)
		err(VMM_EXIT_ERROR, "vsock: epoll_ctl failed");
	post_reset_event(d);
}

void vsock_shutdown(struct vsock_dev *d)
{
	for (int i = 0; i < VSOCK_MAX_CONNS; i++)
		conn_close(&d->conns[i]);
	for (int i = 0; i < VSOCK_MAX_PENDING; i++)
		if (d->pending[i].used)
			pending_close(&d->pending[i]);
	if (d->listen_fd >= 0) {
		close(d->listen_fd);
		unlink(d->uds_path);
		d->listen_fd = -1;
	}
}
