/* bench_qmp.c - the benchmarks' QMP client. See bench_qmp.h. */
#include "bench_qmp.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench_vmm.h"
#include "harness.h"

static void seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

int qmp_connect(struct qmp *q, const char *path, pid_t pid, long long deadline)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	q->len = 0;
	while (now_us() < deadline) {
		q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (q->fd < 0)
			return -1;
		if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return 0;
		close(q->fd);
		q->fd = -1;
		if (bv_exited(pid))
			return -1;
		usleep(100);
	}
	return -1;
}

json_t *qmp_read(struct qmp *q, long long deadline)
{
	for (;;) {
		char *nl = memchr(q->buf, '\n', q->len);
		if (nl) {
			size_t n = (size_t)(nl - q->buf) + 1;
			json_t *j = json_loadb(q->buf, n, 0, NULL);
			memmove(q->buf, q->buf + n, q->len - n);
			q->len -= n;
			return j;
		}
		if (q->len == sizeof(q->buf))
			return NULL;
		struct pollfd p = { .fd = q->fd, .events = POLLIN };
		long long left = (deadline - now_us()) / 1000;
		if (left < 0 || poll(&p, 1, (int)left) <= 0)
			return NULL;
		ssize_t k = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);
		if (k <= 0)
			return NULL;
		q->len += (size_t)k;
	}
}

json_t *qmp_cmd(struct qmp *q, const char *cmd, long long deadline, char *err, size_t errlen)
{
	size_t n = strlen(cmd);
	if (write(q->fd, cmd, n) != (ssize_t)n) {
		seterr(err, errlen, "QMP write failed: %s", strerror(errno));
		return NULL;
	}
	for (;;) {
		json_t *j = qmp_read(q, deadline);
		if (!j) {
			seterr(err, errlen, "no QMP answer to %.60s", cmd);
			return NULL;
		}
		json_t *r = json_object_get(j, "return");
		if (r) {
			json_incref(r);
			json_decref(j);
			return r;
		}
		json_t *e = json_object_get(j, "error");
		if (e) {
			seterr(err, errlen, "QMP refused %.60s: %s", cmd,
			       json_string_value(json_object_get(e, "desc")) ?: "?");
			json_decref(j);
			return NULL;
		}
		json_decref(j); /* an event */
	}
}

int qmp_open(struct qmp *q, const char *path, pid_t pid, long long deadline, char *err,
		    size_t errlen)
{
	if (qmp_connect(q, path, pid, deadline) < 0) {
		seterr(err, errlen, "QEMU exited or QMP socket %s never came up", path);
		return -1;
	}
	json_t *greeting = qmp_read(q, deadline);
	if (!greeting || !json_object_get(greeting, "QMP")) {
		json_decref(greeting);
		seterr(err, errlen, "no QMP greeting");
		return -1;
	}
	json_decref(greeting);
	json_t *r = qmp_cmd(q, "{\"execute\":\"qmp_capabilities\"}\n", deadline, err, errlen);
	if (!r)
		return -1;
	json_decref(r);
	return 0;
}

void qmp_close(struct qmp *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
}

