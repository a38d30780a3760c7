/*
 * msg.h - hearth.Envelope encode/decode over the framing layer (frame.h).
 *
 * The generated protobuf-c code (agent.pb-c.h, built from proto/agent.proto)
 * is the only encoder/decoder; this module adds size limits and the error
 * codes that callers switch on.
 */
#ifndef HEARTH_MSG_H
#define HEARTH_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "agent.pb-c.h"
#include "frame.h"

#define HEARTH_PROTOCOL_VERSION 1u
#define HEARTH_AGENT_VSOCK_PORT 52u
/* virtio-serial port name the libvirt engine gives the agent channel. */
#define HEARTH_AGENT_SERIAL_NAME "org.hearth.agent.0"

/* In addition to enum frame_err. */
#define MSG_EDECODE (-20) /* frame did not decode as an Envelope */

const char *msg_strerror(int err);

/* Encodes env into a malloc'ed buffer. Returns FRAME_OK or FRAME_ENOMEM. */
int msg_pack(const Hearth__Envelope *env, uint8_t **buf, size_t *len);

/*
 * Memory a decoded frame of len bytes may take: its bytes twice over plus
 * 1 MiB, counting 32 bytes of overhead per allocation. Real messages use a
 * fraction of it; a frame packed with millions of tiny repeated fields fails
 * to decode instead of taking hundreds of MiB.
 */
#define MSG_UNPACK_BUDGET(len) (2 * (size_t)(len) + ((size_t)1 << 20))

/*
 * Decodes one frame body; NULL if it is not a valid Envelope or would exceed
 * MSG_UNPACK_BUDGET. Free with msg_free() (never protobuf-c's free directly).
 */
Hearth__Envelope *msg_unpack(const uint8_t *buf, size_t len);
void msg_free(Hearth__Envelope *env);

/* Encodes and writes env as one frame (FRAME_EINVAL if it exceeds max). */
int msg_send(int fd, const Hearth__Envelope *env, size_t max, int64_t deadline_ms);

/* Reads and decodes one frame. Returns FRAME_OK, a frame_err, or MSG_EDECODE. */
int msg_recv(int fd, size_t max, int64_t deadline_ms, Hearth__Envelope **out);

/* Name of the message in env's oneof, for logs ("invoke", "pong", "none"). */
const char *msg_name(const Hearth__Envelope *env);

#endif
