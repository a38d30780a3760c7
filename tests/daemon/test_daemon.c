/*
 * Daemon tests: each case starts the real hearthd (process engine unless the
 * case says otherwise), drives it over HTTP with libcurl, and stops it.
 * Every case that feeds bad input also checks that hearthd kept working.
 */
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "../cmocka_main.h"
#include "harness.h"

/* ---- tests ------------------------------------------------------------------------ */

static void test_deploy_cold_warm(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(invoke(h, key, "hello", "{\"n\": 1}", NULL, &r), 200);
	assert_non_null(strstr(r.body, "Hello from hearth"));
	assert_non_null(strstr(r.body, "{\"n\": 1}"));
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "true");
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "boot");
	assert_non_null(hdr(&r, "X-Hearth-Boot-Ms"));
	assert_non_null(hdr(&r, "X-Hearth-Init-Ms"));
	assert_int_equal(strlen(hdr(&r, "X-Hearth-Request-Id")), 36);
	double dur = atof(hdr(&r, "X-Hearth-Duration-Ms"));
	long billed = atol(hdr(&r, "X-Hearth-Billed-Duration-Ms"));
	assert_true(dur > 0);
	assert_true(billed >= dur && billed < dur + 1.0001); /* rounded up to the ms */
	resp_free(&r);
	assert_int_equal(invoke(h, key, "hello", "{\"n\": 2}", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "false");
	assert_null(hdr(&r, "X-Hearth-Boot-Ms"));
	resp_free(&r);
	/* A second version is a new immutable version; both remain invocable. */
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", "?memory_mb=256");
	assert_int_equal(http(h, "GET", "/v1/functions/hello", key, NULL, NULL, 0, NULL, &r), 200);
	json_t *j = body_json(&r);
	assert_int_equal(json_integer_value(json_object_get(j, "latest_version")), 2);
	assert_int_equal(json_array_size(json_object_get(j, "versions")), 2);
	json_decref(j);
	resp_free(&r);
	assert_int_equal(http(h, "POST", "/v1/functions/hello/invoke?version=1", key, NULL, "{}", 2,
			      NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Function-Version"), "1");
	resp_free(&r);
	free(key);
	hd_stop(h);
}


static void test_async_dead_letter(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key, id[64];
	json_t *j;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "fail", FNS_DIR "/fail", NULL);
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(invoke(h, key, "fail", "{}", "X-Hearth-Invocation-Type: Event", &r), 202);
	j = body_json(&r);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "request_id")));
	assert_string_equal(hdr(&r, "X-Hearth-Request-Id"), id);
	json_decref(j);
	resp_free(&r);
	/* 1 attempt + 2 retries with backoff, then the dead-letter list. */
	j = wait_event(h, key, id, "dead");
	assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 3);
	assert_non_null(strstr(json_string_value(json_object_get(j, "last_error")), "FunctionError"));
	json_decref(j);
	assert_int_equal(http(h, "GET", "/v1/dead-letters", key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	json_t *dl = json_object_get(j, "dead_letters");
	assert_int_equal(json_array_size(dl), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(dl, 0), "request_id")), id);
	assert_string_equal(json_string_value(json_object_get(json_array_get(dl, 0), "payload")), "{}");
	json_decref(j);
	resp_free(&r);
	/* Every attempt is in the function's log. */
	assert_int_equal(http(h, "GET", "/v1/functions/fail/logs", key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	assert_int_equal(json_array_size(json_object_get(j, "invocations")), 3);
	assert_non_null(strstr(r.body, "this function always fails"));
	json_decref(j);
	resp_free(&r);
	/* A successful event ends as succeeded, once. */
	assert_int_equal(invoke(h, key, "hello", "\"async\"", "X-Hearth-Invocation-Type: Event", &r),
			 202);
	j = body_json(&r);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "request_id")));
	json_decref(j);
	resp_free(&r);
	j = wait_event(h, key, id, "succeeded");
	assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 1);
	json_decref(j);
	free(key);
	hd_stop(h);
}


static void test_keep_warm_expiry(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--keep-warm", "1", NULL };
	struct resp r;
	char *key;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(invoke(h, key, "hello", "1", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "true");
	resp_free(&r);
	assert_int_equal(metric(h, "hearth_vms"), 1);
	/* Idle past the keep-warm TTL: the VM is destroyed (scale to zero)... */
	for (int i = 0; i < 100 && metric(h, "hearth_vms") != 0; i++)
		usleep(100000);
	assert_int_equal(metric(h, "hearth_vms"), 0);
	/* ...and the next invocation is a cold start again. */
	assert_int_equal(invoke(h, key, "hello", "2", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "true");
	resp_free(&r);
	/* Provisioned VMs are kept up regardless of the TTL. */
	assert_int_equal(http(h, "PUT", "/v1/functions/hello/config", key, NULL,
			      "{\"provisioned\": 2}", 18, NULL, &r), 200);
	resp_free(&r);
	for (int i = 0; i < 100 && metric(h, "hearth_vms") != 2; i++)
		usleep(100000);
	sleep(2); /* two TTLs */
	assert_int_equal(metric(h, "hearth_vms"), 2);
	assert_int_equal(invoke(h, key, "hello", "3", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "false");
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static void test_auth_isolation(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *ka, *kb, id[64];

	hd_start(h);
	ka = tenant_create(h, "alpha");
	kb = tenant_create(h, "beta");
	deploy(h, ka, "secret", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(invoke(h, ka, "secret", "x", NULL, &r), 200);
	resp_free(&r);
	assert_int_equal(invoke(h, ka, "secret", "x", "X-Hearth-Invocation-Type: Event", &r), 202);
	json_t *j = body_json(&r);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(j, "request_id")));
	json_decref(j);
	resp_free(&r);
	/* beta sees nothing of alpha's: not the function, its logs, its events or its use. */
	assert_int_equal(http(h, "GET", "/v1/functions", kb, NULL, NULL, 0, NULL, &r), 200);
	assert_null(strstr(r.body, "secret"));
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/functions/secret", kb, NULL, NULL, 0, NULL, &r), 404);
	resp_free(&r);
	assert_int_equal(invoke(h, kb, "secret", "x", NULL, &r), 404);
	assert_string_equal(error_code(&r), "FunctionNotFound");
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/functions/secret/logs", kb, NULL, NULL, 0, NULL, &r),
			 200);
	j = body_json(&r);
	assert_int_equal(json_array_size(json_object_get(j, "invocations")), 0);
	json_decref(j);
	resp_free(&r);
	char path[128];
	snprintf(path, sizeof(path), "/v1/invocations/%s", id);
	assert_int_equal(http(h, "GET", path, kb, NULL, NULL, 0, NULL, &r), 404);
	resp_free(&r);
	assert_int_equal(http(h, "DELETE", "/v1/functions/secret", kb, NULL, NULL, 0, NULL, &r), 404);
	resp_free(&r);
	/* beta deploying its own "secret" does not touch alpha's. */
	deploy(h, kb, "secret", FNS_DIR "/multi", NULL);
	assert_int_equal(invoke(h, kb, "secret", "b", NULL, &r), 200);
	assert_memory_equal(r.body, "multi:b", 7);
	resp_free(&r);
	assert_int_equal(invoke(h, ka, "secret", "a", NULL, &r), 200);
	assert_non_null(strstr(r.body, "Hello from hearth"));
	resp_free(&r);
	/* Tenants cannot administer; bad and missing keys are refused. */
	assert_int_equal(http(h, "GET", "/v1/tenants", ka, NULL, NULL, 0, NULL, &r), 403);
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/functions", NULL, NULL, NULL, 0, NULL, &r), 401);
	assert_string_equal(error_code(&r), "Unauthorized");
	resp_free(&r);
	char forged[200];
	snprintf(forged, sizeof(forged), "%s", ka);
	forged[strlen(forged) - 1] ^= 1; /* right key id, wrong secret */
	assert_int_equal(http(h, "GET", "/v1/functions", forged, NULL, NULL, 0, NULL, &r), 401);
	resp_free(&r);
	/* The admin acts for a tenant only when it names one. */
	assert_int_equal(http(h, "GET", "/v1/functions", h->admin, NULL, NULL, 0, NULL, &r), 400);
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/functions", h->admin, "alpha", NULL, 0, NULL, &r), 200);
	assert_non_null(strstr(r.body, "secret"));
	resp_free(&r);
	/* A revoked key stops working at once. */
	char kid[17];
	memcpy(kid, kb + 3, 16);
	kid[16] = 0;
	snprintf(path, sizeof(path), "/v1/tenants/beta/keys/%s", kid);
	assert_int_equal(http(h, "DELETE", path, h->admin, NULL, NULL, 0, NULL, &r), 200);
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/functions", kb, NULL, NULL, 0, NULL, &r), 401);
	resp_free(&r);
	/* Keys are stored hashed: the database never holds a key in clear. */
	char db[128], cmd[300];
	snprintf(db, sizeof(db), "%s/state/hearth.db", h->dir);
	snprintf(cmd, sizeof(cmd), "grep -c '%s' %s* >/dev/null 2>&1", ka + 20, db);
	assert_int_not_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "grep -c '%s' %s* >/dev/null 2>&1", h->admin + 20, db);
	assert_int_not_equal(system(cmd), 0);
	free(ka);
	free(kb);
	hd_stop(h);
}

static void test_function_errors(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key;
	json_t *j;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	assert_int_equal(invoke(h, key, "multi", "crash", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Function-Error"), "Crashed");
	j = body_json(&r);
	assert_int_equal(json_integer_value(json_object_get(j, "signal")), SIGSEGV);
	assert_non_null(strstr(json_string_value(json_object_get(j, "logs")), "about to crash"));
	json_decref(j);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "multi", "timeout", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Function-Error"), "Timeout");
	assert_true(atof(hdr(&r, "X-Hearth-Duration-Ms")) >= 1500);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "multi", "exit4", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Function-Error"), "FunctionError");
	j = body_json(&r);
	assert_int_equal(json_integer_value(json_object_get(j, "exitCode")), 4);
	json_decref(j);
	resp_free(&r);
	/* Platform errors are told apart: no X-Hearth-Function-Error, a JSON error and 4xx/5xx. */
	assert_int_equal(invoke(h, key, "nosuch", "x", NULL, &r), 404);
	assert_null(hdr(&r, "X-Hearth-Function-Error"));
	resp_free(&r);
	assert_int_equal(invoke(h, key, "multi", "ok", NULL, &r), 200);
	assert_memory_equal(r.body, "multi:ok", 8);
	assert_null(hdr(&r, "X-Hearth-Function-Error"));
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static void test_agent_dies(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	assert_int_equal(invoke(h, key, "multi", "warm", NULL, &r), 200);
	resp_free(&r);
	/* 40 consoles kept from earlier failures, older than any new one. */
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "mkdir -p %s/run/process/failed && for i in $(seq 10 49); do "
		 "touch -d @$((1000000000 + i)) %s/run/process/failed/old-$i.console.log; done",
		 h->dir, h->dir);
	assert_int_equal(system(cmd), 0);
	/* The handler kills its agent: a platform error, clearly worded. */
	assert_int_equal(invoke(h, key, "multi", "killagent", NULL, &r), 502);
	assert_string_equal(error_code(&r), "AgentFailed");
	assert_null(hdr(&r, "X-Hearth-Function-Error"));
	resp_free(&r);
	/* The VM was replaced: the next invocation works (on a new, cold VM). */
	assert_int_equal(invoke(h, key, "multi", "after", NULL, &r), 200);
	assert_memory_equal(r.body, "multi:after", 11);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "true");
	resp_free(&r);
	assert_int_equal(metric(h, "hearth_errors_total{origin=\"platform\"}"), 1);
	/*
	 * The dead VM's console outlived it, for the operator: in the engine's
	 * run directory, failed/, named in hearthd's log; the newest 32 are kept.
	 */
	snprintf(cmd, sizeof(cmd),
		 "cd %s/run/process/failed && f=$(ls hearth-*.console.log) && "
		 "test $(echo \"$f\" | wc -l) = 1 && grep -q \"its console is kept in .*/$f\" "
		 "%s/hearthd.log && test -s \"$f\" && test $(ls | wc -l) = 32 && "
		 "test ! -e old-18.console.log && test -e old-19.console.log", h->dir, h->dir);
	assert_int_equal(system(cmd), 0);
	free(key);
	hd_stop(h);
}

static void test_bad_requests(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key, *big;
	size_t big_len = (6u << 20) + 1;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	/* Malformed JSON, bad names, duplicates. */
	assert_int_equal(http(h, "POST", "/v1/tenants", h->admin, NULL, "{nope", 5, NULL, &r), 400);
	assert_string_equal(error_code(&r), "InvalidName");
	resp_free(&r);
	assert_int_equal(http(h, "POST", "/v1/tenants", h->admin, NULL, "{\"name\":\"a/b\"}", 14,
			      NULL, &r), 400);
	resp_free(&r);
	assert_int_equal(http(h, "POST", "/v1/tenants", h->admin, NULL, "{\"name\":\"acme\"}", 15,
			      NULL, &r), 409);
	resp_free(&r);
	/*
	 * An oversized payload is refused (413) before it is read. The client asks
	 * with "Expect: 100-continue", as HTTP clients do for large bodies: sent
	 * without it, the body raced the early 413 and the close that follows it
	 * (curl then failed to send and saw no answer: status 0, once in a while).
	 */
	big = malloc(big_len);
	memset(big, 'x', big_len);
	{
		static const char *const expect[] = { "Expect: 100-continue", NULL };
		const struct http_opts o = { .hdrs = expect, .allow_expect = 1 };

		assert_int_equal(http_ex(h, "POST", "/v1/functions/hello/invoke", key, NULL, big,
					 big_len, &o, &r), 413);
	}
	assert_string_equal(error_code(&r), "PayloadTooLarge");
	resp_free(&r);
	free(big);
	/* Garbage instead of a package, and bad configurations. */
	assert_int_equal(http(h, "POST", "/v1/functions/junk", key, NULL, "not a tarball", 13,
			      "Content-Type: application/gzip", &r), 400);
	assert_string_equal(error_code(&r), "InvalidPackage");
	resp_free(&r);
	size_t len;
	char *pkg = pack(h, EXAMPLES_DIR "/hello", &len);
	assert_int_equal(http(h, "POST", "/v1/functions/h2?memory_mb=64", key, NULL, pkg, len,
			      "Content-Type: application/gzip", &r), 400);
	assert_string_equal(error_code(&r), "InvalidMemory");
	resp_free(&r);
	assert_int_equal(http(h, "POST", "/v1/functions/h2?timeout_ms=900001", key, NULL, pkg, len,
			      "Content-Type: application/gzip", &r), 400);
	assert_string_equal(error_code(&r), "InvalidTimeout");
	resp_free(&r);
	assert_int_equal(http(h, "POST", "/v1/functions/h2?engine=libvirt", key, NULL, pkg, len,
			      "Content-Type: application/gzip", &r), 400);
	assert_string_equal(error_code(&r), "EngineUnavailable");
	resp_free(&r);
	assert_int_equal(http(h, "POST", "/v1/functions/bad%20name", key, NULL, pkg, len,
			      "Content-Type: application/gzip", &r), 400);
	resp_free(&r);
	/* Only the admin may deploy from a server path. */
	assert_int_equal(http(h, "POST", "/v1/functions/p", key, NULL, "{\"path\":\"/etc\"}", 15,
			      "Content-Type: application/json", &r), 403);
	resp_free(&r);
	assert_int_equal(http(h, "POST", "/v1/functions/frompath", h->admin, "acme",
			      "{\"path\":\"" EXAMPLES_DIR "/hello\"}", strlen("{\"path\":\"" EXAMPLES_DIR "/hello\"}"),
			      "Content-Type: application/json", &r), 201);
	resp_free(&r);
	free(pkg);
	/* Unknown routes and types. */
	assert_int_equal(http(h, "GET", "/v1/nothing", key, NULL, NULL, 0, NULL, &r), 404);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "hello", "x", "X-Hearth-Invocation-Type: Sometimes", &r), 400);
	resp_free(&r);
	/* A slow client that sends half a request does not block others. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)h->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_true(write(fd, "POST /v1/functions/hello/invoke HTTP/1.1\r\nContent-Length: 100\r\n",
			  63) > 0);
	/* Everything still works, on both listeners. */
	assert_int_equal(invoke(h, key, "hello", "still", NULL, &r), 200);
	assert_non_null(strstr(r.body, "still"));
	resp_free(&r);
	assert_int_equal(invoke(h, key, "frompath", "p", NULL, &r), 200);
	resp_free(&r);
	close(fd);
	free(key);
	hd_stop(h);
}

static void test_kill9_async_resumes(void **state)
{
	struct hd *h = *state;
	struct resp r;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--max-vms", "2", NULL };
	char *key, ids[20][64], path[1400];
	int n = 20, done = 0, before = 0;

	hd_start_args(h, args); /* two VMs: the 20 events take ~3 s, so the kill lands mid-way */
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	for (int i = 0; i < n; i++) {
		assert_int_equal(invoke(h, key, "multi", "slow", "X-Hearth-Invocation-Type: Event", &r),
				 202);
		json_t *j = body_json(&r);
		snprintf(ids[i], sizeof(ids[i]), "%s", json_string_value(json_object_get(j, "request_id")));
		json_decref(j);
		resp_free(&r);
	}
	/* Let some finish, then kill -9 in the middle of the work. */
	usleep(700000);
	kill(h->pid, SIGKILL);
	waitpid(h->pid, NULL, 0);
	h->pid = 0;
	/* Count what had finished, straight from the database the dead daemon left. */
	hd_start(h);
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "/v1/invocations/%s", ids[i]);
		assert_int_equal(http(h, "GET", path, key, NULL, NULL, 0, NULL, &r), 200);
		before += strstr(r.body, "\"succeeded\"") != NULL;
		resp_free(&r);
	}
	fprintf(stderr, "%d of %d events had succeeded around the kill\n", before, n);
	assert_true(before < n); /* work was left over... */
	kill(h->pid, SIGKILL);
	waitpid(h->pid, NULL, 0);
	h->pid = 0;
	hd_start(h); /* same state dir and port */
	for (int i = 0; i < n; i++) {
		json_t *j = wait_event(h, key, ids[i], "succeeded");

		json_decref(j);
		done++;
	}
	assert_int_equal(done, n);
	/* No successful execution is reported twice: one Success record per event. */
	assert_int_equal(http(h, "GET", "/v1/functions/multi/logs?limit=1000", key, NULL, NULL, 0,
			      NULL, &r), 200);
	json_t *j = body_json(&r);
	json_t *invs = json_object_get(j, "invocations");
	for (int i = 0; i < n; i++) {
		int successes = 0;

		for (size_t k = 0; k < json_array_size(invs); k++) {
			json_t *o = json_array_get(invs, k);

			if (strcmp(json_string_value(json_object_get(o, "request_id")), ids[i]) == 0 &&
			    strcmp(json_string_value(json_object_get(o, "status")), "Success") == 0)
				successes++;
		}
		assert_int_equal(successes, 1);
	}
	json_decref(j);
	resp_free(&r);
	free(key);
	hd_stop(h);
}

/*
 * A handler starts with no blocked signals and SIGPIPE at its default:
 * hearthd blocks SIGTERM, SIGINT and SIGHUP and ignores SIGPIPE, and exec
 * would hand both down to the agent and the tenant's code.
 */
static void test_handler_signals(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key;
	unsigned long long blk = ~0ULL, ign = ~0ULL;
	const char *p;

	hd_start_args(h, process_engine);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	assert_int_equal(invoke(h, key, "multi", "sigs", NULL, &r), 200);
	fprintf(stderr, "handler: %.*s\n", (int)r.len, r.body);
	assert_non_null(p = strstr(r.body, "SigBlk: "));
	blk = strtoull(p + 8, NULL, 16);
	assert_non_null(p = strstr(r.body, "SigIgn: "));
	ign = strtoull(p + 8, NULL, 16);
	assert_int_equal(blk, 0);
	assert_int_equal(ign & (1ULL << (SIGPIPE - 1)), 0);
	resp_free(&r);
	free(key);
	hd_stop(h);
}

/* The file's size, or -1. */
static long size_of(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/*
 * Sync invocations answered just before a SIGKILL are all recorded: the
 * ledger journal holds them (a batch window of ten minutes keeps them out of
 * SQLite), and the next start commits them, each once.
 */
static void test_kill9_sync_records(void **state)
{
	struct hd *h = *state;
	struct resp r;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--ledger-batch-ms", "600000", NULL };
	char *key, ids[30][64], seg[2][200], logpath[200], *log = NULL;
	int n = 30;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	for (int i = 0; i < n; i++) {
		char ev[32];

		snprintf(ev, sizeof(ev), i % 3 ? "ev%d" : "exit4", i);
		assert_int_equal(invoke(h, key, "multi", ev, NULL, &r), 200);
		snprintf(ids[i], sizeof(ids[i]), "%s", hdr(&r, "X-Hearth-Request-Id"));
		resp_free(&r);
	}
	for (int i = 0; i < 2; i++)
		snprintf(seg[i], sizeof(seg[i]), "%s/state/hearth.db-ledger.%d", h->dir, i);
	assert_true(size_of(seg[0]) + size_of(seg[1]) > 0); /* on file, not committed */
	kill(h->pid, SIGKILL);
	waitpid(h->pid, NULL, 0);
	h->pid = 0;
	hd_start_args(h, args); /* same state dir and port */
	snprintf(logpath, sizeof(logpath), "%s/hearthd.log", h->dir);
	{
		FILE *f = fopen(logpath, "r");
		size_t cap = 0;

		assert_non_null(f);
		assert_true(getdelim(&log, &cap, 0, f) > 0);
		fclose(f);
	}
	/* All 30 (or all but a few, if something read usage meanwhile and so committed them). */
	{
		const char *m = strstr(log, "invocation records recovered from the journal");
		const char *at = m;

		assert_non_null(m);
		while (at > log && at[-1] != '"')
			at--;
		fprintf(stderr, "hearthd: %.*s\n", (int)(m - at) + 46, at);
		assert_true(atoi(at) > 0);
	}
	free(log);
	assert_int_equal(size_of(seg[0]) + size_of(seg[1]), 0);
	/* Each answered invocation has its record, once; usage counts each once. */
	assert_int_equal(http(h, "GET", "/v1/functions/multi/logs?limit=1000", key, NULL, NULL, 0,
			      NULL, &r), 200);
	json_t *j = body_json(&r);
	json_t *invs = json_object_get(j, "invocations");

	for (int i = 0; i < n; i++) {
		int seen = 0;

		for (size_t k = 0; k < json_array_size(invs); k++) {
			json_t *o = json_array_get(invs, k);

			if (strcmp(json_string_value(json_object_get(o, "request_id")), ids[i]) == 0) {
				seen++;
				assert_string_equal(json_string_value(json_object_get(o, "status")),
						    i % 3 ? "Success" : "FunctionError");
			}
		}
		assert_int_equal(seen, 1);
	}
	json_decref(j);
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/usage", key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	json_t *rows = json_object_get(j, "usage");

	assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, 0),
							    "invocations")), n);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, 0), "errors")),
			 n / 3);
	json_decref(j);
	resp_free(&r);
	/* A new invocation is readable at once: readers commit the journal first. */
	assert_int_equal(invoke(h, key, "multi", "after", NULL, &r), 200);
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/usage", key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	assert_int_equal(json_integer_value(json_object_get(
				 json_array_get(json_object_get(j, "usage"), 0), "invocations")),
			 n + 1);
	json_decref(j);
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static int thread_count(pid_t pid)
{
	char path[64], line[256];
	int n = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	if (f)
		fclose(f);
	return n;
}

struct peak {
	pid_t pid;
	int threads;
};

static void sample_threads(void *ctx)
{
	struct peak *pk = ctx;
	int t = thread_count(pk->pid);

	if (t > pk->threads)
		pk->threads = t;
}

static void test_thousand_in_flight(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--max-vms", "40", NULL };
	enum { N = 1000 };
	static struct par p[N];
	struct peak pk = { 0 };
	char *key;
	int ok;

	hd_start_args(h, args);
	pk.pid = h->pid;
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	/* 1000 connections at once, each held open until its invocation finishes. */
	par_invoke_tick(h, key, "multi", "slow", N, p, sample_threads, &pk);
	ok = par_count(p, N, 200, NULL);
	fprintf(stderr, "%d/%d invocations succeeded; hearthd peaked at %d threads\n", ok, N,
		pk.threads);
	assert_int_equal(ok, N);
	/* No thread per request: VM threads (at most --max-vms) plus a fixed few. */
	assert_true(pk.threads > 0 && pk.threads < 40 + 16);
	free(key);
	hd_stop(h);
}

static void test_libvirt_restore(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "libvirt", "--keep-warm", "2", NULL };
	struct resp r;
	char *key;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	/* A real VM under libvirt: the first invocation boots it. */
	assert_int_equal(invoke(h, key, "hello", "{\"vm\": 1}", NULL, &r), 200);
	assert_non_null(strstr(r.body, "Hello from hearth"));
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "boot");
	double boot_ms = atof(hdr(&r, "X-Hearth-Boot-Ms"));
	resp_free(&r);
	/* Idle past keep-warm: the VM is saved to disk (scale to zero, no VM running)... */
	for (int i = 0; i < 200 && metric(h, "hearth_vms") != 0; i++)
		usleep(100000);
	assert_int_equal(metric(h, "hearth_vms"), 0);
	/* ...and the next invocation is a cold start from that snapshot: restore, not boot. */
	assert_int_equal(invoke(h, key, "hello", "{\"vm\": 2}", NULL, &r), 200);
	assert_non_null(strstr(r.body, "{\"vm\": 2}"));
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "true");
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "restore");
	double restore_ms = atof(hdr(&r, "X-Hearth-Restore-Ms"));
	fprintf(stderr, "libvirt: boot %.0f ms, restore %.0f ms\n", boot_ms, restore_ms);
	assert_true(restore_ms > 0);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "hello", "{\"vm\": 3}", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "false");
	resp_free(&r);
	free(key);
	hd_stop(h);
	/* hearthd stopped: no hearth domain is left behind. */
	assert_int_not_equal(system("virsh -c qemu:///system list --all --name | grep -q '^hearth-'"),
			     0);
}

/*
 * A guest that crashes while booting (the triple-fault test guest, under the
 * builtin engine): 503 VMStartFailed, with no host path in what the tenant
 * sees (answer and logs); hearthd's log names the kept console, which exists.
 */
static void test_guest_crash_at_boot(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "builtin", "--vmm", HEARTH_VMM_BIN,
					    "--builtin-kernel", TRIPLE_FAULT_ELF, NULL };
	struct resp r;
	char *key, cmd[600];

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "crash", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(invoke(h, key, "crash", "x", NULL, &r), 503);
	assert_string_equal(error_code(&r), "VMStartFailed");
	if (!strstr(r.body, "<host path>") || strstr(r.body, h->dir))
		fprintf(stderr, "answer: %s\n", r.body);
	assert_non_null(strstr(r.body, "<host path>"));
	assert_null(strstr(r.body, h->dir));
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/functions/crash/logs", key, NULL, NULL, 0, NULL, &r),
			 200);
	assert_null(strstr(r.body, h->dir));
	resp_free(&r);
	snprintf(cmd, sizeof(cmd),
		 "f=$(grep -o 'its console is kept in [^ )\"]*' %s/hearthd.log | head -1 | "
		 "cut -d' ' -f6) && test -n \"$f\" && test -e \"$f\"", h->dir);
	assert_int_equal(system(cmd), 0);
	hd_alive(h);
	free(key);
	hd_stop(h);
}

static void test_builtin_snapshot_restore(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "builtin", "--vmm", HEARTH_VMM_BIN,
					    "--builtin-kernel", VSOCK_ECHO_ELF, "--keep-warm", "1",
					    NULL };
	struct resp r;
	char *key;

	/*
	 * hearth-vmm on /dev/kvm with the vsock echo test guest standing in for
	 * Linux (which cannot run on this PVM host): it speaks the agent protocol
	 * (Hello, Reseed, Configure, Invoke as echo) over hybrid vsock.
	 */
	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "echo", EXAMPLES_DIR "/hello", NULL);
	/* The first invocation boots; once idle, that VM snapshots itself. */
	assert_int_equal(invoke(h, key, "echo", "first", NULL, &r), 200);
	assert_memory_equal(r.body, "first", 5);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "boot");
	resp_free(&r);
	/* Keep-warm expires: the VM is destroyed (hearth-vmm cannot suspend to disk)... */
	for (int i = 0; i < 100 && metric(h, "hearth_vms") != 0; i++)
		usleep(100000);
	assert_int_equal(metric(h, "hearth_vms"), 0);
	/* ...and cold starts now restore clones of the snapshot, several at once. */
	struct resp rs[3];
	for (int i = 0; i < 3; i++) {
		char ev[16];

		snprintf(ev, sizeof(ev), "clone-%d", i);
		assert_int_equal(invoke(h, key, "echo", ev, NULL, &rs[i]), 200);
		assert_memory_equal(rs[i].body, ev, strlen(ev));
		resp_free(&rs[i]);
	}
	for (int i = 0; i < 100 && metric(h, "hearth_vms") != 0; i++)
		usleep(100000);
	assert_int_equal(invoke(h, key, "echo", "again", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "true");
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "restore");
	assert_non_null(hdr(&r, "X-Hearth-Restore-Ms"));
	fprintf(stderr, "builtin: restore %s ms\n", hdr(&r, "X-Hearth-Restore-Ms"));
	resp_free(&r);
	/* Warm again right after. */
	assert_int_equal(invoke(h, key, "echo", "warm", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "false");
	resp_free(&r);
	free(key);
	hd_stop(h);
	/* Every hearth-vmm of this hearthd is gone. */
	assert_int_equal(vmm_procs_under(h->dir), 0);
}

/* ---- image GC on one host (SQLite: the image directory is the only copy) ---------- */

static bool image_file(struct hd *h, const char *sha)
{
	char p[200];

	snprintf(p, sizeof(p), "%s/state/images/%s.cpio", h->dir, sha);
	return access(p, F_OK) == 0;
}

/* The image hash of a function's latest version. */
static void image_hash(struct hd *h, const char *key, const char *fn, char sha[65])
{
	char path[128];
	struct resp r;
	json_t *j, *vs;

	snprintf(path, sizeof(path), "/v1/functions/%s", fn);
	assert_int_equal(http(h, "GET", path, key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	vs = json_object_get(j, "versions");
	snprintf(sha, 65, "%s",
		 json_string_value(json_object_get(json_array_get(vs, json_array_size(vs) - 1),
						   "image_sha256")));
	json_decref(j);
	resp_free(&r);
	assert_int_equal(strlen(sha), 64);
}

/* Waits up to ms for an image file to be present (want) or gone. */
static bool wait_image(struct hd *h, const char *sha, bool want, int ms)
{
	for (int waited = 0; image_file(h, sha) != want; waited += 50) {
		if (waited >= ms)
			return false;
		usleep(50000);
	}
	return true;
}

static long delete_fn(struct hd *h, const char *key, const char *fn)
{
	char path[128];
	struct resp r;
	long st;

	snprintf(path, sizeof(path), "/v1/functions/%s", fn);
	st = http(h, "DELETE", path, key, NULL, NULL, 0, NULL, &r);
	resp_free(&r);
	return st;
}

/*
 * Image GC on SQLite: an image two functions share stays until the second is
 * deleted; orphans (a refused deploy's image, a stray image file, an old
 * temporary file) go at the periodic sweep; other files are left alone; a
 * deploy racing the deletion of the same image always keeps its image.
 */
static void test_image_gc(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--image-gc-interval", "1", NULL };
	char multi[65], hello[65], p[1024], orphan[65];
	struct resp r;
	size_t len;
	char *key, *pkg;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "a", FNS_DIR "/multi", NULL);
	deploy(h, key, "b", FNS_DIR "/multi", NULL);
	deploy(h, key, "c", EXAMPLES_DIR "/hello", NULL);
	image_hash(h, key, "a", multi);
	image_hash(h, key, "c", hello);
	assert_true(image_file(h, multi) && image_file(h, hello));
	/* Strays: an image file no version names, an old temporary file, a file of another kind. */
	memset(orphan, 'e', 64);
	orphan[64] = 0;
	snprintf(p, sizeof(p), "echo junk > %s/state/images/%s.cpio; echo tmp > "
		 "%s/state/images/.image-Ab12Cd; touch -d '1 hour ago' %s/state/images/.image-Ab12Cd;"
		 " echo mine > %s/state/images/notes.txt", h->dir, orphan, h->dir, h->dir, h->dir);
	assert_int_equal(system(p), 0);
	/* A deploy refused after its image was built leaves the image behind: an orphan too. */
	pkg = pack(h, FNS_DIR "/fail", &len);
	assert_int_equal(http(h, "POST", "/v1/functions/d?engine=nosuch", key, NULL, pkg, len,
			      "Content-Type: application/gzip", &r), 400);
	assert_string_equal(error_code(&r), "EngineUnavailable");
	resp_free(&r);
	free(pkg);
	assert_true(wait_image(h, orphan, false, 3000));
	snprintf(p, sizeof(p), "%s/state/images/.image-Ab12Cd", h->dir);
	assert_int_equal(access(p, F_OK), -1);
	snprintf(p, sizeof(p), "%s/state/images/notes.txt", h->dir);
	assert_int_equal(access(p, F_OK), 0);
	assert_true(image_file(h, multi) && image_file(h, hello));
	/* a goes, b still uses the image: it stays. */
	assert_int_equal(delete_fn(h, key, "a"), 200);
	usleep(1500000);
	assert_true(image_file(h, multi));
	assert_int_equal(invoke(h, key, "b", "x", NULL, &r), 200);
	resp_free(&r);
	/* b goes: the image goes, at once (the deletion kicks the collector). */
	assert_int_equal(delete_fn(h, key, "b"), 200);
	assert_true(wait_image(h, multi, false, 500));
	/* Bad input: deleting what is gone, another tenant's function: 404, nothing else lost. */
	char *other = tenant_create(h, "globex");

	assert_int_equal(delete_fn(h, key, "b"), 404);
	assert_int_equal(delete_fn(h, other, "c"), 404);
	usleep(1500000);
	assert_true(image_file(h, hello));
	assert_int_equal(invoke(h, key, "c", "{}", NULL, &r), 200);
	assert_non_null(strstr(r.body, "Hello from hearth"));
	resp_free(&r);
	/* Counted and logged. */
	int removed = metric(h, "hearth_images_removed_total{from=\"local\"}");

	fprintf(stderr, "removed %d files; %d sweeps\n", removed,
		metric(h, "hearth_image_gc_runs_total"));
	assert_int_equal(removed, 4); /* the orphan, the temporary file, d's image, multi */
	assert_true(metric(h, "hearth_image_gc_bytes_total") > 0);
	snprintf(p, sizeof(p), "grep -q 'imagegc.*removed 1 image files no version uses' %s/hearthd.log",
		 h->dir);
	assert_int_equal(system(p), 0);
	/* A deploy racing the deletion of the last function using its image (a timer sweep too). */
	pkg = pack(h, FNS_DIR "/multi", &len);
	for (int round = 0; round < 10; round++) {
		struct deploy_job d = { .h = h, .key = key, .name = "y", .pkg = pkg, .len = len };

		deploy(h, key, "x", FNS_DIR "/multi", NULL);
		deploy_job_start(&d);
		usleep((useconds_t)(round % 5) * 20000);
		assert_int_equal(delete_fn(h, key, "x"), 200);
		assert_int_equal(deploy_job_wait(&d), 201);
		usleep(100000);
		assert_true(image_file(h, multi));
		assert_int_equal(invoke(h, key, "y", "x", NULL, &r), 200);
		resp_free(&r);
		assert_int_equal(delete_fn(h, key, "y"), 200);
		assert_true(wait_image(h, multi, false, 1000));
	}
	free(pkg);
	free(other);
	free(key);
	hd_stop(h);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_guest_crash_at_boot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deploy_cold_warm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_dead_letter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keep_warm_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_isolation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_function_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent_dies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill9_async_resumes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill9_sync_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handler_signals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_thousand_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_libvirt_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builtin_snapshot_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_image_gc, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_ALL);
	srand((unsigned)getpid());
	return HEARTH_RUN_TESTS("daemon", tests, argc, argv);
}
