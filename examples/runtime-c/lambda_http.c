/*
 * lambda_http.c - see lambda_http.h.
 */
#include "lambda_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static int connect_api(const char *api)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(api, ':');
	int fd;

	if (!colon || (size_t)(colon - api) >= sizeof(host))
		return -1;
	memcpy(host, api, (size_t)(colon - api));
	host[colon - api] = 0;
	sa.sin_port = htons((unsigned short)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -1;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
	return fd;
}

/* Sends head then body; 0, -1 if the head failed, -2 if only the body did. */
static int sendv(int fd, const char *head, size_t hlen, const void *body, size_t blen)
{
	struct iovec iov[2] = { { (void *)head, hlen }, { (void *)body, blen } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = blen ? 2 : 1 };
	size_t total = hlen + blen, off = 0;

	while (off < total) {
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return off >= hlen ? -2 : -1;
		off += (size_t)n;
		/* Partial send: advance the iovecs past what went out. */
		while (mh.msg_iovlen && (size_t)n >= mh.msg_iov[0].iov_len) {
			n -= (ssize_t)mh.msg_iov[0].iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov[0].iov_base = (char *)mh.msg_iov[0].iov_base + n;
			mh.msg_iov[0].iov_len -= (size_t)n;
		}
	}
	return 0;
}

static void header(const char *hdrs, const char *name, char *out, size_t n)
{
	size_t k = strlen(name);

	out[0] = 0;
	for (const char *l = hdrs; l && *l;) {
		const char *e = strstr(l, "\r\n");
		size_t len = e ? (size_t)(e - l) : strlen(l);

		if (len > k && strncasecmp(l, name, k) == 0 && l[k] == ':') {
			const char *v = l + k + 1;

			while (*v == ' ')
				v++;
			len -= (size_t)(v - l);
			if (len >= n)
				len = n - 1;
			memcpy(out, v, len);
			out[len] = 0;
			return;
		}
		l = e ? e + 2 : NULL;
	}
}

/* One kept-alive connection to the API, reused by every call (as curl would). */
static int conn_fd = -1;

static int read_some(int fd, char **buf, size_t *have, size_t *cap)
{
	ssize_t got;

	if (*have + 65536 + 1 > *cap) {
		size_t ncap = *cap ? *cap * 2 : 131072;
		char *nb;

		if (*cap > LH_MAX_BODY + 65536)
			return -1;
		nb = realloc(*buf, ncap);
		if (!nb)
			return -1;
		*buf = nb;
		*cap = ncap;
	}
	do
		got = read(fd, *buf + *have, *cap - *have - 1);
	while (got < 0 && errno == EINTR);
	if (got <= 0)
		return -1;
	*have += (size_t)got;
	(*buf)[*have] = 0;
	return 0;
}

/* One exchange on fd; -1 if the connection failed before a whole answer came. */
static int exchange(int fd, const char *api, const char *method, const char *path,
		    const char *extra, const void *body, size_t len, struct lh_resp *r)
{
	char head[1024], clen[32], *buf = NULL, *sep = NULL;
	size_t have = 0, cap = 0, hlen, want;
	int n, rc;

	/* No Content-Length on a GET: a request that declares a body (even of 0 bytes) and is
	 * answered after a wait gets "Connection: close" from libmicrohttpd. */
	if (strcmp(method, "GET") == 0 && len == 0)
		n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", method,
			     path, api, extra ? extra : "");
	else
		n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: "
			     "%zu\r\n%s\r\n", method, path, api, len, extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof(head))
		return -1;
	/*
	 * Head and body in one send where they fit: a small body sent on its own
	 * would wait for the head's delayed ACK (Nagle) on a kept-alive connection.
	 * A refused body (413 before it is read) may fail to send: read the answer anyway.
	 */
	rc = sendv(fd, head, (size_t)n, body, len);
	if (rc == -1)
		return -1;
	if (rc == -2)
		shutdown(fd, SHUT_WR);
	rc = -1;
	while (!(sep = buf ? strstr(buf, "\r\n\r\n") : NULL))
		if (read_some(fd, &buf, &have, &cap))
			goto out;
	*sep = 0;
	hlen = (size_t)(sep + 4 - buf);
	if (sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1)
		goto out;
	header(buf, "Content-Length", clen, sizeof(clen));
	want = strtoull(clen, NULL, 10);
	if (want > LH_MAX_BODY)
		goto out;
	while (have - hlen < want)
		if (read_some(fd, &buf, &have, &cap))
			goto out;
	header(buf, "Lambda-Runtime-Aws-Request-Id", r->request_id, sizeof(r->request_id));
	header(buf, "Lambda-Runtime-Deadline-Ms", r->deadline_ms, sizeof(r->deadline_ms));
	header(buf, "Lambda-Runtime-Invoked-Function-Arn", r->function_arn,
	       sizeof(r->function_arn));
	header(buf, "Lambda-Runtime-Trace-Id", r->trace_id, sizeof(r->trace_id));
	header(buf, "Connection", clen, sizeof(clen));
	r->len = want;
	r->body = malloc(want + 1);
	if (!r->body)
		goto out;
	memcpy(r->body, buf + hlen, want);
	r->body[want] = 0;
	rc = strcasecmp(clen, "close") == 0 ? 1 : 0;
out:
	free(buf);
	return rc;
}

int lh_call(const char *api, const char *method, const char *path, const char *extra,
	    const void *body, size_t len, struct lh_resp *r)
{
	/* A kept-alive connection the server closed meanwhile fails once: retry fresh. */
	for (int attempt = 0; attempt < 2; attempt++) {
		bool fresh = conn_fd < 0;
		int rc;

		memset(r, 0, sizeof(*r));
		r->status = -1;
		if (fresh && (conn_fd = connect_api(api)) < 0)
			return -1;
		rc = exchange(conn_fd, api, method, path, extra, body, len, r);
		if (rc != 0) {
			close(conn_fd);
			conn_fd = -1;
		}
		if (rc >= 0)
			return r->status;
		free(r->body);
		r->body = NULL;
		r->status = -1;
		if (fresh)
			return -1;
	}
	return -1;
}

int lh_next(const char *api, struct lh_resp *r)
{
	return lh_call(api, "GET", "/2018-06-01/runtime/invocation/next", NULL, NULL, 0, r);
}

int lh_respond(const char *api, const char *id, const void *body, size_t len)
{
	char path[256];
	struct lh_resp r;

	snprintf(path, sizeof(path), "/2018-06-01/runtime/invocation/%s/response", id);
	lh_call(api, "POST", path, NULL, body, len, &r);
	free(r.body);
	return r.status;
}

int lh_error(const char *api, const char *id, const char *type, const char *message)
{
	char path[256], hdr[256], body[1024];
	struct lh_resp r;
	int n;

	snprintf(path, sizeof(path), "/2018-06-01/runtime/invocation/%s/error", id);
	snprintf(hdr, sizeof(hdr), "Lambda-Runtime-Function-Error-Type: %s\r\n", type);
	n = snprintf(body, sizeof(body), "{\"errorMessage\":\"%s\",\"errorType\":\"%s\"}", message,
		     type);
	lh_call(api, "POST", path, hdr, body, (size_t)n, &r);
	free(r.body);
	return r.status;
}
