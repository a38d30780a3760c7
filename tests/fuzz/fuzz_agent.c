/*
 * fuzz_agent - hearth-agent's message handling (guest-agent/agent.c and
 * exec.c) in process: agent_run() on a Unix socket in a thread of its own,
 * fed one host connection per input. The hostile host sends whatever frames
 * the fuzzer wrote (Hello, Configure, Invoke, Ping, Reseed, Shutdown and
 * garbage), and the agent's queue, limits, init step and replies run for
 * real, handlers included.
 *
 * For safety the harness rewrites what would act on this host: a decoded
 * Configure runs /bin/cat (echoes the payload), /bin/true or a missing path
 * as handler and /bin/true or /bin/false as init, never a path the fuzzer
 * chose; a Reseed of a size the agent would accept becomes a Ping (the
 * agent would credit the bytes to this host's RNG). Everything else is sent
 * as it came; undecodable frames and trailing bytes too.
 *
 * Run without LeakSanitizer (-detect_leaks=0, ASAN_OPTIONS=detect_leaks=0):
 * the agent reaps every child of its process (wait4(-1), as PID 1 must), and
 * so also LeakSanitizer's stop-the-world tracer, which then waits forever.
 *
 * Checked: the agent answers every whole frame it read exactly once
 * (agent.h: every request gets one reply, every accepted Invoke one
 * InvokeResult), in time, unless a Shutdown or an oversized frame ends the
 * connection first; and it keeps serving new connections.
 */
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"
#include "frame.h"
#include "fuzz.h"
#include "msg.h"

static char dir[64];
static struct agent_opts opts;
static pthread_t agent_thread;
static int agent_done; /* agent_run() returned (after a Shutdown) */

static void *agent_main(void *arg)
{
	(void)arg;
	agent_run(&opts);
	__atomic_store_n(&agent_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void start_agent(void)
{
	__atomic_store_n(&agent_done, 0, __ATOMIC_RELEASE);
	if (pthread_create(&agent_thread, NULL, agent_main, NULL))
		abort();
}

/* After a Shutdown the agent returns: wait for that, then start a new one. */
static void restart_if_done(void)
{
	for (int i = 0; i < 200 && !__atomic_load_n(&agent_done, __ATOMIC_ACQUIRE); i++)
		usleep(10000);
	if (!__atomic_load_n(&agent_done, __ATOMIC_ACQUIRE))
		return; /* the Shutdown was never read (the connection ended before it) */
	pthread_join(agent_thread, NULL);
	start_agent();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	sigset_t set;

	/*
	 * The agent takes SIGCHLD through a signalfd: block it (and SIGTERM,
	 * SIGINT) in every thread, this one first, so none is lost to a thread
	 * that does not read the signalfd.
	 */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "/tmp/hearth-fuzz-agent-XXXXXX");
	if (!mkdtemp(dir))
		abort();
	opts.transport.kind = TRANSPORT_UNIX;
	snprintf(opts.transport.path, sizeof(opts.transport.path), "%s/agent.sock", dir);
	opts.transport.listen_fd = -1;
	opts.max_frame = FRAME_DEFAULT_MAX;
	opts.pid1 = false;
	opts.verbose = getenv("HEARTH_FUZZ_VERBOSE") != NULL;
	start_agent();
	return 0;
}

static void __attribute__((destructor)) cleanup(void)
{
	if (dir[0]) {
		unlink(opts.transport.path);
		rmdir(dir);
	}
}

static int connect_agent(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%.*s", (int)sizeof(sa.sun_path) - 1,
		 opts.transport.path);
	for (int i = 0; i < 500; i++) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			abort();
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		usleep(10000); /* the agent (re)starts listening */
	}
	fprintf(stderr, "fuzz_agent: the agent does not listen any more\n");
	abort();
}

static void send_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* the agent closed (frame too large) */
		b += w;
		n -= (size_t)w;
	}
}

/* Makes a decoded message safe to act on (see the top); true if it changed. */
static bool defuse(Hearth__Envelope *e, Hearth__Ping *ping)
{
	static char *handlers[] = { "/bin/cat", "/bin/true", "/nonexistent/handler" };
	static char *inits[] = { "/bin/true", "/bin/false" };

	if (e->msg_case == HEARTH__ENVELOPE__MSG_CONFIGURE) {
		Hearth__Configure *c = e->configure;

		/* The caller puts the decoder's strings back before msg_free(). */
		c->handler = handlers[(c->handler ? strlen(c->handler) : 0) % 3];
		if (c->init && c->init[0])
			c->init = inits[strlen(c->init) % 2];
		return true;
	}
	if (e->msg_case == HEARTH__ENVELOPE__MSG_RESEED && e->reseed->entropy.len >= 32 &&
	    e->reseed->entropy.len <= 512) {
		e->msg_case = HEARTH__ENVELOPE__MSG_PING;
		e->ping = ping;
		return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0, frames = 0, replies = 0;
	bool ends = false; /* a Shutdown or an oversized frame ends the connection */
	bool shutdown_sent = false;
	struct frame_reader fr;
	int fd = connect_agent();

	while (off + FRAME_HDR_LEN <= size) {
		const uint8_t *h = data + off;
		size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
		Hearth__Envelope *e;

		if (len > size - off - FRAME_HDR_LEN)
			break;
		frames++;
		e = msg_unpack(h + FRAME_HDR_LEN, len);
		if (e) {
			Hearth__Ping ping = HEARTH__PING__INIT;
			void *saved_reseed = e->reseed; /* the union member defuse() replaces */
			Hearth__Envelope__MsgCase was = e->msg_case;
			char *handler = NULL, *init = NULL;

			if (was == HEARTH__ENVELOPE__MSG_CONFIGURE) {
				handler = e->configure->handler;
				init = e->configure->init;
			}

			if (e->msg_case == HEARTH__ENVELOPE__MSG_SHUTDOWN)
				ends = shutdown_sent = true;
			if (defuse(e, &ping)) {
				uint8_t *buf, hdr[4];
				size_t blen;

				if (msg_pack(e, &buf, &blen))
					abort();
				hdr[0] = (uint8_t)(blen >> 24);
				hdr[1] = (uint8_t)(blen >> 16);
				hdr[2] = (uint8_t)(blen >> 8);
				hdr[3] = (uint8_t)blen;
				send_all(fd, hdr, 4);
				send_all(fd, buf, blen);
				free(buf);
				if (was == HEARTH__ENVELOPE__MSG_RESEED) {
					e->msg_case = was;
					e->reseed = saved_reseed;
				}
				if (was == HEARTH__ENVELOPE__MSG_CONFIGURE) {
					e->configure->handler = handler;
					e->configure->init = init;
				}
				msg_free(e);
				off += FRAME_HDR_LEN + len;
				continue;
			}
			msg_free(e);
		}
		send_all(fd, h, FRAME_HDR_LEN + len);
		off += FRAME_HDR_LEN + len;
	}
	send_all(fd, data + off, size - off);
	if (off + FRAME_HDR_LEN <= size)
		ends = true; /* a header announcing more than there is: too large, or truncated */

	/* Read the replies until every frame has its answer (or the agent closed). */
	frame_reader_init(&fr, FRAME_ABSOLUTE_MAX);
	while (replies < frames) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint8_t *out, chunk[65536];
		size_t outlen, used, at = 0;
		ssize_t n;
		int pr = poll(&p, 1, 10000);

		if (pr < 0 && errno == EINTR)
			continue;
		/* Handlers are /bin/cat and /bin/true: 10 s without a reply is a lost one. */
		assert(pr == 1);
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		while (at < (size_t)n) {
			int rc = frame_reader_feed(&fr, chunk + at, (size_t)n - at, &used, &out, &outlen);

			at += used;
			if (rc == FRAME_EAGAIN)
				break;
			assert(rc == FRAME_OK);
			{
				Hearth__Envelope *e = msg_unpack(out, outlen);

				assert(e); /* the agent only sends what decodes */
				/* A too-large header is not a whole frame: its Error is extra. */
				if (e->msg_case == HEARTH__ENVELOPE__MSG_ERROR &&
				    e->error->code == HEARTH__ERROR_CODE__ERR_FRAME_TOO_LARGE)
					ends = true;
				else if (e->msg_case != HEARTH__ENVELOPE__MSG_LOG)
					replies++;
				msg_free(e);
			}
			free(out);
		}
	}
	frame_reader_reset(&fr);
	/* One reply per frame; fewer only when the connection was ended on purpose. */
	assert(replies <= frames);
	assert(replies == frames || ends);
	shutdown(fd, SHUT_WR);
	close(fd);
	if (shutdown_sent)
		restart_if_done();
	return 0;
}
