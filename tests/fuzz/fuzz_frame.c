/*
 * fuzz_frame - the agent's side of the wire: the incremental frame reader
 * (proto/frame.c, as hearth-agent's poll loop drives it) and Envelope decoding
 * under the unpack budget (proto/msg.c), over arbitrary bytes cut into
 * arbitrary read sizes.
 *
 * Input: byte 0 picks the frame limit (small ones reach ETOOBIG), byte 1
 * seeds the read sizes, the rest is the byte stream. Every whole frame is
 * decoded; a decoded Envelope is encoded again and, where it decodes again,
 * must give the same message case and seq.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz.h"
#include "msg.h"

static void check_envelope(const uint8_t *buf, size_t len)
{
	Hearth__Envelope *e = msg_unpack(buf, len);
	uint8_t *out = NULL;
	size_t outlen = 0;

	if (!e)
		return;
	(void)msg_name(e);
	if (msg_pack(e, &out, &outlen) == FRAME_OK) {
		Hearth__Envelope *again = msg_unpack(out, outlen);

		/*
		 * Not asserted: that it decodes again. protobuf-c keeps unknown
		 * fields, accepts field number 0 spelled in two bytes (80 00) and
		 * writes it back in one (00), which it then refuses. Harmless here:
		 * hearth never re-encodes a message it received.
		 */
		if (again) {
			assert(again->msg_case == e->msg_case);
			assert(again->seq == e->seq);
			msg_free(again);
		}
		free(out);
	}
	msg_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t maxes[] = { 0, 1, 16, 100, 4096, 65536, 1u << 20, FRAME_DEFAULT_MAX };
	struct frame_reader r;
	uint32_t seed;
	size_t off = 2;

	if (size < 2)
		return 0;
	frame_reader_init(&r, maxes[data[0] & 7]);
	seed = data[1] * 2654435761u + 1;
	while (off < size) {
		size_t chunk = 1 + (seed >> 16) % 97, used = 0, outlen = 0;
		uint8_t *out = NULL;
		int rc;

		seed = seed * 1103515245u + 12345u;
		if (chunk > size - off)
			chunk = size - off;
		rc = frame_reader_feed(&r, data + off, chunk, &used, &out, &outlen);
		assert(used <= chunk);
		off += used;
		if (rc == FRAME_OK) {
			assert(out);
			check_envelope(out, outlen);
			free(out);
			continue;
		}
		if (rc == FRAME_EAGAIN) {
			assert(used == chunk);
			continue;
		}
		/* ETOOBIG or ENOMEM: the agent answers and resets the reader. */
		assert(rc == FRAME_ETOOBIG || rc == FRAME_ENOMEM);
		frame_reader_reset(&r);
		off += chunk - used;
	}
	(void)frame_reader_partial(&r);
	frame_reader_reset(&r);
	return 0;
}
