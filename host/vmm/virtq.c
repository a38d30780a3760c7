#include "virtq.h"

#include <errno.h>
#include <string.h>

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

int virtq_check(const struct virtq *q, const struct guest_mem *m, const char **why)
{
	if (q->num == 0 || q->num > VIRTQ_MAX_SIZE || (q->num & (q->num - 1))) {
		*why = "queue size is not a power of two within the maximum";
		return -EINVAL;
	}
	if ((q->desc_gpa & 15) || (q->avail_gpa & 1) || (q->used_gpa & 3)) {
		*why = "ring address misaligned";
		return -EINVAL;
	}
	if (!gm_valid(m, q->desc_gpa, 16ull * q->num) ||
	    !gm_valid(m, q->avail_gpa, 6 + 2ull * q->num) ||
	    !gm_valid(m, q->used_gpa, 6 + 8ull * q->num)) {
		*why = "ring outside guest RAM";
		return -EINVAL;
	}
	return 0;
}

int virtq_pop(struct virtq *q, const struct guest_mem *m, struct virtq_chain *c, const char **why)
{
	uint16_t avail_idx;
	if (gm_read(m, q->avail_gpa + 2, &avail_idx, 2) < 0) {
		*why = "avail ring outside guest RAM";
		return -EINVAL;
	}
	uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
	if (pending == 0)
		return 0;
	if (pending > q->num) {
		*why = "avail index ran more than a queue size ahead";
		return -EINVAL;
	}
	/* Read the ring entry only after seeing the index that publishes it. */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	uint16_t head;
	if (gm_read(m, q->avail_gpa + 4 + 2ull * (q->last_avail % q->num), &head, 2) < 0) {
		*why = "avail ring outside guest RAM";
		return -EINVAL;
	}
	if (head >= q->num) {
		*why = "descriptor head index out of range";
		return -EINVAL;
	}
	memset(c, 0, sizeof(*c));
	c->head = head;
	uint16_t idx = head;
	for (unsigned n = 0;; n++) {
		if (n >= VIRTQ_MAX_CHAIN || n >= q->num) {
			*why = "descriptor chain too long or looping";
			return -EINVAL;
		}
		struct vring_desc d; /* one copy; the guest's table may change under us */
		if (gm_read(m, q->desc_gpa + 16ull * idx, &d, sizeof(d)) < 0) {
			*why = "descriptor table outside guest RAM";
			return -EINVAL;
		}
		if (d.flags & VRING_DESC_F_INDIRECT) {
			*why = "indirect descriptor (not negotiated)";
			return -EINVAL;
		}
		if (!gm_valid(m, d.addr, d.len)) {
			*why = "descriptor points outside guest RAM";
			return -EINVAL;
		}
		if (d.flags & VRING_DESC_F_WRITE) {
			c->in[c->n_in++] = (struct virtq_seg){ d.addr, d.len };
			c->in_len += d.len;
		} else {
			if (c->n_in) {
				*why = "readable descriptor after a writable one";
				return -EINVAL;
			}
			c->out[c->n_out++] = (struct virtq_seg){ d.addr, d.len };
			c->out_len += d.len;
		}
		if (c->out_len + c->in_len > VIRTQ_MAX_CHAIN_BYTES) {
			*why = "descriptor chain longer than the device accepts";
			return -EINVAL;
		}
		if (!(d.flags & VRING_DESC_F_NEXT))
			break;
		if (d.next >= q->num) {
			*why = "descriptor next index out of range";
			return -EINVAL;
		}
		idx = d.next;
	}
	q->last_avail++;
	return 1;
}

int virtq_push(struct virtq *q, const struct guest_mem *m, uint16_t head, uint32_t written)
{
	struct {
		uint32_t id, len;
	} e = { head, written };
	if (gm_write(m, q->used_gpa + 4 + 8ull * (q->used_idx % q->num), &e, sizeof(e)) < 0)
		return -EFAULT;
	/* The element must be visible before the index that publishes it. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	q->used_idx++;
	return gm_write(m, q->used_gpa + 2, &q->used_idx, 2);
}

size_t virtq_chain_read(const struct guest_mem *m, const struct virtq_chain *c, uint64_t off,
			void *buf, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < c->n_out && done < len; i++) {
		const struct virtq_seg *s = &c->out[i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		size_t k = s->len - off;
		if (k > len - done)
			k = len - done;
		if (gm_read(m, s->gpa + off, (uint8_t *)buf + done, k) < 0)
			break;
		done += k;
		off = 0;
	}
	return done;
}

size_t virtq_chain_write(const struct guest_mem *m, const struct virtq_chain *c, uint64_t off,
			 const void *buf, size_t len)
{
	size_t done = 0;
	for (unsigned i = 0; i < c->n_in && done < len; i++) {
		const struct virtq_seg *s = &c->in[i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		size_t k = s->len - off;
		if (k > len - done)
			k = len - done;
		if (gm_write(m, s->gpa + off, (const uint8_t *)buf + done, k) < 0)
			break;
		done += k;
		off = 0;
	}
	return done;
}
