/*
 * rt_test: a Lambda custom runtime for the agent's runtime tests, that does
 * what each event tells it (the first word of the payload), including the
 * things a buggy runtime does. What it saw comes back in its responses or,
 * for what happens after an outcome is decided, on stderr (which lands in the
 * next invocation's logs).
 *
 * RT_MODE (env) chooses its init: "" normal, "init-error" (POST init/error),
 * "init-exit" (exit 3 before /next), "never-next", "slow-init" (300 ms).
 * RT_ADDR_FILE (env), if set, receives AWS_LAMBDA_RUNTIME_API.
 * RT_FAIL_FLAG (env): a file that, when present at start, makes this start's
 * init fail once (the file is removed); the event "arm" creates it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lambda_http.h"

static const char *api;

/* Sends raw bytes as one request; returns the status of the answer or -1. */
static int raw(const char *req, size_t len)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64], buf[4096];
	const char *colon = strrchr(api, ':');
	int fd, st = -1;
	size_t have = 0;

	memcpy(host, api, (size_t)(colon - api));
	host[colon - api] = 0;
	sa.sin_port = htons((unsigned short)atoi(colon + 1));
	inet_pton(AF_INET, host, &sa.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out;
	if (write(fd, req, len) != (ssize_t)len)
		goto out;
	shutdown(fd, SHUT_WR);
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);

		if (n <= 0)
			break;
		have += (size_t)n;
		if (have == sizeof(buf) - 1)
			break;
	}
	buf[have] = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &st) != 1)
		st = -1;
out:
	if (fd >= 0)
		close(fd);
	return st;
}

/* POSTs n bytes of 'x' with chunked encoding (no Content-Length). */
static int post_chunked(const char *id, size_t n)
{
	char *req;
	size_t len = 0, chunk = 65536;
	int st;

	req = malloc(n + n / chunk * 16 + 1024);
	if (!req)
		return -1;
	len += (size_t)sprintf(req, "POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\n"
			       "Host: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", id);
	for (size_t off = 0; off < n; off += chunk) {
		size_t c = n - off < chunk ? n - off : chunk;

		len += (size_t)sprintf(req + len, "%zx\r\n", c);
		memset(req + len, 'x', c);
		len += c;
		memcpy(req + len, "\r\n", 2);
		len += 2;
	}
	memcpy(req + len, "0\r\n\r\n", 5);
	len += 5;
	st = raw(req, len);
	free(req);
	return st;
}

static int respond_str(const char *id, const char *s)
{
	return lh_respond(api, id, s, strlen(s));
}

int main(void)
{
	const char *mode = getenv("RT_MODE") ? getenv("RT_MODE") : "";
	const char *addr_file = getenv("RT_ADDR_FILE");
	unsigned long count = 0;
	unsigned slow_ms = 0;

	setvbuf(stderr, NULL, _IONBF, 0);
	api = getenv("AWS_LAMBDA_RUNTIME_API");
	if (!api) {
		fprintf(stderr, "rt_test: no AWS_LAMBDA_RUNTIME_API\n");
		return 2;
	}
	if (addr_file) {
		FILE *f = fopen(addr_file, "w");

		if (f) {
			fputs(api, f);
			fclose(f);
		}
	}
	fprintf(stderr, "rt_test: init (mode '%s')\n", mode);
	if (getenv("RT_FAIL_FLAG") && unlink(getenv("RT_FAIL_FLAG")) == 0)
		mode = "init-error";
	if (!strcmp(mode, "init-exit")) {
		fprintf(stderr, "rt_test: cannot load my config\n");
		return 3;
	}
	if (!strcmp(mode, "init-error")) {
		struct lh_resp r;

		lh_call(api, "POST", "/2018-06-01/runtime/init/error",
			"Lambda-Runtime-Function-Error-Type: Runtime.ConfigMissing\r\n",
			"{\"errorMessage\":\"no DB_URL\"}", 27, &r);
		fprintf(stderr, "rt_test: init/error answered %d\n", r.status);
		free(r.body);
		pause();
	}
	if (!strcmp(mode, "never-next"))
		for (;;)
			pause();
	if (!strcmp(mode, "slow-init"))
		usleep(300000);

	for (;;) {
		struct lh_resp ev;
		char cmd[32] = "", out[8192];
		const char *arg;

		if (slow_ms)
			usleep(slow_ms * 1000u);
		slow_ms = 0;
		if (lh_next(api, &ev) != 200) {
			fprintf(stderr, "rt_test: /next answered %d\n", ev.status);
			free(ev.body);
			usleep(100000);
			continue;
		}
		count++;
		sscanf(ev.body, "%31s", cmd);
		arg = ev.body + strlen(cmd);
		while (*arg == ' ')
			arg++;
		if (!strcmp(cmd, "echo")) {
			respond_str(ev.request_id, arg);
		} else if (!strcmp(cmd, "env")) {
			static const char *const keys[] = {
				"_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_NAME",
				"AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
				"AWS_REGION", "TZ", "AWS_LAMBDA_RUNTIME_API", "GREETING",
			};
			size_t n = 0;
			char cwd[256];

			for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
				n += (size_t)snprintf(out + n, sizeof(out) - n, "%s=%s\n", keys[i],
						      getenv(keys[i]) ? getenv(keys[i]) : "(unset)");
			n += (size_t)snprintf(out + n, sizeof(out) - n,
					      "id=%s\ndeadline=%s\narn=%s\ntrace=%s\ncwd=%s\n",
					      ev.request_id, ev.deadline_ms, ev.function_arn,
					      ev.trace_id, getcwd(cwd, sizeof(cwd)) ? cwd : "?");
			lh_respond(api, ev.request_id, out, n);
		} else if (!strcmp(cmd, "count")) {
			snprintf(out, sizeof(out), "count=%lu pid=%d", count, (int)getpid());
			respond_str(ev.request_id, out);
		} else if (!strcmp(cmd, "log")) {
			fprintf(stderr, "rt_test: a log line for %s\n", ev.request_id);
			respond_str(ev.request_id, "logged");
		} else if (!strcmp(cmd, "error")) {
			int st = lh_error(api, ev.request_id, "MyError.Kind", "it broke");

			fprintf(stderr, "rt_test: error answered %d\n", st);
		} else if (!strcmp(cmd, "crash")) {
			fprintf(stderr, "rt_test: crashing\n");
			raise(SIGSEGV);
		} else if (!strcmp(cmd, "exit")) {
			exit(atoi(arg));
		} else if (!strcmp(cmd, "sleep")) {
			usleep((useconds_t)atoi(arg) * 1000u);
			fprintf(stderr, "rt_test: sleep answered %d\n", respond_str(ev.request_id, "slept"));
		} else if (!strcmp(cmd, "slow")) {
			respond_str(ev.request_id, "ok");
			slow_ms = (unsigned)atoi(arg);
		} else if (!strcmp(cmd, "big")) {
			size_t n = (size_t)atol(arg);
			char *b = malloc(n);
			int st;

			memset(b, 'x', n);
			st = lh_respond(api, ev.request_id, b, n);
			free(b);
			fprintf(stderr, "rt_test: big answered %d\n", st);
		} else if (!strcmp(cmd, "bigchunked")) {
			fprintf(stderr, "rt_test: bigchunked answered %d\n",
				post_chunked(ev.request_id, (size_t)atol(arg)));
		} else if (!strcmp(cmd, "double")) {
			int a = respond_str(ev.request_id, "first");
			int b = respond_str(ev.request_id, "second");
			int c = lh_error(api, ev.request_id, "Late", "late error");

			fprintf(stderr, "rt_test: double answered %d %d %d\n", a, b, c);
		} else if (!strcmp(cmd, "wrongid")) {
			int a = respond_str("not-this-one", "x");
			int b = lh_error(api, "not-this-one", "X", "x");
			int c = respond_str(ev.request_id, "right");

			fprintf(stderr, "rt_test: wrongid answered %d %d %d\n", a, b, c);
		} else if (!strcmp(cmd, "arm")) {
			FILE *f = getenv("RT_FAIL_FLAG") ? fopen(getenv("RT_FAIL_FLAG"), "w") : NULL;

			if (f)
				fclose(f);
			respond_str(ev.request_id, f ? "armed" : "no RT_FAIL_FLAG");
		} else if (!strcmp(cmd, "noresp")) {
			/* asks for the next event without answering this one */
		} else if (!strcmp(cmd, "badreqs")) {
			static const char *const reqs[] = {
				"GARBAGE\r\n\r\n",
				"POST /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n"
				"Content-Length: 0\r\n\r\n",
				"GET /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: x\r\n\r\n",
				"GET /2018-06-01/runtime/nothing-here HTTP/1.1\r\nHost: x\r\n\r\n",
				"POST /2018-06-01/runtime/invocation/bad%20id/response HTTP/1.1\r\n"
				"Host: x\r\nContent-Length: 1\r\n\r\nx",
				"POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: x\r\n"
				"Content-Length: 99999999999\r\n\r\nx",
				"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\n"
				"Connection: close\r\nContent-Length: 2\r\n\r\n{}",
				"POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\nHost: x\r\n"
				"Content-Length: -5\r\n\r\n",
			};
			size_t n = 0;

			for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
				char req[512];
				/* "%s" in a request is this invocation's id */
				const char *pct = strstr(reqs[i], "%s");
				int len;

				if (pct)
					len = snprintf(req, sizeof(req), "%.*s%s%s", (int)(pct - reqs[i]),
						       reqs[i], ev.request_id, pct + 2);
				else
					len = snprintf(req, sizeof(req), "%s", reqs[i]);

				int st = raw(req, (size_t)len);

				fprintf(stderr, "rt_test: badreqs %zu: %d\n", i, st);
				n += (size_t)snprintf(out + n, sizeof(out) - n, "%d ", st);
			}
			/* The one oversized request above decided this invocation already. */
			fprintf(stderr, "rt_test: badreqs answered %s\n", out);
			respond_str(ev.request_id, out);
		} else {
			lh_error(api, ev.request_id, "UnknownCommand", "unknown command");
		}
		free(ev.body);
	}
}
