/*
 * In-process tests of the virtqueue walker (host/vmm/virtq.c) against a
 * guest RAM region we write hostile rings into: every malformed ring or chain
 * must be refused with a reason, and nothing may be read outside RAM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "guest_mem.h"
#include "virtq.h"

#define RAM (1u << 20)
#define DESC 0x1000
#define AVAIL 0x2000
#define USED 0x3000
#define BUF 0x10000
#define QN 8

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

static struct guest_mem m;
static struct virtq q;

static int setup(void **s)
{
	(void)s;
	assert_int_equal(gm_init_anon(&m, RAM), 0);
	memset(&q, 0, sizeof(q));
	q.num = QN;
	q.ready = 1;
	q.desc_gpa = DESC;
	q.avail_gpa = AVAIL;
	q.used_gpa = USED;
	return 0;
}

static int teardown(void **s)
{
	(void)s;
	gm_destroy(&m);
	return 0;
}

static void set_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	struct desc d = { addr, len, flags, next };
	assert_int_equal(gm_write(&m, DESC + 16ull * i, &d, sizeof(d)), 0);
}

static void publish(uint16_t head)
{
	uint16_t idx;
	gm_read(&m, AVAIL + 2, &idx, 2);
	gm_write(&m, AVAIL + 4 + 2ull * (idx % QN), &head, 2);
	idx++;
	gm_write(&m, AVAIL + 2, &idx, 2);
}

static void expect_bad(const char *why_part)
{
	struct virtq_chain c;
	const char *why = NULL;
	assert_int_equal(virtq_pop(&q, &m, &c, &why), -22);
	assert_non_null(why);
	if (!strstr(why, why_part)) {
		fprintf(stderr, "reason [%s], expected [%s]\n", why, why_part);
		fail();
	}
}

static void good_chain(void **s)
{
	(void)s;
	set_desc(0, BUF, 44, 1, 3);
	set_desc(3, BUF + 100, 10, 1, 5);
	set_desc(5, BUF + 200, 4096, 2, 0);
	publish(0);
	struct virtq_chain c;
	const char *why;
	assert_int_equal(virtq_pop(&q, &m, &c, &why), 1);
	assert_int_equal(c.head, 0);
	assert_int_equal(c.n_out, 2);
	assert_int_equal(c.n_in, 1);
	assert_int_equal(c.out_len, 54);
	assert_int_equal(c.in_len, 4096);
	/* Reads span segments; writes land in the writable part only. */
	gm_write(&m, BUF + 40, "abcd", 4);
	gm_write(&m, BUF + 100, "efgh", 4);
	char buf[8];
	assert_int_equal(virtq_chain_read(&m, &c, 40, buf, 8), 8);
	assert_memory_equal(buf, "abcdefgh", 8);
	assert_int_equal(virtq_chain_write(&m, &c, 0, "xyz", 3), 3);
	char back[3];
	gm_read(&m, BUF + 200, back, 3);
	assert_memory_equal(back, "xyz", 3);
	assert_int_equal(virtq_push(&q, &m, c.head, 3), 0);
	uint16_t used_idx;
	gm_read(&m, USED + 2, &used_idx, 2);
	assert_int_equal(used_idx, 1);
	assert_int_equal(virtq_pop(&q, &m, &c, &why), 0); /* nothing more */
}

static void outside_ram(void **s)
{
	(void)s;
	set_desc(0, RAM - 8, 16, 0, 0);
	publish(0);
	expect_bad("outside guest RAM");
}

static void wrapping_length(void **s)
{
	(void)s;
	set_desc(0, 0xfffffffffffff000ull, 0x2000, 0, 0);
	publish(0);
	expect_bad("outside guest RAM");
}

static void loop(void **s)
{
	(void)s;
	set_desc(0, BUF, 8, 1, 1);
	set_desc(1, BUF, 8, 1, 0);
	publish(0);
	expect_bad("too long or looping");
}

static void bad_next(void **s)
{
	(void)s;
	set_desc(0, BUF, 8, 1, QN + 3);
	publish(0);
	expect_bad("next index out of range");
}

static void bad_head(void **s)
{
	(void)s;
	publish(QN);
	expect_bad("head index out of range");
}

static void indirect(void **s)
{
	(void)s;
	set_desc(0, BUF, 16, 4, 0);
	publish(0);
	expect_bad("indirect");
}

static void read_after_write(void **s)
{
	(void)s;
	set_desc(0, BUF, 8, 2 | 1, 1);
	set_desc(1, BUF, 8, 0, 0);
	publish(0);
	expect_bad("readable descriptor after a writable one");
}

static void oversized(void **s)
{
	(void)s;
	set_desc(0, BUF, VIRTQ_MAX_CHAIN_BYTES, 1, 1);
	set_desc(1, BUF, 1, 0, 0);
	publish(0);
	expect_bad("longer than the device accepts");
}

static void runaway_avail(void **s)
{
	(void)s;
	uint16_t idx = QN + 1;
	gm_write(&m, AVAIL + 2, &idx, 2);
	expect_bad("more than a queue size ahead");
}

static void bad_ring_config(void **s)
{
	(void)s;
	const char *why;
	q.num = 6;
	assert_int_equal(virtq_check(&q, &m, &why), -22);
	q.num = QN;
	q.used_gpa = RAM - 4;
	assert_int_equal(virtq_check(&q, &m, &why), -22);
	assert_non_null(strstr(why, "outside guest RAM"));
	q.used_gpa = USED + 2;
	assert_int_equal(virtq_check(&q, &m, &why), -22);
	q.used_gpa = USED;
	assert_int_equal(virtq_check(&q, &m, &why), 0);
}

static void accessor_bounds(void **s)
{
	(void)s;
	char b[16];
	assert_null(gm_ptr(&m, RAM, 1));
	assert_non_null(gm_ptr(&m, RAM - 1, 1));
	assert_non_null(gm_ptr(&m, RAM, 0));
	assert_null(gm_ptr(&m, UINT64_MAX, 2));
	assert_null(gm_ptr(&m, 8, UINT64_MAX));
	assert_int_equal(gm_read(&m, RAM - 8, b, 16), -14);
	assert_int_equal(gm_write(&m, RAM - 8, b, 8), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(good_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(outside_ram, setup, teardown),
		cmocka_unit_test_setup_teardown(wrapping_length, setup, teardown),
		cmocka_unit_test_setup_teardown(loop, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_next, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_head, setup, teardown),
		cmocka_unit_test_setup_teardown(indirect, setup, teardown),
		cmocka_unit_test_setup_teardown(read_after_write, setup, teardown),
		cmocka_unit_test_setup_teardown(oversized, setup, teardown),
		cmocka_unit_test_setup_teardown(runaway_avail, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_ring_config, setup, teardown),
		cmocka_unit_test_setup_teardown(accessor_bounds, setup, teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
