/*
 * Agent tests: the real hearth-agent binary, started as a process listening on
 * a Unix socket, driven by the real host client library (hearth_client) with
 * real handlers (shell scripts and small C programs).
 *
 * Every test ends by checking that the agent is still alive: bad input must
 * never kill it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../cmocka_main.h"

#include "agent.h" /* guest-agent/agent.h: the agent's limits */
#include "agent_client.h"
#include "msg.h"

struct fx {
	char dir[64];
	char sock[128];
	pid_t agent;
	struct agent_conn *c;
};

static void start_agent(struct fx *f)
{
	f->agent = fork();
	assert_true(f->agent >= 0);
	if (f->agent == 0) {
		execl(AGENT_BIN, "hearth-agent", "--unix", f->sock, (char *)NULL);
		_exit(127);
	}
}

static int agent_alive(pid_t pid)
{
	int st;

	return waitpid(pid, &st, WNOHANG) == 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->dir, "/tmp/hearth-agent-test.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->sock, sizeof(f->sock), "%s/agent.sock", f->dir);
	start_agent(f);
	if (agent_connect_unix(f->sock, 5000, &f->c) != AGENT_OK)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	int st = 0, alive = agent_alive(f->agent);

	agent_close(f->c);
	kill(f->agent, SIGTERM);
	waitpid(f->agent, &st, 0);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	if (system(cmd) != 0) {
		/* best effort */
	}
	free(f);
	/* The agent must have survived whatever the test threw at it. */
	if (!alive) {
		fprintf(stderr, "agent died during the test\n");
		return -1;
	}
	return 0;
}

static void reconnect(struct fx *f)
{
	agent_close(f->c);
	assert_int_equal(agent_connect_unix(f->sock, 5000, &f->c), AGENT_OK);
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
}

static void configure(struct fx *f, const char *handler, const char *const *args, size_t nargs,
		      uint32_t timeout_ms, uint64_t max_resp, uint64_t max_log)
{
	static const char *const env[] = { "GREETING=hi", "MARKER=/tmp/hearth-agent-marker" };
	struct agent_config cfg = {
		.handler = handler,
		.args = args,
		.nargs = nargs,
		.env = env,
		.nenv = 2,
		.timeout_ms = timeout_ms,
		.max_response_bytes = max_resp,
		.max_log_bytes = max_log,
	};

	assert_int_equal(agent_configure(f->c, &cfg, 5000, NULL), AGENT_OK);
}

static void hello_configure(struct fx *f, const char *handler)
{
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	configure(f, handler, NULL, 0, 5000, 0, 0);
}

static void invoke(struct fx *f, const char *payload, struct agent_result *r)
{
	assert_int_equal(agent_invoke(f->c, "req-1", payload, strlen(payload), 0, 20000, r), AGENT_OK);
}

/* The next invoke on the echo handler still works: the agent recovered. */
static void assert_echo_works(struct fx *f)
{
	struct agent_result r;

	configure(f, ECHO_C, NULL, 0, 5000, 0, 0);
	invoke(f, "still alive", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_int_equal(r.body_len, 11);
	assert_memory_equal(r.body, "still alive", 11);
	agent_result_free(&r);
}

/* ---- tests --------------------------------------------------------------- */

static void test_hello_ping(void **state)
{
	struct fx *f = *state;
	struct agent_pong pong;
	char *sw = NULL;

	assert_int_equal(agent_hello(f->c, 5000, &sw), AGENT_OK);
	assert_non_null(strstr(sw, "hearth-agent"));
	free(sw);
	assert_int_equal(agent_ping(f->c, 5000, &pong), AGENT_OK);
	assert_false(pong.busy);
	assert_int_equal(pong.queued, 0);
	assert_true(pong.uptime_us > 0);
}

static void test_echo_c(void **state)
{
	struct fx *f = *state;
	struct agent_result r;
	uint8_t payload[100000];

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7 + 3); /* binary, with NULs */
	hello_configure(f, ECHO_C);
	assert_int_equal(agent_invoke(f->c, "req-echo", payload, sizeof(payload), 0, 20000, &r),
			 AGENT_OK);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_string_equal(r.request_id, "req-echo");
	assert_int_equal(r.exit_code, 0);
	assert_int_equal(r.body_len, sizeof(payload));
	assert_memory_equal(r.body, payload, sizeof(payload));
	assert_non_null(memmem(r.logs, r.logs_len, "echo handler done", 17));
	assert_false(r.logs_truncated);
	assert_true(r.duration_us > 0);
	assert_true(r.max_rss_kb > 0);
	agent_result_free(&r);
}

static void test_echo_shell(void **state)
{
	struct fx *f = *state;
	struct agent_result r;

	hello_configure(f, ECHO_SH);
	invoke(f, "world", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_int_equal(r.body_len, strlen("hello:hi:world"));
	assert_memory_equal(r.body, "hello:hi:world", r.body_len);
	assert_non_null(memmem(r.logs, r.logs_len, "log line from shell handler", 27));
	agent_result_free(&r);
	/* A second, warm invoke on the same configuration. */
	invoke(f, "again", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_memory_equal(r.body, "hello:hi:again", r.body_len);
	agent_result_free(&r);
}

/*
 * --handler-user (the default as a VM's PID 1): the handler runs as that
 * uid/gid with no supplementary groups, never as the agent's root, and a
 * handler that tries to become root again cannot. Needs root to drop from.
 */
static void test_handler_not_root(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		printf("SKIP: dropping to another uid needs the agent to run as root\n");
		exit(77);
	}
	char dir[64] = "/tmp/hearth-agent-user.XXXXXX", sock[128], h[128];
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0755), 0);
	snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
	snprintf(h, sizeof(h), "%s/whoami.sh", dir);
	FILE *f = fopen(h, "w");
	assert_non_null(f);
	/* Prints its ids, then tries what only root may: both must fail. */
	fputs("#!/bin/sh\necho \"uid=$(id -u) gid=$(id -g) groups=$(id -G)\"\n"
	      "if touch /etc/hearth-handler-was-root 2>/dev/null; then echo wrote-etc; fi\n"
	      "if cat /proc/1/environ >/dev/null 2>&1; then echo read-pid1; fi\n", f);
	fclose(f);
	assert_int_equal(chmod(h, 0755), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(AGENT_BIN, "hearth-agent", "--unix", sock, "--handler-user", "993:994",
		      (char *)NULL);
		_exit(127);
	}
	struct agent_conn *c = NULL;
	assert_int_equal(agent_connect_unix(sock, 5000, &c), AGENT_OK);
	assert_int_equal(agent_hello(c, 5000, NULL), AGENT_OK);
	struct agent_config cfg = { .handler = h, .timeout_ms = 5000 };
	assert_int_equal(agent_configure(c, &cfg, 5000, NULL), AGENT_OK);
	struct agent_result r;
	assert_int_equal(agent_invoke(c, "req-user", "", 0, 0, 20000, &r), AGENT_OK);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	const char want[] = "uid=993 gid=994 groups=994\n";
	if (r.body_len != strlen(want) || memcmp(r.body, want, r.body_len))
		fail_msg("handler said: %.*s", (int)r.body_len, (const char *)r.body);
	agent_result_free(&r);
	assert_int_equal(access("/etc/hearth-handler-was-root", F_OK), -1);
	/* The agent itself is still root and still serves. */
	assert_int_equal(waitpid(pid, NULL, WNOHANG), 0);
	agent_close(c);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	unlink(h);
	unlink(sock);
	rmdir(dir);
}

static void test_function_error(void **state)
{
	struct fx *f = *state;
	struct agent_result r;

	hello_configure(f, FAIL_SH);
	invoke(f, "", &r);
	assert_int_equal(r.status, AGENT_INVOKE_FUNCTION_ERROR);
	assert_int_equal(r.exit_code, 3);
	assert_non_null(r.error);
	assert_non_null(strstr(r.error, "status 3"));
	assert_non_null(memmem(r.logs, r.logs_len, "failing on purpose", 18));
	agent_result_free(&r);
	assert_echo_works(f);
}

static void test_crash(void **state)
{
	struct fx *f = *state;
	struct agent_result r;

	hello_configure(f, CRASH_C);
	invoke(f, "x", &r);
	assert_int_equal(r.status, AGENT_INVOKE_CRASHED);
	assert_int_equal(r.signal, SIGSEGV);
	assert_non_null(strstr(r.error, "signal 11"));
	assert_non_null(memmem(r.logs, r.logs_len, "about to crash", 14));
	agent_result_free(&r);
	assert_echo_works(f);
}

static void test_timeout(void **state)
{
	struct fx *f = *state;
	struct agent_result r;
	static const char *const args[] = { "30" };

	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	configure(f, SLEEP_SH, args, 1, 300, 0, 0);
	invoke(f, "", &r);
	assert_int_equal(r.status, AGENT_INVOKE_TIMEOUT);
	assert_non_null(strstr(r.error, "timed out"));
	/* Killed at the deadline, not after the 30 s sleep. */
	assert_true(r.duration_us >= 300000);
	assert_true(r.duration_us < 10000000);
	agent_result_free(&r);
	/* A per-invoke timeout overrides the configured one. */
	assert_int_equal(agent_invoke(f->c, "req-2", "", 0, 200, 20000, &r), AGENT_OK);
	assert_int_equal(r.status, AGENT_INVOKE_TIMEOUT);
	agent_result_free(&r);
	assert_echo_works(f);
}

static void test_ignores_sigterm(void **state)
{
	struct fx *f = *state;
	struct agent_result r;

	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	configure(f, IGNORE_TERM_SH, NULL, 0, 400, 0, 0);
	invoke(f, "", &r);
	assert_int_equal(r.status, AGENT_INVOKE_TIMEOUT);
	assert_true(r.duration_us < 10000000);
	agent_result_free(&r);
	assert_echo_works(f);
}

static void test_missing_handler(void **state)
{
	struct fx *f = *state;
	struct agent_result r;

	hello_configure(f, "/nonexistent/handler");
	invoke(f, "x", &r);
	assert_int_equal(r.status, AGENT_INVOKE_SPAWN_FAILED);
	assert_non_null(strstr(r.error, "No such file"));
	agent_result_free(&r);
	/* A relative handler path is refused at Configure. */
	struct agent_config bad = { .handler = "relative/path" };
	assert_int_equal(agent_configure(f->c, &bad, 5000, NULL), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_INVALID_ARGUMENT);
	assert_echo_works(f);
}

static void test_flood_stdout(void **state)
{
	struct fx *f = *state;
	struct agent_result r;
	static const char *const args[] = { "out", "200" };

	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	configure(f, FLOOD_C, args, 2, 10000, 1 << 20, 0);
	invoke(f, "", &r);
	assert_int_equal(r.status, AGENT_INVOKE_RESPONSE_TOO_LARGE);
	assert_true(r.body_len <= (1 << 20));
	assert_non_null(strstr(r.error, "exceeded"));
	agent_result_free(&r);
	assert_echo_works(f);
}

static void test_log_truncation(void **state)
{
	struct fx *f = *state;
	struct agent_result r;
	static const char *const args[] = { "err", "8" };

	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	configure(f, FLOOD_C, args, 2, 10000, 0, 4096);
	invoke(f, "", &r);
	/* 8 MiB of stderr does not block the handler or fail it: logs are cut and marked. */
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_int_equal(r.logs_len, 4096);
	assert_true(r.logs_truncated);
	assert_int_equal(r.body_len, 3);
	assert_memory_equal(r.body, "end", 3);
	agent_result_free(&r);
}

static int proc_with_cmdline(const char *want, size_t wantlen)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int found = 0;

	while (d && (de = readdir(d))) {
		char path[300], buf[256];
		int fd;
		ssize_t n;

		if (atoi(de->d_name) <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf));
		close(fd);
		if (n == (ssize_t)wantlen && memcmp(buf, want, wantlen) == 0)
			found = 1;
	}
	if (d)
		closedir(d);
	return found;
}

static void test_outliving_children(void **state)
{
	struct fx *f = *state;
	struct agent_result r;
	char body[128];
	int pid = 0, gone = 0;

	hello_configure(f, OUTLIVE_SH);
	invoke(f, "", &r);
	/* The result comes back as soon as the handler exits, not after its children. */
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(r.duration_us < 5000000);
	assert_true(r.body_len < sizeof(body));
	memcpy(body, r.body, r.body_len);
	body[r.body_len] = 0;
	assert_int_equal(sscanf(body, "child=%d", &pid), 1);
	assert_non_null(strstr(body, "done"));
	agent_result_free(&r);
	/* Both leftovers, in the group and escaped with setsid, are killed. */
	for (int i = 0; i < 200 && !gone; i++) {
		gone = kill(pid, 0) < 0 && errno == ESRCH &&
		       !proc_with_cmdline("sleep\0" "61", 9);
		if (!gone)
			usleep(10000);
	}
	assert_true(gone);
	assert_echo_works(f);
}

static void test_oversized_frame(void **state)
{
	struct fx *f = *state;
	uint8_t hdr[4] = { 0x10, 0, 0, 0 }; /* 256 MiB */
	Hearth__Envelope *e;

	hello_configure(f, ECHO_C);
	assert_int_equal(agent_send_raw(f->c, hdr, 4), AGENT_OK);
	assert_int_equal(msg_recv(agent_fd(f->c), FRAME_DEFAULT_MAX, frame_now_ms() + 5000, &e),
			 FRAME_OK);
	assert_int_equal(e->msg_case, HEARTH__ENVELOPE__MSG_ERROR);
	assert_int_equal(e->error->code, HEARTH__ERROR_CODE__ERR_FRAME_TOO_LARGE);
	msg_free(e);
	/* Then the agent closes the connection... */
	assert_int_equal(msg_recv(agent_fd(f->c), FRAME_DEFAULT_MAX, frame_now_ms() + 5000, &e),
			 FRAME_EOF);
	/* ...and the next connection works, with the configuration kept. */
	reconnect(f);
	struct agent_result r;
	invoke(f, "after", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_memory_equal(r.body, "after", 5);
	agent_result_free(&r);
}

static void test_truncated_frame(void **state)
{
	struct fx *f = *state;
	uint8_t part[14] = { 0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };

	hello_configure(f, ECHO_C);
	assert_int_equal(agent_send_raw(f->c, part, sizeof(part)), AGENT_OK);
	reconnect(f); /* closes the old connection mid-frame */
	assert_echo_works(f);
	/* A truncated header alone, too. */
	assert_int_equal(agent_send_raw(f->c, part, 2), AGENT_OK);
	reconnect(f);
	assert_echo_works(f);
}

static void test_garbage(void **state)
{
	struct fx *f = *state;
	uint8_t junk[] = { 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	Hearth__Envelope *e;

	hello_configure(f, ECHO_C);
	assert_int_equal(agent_send_raw(f->c, junk, sizeof(junk)), AGENT_OK);
	assert_int_equal(msg_recv(agent_fd(f->c), FRAME_DEFAULT_MAX, frame_now_ms() + 5000, &e),
			 FRAME_OK);
	assert_int_equal(e->msg_case, HEARTH__ENVELOPE__MSG_ERROR);
	assert_int_equal(e->error->code, HEARTH__ERROR_CODE__ERR_BAD_MESSAGE);
	msg_free(e);
	/* Frame boundaries were intact, so the same connection keeps working. */
	assert_echo_works(f);
	/* Text where a length belongs ("GET " = 1.2 GB) is refused as too large. */
	assert_int_equal(agent_send_raw(f->c, "GET / HTTP/1.1\r\n\r\n", 18), AGENT_OK);
	assert_int_equal(msg_recv(agent_fd(f->c), FRAME_DEFAULT_MAX, frame_now_ms() + 5000, &e),
			 FRAME_OK);
	assert_int_equal(e->error->code, HEARTH__ERROR_CODE__ERR_FRAME_TOO_LARGE);
	msg_free(e);
	reconnect(f);
	assert_echo_works(f);
}

static void send_env(struct fx *f, Hearth__Envelope *env, Hearth__ErrorCode want)
{
	Hearth__Envelope *e;

	assert_int_equal(msg_send(agent_fd(f->c), env, FRAME_DEFAULT_MAX, -1), FRAME_OK);
	assert_int_equal(msg_recv(agent_fd(f->c), FRAME_DEFAULT_MAX, frame_now_ms() + 5000, &e),
			 FRAME_OK);
	assert_int_equal(e->msg_case, HEARTH__ENVELOPE__MSG_ERROR);
	assert_int_equal(e->seq, env->seq);
	assert_int_equal(e->error->code, want);
	msg_free(e);
}

static void test_unknown_message(void **state)
{
	struct fx *f = *state;
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Pong pong = HEARTH__PONG__INIT;
	/* An Envelope holding only a field number this protocol does not define (99). */
	uint8_t unknown[] = { 0, 0, 0, 5, 0x08, 0x07, 0x98, 0x06, 0x01 };
	Hearth__Envelope *e;

	hello_configure(f, ECHO_C);
	env.seq = 4242;
	env.msg_case = HEARTH__ENVELOPE__MSG_PONG; /* agent->host type sent to the agent */
	env.pong = &pong;
	send_env(f, &env, HEARTH__ERROR_CODE__ERR_UNKNOWN_MESSAGE);
	assert_int_equal(agent_send_raw(f->c, unknown, sizeof(unknown)), AGENT_OK);
	assert_int_equal(msg_recv(agent_fd(f->c), FRAME_DEFAULT_MAX, frame_now_ms() + 5000, &e),
			 FRAME_OK);
	assert_int_equal(e->seq, 7);
	assert_int_equal(e->error->code, HEARTH__ERROR_CODE__ERR_UNKNOWN_MESSAGE);
	msg_free(e);
	assert_echo_works(f);
}

static void test_protocol_order(void **state)
{
	struct fx *f = *state;
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Hello hello = HEARTH__HELLO__INIT;
	struct agent_config cfg = { .handler = ECHO_C };
	struct agent_result r;

	/* Configure before Hello is refused. */
	assert_int_equal(agent_configure(f->c, &cfg, 5000, NULL), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_HELLO_REQUIRED);
	/* A Hello with the wrong protocol version is refused. */
	hello.protocol_version = 99;
	env.seq = 77;
	env.msg_case = HEARTH__ENVELOPE__MSG_HELLO;
	env.hello = &hello;
	send_env(f, &env, HEARTH__ERROR_CODE__ERR_VERSION_MISMATCH);
	/* Invoke before Configure gives a failed result, not a dead agent. */
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	invoke(f, "x", &r);
	assert_int_equal(r.status, AGENT_INVOKE_NOT_CONFIGURED);
	assert_non_null(strstr(r.error, "before Configure"));
	agent_result_free(&r);
	assert_echo_works(f);
}

static void test_pipelined(void **state)
{
	struct fx *f = *state;
	char id[16], body[16];
	struct agent_pong pong;

	hello_configure(f, ECHO_C);
	for (int i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		snprintf(body, sizeof(body), "body-%d", i);
		assert_int_equal(agent_invoke_send(f->c, id, body, strlen(body), 0), AGENT_OK);
	}
	for (int i = 0; i < 20; i++) {
		struct agent_result r;

		snprintf(id, sizeof(id), "r%d", i);
		snprintf(body, sizeof(body), "body-%d", i);
		assert_int_equal(agent_invoke_recv(f->c, 20000, &r), AGENT_OK);
		assert_string_equal(r.request_id, id); /* queued and answered in order */
		assert_int_equal(r.status, AGENT_INVOKE_OK);
		assert_memory_equal(r.body, body, strlen(body));
		agent_result_free(&r);
	}
	assert_int_equal(agent_ping(f->c, 5000, &pong), AGENT_OK);
	assert_int_equal(pong.queued, 0);
}

static void test_ping_while_busy(void **state)
{
	struct fx *f = *state;
	struct agent_pong pong;
	struct agent_result r;
	static const char *const args[] = { "1" };

	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	configure(f, SLEEP_SH, args, 1, 5000, 0, 0);
	assert_int_equal(agent_invoke_send(f->c, "slow", "", 0, 0), AGENT_OK);
	assert_int_equal(agent_invoke_send(f->c, "slow2", "", 0, 0), AGENT_OK);
	usleep(200000);
	/* The pipelined request is answered ahead of the results: Pong comes before them. */
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT, *e;
	Hearth__Ping ping = HEARTH__PING__INIT;
	ping.nonce = 99;
	env.seq = 1000;
	env.msg_case = HEARTH__ENVELOPE__MSG_PING;
	env.ping = &ping;
	assert_int_equal(msg_send(agent_fd(f->c), &env, FRAME_DEFAULT_MAX, -1), FRAME_OK);
	assert_int_equal(msg_recv(agent_fd(f->c), FRAME_DEFAULT_MAX, frame_now_ms() + 5000, &e),
			 FRAME_OK);
	assert_int_equal(e->msg_case, HEARTH__ENVELOPE__MSG_PONG);
	assert_true(e->pong->busy);
	assert_int_equal(e->pong->queued, 1);
	msg_free(e);
	assert_int_equal(agent_invoke_recv(f->c, 20000, &r), AGENT_OK);
	assert_string_equal(r.request_id, "slow");
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	agent_result_free(&r);
	assert_int_equal(agent_invoke_recv(f->c, 20000, &r), AGENT_OK);
	assert_string_equal(r.request_id, "slow2");
	agent_result_free(&r);
	assert_int_equal(agent_ping(f->c, 5000, &pong), AGENT_OK);
	assert_false(pong.busy);
}

static void test_reseed(void **state)
{
	struct fx *f = *state;
	uint8_t seed[32];

	for (size_t i = 0; i < sizeof(seed); i++)
		seed[i] = (uint8_t)(i * 31 + 1);
	hello_configure(f, ECHO_C);
	assert_int_equal(agent_reseed(f->c, seed, sizeof(seed), 5000), AGENT_OK);
	assert_int_equal(agent_reseed(f->c, seed, 4, 5000), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_INVALID_ARGUMENT);
	/* agent.proto: at least 32 bytes. */
	assert_int_equal(agent_reseed(f->c, seed, 16, 5000), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_INVALID_ARGUMENT);
	assert_int_equal(agent_reseed(f->c, seed, 31, 5000), AGENT_EREMOTE);
	assert_echo_works(f);
}

static void test_init_step(void **state)
{
	struct fx *f = *state;
	static const char *const env[] = { "MARKER=/tmp/hearth-agent-init-marker" };
	struct agent_config cfg = { .handler = MARKER_SH, .env = env, .nenv = 1, .init = INIT_OK_SH };
	struct agent_result r;
	uint64_t init_us = 0;

	unlink("/tmp/hearth-agent-init-marker");
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	assert_int_equal(agent_configure(f->c, &cfg, 10000, &init_us), AGENT_OK);
	assert_true(init_us > 0); /* Ready came after the init step ran */
	invoke(f, "", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_memory_equal(r.body, "initialised", 11);
	agent_result_free(&r);
	unlink("/tmp/hearth-agent-init-marker");
	/* A failing init step is reported and leaves the agent unconfigured. */
	cfg.init = INIT_FAIL_SH;
	assert_int_equal(agent_configure(f->c, &cfg, 10000, NULL), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_INIT_FAILED);
	assert_non_null(strstr(agent_last_error(f->c), "cannot load its config"));
	invoke(f, "", &r);
	assert_int_equal(r.status, AGENT_INVOKE_NOT_CONFIGURED);
	agent_result_free(&r);
	assert_echo_works(f);
}

static void test_shutdown(void **state)
{
	struct fx *f = *state;
	int st;
	pid_t pid;

	hello_configure(f, ECHO_C);
	assert_int_equal(agent_shutdown(f->c, 5000), AGENT_OK);
	for (int i = 0; i < 500; i++) {
		pid = waitpid(f->agent, &st, WNOHANG);
		if (pid == f->agent)
			break;
		usleep(10000);
	}
	assert_int_equal(pid, f->agent);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(access(f->sock, F_OK), -1); /* it removed its socket */
	/* Restart for teardown's liveness check. */
	start_agent(f);
	reconnect(f);
}

/* ---- issue 14: results that do not fit, init races, memory bounds ------------- */

/* Peak RSS of the agent in kB. */
static long agent_hwm_kb(struct fx *f)
{
	char path[64], line[256];
	long kb = -1;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)f->agent);
	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	fclose(fp);
	return kb;
}

/* Sanitizer builds keep freed memory in quarantine: peak RSS says nothing there. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_MEANINGFUL 0
#else
#define RSS_MEANINGFUL 1
#endif

/* Raw protocol on the fixture's connection, for orders the client library never makes. */
static void raw_send(struct fx *f, Hearth__Envelope *env)
{
	assert_int_equal(msg_send(agent_fd(f->c), env, FRAME_DEFAULT_MAX, frame_now_ms() + 20000),
			 FRAME_OK);
}

static Hearth__Envelope *raw_recv(struct fx *f, int wait_ms)
{
	Hearth__Envelope *e = NULL;

	do {
		msg_free(e);
		assert_int_equal(msg_recv(agent_fd(f->c), FRAME_DEFAULT_MAX, frame_now_ms() + wait_ms,
					  &e), FRAME_OK);
	} while (e->msg_case == HEARTH__ENVELOPE__MSG_LOG);
	return e;
}

static void raw_invoke(struct fx *f, uint64_t seq, const char *id, const void *payload,
		       size_t len)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Invoke inv = HEARTH__INVOKE__INIT;

	inv.request_id = (char *)id;
	inv.payload.data = (uint8_t *)payload;
	inv.payload.len = len;
	env.seq = seq;
	env.msg_case = HEARTH__ENVELOPE__MSG_INVOKE;
	env.invoke = &inv;
	raw_send(f, &env);
}

static void assert_too_large(struct agent_result *r)
{
	assert_int_equal(r->status, AGENT_INVOKE_RESPONSE_TOO_LARGE);
	assert_non_null(r->error);
	assert_non_null(strstr(r->error, "response"));
	agent_result_free(r);
}

static void test_result_over_host_frame(void **state)
{
	struct fx *f = *state;
	struct agent_result r;
	size_t big = 100000, id_len = FRAME_DEFAULT_MAX - 40;
	uint8_t *payload = malloc(big);
	char *id = malloc(id_len + 1);

	assert_non_null(payload);
	assert_non_null(id);
	memset(payload, 'p', big);
	/* Hello{max_frame=65536}: the result budget once underflowed and nothing came back. */
	agent_set_max_frame(f->c, 65536);
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	configure(f, ECHO_C, NULL, 0, 5000, 0, 0);
	assert_int_equal(agent_invoke(f->c, "small", payload, 40000, 0, 5000, &r), AGENT_OK);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_int_equal(r.body_len, 40000);
	agent_result_free(&r);
	assert_int_equal(agent_invoke(f->c, "big", payload, big, 0, 5000, &r), AGENT_OK);
	assert_too_large(&r);
	/* Configured with 8 MiB frames, then a host that accepts only 64 KiB connects. */
	reconnect(f);
	configure(f, ECHO_C, NULL, 0, 5000, 0, 0);
	agent_close(f->c);
	assert_int_equal(agent_connect_unix(f->sock, 5000, &f->c), AGENT_OK);
	agent_set_max_frame(f->c, 65536);
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	assert_int_equal(agent_invoke(f->c, "big", payload, big, 0, 5000, &r), AGENT_OK);
	assert_too_large(&r);
	/* An 8 MiB request id: the result cannot even carry it back. */
	reconnect(f);
	memset(id, 'i', id_len);
	id[id_len] = 0;
	assert_int_equal(agent_invoke(f->c, id, "x", 1, 0, 10000, &r), AGENT_OK);
	assert_string_equal(r.request_id, "");
	assert_too_large(&r);
	free(id);
	free(payload);
	assert_echo_works(f);
}

static void test_invoke_during_failing_init(void **state)
{
	struct fx *f = *state;
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT, *e;
	Hearth__Configure cfg = HEARTH__CONFIGURE__INIT;
	char init[160];
	FILE *fp;
	bool got_error = false, got_result = false;

	snprintf(init, sizeof(init), "%s/slow_fail.sh", f->dir);
	fp = fopen(init, "w");
	assert_non_null(fp);
	fputs("#!/bin/sh\nsleep 0.5\necho init gives up >&2\nexit 1\n", fp);
	fclose(fp);
	assert_int_equal(chmod(init, 0755), 0);
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	cfg.handler = (char *)ECHO_C;
	cfg.init = init;
	env.seq = 9001;
	env.msg_case = HEARTH__ENVELOPE__MSG_CONFIGURE;
	env.configure = &cfg;
	raw_send(f, &env);
	raw_invoke(f, 9002, "early", "x", 1); /* while init still runs */
	for (int i = 0; i < 2; i++) {
		e = raw_recv(f, 10000);
		if (e->seq == 9001) {
			assert_int_equal(e->msg_case, HEARTH__ENVELOPE__MSG_ERROR);
			assert_int_equal(e->error->code, HEARTH__ERROR_CODE__ERR_INIT_FAILED);
			got_error = true;
		} else {
			assert_int_equal(e->seq, 9002);
			assert_int_equal(e->msg_case, HEARTH__ENVELOPE__MSG_INVOKE_RESULT);
			/* Never run against the freed configuration (execve(NULL)). */
			assert_int_equal(e->invoke_result->status,
					 HEARTH__INVOKE_STATUS__INVOKE_NOT_CONFIGURED);
			assert_string_equal(e->invoke_result->request_id, "early");
			got_result = true;
		}
		msg_free(e);
	}
	assert_true(got_error && got_result);
	assert_echo_works(f);
}

static void test_queue_bounded_in_bytes(void **state)
{
	struct fx *f = *state;
	static const char *const args[] = { "1" };
	enum { N = 20 };
	size_t len = 6u << 20;
	uint8_t *payload = malloc(len);
	int ok = 0, busy = 0;
	long hwm;

	assert_non_null(payload);
	memset(payload, 'q', len);
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	configure(f, SLEEP_SH, args, 1, 5000, 0, 0);
	/* One running and nineteen more of 6 MiB each: 120 MiB if all were queued. */
	for (int i = 0; i < N; i++)
		raw_invoke(f, 500 + (uint64_t)i, "q", payload, len);
	for (int i = 0; i < N; i++) {
		Hearth__Envelope *e = raw_recv(f, 30000);

		if (e->msg_case == HEARTH__ENVELOPE__MSG_INVOKE_RESULT &&
		    e->invoke_result->status == HEARTH__INVOKE_STATUS__INVOKE_OK)
			ok++;
		else if (e->msg_case == HEARTH__ENVELOPE__MSG_ERROR &&
			 e->error->code == HEARTH__ERROR_CODE__ERR_BUSY)
			busy++;
		msg_free(e);
	}
	hwm = agent_hwm_kb(f);
	fprintf(stderr, "%d run, %d refused busy; agent peak RSS %ld kB\n", ok, busy, hwm);
	assert_int_equal(ok + busy, N);
	assert_true(ok >= 1 && busy >= N / 2);
	if (RSS_MEANINGFUL)
		assert_true(hwm < 100 * 1024);
	free(payload);
	assert_echo_works(f);
}

static void test_configure_bounded(void **state)
{
	struct fx *f = *state;
	size_t n = 3000000;
	const char **args = calloc(n, sizeof(*args));
	struct agent_config cfg = { .handler = ECHO_C, .args = args };
	long hwm;

	assert_non_null(args);
	for (size_t i = 0; i < n; i++)
		args[i] = "";
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	/* Three million empty args: a 6 MB frame that once took ~250 MiB to decode. */
	cfg.nargs = n;
	assert_int_equal(agent_configure(f->c, &cfg, 20000, NULL), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_BAD_MESSAGE);
	hwm = agent_hwm_kb(f);
	fprintf(stderr, "agent peak RSS %ld kB after a 3M-arg Configure\n", hwm);
	if (RSS_MEANINGFUL)
		assert_true(hwm < 64 * 1024);
	/* Within the decoding budget but over the Configure limits. */
	cfg.nargs = AGENT_CONFIGURE_MAX_ARGS + 1;
	assert_int_equal(agent_configure(f->c, &cfg, 20000, NULL), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_INVALID_ARGUMENT);
	free(args);
	assert_echo_works(f);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hello_ping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_echo_c, setup, teardown),
		cmocka_unit_test_setup_teardown(test_echo_shell, setup, teardown),
		cmocka_unit_test(test_handler_not_root),
		cmocka_unit_test_setup_teardown(test_function_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ignores_sigterm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_handler, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flood_stdout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outliving_children, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_protocol_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_while_busy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reseed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_init_step, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_result_over_host_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invoke_during_failing_init, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_bounded_in_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_configure_bounded, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return HEARTH_RUN_TESTS("agent", tests, argc, argv);
}
