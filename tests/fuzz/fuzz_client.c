/*
 * fuzz_client - the host's side of the wire: host/client/agent_client.c
 * reading a hostile agent's replies (framing, decoding, seq matching, Error
 * and Log handling, InvokeResult copying) on a real socketpair.
 *
 * Input: byte 0 picks the calls (hello, then one of configure, invoke,
 * pipelined invokes, ping, reseed, shutdown; bit 7 skips the hello); the rest
 * is what the "agent" sends, as frames (4-byte big-endian length + body).
 * The client starts each connection at a random seq, so a fake agent peer
 * reads the client's first request and renumbers the fuzzer's seqs 1..15 to
 * the client's (base + seq - 1); a frame that does not decode, and trailing
 * bytes that are not a whole frame, are sent as they are.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent_client.h"
#include "frame.h"
#include "fuzz.h"
#include "msg.h"

struct peer {
	int fd;
	const uint8_t *data;
	size_t size;
};

static void write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* the client closed: fine */
		b += w;
		n -= (size_t)w;
	}
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	Hearth__Envelope *first = NULL;
	uint64_t base = 1;
	size_t off = 0;

	if (msg_recv(p->fd, FRAME_DEFAULT_MAX, frame_now_ms() + 5000, &first) == FRAME_OK) {
		base = first->seq;
		msg_free(first);
	}
	while (off + FRAME_HDR_LEN <= p->size) {
		const uint8_t *h = p->data + off;
		size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
		Hearth__Envelope *e;

		if (len > p->size - off - FRAME_HDR_LEN)
			break;
		e = msg_unpack(h + FRAME_HDR_LEN, len);
		if (e && e->seq >= 1 && e->seq <= 15) {
			uint8_t *buf;
			size_t blen;

			e->seq = base + e->seq - 1;
			if (msg_pack(e, &buf, &blen) == FRAME_OK) {
				uint8_t hdr[4] = { (uint8_t)(blen >> 24), (uint8_t)(blen >> 16),
						   (uint8_t)(blen >> 8), (uint8_t)blen };

				write_all(p->fd, hdr, 4);
				write_all(p->fd, buf, blen);
				free(buf);
				msg_free(e);
				off += FRAME_HDR_LEN + len;
				continue;
			}
		}
		if (e)
			msg_free(e);
		write_all(p->fd, h, FRAME_HDR_LEN + len);
		off += FRAME_HDR_LEN + len;
	}
	write_all(p->fd, p->data + off, p->size - off);
	shutdown(p->fd, SHUT_WR);
	return NULL;
}

static void check_result(struct agent_result *r)
{
	/* Whatever the agent sent, a result the client returns is well formed. */
	assert(r->request_id);
	assert(r->body || r->body_len == 0);
	assert(r->logs || r->logs_len == 0);
	agent_result_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const args[] = { "a", "b" };
	static const char *const env[] = { "K=V" };
	struct agent_config cfg = { .handler = "/var/task/h", .args = args, .nargs = 2,
				    .env = env, .nenv = 1, .timeout_ms = 1000 };
	struct agent_conn *c;
	struct agent_result res;
	struct agent_pong pong;
	struct peer p;
	pthread_t th;
	uint64_t init_us;
	char *software = NULL;
	int sv[2], rc = AGENT_OK;
	uint8_t ops;

	if (size < 1)
		return 0;
	ops = data[0];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	p = (struct peer){ .fd = sv[1], .data = data + 1, .size = size - 1 };
	if (pthread_create(&th, NULL, peer_main, &p))
		abort();
	c = agent_conn_from_fd(sv[0]);
	assert(c);
	if (ops & 0x40)
		agent_set_max_frame(c, 256);
	if (!(ops & 0x80)) {
		rc = agent_hello(c, 2000, &software);
		free(software);
	}
	if (rc == AGENT_OK) {
		switch (ops & 7) {
		case 0:
			rc = agent_configure(c, &cfg, 2000, &init_us);
			break;
		case 1:
			rc = agent_invoke(c, "req-1", "{}", 2, 0, 2000, &res);
			if (rc == AGENT_OK)
				check_result(&res);
			break;
		case 2:
			for (int i = 0; i < 3; i++)
				if (agent_invoke_send(c, "req", "x", 1, 0))
					break;
			for (int i = 0; i < 3; i++) {
				rc = agent_invoke_recv(c, 2000, &res);
				if (rc == AGENT_OK)
					check_result(&res);
				else if (rc != AGENT_EREMOTE && rc != AGENT_EPROTO)
					break;
			}
			break;
		case 3:
			rc = agent_ping(c, 2000, &pong);
			break;
		case 4:
			rc = agent_reseed(c, "0123456789abcdef0123456789abcdef", 32, 2000);
			break;
		case 5:
			rc = agent_shutdown(c, 2000);
			break;
		default:
			rc = agent_ping(c, 2000, &pong);
			if (rc == AGENT_OK)
				rc = agent_invoke(c, "r", "", 0, 0, 2000, &res);
			if (rc == AGENT_OK)
				check_result(&res);
			break;
		}
	}
	if (rc == AGENT_EREMOTE)
		(void)agent_last_error(c);
	(void)agent_strerror(rc);
	/* The client never waits for the whole deadline: the peer closed. */
	assert(rc != FRAME_ETIMEDOUT);
	agent_close(c);
	pthread_join(th, NULL);
	close(sv[1]);
	return 0;
}
