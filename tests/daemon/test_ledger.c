/*
 * The invocation ledger's journal (label daemon): records reach the SQLite
 * store through ledger.c. A process killed with records only on file loses
 * none of them, a record replayed after it was committed is counted once, a
 * torn or garbled line is dropped alone, and readers see their own writes.
 * "Killed" is real: a child process adds the records and is sent SIGKILL.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../cmocka_main.h"
#include "store.h"

struct env {
	char dir[64];
	char db[128];
	char seg[2][160];
};

static int env_setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));

	strcpy(e->dir, "/tmp/hearth-ledger.XXXXXX");
	if (!mkdtemp(e->dir))
		return -1;
	snprintf(e->db, sizeof(e->db), "%s/hearth.db", e->dir);
	for (int i = 0; i < 2; i++)
		snprintf(e->seg[i], sizeof(e->seg[i]), "%s-ledger.%d", e->db, i);
	*state = e;
	return 0;
}

static int env_teardown(void **state)
{
	struct env *e = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	if (system(cmd) != 0)
		return -1;
	free(e);
	return 0;
}

/* batch_ms: how long a batch waits (a long one keeps records on file only). */
static struct store *open_store(struct env *e, unsigned batch_ms)
{
	struct store_options so = { .ledger_journal = true, .ledger_batch_us = batch_ms * 1000 };
	struct store *s = NULL;
	char err[256];

	if (store_open_spec(e->db, &so, &s, err, sizeof(err))) {
		fprintf(stderr, "open: %s\n", err);
		return NULL;
	}
	return s;
}

/* Record i of tenant t: logs with a NUL and every byte value, so base64 is exercised. */
static void add_record(struct store *s, int64_t t, int i)
{
	char id[64], error[32];
	uint8_t logs[300];
	struct inv_record r = {
		.request_id = id, .attempt = 1, .tenant_id = t, .version_id = 1,
		.function = "fn", .version = 1, .kind = "sync", .start_us = 1000000 + i,
		.end_us = 1000100 + i, .duration_us = 100, .billed_ms = 1, .mb_ms = 128,
		.memory_mb = 128, .max_rss_kb = 1024, .status = i % 2 ? "Success" : "FunctionError",
		.error = i % 2 ? NULL : error, .logs = logs, .logs_len = (size_t)(i % 300),
	};

	snprintf(id, sizeof(id), "req-%06d", i);
	snprintf(error, sizeof(error), "boom %d", i);
	for (size_t k = 0; k < sizeof(logs); k++)
		logs[k] = (uint8_t)(k + i);
	assert_int_equal(store_invocation_add(s, &r), 0);
}

/* The usage total and the number of log rows of fn, through the store's readers. */
static void counts(struct store *s, int64_t t, int64_t *invocations, size_t *rows)
{
	json_t *u = store_usage_query(s, t, 0, INT64_MAX / 2, "tenant");
	json_t *l = store_invocation_logs(s, t, "fn", 100000);

	assert_non_null(u);
	assert_non_null(l);
	*invocations = json_array_size(u) ?
		json_integer_value(json_object_get(json_array_get(u, 0), "invocations")) : 0;
	*rows = json_array_size(l);
	json_decref(u);
	json_decref(l);
}

/* Both the usage total and the log rows of fn are want. */
static void expect_counts(struct store *s, int64_t t, int64_t want)
{
	int64_t v;
	size_t rows;

	counts(s, t, &v, &rows);
	assert_int_equal(v, want);
	assert_int_equal(rows, (size_t)want);
}

/* Opens the store again after a writer died with records on file; checks they are all there. */
static struct store *reopen_expect(struct env *e, int64_t t, int64_t want);

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

static struct store *reopen_expect(struct env *e, int64_t t, int64_t want)
{
	struct store *s;

	assert_true(file_size(e->seg[0]) + file_size(e->seg[1]) > 0);
	s = open_store(e, 0);
	assert_non_null(s);
	expect_counts(s, t, want);
	return s;
}

/* A child adds n records and is killed before any batch commits; returns the tenant. */
static int64_t killed_writer(struct env *e, int n, bool commit_first)
{
	int64_t t = 0;
	struct store *s = open_store(e, 0);
	int fds[2];
	pid_t pid;
	char c;

	assert_non_null(s);
	assert_int_equal(store_tenant_create(s, "acme", &t), 0);
	store_close(s);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		s = open_store(e, 600000); /* ten minutes: nothing commits on its own */
		if (!s)
			_exit(1);
		for (int i = 0; i < n; i++)
			add_record(s, t, i);
		if (commit_first) {
			/* What a crash between the commit and the emptying leaves: committed
			 * records still on file. */
			char *copy = NULL;
			size_t len = 0;
			int seg = file_size(e->seg[0]) > 0 ? 0 : 1;
			FILE *f = fopen(e->seg[seg], "r");

			if (!f || getdelim(&copy, &len, 0, f) < 0)
				_exit(1);
			fclose(f);
			int64_t v;
			size_t rows;

			counts(s, t, &v, &rows); /* a reader: commits everything first */
			if (v != n)
				_exit(1);
			f = fopen(e->seg[seg], "w");
			if (!f || fwrite(copy, 1, strlen(copy), f) != strlen(copy) || fclose(f))
				_exit(1);
		}
		if (write(fds[1], "k", 1) != 1)
			_exit(1);
		pause(); /* killed here, the store never closed */
		_exit(1);
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &c, 1), 1);
	close(fds[0]);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return t;
}

/* Readers see every record at once, with its logs intact. */
static void test_ledger_reads_own_writes(void **state)
{
	struct env *e = *state;
	struct store *s = open_store(e, 600000); /* only readers make it commit */
	int64_t t;

	assert_non_null(s);
	assert_int_equal(store_tenant_create(s, "acme", &t), 0);
	for (int i = 0; i < 250; i++)
		add_record(s, t, i);
	assert_true(file_size(e->seg[0]) + file_size(e->seg[1]) > 0);
	expect_counts(s, t, 250);
	/* The journal is empty once its records are committed. */
	assert_int_equal(file_size(e->seg[0]) + file_size(e->seg[1]), 0);

	json_t *l = store_invocation_logs(s, t, "fn", 1000);
	bool seen = false;

	for (size_t k = 0; k < json_array_size(l); k++) {
		json_t *o = json_array_get(l, k);

		if (strcmp(json_string_value(json_object_get(o, "request_id")), "req-000257") == 0)
			fail_msg("a record that was never added");
		if (strcmp(json_string_value(json_object_get(o, "request_id")), "req-000007") == 0) {
			seen = true;
			assert_string_equal(json_string_value(json_object_get(o, "status")), "Success");
		}
	}
	assert_true(seen);
	json_decref(l);
	/* Closing commits what is left; reopening finds each record once. */
	add_record(s, t, 250);
	store_close(s);
	s = open_store(e, 0);
	assert_non_null(s);
	expect_counts(s, t, 251);
	store_close(s);
}

/* Killed with its records only on file: the next open commits them all. */
static void test_ledger_kill9_replays(void **state)
{
	struct env *e = *state;
	int64_t t = killed_writer(e, 300, false);
	struct store *s = reopen_expect(e, t, 300);

	assert_int_equal(file_size(e->seg[0]) + file_size(e->seg[1]), 0);
	/* And the store goes on taking records. */
	add_record(s, t, 300);
	expect_counts(s, t, 301);
	store_close(s);
}

/* Committed records still on file after a crash are not counted twice. */
static void test_ledger_replay_counts_once(void **state)
{
	struct env *e = *state;
	int64_t t = killed_writer(e, 120, true);

	store_close(reopen_expect(e, t, 120));
}

/* A torn last line and a garbled one are dropped; every whole record is kept. */
static void test_ledger_torn_and_garbled(void **state)
{
	struct env *e = *state;
	int64_t t = killed_writer(e, 40, false);
	int seg = file_size(e->seg[0]) > 0 ? 0 : 1;
	struct store *s;
	FILE *f = fopen(e->seg[seg], "a");

	assert_non_null(f);
	fputs("this is not JSON\n", f);
	fputs("{\"request_id\": \"half-a-record\", \"attempt\": 1}\n", f); /* JSON, not a record */
	fputs("{\"request_id\": \"torn\", \"att", f);                     /* cut mid-write */
	fclose(f);
	s = reopen_expect(e, t, 40);
	add_record(s, t, 40);
	expect_counts(s, t, 41);
	store_close(s);
}

/*
 * Deleting a tenant commits its pending records first, so none land after the
 * deletion: its logs are gone, and its usage is billed once, under its
 * deleted identity.
 */
static void test_ledger_delete_after_pending(void **state)
{
	struct env *e = *state;
	struct store *s = open_store(e, 600000);
	int64_t t, v, t2;
	int64_t *ids = NULL;
	size_t n = 0, rows;

	assert_non_null(s);
	assert_int_equal(store_tenant_create(s, "acme", &t), 0);
	for (int i = 0; i < 10; i++)
		add_record(s, t, i);
	assert_int_equal(store_tenant_delete(s, "acme", &ids, &n), 0);
	free(ids);
	store_close(s); /* would commit anything still pending */
	s = open_store(e, 0);
	assert_non_null(s);
	assert_int_equal(store_tenant_create(s, "other", &t2), 0);
	assert_true(t2 != t);
	counts(s, t, &v, &rows);
	assert_int_equal(v, 10);
	assert_int_equal(rows, 0);
	store_close(s);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ledger_reads_own_writes, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_ledger_kill9_replays, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_ledger_replay_counts_once, env_setup,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_ledger_torn_and_garbled, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_ledger_delete_after_pending, env_setup,
						env_teardown),
	};

	return HEARTH_RUN_TESTS("daemon", tests, argc, argv);
}
