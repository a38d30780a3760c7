/*
 * The vsock echo guest: listens on vsock port 52 and speaks enough of the
 * guest side of the hearth agent protocol (proto/agent.proto) to answer
 * Hello, Ping and Invoke (the payload echoed back as the body), plus what a
 * host engine sends around them: Configure (-> Ready), Reseed (-> Ack) and
 * Shutdown (-> Ack, then the machine resets). Frames are a
 * 4-byte big-endian length plus one hearth.Envelope, encoded and decoded by
 * hand here because this guest has no libc (the host side uses protobuf-c).
 *
 * Command line:
 *   hearth.connect=P  first connect to host port P, send a greeting, print
 *                     what comes back (guest-initiated connection test);
 *   hearth.ticks=N    print "tick i" every so often, N times, while idle
 *                     (gives a snapshot something to be in the middle of);
 *   hearth.touch_mib=N  fill N MiB of RAM from 32 MiB up with data at boot,
 *                     and read every page of it on each Invoke before the
 *                     reply: a working set the host can record and prefetch
 *                     (needs --mem >= 32 + N);
 *   hearth.dirty=1    with touch_mib: write every page of it on each Invoke
 *                     instead (a clone's private copies: memory a cgroup counts);
 *   hearth.rx=hold    stop giving rx buffers back once a host connection is
 *                     accepted (a guest withholding buffers);
 *   hearth.rx=tiny    post rx buffers that hold a packet header and no data;
 *   hearth.mute=1     leave host connection requests unanswered;
 *   hearth.poll=1     never halt: spin on the rings instead of waiting for
 *                     the device interrupt;
 *   hearth.hostile=M  first break the virtqueue rules on purpose (M: outside,
 *                     loop, oversize, hugedesc, ring), check that the device
 *                     failed (DEVICE_NEEDS_RESET), then reset and re-initialise
 *                     it and serve as usual: hearth-vmm must survive all that.
 * It prints "invoke #n" for every Invoke, so restores show continuity.
 */
#include "lib/guest.h"
#include "lib/irq.h"
#include "lib/vsock.h"

#define AGENT_PORT 52
#define MAX_FRAME 16384
#define GUEST_BUF_ALLOC 65536
#define NCONN 4

struct conn {
	int used;
	uint32_t peer_port, local_port;
	uint32_t fwd_cnt, announced;
	uint32_t len;
	uint8_t buf[MAX_FRAME + 4];
};

static struct vsock_drv vs;
static struct conn conns[NCONN];
static uint64_t invokes, polls;
static int rx_hold_mode, mute;
#define TOUCH_BASE (32ull << 20)
static uint64_t touch_bytes;
static volatile uint64_t touch_sum;
static int touch_dirty;

/* One read (or write, hearth.dirty) per 4 KiB page of the working set. */
static void touch_working_set(void)
{
	uint64_t sum = 0;
	for (uint64_t off = 0; off < touch_bytes; off += 4096) {
		volatile uint64_t *w = (volatile uint64_t *)(uintptr_t)(TOUCH_BASE + off);
		sum += *w;
		if (touch_dirty)
			*w = sum;
	}
	touch_sum = sum;
}
static int shutdown_requested;
static uint8_t out[MAX_FRAME + 64], sub[MAX_FRAME + 32];

static void hdr_for(struct vsock_hdr *h, const struct conn *c, uint32_t peer, uint32_t local,
		    uint16_t op)
{
	memset(h, 0, sizeof(*h));
	h->src_cid = vs.cid;
	h->dst_cid = 2;
	h->src_port = local;
	h->dst_port = peer;
	h->type = 1;
	h->op = op;
	h->buf_alloc = GUEST_BUF_ALLOC;
	h->fwd_cnt = c ? c->fwd_cnt : 0;
}

static void send_op(struct conn *c, uint32_t peer, uint32_t local, uint16_t op, uint32_t flags)
{
	struct vsock_hdr h;
	hdr_for(&h, c, peer, local, op);
	h.flags = flags;
	if (c)
		c->announced = c->fwd_cnt;
	vs_send(&vs, &h, 0, 0);
}

static void send_data(struct conn *c, const uint8_t *p, uint32_t n)
{
	while (n) {
		uint32_t k = n > VS_MAX_DATA ? (uint32_t)VS_MAX_DATA : n;
		struct vsock_hdr h;
		hdr_for(&h, c, c->peer_port, c->local_port, VS_OP_RW);
		c->announced = c->fwd_cnt;
		vs_send(&vs, &h, p, k);
		p += k;
		n -= k;
	}
}

/* ---- protobuf, by hand ---- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static size_t put_field_varint(uint8_t *p, unsigned field, uint64_t v)
{
	size_t n = put_varint(p, (uint64_t)field << 3);
	return n + put_varint(p + n, v);
}

static size_t put_field_bytes(uint8_t *p, unsigned field, const void *b, size_t len)
{
	size_t n = put_varint(p, ((uint64_t)field << 3) | 2);
	n += put_varint(p + n, len);
	memcpy(p + n, b, len);
	return n + len;
}

/* Reads a varint; 0 on malformed input. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (unsigned s = 0; s < 64 && *p < end; s += 7) {
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7f) << s;
		if (!(b & 0x80))
			return 1;
	}
	return 0;
}

struct field {
	unsigned num, type;
	uint64_t v;
	const uint8_t *data;
	size_t len;
};

/* Next field of a message; 1, 0 at the end, -1 if malformed. */
static int next_field(const uint8_t **p, const uint8_t *end, struct field *f)
{
	if (*p >= end)
		return 0;
	uint64_t key;
	if (!get_varint(p, end, &key))
		return -1;
	f->num = (unsigned)(key >> 3);
	f->type = key & 7;
	f->data = 0;
	f->len = 0;
	switch (f->type) {
	case 0:
		return get_varint(p, end, &f->v) ? 1 : -1;
	case 1:
		if (end - *p < 8)
			return -1;
		*p += 8;
		return 1;
	case 5:
		if (end - *p < 4)
			return -1;
		*p += 4;
		return 1;
	case 2:
		if (!get_varint(p, end, &f->v) || f->v > (uint64_t)(end - *p))
			return -1;
		f->data = *p;
		f->len = (size_t)f->v;
		*p += f->len;
		return 1;
	default:
		return -1;
	}
}

static void reply(struct conn *c, uint64_t seq, unsigned field, const uint8_t *msg, size_t len)
{
	size_t n = 4;
	n += put_field_varint(out + n, 1, seq);
	n += put_field_bytes(out + n, field, msg, len);
	uint32_t body = (uint32_t)(n - 4);
	out[0] = (uint8_t)(body >> 24);
	out[1] = (uint8_t)(body >> 16);
	out[2] = (uint8_t)(body >> 8);
	out[3] = (uint8_t)body;
	send_data(c, out, (uint32_t)n);
}

static void reply_error(struct conn *c, uint64_t seq, unsigned code, const char *msg)
{
	size_t n = put_field_varint(sub, 1, code);
	n += put_field_bytes(sub + n, 2, msg, strlen(msg));
	reply(c, seq, 24, sub, n);
}

static void handle_envelope(struct conn *c, const uint8_t *p, size_t len)
{
	const uint8_t *end = p + len;
	struct field f, msg = { 0 };
	uint64_t seq = 0;
	int r;
	while ((r = next_field(&p, end, &f)) > 0) {
		if (f.num == 1 && f.type == 0)
			seq = f.v;
		else if (f.num >= 10 && f.type == 2)
			msg = f;
	}
	if (r < 0 || !msg.num) {
		reply_error(c, seq, 4, "bad envelope");
		return;
	}
	const uint8_t *q = msg.data, *qe = msg.data + msg.len;
	size_t n = 0;
	switch (msg.num) {
	case 10: { /* Hello */
		uint64_t ver = 0;
		while ((r = next_field(&q, qe, &f)) > 0)
			if (f.num == 1 && f.type == 0)
				ver = f.v;
		if (ver != 1) {
			reply_error(c, seq, 1, "protocol version mismatch");
			return;
		}
		static const char sw[] = "hearth-test-guest vsock_echo";
		n += put_field_varint(sub + n, 1, 1);
		n += put_field_varint(sub + n, 2, MAX_FRAME);
		n += put_field_bytes(sub + n, 3, sw, sizeof(sw) - 1);
		reply(c, seq, 10, sub, n);
		puts_uart("agent: hello\n");
		return;
	}
	case 14: { /* Ping -> Pong */
		uint64_t nonce = 0;
		while ((r = next_field(&q, qe, &f)) > 0)
			if (f.num == 1 && f.type == 0)
				nonce = f.v;
		n += put_field_varint(sub + n, 1, nonce);
		n += put_field_varint(sub + n, 2, polls + 1);
		reply(c, seq, 23, sub, n);
		return;
	}
	case 12: { /* Invoke -> InvokeResult echoing the payload */
		struct field id = { 0 }, payload = { 0 };
		while ((r = next_field(&q, qe, &f)) > 0) {
			if (f.num == 1 && f.type == 2)
				id = f;
			if (f.num == 2 && f.type == 2)
				payload = f;
		}
		if (r < 0) {
			reply_error(c, seq, 4, "bad invoke");
			return;
		}
		touch_working_set();
		n += put_field_bytes(sub + n, 1, id.data, id.len);
		if (payload.len)
			n += put_field_bytes(sub + n, 5, payload.data, payload.len);
		n += put_field_varint(sub + n, 8, 1);
		reply(c, seq, 21, sub, n);
		invokes++;
		puts_uart("invoke #");
		put_dec(invokes);
		puts_uart("\n");
		return;
	}
	case 11: /* Configure -> Ready: nothing to configure in an echo guest */
		n += put_field_bytes(sub + n, 2, "hearth-test-guest vsock_echo", 28);
		reply(c, seq, 20, sub, n);
		return;
	case 13: { /* Reseed -> Ack (there is no RNG here to feed, but the size rule holds) */
		size_t ent = 0;
		while ((r = next_field(&q, qe, &f)) > 0)
			if (f.num == 1 && f.type == 2)
				ent = f.len;
		if (r < 0 || ent < 32) {
			reply_error(c, seq, 7, "reseed needs at least 32 bytes of entropy");
			return;
		}
		reply(c, seq, 25, sub, 0);
		return;
	}
	case 15: /* Shutdown -> Ack, then power off (i8042 reset ends the VM) */
		reply(c, seq, 25, sub, 0);
		puts_uart("agent: shutdown\n");
		shutdown_requested = 1;
		return;
	default:
		reply_error(c, seq, 3, "this test guest does not handle that message");
		return;
	}
}

static void conn_data(struct conn *c, const uint8_t *p, uint32_t n)
{
	c->fwd_cnt += n;
	while (n) {
		uint32_t k = n;
		if (k > sizeof(c->buf) - c->len)
			k = (uint32_t)sizeof(c->buf) - c->len;
		memcpy(c->buf + c->len, p, k);
		c->len += k;
		p += k;
		n -= k;
		for (;;) {
			if (c->len < 4)
				break;
			uint32_t fl = ((uint32_t)c->buf[0] << 24) | ((uint32_t)c->buf[1] << 16) |
				      ((uint32_t)c->buf[2] << 8) | c->buf[3];
			if (fl > MAX_FRAME) {
				reply_error(c, 0, 5, "frame too large");
				send_op(c, c->peer_port, c->local_port, VS_OP_RST, 0);
				c->used = 0;
				return;
			}
			if (c->len < 4 + fl)
				break;
			handle_envelope(c, c->buf + 4, fl);
			memcpy(c->buf, c->buf + 4 + fl, c->len - 4 - fl);
			c->len -= 4 + fl;
		}
	}
	if (c->fwd_cnt - c->announced > GUEST_BUF_ALLOC / 2)
		send_op(c, c->peer_port, c->local_port, VS_OP_CREDIT_UPDATE, 0);
}

static struct conn *find(uint32_t peer, uint32_t local)
{
	for (int i = 0; i < NCONN; i++)
		if (conns[i].used && conns[i].peer_port == peer && conns[i].local_port == local)
			return &conns[i];
	return 0;
}

static struct conn *alloc(uint32_t peer, uint32_t local)
{
	for (int i = 0; i < NCONN; i++)
		if (!conns[i].used) {
			struct conn *c = &conns[i];
			/* Not the whole struct: clearing the 16 KiB buffer costs ~10^5 emulated instructions. */
			c->fwd_cnt = c->announced = c->len = 0;
			c->used = 1;
			c->peer_port = peer;
			c->local_port = local;
			return c;
		}
	return 0;
}

/* Handles one received packet. */
static void packet(const struct vsock_hdr *h)
{
	const uint8_t *data = (const uint8_t *)(h + 1);
	struct conn *c = find(h->src_port, h->dst_port);
	switch (h->op) {
	case VS_OP_REQUEST:
		if (mute) {
			puts_uart("mute: request ignored\n");
			break;
		}
		if (h->dst_port == AGENT_PORT && !c && (c = alloc(h->src_port, h->dst_port))) {
			send_op(c, c->peer_port, c->local_port, VS_OP_RESPONSE, 0);
			puts_uart("agent: connection from host port ");
			put_dec(h->src_port);
			puts_uart("\n");
			if (rx_hold_mode) {
				vs_rx_hold = 1;
				puts_uart("rx: holding buffers from now on\n");
			}
		} else {
			send_op(0, h->src_port, h->dst_port, VS_OP_RST, 0);
		}
		break;
	case VS_OP_RESPONSE:
		if (c)
			puts_uart("connected to host\n");
		break;
	case VS_OP_RW:
		if (vs_rx_hold)
			break; /* hearth.rx=hold: a guest that has stopped reading */
		if (!c) {
			send_op(0, h->src_port, h->dst_port, VS_OP_RST, 0);
			break;
		}
		if (c->local_port == AGENT_PORT) {
			conn_data(c, data, h->len);
		} else {
			c->fwd_cnt += h->len;
			puts_uart("guest-initiated got: ");
			putn_uart((const char *)data, h->len);
			send_op(c, c->peer_port, c->local_port, VS_OP_SHUTDOWN, 3);
			c->used = 0;
		}
		break;
	case VS_OP_CREDIT_REQUEST:
		if (c)
			send_op(c, c->peer_port, c->local_port, VS_OP_CREDIT_UPDATE, 0);
		break;
	case VS_OP_SHUTDOWN:
	case VS_OP_RST:
		if (h->op == VS_OP_SHUTDOWN)
			puts_uart("host shut the connection down\n");
		if (c) {
			if (h->op == VS_OP_SHUTDOWN)
				send_op(c, c->peer_port, c->local_port, VS_OP_RST, 0);
			c->used = 0;
		}
		break;
	default:
		break;
	}
}

static int streq(const char *a, size_t alen, const char *b)
{
	return alen == strlen(b) && memcmp(a, b, alen) == 0;
}

/* Posts one malformed tx chain; returns 0 if the mode is unknown. */
static int attack(const char *mode, size_t len)
{
	struct vring_desc *d = vs_tx_mem.desc;
	struct vsock_hdr h;
	hdr_for(&h, 0, 52, 52, VS_OP_RW);
	memcpy(vs_tx_bufs[0], &h, sizeof(h));
	d[0].addr = (uint64_t)(uintptr_t)vs_tx_bufs[0];
	d[0].len = sizeof(h);
	d[0].flags = 0;
	d[0].next = 0;
	if (streq(mode, len, "outside")) {
		d[0].addr = 0x7ff000000000ull; /* far beyond guest RAM */
	} else if (streq(mode, len, "loop")) {
		d[0].flags = VRING_DESC_F_NEXT;
		d[0].next = 1;
		d[1] = d[0];
		d[1].next = 0; /* 0 -> 1 -> 0 -> ... */
	} else if (streq(mode, len, "oversize")) {
		((struct vsock_hdr *)vs_tx_bufs[0])->len = 0x10000000; /* 256 MiB claimed */
	} else if (streq(mode, len, "hugedesc")) {
		d[0].len = 0xfffff000u; /* a length that wraps past the end of RAM */
	} else if (streq(mode, len, "ring")) {
		vs_tx_mem.avail.ring[0] = 0;
		mb();
		*(volatile uint16_t *)&vs_tx_mem.avail.idx = 1000; /* far more than queue size */
		mmio_write32(vs.base + VIRTIO_MMIO_QUEUE_NOTIFY, 1);
		return 1;
	} else {
		return 0;
	}
	vq_publish(&vs.tx, 0);
	vq_notify(&vs.tx);
	return 1;
}

static int have_work(void)
{
	return vs_pending(&vs);
}

void guest_main(const uint8_t *bp);
void guest_main(const uint8_t *bp)
{
	const char *cmd = bp_cmdline(bp);
	size_t rl;
	const char *rx = cmdline_get(cmd, "hearth.rx", &rl);
	if (rx && streq(rx, rl, "tiny"))
		vs_rx_len = sizeof(struct vsock_hdr);
	rx_hold_mode = rx && streq(rx, rl, "hold");
	mute = cmdline_get(cmd, "hearth.mute", &rl) != 0;
	if (vs_init(&vs, cmd) < 0)
		return;
	size_t hl;
	const char *hm = cmdline_get(cmd, "hearth.hostile", &hl);
	if (hm) {
		puts_uart("hostile: ");
		putn_uart(hm, hl);
		puts_uart("\n");
		if (!attack(hm, hl)) {
			puts_uart("hostile: unknown mode\n");
			return;
		}
		uint32_t st = vmmio_status(vs.base);
		puts_uart(st & VIRTIO_STATUS_NEEDS_RESET ? "hostile: device failed as expected\n"
							 : "hostile: device did NOT fail\n");
		if (vs_init(&vs, cmd) < 0)
			return;
		puts_uart(vmmio_status(vs.base) & VIRTIO_STATUS_NEEDS_RESET
				  ? "hostile: device still failed after reset\n"
				  : "hostile: device usable again after reset\n");
	}
	puts_uart("vsock echo guest ready, cid ");
	put_dec(vs.cid);
	puts_uart("\n");

	size_t len;
	const char *v = cmdline_get(cmd, "hearth.connect", &len);
	if (v) {
		uint32_t port = (uint32_t)parse_u64(v, len);
		struct conn *c = alloc(port, 1234);
		send_op(c, port, 1234, VS_OP_REQUEST, 0);
		static const char hi[] = "hello host, this is the guest\n";
		int sent = 0;
		for (uint64_t spins = 0; c->used && spins < 200000; spins++) {
			uint32_t id;
			const struct vsock_hdr *h = vs_recv(&vs, &id);
			if (!h)
				continue;
			if (h->op == VS_OP_RESPONSE && !sent && h->src_port == port) {
				send_data(c, (const uint8_t *)hi, sizeof(hi) - 1);
				sent = 1;
			} else if (h->op == VS_OP_RST && h->src_port == port) {
				puts_uart("guest-initiated connection refused\n");
				c->used = 0;
			} else {
				packet(h);
			}
			vs_rx_done(&vs, id);
		}
	}

	v = cmdline_get(cmd, "hearth.touch_mib", &len);
	touch_bytes = v ? parse_u64(v, len) << 20 : 0;
	touch_dirty = cmdline_get(cmd, "hearth.dirty", &len) != 0;
	for (uint64_t off = 0; off < touch_bytes; off += 4096)
		*(volatile uint64_t *)(uintptr_t)(TOUCH_BASE + off) = off * 2654435761u + 1;
	int poll_only = cmdline_get(cmd, "hearth.poll", &len) != 0;
	if (!poll_only)
		irq_setup_virtio(vs.base, vmmio_irq(cmd));
	v = cmdline_get(cmd, "hearth.ticks", &len);
	uint64_t ticks = v ? parse_u64(v, len) : 0, tick = 0;
	for (;;) {
		uint32_t id;
		const struct vsock_hdr *h = vs_recv(&vs, &id);
		if (h) {
			packet(h);
			vs_rx_done(&vs, id);
		}
		if (shutdown_requested) {
			/* Let the device take the Ack to the host before the machine goes away. */
			for (int i = 0; i < 100000 && vs.tx_busy; i++)
				vs_send_reclaim(&vs);
			guest_reset();
		}
		if (vs_event(&vs)) {
			/* Host sockets did not survive a snapshot restore: forget every connection. */
			for (int i = 0; i < NCONN; i++)
				conns[i].used = 0;
			puts_uart("transport reset\n");
		}
		polls++;
		if (tick < ticks && (polls & 0x3fff) == 0) {
			tick++;
			puts_uart("tick ");
			put_dec(tick);
			puts_uart("\n");
		}
		if ((polls & 0xfff) == 0 && (vmmio_status(vs.base) & VIRTIO_STATUS_NEEDS_RESET)) {
			puts_uart("vsock device failed\n");
			return;
		}
		/* Idle: sleep until the device interrupts, unless ticking or told to poll. */
		if (!poll_only && tick >= ticks && !h)
			irq_wait(have_work);
	}
}
