/*
 * Unit tests: framing (frame.c) and protobuf round trips / error paths (msg.c).
 * Real sockets (socketpair) stand in for the transport; nothing is mocked.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../cmocka_main.h"
#include "msg.h"

static int sp[2];

static int setup(void **state)
{
	return socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
}

static int teardown(void **state)
{
	if (sp[0] >= 0)
		close(sp[0]);
	if (sp[1] >= 0)
		close(sp[1]);
	return 0;
}

static void test_roundtrip(void **state)
{
	const char msg[] = "hello, frame";
	uint8_t *out;
	size_t len;

	assert_int_equal(frame_write(sp[0], msg, sizeof(msg), 1024, -1), FRAME_OK);
	assert_int_equal(frame_write(sp[0], "", 0, 1024, -1), FRAME_OK); /* empty frame */
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, -1), FRAME_OK);
	assert_int_equal(len, sizeof(msg));
	assert_memory_equal(out, msg, sizeof(msg));
	free(out);
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, -1), FRAME_OK);
	assert_int_equal(len, 0);
	free(out);
}

static void test_header_is_big_endian(void **state)
{
	uint8_t body[300] = { 0 }, raw[4];

	assert_int_equal(frame_write(sp[0], body, sizeof(body), 1024, -1), FRAME_OK);
	assert_int_equal(read(sp[1], raw, 4), 4);
	assert_int_equal(raw[0], 0);
	assert_int_equal(raw[1], 0);
	assert_int_equal(raw[2], 1);
	assert_int_equal(raw[3], 44);
}

struct trickle {
	int fd;
	const uint8_t *data;
	size_t len;
};

/* Writes one byte at a time with pauses, to force partial reads. */
static void *trickle_writer(void *arg)
{
	struct trickle *t = arg;

	for (size_t i = 0; i < t->len; i++) {
		if (write(t->fd, t->data + i, 1) != 1)
			break;
		if (i % 3 == 0)
			usleep(200);
	}
	return NULL;
}

static void test_partial_reads(void **state)
{
	uint8_t wire[4 + 50];
	struct trickle t = { .fd = sp[0], .data = wire, .len = sizeof(wire) };
	pthread_t th;
	uint8_t *out;
	size_t len;

	wire[0] = wire[1] = wire[2] = 0;
	wire[3] = 50;
	for (int i = 0; i < 50; i++)
		wire[4 + i] = (uint8_t)i;
	pthread_create(&th, NULL, trickle_writer, &t);
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, frame_now_ms() + 5000), FRAME_OK);
	pthread_join(th, NULL);
	assert_int_equal(len, 50);
	assert_memory_equal(out, wire + 4, 50);
	free(out);
}

static void test_large_partial_writes(void **state)
{
	/* Larger than the socket buffer: frame_write must loop on short writes. */
	size_t n = 4u << 20;
	uint8_t *big = malloc(n), *out;
	size_t len;
	int fl = fcntl(sp[0], F_GETFL);

	for (size_t i = 0; i < n; i++)
		big[i] = (uint8_t)(i >> 7);
	fcntl(sp[0], F_SETFL, fl | O_NONBLOCK); /* exercises the EAGAIN + poll path */
	if (fork() == 0) {
		_exit(frame_write(sp[0], big, n, n, frame_now_ms() + 10000) == FRAME_OK ? 0 : 1);
	}
	assert_int_equal(frame_read(sp[1], &out, &len, n, frame_now_ms() + 10000), FRAME_OK);
	assert_int_equal(len, n);
	assert_memory_equal(out, big, n);
	free(out);
	free(big);
}

static void test_eof_at_boundary(void **state)
{
	uint8_t *out;
	size_t len;

	close(sp[0]);
	sp[0] = -1;
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, -1), FRAME_EOF);
	assert_null(out);
}

static void test_truncated(void **state)
{
	uint8_t part[] = { 0, 0, 0, 10, 1, 2, 3 };
	uint8_t *out;
	size_t len;

	assert_int_equal(write(sp[0], part, sizeof(part)), (ssize_t)sizeof(part));
	close(sp[0]);
	sp[0] = -1;
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, -1), FRAME_ETRUNC);
	assert_null(out);
}

static void test_truncated_header(void **state)
{
	uint8_t part[] = { 0, 0 };
	uint8_t *out;
	size_t len;

	assert_int_equal(write(sp[0], part, sizeof(part)), 2);
	close(sp[0]);
	sp[0] = -1;
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, -1), FRAME_ETRUNC);
}

static void test_too_big_refused_before_alloc(void **state)
{
	/* 0xffffffff would be a 4 GiB allocation if the check came late. */
	uint8_t hdr[] = { 0xff, 0xff, 0xff, 0xff };
	uint8_t *out;
	size_t len;

	assert_int_equal(write(sp[0], hdr, 4), 4);
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, -1), FRAME_ETOOBIG);
	assert_null(out);
	/* One byte over the caller's maximum is refused too. */
	uint8_t hdr2[] = { 0, 0, 4, 1 };
	assert_int_equal(write(sp[0], hdr2, 4), 4);
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, -1), FRAME_ETOOBIG);
}

static void test_write_too_big(void **state)
{
	uint8_t buf[100] = { 0 };

	assert_int_equal(frame_write(sp[0], buf, sizeof(buf), 99, -1), FRAME_EINVAL);
	assert_int_equal(frame_write(sp[0], NULL, 5, 99, -1), FRAME_EINVAL);
}

static void test_timeout(void **state)
{
	uint8_t *out;
	size_t len;
	int64_t t0 = frame_now_ms();

	assert_int_equal(frame_read(sp[1], &out, &len, 1024, frame_now_ms() + 100), FRAME_ETIMEDOUT);
	assert_true(frame_now_ms() - t0 >= 100);
	/* A frame that starts but stalls also times out. */
	uint8_t part[] = { 0, 0, 0, 10, 1 };
	assert_int_equal(write(sp[0], part, sizeof(part)), 5);
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, frame_now_ms() + 100), FRAME_ETIMEDOUT);
}

static void on_alarm(int sig)
{
	(void)sig;
}

static void test_eintr(void **state)
{
	struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART: read gets EINTR */
	struct itimerval it = { .it_value = { .tv_usec = 50000 } };
	uint8_t *out;
	size_t len;

	sigaction(SIGALRM, &sa, NULL);
	if (fork() == 0) {
		usleep(200000);
		_exit(frame_write(sp[0], "late", 4, 1024, -1) == FRAME_OK ? 0 : 1);
	}
	setitimer(ITIMER_REAL, &it, NULL);
	assert_int_equal(frame_read(sp[1], &out, &len, 1024, -1), FRAME_OK);
	assert_int_equal(len, 4);
	assert_memory_equal(out, "late", 4);
	free(out);
	signal(SIGALRM, SIG_DFL);
}

static void test_peer_closed_on_write(void **state)
{
	uint8_t buf[8192] = { 0 };
	int rc;

	close(sp[1]);
	sp[1] = -1;
	/* MSG_NOSIGNAL: an error code, not a SIGPIPE that kills the process. */
	rc = frame_write(sp[0], buf, sizeof(buf), sizeof(buf), -1);
	assert_int_equal(rc, FRAME_EIO);
	assert_int_equal(errno, EPIPE);
}

static void test_reader_feed_bytewise(void **state)
{
	struct frame_reader r;
	uint8_t wire[] = { 0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0, 0, 0, 0, 2, 'x', 'y' };
	const char *want[] = { "abc", "", "xy" };
	size_t wantlen[] = { 3, 0, 2 };
	int got = 0;

	frame_reader_init(&r, 16);
	for (size_t i = 0; i < sizeof(wire); i++) {
		uint8_t *out;
		size_t len, used;
		int rc = frame_reader_feed(&r, wire + i, 1, &used, &out, &len);

		assert_int_equal(used, 1);
		if (rc == FRAME_OK) {
			assert_true(got < 3);
			assert_int_equal(len, wantlen[got]);
			assert_memory_equal(out, want[got], len);
			free(out);
			got++;
		} else {
			assert_int_equal(rc, FRAME_EAGAIN);
		}
	}
	assert_int_equal(got, 3);
	assert_false(frame_reader_partial(&r));
	frame_reader_reset(&r);
}

static void test_reader_too_big(void **state)
{
	struct frame_reader r;
	uint8_t hdr[] = { 0, 0, 0, 17 };
	uint8_t *out;
	size_t len, used;

	frame_reader_init(&r, 16);
	assert_int_equal(frame_reader_feed(&r, hdr, 4, &used, &out, &len), FRAME_ETOOBIG);
	assert_null(out);
	frame_reader_reset(&r);
}

static void test_reader_poll_nonblocking(void **state)
{
	struct frame_reader r;
	uint8_t *out;
	size_t len;
	int rc;

	fcntl(sp[1], F_SETFL, O_NONBLOCK);
	frame_reader_init(&r, 1024);
	assert_int_equal(frame_reader_poll(&r, sp[1], &out, &len), FRAME_EAGAIN);
	assert_int_equal(write(sp[0], "\0\0\0\5he", 6), 6);
	/* Header plus two body bytes: still incomplete. */
	while ((rc = frame_reader_poll(&r, sp[1], &out, &len)) == FRAME_EAGAIN && !frame_reader_partial(&r))
		;
	assert_true(frame_reader_partial(&r));
	assert_int_equal(write(sp[0], "llo", 3), 3);
	for (int i = 0; i < 10 && (rc = frame_reader_poll(&r, sp[1], &out, &len)) == FRAME_EAGAIN; i++)
		;
	assert_int_equal(rc, FRAME_OK);
	assert_int_equal(len, 5);
	assert_memory_equal(out, "hello", 5);
	free(out);
	close(sp[0]);
	sp[0] = -1;
	assert_int_equal(frame_reader_poll(&r, sp[1], &out, &len), FRAME_EOF);
	frame_reader_reset(&r);
}

static void test_msg_invoke_roundtrip(void **state)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT, *got;
	Hearth__Invoke inv = HEARTH__INVOKE__INIT;
	uint8_t payload[] = { 0, 1, 2, 0xff, 0 };

	inv.request_id = "11111111-2222-3333-4444-555555555555";
	inv.payload.data = payload;
	inv.payload.len = sizeof(payload);
	inv.timeout_ms = 1234;
	env.seq = 9;
	env.msg_case = HEARTH__ENVELOPE__MSG_INVOKE;
	env.invoke = &inv;
	assert_int_equal(msg_send(sp[0], &env, FRAME_DEFAULT_MAX, -1), FRAME_OK);
	assert_int_equal(msg_recv(sp[1], FRAME_DEFAULT_MAX, -1, &got), FRAME_OK);
	assert_int_equal(got->seq, 9);
	assert_int_equal(got->msg_case, HEARTH__ENVELOPE__MSG_INVOKE);
	assert_string_equal(got->invoke->request_id, inv.request_id);
	assert_int_equal(got->invoke->payload.len, sizeof(payload));
	assert_memory_equal(got->invoke->payload.data, payload, sizeof(payload));
	assert_int_equal(got->invoke->timeout_ms, 1234);
	assert_string_equal(msg_name(got), "invoke");
	msg_free(got);
}

static void test_msg_configure_roundtrip(void **state)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT, *got;
	Hearth__Configure c = HEARTH__CONFIGURE__INIT;
	Hearth__KeyValue kv1 = HEARTH__KEY_VALUE__INIT, kv2 = HEARTH__KEY_VALUE__INIT;
	Hearth__KeyValue *kvs[] = { &kv1, &kv2 };
	char *args[] = { "--fast", "x y" };
	uint8_t *buf;
	size_t len;

	kv1.key = "A";
	kv1.value = "1";
	kv2.key = "EMPTY";
	kv2.value = "";
	c.handler = "/var/task/handler";
	c.args = args;
	c.n_args = 2;
	c.env = kvs;
	c.n_env = 2;
	c.timeout_ms = 900000;
	c.max_response_bytes = 6u << 20;
	env.msg_case = HEARTH__ENVELOPE__MSG_CONFIGURE;
	env.configure = &c;
	assert_int_equal(msg_pack(&env, &buf, &len), FRAME_OK);
	got = msg_unpack(buf, len);
	free(buf);
	assert_non_null(got);
	assert_string_equal(got->configure->handler, "/var/task/handler");
	assert_int_equal(got->configure->n_args, 2);
	assert_string_equal(got->configure->args[1], "x y");
	assert_int_equal(got->configure->n_env, 2);
	assert_string_equal(got->configure->env[0]->key, "A");
	assert_string_equal(got->configure->env[1]->value, "");
	assert_int_equal(got->configure->timeout_ms, 900000);
	assert_int_equal(got->configure->max_response_bytes, 6u << 20);
	msg_free(got);
}

static void test_msg_result_roundtrip(void **state)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT, *got;
	Hearth__InvokeResult r = HEARTH__INVOKE_RESULT__INIT;
	uint8_t *buf;
	size_t len;

	r.request_id = "r";
	r.status = HEARTH__INVOKE_STATUS__INVOKE_CRASHED;
	r.signal = 11;
	r.exit_code = -1;
	r.logs.data = (uint8_t *)"boom";
	r.logs.len = 4;
	r.logs_truncated = 1;
	r.duration_us = UINT64_MAX;
	r.max_rss_kb = 123456;
	env.msg_case = HEARTH__ENVELOPE__MSG_INVOKE_RESULT;
	env.invoke_result = &r;
	assert_int_equal(msg_pack(&env, &buf, &len), FRAME_OK);
	got = msg_unpack(buf, len);
	free(buf);
	assert_non_null(got);
	assert_int_equal(got->invoke_result->status, HEARTH__INVOKE_STATUS__INVOKE_CRASHED);
	assert_int_equal(got->invoke_result->signal, 11);
	assert_int_equal(got->invoke_result->exit_code, -1);
	assert_int_equal(got->invoke_result->body.len, 0);
	assert_true(got->invoke_result->logs_truncated);
	assert_true(got->invoke_result->duration_us == UINT64_MAX);
	assert_int_equal(got->invoke_result->max_rss_kb, 123456);
	msg_free(got);
}

static void test_msg_garbage(void **state)
{
	uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	uint8_t truncated_field[] = { 0x62, 0x10, 'a' }; /* invoke, length 16, 1 byte */
	Hearth__Envelope *got;

	assert_null(msg_unpack(junk, sizeof(junk)));
	assert_null(msg_unpack(truncated_field, sizeof(truncated_field)));
	assert_int_equal(frame_write(sp[0], junk, sizeof(junk), 1024, -1), FRAME_OK);
	assert_int_equal(msg_recv(sp[1], 1024, -1, &got), MSG_EDECODE);
	assert_null(got);
	/* Empty and unknown-field-only envelopes decode but carry no message. */
	got = msg_unpack((const uint8_t *)"", 0);
	assert_non_null(got);
	assert_int_equal(got->msg_case, HEARTH__ENVELOPE__MSG__NOT_SET);
	assert_string_equal(msg_name(got), "none");
	msg_free(got);
	uint8_t unknown[] = { 0x98, 0x06, 0x01 }; /* field 99, varint 1 */
	got = msg_unpack(unknown, sizeof(unknown));
	assert_non_null(got);
	assert_int_equal(got->msg_case, HEARTH__ENVELOPE__MSG__NOT_SET);
	msg_free(got);
}

static void test_msg_send_too_big(void **state)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Invoke inv = HEARTH__INVOKE__INIT;
	static uint8_t payload[2048];
	uint8_t probe;

	inv.payload.data = payload;
	inv.payload.len = sizeof(payload);
	env.msg_case = HEARTH__ENVELOPE__MSG_INVOKE;
	env.invoke = &inv;
	assert_int_equal(msg_send(sp[0], &env, 1024, -1), FRAME_EINVAL);
	/* Nothing was written: the peer sees no partial frame. */
	fcntl(sp[1], F_SETFL, O_NONBLOCK);
	assert_int_equal(read(sp[1], &probe, 1), -1);
	assert_int_equal(errno, EAGAIN);
}

static void test_strerror_distinct(void **state)
{
	int codes[] = { FRAME_OK, FRAME_EOF, FRAME_ETRUNC, FRAME_ETOOBIG, FRAME_EIO, FRAME_ENOMEM,
			FRAME_ETIMEDOUT, FRAME_EAGAIN, FRAME_EINVAL, MSG_EDECODE };
	size_t n = sizeof(codes) / sizeof(codes[0]);

	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			assert_string_not_equal(msg_strerror(codes[i]), msg_strerror(codes[j]));
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_is_big_endian, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_partial_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eof_at_boundary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_big_refused_before_alloc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eintr, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_closed_on_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_feed_bytewise, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_poll_nonblocking, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msg_invoke_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msg_configure_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msg_result_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msg_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_msg_send_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_strerror_distinct, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return HEARTH_RUN_TESTS("frame", tests, argc, argv);
}
