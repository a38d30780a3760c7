/*
 * Runtime-mode tests (ctest label "runtime"): the real hearth-agent on a Unix
 * socket, configured with HANDLER_RUNTIME, running real custom runtimes (the
 * rt_test runtime, the examples) that talk to the Lambda Runtime API the
 * agent serves over HTTP (libmicrohttpd) on 127.0.0.1. Bad input comes both
 * from a buggy runtime and from this test acting as one over raw sockets.
 *
 * Every test ends by checking that the agent is still alive, and most by
 * invoking once more: bad input must leave the agent serving.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../cmocka_main.h"

#include "agent_client.h"
#include "msg.h"

struct fx {
	char dir[64];
	char sock[128];
	char addr_file[128];
	pid_t agent;
	struct agent_conn *c;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->dir, "/tmp/hearth-rt-test.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->sock, sizeof(f->sock), "%s/agent.sock", f->dir);
	snprintf(f->addr_file, sizeof(f->addr_file), "%s/api", f->dir);
	f->agent = fork();
	if (f->agent < 0)
		return -1;
	if (f->agent == 0) {
		execl(AGENT_BIN, "hearth-agent", "--unix", f->sock,
		      getenv("RT_TEST_VERBOSE") ? "--verbose" : NULL, (char *)NULL);
		_exit(127);
	}
	if (agent_connect_unix(f->sock, 5000, &f->c) != AGENT_OK)
		return -1;
	if (agent_hello(f->c, 5000, NULL) != AGENT_OK)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	int st = 0, alive = waitpid(f->agent, &st, WNOHANG) == 0;
	char cmd[128];

	agent_close(f->c);
	kill(f->agent, SIGTERM);
	waitpid(f->agent, &st, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	if (system(cmd) != 0) {
		/* best effort */
	}
	free(f);
	if (!alive) {
		fprintf(stderr, "agent died during the test\n");
		return -1;
	}
	return 0;
}

struct rtopts {
	const char *bootstrap;
	const char *mode;          /* RT_MODE */
	uint32_t timeout_ms;
	uint32_t init_timeout_ms;
	uint64_t max_resp;
	const char *arn;
	const char *workdir;
	const char *extra_env;
};

/* Configures runtime mode; returns agent_configure's code (init_us filled). */
static int rt_configure(struct fx *f, const struct rtopts *o, uint64_t *init_us)
{
	char mode[64], addr[160];
	const char *env[8];
	size_t n = 0;
	struct agent_config cfg = {
		.handler = o->bootstrap ? o->bootstrap : RT_TEST,
		.timeout_ms = o->timeout_ms ? o->timeout_ms : 5000,
		.init_timeout_ms = o->init_timeout_ms,
		.max_response_bytes = o->max_resp,
		.runtime = true,
		.function_arn = o->arn,
		.workdir = o->workdir,
	};

	snprintf(mode, sizeof(mode), "RT_MODE=%s", o->mode ? o->mode : "");
	snprintf(addr, sizeof(addr), "RT_ADDR_FILE=%s", f->addr_file);
	env[n++] = mode;
	env[n++] = addr;
	env[n++] = "GREETING=hi";
	env[n++] = "AWS_LAMBDA_FUNCTION_NAME=fn-under-test";
	env[n++] = "AWS_LAMBDA_FUNCTION_VERSION=7";
	env[n++] = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256";
	env[n++] = "_HANDLER=index.handler";
	if (o->extra_env)
		env[n++] = o->extra_env;
	cfg.env = env;
	cfg.nenv = n;
	return agent_configure(f->c, &cfg, 20000, init_us);
}

static void rt_up(struct fx *f, const struct rtopts *o)
{
	assert_int_equal(rt_configure(f, o, NULL), AGENT_OK);
}

static void inv(struct fx *f, const char *id, const char *payload, struct agent_result *r)
{
	assert_int_equal(agent_invoke(f->c, id, payload, strlen(payload), 0, 30000, r), AGENT_OK);
}

static bool body_is(const struct agent_result *r, const char *s)
{
	return r->body_len == strlen(s) && memcmp(r->body, s, r->body_len) == 0;
}

static bool logs_have(const struct agent_result *r, const char *s)
{
	char *l = strndup((const char *)r->logs, r->logs_len);
	bool yes = l && strstr(l, s);

	if (!yes) /* shown when the assertion fails */
		fprintf(stderr, "logs without \"%s\":\n%s\n", s, l ? l : "");
	free(l);
	return yes;
}

/* One more invoke works: the agent and its runtime recovered. */
static void assert_serving(struct fx *f)
{
	struct agent_result r;

	inv(f, "still-there", "echo alive", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(body_is(&r, "alive"));
	agent_result_free(&r);
}

/* "count=N pid=P" */
static void count_of(const struct agent_result *r, int *n, int *pid)
{
	char b[64];

	snprintf(b, sizeof(b), "%.*s", (int)r->body_len, (const char *)r->body);
	assert_int_equal(sscanf(b, "count=%d pid=%d", n, pid), 2);
}

/* ---- raw HTTP to the Runtime API, as a buggy runtime would send it ---------- */

static void api_addr(struct fx *f, struct sockaddr_in *sa)
{
	char buf[64] = "";
	FILE *fp = fopen(f->addr_file, "r");
	char *colon;

	assert_non_null(fp);
	assert_non_null(fgets(buf, sizeof(buf), fp));
	fclose(fp);
	colon = strrchr(buf, ':');
	assert_non_null(colon);
	*colon = 0;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((unsigned short)atoi(colon + 1));
	assert_int_equal(inet_pton(AF_INET, buf, &sa->sin_addr), 1);
}

/* Sends req (len bytes) and returns the status line's code and, in body, the answer. */
static int raw_http(struct fx *f, const void *req, size_t len, char *ans, size_t anslen)
{
	struct sockaddr_in sa;
	struct timeval tv = { .tv_sec = 10 };
	size_t have = 0, off = 0;
	int fd, st = -1;

	api_addr(f, &sa);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	while (off < len) {
		ssize_t n = write(fd, (const char *)req + off, len - off);

		if (n <= 0)
			break; /* the server may close early on a refused request */
		off += (size_t)n;
	}
	shutdown(fd, SHUT_WR);
	for (;;) {
		ssize_t n = read(fd, ans + have, anslen - 1 - have);

		if (n <= 0)
			break;
		have += (size_t)n;
		if (have == anslen - 1)
			break;
	}
	ans[have] = 0;
	close(fd);
	if (sscanf(ans, "HTTP/1.%*d %d", &st) != 1)
		st = -1;
	return st;
}

static int raw_str(struct fx *f, const char *req)
{
	char ans[4096];

	return raw_http(f, req, strlen(req), ans, sizeof(ans));
}

/* ---- the tests -------------------------------------------------------------- */

/* Every header of /next and every variable of the Lambda environment. */
static void test_rt_headers_and_env(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { .timeout_ms = 4000, .workdir = "/tmp" };
	struct agent_result r;
	struct timespec ts;
	char *b;
	long long deadline;
	int64_t wall_ms;

	rt_up(f, &o);
	clock_gettime(CLOCK_REALTIME, &ts);
	wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	inv(f, "req-env-1", "env", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	b = strndup((const char *)r.body, r.body_len);
	assert_non_null(strstr(b, "id=req-env-1\n"));
	assert_non_null(strstr(b, "_HANDLER=index.handler\n"));
	assert_non_null(strstr(b, "LAMBDA_TASK_ROOT=/tmp\n"));
	assert_non_null(strstr(b, "AWS_LAMBDA_FUNCTION_NAME=fn-under-test\n"));
	assert_non_null(strstr(b, "AWS_LAMBDA_FUNCTION_VERSION=7\n"));
	assert_non_null(strstr(b, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256\n"));
	assert_non_null(strstr(b, "AWS_REGION=us-east-1\n"));  /* the agent's default */
	assert_non_null(strstr(b, "TZ=:UTC\n"));
	assert_non_null(strstr(b, "GREETING=hi\n"));
	assert_non_null(strstr(b, "AWS_LAMBDA_RUNTIME_API=127.0.0.1:"));
	assert_non_null(strstr(b, "cwd=/tmp\n"));
	assert_non_null(strstr(b, "arn=arn:aws:lambda:us-east-1:000000000000:function:fn-under-test\n"));
	assert_non_null(strstr(b, "trace=Root=1-"));
	assert_non_null(strstr(b, ";Parent="));
	assert_int_equal(sscanf(strstr(b, "deadline=") + 9, "%lld", &deadline), 1);
	/* Wall-clock ms of the deadline: about now + 4 s. */
	assert_true(deadline >= wall_ms + 3000 && deadline <= wall_ms + 5000);
	free(b);
	agent_result_free(&r);

	/* A configured ARN and region are used as given. */
	o.arn = "arn:aws:lambda:eu-west-3:123456789012:function:given:3";
	o.extra_env = "AWS_REGION=eu-west-3";
	rt_up(f, &o);
	inv(f, "req-env-2", "env", &r);
	b = strndup((const char *)r.body, r.body_len);
	assert_non_null(strstr(b, "arn=arn:aws:lambda:eu-west-3:123456789012:function:given:3\n"));
	assert_non_null(strstr(b, "AWS_REGION=eu-west-3\n"));
	free(b);
	agent_result_free(&r);
}

/* The runtime lives across invocations: same process, state kept. */
static void test_rt_state_across_invokes(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;
	int n, pid, pid0 = 0;

	rt_up(f, &o);
	for (int i = 1; i <= 5; i++) {
		inv(f, "req-count", "count", &r);
		assert_int_equal(r.status, AGENT_INVOKE_OK);
		count_of(&r, &n, &pid);
		assert_int_equal(n, i);
		if (i == 1)
			pid0 = pid;
		assert_int_equal(pid, pid0);
		assert_true(r.max_rss_kb > 0);
		agent_result_free(&r);
	}
}

/* Init: Ready only after the first /next, with its duration; slow init counts. */
static void test_rt_init_duration(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { .mode = "slow-init" };
	uint64_t init_us = 0;

	assert_int_equal(rt_configure(f, &o, &init_us), AGENT_OK);
	assert_true(init_us >= 300000);
	assert_true(init_us < 5000000);
	assert_serving(f);
}

static void test_rt_init_error(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { .mode = "init-error" };
	struct agent_result r;

	assert_int_equal(rt_configure(f, &o, NULL), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_INIT_FAILED);
	assert_non_null(strstr(agent_last_error(f->c), "Runtime.ConfigMissing"));
	assert_non_null(strstr(agent_last_error(f->c), "no DB_URL"));
	assert_non_null(strstr(agent_last_error(f->c), "rt_test: init (mode 'init-error')"));
	inv(f, "req-after-init-error", "echo x", &r);
	assert_int_equal(r.status, AGENT_INVOKE_NOT_CONFIGURED);
	agent_result_free(&r);
	o.mode = NULL;
	rt_up(f, &o);
	assert_serving(f);
}

static void test_rt_init_exit(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { .mode = "init-exit" };

	assert_int_equal(rt_configure(f, &o, NULL), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_INIT_FAILED);
	assert_non_null(strstr(agent_last_error(f->c), "exited with status 3 during init"));
	assert_non_null(strstr(agent_last_error(f->c), "cannot load my config"));
	/* A bootstrap that cannot be executed at all is an init error too. */
	o.bootstrap = "/nonexistent/bootstrap";
	o.mode = NULL;
	assert_int_equal(rt_configure(f, &o, NULL), AGENT_EREMOTE);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_INIT_FAILED);
	assert_non_null(strstr(agent_last_error(f->c), "No such file"));
	o.bootstrap = NULL;
	rt_up(f, &o);
	assert_serving(f);
}

/* A runtime that never asks for an event: a clear init error at the init timeout. */
static void test_rt_never_next(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { .mode = "never-next", .init_timeout_ms = 700 };
	int64_t t0 = now_ms();

	assert_int_equal(rt_configure(f, &o, NULL), AGENT_EREMOTE);
	assert_true(now_ms() - t0 >= 700);
	assert_true(now_ms() - t0 < 5000);
	assert_int_equal(agent_last_error_code(f->c), HEARTH__ERROR_CODE__ERR_INIT_FAILED);
	assert_non_null(strstr(agent_last_error(f->c), "did not ask for an event"));
	assert_non_null(strstr(agent_last_error(f->c), "within 700 ms"));
	o.mode = NULL;
	rt_up(f, &o);
	assert_serving(f);
}

static void test_rt_function_error(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;

	rt_up(f, &o);
	inv(f, "req-err", "error", &r);
	assert_int_equal(r.status, AGENT_INVOKE_FUNCTION_ERROR);
	assert_string_equal(r.error, "MyError.Kind");
	assert_true(body_is(&r, "{\"errorMessage\":\"it broke\",\"errorType\":\"MyError.Kind\"}"));
	agent_result_free(&r);
	inv(f, "req-after", "log", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(logs_have(&r, "rt_test: error answered 202"));
	assert_true(logs_have(&r, "a log line for req-after"));
	agent_result_free(&r);
}

/* A crash fails its invocation as Runtime.ExitError; a new runtime serves the next. */
static void test_rt_crash_restart(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;
	int n, pid1, pid2;

	rt_up(f, &o);
	inv(f, "req-c1", "count", &r);
	count_of(&r, &n, &pid1);
	agent_result_free(&r);
	inv(f, "req-crash", "crash", &r);
	assert_int_equal(r.status, AGENT_INVOKE_FUNCTION_ERROR);
	assert_non_null(strstr(r.error, "Runtime.ExitError"));
	assert_non_null(strstr(r.error, "signal 11"));
	assert_int_equal(r.signal, SIGSEGV);
	assert_true(logs_have(&r, "rt_test: crashing"));
	agent_result_free(&r);
	inv(f, "req-c2", "count", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	count_of(&r, &n, &pid2);
	assert_int_equal(n, 1);          /* a fresh process, initialised again */
	assert_int_not_equal(pid1, pid2);
	agent_result_free(&r);
	/* An exit with a status, too. */
	inv(f, "req-exit", "exit 4", &r);
	assert_int_equal(r.status, AGENT_INVOKE_FUNCTION_ERROR);
	assert_non_null(strstr(r.error, "Runtime.ExitError: the runtime exited with status 4"));
	assert_int_equal(r.exit_code, 4);
	agent_result_free(&r);
	assert_serving(f);
}

/* A restart whose init fails: reported, and the next invocation starts it again. */
static void test_rt_restart_init_error(void **state)
{
	struct fx *f = *state;
	char flag[160], env[200];
	struct rtopts o = { .extra_env = env };
	struct agent_result r;
	int n, pid;

	snprintf(flag, sizeof(flag), "%s/fail-next-init", f->dir);
	snprintf(env, sizeof(env), "RT_FAIL_FLAG=%s", flag);
	rt_up(f, &o);
	inv(f, "req-arm", "arm", &r);
	assert_true(body_is(&r, "armed"));
	agent_result_free(&r);
	inv(f, "req-crash", "crash", &r);   /* restarted at once; that start's init fails */
	assert_int_equal(r.status, AGENT_INVOKE_FUNCTION_ERROR);
	agent_result_free(&r);
	inv(f, "req-after", "count", &r);
	if (r.status == AGENT_INVOKE_INIT_FAILED) {
		/* It was still initialising when this invocation came: it failed with it. */
		assert_non_null(strstr(r.error, "Runtime.InitError"));
		agent_result_free(&r);
		inv(f, "req-after2", "count", &r);
	}
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	count_of(&r, &n, &pid);
	assert_int_equal(n, 1);
	agent_result_free(&r);
	assert_serving(f);
}

/* The agent enforces the deadline, restarts the runtime, and a late answer is 409. */
static void test_rt_deadline(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { .timeout_ms = 400 };
	struct agent_result r;
	int64_t t0 = now_ms();
	char ans[4096];
	static const char late[] =
		"POST /2018-06-01/runtime/invocation/req-slow/response HTTP/1.1\r\nHost: x\r\n"
		"Content-Length: 4\r\n\r\nlate";

	rt_up(f, &o);
	inv(f, "req-slow", "sleep 10000", &r);
	assert_int_equal(r.status, AGENT_INVOKE_TIMEOUT);
	assert_non_null(strstr(r.error, "timed out after 400 ms"));
	assert_true(now_ms() - t0 >= 400 && now_ms() - t0 < 5000);
	agent_result_free(&r);
	/* A response after the deadline (from whoever still has the id) is refused. */
	assert_int_equal(raw_http(f, late, sizeof(late) - 1, ans, sizeof(ans)), 409);
	assert_non_null(strstr(ans, "deadline passed"));
	assert_serving(f);
}

/* Over max_response_bytes: 413 to the runtime, RESPONSE_TOO_LARGE to the host. */
static void test_rt_oversized_response(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { .max_resp = 4096 };
	struct agent_result r;

	rt_up(f, &o);
	inv(f, "req-big-ok", "big 4096", &r);    /* exactly the limit fits */
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_int_equal(r.body_len, 4096);
	agent_result_free(&r);
	/* What a runtime logs after its answer is decided goes with the next invocation. */
	inv(f, "req-big", "big 4097", &r);
	assert_int_equal(r.status, AGENT_INVOKE_RESPONSE_TOO_LARGE);
	assert_non_null(strstr(r.error, "exceeds 4096 bytes"));
	assert_int_equal(r.body_len, 0);
	assert_true(logs_have(&r, "big answered 202"));
	agent_result_free(&r);
	/* Chunked, with no Content-Length to refuse up front: cut off as it streams. */
	inv(f, "req-big-chunked", "bigchunked 300000", &r);
	assert_int_equal(r.status, AGENT_INVOKE_RESPONSE_TOO_LARGE);
	assert_true(logs_have(&r, "big answered 413"));
	agent_result_free(&r);
	inv(f, "req-after-big", "log", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(logs_have(&r, "bigchunked answered 413"));
	agent_result_free(&r);
}

/* A runtime slow to come back to /next: the invocation waits for it. */
static void test_rt_slow_next(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { .timeout_ms = 3000 };
	struct agent_result r;
	int64_t t0;

	rt_up(f, &o);
	inv(f, "req-s1", "slow 500", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	agent_result_free(&r);
	t0 = now_ms();
	inv(f, "req-s2", "echo waited", &r);   /* handed out only when the runtime asks */
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(body_is(&r, "waited"));
	assert_true(now_ms() - t0 >= 350);
	/* Duration counts from the hand-out, not from the wait. */
	assert_true(r.duration_us < 300000);
	agent_result_free(&r);
	/* Slower than the deadline: the waiting invocation times out. */
	o.timeout_ms = 300;
	rt_up(f, &o);
	inv(f, "req-s3", "slow 2000", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	agent_result_free(&r);
	inv(f, "req-s4", "echo never", &r);
	assert_int_equal(r.status, AGENT_INVOKE_TIMEOUT);
	agent_result_free(&r);
	assert_serving(f);
}

/* A second response, and an error after a response: 409; one result only. */
static void test_rt_double_response(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;
	struct agent_pong pong;

	rt_up(f, &o);
	inv(f, "req-double", "double", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(body_is(&r, "first"));
	agent_result_free(&r);
	assert_int_equal(agent_ping(f->c, 5000, &pong), AGENT_OK);
	assert_false(pong.busy);
	/* agent_invoke matches by seq: a stray second result would fail this call. */
	inv(f, "req-next", "log", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(logs_have(&r, "double answered 202 409 409"));
	agent_result_free(&r);
}

static void test_rt_wrong_request_id(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;

	rt_up(f, &o);
	inv(f, "req-right", "wrongid", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(body_is(&r, "right"));
	agent_result_free(&r);
	inv(f, "req-next", "log", &r);
	assert_true(logs_have(&r, "wrongid answered 400 400 202"));
	agent_result_free(&r);
	/* A request id the Runtime API cannot carry in a path is refused up front. */
	inv(f, "bad/id", "echo x", &r);
	assert_int_equal(r.status, AGENT_INVOKE_REJECTED);
	agent_result_free(&r);
	assert_serving(f);
}

/* /next again without answering: the invocation fails, once, as Runtime.NoResponse. */
static void test_rt_next_without_response(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;

	rt_up(f, &o);
	inv(f, "req-noresp", "noresp", &r);
	assert_int_equal(r.status, AGENT_INVOKE_FUNCTION_ERROR);
	assert_non_null(strstr(r.error, "Runtime.NoResponse"));
	agent_result_free(&r);
	assert_serving(f);
}

/* Malformed requests from the runtime itself: 4xx each, and the agent serves on. */
static void test_rt_malformed_from_runtime(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;

	rt_up(f, &o);
	inv(f, "req-bad", "badreqs", &r);
	/* Its oversized (declared 99999999999 bytes) response decided the invocation. */
	assert_int_equal(r.status, AGENT_INVOKE_RESPONSE_TOO_LARGE);
	agent_result_free(&r);
	inv(f, "req-next", "log", &r);
	/* A request line with no URI at all: libmicrohttpd closes the connection without an
	 * answer (-1). Then POST /next 405, GET .../response 405, unknown path 404, bad id
	 * 400, oversized 413, init/error after init 403, negative Content-Length 400. */
	assert_true(logs_have(&r, "badreqs answered -1 405 405 404 400 413 403 400"));
	agent_result_free(&r);
	assert_serving(f);
}

/* Hostile requests from outside the runtime (any process in the VM can connect). */
static void test_rt_malformed_from_outside(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	size_t big = 200000;
	char *req = malloc(big + 256);
	char ans[4096];
	int n;

	rt_up(f, &o);
	assert_int_equal(raw_str(f, "\x01\x02\x03 nonsense\r\n\r\n"), 400);
	assert_int_equal(raw_str(f, "GET /2018-06-01/runtime/invocation/next HTTP/9.9\r\n\r\n"), 505);
	assert_int_equal(raw_str(f, "DELETE /2018-06-01/runtime/invocation/next HTTP/1.1\r\n"
				    "Host: x\r\n\r\n"), 405);
	assert_int_equal(raw_str(f, "POST /2018-06-01/runtime/invocation/nobody/response HTTP/1.1\r\n"
				    "Host: x\r\nContent-Length: 2\r\n\r\nhi"), 400);
	assert_int_equal(raw_str(f, "POST /2018-06-01/runtime/invocation//response HTTP/1.1\r\n"
				    "Host: x\r\nContent-Length: 0\r\n\r\n"), 404);
	assert_int_equal(raw_str(f, "POST /2018-06-01/runtime/invocation/x/response/more HTTP/1.1\r\n"
				    "Host: x\r\nContent-Length: 0\r\n\r\n"), 404);
	/* A header far larger than the connection's memory. */
	n = snprintf(req, 256, "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nX-Big: ");
	memset(req + n, 'a', big);
	memcpy(req + n + big, "\r\n\r\n", 4);
	int st = raw_http(f, req, (size_t)n + big + 4, ans, sizeof(ans));

	assert_true(st == 431 || st == 413 || st == 414);
	/* A huge body to an id that is not in progress: refused before it is read. */
	n = snprintf(req, 256, "POST /2018-06-01/runtime/invocation/nobody/error HTTP/1.1\r\n"
		     "Host: x\r\nContent-Length: %zu\r\n\r\n", big);
	memset(req + n, 'b', big);
	assert_int_equal(raw_http(f, req, (size_t)n + big, ans, sizeof(ans)), 400);
	free(req);
	assert_serving(f);
}

static int raw_connect(struct fx *f)
{
	struct sockaddr_in sa;
	struct timeval tv = { .tv_sec = 10 };
	int fd;

	api_addr(f, &sa);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static int read_status(int fd)
{
	char ans[1024];
	ssize_t n = read(fd, ans, sizeof(ans) - 1);
	int st = -1;

	if (n > 0) {
		ans[n] = 0;
		if (sscanf(ans, "HTTP/1.%*d %d", &st) != 1)
			st = -1;
	}
	return st;
}

/* Two answers for one invocation at once: the second is refused while the first's body
 * is still arriving; the first decides it; the runtime's own answer later is 409. */
static void test_rt_concurrent_answers(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;
	static const char head[] = "POST /2018-06-01/runtime/invocation/req-race/response HTTP/1.1\r\n"
				   "Host: x\r\nContent-Length: 10\r\n\r\n";
	int a, b;

	rt_up(f, &o);
	assert_int_equal(agent_invoke_send(f->c, "req-race", "sleep 1500", 10, 0), AGENT_OK);
	usleep(300000);  /* handed out; the runtime sleeps */
	a = raw_connect(f);
	assert_int_equal(write(a, head, sizeof(head) - 1), (ssize_t)sizeof(head) - 1);
	assert_int_equal(write(a, "from", 4), 4);
	usleep(100000);
	b = raw_connect(f);
	assert_int_equal(write(b, head, sizeof(head) - 1), (ssize_t)sizeof(head) - 1);
	assert_int_equal(read_status(b), 409);
	close(b);
	assert_int_equal(write(a, "-outside", 6), 6);
	assert_int_equal(read_status(a), 202);
	close(a);
	assert_int_equal(agent_invoke_recv(f->c, 20000, &r), AGENT_OK);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(body_is(&r, "from-outsi"));  /* its 10 declared bytes */
	agent_result_free(&r);
	inv(f, "req-after-race", "log", &r);
	assert_true(logs_have(&r, "rt_test: sleep answered 409"));
	agent_result_free(&r);
	assert_serving(f);
}

/* The host connection goes away and comes back (as after a snapshot restore):
 * the runtime, and its state, stay; no second init. */
static void test_rt_host_reconnect_keeps_runtime(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;
	uint8_t seed[32] = { 1, 2, 3 };
	int n, pid1, pid2;

	rt_up(f, &o);
	inv(f, "req-r1", "count", &r);
	count_of(&r, &n, &pid1);
	agent_result_free(&r);
	agent_close(f->c);
	assert_int_equal(agent_connect_unix(f->sock, 5000, &f->c), AGENT_OK);
	assert_int_equal(agent_hello(f->c, 5000, NULL), AGENT_OK);
	assert_int_equal(agent_reseed(f->c, seed, sizeof(seed), 5000), AGENT_OK);
	inv(f, "req-r2", "count", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	count_of(&r, &n, &pid2);
	assert_int_equal(n, 2);
	assert_int_equal(pid1, pid2);
	agent_result_free(&r);
}

/* Pipelined invokes are queued and handed to the runtime one at a time, in order. */
static void test_rt_pipelined(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_result r;
	char id[32], want[32];

	rt_up(f, &o);
	for (int i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "req-p%d", i);
		assert_int_equal(agent_invoke_send(f->c, id, "count", 5, 0), AGENT_OK);
	}
	for (int i = 0; i < 20; i++) {
		assert_int_equal(agent_invoke_recv(f->c, 20000, &r), AGENT_OK);
		assert_int_equal(r.status, AGENT_INVOKE_OK);
		snprintf(id, sizeof(id), "req-p%d", i);
		assert_string_equal(r.request_id, id);
		snprintf(want, sizeof(want), "count=%d ", i + 1);
		assert_true(r.body_len > strlen(want) && !memcmp(r.body, want, strlen(want)));
		agent_result_free(&r);
	}
}

/* The shipped examples, under the agent directly (hearthd tests deploy them too). */
static void test_rt_example_shell(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { .bootstrap = EXAMPLES "/runtime-shell/bootstrap",
			    .workdir = EXAMPLES "/runtime-shell" };
	struct agent_result r;
	static const char *const env[] = { "_HANDLER=greet",
					   "LAMBDA_TASK_ROOT=" EXAMPLES "/runtime-shell" };
	struct agent_config cfg = { .handler = o.bootstrap, .workdir = o.workdir, .runtime = true,
				    .env = env, .nenv = 2 };

	assert_int_equal(agent_configure(f->c, &cfg, 20000, NULL), AGENT_OK);
	for (int i = 0; i < 3; i++) {
		inv(f, "req-sh", "{\"n\": 1}", &r);
		assert_int_equal(r.status, AGENT_INVOKE_OK);
		assert_true(body_is(&r, "hello from a shell runtime: {\"n\": 1}"));
		agent_result_free(&r);
	}
}

static void test_rt_example_c(void **state)
{
	struct fx *f = *state;
	struct agent_config cfg = { .handler = EXAMPLES_BUILD "/runtime-c/bootstrap",
				    .runtime = true };
	struct agent_result r;

	assert_int_equal(agent_configure(f->c, &cfg, 20000, NULL), AGENT_OK);
	inv(f, "req-c1", "abc", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(r.body_len > 19 && !memcmp(r.body, "ABC (event 1 of pid", 19));
	agent_result_free(&r);
	inv(f, "req-c2", "def", &r);
	assert_true(r.body_len > 19 && !memcmp(r.body, "DEF (event 2 of pid", 19));
	agent_result_free(&r);
}

static void test_rt_example_counter(void **state)
{
	struct fx *f = *state;
	struct agent_config cfg = { .handler = EXAMPLES "/counter/bootstrap", .runtime = true };
	struct agent_result r;
	char want[32];

	assert_int_equal(agent_configure(f->c, &cfg, 20000, NULL), AGENT_OK);
	for (int i = 1; i <= 4; i++) {
		inv(f, "req-n", "{}", &r);
		assert_int_equal(r.status, AGENT_INVOKE_OK);
		snprintf(want, sizeof(want), "{\"count\": %d, ", i);
		assert_true(r.body_len > strlen(want) && !memcmp(r.body, want, strlen(want)));
		agent_result_free(&r);
	}
}

/* Exec mode after runtime mode, and back: the runtime is stopped, nothing leaks. */
static void test_rt_mode_switch(void **state)
{
	struct fx *f = *state;
	struct rtopts o = { 0 };
	struct agent_config exec = { .handler = "/bin/cat" };
	struct agent_result r;

	rt_up(f, &o);
	assert_serving(f);
	assert_int_equal(agent_configure(f->c, &exec, 5000, NULL), AGENT_OK);
	inv(f, "req-exec", "plain exec", &r);
	assert_int_equal(r.status, AGENT_INVOKE_OK);
	assert_true(body_is(&r, "plain exec"));
	agent_result_free(&r);
	rt_up(f, &o);
	assert_serving(f);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(test_rt_headers_and_env),
		T(test_rt_state_across_invokes),
		T(test_rt_init_duration),
		T(test_rt_init_error),
		T(test_rt_init_exit),
		T(test_rt_never_next),
		T(test_rt_function_error),
		T(test_rt_crash_restart),
		T(test_rt_restart_init_error),
		T(test_rt_deadline),
		T(test_rt_oversized_response),
		T(test_rt_slow_next),
		T(test_rt_double_response),
		T(test_rt_wrong_request_id),
		T(test_rt_next_without_response),
		T(test_rt_malformed_from_runtime),
		T(test_rt_malformed_from_outside),
		T(test_rt_concurrent_answers),
		T(test_rt_host_reconnect_keeps_runtime),
		T(test_rt_pipelined),
		T(test_rt_example_shell),
		T(test_rt_example_c),
		T(test_rt_example_counter),
		T(test_rt_mode_switch),
	};

	signal(SIGPIPE, SIG_IGN);
	return HEARTH_RUN_TESTS("runtime", tests, argc, argv);
}
