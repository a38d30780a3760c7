/*
 * msg.c - Envelope encode/decode on top of frame.c; see msg.h.
 */
#include "msg.h"

#include <stdint.h>
#include <stdlib.h>

const char *msg_strerror(int err)
{
	if (err == MSG_EDECODE)
		return "frame is not a valid hearth.Envelope";
	return frame_strerror(err);
}

int msg_pack(const Hearth__Envelope *env, uint8_t **buf, size_t *len)
{
	size_t n = hearth__envelope__get_packed_size(env);
	uint8_t *b = malloc(n ? n : 1);

	if (!b)
		return FRAME_ENOMEM;
	*len = hearth__envelope__pack(env, b);
	*buf = b;
	return FRAME_OK;
}

/*
 * Decoding allocates through a budget: protobuf-c makes one allocation per
 * string and per sub-message, so a frame of a few MiB holding millions of
 * empty strings or KeyValues would otherwise cost hundreds of MiB. Each
 * block carries its charge in a 16-byte header (which keeps malloc's
 * alignment), so that msg_free() needs no budget.
 */
struct unpack_budget {
	size_t left;
};

#define BLOCK_HEADER 16u
#define BLOCK_OVERHEAD 32u /* charged per allocation: the header and malloc's own */

static void *budget_alloc(void *data, size_t size)
{
	struct unpack_budget *b = data;
	size_t charge = size + BLOCK_OVERHEAD;
	uint8_t *p;

	if (size > SIZE_MAX - BLOCK_OVERHEAD || charge > b->left)
		return NULL;
	p = malloc(size + BLOCK_HEADER);
	if (!p)
		return NULL;
	b->left -= charge;
	return p + BLOCK_HEADER;
}

static void block_free(void *data, void *ptr)
{
	(void)data;
	if (ptr)
		free((uint8_t *)ptr - BLOCK_HEADER);
}

static ProtobufCAllocator block_allocator = { .alloc = NULL, .free = block_free };

Hearth__Envelope *msg_unpack(const uint8_t *buf, size_t len)
{
	struct unpack_budget b = { .left = MSG_UNPACK_BUDGET(len) };
	ProtobufCAllocator a = { .alloc = budget_alloc, .free = block_free, .allocator_data = &b };

	return hearth__envelope__unpack(&a, len, buf);
}

void msg_free(Hearth__Envelope *env)
{
	if (env)
		hearth__envelope__free_unpacked(env, &block_allocator);
}

int msg_send(int fd, const Hearth__Envelope *env, size_t max, int64_t deadline_ms)
{
	uint8_t *buf;
	size_t len;
	int rc = msg_pack(env, &buf, &len);

	if (rc)
		return rc;
	rc = frame_write(fd, buf, len, max, deadline_ms);
	free(buf);
	return rc;
}

int msg_recv(int fd, size_t max, int64_t deadline_ms, Hearth__Envelope **out)
{
	uint8_t *buf;
	size_t len;
	int rc = frame_read(fd, &buf, &len, max, deadline_ms);

	*out = NULL;
	if (rc)
		return rc;
	*out = msg_unpack(buf, len);
	free(buf);
	return *out ? FRAME_OK : MSG_EDECODE;
}

const char *msg_name(const Hearth__Envelope *env)
{
	switch (env->msg_case) {
	case HEARTH__ENVELOPE__MSG_HELLO: return "hello";
	case HEARTH__ENVELOPE__MSG_CONFIGURE: return "configure";
	case HEARTH__ENVELOPE__MSG_INVOKE: return "invoke";
	case HEARTH__ENVELOPE__MSG_RESEED: return "reseed";
	case HEARTH__ENVELOPE__MSG_PING: return "ping";
	case HEARTH__ENVELOPE__MSG_SHUTDOWN: return "shutdown";
	case HEARTH__ENVELOPE__MSG_READY: return "ready";
	case HEARTH__ENVELOPE__MSG_INVOKE_RESULT: return "invoke_result";
	case HEARTH__ENVELOPE__MSG_LOG: return "log";
	case HEARTH__ENVELOPE__MSG_PONG: return "pong";
	case HEARTH__ENVELOPE__MSG_ERROR: return "error";
	case HEARTH__ENVELOPE__MSG_ACK: return "ack";
	default: return "none";
	}
}
