/*
 * frame.h - length-prefixed framing shared by the host and hearth-agent.
 *
 * A frame is a 4-byte big-endian length followed by that many bytes (one
 * encoded hearth.Envelope). The length is checked against the caller's maximum
 * before any allocation, so a hostile peer cannot make us allocate 4 GiB.
 *
 * Two interfaces:
 *  - blocking: frame_write() and frame_read() on a blocking or non-blocking fd,
 *    with an optional deadline; they restart on EINTR and loop on short
 *    reads/writes.
 *  - incremental: struct frame_reader, fed by one read() at a time from an
 *    event loop (the agent's poll loop), yielding whole frames.
 *
 * Every failure has its own code (enum frame_err); frame_strerror() names it.
 * Callers own the buffers they are given (free() them).
 */
#ifndef HEARTH_FRAME_H
#define HEARTH_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HDR_LEN 4u
#define FRAME_DEFAULT_MAX (8u * 1024u * 1024u)
/* Hard ceiling for any negotiated maximum. */
#define FRAME_ABSOLUTE_MAX (64u * 1024u * 1024u)

enum frame_err {
	FRAME_OK = 0,
	FRAME_EOF = -1,       /* peer closed cleanly at a frame boundary */
	FRAME_ETRUNC = -2,    /* peer closed in the middle of a frame */
	FRAME_ETOOBIG = -3,   /* announced length exceeds the maximum */
	FRAME_EIO = -4,       /* read/write failed; errno holds the cause */
	FRAME_ENOMEM = -5,    /* allocation failed */
	FRAME_ETIMEDOUT = -6, /* deadline passed before the frame completed */
	FRAME_EAGAIN = -7,    /* incremental reader: need more bytes */
	FRAME_EINVAL = -8,    /* bad argument (e.g. payload larger than max) */
};

const char *frame_strerror(int err);

/* Monotonic clock in milliseconds, for deadlines. */
int64_t frame_now_ms(void);

/*
 * Writes one frame. deadline_ms is an absolute frame_now_ms() value, or -1 to
 * wait forever. Works on blocking and non-blocking fds. Uses MSG_NOSIGNAL on
 * sockets so a closed peer gives FRAME_EIO (errno EPIPE), never SIGPIPE.
 */
int frame_write(int fd, const void *buf, size_t len, size_t max, int64_t deadline_ms);

/*
 * Reads one frame into a freshly malloc'ed buffer (*out, *outlen). On error
 * *out is NULL. FRAME_EOF only if the peer closed before the first header byte.
 */
int frame_read(int fd, uint8_t **out, size_t *outlen, size_t max, int64_t deadline_ms);

/* Incremental reader for event loops. */
struct frame_reader {
	size_t max;
	uint8_t hdr[FRAME_HDR_LEN];
	size_t hdr_have;
	uint8_t *body;
	size_t body_len;
	size_t body_have;
};

void frame_reader_init(struct frame_reader *r, size_t max);
void frame_reader_reset(struct frame_reader *r);
/* True when some bytes of an unfinished frame are buffered. */
int frame_reader_partial(const struct frame_reader *r);

/*
 * Performs at most one read() from fd and advances the reader. Returns
 * FRAME_OK with a whole frame in (*out, *outlen) (caller frees), FRAME_EAGAIN
 * when more bytes are needed (or the read would block), FRAME_EOF or
 * FRAME_ETRUNC when the peer closed, FRAME_ETOOBIG, FRAME_EIO or FRAME_ENOMEM.
 * After an error the reader must be reset before reuse.
 */
int frame_reader_poll(struct frame_reader *r, int fd, uint8_t **out, size_t *outlen);

/*
 * Like frame_reader_poll() but takes bytes from memory instead of a read();
 * *used reports how many were consumed. Used by fuzzers and tests.
 */
int frame_reader_feed(struct frame_reader *r, const uint8_t *data, size_t len, size_t *used,
		      uint8_t **out, size_t *outlen);

#endif
