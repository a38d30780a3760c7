/*
 * frame.c - length-prefixed framing; see frame.h for the contract.
 */
#include "frame.h"

#include <errno.h>
#include <stdbool.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const char *frame_strerror(int err)
{
	switch (err) {
	case FRAME_OK: return "ok";
	case FRAME_EOF: return "peer closed the connection";
	case FRAME_ETRUNC: return "peer closed the connection in the middle of a frame";
	case FRAME_ETOOBIG: return "frame exceeds the maximum size";
	case FRAME_EIO: return "I/O error";
	case FRAME_ENOMEM: return "out of memory";
	case FRAME_ETIMEDOUT: return "timed out";
	case FRAME_EAGAIN: return "incomplete frame";
	case FRAME_EINVAL: return "invalid argument";
	default: return "unknown framing error";
	}
}

int64_t frame_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline passes. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
	for (;;) {
		int timeout = -1;

		if (deadline_ms >= 0) {
			int64_t left = deadline_ms - frame_now_ms();

			if (left <= 0)
				return FRAME_ETIMEDOUT;
			timeout = left > 1000000 ? 1000000 : (int)left;
		}
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, timeout);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return FRAME_EIO;
		}
		if (n > 0)
			return FRAME_OK;
	}
}

static ssize_t send_some(int fd, const uint8_t *p, size_t n)
{
	ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

	/* Not a socket (a virtio-serial char device or a pipe): fall back to write(). */
	if (w < 0 && errno == ENOTSOCK)
		w = write(fd, p, n);
	return w;
}

static int write_all(int fd, const uint8_t *p, size_t n, int64_t deadline_ms)
{
	while (n > 0) {
		ssize_t w;

		/* On a blocking fd only poll() can honour the deadline. */
		if (deadline_ms >= 0) {
			int rc = wait_fd(fd, POLLOUT, deadline_ms);

			if (rc)
				return rc;
		}
		w = send_some(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				int rc = wait_fd(fd, POLLOUT, deadline_ms);

				if (rc)
					return rc;
				continue;
			}
			return FRAME_EIO;
		}
		p += w;
		n -= (size_t)w;
	}
	return FRAME_OK;
}

int frame_write(int fd, const void *buf, size_t len, size_t max, int64_t deadline_ms)
{
	uint8_t hdr[FRAME_HDR_LEN];
	int rc;

	if (len > max || len > FRAME_ABSOLUTE_MAX || (len > 0 && !buf))
		return FRAME_EINVAL;
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
	/* Small frames go out in one write so the peer rarely sees a split header. */
	if (len <= 4096) {
		uint8_t tmp[FRAME_HDR_LEN + 4096];

		memcpy(tmp, hdr, FRAME_HDR_LEN);
		if (len)
			memcpy(tmp + FRAME_HDR_LEN, buf, len);
		return write_all(fd, tmp, FRAME_HDR_LEN + len, deadline_ms);
	}
	rc = write_all(fd, hdr, FRAME_HDR_LEN, deadline_ms);
	if (rc)
		return rc;
	return write_all(fd, buf, len, deadline_ms);
}

/*
 * One read() of at most n bytes: FRAME_OK with *got > 0, FRAME_EAGAIN, or the
 * end of the stream (FRAME_ETRUNC when a frame was under way, else FRAME_EOF).
 */
static int read_some(int fd, uint8_t *dst, size_t n, bool mid_frame, size_t *got)
{
	ssize_t r;

	do
		r = read(fd, dst, n);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return FRAME_EAGAIN;
		if (errno != ECONNRESET)
			return FRAME_EIO;
		r = 0; /* a reset peer is a closed peer */
	}
	if (r == 0)
		return mid_frame ? FRAME_ETRUNC : FRAME_EOF;
	*got = (size_t)r;
	return FRAME_OK;
}

/* Reads exactly n bytes. *got counts what arrived, to tell EOF from truncation. */
static int read_all(int fd, uint8_t *p, size_t n, int64_t deadline_ms, size_t *got)
{
	*got = 0;
	while (*got < n) {
		size_t k;
		int rc;

		if (deadline_ms >= 0 && (rc = wait_fd(fd, POLLIN, deadline_ms)) != 0)
			return rc;
		rc = read_some(fd, p + *got, n - *got, *got > 0, &k);
		if (rc == FRAME_EAGAIN) {
			rc = wait_fd(fd, POLLIN, deadline_ms);
			if (rc)
				return rc;
			continue;
		}
		if (rc)
			return rc;
		*got += k;
	}
	return FRAME_OK;
}

int frame_read(int fd, uint8_t **out, size_t *outlen, size_t max, int64_t deadline_ms)
{
	uint8_t hdr[FRAME_HDR_LEN];
	size_t got, len;
	uint8_t *body;
	int rc;

	*out = NULL;
	*outlen = 0;
	rc = read_all(fd, hdr, FRAME_HDR_LEN, deadline_ms, &got);
	if (rc)
		return rc;
	len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
	if (len > max || len > FRAME_ABSOLUTE_MAX)
		return FRAME_ETOOBIG;
	body = malloc(len ? len : 1);
	if (!body)
		return FRAME_ENOMEM;
	rc = read_all(fd, body, len, deadline_ms, &got);
	if (rc) {
		free(body);
		/* The header arrived, so any close now is a truncated frame. */
		return rc == FRAME_EOF ? FRAME_ETRUNC : rc;
	}
	*out = body;
	*outlen = len;
	return FRAME_OK;
}

void frame_reader_init(struct frame_reader *r, size_t max)
{
	memset(r, 0, sizeof(*r));
	r->max = max > FRAME_ABSOLUTE_MAX ? FRAME_ABSOLUTE_MAX : max;
}

void frame_reader_reset(struct frame_reader *r)
{
	free(r->body);
	frame_reader_init(r, r->max);
}

int frame_reader_partial(const struct frame_reader *r)
{
	return r->hdr_have > 0;
}

int frame_reader_feed(struct frame_reader *r, const uint8_t *data, size_t len, size_t *used,
		      uint8_t **out, size_t *outlen)
{
	size_t n = 0;

	*out = NULL;
	*outlen = 0;
	while (r->hdr_have < FRAME_HDR_LEN && n < len)
		r->hdr[r->hdr_have++] = data[n++];
	*used = n;
	if (r->hdr_have < FRAME_HDR_LEN)
		return FRAME_EAGAIN;
	if (!r->body) {
		r->body_len = (size_t)r->hdr[0] << 24 | (size_t)r->hdr[1] << 16 |
			      (size_t)r->hdr[2] << 8 | r->hdr[3];
		if (r->body_len > r->max)
			return FRAME_ETOOBIG;
		r->body = malloc(r->body_len ? r->body_len : 1);
		if (!r->body)
			return FRAME_ENOMEM;
		r->body_have = 0;
	}
	size_t take = r->body_len - r->body_have;

	if (take > len - n)
		take = len - n;
	if (take)
		memcpy(r->body + r->body_have, data + n, take);
	r->body_have += take;
	n += take;
	*used = n;
	if (r->body_have < r->body_len)
		return FRAME_EAGAIN;
	*out = r->body;
	*outlen = r->body_len;
	r->body = NULL;
	r->hdr_have = 0;
	r->body_len = r->body_have = 0;
	return FRAME_OK;
}

int frame_reader_poll(struct frame_reader *r, int fd, uint8_t **out, size_t *outlen)
{
	size_t got, used;
	int rc;

	*out = NULL;
	*outlen = 0;
	/*
	 * Read only what the current frame still needs, so bytes of the next
	 * frame stay in the kernel buffer and no second buffer is needed here.
	 */
	if (r->hdr_have < FRAME_HDR_LEN) {
		rc = read_some(fd, r->hdr + r->hdr_have, FRAME_HDR_LEN - r->hdr_have, r->hdr_have > 0,
			       &got);
		if (rc)
			return rc;
		r->hdr_have += got;
		if (r->hdr_have < FRAME_HDR_LEN)
			return FRAME_EAGAIN;
	} else if (r->body) {
		rc = read_some(fd, r->body + r->body_have, r->body_len - r->body_have, true, &got);
		if (rc)
			return rc;
		r->body_have += got;
	}
	/* A complete header without a body yet: the feed checks the length and allocates. */
	return frame_reader_feed(r, NULL, 0, &used, out, outlen);
}
