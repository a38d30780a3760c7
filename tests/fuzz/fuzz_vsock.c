/*
 * fuzz_vsock - hearth-vmm's whole virtio-vsock device (host/vmm/vsock.c)
 * behind its virtio-mmio transport (virtio_mmio.c) and virtqueue walker
 * (virtq.c), driven in process the way a hostile guest and hostile host
 * clients can drive it. The input is a program of guest and host actions
 * (fuzz_vsock.h): MMIO accesses anywhere in the device window, a small
 * virtio driver's moves (init, post buffers, send packets with any header),
 * raw writes into guest RAM and the rings, host clients connecting to the
 * hybrid socket, writing, reading and closing, the clock moving, and a
 * snapshot restore. After every action hearth-vmm's event loop (evloop.c)
 * runs until it settles, as the VMM's main thread would.
 *
 * The device is set up as main.c sets it up (vsock_init on a struct vm with
 * its MMIO bus and device lock, an evloop, the hybrid socket in a private
 * directory). Two seams, for this build only, leave the device code as it is:
 *  - vm_set_irq() is defined here instead of kvm.c: there is no VM fd; it
 *    records the IRQ line level;
 *  - vsock.c is compiled with clock_gettime renamed to fuzz_clock_gettime
 *    (tests/fuzz/CMakeLists.txt): its half-open timeouts run on a clock the
 *    input moves, so runs are reproducible.
 * Guest RAM is FV_RAM_SIZE of anonymous memory between two PROT_NONE guard
 * regions (not gm_init_anon's mapping, which has no guards), reached by the
 * device only through guest_mem.c: an access one byte outside RAM faults.
 *
 * Invariants (each failure prints why and aborts):
 *  - the IRQ line always equals (InterruptStatus != 0), on GSI 5 only;
 *  - registers read back what the transport promises (magic, version,
 *    device id, status, the CID in config space, 0xff outside the window);
 *  - a failed device shows DEVICE_NEEDS_RESET, holds no connection and no
 *    queued control packet, raises no interrupt after the step that failed
 *    it, and neither consumes nor completes buffers: from the moment it
 *    fails until a reset, guest RAM is mapped read-only around every device
 *    step, so a single write faults;
 *  - the device walks enabled queues only, every enabled queue still passes
 *    virtq_check, and between events it keeps no popped chain (last_avail ==
 *    used_idx unless failed);
 *  - no two connections share a (host port, guest port) pair; a connection's
 *    tx backlog stays within what the device advertised;
 *  - while the driver has kept to the rules since its last init, every used
 *    element names a buffer it posted, within its length, and every rx packet
 *    is well formed (CIDs, type, op, buf_alloc, len);
 *  - the device's own snapshot saves, loads and restores into it;
 *  - the event loop settles (no readiness loop) and leaves the lock free;
 *  - after the actions, a driver reset and re-init bring the device back:
 *    a guest-initiated and a host-initiated connection each carry bytes;
 *  - after vsock_shutdown no file descriptor is left open (and, under
 *    libFuzzer, LeakSanitizer finds no leak).
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"
#include "fuzz_vsock.h"
#include "guest_mem.h"
#include "snapshot.h"
#include "virtio_mmio.h"
#include "vm.h"
#include "vsock.h"

/* virtio-mmio registers (virtio 1.x section 4.2.2). */
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
#define R_QUEUE_NOTIFY 0x050
#define R_INT_STATUS 0x060
#define R_INT_ACK 0x064
#define R_STATUS 0x070
#define R_DESC_LO 0x080
#define R_DESC_HI 0x084
#define R_DRIVER_LO 0x090
#define R_DRIVER_HI 0x094
#define R_DEVICE_LO 0x0a0
#define R_DEVICE_HI 0x0a4
#define R_CONFIG_GEN 0x0fc
#define R_CONFIG 0x100

#define MMIO_BASE 0xd0000000ull /* as main.c */
#define IRQ 5
#define GUARD (64u << 10)
#define NQ 3
#define HDR ((uint32_t)sizeof(struct vsock_hdr))
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define MAX_PEERS 48
#define MAX_ACTIONS 400
#define PUMP_MAX 1000
#define FD_SPAN 512
#define GPORT 7777
#define NLOG 128

static const uint32_t regs[] = {
	R_STATUS, R_QUEUE_SEL, R_QUEUE_NUM, R_QUEUE_READY, R_QUEUE_NOTIFY, R_INT_ACK,
	R_DESC_LO, R_DESC_HI, R_DRIVER_LO, R_DRIVER_HI, R_DEVICE_LO, R_DEVICE_HI,
	R_DRV_FEATURES, R_DRV_FEATURES_SEL, R_DEV_FEATURES_SEL, R_QUEUE_NUM_MAX, R_CONFIG_GEN,
	R_MAGIC,
};

/* The harness driver's view of one queue. */
struct dchain {
	bool busy;
	unsigned n;
	uint16_t d[VIRTQ_MAX_CHAIN];
	uint64_t addr[VIRTQ_MAX_CHAIN];
	uint32_t len[VIRTQ_MAX_CHAIN];
	bool write[VIRTQ_MAX_CHAIN];
	uint32_t total;
};

struct dq {
	uint32_t num; /* 0: not set up by the driver */
	uint16_t avail_idx, used_seen;
	uint16_t freel[VIRTQ_MAX_SIZE];
	unsigned nfree;
	struct dchain ch[VIRTQ_MAX_SIZE];
};

struct seg {
	uint64_t addr; /* ignored for slot segments */
	uint32_t len;
	bool write, slot;
	const uint8_t *src; /* copied into the buffer once it has an address */
};

struct rxpkt {
	struct vsock_hdr h;
	uint8_t data[8];
};

/* Host-side state of the device before one step, for the checks after it. */
struct before {
	bool failed;
	uint32_t ready[NQ];
	uint16_t last_avail[NQ], used_idx[NQ];
};

struct rd {
	const uint8_t *p;
	size_t n, off;
};

static struct {
	struct vm vm;
	struct evloop loop;
	struct vsock_dev dev;
	uint8_t *ram;
	char dir[64], uds[100];
	int lis[2]; /* the host services guests connect to (<uds>_<port>) */
	int report_fd;
	bool trace; /* FUZZ_VSOCK_TRACE set: print each action */
	int peer[MAX_PEERS]; /* hybrid-socket clients and accepted guest connections */
	int npeers;
	int64_t clock_ms;
	int irq_level;
	bool in_step, ro, fail_seen;
	uint64_t step, fail_step; /* device steps run; the one that failed it */
	uint32_t fail_int;
	bool taint; /* the driver broke its own rules since its last init */
	struct dq q[NQ];
	struct vsock_hdr last_rx;
	struct rxpkt log[NLOG];
	unsigned nlog;
	struct {
		uint32_t g, h, bytes;
	} tup[64];
	unsigned ntup;
} g;

static uint8_t img[HDR + 65536 + 64];
static uint8_t iobuf[1 << 16];

static void need(bool ok, const char *what)
{
	if (ok)
		return;
	dprintf(g.report_fd, "fuzz_vsock: invariant broken: %s\n", what);
	abort();
}

/* ---- seams ---- */

int fuzz_clock_gettime(clockid_t id, struct timespec *ts);
int fuzz_clock_gettime(clockid_t id, struct timespec *ts)
{
	(void)id;
	ts->tv_sec = 1000 + g.clock_ms / 1000;
	ts->tv_nsec = (long)(g.clock_ms % 1000) * 1000000;
	return 0;
}

static void ram_protect(bool ro)
{
	if (g.ro == ro)
		return;
	if (mprotect(g.ram, FV_RAM_SIZE, ro ? PROT_READ : PROT_READ | PROT_WRITE) < 0)
		err(1, "mprotect");
	g.ro = ro;
}

void vm_set_irq(struct vm *vm, unsigned gsi, int level)
{
	const struct virtio_mmio_regs *r = &g.dev.t.r;

	need(vm == &g.vm && gsi == IRQ, "an interrupt on a line that is not the device's");
	g.irq_level = level;
	if (!r->failed) {
		g.fail_seen = false;
		return;
	}
	/*
	 * The first call after failing is the config-change interrupt it owes;
	 * the step that failed it may still signal buffers it used before
	 * (their used entries are in RAM already). Later steps signal nothing.
	 */
	if (!g.fail_seen)
		g.fail_step = g.step;
	if (g.step != g.fail_step)
		need(!(r->int_status & ~g.fail_int), "a failed device raised an interrupt");
	g.fail_seen = true;
	g.fail_int = r->int_status;
	if (g.in_step)
		ram_protect(true); /* from here on this step may not write RAM */
}

/* ---- input ---- */

static uint8_t g8(struct rd *r)
{
	return r->off < r->n ? r->p[r->off++] : 0;
}

static uint16_t g16(struct rd *r)
{
	uint16_t v = g8(r);
	return (uint16_t)(v | g8(r) << 8);
}

static uint32_t g32(struct rd *r)
{
	uint32_t v = g16(r);
	return v | (uint32_t)g16(r) << 16;
}

static uint64_t g64(struct rd *r)
{
	uint64_t v = g32(r);
	return v | (uint64_t)g32(r) << 32;
}

/* ---- guest RAM as the driver sees it ---- */

static void ram_put(uint64_t gpa, const void *src, size_t n)
{
	if (gpa > FV_RAM_SIZE || n > FV_RAM_SIZE - gpa)
		abort(); /* a harness bug, not the device's */
	memcpy(g.ram + gpa, src, n);
}

static void ram_get(uint64_t gpa, void *dst, size_t n)
{
	if (gpa > FV_RAM_SIZE || n > FV_RAM_SIZE - gpa)
		abort();
	memcpy(dst, g.ram + gpa, n);
}

static uint16_t ram16(uint64_t gpa)
{
	uint16_t v;
	ram_get(gpa, &v, 2);
	return v;
}

/* ---- device steps ---- */

static void check_state(const struct before *b)
{
	const struct vsock_dev *d = &g.dev;
	const struct virtio_mmio_dev *t = &d->t;
	const char *why;

	need(g.irq_level == (t->r.int_status != 0), "the IRQ line disagrees with InterruptStatus");
	need(!(t->r.int_status & ~(uint32_t)(VIRTIO_INT_USED | VIRTIO_INT_CONFIG)),
	     "unknown InterruptStatus bits");
	need(d->nctrl <= VSOCK_CTRLQ, "control queue overflow");
	if (t->r.failed) {
		need(t->r.status & VIRTIO_STATUS_NEEDS_RESET,
		     "a failed device does not show DEVICE_NEEDS_RESET");
		need(d->nctrl == 0, "a failed device holds control packets");
	}
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		const struct vsock_conn *c = &d->conns[i];
		if (!c->used)
			continue;
		need(!t->r.failed, "a failed device keeps a connection");
		need(c->dev == d && c->fd >= 0, "a connection without its device or socket");
		need(c->tx_len <= VSOCK_BUF_ALLOC && c->tx_len <= c->tx_cap,
		     "a connection buffers more than the device advertised");
		for (int j = i + 1; j < VSOCK_MAX_CONNS; j++)
			need(!d->conns[j].used || d->conns[j].host_port != c->host_port ||
				     d->conns[j].guest_port != c->guest_port,
			     "two connections share a (host port, guest port) pair");
	}
	for (int i = 0; i < NQ; i++) {
		const struct virtq *v = &t->q[i];
		bool moved = v->last_avail != b->last_avail[i] || v->used_idx != b->used_idx[i];
		if (moved && (v->last_avail || v->used_idx)) {
			need(b->ready[i] || v->ready, "the device walked a disabled queue");
			need(!b->failed, "a failed device consumed or completed buffers");
		}
		if (v->ready)
			need(virtq_check(v, &g.vm.mem, &why) == 0, "an enabled queue left guest RAM");
		need(t->r.failed || v->last_avail == v->used_idx,
		     "the device kept a chain it popped between events");
	}
}

static void step_begin(struct before *b)
{
	const struct virtio_mmio_dev *t = &g.dev.t;

	b->failed = t->r.failed;
	for (int i = 0; i < NQ; i++) {
		b->ready[i] = t->q[i].ready;
		b->last_avail[i] = t->q[i].last_avail;
		b->used_idx[i] = t->q[i].used_idx;
	}
	if (b->failed)
		ram_protect(true);
	g.in_step = true;
	g.step++;
}

static void step_end(const struct before *b)
{
	g.in_step = false;
	ram_protect(false);
	check_state(b);
}

static void check_read(uint64_t off, uint32_t len, const uint8_t *data)
{
	const struct virtio_mmio_dev *t = &g.dev.t;
	uint32_t v = 0;

	if (off + len > VIRTIO_MMIO_SIZE) {
		for (uint32_t i = 0; i < len; i++)
			need(data[i] == 0xff, "an access outside the window hit a device");
		return;
	}
	if (off >= R_CONFIG) {
		for (uint32_t i = 0; i < len; i++) {
			uint64_t o = off - R_CONFIG + i;
			need(data[i] == (o < 8 ? (uint8_t)((uint64_t)FV_GUEST_CID >> (8 * o)) : 0),
			     "config space does not hold the guest CID");
		}
		return;
	}
	if (len != 4 || (off & 3)) {
		for (uint32_t i = 0; i < len; i++)
			need(data[i] == 0, "an unaligned register read is not 0");
		return;
	}
	memcpy(&v, data, 4);
	switch (off) {
	case R_MAGIC: need(v == 0x74726976, "bad magic"); break;
	case R_VERSION: need(v == 2, "not virtio-mmio version 2"); break;
	case R_DEVICE_ID: need(v == 19, "not a vsock device"); break;
	case R_STATUS:
		need(!t->r.failed || (v & VIRTIO_STATUS_NEEDS_RESET),
		     "a failed device's status lacks DEVICE_NEEDS_RESET");
		break;
	default: break;
	}
}

/* One MMIO access as a vCPU exit makes it (kvm.c handle_mmio). */
static void mmio(uint64_t off, uint8_t *data, uint32_t len, bool write)
{
	struct before b;

	step_begin(&b);
	pthread_mutex_lock(&g.vm.dev_lock);
	if (!io_bus_dispatch(&g.vm.mmio, MMIO_BASE + off, data, len, write) && !write)
		memset(data, 0xff, len);
	pthread_mutex_unlock(&g.vm.dev_lock);
	step_end(&b);
	if (!write)
		check_read(off, len, data);
}

static void reg_w(uint32_t off, uint32_t v)
{
	uint8_t b[4];
	memcpy(b, &v, 4);
	mmio(off, b, 4, true);
}

static uint32_t reg_r(uint32_t off)
{
	uint8_t b[4];
	uint32_t v;
	mmio(off, b, 4, false);
	memcpy(&v, b, 4);
	return v;
}

/* Writes the harness driver cannot account for. */
static bool reg_taints(uint64_t off, uint32_t len)
{
	return len == 4 && !(off & 3) && off < R_CONFIG && off != R_QUEUE_NOTIFY &&
	       off != R_INT_ACK && off != R_QUEUE_SEL && off != R_DEV_FEATURES_SEL &&
	       off != R_DRV_FEATURES_SEL;
}

/* ---- host peers ---- */

static void peer_add(int fd)
{
	if (g.npeers == MAX_PEERS)
		close(fd);
	else
		g.peer[g.npeers++] = fd;
}

static void peer_del(int i)
{
	close(g.peer[i]);
	g.peer[i] = g.peer[--g.npeers];
}

static void accept_peers(void)
{
	for (int i = 0; i < 2; i++) {
		int fd;
		while ((fd = accept4(g.lis[i], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
			peer_add(fd);
	}
}

/* hearth-vmm's main loop, until nothing is ready. */
static void pump(void)
{
	for (int i = 0;; i++) {
		struct before b;
		int n;

		accept_peers();
		step_begin(&b);
		n = ev_run_once(&g.loop, 0);
		step_end(&b);
		need(pthread_mutex_trylock(&g.vm.dev_lock) == 0, "an event left the device lock held");
		pthread_mutex_unlock(&g.vm.dev_lock);
		if (n == 0)
			break;
		need(i < PUMP_MAX, "the event loop does not settle (a readiness loop)");
	}
	accept_peers();
}

static int host_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		err(1, "socket");
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", g.uds);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd); /* backlog full: the device's listener sleeps after a restore */
		return -1;
	}
	return fd;
}

static void host_send(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k <= 0)
			return;
		p = (const uint8_t *)p + k;
		n -= (size_t)k;
	}
}

/* Reads what is there (up to cap bytes into buf, the rest discarded); returns bytes kept. */
static size_t host_drain(int fd, uint8_t *buf, size_t cap)
{
	size_t kept = 0;
	for (unsigned i = 0; i < 256; i++) {
		ssize_t k = read(fd, iobuf, sizeof(iobuf));
		if (k <= 0)
			break;
		size_t c = (size_t)k < cap - kept ? (size_t)k : cap - kept;
		memcpy(buf + kept, iobuf, c);
		kept += c;
	}
	return kept;
}

/* ---- the harness driver ---- */

static uint64_t slot_addr(unsigned q, unsigned d)
{
	return q == 0 ? FV_RX_BUF + 4096ull * d : q == 1 ? FV_TX_BUF + 4096ull * d : FV_EV_BUF + 64ull * d;
}

static void drv_init(uint8_t p)
{
	uint32_t size = 1u << ((p & 15) % 9);
	uint32_t st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	reg_w(R_STATUS, 0);
	reg_w(R_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	reg_w(R_STATUS, st);
	reg_w(R_DRV_FEATURES_SEL, 1);
	reg_w(R_DRV_FEATURES, p & 0x10 ? 0 : 1); /* VIRTIO_F_VERSION_1 */
	reg_w(R_DRV_FEATURES_SEL, 0);
	reg_w(R_DRV_FEATURES, 0);
	reg_w(R_STATUS, st | VIRTIO_STATUS_FEATURES_OK);
	st = reg_r(R_STATUS); /* a refused FEATURES_OK reads back clear; carry on regardless */
	if (p & 0x20)
		reg_w(R_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
	for (unsigned q = 0; q < NQ; q++) {
		struct dq *dq = &g.q[q];
		uint64_t ring = FV_RING(q);
		memset(dq, 0, sizeof(*dq));
		if ((q == 2 && (p & 0x40)) || (q == 0 && (p & 0x80)))
			continue;
		memset(g.ram + ring + 0x1000, 0, 0x2000); /* avail and used rings */
		reg_w(R_QUEUE_SEL, q);
		reg_w(R_QUEUE_NUM, size);
		reg_w(R_DESC_LO, (uint32_t)ring);
		reg_w(R_DESC_HI, 0);
		reg_w(R_DRIVER_LO, (uint32_t)ring + 0x1000);
		reg_w(R_DRIVER_HI, 0);
		reg_w(R_DEVICE_LO, (uint32_t)ring + 0x2000);
		reg_w(R_DEVICE_HI, 0);
		reg_w(R_QUEUE_READY, 1);
		dq->num = size;
		for (unsigned i = 0; i < size; i++)
			dq->freel[dq->nfree++] = (uint16_t)(size - 1 - i);
	}
	reg_w(R_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
	g.taint = false;
	g.ntup = 0; /* no connection survives a reset */
}

/* Bytes the guest has received on (guest port, host port): its honest fwd_cnt. */
static uint32_t *tup_bytes(uint32_t gport, uint32_t hport)
{
	unsigned i;
	for (i = 0; i < g.ntup; i++)
		if (g.tup[i].g == gport && g.tup[i].h == hport)
			return &g.tup[i].bytes;
	i = g.ntup < 64 ? g.ntup++ : (gport + hport) % 64;
	g.tup[i].g = gport;
	g.tup[i].h = hport;
	g.tup[i].bytes = 0;
	return &g.tup[i].bytes;
}

static void log_rx(const struct dchain *c, uint32_t len)
{
	uint8_t pkt[HDR + 8] = { 0 };
	uint32_t want = len < sizeof(pkt) ? len : (uint32_t)sizeof(pkt), got = 0;
	struct vsock_hdr h;

	for (unsigned i = 0; i < c->n && got < want; i++) {
		if (!c->write[i])
			continue;
		uint32_t k = c->len[i] < want - got ? c->len[i] : want - got;
		ram_get(c->addr[i], pkt + got, k);
		got += k;
	}
	if (got < HDR)
		return;
	memcpy(&h, pkt, HDR);
	if (!g.taint) {
		need(h.src_cid == VSOCK_HOST_CID && h.dst_cid == FV_GUEST_CID,
		     "an rx packet with the wrong CIDs");
		need(h.type == 1 && h.op >= 1 && h.op <= 6, "an rx packet with a bad type or op");
		need(h.buf_alloc == VSOCK_BUF_ALLOC, "an rx packet advertises another buffer size");
		need(len == HDR + h.len, "an rx packet's used length disagrees with its header");
		need((h.op == OP_RW) == (h.len > 0), "an rx packet carries data outside OP_RW");
	}
	g.last_rx = h;
	struct rxpkt *e = &g.log[g.nlog++ % NLOG];
	e->h = h;
	memcpy(e->data, pkt + HDR, 8);
	if (h.op == OP_RW)
		*tup_bytes(h.dst_port, h.src_port) += h.len;
	else if (h.op != OP_CREDIT_UPDATE)
		*tup_bytes(h.dst_port, h.src_port) = 0; /* a connection starts or ends */
}

/* The driver takes back what the device used; returns how many elements. */
static int drv_reap(unsigned q)
{
	struct dq *dq = &g.q[q];
	uint64_t used = FV_RING(q) + 0x2000;
	int n = 0;

	if (!dq->num)
		return 0;
	uint16_t idx = ram16(used + 2);
	while (dq->used_seen != idx) {
		uint32_t e[2];
		if ((uint16_t)(idx - dq->used_seen) > dq->num) {
			need(g.taint, "the device published more used elements than the queue holds");
			return n;
		}
		ram_get(used + 4 + 8ull * (dq->used_seen % dq->num), e, 8);
		dq->used_seen++;
		if (e[0] >= dq->num || !dq->ch[e[0]].busy) {
			need(g.taint, "a used element names a buffer the driver does not own");
			continue;
		}
		struct dchain *c = &dq->ch[e[0]];
		if (!g.taint) {
			need(e[1] <= c->total, "a used length beyond the buffer");
			if (q == 1)
				need(e[1] == 0, "a tx buffer came back with bytes written");
			if (q == 2)
				need(e[1] == 4 && ram16(c->addr[0]) == 0 && ram16(c->addr[0] + 2) == 0,
				     "an event that is not a transport reset");
			if (q == 0)
				need(e[1] >= HDR, "an rx buffer came back without a header");
		}
		if (q == 0)
			log_rx(c, e[1]);
		c->busy = false;
		for (unsigned i = c->n; i-- > 0;)
			dq->freel[dq->nfree++] = c->d[i];
		n++;
	}
	return n;
}

/* Takes descriptors for a chain and fills its buffers; -1 if the queue has no room. */
static int drv_alloc(unsigned q, const struct seg *s, unsigned n)
{
	struct dq *dq = &g.q[q];

	if (!dq->num || !n || n > VIRTQ_MAX_CHAIN || n > dq->nfree)
		return -1;
	uint16_t head = dq->freel[dq->nfree - 1];
	struct dchain *c = &dq->ch[head];
	memset(c, 0, sizeof(*c));
	for (unsigned k = 0; k < n; k++)
		c->d[k] = dq->freel[--dq->nfree];
	for (unsigned k = 0; k < n; k++) {
		uint8_t desc[16];
		uint64_t a = s[k].slot ? slot_addr(q, c->d[k]) : s[k].addr;
		uint16_t flags = (uint16_t)((s[k].write ? 2 : 0) | (k + 1 < n ? 1 : 0));
		uint16_t next = k + 1 < n ? c->d[k + 1] : 0;
		memcpy(desc, &a, 8);
		memcpy(desc + 8, &s[k].len, 4);
		memcpy(desc + 12, &flags, 2);
		memcpy(desc + 14, &next, 2);
		ram_put(FV_RING(q) + 16ull * c->d[k], desc, 16);
		if (s[k].src)
			ram_put(a, s[k].src, s[k].len);
		c->addr[k] = a;
		c->len[k] = s[k].len;
		c->write[k] = s[k].write;
		c->total += s[k].len;
	}
	c->n = n;
	c->busy = true;
	return head;
}

static void drv_publish(unsigned q, uint16_t head)
{
	struct dq *dq = &g.q[q];
	uint64_t avail = FV_RING(q) + 0x1000;

	ram_put(avail + 4 + 2ull * (dq->avail_idx % dq->num), &head, 2);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	dq->avail_idx++;
	ram_put(avail + 2, &dq->avail_idx, 2);
}

static void drv_post_rx(unsigned count, uint32_t len, bool hdr_apart)
{
	drv_reap(0);
	for (unsigned i = 0; i < count; i++) {
		struct seg s[VIRTQ_MAX_CHAIN];
		unsigned n = 0;
		uint32_t left = len;
		if (hdr_apart && left > HDR) {
			s[n++] = (struct seg){ .len = HDR, .write = true, .slot = true };
			left -= HDR;
		}
		while (left && n < VIRTQ_MAX_CHAIN) {
			uint32_t k = left < 4096 ? left : 4096;
			s[n++] = (struct seg){ .len = k, .write = true, .slot = true };
			left -= k;
		}
		int head = drv_alloc(0, s, n);
		if (head < 0)
			return;
		drv_publish(0, (uint16_t)head);
	}
}

static void drv_post_event(unsigned count, uint32_t len, bool readable)
{
	drv_reap(2);
	for (unsigned i = 0; i < count; i++) {
		struct seg s = { .len = len, .write = !readable, .slot = true };
		int head = drv_alloc(2, &s, 1);
		if (head < 0)
			return;
		drv_publish(2, (uint16_t)head);
	}
}

/*
 * Puts the packet in img (header + payload) on the tx queue. layout: 0 one
 * descriptor, 1 header + payload, 2 header split at `split`, 3 payload in two.
 */
static void drv_tx(const struct vsock_hdr *h, uint32_t plen, unsigned layout, uint8_t split,
		   bool extra_w)
{
	struct seg s[4];
	unsigned n = 0;
	uint32_t all = HDR + plen;

	drv_reap(1);
	memcpy(img, h, HDR);
	switch (layout) {
	case 0:
		if (all <= 4096)
			s[n++] = (struct seg){ .len = all, .slot = true, .src = img };
		else
			s[n++] = (struct seg){ .addr = FV_BULK, .len = all, .src = img };
		break;
	case 1:
	case 3:
		s[n++] = (struct seg){ .len = HDR, .slot = true, .src = img };
		if (layout == 1 || plen < 2) {
			s[n++] = (struct seg){ .addr = FV_BULK, .len = plen, .src = img + HDR };
		} else {
			s[n++] = (struct seg){ .addr = FV_BULK, .len = plen / 2, .src = img + HDR };
			s[n++] = (struct seg){ .addr = FV_BULK + 0x80000, .len = plen - plen / 2,
					       .src = img + HDR + plen / 2 };
		}
		break;
	default: {
		uint32_t k = split % (HDR + 1);
		s[n++] = (struct seg){ .len = k, .slot = true, .src = img };
		s[n++] = (struct seg){ .addr = FV_BULK, .len = all - k, .src = img + k };
		break;
	}
	}
	if (extra_w)
		s[n++] = (struct seg){ .len = 64, .write = true, .slot = true };
	int head = drv_alloc(1, s, n);
	if (head >= 0)
		drv_publish(1, (uint16_t)head);
}


static struct vsock_hdr mkhdr(uint16_t op, uint32_t gport, uint32_t hport, uint32_t len)
{
	struct vsock_hdr h;
	memset(&h, 0, sizeof(h));
	h.src_cid = FV_GUEST_CID;
	h.dst_cid = VSOCK_HOST_CID;
	h.src_port = gport;
	h.dst_port = hport;
	h.len = len;
	h.type = 1;
	h.op = op;
	h.buf_alloc = VSOCK_BUF_ALLOC;
	if (op == OP_REQUEST)
		*tup_bytes(gport, hport) = 0;
	h.fwd_cnt = *tup_bytes(gport, hport);
	return h;
}

/* ---- actions ---- */

static uint32_t port(struct rd *r)
{
	uint8_t v = g8(r);
	switch (v) {
	case 0: return FV_HPORT_A;
	case 1: return FV_HPORT_B;
	case 2: return g.last_rx.src_port;
	case 3: return g.last_rx.dst_port;
	case 4: return GPORT;
	case 5: return 1u << 30;
	case 6: return 4242;
	case 7: return 0xffffffffu;
	default: return v < 0xf0 ? v : g32(r);
	}
}

static void act_mmio(struct rd *r)
{
	uint8_t m = g8(r);
	uint32_t len = 1u << (m & 3);
	uint16_t o = g16(r);
	uint64_t off = m & 4 ? o : (uint64_t)(o & 0x1ff);
	uint8_t data[8] = { 0 };

	if (m & 8) {
		uint64_t v = len <= 4 ? g32(r) : g64(r);
		memcpy(data, &v, len);
		if (reg_taints(off, len))
			g.taint = true;
	}
	mmio(off, data, len, m & 8);
}

static void act_tx(struct rd *r)
{
	uint8_t b = g8(r);
	uint16_t op = b & 0x80 ? g16(r) : b & 7;
	uint32_t src = port(r), dst = port(r);
	uint8_t m = g8(r);
	uint32_t rawlen = (m & 3) == 1 ? g32(r) : 0;
	struct vsock_hdr h = mkhdr(op, src, dst, 0);

	if (m & 4) {
		h.src_cid = g64(r);
		h.dst_cid = g64(r);
	}
	if (m & 8)
		h.type = g16(r);
	unsigned layout = (m >> 4) & 3;
	uint8_t split = layout == 2 ? g8(r) : 0;
	h.flags = g8(r);
	uint8_t c = g8(r);
	switch (c & 3) {
	case 0: h.buf_alloc = VSOCK_BUF_ALLOC; break;
	case 1: h.buf_alloc = 4096; break;
	case 2: h.buf_alloc = 0; break;
	default: h.buf_alloc = g32(r); break;
	}
	switch ((c >> 2) & 3) {
	case 0: break;
	case 1: h.fwd_cnt = 0; break;
	case 2: h.fwd_cnt = g32(r); break;
	default: h.fwd_cnt += g16(r); break;
	}
	uint32_t plen = g16(r);
	uint8_t seed = g8(r);
	switch (m & 3) {
	case 0: h.len = plen; break;
	case 1: h.len = rawlen; break;
	case 2: h.len = plen + 1; break;
	default: h.len = 0; break;
	}
	for (uint32_t i = 0; i < plen; i++)
		img[HDR + i] = (uint8_t)(seed + i);
	drv_tx(&h, plen, layout, split, m & 0x80);
	if (!(m & 0x40))
		reg_w(R_QUEUE_NOTIFY, 1);
}

static void act_poke(struct rd *r)
{
	uint8_t s = g8(r);
	unsigned q = s % NQ, field = s / NQ % 8;
	uint16_t i = g16(r) % VIRTQ_MAX_SIZE;
	uint64_t v = g64(r), ring = FV_RING(q);

	g.taint = true;
	switch (field) {
	case 0: ram_put(ring + 16ull * i, &v, 8); break;
	case 1: ram_put(ring + 16ull * i + 8, &v, 4); break;
	case 2: ram_put(ring + 16ull * i + 12, &v, 2); break;
	case 3: ram_put(ring + 16ull * i + 14, &v, 2); break;
	case 4: ram_put(ring + 0x1000 + 2, &v, 2); break;
	case 5: ram_put(ring + 0x1000 + 4 + 2ull * i, &v, 2); break;
	case 6: ram_put(ring + 0x2000 + 2, &v, 2); break;
	default: ram_put(ring + 0x1000, &v, 2); break;
	}
}

static void act_host_connect(struct rd *r)
{
	uint32_t p = port(r);
	uint8_t mode = g8(r) & 3;
	char line[320];
	size_t n;

	switch (mode) {
	case 0: n = (size_t)snprintf(line, sizeof(line), "CONNECT %u\n", p); break;
	case 1: n = (size_t)snprintf(line, sizeof(line), "CONNECT %u", p); break;
	case 2:
		n = g8(r) % 40;
		for (size_t i = 0; i < n; i++)
			line[i] = (char)g8(r);
		break;
	default: {
		uint8_t extra = g8(r);
		n = (size_t)snprintf(line, sizeof(line), "CONNECT %u\n", p);
		for (unsigned i = 0; i < extra; i++)
			line[n++] = (char)('a' + i % 26);
		break;
	}
	}
	int fd = host_connect();
	if (fd < 0)
		return;
	host_send(fd, line, n);
	peer_add(fd);
}

/*
 * A snapshot of the device restored into it, as a pooled hearth-vmm restores
 * one (vm_snapshot.c): the transport's and the device's state through a real
 * state file, then vsock_after_restore.
 */
static void act_restore(void)
{
	struct snap_config cfg = { .mem_size = FV_RAM_SIZE, .vcpus = 1 };
	struct snap_builder *sb = snap_build_begin(&cfg);
	struct before b;
	struct snap s;
	char path[96], e[256];
	int rc;

	need(sb != NULL, "out of memory");
	snprintf(path, sizeof(path), "%s/state", g.dir);
	pthread_mutex_lock(&g.vm.dev_lock);
	rc = virtio_mmio_save(&g.dev.t, sb);
	pthread_mutex_unlock(&g.vm.dev_lock);
	need(rc == 0 && snap_build_write(sb, path, e, sizeof(e)) == 0, "the device's state does not save");
	snap_build_free(sb);
	need(snap_load(path, &s, e, sizeof(e)) == 0, "the device's saved state does not load");
	unlink(path);
	step_begin(&b);
	pthread_mutex_lock(&g.vm.dev_lock);
	rc = virtio_mmio_restore(&g.dev.t, &s, e, sizeof(e));
	if (rc == 0)
		vsock_after_restore(&g.dev);
	pthread_mutex_unlock(&g.vm.dev_lock);
	step_end(&b);
	snap_free(&s);
	need(rc == 0, "the device's own snapshot does not restore");
}

static void act(struct rd *r)
{
	uint8_t op = g8(r) % FV_OP_COUNT;

	if (g.trace)
		dprintf(g.report_fd, "fuzz_vsock: action %u at input offset %zu\n", op, r->off - 1);

	switch (op) {
	case FV_OP_MMIO: act_mmio(r); break;
	case FV_OP_REG: {
		uint32_t off = regs[g8(r) % (sizeof(regs) / sizeof(regs[0]))];
		uint32_t v = g32(r);
		if (reg_taints(off, 4))
			g.taint = true;
		if (off == R_MAGIC || off == R_QUEUE_NUM_MAX || off == R_CONFIG_GEN)
			(void)reg_r(off);
		else
			reg_w(off, v);
		break;
	}
	case FV_OP_INIT: drv_init(g8(r)); break;
	case FV_OP_RX_POST: {
		unsigned n = 1 + g8(r) % 16;
		uint32_t len = g16(r);
		uint8_t f = g8(r);
		drv_post_rx(n, len ? len : 4096, f & 2);
		if (!(f & 1))
			reg_w(R_QUEUE_NOTIFY, 0);
		break;
	}
	case FV_OP_EVENT_POST: {
		unsigned n = 1 + g8(r) % 4;
		uint32_t len = g8(r);
		uint8_t f = g8(r);
		drv_post_event(n, len ? (len < 64 ? len : 64) : 4, f & 2);
		if (!(f & 1))
			reg_w(R_QUEUE_NOTIFY, 2);
		break;
	}
	case FV_OP_TX: act_tx(r); break;
	case FV_OP_CONSUME:
		for (unsigned q = 0; q < NQ; q++)
			drv_reap(q);
		break;
	case FV_OP_NOTIFY: {
		uint8_t q = g8(r);
		reg_w(R_QUEUE_NOTIFY, q & 0x80 ? g32(r) : q & 3);
		break;
	}
	case FV_OP_RAM: {
		uint32_t a = g32(r) % FV_RAM_SIZE;
		unsigned n = g8(r) % 65;
		uint8_t b[64];
		for (unsigned i = 0; i < n; i++)
			b[i] = g8(r);
		if (n > FV_RAM_SIZE - a)
			n = FV_RAM_SIZE - a;
		ram_put(a, b, n);
		g.taint = true;
		break;
	}
	case FV_OP_POKE: act_poke(r); break;
	case FV_OP_HOST_CONNECT: act_host_connect(r); break;
	case FV_OP_HOST_WRITE: {
		uint8_t p = g8(r);
		uint16_t n = g16(r);
		if (!g.npeers)
			break;
		for (unsigned i = 0; i < n; i++)
			iobuf[i] = (uint8_t)(p + i);
		host_send(g.peer[p % g.npeers], iobuf, n);
		break;
	}
	case FV_OP_HOST_READ: {
		uint8_t p = g8(r);
		if (g.npeers)
			host_drain(g.peer[p % g.npeers], img, 0);
		break;
	}
	case FV_OP_HOST_CLOSE: {
		uint8_t p = g8(r), mode = g8(r) % 3;
		if (!g.npeers)
			break;
		int i = p % g.npeers;
		if (mode == 0)
			peer_del(i);
		else
			shutdown(g.peer[i], mode == 1 ? SHUT_WR : SHUT_RD);
		break;
	}
	case FV_OP_TIME: g.clock_ms += 4 * (int64_t)g16(r); break;
	case FV_OP_RESTORE: act_restore(); break;
	default: reg_w(R_INT_ACK, reg_r(R_INT_STATUS)); break;
	}
}

/* ---- after the actions: a reset brings the device back ---- */

/* An rx packet logged since index `since`. */
static const struct rxpkt *log_find(unsigned since, uint16_t op, uint32_t hport, uint32_t gport)
{
	if (g.nlog - since > NLOG)
		since = g.nlog - NLOG;
	for (unsigned i = since; i < g.nlog; i++) {
		const struct rxpkt *e = &g.log[i % NLOG];
		if (e->h.op == op && e->h.src_port == hport && e->h.dst_port == gport)
			return e;
	}
	return NULL;
}

static void send_simple(uint16_t op, uint32_t gport, uint32_t hport, const char *data)
{
	uint32_t n = data ? (uint32_t)strlen(data) : 0;
	struct vsock_hdr h = mkhdr(op, gport, hport, n);
	if (n)
		memcpy(img + HDR, data, n);
	drv_tx(&h, n, 0, 0, false);
	reg_w(R_QUEUE_NOTIFY, 1);
	pump();
}

/*
 * One round of a well-behaved guest: keep the rx queue full, take what came,
 * and answer connection requests as a guest listening on port 8888 alone
 * would. Host clients that sent a request and closed while the listening
 * socket slept (after a restore) are taken only now, and ask the guest first.
 */
static void serve_round(uint32_t *accepted, unsigned *naccepted)
{
	unsigned from = g.nlog;

	drv_post_rx(g.q[0].nfree, 4096, false); /* reaps first */
	reg_w(R_QUEUE_NOTIFY, 0);
	pump();
	drv_reap(0);
	for (unsigned i = from; i < g.nlog; i++) {
		struct vsock_hdr h = g.log[i % NLOG].h;
		if (h.op != OP_REQUEST)
			continue;
		if (h.dst_port == 8888 && *naccepted < 64) {
			accepted[(*naccepted)++] = h.src_port;
			send_simple(OP_RESPONSE, 8888, h.src_port, NULL);
		} else {
			send_simple(OP_RST, h.dst_port, h.src_port, NULL);
		}
	}
}

static void recover(void)
{
	const struct rxpkt *e = NULL;
	uint32_t accepted[64];
	unsigned naccepted = 0, mark;
	uint8_t got[64];
	size_t n = 0;

	while (g.npeers)
		peer_del(0);
	pump();
	reg_w(R_STATUS, 0);
	need(reg_r(R_STATUS) == 0 && g.irq_level == 0, "a driver reset left status or the IRQ set");
	drv_init(6); /* 64 entries per queue */
	need(reg_r(R_STATUS) == 15, "the device is not DRIVER_OK after a reset and re-init");
	/* Events first: after a restore the host side waits for the transport reset's ack. */
	drv_post_event(2, 4, false);
	reg_w(R_QUEUE_NOTIFY, 2);
	pump();
	if (drv_reap(2) > 0) {
		drv_post_event(1, 4, false);
		reg_w(R_QUEUE_NOTIFY, 2);
		pump();
	}

	/* Until the stale requests are answered and nothing more comes. */
	for (int i = 0; i < 16; i++) {
		mark = g.nlog;
		serve_round(accepted, &naccepted);
		if (g.nlog == mark)
			break;
	}

	/* guest -> the host service at FV_HPORT_A */
	mark = g.nlog;
	send_simple(OP_REQUEST, GPORT, FV_HPORT_A, NULL);
	need(g.npeers == 1, "after a reset, a guest connection does not reach the host");
	for (int i = 0; i < 16 && !log_find(mark, OP_RESPONSE, FV_HPORT_A, GPORT); i++)
		serve_round(accepted, &naccepted);
	need(log_find(mark, OP_RESPONSE, FV_HPORT_A, GPORT),
	     "after a reset, a guest connection is not accepted");
	send_simple(OP_RW, GPORT, FV_HPORT_A, "ping");
	n = host_drain(g.peer[0], got, sizeof(got));
	need(n == 4 && !memcmp(got, "ping", 4), "after a reset, guest bytes do not reach the host");
	mark = g.nlog;
	host_send(g.peer[0], "pong", 4);
	for (int i = 0; i < 16 && !(e = log_find(mark, OP_RW, FV_HPORT_A, GPORT)); i++)
		serve_round(accepted, &naccepted);
	need(e && e->h.len == 4 && !memcmp(e->data, "pong", 4),
	     "after a reset, host bytes do not reach the guest");

	/* a host client -> guest port 8888 */
	int fd = host_connect();
	need(fd >= 0, "after a reset, the hybrid socket refuses a client");
	peer_add(fd);
	host_send(fd, "CONNECT 8888\n", 13);
	n = 0;
	for (int i = 0; i < 16 && !memchr(got, '\n', n); i++) {
		serve_round(accepted, &naccepted);
		n += host_drain(fd, got + n, sizeof(got) - 1 - n);
	}
	got[n] = 0;
	unsigned hp = 0;
	bool found = false;
	if (sscanf((char *)got, "OK %u", &hp) == 1 && n == (size_t)snprintf(NULL, 0, "OK %u\n", hp))
		for (unsigned i = 0; i < naccepted; i++)
			found |= accepted[i] == hp;
	need(found, "after a reset, a host client is not answered with its connection's port");
}

/* ---- set-up ---- */

static void fd_map(uint8_t *open)
{
	static struct pollfd p[FD_SPAN];
	for (int i = 0; i < FD_SPAN; i++) {
		p[i].fd = i;
		p[i].events = 0;
	}
	if (poll(p, FD_SPAN, 0) < 0)
		err(1, "poll");
	for (int i = 0; i < FD_SPAN; i++)
		open[i] = !(p[i].revents & POLLNVAL);
}

static void cleanup(void)
{
	char path[160];
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s_%u", g.uds, i ? FV_HPORT_B : FV_HPORT_A);
		unlink(path);
	}
	unlink(g.uds);
	rmdir(g.dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	signal(SIGPIPE, SIG_IGN); /* as main.c: a closed peer is an error return */
	g.report_fd = dup(2);
	g.trace = getenv("FUZZ_VSOCK_TRACE") != NULL;
	/* tmpfs if there is one: the state files of FV_OP_RESTORE are fsync()ed. */
	const char *tmp = getenv("TMPDIR");
	if (!tmp || strlen(tmp) > 30)
		tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(g.dir, sizeof(g.dir), "%s/hfzv-XXXXXX", tmp);
	if (!mkdtemp(g.dir))
		err(1, "mkdtemp %s", g.dir);
	snprintf(g.uds, sizeof(g.uds), "%s/v", g.dir);
	atexit(cleanup);
	for (int i = 0; i < 2; i++) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", g.uds, i ? FV_HPORT_B : FV_HPORT_A);
		g.lis[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (g.lis[i] < 0 || bind(g.lis[i], (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    listen(g.lis[i], 128) < 0)
			err(1, "listening at %s", sa.sun_path);
	}
	uint8_t *p = mmap(NULL, FV_RAM_SIZE + 2 * GUARD, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		err(1, "mmap");
	g.ram = p + GUARD;
	if (mprotect(g.ram, FV_RAM_SIZE, PROT_READ | PROT_WRITE) < 0)
		err(1, "mprotect");
	pthread_mutex_init(&g.vm.dev_lock, NULL);
	g.vm.mem.host = g.ram;
	g.vm.mem.size = FV_RAM_SIZE;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t fds_before[FD_SPAN], fds_after[FD_SPAN];
	struct rd r = { data, size, 0 };

	fd_map(fds_before);
	madvise(g.ram, FV_RAM_SIZE, MADV_DONTNEED); /* zeroed RAM for every input */
	memset(g.q, 0, sizeof(g.q));
	memset(&g.last_rx, 0, sizeof(g.last_rx));
	g.npeers = 0;
	g.clock_ms = 0;
	g.irq_level = 0;
	g.fail_seen = false;
	g.taint = true; /* no driver yet */
	g.nlog = g.ntup = 0;
	g.vm.mmio.n = 0;
	g.vm.nvirtio = 0;
	ev_init(&g.loop);
	vsock_init(&g.dev, &g.vm, &g.loop, MMIO_BASE, IRQ, FV_GUEST_CID, g.uds);

	for (unsigned i = 0; i < MAX_ACTIONS && r.off < r.n; i++) {
		act(&r);
		pump();
	}
	if (g.trace)
		dprintf(g.report_fd,
			"fuzz_vsock: after the actions: failures %llu, connections %llu, "
			"bytes to guest %llu, to host %llu, rx packets %u\n",
			(unsigned long long)g.dev.t.fail_count, (unsigned long long)g.dev.stat_conns,
			(unsigned long long)g.dev.stat_rx_bytes,
			(unsigned long long)g.dev.stat_tx_bytes, g.nlog);
	recover();

	vsock_shutdown(&g.dev);
	while (g.npeers)
		peer_del(0);
	accept_peers();
	while (g.npeers)
		peer_del(0);
	close(g.loop.epfd);
	fd_map(fds_after);
	need(!memcmp(fds_before, fds_after, sizeof(fds_before)), "a file descriptor leaked");
	return 0;
}
