/*
 * fuzz_virtq - hearth-vmm's virtqueue walker (host/vmm/virtq.c) and guest
 * memory accessor (guest_mem.c) over guest RAM the fuzzer writes, with the
 * "guest" rewriting RAM between the device's steps, as another vCPU can.
 *
 * Input: a 13-byte header (RAM size, queue size, ring addresses, the device's
 * last_avail/used_idx as a restored snapshot could hold them, the number of
 * op bytes), the ops, then the RAM image (zero-filled if short). One op per
 * byte: pop and copy the chain out and in, push, unpop, or let the guest
 * write a byte (3 more bytes: where, what).
 *
 * RAM is an exact-size heap buffer (not gm_init_anon's mapping), so ASan
 * reports any access one byte outside it. Checked after every pop: the chain
 * respects every limit virtq.h promises, and each segment lies inside RAM
 * (computed here, not by asking guest_mem.c).
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "guest_mem.h"
#include "virtq.h"

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void check_chain(const struct guest_mem *m, const struct virtq *q,
			const struct virtq_chain *c)
{
	uint64_t out = 0, in = 0;

	assert(c->head < q->num);
	assert(c->n_out + c->n_in >= 1);
	assert(c->n_out + c->n_in <= VIRTQ_MAX_CHAIN);
	/* Inside RAM, by this file's own arithmetic (not gm_valid's). */
	for (unsigned i = 0; i < c->n_out; i++) {
		assert(c->out[i].gpa <= m->size && c->out[i].len <= m->size - c->out[i].gpa);
		out += c->out[i].len;
	}
	for (unsigned i = 0; i < c->n_in; i++) {
		assert(c->in[i].gpa <= m->size && c->in[i].len <= m->size - c->in[i].gpa);
		in += c->in[i].len;
	}
	assert(out == c->out_len && in == c->in_len);
	assert(out + in <= VIRTQ_MAX_CHAIN_BYTES);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t scratch[VIRTQ_MAX_CHAIN_BYTES];
	struct guest_mem m = { 0 };
	struct virtq q = { 0 };
	struct virtq_chain c;
	const char *why;
	size_t off = 13, end;
	bool have_chain = false;

	if (size < 13)
		return 0;
	end = off + data[12] < size ? off + data[12] : size;
	m.size = 4096u << (data[0] & 3);           /* 4 to 32 KiB */
	q.num = data[1] & 0x80 ? data[1] & 0x7f : 1u << (data[1] % 9);
	q.ready = 1;
	/* Ring addresses: mostly inside RAM, sometimes past it or misaligned. */
	q.desc_gpa = (uint64_t)rd16(data + 2) * (data[0] & 4 ? 1 : 16);
	q.avail_gpa = (uint64_t)rd16(data + 4) * (data[0] & 8 ? 1 : 2);
	q.used_gpa = (uint64_t)rd16(data + 6) * (data[0] & 16 ? 1 : 4);
	if (!(data[0] & 0x80)) { /* wrapped into RAM: most inputs get a queue to walk */
		q.desc_gpa %= m.size;
		q.avail_gpa %= m.size;
		q.used_gpa %= m.size;
	}
	q.last_avail = rd16(data + 8);
	q.used_idx = rd16(data + 10);
	m.host = calloc(1, m.size);
	if (!m.host)
		return 0;
	{
		size_t n = size - end < m.size ? size - end : m.size;

		memcpy(m.host, data + end, n);
	}
	/* virtq.h's contract: only a queue that passed virtq_check is walked. */
	if (virtq_check(&q, &m, &why) < 0) {
		assert(why);
		goto out;
	}
	while (off < end) {
		uint8_t op = data[off++];
		int r;

		switch (op & 7) {
		case 0:
		case 1:
		case 2:
			r = virtq_pop(&q, &m, &c, &why);
			assert(r == 0 || r == 1 || r == -22);
			if (r < 0) {
				assert(why);
				goto out; /* the transport fails the device */
			}
			if (r == 0)
				break;
			check_chain(&m, &q, &c);
			have_chain = true;
			{
				uint64_t o = op >> 3;
				size_t got = virtq_chain_read(&m, &c, o, scratch, sizeof(scratch));

				assert(got <= c.out_len);
				assert(got == (o < c.out_len ? c.out_len - o : 0));
				got = virtq_chain_write(&m, &c, o, scratch, (size_t)(c.in_len + 1));
				assert(got == (o < c.in_len ? c.in_len - o : 0));
			}
			break;
		case 3:
		case 4:
			if (have_chain)
				(void)virtq_push(&q, &m, c.head, (uint32_t)c.in_len);
			have_chain = false;
			break;
		case 5:
			if (have_chain)
				virtq_unpop(&q);
			have_chain = false;
			break;
		default:
			/* The guest writes a byte anywhere in RAM (another vCPU). */
			if (off + 3 <= end) {
				m.host[rd16(data + off) % m.size] = data[off + 2];
				off += 3;
			}
			break;
		}
	}
out:
	free(m.host);
	return 0;
}
