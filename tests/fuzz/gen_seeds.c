/*
 * gen_seeds - writes the generated seed corpora of the fuzz targets frame,
 * client, snapshot, virtq and vsock into DIR/<target>/ (tests/fuzz/corpus is where
 * they are committed): well-formed inputs that reach deep into each parser,
 * so the fuzzers start from the real formats instead of rediscovering them.
 *
 *   build/tests/fuzz/gen_seeds tests/fuzz/corpus
 */
#include <errno.h>
#include <libfdt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_vsock.h"
#include "msg.h"
#include "snapshot.h"

static const char *out_dir;

static void put(const char *target, const char *name, const void *a, size_t alen,
		const void *b, size_t blen)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", out_dir, target);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", out_dir, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(a, 1, alen, f) != alen || (blen && fwrite(b, 1, blen, f) != blen) ||
	    fclose(f)) {
		perror(path);
		exit(1);
	}
}

/* Appends one frame (header + packed env) to buf. */
static size_t frame(uint8_t *buf, size_t at, Hearth__Envelope *e)
{
	uint8_t *p;
	size_t n;

	if (msg_pack(e, &p, &n))
		exit(1);
	buf[at] = (uint8_t)(n >> 24);
	buf[at + 1] = (uint8_t)(n >> 16);
	buf[at + 2] = (uint8_t)(n >> 8);
	buf[at + 3] = (uint8_t)n;
	memcpy(buf + at + 4, p, n);
	free(p);
	return at + 4 + n;
}

static uint8_t fbuf[1 << 16];

static size_t env_hello(size_t at, uint64_t seq, uint32_t max)
{
	Hearth__Envelope e = HEARTH__ENVELOPE__INIT;
	Hearth__Hello h = HEARTH__HELLO__INIT;

	h.protocol_version = HEARTH_PROTOCOL_VERSION;
	h.max_frame = max;
	h.software = "hearth-agent 0.1.0";
	e.seq = seq;
	e.msg_case = HEARTH__ENVELOPE__MSG_HELLO;
	e.hello = &h;
	return frame(fbuf, at, &e);
}

static size_t env_result(size_t at, uint64_t seq, int status)
{
	Hearth__Envelope e = HEARTH__ENVELOPE__INIT;
	Hearth__InvokeResult r = HEARTH__INVOKE_RESULT__INIT;

	r.request_id = "req-1";
	r.status = status;
	r.exit_code = status ? 1 : 0;
	r.body.data = (uint8_t *)"{\"ok\":true}";
	r.body.len = 11;
	r.logs.data = (uint8_t *)"log line\n";
	r.logs.len = 9;
	r.duration_us = 1234;
	r.max_rss_kb = 2048;
	r.error = status ? "failed" : "";
	e.seq = seq;
	e.msg_case = HEARTH__ENVELOPE__MSG_INVOKE_RESULT;
	e.invoke_result = &r;
	return frame(fbuf, at, &e);
}

static size_t env_simple(size_t at, uint64_t seq, Hearth__Envelope__MsgCase which)
{
	Hearth__Envelope e = HEARTH__ENVELOPE__INIT;
	Hearth__Ready ready = HEARTH__READY__INIT;
	Hearth__Pong pong = HEARTH__PONG__INIT;
	Hearth__Ack ack = HEARTH__ACK__INIT;
	Hearth__Log log = HEARTH__LOG__INIT;
	Hearth__Error er = HEARTH__ERROR__INIT;
	Hearth__Ping ping = HEARTH__PING__INIT;
	Hearth__Reseed rs = HEARTH__RESEED__INIT;
	Hearth__Shutdown sd = HEARTH__SHUTDOWN__INIT;
	Hearth__Invoke inv = HEARTH__INVOKE__INIT;
	Hearth__Configure cf = HEARTH__CONFIGURE__INIT;
	Hearth__KeyValue kv = HEARTH__KEY_VALUE__INIT, *kvs[1] = { &kv };
	char *args[] = { "--a", "b" };

	e.seq = seq;
	e.msg_case = which;
	switch (which) {
	case HEARTH__ENVELOPE__MSG_READY: ready.init_duration_us = 5; ready.software = "x"; e.ready = &ready; break;
	case HEARTH__ENVELOPE__MSG_PONG: pong.nonce = 7; pong.queued = 1; pong.busy = 1; e.pong = &pong; break;
	case HEARTH__ENVELOPE__MSG_ACK: e.ack = &ack; break;
	case HEARTH__ENVELOPE__MSG_LOG: log.request_id = "req-1"; log.data.data = (uint8_t *)"l"; log.data.len = 1; e.log = &log; break;
	case HEARTH__ENVELOPE__MSG_ERROR: er.code = HEARTH__ERROR_CODE__ERR_BUSY; er.message = "busy"; e.error = &er; break;
	case HEARTH__ENVELOPE__MSG_PING: ping.nonce = 9; e.ping = &ping; break;
	case HEARTH__ENVELOPE__MSG_RESEED: rs.entropy.data = (uint8_t *)"0123456789abcdef0123456789abcdef"; rs.entropy.len = 32; e.reseed = &rs; break;
	case HEARTH__ENVELOPE__MSG_SHUTDOWN: e.shutdown = &sd; break;
	case HEARTH__ENVELOPE__MSG_INVOKE: inv.request_id = "r"; inv.payload.data = (uint8_t *)"{}"; inv.payload.len = 2; inv.timeout_ms = 100; e.invoke = &inv; break;
	case HEARTH__ENVELOPE__MSG_CONFIGURE:
		kv.key = "K"; kv.value = "V";
		cf.handler = "/var/task/h"; cf.n_args = 2; cf.args = args; cf.n_env = 1; cf.env = kvs;
		cf.workdir = "/var/task"; cf.timeout_ms = 3000; cf.init = "/var/task/init";
		e.configure = &cf;
		break;
	default: break;
	}
	return frame(fbuf, at, &e);
}

static void gen_frame(void)
{
	static const Hearth__Envelope__MsgCase all[] = {
		HEARTH__ENVELOPE__MSG_CONFIGURE, HEARTH__ENVELOPE__MSG_INVOKE,
		HEARTH__ENVELOPE__MSG_RESEED, HEARTH__ENVELOPE__MSG_PING,
		HEARTH__ENVELOPE__MSG_SHUTDOWN, HEARTH__ENVELOPE__MSG_READY,
		HEARTH__ENVELOPE__MSG_LOG, HEARTH__ENVELOPE__MSG_PONG,
		HEARTH__ENVELOPE__MSG_ERROR, HEARTH__ENVELOPE__MSG_ACK,
	};
	uint8_t pre[2] = { 6, 0 }; /* frame limit 8 MiB, read-size seed 0 */
	size_t n = 0;
	char name[32];

	n = env_hello(0, 1, 65536);
	put("frame", "hello", pre, 2, fbuf, n);
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		n = env_simple(0, i + 2, all[i]);
		snprintf(name, sizeof(name), "msg-%d", (int)all[i]);
		put("frame", name, pre, 2, fbuf, n);
	}
	n = env_result(0, 3, 1);
	put("frame", "invoke-result", pre, 2, fbuf, n);
	/* Everything in one stream, cut at odd read sizes. */
	n = env_hello(0, 1, 0);
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		n = env_simple(n, i + 2, all[i]);
	pre[1] = 77;
	put("frame", "stream", pre, 2, fbuf, n);
	pre[0] = 2; /* 16-byte limit: ETOOBIG, then reset */
	put("frame", "toobig", pre, 2, fbuf, n);
}

static void gen_client(void)
{
	uint8_t op;
	size_t n;

	/* op & 7: 0 configure, 1 invoke, 2 pipelined, 3 ping, 4 reseed, 5 shutdown, 6 ping+invoke */
	n = env_hello(0, 1, 0);
	n = env_simple(n, 2, HEARTH__ENVELOPE__MSG_READY);
	op = 0;
	put("client", "configure", &op, 1, fbuf, n);

	n = env_hello(0, 1, 1 << 20);
	n = env_simple(n, 0, HEARTH__ENVELOPE__MSG_LOG);
	n = env_result(n, 2, 0);
	op = 1;
	put("client", "invoke", &op, 1, fbuf, n);

	n = env_hello(0, 1, 0);
	n = env_result(n, 2, 0);
	n = env_simple(n, 3, HEARTH__ENVELOPE__MSG_ERROR);
	n = env_result(n, 99, 0); /* stale */
	n = env_result(n, 4, 2);
	op = 2;
	put("client", "pipelined", &op, 1, fbuf, n);

	n = env_hello(0, 1, 0);
	n = env_simple(n, 2, HEARTH__ENVELOPE__MSG_PONG);
	op = 3;
	put("client", "ping", &op, 1, fbuf, n);

	n = env_hello(0, 1, 0);
	n = env_simple(n, 2, HEARTH__ENVELOPE__MSG_ACK);
	op = 4;
	put("client", "reseed", &op, 1, fbuf, n);
	op = 5;
	put("client", "shutdown", &op, 1, fbuf, n);

	n = env_hello(0, 1, 0);
	n = env_simple(n, 2, HEARTH__ENVELOPE__MSG_PONG);
	n = env_result(n, 3, 4);
	op = 6;
	put("client", "ping-invoke", &op, 1, fbuf, n);

	n = env_simple(0, 0, HEARTH__ENVELOPE__MSG_ERROR);
	op = 0;
	put("client", "error-seq0", &op, 1, fbuf, n);
}

static void gen_snapshot(void)
{
	struct snap_config cfg = { .mem_size = 1 << 20, .vcpus = 2 };
	struct snap_builder *b = snap_build_begin(&cfg);
	uint8_t regs[144] = { 1 }, queues[4 * 40] = { 0 }, pre;
	char path[4096], err[256];
	FILE *f;
	static uint8_t blob[1 << 16];
	size_t n;

	snprintf(cfg.kernel_id, sizeof(cfg.kernel_id), "vmlinux-6.12");
	snap_node_begin(b, "vm");
	snap_prop(b, "pit", regs, 112);
	snap_prop(b, "clock", regs, 48);
	snap_node_end(b);
	for (int i = 0; i < 2; i++) {
		char node[16];

		snprintf(node, sizeof(node), "cpu@%d", i);
		snap_node_begin(b, node);
		snap_prop(b, "regs", regs, 144);
		snap_prop(b, "msrs", regs, 32);
		snap_prop_u64(b, "tsc", 12345);
		snap_node_end(b);
	}
	snap_node_begin(b, "uart");
	snap_prop(b, "regs", regs, 12);
	snap_node_end(b);
	snap_node_begin(b, "virtio@d0000000");
	snap_prop(b, "regs", regs, 40);
	snap_prop(b, "queues", queues, sizeof(queues));
	snap_prop_u64(b, "vsock-cid", 3);
	snap_node_end(b);
	snprintf(path, sizeof(path), "%s/.state.tmp", out_dir);
	if (snap_build_write(b, path, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	snap_build_free(b);
	f = fopen(path, "rb");
	n = fread(blob, 1, sizeof(blob), f);
	fclose(f);
	remove(path);
	pre = 0; /* as written: digest intact */
	put("snapshot", "state", &pre, 1, blob, n);
	pre = 1; /* the harness reseals: mutations get past the digest */
	put("snapshot", "state-sealed", &pre, 1, blob, n);

	/* Working-set files, as ws_record writes them, for 1 MiB of RAM. */
	{
		static uint8_t fdt[4096];
		uint64_t rg[6] = { htobe64(0), htobe64(4), htobe64(16), htobe64(1),
				   htobe64(200), htobe64(56) };

		fdt_create_empty_tree(fdt, sizeof(fdt));
		fdt_setprop_string(fdt, 0, "format", "hearth-workset-1");
		fdt_setprop_u64(fdt, 0, "mem-size", 1 << 20);
		fdt_setprop(fdt, 0, "ranges", rg, sizeof(rg));
		fdt_pack(fdt);
		pre = 2;
		put("snapshot", "workset", &pre, 1, fdt, fdt_totalsize(fdt));
	}
}

/* virtq: header (13 bytes), ops, RAM image; see fuzz_virtq.c. */
static void gen_virtq(void)
{
	static uint8_t in[13 + 64 + 8192];
	uint8_t *hdr = in, *ops = in + 13, *ram = in + 13 + 64;
	struct { uint64_t addr; uint32_t len; uint16_t flags, next; } d;

	memset(in, 0, sizeof(in));
	hdr[0] = 1;            /* 8 KiB of RAM, rings wrapped into it */
	hdr[1] = 3;            /* 8 entries */
	hdr[2] = 0x00; hdr[3] = 0x01; /* desc at 0x100 * 16 = 0x1000 */
	hdr[4] = 0x00; hdr[5] = 0x0a; /* avail at 0xa00 * 2 = 0x1400 */
	hdr[6] = 0x00; hdr[7] = 0x06; /* used at 0x600 * 4 = 0x1800 */
	hdr[12] = 64;
	for (int i = 0; i < 64; i++)
		ops[i] = (uint8_t)(i % 3 == 0 ? 0x08 : i % 3 == 1 ? 3 : 6);
	/* Chain 0: two readable, one writable; chain 3: one writable. */
	d = (typeof(d)){ 0x100, 64, 1, 1 };
	memcpy(ram + 0x1000, &d, 16);
	d = (typeof(d)){ 0x200, 32, 1, 2 };
	memcpy(ram + 0x1010, &d, 16);
	d = (typeof(d)){ 0x300, 128, 2, 0 };
	memcpy(ram + 0x1020, &d, 16);
	d = (typeof(d)){ 0x400, 16, 2, 0 };
	memcpy(ram + 0x1030, &d, 16);
	ram[0x1402] = 2;                /* avail idx */
	ram[0x1404] = 0;                /* ring[0] = 0 */
	ram[0x1406] = 3;                /* ring[1] = 3 */
	put("virtq", "two-chains", in, sizeof(in), NULL, 0);
	/* A loop (0 -> 1 -> 0) and a chain running off RAM. */
	d = (typeof(d)){ 0x200, 32, 1, 0 };
	memcpy(ram + 0x1010, &d, 16);
	put("virtq", "loop", in, sizeof(in), NULL, 0);
	d = (typeof(d)){ 0x1ff0, 0x20, 0, 0 };
	memcpy(ram + 0x1000, &d, 16);
	put("virtq", "off-ram", in, sizeof(in), NULL, 0);
	/* A writable buffer ending exactly at the end of RAM (8 KiB). */
	d = (typeof(d)){ 0x1f00, 0x100, 2, 0 };
	memcpy(ram + 0x1000, &d, 16);
	put("virtq", "end-of-ram", in, sizeof(in), NULL, 0);
}

/* vsock: programs of guest and host actions; see fuzz_vsock.h. */
static uint8_t vb[4096];
static size_t vn;

static void v8(unsigned v)
{
	if (vn == sizeof(vb))
		exit(1);
	vb[vn++] = (uint8_t)v;
}

static void v16(unsigned v)
{
	v8(v & 0xff);
	v8(v >> 8);
}

static void v32(uint32_t v)
{
	v16(v & 0xffff);
	v16(v >> 16);
}

static void vput(const char *name)
{
	put("vsock", name, vb, vn, NULL, 0);
	vn = 0;
}

/* Port selectors (fuzz_vsock.h): small table, or the port itself below 0xf0. */
enum { P_A, P_B, P_LAST_SRC, P_LAST_DST, P_GPORT, P_FIRST_HOST, P_NONE, P_MAX };

static void v_init(unsigned p)
{
	v8(FV_OP_INIT);
	v8(p);
}

static void v_rx(unsigned n, unsigned len, unsigned f)
{
	v8(FV_OP_RX_POST);
	v8(n - 1);
	v16(len);
	v8(f);
}

static void v_ev(unsigned n, unsigned len, unsigned f)
{
	v8(FV_OP_EVENT_POST);
	v8(n - 1);
	v8(len);
	v8(f);
}

/* m: fuzz_vsock.h's mode byte (no raw CIDs or type here); c: buf_alloc/fwd_cnt modes 0-2. */
static void v_tx(unsigned op, unsigned src, unsigned dst, unsigned m, uint32_t rawlen,
		 unsigned split, unsigned flags, unsigned c, unsigned plen, unsigned seed)
{
	v8(FV_OP_TX);
	v8(op);
	v8(src);
	v8(dst);
	v8(m);
	if ((m & 3) == 1)
		v32(rawlen);
	if (((m >> 4) & 3) == 2)
		v8(split);
	v8(flags);
	v8(c);
	v16(plen);
	v8(seed);
}

static void v_pkt(unsigned op, unsigned src, unsigned dst, unsigned plen)
{
	v_tx(op, src, dst, plen > 4000 ? 0x10 : 0, 0, 0, 0, 0, plen, op);
}

static void v1(unsigned op)
{
	v8(op);
}

static void v_peer(unsigned op, unsigned peer)
{
	v8(op);
	v8(peer);
}

static void v_host_write(unsigned peer, unsigned n)
{
	v8(FV_OP_HOST_WRITE);
	v8(peer);
	v16(n);
}

static void v_host_connect(unsigned port_sel, unsigned mode)
{
	v8(FV_OP_HOST_CONNECT);
	v8(port_sel);
	v8(mode);
}

static void v_poke(unsigned q, unsigned field, unsigned idx, uint32_t val)
{
	v8(FV_OP_POKE);
	v8(q + 3 * field);
	v16(idx);
	v32(val);
	v32(0);
}

static void v_mmio(unsigned m, unsigned off, uint32_t val)
{
	v8(FV_OP_MMIO);
	v8(m);
	v16(off);
	if (m & 8)
		v32(val);
}

/* A connected guest: driver up, rx buffers, a connection to the host service A. */
static void v_guest_connected(void)
{
	v_init(6);
	v_ev(2, 4, 0);
	v_rx(16, 4096, 0);
	v_pkt(1, P_GPORT, P_A, 0); /* REQUEST */
	v1(FV_OP_CONSUME);
}

static void gen_vsock(void)
{
	v_init(6);
	vput("init");

	v_guest_connected();
	v_pkt(5, P_GPORT, P_A, 100); /* RW */
	v_peer(FV_OP_HOST_READ, 0);
	v_host_write(0, 300);
	v1(FV_OP_CONSUME);
	v_pkt(7, P_GPORT, P_A, 0);   /* CREDIT_REQUEST */
	v_tx(4, P_GPORT, P_A, 0, 0, 0, 3, 0, 0, 0); /* SHUTDOWN both */
	v1(FV_OP_ACK);
	vput("guest-connect-exchange");

	v_init(6);
	v_ev(2, 4, 0);
	v_rx(16, 4096, 2);
	v_host_connect(80, 0);
	v1(FV_OP_CONSUME);
	v_pkt(2, P_LAST_DST, P_LAST_SRC, 0); /* RESPONSE */
	v_peer(FV_OP_HOST_READ, 0);
	v_host_write(0, 1000);
	v1(FV_OP_CONSUME);
	v_pkt(5, 80, P_LAST_SRC, 50);
	v_peer(FV_OP_HOST_READ, 0);
	v8(FV_OP_HOST_CLOSE);
	v8(0);
	v8(0);
	v1(FV_OP_CONSUME);
	vput("host-connect-exchange");

	/* Over 64 KiB guest -> host: the device owes a credit update. */
	v_guest_connected();
	for (int i = 0; i < 3; i++) {
		v_pkt(5, P_GPORT, P_A, 65535);
		v_peer(FV_OP_HOST_READ, 0);
	}
	v1(FV_OP_CONSUME);
	vput("guest-bulk-credit");

	/* Host -> guest beyond the guest's 4 KiB window, rx buffers refilled. */
	v_init(6);
	v_rx(16, 4096, 0);
	v_tx(1, P_GPORT, P_A, 0, 0, 0, 0, 1, 0, 0); /* REQUEST, buf_alloc 4096 */
	v_host_write(0, 65535);
	v_host_write(0, 65535);
	v1(FV_OP_CONSUME);
	v_pkt(6, P_GPORT, P_A, 0);   /* CREDIT_UPDATE */
	v_rx(16, 100, 0);
	v1(FV_OP_CONSUME);
	v8(FV_OP_HOST_CLOSE);
	v8(0);
	v8(1);
	vput("host-flood-credit");

	/* Hostile rings. */
	v_init(6);
	v_rx(4, 4096, 0);
	v_poke(1, 4, 0, 200);        /* tx avail idx far ahead */
	v8(FV_OP_NOTIFY);
	v8(1);
	vput("hostile-avail-idx");

	v_init(6);
	v_tx(5, P_GPORT, P_A, 0x40, 0, 0, 0, 0, 10, 0); /* published, not notified */
	v_poke(1, 2, 0, 1);          /* desc 0: NEXT */
	v_poke(1, 3, 0, 0);          /* ... to itself */
	v8(FV_OP_NOTIFY);
	v8(1);
	vput("hostile-desc-loop");

	v_init(6);
	v_rx(4, 4096, 0);
	v_tx(5, P_GPORT, P_A, 1, 0x10001, 0, 0, 0, 16, 0); /* hdr.len past 64 KiB */
	vput("hostile-oversize-len");

	v_init(6);
	v_tx(1, P_GPORT, P_A, 0x20, 0, 20, 0, 0, 0, 0); /* header split over two descriptors */
	v_poke(1, 0, 0, 0xfffff000u); /* first descriptor off RAM */
	v_tx(5, P_GPORT, P_A, 0, 0, 0, 0, 0, 8, 0);
	vput("hostile-desc-off-ram");

	v_init(6);
	v_rx(1, 20, 1);              /* an rx buffer smaller than a header */
	v_pkt(1, P_GPORT, P_NONE, 0); /* no service there: the device owes a reset */
	v_mmio(2, 0x70, 0);          /* status: DEVICE_NEEDS_RESET */
	v8(FV_OP_NOTIFY);
	v8(1);
	vput("failed-then-kicked");

	/* A restore: transport reset event, its ack, then host clients again. */
	v_guest_connected();
	v8(FV_OP_RESTORE);
	v1(FV_OP_CONSUME);
	v_host_connect(80, 0);
	v_ev(1, 4, 0);
	v1(FV_OP_CONSUME);
	v_pkt(2, P_LAST_DST, P_LAST_SRC, 0);
	v_peer(FV_OP_HOST_READ, 0);
	vput("restore-event-ack");

	/* Every slot taken by unanswered requests; time passes; one more client. */
	v_init(6);
	for (unsigned i = 0; i < 33; i++)
		v_host_connect(100 + i, 0);
	v8(FV_OP_TIME);
	v16(1000);                   /* 4 s */
	v_host_connect(P_GPORT, 0);
	v_rx(16, 4096, 0);
	v1(FV_OP_CONSUME);
	vput("half-open-reclaim");

	/* Host clients that never finish, or send garbage. */
	v_init(6);
	v_host_connect(90, 1);
	v8(FV_OP_HOST_CONNECT);
	v8(91);
	v8(2);
	v8(10);
	for (int i = 0; i < 10; i++)
		v8("CONNECT x\n"[i]);
	v_host_connect(92, 3);
	v8(255);
	v_rx(4, 4096, 0);
	v8(FV_OP_TIME);
	v16(1000);
	v_host_connect(93, 0);
	v1(FV_OP_CONSUME);
	vput("host-bad-clients");

	/* Every register and config byte, reads and writes, some queue out of range. */
	for (unsigned off = 0; off < 0x200; off += 4)
		v_mmio(2, off, 0);
	v_mmio(0, 0x101, 0);
	v_mmio(3, 0x100, 0);
	v_mmio(1, 0x1ff, 0);
	v_mmio(4 | 2, 0x1fe, 0);
	v_mmio(8 | 2, 0x30, 7);      /* QueueSel 7 */
	v_mmio(8 | 2, 0x38, 64);
	v_mmio(8 | 2, 0x44, 1);
	v_mmio(8 | 2, 0x50, 9);
	v_mmio(8 | 2, 0x64, 3);
	v_mmio(8 | 1, 0x70, 0xf);
	vput("mmio-sweep");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS-DIR\n", argv[0]);
		return 2;
	}
	out_dir = argv[1];
	mkdir(out_dir, 0755);
	gen_frame();
	gen_client();
	gen_snapshot();
	gen_virtq();
	gen_vsock();
	return 0;
}
