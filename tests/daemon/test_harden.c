/*
 * Hardening tests (label daemon): the defects found by probing a running
 * hearthd (issue 14), each against the real daemon over HTTP. Every refusal is
 * checked for hearth's JSON error and the right status, and every test then
 * checks that the daemon still serves a valid request.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <sqlite3.h>

#include "../cmocka_main.h"
#include "harness.h"

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int tcp_connect(struct hd *h)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)h->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/*
 * Sends raw bytes (a request no client library would send) and reads the
 * answer until the server closes or wait_ms passes. Returns the bytes read
 * (NUL-terminated in out); *closed tells whether the server closed.
 */
static size_t raw_request(struct hd *h, const void *req, size_t len, int wait_ms, char *out,
			  size_t cap, bool *closed)
{
	int fd = tcp_connect(h);
	int64_t end = now_ms() + wait_ms;
	size_t got = 0;

	assert_int_equal(write(fd, req, len), (ssize_t)len);
	*closed = false;
	while (got + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)(end - now_ms());
		ssize_t n;

		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
		n = read(fd, out + got, cap - 1 - got);
		if (n <= 0) {
			*closed = true;
			break;
		}
		got += (size_t)n;
	}
	out[got] = 0;
	close(fd);
	return got;
}

/* Status code of a raw answer, and its JSON error code (static buffer). */
static int raw_status(const char *ans)
{
	int st = 0;

	return sscanf(ans, "HTTP/1.1 %d", &st) == 1 ? st : 0;
}

static const char *raw_error_code(const char *ans)
{
	static char code[64];
	const char *body = strstr(ans, "\r\n\r\n");
	json_t *j = body ? json_loads(body + 4, JSON_DISABLE_EOF_CHECK, NULL) : NULL;

	snprintf(code, sizeof(code), "%s",
		 json_string_value(json_object_get(json_object_get(j, "error"), "code")) ?: "");
	json_decref(j);
	return code;
}

static void expect_error(long got, struct resp *r, long status, const char *code)
{
	if (got != status)
		fprintf(stderr, "wanted %ld %s, got %ld %s\n", status, code, got,
			r->body ? r->body : "");
	assert_int_equal(got, status);
	assert_string_equal(error_code(r), code);
	resp_free(r);
}

static void invoke_ok(struct hd *h, const char *key, const char *fn)
{
	struct resp r;

	assert_int_equal(invoke(h, key, fn, "ping", NULL, &r), 200);
	assert_non_null(strstr(r.body, "ping"));
	resp_free(&r);
}

static size_t array_len(struct hd *h, const char *key, const char *path, const char *field)
{
	struct resp r;
	json_t *j;
	size_t n;

	assert_int_equal(http(h, "GET", path, key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	n = json_array_size(json_object_get(j, field));
	json_decref(j);
	resp_free(&r);
	return n;
}

static int latest_version(struct hd *h, const char *key, const char *fn)
{
	struct resp r;
	char path[128];
	json_t *j, *vs;
	int v = 0;

	snprintf(path, sizeof(path), "/v1/functions/%s", fn);
	assert_int_equal(http(h, "GET", path, key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	vs = json_object_get(j, "versions");
	v = (int)json_array_size(vs);
	json_decref(j);
	resp_free(&r);
	return v;
}

/* ---- 1: a new tenant never sees a deleted tenant's data ------------------------- */

static void test_tenant_delete_leaves_nothing(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *old, *fresh, path[160], event_id[64];
	json_t *j;

	hd_start(h);
	old = tenant_create(h, "acme");
	deploy(h, old, "hello", EXAMPLES_DIR "/hello", NULL);
	deploy(h, old, "fail", FNS_DIR "/fail", NULL);
	invoke_ok(h, old, "hello");
	/* An event that fails for good: a dead letter holding acme's payload. */
	assert_int_equal(invoke(h, old, "fail", "secret-payload", "X-Hearth-Invocation-Type: Event",
				&r), 202);
	j = body_json(&r);
	snprintf(event_id, sizeof(event_id), "%s",
		 json_string_value(json_object_get(j, "request_id")));
	json_decref(j);
	resp_free(&r);
	json_decref(wait_event(h, old, event_id, "dead"));
	assert_int_equal(array_len(h, old, "/v1/dead-letters", "dead_letters"), 1);

	/* Delete the newest tenant, then create another: it must start empty. */
	assert_int_equal(http(h, "DELETE", "/v1/tenants/acme", h->admin, NULL, NULL, 0, NULL, &r),
			 200);
	resp_free(&r);
	expect_error(http(h, "DELETE", "/v1/tenants/acme", h->admin, NULL, NULL, 0, NULL, &r), &r,
		     404, "TenantNotFound");
	expect_error(http(h, "GET", "/v1/functions", old, NULL, NULL, 0, NULL, &r), &r, 401,
		     "Unauthorized");
	fresh = tenant_create(h, "newco");
	assert_int_equal(array_len(h, fresh, "/v1/usage", "usage"), 0);
	assert_int_equal(array_len(h, fresh, "/v1/dead-letters", "dead_letters"), 0);
	assert_int_equal(array_len(h, fresh, "/v1/functions/hello/logs", "invocations"), 0);
	assert_int_equal(array_len(h, fresh, "/v1/functions/fail/logs", "invocations"), 0);
	assert_int_equal(array_len(h, fresh, "/v1/functions", "functions"), 0);
	snprintf(path, sizeof(path), "/v1/invocations/%s", event_id);
	expect_error(http(h, "GET", path, fresh, NULL, NULL, 0, NULL, &r), &r, 404,
		     "InvocationNotFound");
	/* The admin's view bills newco nothing; acme's usage stays, under acme's name. */
	assert_int_equal(http(h, "GET", "/v1/usage?group_by=none", h->admin, NULL, NULL, 0, NULL, &r),
			 200);
	assert_null(strstr(r.body, "newco"));
	assert_non_null(strstr(r.body, "acme (deleted)"));
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/usage?group_by=none", h->admin, "newco", NULL, 0, NULL,
			      &r), 200);
	assert_null(strstr(r.body, "acme"));
	resp_free(&r);
	/* And newco works normally. */
	deploy(h, fresh, "hello", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(latest_version(h, fresh, "hello"), 1);
	invoke_ok(h, fresh, "hello");
	assert_int_equal(array_len(h, fresh, "/v1/functions/hello/logs", "invocations"), 1);
	free(old);
	free(fresh);
	hd_stop(h);
}

/*
 * A database from before tenant ids were AUTOINCREMENT, in which the old code
 * deleted the newest tenant and left its usage and invocations behind: the
 * upgrade must not hand that id out again.
 */
static void sql(sqlite3 *db, const char *q)
{
	char *err = NULL;

	if (sqlite3_exec(db, q, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", q, err);
}

static void test_tenant_ids_survive_upgrade(void **state)
{
	struct hd *h = *state;
	char dbpath[128], *a, *b, *fresh;
	struct resp r;
	sqlite3 *db;

	hd_start(h);
	a = tenant_create(h, "first");
	for (int i = 0; i < 3; i++)
		deploy(h, a, (const char *[]){ "alpha", "beta", "gamma" }[i], FNS_DIR "/multi", NULL);
	assert_int_equal(http(h, "PUT", "/v1/tenants/first/limits", h->admin, NULL,
			      "{\"max_concurrency\": 10}", 23, NULL, &r), 200);
	resp_free(&r);
	b = tenant_create(h, "gone");
	deploy(h, b, "hello", EXAMPLES_DIR "/hello", NULL);
	invoke_ok(h, b, "hello");
	hd_stop(h);
	/* Turn the database into what the old code left: no AUTOINCREMENT, "gone" deleted its way. */
	snprintf(dbpath, sizeof(dbpath), "%s/state/hearth.db", h->dir);
	assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
	sql(db, "PRAGMA foreign_keys=OFF; BEGIN;"
		"CREATE TABLE t_old(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
		" created_at INTEGER NOT NULL);"
		"INSERT INTO t_old SELECT id, name, created_at FROM tenants; DROP TABLE tenants;"
		"ALTER TABLE t_old RENAME TO tenants;"
		"DROP TABLE IF EXISTS deleted_tenants; COMMIT; PRAGMA foreign_keys=ON;"
		"DELETE FROM tenants WHERE name = 'gone';"
		/* reservations stored before they were bounded: their sum overflows int64 */
		"UPDATE functions SET reserved = 9223372036854775807 WHERE name IN ('alpha', 'gamma');");
	/* Only databases that ever had an AUTOINCREMENT table have this one. */
	sqlite3_exec(db, "DELETE FROM sqlite_sequence WHERE name = 'tenants'", NULL, NULL, NULL);
	sqlite3_close(db);
	hd_start(h);
	fresh = tenant_create(h, "fresh");
	/* Nothing "gone" left behind is fresh's. */
	assert_int_equal(array_len(h, fresh, "/v1/usage", "usage"), 0);
	assert_int_equal(array_len(h, fresh, "/v1/functions/hello/logs", "invocations"), 0);
	assert_int_equal(http(h, "GET", "/v1/usage?group_by=none", h->admin, NULL, NULL, 0, NULL, &r),
			 200);
	assert_null(strstr(r.body, "fresh"));
	resp_free(&r);
	/* Sums over such values saturate: nothing more fits, and the shared pool is empty. */
	expect_error(http(h, "PUT", "/v1/functions/beta/config", a, NULL, "{\"reserved\": 1}", 15,
			  NULL, &r), &r, 409, "ReservationTooLarge");
	expect_error(invoke(h, a, "beta", "x", NULL, &r), &r, 429, "TenantConcurrencyLimitExceeded");
	invoke_ok(h, a, "alpha");
	/* The upgraded table keeps its tenants and works as before. */
	assert_int_equal(array_len(h, a, "/v1/functions", "functions"), 3);
	deploy(h, fresh, "hello", EXAMPLES_DIR "/hello", NULL);
	invoke_ok(h, fresh, "hello");
	free(a);
	free(b);
	free(fresh);
	hd_stop(h);
}

/* ---- 3: no body is read before the key is checked; uploads go to disk ---------- */

static long vm_hwm_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void test_auth_before_body(void **state)
{
	struct hd *h = *state;
	static const char req[] = "POST /v1/functions/x HTTP/1.1\r\nHost: h\r\n"
				  "Content-Type: application/gzip\r\nContent-Length: 62914560\r\n\r\n";
	char ans[4096], *key, *big;
	size_t big_len = 60u << 20;
	struct resp r;
	bool closed;
	long before, after;

	hd_start(h);
	key = tenant_create(h, "acme");
	/* Not one byte of the 60 MiB body is sent: the 401 must come from the header alone. */
	raw_request(h, req, sizeof(req) - 1, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 401);
	assert_string_equal(raw_error_code(ans), "Unauthorized");
	/* A JSON body (only the admin's server-path deploy) is small: 413 from its header. */
	char jreq[512];
	int jn = snprintf(jreq, sizeof(jreq),
			  "POST /v1/functions/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\r\n"
			  "Content-Type: application/json\r\nContent-Length: 62914560\r\n\r\n", key);
	raw_request(h, jreq, (size_t)jn, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 413);
	assert_string_equal(raw_error_code(ans), "PayloadTooLarge");
	/* An authenticated 60 MiB upload is streamed to disk, not held in memory. */
	big = malloc(big_len);
	assert_non_null(big);
	memset(big, 'x', big_len);
	before = vm_hwm_kb(h->pid);
	expect_error(http(h, "POST", "/v1/functions/junk", key, NULL, big, big_len,
			  "Content-Type: application/gzip", &r), &r, 400, "InvalidPackage");
	after = vm_hwm_kb(h->pid);
	fprintf(stderr, "hearthd peak RSS %ld kB before, %ld kB after a 60 MiB upload\n", before,
		after);
	assert_true(after - before < 24 * 1024);
	free(big);
	/* Nothing of the upload is left behind, and deploys still work. */
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s/state/tmp)\"", h->dir);
	assert_int_equal(system(cmd), 0);
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	invoke_ok(h, key, "hello");
	free(key);
	hd_stop(h);
}

/* ---- 4: connection limits, header deadline, fd limit ----------------------------- */

static void test_connection_limits(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--max-connections-per-ip", "8", "--header-timeout", "2",
					    NULL };
	int fds[8];
	struct resp r;
	char *key, buf[64];
	int64_t start;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	usleep(300000); /* the set-up requests' connections are gone */
	/* Eight half-requests take this address's eight connections... */
	for (int i = 0; i < 8; i++) {
		fds[i] = tcp_connect(h);
		assert_true(write(fds[i], "POST /v1/functions/hello/invoke HTTP/1.1\r\n", 42) == 42);
	}
	usleep(200000);
	/* ...so a ninth from it is refused, while the Unix socket serves everyone. */
	assert_true(http(h, "GET", "/healthz", NULL, NULL, NULL, 0, NULL, &r) != 200);
	resp_free(&r);
	h->use_unix = 1;
	invoke_ok(h, key, "hello");
	h->use_unix = 0;
	/* A byte every 300 ms keeps an idle timer alive, but not the header deadline. */
	start = now_ms();
	for (int round = 0; round < 20; round++) {
		int open = 0;

		for (int i = 0; i < 8; i++) {
			if (fds[i] < 0)
				continue;
			if (write(fds[i], "X", 1) != 1 ||
			    recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT) == 0) {
				close(fds[i]);
				fds[i] = -1;
				continue;
			}
			open++;
		}
		if (!open)
			break;
		usleep(300000);
	}
	for (int i = 0; i < 8; i++) {
		assert_int_equal(fds[i], -1);
	}
	fprintf(stderr, "trickling half-requests closed after %lld ms\n",
		(long long)(now_ms() - start));
	assert_true(now_ms() - start < 5000);
	/* Room again over TCP. */
	usleep(300000);
	invoke_ok(h, key, "hello");
	free(key);
	hd_stop(h);
}

static void test_fd_limit(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--max-vms", "4", NULL };
	enum { N = 900 };
	static int fds[N];
	char path[64], line[256];
	struct resp r;
	char *key;
	long soft = 0, hard = 0;
	FILE *f;

	h->nofile = 700; /* hearthd starts with soft 256, hard 700 */
	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	/* The soft limit is raised to the hard one. */
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)h->pid);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Max open files %ld %ld", &soft, &hard) == 2)
			break;
	fclose(f);
	assert_int_equal(soft, 700);
	assert_int_equal(hard, 700);
	/* More idle TCP connections than hearthd has fds. */
	for (int i = 0; i < N; i++)
		fds[i] = tcp_connect(h);
	usleep(500000);
	/* The Unix socket and the VMs still have their fds: an invocation works. */
	h->use_unix = 1;
	invoke_ok(h, key, "hello");
	assert_int_equal(http(h, "GET", "/v1/functions", key, NULL, NULL, 0, NULL, &r), 200);
	resp_free(&r);
	h->use_unix = 0;
	for (int i = 0; i < N; i++)
		close(fds[i]);
	usleep(500000);
	invoke_ok(h, key, "hello");
	free(key);
	hd_stop(h);
}

/* ---- 5: long URLs are 414, never cut --------------------------------------------- */

static void test_long_url(void **state)
{
	struct hd *h = *state;
	char path[2048], *key;
	struct resp r;
	int n;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "victim", EXAMPLES_DIR "/hello", NULL);
	/* DELETE /v1/functions/victim/////...////logs once deleted the function. */
	n = snprintf(path, sizeof(path), "/v1/functions/victim");
	memset(path + n, '/', 600);
	snprintf(path + n + 600, sizeof(path) - (size_t)n - 600, "logs");
	expect_error(http(h, "DELETE", path, key, NULL, NULL, 0, NULL, &r), &r, 414, "URITooLong");
	assert_int_equal(latest_version(h, key, "victim"), 1);
	/* A long invoke URL once deployed a new version. */
	n = snprintf(path, sizeof(path), "/v1/functions/victim");
	memset(path + n, '/', 600);
	snprintf(path + n + 600, sizeof(path) - (size_t)n - 600, "invoke");
	expect_error(http(h, "POST", path, key, NULL, "x", 1, NULL, &r), &r, 414, "URITooLong");
	assert_int_equal(latest_version(h, key, "victim"), 1);
	/* A long query too. */
	n = snprintf(path, sizeof(path), "/v1/functions/victim/logs?pad=");
	memset(path + n, 'a', 1500);
	path[n + 1500] = 0;
	assert_int_equal(http(h, "GET", path, key, NULL, NULL, 0, NULL, &r), 200); /* fits 4 KiB */
	resp_free(&r);
	char *huge = malloc(6000);
	n = snprintf(huge, 6000, "/v1/functions/victim/logs?pad=");
	memset(huge + n, 'a', 5000);
	huge[n + 5000] = 0;
	expect_error(http(h, "GET", huge, key, NULL, NULL, 0, NULL, &r), &r, 414, "URITooLong");
	free(huge);
	invoke_ok(h, key, "victim");
	free(key);
	hd_stop(h);
}

/* ---- 6: NUL and control characters in names -------------------------------------- */

static void test_nul_in_names(void **state)
{
	struct hd *h = *state;
	struct resp r;
	size_t len;
	char *key, *pkg;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	pkg = pack(h, EXAMPLES_DIR "/hello", &len);
	expect_error(http(h, "POST", "/v1/functions/evil%00.tar", key, NULL, pkg, len,
			  "Content-Type: application/gzip", &r), &r, 400, "InvalidPath");
	expect_error(http(h, "GET", "/v1/functions/evil", key, NULL, NULL, 0, NULL, &r), &r, 404,
		     "FunctionNotFound");
	expect_error(http(h, "GET", "/v1/functions/hello%00evil", key, NULL, NULL, 0, NULL, &r), &r,
		     400, "InvalidPath");
	expect_error(http(h, "POST", "/v1/functions/hello%00x/invoke", key, NULL, "x", 1, NULL, &r),
		     &r, 400, "InvalidPath");
	expect_error(http(h, "GET", "/v1/functions/hel%0alo", key, NULL, NULL, 0, NULL, &r), &r, 400,
		     "InvalidPath");
	expect_error(http(h, "POST", "/v1/functions/hello/invoke?version=1%00", key, NULL, "x", 1,
			  NULL, &r), &r, 400, "InvalidPath");
	expect_error(http(h, "POST", "/v1/tenants", h->admin, NULL, "{\"name\":\"a\\u0000b\"}", 19,
			  NULL, &r), &r, 400, "InvalidName");
	assert_int_equal(array_len(h, key, "/v1/functions", "functions"), 1);
	free(pkg);
	invoke_ok(h, key, "hello");
	free(key);
	hd_stop(h);
}

/* ---- 7: query integers are range-checked, never truncated ------------------------- */

static void test_query_integers(void **state)
{
	struct hd *h = *state;
	struct resp r;
	size_t len;
	char *key, *pkg;
	json_t *j;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	pkg = pack(h, EXAMPLES_DIR "/hello", &len);
	expect_error(http(h, "POST", "/v1/functions/hello/invoke?version=4294967297", key, NULL, "x",
			  1, NULL, &r), &r, 400, "InvalidParameter");
	expect_error(http(h, "POST", "/v1/functions/hello/invoke?version=%2B1", key, NULL, "x", 1,
			  NULL, &r), &r, 400, "InvalidParameter");
	expect_error(http(h, "POST", "/v1/functions/hello/invoke?version=%201", key, NULL, "x", 1,
			  NULL, &r), &r, 400, "InvalidParameter");
	expect_error(http(h, "POST", "/v1/functions/h2?memory_mb=4294967424", key, NULL, pkg, len,
			  "Content-Type: application/gzip", &r), &r, 400, "InvalidParameter");
	expect_error(http(h, "POST", "/v1/functions/h2?timeout_ms=4294968296", key, NULL, pkg, len,
			  "Content-Type: application/gzip", &r), &r, 400, "InvalidParameter");
	expect_error(http(h, "POST", "/v1/functions/h2?memory_mb=4294967295", key, NULL, pkg, len,
			  "Content-Type: application/gzip", &r), &r, 400, "InvalidMemory");
	expect_error(http(h, "GET", "/v1/functions/hello/logs?limit=18446744073709551617", key, NULL,
			  NULL, 0, NULL, &r), &r, 400, "InvalidParameter");
	expect_error(http(h, "GET", "/v1/dead-letters?limit=4294967297", key, NULL, NULL, 0, NULL,
			  &r), &r, 400, "InvalidParameter");
	expect_error(http(h, "POST", "/v1/functions/hello/prewarm?count=4294967297", key, NULL, NULL,
			  0, NULL, &r), &r, 400, "InvalidParameter");
	expect_error(http(h, "GET", "/v1/usage?from=18446744073709551616", key, NULL, NULL, 0, NULL,
			  &r), &r, 400, "InvalidParameter");
	/* None of them deployed anything; valid numbers still work. */
	expect_error(http(h, "GET", "/v1/functions/h2", key, NULL, NULL, 0, NULL, &r), &r, 404,
		     "FunctionNotFound");
	assert_int_equal(http(h, "POST", "/v1/functions/h2?memory_mb=256&timeout_ms=2000", key,
			      NULL, pkg, len, "Content-Type: application/gzip", &r), 201);
	j = body_json(&r);
	assert_int_equal(json_integer_value(json_object_get(j, "memory_mb")), 256);
	assert_int_equal(json_integer_value(json_object_get(j, "timeout_ms")), 2000);
	json_decref(j);
	resp_free(&r);
	assert_int_equal(http(h, "POST", "/v1/functions/hello/invoke?version=1", key, NULL, "v1", 2,
			      NULL, &r), 200);
	resp_free(&r);
	free(pkg);
	free(key);
	hd_stop(h);
}

/* ---- 8: Content-Length, protocol errors and the Authorization header -------------- */

static void test_protocol_errors(void **state)
{
	struct hd *h = *state;
	char req[1024], ans[8192], *key;
	struct resp r;
	bool closed;
	int n;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	/* Two Content-Lengths: 400 before the body is read; the function never runs. */
	n = snprintf(req, sizeof(req),
		     "POST /v1/functions/hello/invoke HTTP/1.1\r\nHost: h\r\n"
		     "Authorization: Bearer %s\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\n"
		     "abcde", key);
	raw_request(h, req, (size_t)n, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 400);
	assert_string_equal(raw_error_code(ans), "InvalidContentLength");
	n = snprintf(req, sizeof(req),
		     "POST /v1/functions/hello/invoke HTTP/1.1\r\nHost: h\r\n"
		     "Authorization: Bearer %s\r\nContent-Length: 3\r\n"
		     "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", key);
	raw_request(h, req, (size_t)n, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 400);
	assert_string_equal(raw_error_code(ans), "InvalidContentLength");
	/*
	 * A control character in a header (found by fuzz_http): libmicrohttpd took
	 * a line starting with NUL for the header's end and read the rest as a
	 * second request, so one request got two answers. Now: one 400, and the
	 * connection is closed.
	 */
	{
		static const char bad[] = "GET /healthz HTTP/1.1\r\nHost: h\r\nX-A: b\001c\r\n"
					  "\0GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";

		raw_request(h, bad, sizeof(bad) - 1, 5000, ans, sizeof(ans), &closed);
		assert_int_equal(raw_status(ans), 400);
		assert_string_equal(raw_error_code(ans), "InvalidHeader");
		assert_null(strstr(ans + 12, "HTTP/1.1 ")); /* one answer only */
		assert_true(closed);
	}
	/*
	 * A transfer coding libmicrohttpd cannot delimit: 501 at once (it used
	 * to hold the connection, unanswered, to the 30 s idle timeout).
	 */
	n = snprintf(req, sizeof(req),
		     "POST /v1/functions/hello/invoke HTTP/1.1\r\nHost: h\r\n"
		     "Authorization: Bearer %s\r\nTransfer-Encoding: gzip\r\n\r\nabc", key);
	raw_request(h, req, (size_t)n, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 501);
	assert_string_equal(raw_error_code(ans), "UnsupportedTransferEncoding");
	n = snprintf(req, sizeof(req),
		     "POST /v1/functions/hello/invoke HTTP/1.1\r\nHost: h\r\n"
		     "Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n"
		     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", key);
	raw_request(h, req, (size_t)n, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 501);
	assert_int_equal(array_len(h, key, "/v1/functions/hello/logs", "invocations"), 0);
	/*
	 * A malformed Content-Length is refused by libmicrohttpd itself, before
	 * hearthd sees the request (400, connection closed); hearthd stays up.
	 */
	n = snprintf(req, sizeof(req),
		     "POST /v1/functions/hello/invoke HTTP/1.1\r\nHost: h\r\n"
		     "Authorization: Bearer %s\r\nContent-Length: -1\r\n\r\nabc", key);
	raw_request(h, req, (size_t)n, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 400);
	assert_true(closed);
	/* A bare key, trailing junk, or two keys: 401. */
	n = snprintf(req, sizeof(req), "GET /v1/functions HTTP/1.1\r\nHost: h\r\n"
				       "Authorization: %s\r\n\r\n", key);
	raw_request(h, req, (size_t)n, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 401);
	assert_string_equal(raw_error_code(ans), "Unauthorized");
	/*
	 * Not tested: "Bearer <key>\0junk". libmicrohttpd 0.9.75 cuts a header
	 * value at a NUL before hearthd can see it (see README, "HTTP limits").
	 */
	n = snprintf(req, sizeof(req), "GET /v1/functions HTTP/1.1\r\nHost: h\r\n"
				       "Authorization: Bearer %s junk\r\n\r\n", key);
	raw_request(h, req, (size_t)n, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 401);
	n = snprintf(req, sizeof(req), "GET /v1/functions HTTP/1.1\r\nHost: h\r\n"
				       "Authorization: Bearer %s\r\nAuthorization: Bearer x\r\n\r\n",
		     key);
	raw_request(h, req, (size_t)n, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 401);
	/* The scheme is case-insensitive (RFC 7235), and the right key works. */
	n = snprintf(req, sizeof(req), "GET /v1/functions HTTP/1.1\r\nHost: h\r\n"
				       "Connection: close\r\nAuthorization: bearer %s\r\n\r\n", key);
	raw_request(h, req, (size_t)n, 5000, ans, sizeof(ans), &closed);
	assert_int_equal(raw_status(ans), 200);
	assert_int_equal(http(h, "GET", "/v1/functions", key, NULL, NULL, 0, NULL, &r), 200);
	resp_free(&r);
	invoke_ok(h, key, "hello");
	free(key);
	hd_stop(h);
}

/* ---- a full disk: clear errors, no record lost, back to work once there is room --- */

/* The invocations of tenant key's functions on record (its usage, summed). */
static long usage_invocations(struct hd *h, const char *key)
{
	struct resp r;
	long n = 0;

	assert_int_equal(http(h, "GET", "/v1/usage", key, NULL, NULL, 0, NULL, &r), 200);
	json_t *j = body_json(&r), *row;
	size_t i;

	json_array_foreach(json_object_get(j, "usage"), i, row)
		n += (long)json_integer_value(json_object_get(row, "invocations"));
	json_decref(j);
	resp_free(&r);
	return n;
}

/* Writes path until its file system is full. */
static void fill_disk(const char *path)
{
	static char block[1 << 16];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	while (write(fd, block, sizeof(block)) > 0)
		;
	assert_int_equal(errno, ENOSPC);
	close(fd);
}

static void test_disk_full(void **state)
{
	struct hd *h = *state;
	char st[128], fill[160], cmd[400];
	struct resp r;
	long ok = 0;
	int refused = 0;

	if (geteuid() != 0) {
		printf("SKIP: mounting a small tmpfs as the state directory needs root\n");
		exit(77);
	}
	snprintf(st, sizeof(st), "%s/state", h->dir);
	assert_int_equal(mkdir(st, 0700), 0);
	snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=16m,mode=0700 hearth-test %s", st);
	if (system(cmd) != 0) {
		printf("SKIP: cannot mount a tmpfs here (%s)\n", cmd);
		exit(77);
	}
	/* Deploys leave 8 of the 16 MiB free (each image is the agent, ~3 MiB, and a package). */
	const char *reserve[] = { "--engine", "process", "--allow-unisolated", "--disk-reserve-mb",
				  "8", NULL };
	hd_start_args(h, reserve);
	char *key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	invoke_ok(h, key, "hello");
	ok++;
	static const char *const more[] = { FNS_DIR "/multi", FNS_DIR "/fail", FNS_DIR "/rt_initfail" };
	int deployed = 0, short_of_room = 0;
	for (int i = 0; i < 3 && !short_of_room; i++) {
		size_t plen;
		char *p = pack(h, more[i], &plen), fpath[64];
		snprintf(fpath, sizeof(fpath), "/v1/functions/more%d", i);
		long s = http(h, "POST", fpath, key, NULL, p, plen, "Content-Type: application/gzip", &r);
		free(p);
		if (s == 201) {
			deployed++;
		} else {
			if (s != 507)
				fprintf(stderr, "deploy: %ld %s\n", s, r.body ? r.body : "");
			assert_int_equal(s, 507);
			assert_string_equal(error_code(&r), "InsufficientStorage");
			assert_non_null(strstr(r.body, "keeps 8 MiB of its disk free"));
			short_of_room = 1;
		}
		resp_free(&r);
	}
	assert_true(deployed >= 1 && short_of_room);
	struct statvfs v;
	assert_int_equal(statvfs(st, &v), 0);
	assert_true((uint64_t)v.f_bavail * v.f_frsize >= 8u << 20);
	invoke_ok(h, key, "hello"); /* records still have room */
	ok++;

	/* Fill the disk. */
	snprintf(fill, sizeof(fill), "%s/filler", st);
	fill_disk(fill);

	/* A deploy: 507, not the package's fault, and no half image or upload left. */
	size_t len;
	char *pkg = pack(h, EXAMPLES_DIR "/hello", &len);
	expect_error(http(h, "POST", "/v1/functions/hello2", key, NULL, pkg, len,
			  "Content-Type: application/gzip", &r), &r, 507, "InsufficientStorage");
	free(pkg);
	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s/tmp)\" && ! ls -A %s/images | grep -q '^\\.image-'",
		 st, st);
	assert_int_equal(system(cmd), 0);

	/*
	 * Invocations: a call that ran when the disk refused its record is answered,
	 * and its record is held in memory; from then on new calls get 507 until
	 * the disk takes writes again. (The store's own free pages may take a few
	 * records first.)
	 */
	for (int i = 0; i < 200 && !refused; i++) {
		long s = invoke(h, key, "hello", "full", NULL, &r);

		if (s == 200) {
			ok++;
		} else {
			if (s != 507)
				fprintf(stderr, "got %ld %s\n", s, r.body ? r.body : "");
			assert_int_equal(s, 507);
			assert_string_equal(error_code(&r), "InsufficientStorage");
			refused++;
		}
		resp_free(&r);
	}
	assert_int_equal(refused, 1);
	assert_int_equal(http(h, "GET", "/readyz", NULL, NULL, NULL, 0, NULL, &r), 503);
	assert_non_null(strstr(r.body, "records_held"));
	resp_free(&r);
	assert_true(metric(h, "hearth_invocation_records_held") >= 1);
	hd_alive(h); /* alive all along: /healthz answers */

	/* Room again: the held records go to the journal, and calls are taken again. */
	assert_int_equal(unlink(fill), 0);
	long got = 0;
	for (int i = 0; i < 100; i++) {
		got = http(h, "GET", "/readyz", NULL, NULL, NULL, 0, NULL, &r);
		resp_free(&r);
		if (got == 200)
			break;
		usleep(50000);
	}
	assert_int_equal(got, 200);
	assert_int_equal(metric(h, "hearth_invocation_records_held"), 0);
	invoke_ok(h, key, "hello");
	ok++;
	/* Every call that was answered is on record: none lost, none counted twice. */
	assert_int_equal(usage_invocations(h, key), ok);
	/* Deleting functions gives their images back (image GC), and deploys fit again. */
	for (int i = 0; i < deployed; i++) {
		char fpath[64];
		snprintf(fpath, sizeof(fpath), "/v1/functions/more%d", i);
		assert_int_equal(http(h, "DELETE", fpath, key, NULL, NULL, 0, NULL, &r), 200);
		resp_free(&r);
	}
	long dep = 0;
	for (int i = 0; i < 100 && dep != 201; i++) {
		size_t plen;
		char *p = pack(h, FNS_DIR "/multi", &plen);
		dep = http(h, "POST", "/v1/functions/again", key, NULL, p, plen,
			   "Content-Type: application/gzip", &r);
		free(p);
		resp_free(&r);
		if (dep != 201)
			usleep(100000);
	}
	assert_int_equal(dep, 201);
	/* And after a restart. */
	hd_stop(h);
	hd_start_args(h, reserve);
	assert_int_equal(usage_invocations(h, key), ok);

	/* Stopped while a record is held: it goes to hearthd's log whole, not nowhere. */
	fill_disk(fill);
	refused = 0;
	for (int i = 0; i < 200 && !refused; i++) {
		long s = invoke(h, key, "hello", "last", NULL, &r);

		refused = s == 507;
		resp_free(&r);
	}
	assert_true(refused);
	hd_stop(h);
	snprintf(cmd, sizeof(cmd), "grep -q 'unrecorded invocation record.*function.*hello' "
		 "%s/hearthd.log", h->dir);
	assert_int_equal(system(cmd), 0);
	free(key);
	snprintf(cmd, sizeof(cmd), "umount %s", st);
	assert_int_equal(system(cmd), 0);
}

/* ---- one hearthd per state and run directory; a killed one's leftovers go --------- */

/* Runs a second hearthd on the given directories; its exit status, its output in out. */
static int second_hearthd(struct hd *h, const char *state, const char *run, char *out, size_t len)
{
	char cmd[1200];

	/* timeout: a hearthd that is not refused would run on (and the case fail, not hang) */
	const char *agent = getenv("HEARTH_TEST_AGENT"); /* as the harness passes it */
	snprintf(cmd, sizeof(cmd), "timeout 20 %s --config none --engine process --allow-unisolated "
		 "--state-dir %s --run-dir %s --socket %s/second.sock --listen 127.0.0.1:%d "
		 "--ui-dir none%s%s 2>&1", HEARTHD_BIN, state, run, h->dir, free_port(),
		 agent ? " --agent " : "", agent ? agent : "");
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	size_t n = fread(out, 1, len - 1, p);
	out[n] = 0;
	int st = pclose(p);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 1)
		fprintf(stderr, "second hearthd: %s\n", out);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_one_daemon_per_dir(void **state)
{
	struct hd *h = *state;
	char st[128], run[128], other[128], out[4096], want[160], path[200];

	snprintf(st, sizeof(st), "%s/state", h->dir);
	snprintf(run, sizeof(run), "%s/run", h->dir);
	snprintf(other, sizeof(other), "%s/other", h->dir);
	hd_start(h);
	char *key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	/* A second hearthd on the same state directory, or the same run directory: refused. */
	snprintf(want, sizeof(want), "is in use by another hearthd (pid %d)", (int)h->pid);
	assert_int_equal(second_hearthd(h, st, other, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "the state directory"));
	assert_non_null(strstr(out, want));
	assert_int_equal(second_hearthd(h, other, run, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "the run directory"));
	assert_non_null(strstr(out, want));
	/* A state directory other users may write to: refused too. */
	char open_dir[160];
	snprintf(open_dir, sizeof(open_dir), "%s/open", h->dir);
	assert_int_equal(mkdir(open_dir, 0700), 0);
	assert_int_equal(chmod(open_dir, 01777), 0);
	assert_int_equal(second_hearthd(h, open_dir, other, out, sizeof(out)), 1);
	assert_non_null(strstr(out, "be writable by it alone"));
	assert_non_null(strstr(out, "mode 1777"));
	/* The first one never noticed. */
	invoke_ok(h, key, "hello");

	/* Killed mid-upload and mid-image: those files are gone at the next start. */
	kill(h->pid, SIGKILL);
	waitpid(h->pid, NULL, 0);
	snprintf(path, sizeof(path), "%s/tmp/upload-AbC123.tar.gz", st);
	write_file(path, "half an upload");
	snprintf(path, sizeof(path), "%s/images/.image-XyZ789", st);
	write_file(path, "half an image");
	hd_start(h); /* the lock went with the killed process */
	snprintf(path, sizeof(path), "%s/tmp/upload-AbC123.tar.gz", st);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/images/.image-XyZ789", st);
	assert_int_equal(access(path, F_OK), -1);
	invoke_ok(h, key, "hello"); /* its real image stayed */
	free(key);
	hd_stop(h);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tenant_delete_leaves_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tenant_ids_survive_upgrade, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_before_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_url, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nul_in_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_query_integers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_protocol_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_daemon_per_dir, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_ALL);
	srand((unsigned)getpid());
	return HEARTH_RUN_TESTS("daemon", tests, argc, argv);
}
