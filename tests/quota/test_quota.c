/*
 * Quota tests (label quota): tenant limits, admission reasons, metering
 * arithmetic and usage sums, against the real hearthd (process engine).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "../cmocka_main.h"
#include "harness.h"
#include "quota.h"

/* The most invocations of fn that overlapped in time, from the records. */
static int max_overlap(struct hd *h, const char *key, const char *fn)
{
	struct resp r;
	char path[128];
	json_t *j, *invs;
	int best = 0;

	snprintf(path, sizeof(path), "/v1/functions/%s/logs?limit=1000", fn);
	assert_int_equal(http(h, "GET", path, key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	invs = json_object_get(j, "invocations");
	for (size_t a = 0; a < json_array_size(invs); a++) {
		json_t *ia = json_array_get(invs, a);
		int64_t t = json_integer_value(json_object_get(ia, "start_us"));
		int live = 0;

		if (strcmp(json_string_value(json_object_get(ia, "status")), "Success"))
			continue;
		for (size_t b = 0; b < json_array_size(invs); b++) {
			json_t *ib = json_array_get(invs, b);
			int64_t s = json_integer_value(json_object_get(ib, "start_us"));
			int64_t e = s + json_integer_value(json_object_get(ib, "duration_us"));

			if (!strcmp(json_string_value(json_object_get(ib, "status")), "Success") &&
			    s <= t && t < e)
				live++;
		}
		if (live > best)
			best = live;
	}
	json_decref(j);
	resp_free(&r);
	return best;
}

static json_t *usage(struct hd *h, const char *key, const char *tenant, const char *q);
static void put_config(struct hd *h, const char *key, const char *fn, const char *json,
		       long want, const char *code);
static void par_two(struct hd *h, const char *key, const char *f1, int n1, struct par *p1,
		    const char *f2, int n2, struct par *p2);

/* ---- tests ------------------------------------------------------------------------- */

static void test_metering_arithmetic(void **state)
{
	char buf[64];

	/* Billed duration: rounded up to the millisecond, never below 1 ms. */
	assert_int_equal(quota_billed_ms(0), 1);
	assert_int_equal(quota_billed_ms(1), 1);
	assert_int_equal(quota_billed_ms(999), 1);
	assert_int_equal(quota_billed_ms(1000), 1);
	assert_int_equal(quota_billed_ms(1001), 2);
	assert_int_equal(quota_billed_ms(1999), 2);
	assert_int_equal(quota_billed_ms(2000), 2);
	assert_int_equal(quota_billed_ms(900000000), 900000); /* 900 s, the maximum timeout */
	/* MB-ms and GB-s, exactly, in integers. */
	assert_int_equal(quota_mb_ms(128, 1), 128);
	assert_int_equal(quota_mb_ms(10240, 900000), 9216000000ull);
	quota_format_gb_s(MB_MS_PER_GB_S, buf, sizeof(buf));
	assert_string_equal(buf, "1.000000");
	quota_format_gb_s(quota_mb_ms(512, 1000), buf, sizeof(buf));
	assert_string_equal(buf, "0.500000");
	quota_format_gb_s(quota_mb_ms(128, 1), buf, sizeof(buf));
	assert_string_equal(buf, "0.000125");
	quota_format_gb_s(1, buf, sizeof(buf)); /* truncated, never rounded up */
	assert_string_equal(buf, "0.000000");
	quota_format_gb_s(quota_mb_ms(10240, 900000), buf, sizeof(buf));
	assert_string_equal(buf, "9000.000000");
	/* A month of a 10 GB function running non-stop on 1000 VMs fits in 64 bits with room. */
	uint64_t month = quota_mb_ms(10240, 31ull * 24 * 3600 * 1000) * 1000;
	assert_true(month / 1000 == quota_mb_ms(10240, 31ull * 24 * 3600 * 1000));
	quota_format_gb_s(month, buf, sizeof(buf));
	assert_string_equal(buf, "26784000000.000000");
}

static void test_concurrency_limit(void **state)
{
	struct hd *h = *state;
	enum { N = 200 }; /* hundreds of parallel clients */
	static struct par p[N];
	char *key;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	set_limits(h, "acme", "{\"max_concurrency\": 3}");
	par_invoke(h, key, "multi", "slow", N, p);
	int ok = par_count(p, N, 200, NULL), refused = par_count(p, N, 429, "TenantConcurrencyLimitExceeded");
	fprintf(stderr, "%d admitted, %d refused\n", ok, refused);
	assert_int_equal(ok + refused, N);
	assert_true(ok >= 3);
	assert_true(refused > 0);
	for (int i = 0; i < N; i++)
		if (p[i].status == 429)
			assert_true(atoi(p[i].retry_after) >= 1);
	/* Never more than 3 running, not even for a moment. */
	assert_true(max_overlap(h, key, "multi") <= 3);
	free(key);
	hd_stop(h);
}

static void test_rate_limit(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key;
	int ok = 0, limited = 0;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	set_limits(h, "acme", "{\"rate_per_s\": 1, \"burst\": 3}");
	for (int i = 0; i < 6; i++) {
		invoke(h, key, "multi", "x", NULL, &r);
		if (r.status == 200)
			ok++;
		if (r.status == 429) {
			assert_string_equal(error_code(&r), "RateLimitExceeded");
			assert_true(atoi(hdr(&r, "Retry-After")) >= 1);
			limited++;
		}
		resp_free(&r);
	}
	assert_true(ok >= 3 && ok <= 4); /* the burst, plus at most one refill */
	assert_int_equal(ok + limited, 6);
	sleep(2); /* the bucket refills */
	assert_int_equal(invoke(h, key, "multi", "x", NULL, &r), 200);
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static void test_memory_quota(void **state)
{
	struct hd *h = *state;
	struct par p[6];
	char *key;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL); /* 256 MB */
	set_limits(h, "acme", "{\"max_memory_mb\": 512}");
	par_invoke(h, key, "multi", "slow", 6, p);
	assert_true(par_count(p, 6, 429, "MemoryQuotaExceeded") > 0);
	assert_true(par_count(p, 6, 200, NULL) >= 2);
	assert_true(max_overlap(h, key, "multi") <= 2); /* 2 x 256 MB */
	free(key);
	hd_stop(h);
}

static void test_budget_mid_burst(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key;
	int ok = 0, stopped = 0;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL); /* 256 MB, "slow" = ~300 ms = ~77,000 MB-ms */
	set_limits(h, "acme", "{\"budget_mb_ms\": 200000}");
	for (int i = 0; i < 10; i++) {
		invoke(h, key, "multi", "slow", NULL, &r);
		if (r.status == 200)
			ok++;
		else if (r.status == 429 && strcmp(error_code(&r), "BudgetExceeded") == 0) {
			stopped++;
			/* Retry-After points at the next month. */
			assert_true(atoi(hdr(&r, "Retry-After")) > 0);
			assert_true(atoi(hdr(&r, "Retry-After")) <= 31 * 24 * 3600 + 1);
		}
		resp_free(&r);
	}
	fprintf(stderr, "%d ran, %d stopped by the budget\n", ok, stopped);
	/*
	 * Each "slow" run bills at least 300 ms x 256 MB = 76,800 MB-ms: two stay
	 * under 200,000, the third crosses it (three, unless a loaded machine
	 * stretched two past it), and everything after is stopped.
	 */
	assert_true(ok == 2 || ok == 3);
	assert_int_equal(ok + stopped, 10);
	json_t *u = usage(h, key, NULL, "group_by=none");
	assert_true(json_integer_value(json_object_get(json_array_get(json_object_get(u, "usage"), 0),
						       "mb_ms")) >= 200000);
	json_decref(u);
	/* Raising the budget takes effect at once. */
	set_limits(h, "acme", "{\"budget_gb_s\": 10}");
	assert_int_equal(invoke(h, key, "multi", "x", NULL, &r), 200);
	resp_free(&r);
	free(key);
	hd_stop(h);
}

/* code_bytes_used of a tenant's limits (the admin's view). */
static long long code_used(struct hd *h, const char *tenant)
{
	struct resp r;
	char path[128];

	snprintf(path, sizeof(path), "/v1/tenants/%s/limits", tenant);
	assert_int_equal(http(h, "GET", path, h->admin, NULL, NULL, 0, NULL, &r), 200);
	json_t *j = body_json(&r);
	long long v = (long long)json_integer_value(json_object_get(j, "code_bytes_used"));
	assert_non_null(json_object_get(j, "max_code_bytes"));
	json_decref(j);
	resp_free(&r);
	return v;
}

/* Code storage: the images of all a tenant's versions, each distinct image once. */
static void test_code_storage_limit(void **state)
{
	struct hd *h = *state;
	struct resp r;
	size_t len;
	char *key, *other, *pkg, limits[64];

	hd_start(h);
	key = tenant_create(h, "acme");
	other = tenant_create(h, "other");
	assert_int_equal(code_used(h, "acme"), 0);
	deploy(h, key, "one", EXAMPLES_DIR "/hello", NULL);
	long long image = code_used(h, "acme");
	assert_true(image > 1000);
	snprintf(limits, sizeof(limits), "{\"max_code_bytes\": %lld}", image * 3 / 2);
	set_limits(h, "acme", limits);
	/* The same package again, as a new version or another function: the same image. */
	deploy(h, key, "one", EXAMPLES_DIR "/hello", NULL);
	deploy(h, key, "alias", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(code_used(h, "acme"), image);
	/* Another package's image would pass the limit. */
	pkg = pack(h, FNS_DIR "/multi", &len);
	assert_int_equal(http(h, "POST", "/v1/functions/two", key, NULL, pkg, len,
			      "Content-Type: application/gzip", &r), 403);
	assert_string_equal(error_code(&r), "CodeStorageExceeded");
	assert_non_null(strstr(r.body, "delete functions to make room"));
	resp_free(&r);
	/* The admin acting as the tenant is held to it too. */
	assert_int_equal(http(h, "POST", "/v1/functions/two", h->admin, "acme", pkg, len,
			      "Content-Type: application/gzip", &r), 403);
	assert_string_equal(error_code(&r), "CodeStorageExceeded");
	resp_free(&r);
	assert_int_equal(code_used(h, "acme"), image); /* nothing recorded */
	assert_int_equal(invoke(h, key, "one", "{}", NULL, &r), 200); /* still working */
	resp_free(&r);
	/* Another tenant has its own. */
	deploy(h, other, "two", FNS_DIR "/multi", NULL);
	/* Deleting functions makes room. */
	assert_int_equal(http(h, "DELETE", "/v1/functions/one", key, NULL, NULL, 0, NULL, &r), 200);
	resp_free(&r);
	assert_int_equal(http(h, "DELETE", "/v1/functions/alias", key, NULL, NULL, 0, NULL, &r), 200);
	resp_free(&r);
	assert_int_equal(code_used(h, "acme"), 0);
	assert_int_equal(http(h, "POST", "/v1/functions/two", key, NULL, pkg, len,
			      "Content-Type: application/gzip", &r), 201);
	resp_free(&r);
	assert_true(code_used(h, "acme") > 0);
	/* Out of range: refused. */
	assert_int_equal(http(h, "PUT", "/v1/tenants/acme/limits", h->admin, NULL,
			      "{\"max_code_bytes\": -5}", 21, NULL, &r), 400);
	resp_free(&r);
	free(pkg);
	free(key);
	free(other);
	hd_stop(h);
}

static void test_function_and_package_limits(void **state)
{
	struct hd *h = *state;
	struct resp r;
	size_t len;
	char *key, *pkg;

	hd_start(h);
	key = tenant_create(h, "acme");
	set_limits(h, "acme", "{\"max_functions\": 1, \"max_package_bytes\": 100000000}");
	deploy(h, key, "one", EXAMPLES_DIR "/hello", NULL);
	deploy(h, key, "one", EXAMPLES_DIR "/hello", NULL); /* a new version is not a new function */
	pkg = pack(h, EXAMPLES_DIR "/hello", &len);
	assert_int_equal(http(h, "POST", "/v1/functions/two", key, NULL, pkg, len,
			      "Content-Type: application/gzip", &r), 403);
	assert_string_equal(error_code(&r), "FunctionLimitExceeded");
	resp_free(&r);
	set_limits(h, "acme", "{\"max_functions\": 5, \"max_package_bytes\": 100}");
	assert_int_equal(http(h, "POST", "/v1/functions/two", key, NULL, pkg, len,
			      "Content-Type: application/gzip", &r), 413);
	assert_string_equal(error_code(&r), "PackageTooLarge");
	resp_free(&r);
	/* Bad limits are refused, the old ones stay. */
	assert_int_equal(http(h, "PUT", "/v1/tenants/acme/limits", h->admin, NULL,
			      "{\"max_concurrency\": -1}", 23, NULL, &r), 400);
	resp_free(&r);
	assert_int_equal(http(h, "PUT", "/v1/tenants/acme/limits", h->admin, NULL,
			      "{\"max_typo\": 1}", 15, NULL, &r), 400);
	resp_free(&r);
	/* Values whose arithmetic would overflow are refused, not wrapped. */
	static const char *const huge[] = { "{\"budget_gb_s\": 9223372036854775807}",
					    "{\"burst\": 9223372036854775807}",
					    "{\"rate_per_s\": 1000000001}" };
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(http(h, "PUT", "/v1/tenants/acme/limits", h->admin, NULL, huge[i],
				      strlen(huge[i]), NULL, &r), 400);
		assert_string_equal(error_code(&r), "InvalidLimits");
		resp_free(&r);
	}
	assert_int_equal(http(h, "GET", "/v1/usage?from=9223372036854775807", key, NULL, NULL, 0, NULL,
			      &r), 400);
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/v1/tenants/acme/limits", h->admin, NULL, NULL, 0, NULL, &r),
			 200);
	json_t *j = body_json(&r);
	assert_int_equal(json_integer_value(json_object_get(j, "max_functions")), 5);
	json_decref(j);
	resp_free(&r);
	/* Only the admin sets limits. */
	assert_int_equal(http(h, "PUT", "/v1/tenants/acme/limits", key, NULL,
			      "{\"max_concurrency\": 100}", 24, NULL, &r), 403);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "one", "still", NULL, &r), 200);
	resp_free(&r);
	free(pkg);
	free(key);
	hd_stop(h);
}

static void test_limit_change_under_load(void **state)
{
	struct hd *h = *state;
	struct par p[12];
	char *key;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	set_limits(h, "acme", "{\"max_concurrency\": 1}");
	par_invoke(h, key, "multi", "slow", 12, p);
	assert_true(par_count(p, 12, 200, NULL) >= 1);
	assert_true(par_count(p, 12, 429, "TenantConcurrencyLimitExceeded") >= 8);
	assert_int_equal(max_overlap(h, key, "multi"), 1);
	/* No restart: the new limit applies to the next burst. */
	set_limits(h, "acme", "{\"max_concurrency\": 12}");
	par_invoke(h, key, "multi", "slow", 12, p);
	assert_int_equal(par_count(p, 12, 200, NULL), 12);
	set_limits(h, "acme", "{\"max_concurrency\": 0}"); /* 0 = unlimited */
	par_invoke(h, key, "multi", "slow", 12, p);
	assert_int_equal(par_count(p, 12, 200, NULL), 12);
	free(key);
	hd_stop(h);
}

static json_t *usage(struct hd *h, const char *key, const char *tenant, const char *q)
{
	struct resp r;
	char path[256];
	json_t *j;

	snprintf(path, sizeof(path), "/v1/usage?%s", q);
	assert_int_equal(http(h, "GET", path, key, tenant, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	resp_free(&r);
	return j;
}

static void test_usage_sums(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *ka, *kb;
	int64_t billed = 0, mb_ms = 0;

	hd_start(h);
	ka = tenant_create(h, "alpha");
	kb = tenant_create(h, "beta");
	deploy(h, ka, "multi", FNS_DIR "/multi", NULL);
	deploy(h, ka, "hello", EXAMPLES_DIR "/hello", NULL);
	deploy(h, kb, "multi", FNS_DIR "/multi", NULL);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(invoke(h, ka, i % 2 ? "multi" : "hello", "x", NULL, &r), 200);
		billed += atol(hdr(&r, "X-Hearth-Billed-Duration-Ms"));
		mb_ms += atol(hdr(&r, "X-Hearth-Billed-Duration-Ms")) * (i % 2 ? 256 : 128);
		resp_free(&r);
	}
	assert_int_equal(invoke(h, ka, "multi", "exit4", NULL, &r), 200); /* a function error is billed */
	billed += atol(hdr(&r, "X-Hearth-Billed-Duration-Ms"));
	mb_ms += atol(hdr(&r, "X-Hearth-Billed-Duration-Ms")) * 256;
	resp_free(&r);
	assert_int_equal(invoke(h, kb, "multi", "b", NULL, &r), 200);
	resp_free(&r);
	/* Per tenant, no grouping: exactly the sum of what the responses said. */
	json_t *j = usage(h, ka, NULL, "group_by=none");
	json_t *row = json_array_get(json_object_get(j, "usage"), 0);
	assert_int_equal(json_array_size(json_object_get(j, "usage")), 1);
	assert_string_equal(json_string_value(json_object_get(row, "tenant")), "alpha");
	assert_int_equal(json_integer_value(json_object_get(row, "invocations")), 9);
	assert_int_equal(json_integer_value(json_object_get(row, "errors")), 1);
	assert_int_equal(json_integer_value(json_object_get(row, "billed_ms")), billed);
	assert_int_equal(json_integer_value(json_object_get(row, "mb_ms")), mb_ms);
	char gbs[48];
	quota_format_gb_s((uint64_t)mb_ms, gbs, sizeof(gbs));
	assert_string_equal(json_string_value(json_object_get(row, "gb_s")), gbs);
	json_decref(j);
	/* By function and by hour the parts add up to the same totals. */
	j = usage(h, ka, NULL, "group_by=function");
	int64_t sum = 0, n = 0;
	size_t i;
	json_array_foreach(json_object_get(j, "usage"), i, row) {
		sum += json_integer_value(json_object_get(row, "mb_ms"));
		n += json_integer_value(json_object_get(row, "invocations"));
	}
	assert_int_equal(json_array_size(json_object_get(j, "usage")), 2);
	assert_int_equal(sum, mb_ms);
	assert_int_equal(n, 9);
	json_decref(j);
	j = usage(h, ka, NULL, "group_by=hour");
	sum = 0;
	json_array_foreach(json_object_get(j, "usage"), i, row)
		sum += json_integer_value(json_object_get(row, "mb_ms"));
	assert_int_equal(sum, mb_ms);
	json_decref(j);
	/* beta sees only beta; the admin sees both, or one by name. */
	j = usage(h, kb, NULL, "group_by=none");
	assert_int_equal(json_array_size(json_object_get(j, "usage")), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "usage"), 0), "tenant")), "beta");
	json_decref(j);
	j = usage(h, h->admin, NULL, "group_by=none");
	assert_int_equal(json_array_size(json_object_get(j, "usage")), 2);
	json_decref(j);
	j = usage(h, h->admin, "beta", "group_by=none");
	assert_int_equal(json_array_size(json_object_get(j, "usage")), 1);
	json_decref(j);
	/* CSV carries the same numbers. */
	assert_int_equal(http(h, "GET", "/v1/usage?group_by=none&format=csv", ka, NULL, NULL, 0, NULL,
			      &r), 200);
	char line[256];
	snprintf(line, sizeof(line), "alpha,9,1,");
	assert_non_null(strstr(r.body, "tenant,invocations,errors,cold_starts,duration_us,billed_ms,mb_ms,gb_s\n"));
	assert_non_null(strstr(r.body, line));
	assert_non_null(strstr(r.body, gbs));
	resp_free(&r);
	/* A range before any use is empty; bad parameters are refused. */
	j = usage(h, ka, NULL, "from=0&to=3600&group_by=none");
	assert_int_equal(json_array_size(json_object_get(j, "usage")), 0);
	json_decref(j);
	assert_int_equal(http(h, "GET", "/v1/usage?group_by=week", ka, NULL, NULL, 0, NULL, &r), 400);
	resp_free(&r);
	free(ka);
	free(kb);
	hd_stop(h);
}

static void test_async_waits_past_limit(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key, ids[6][64];

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	set_limits(h, "acme", "{\"max_concurrency\": 1}");
	for (int i = 0; i < 6; i++) {
		assert_int_equal(invoke(h, key, "multi", "slow", "X-Hearth-Invocation-Type: Event", &r),
				 202);
		json_t *j = body_json(&r);
		snprintf(ids[i], sizeof(ids[i]), "%s", json_string_value(json_object_get(j, "request_id")));
		json_decref(j);
		resp_free(&r);
	}
	/* Past the limit, events wait in the queue: all succeed at the first attempt. */
	for (int i = 0; i < 6; i++) {
		json_t *j = wait_event(h, key, ids[i], "succeeded");

		assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 1);
		json_decref(j);
	}
	assert_int_equal(max_overlap(h, key, "multi"), 1);
	assert_int_equal(http(h, "GET", "/v1/dead-letters", key, NULL, NULL, 0, NULL, &r), 200);
	assert_non_null(strstr(r.body, "\"dead_letters\":[]"));
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static void test_host_capacity(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--max-vms", "1", NULL };
	struct par p[2];
	struct resp r;
	char *key;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	/* The only VM slot is taken by multi; hello has nowhere to run. */
	par_invoke(h, key, "multi", "warm", 1, p);
	assert_int_equal(p[0].status, 200);
	assert_int_equal(invoke(h, key, "hello", "x", NULL, &r), 429);
	assert_string_equal(error_code(&r), "HostCapacityExceeded");
	assert_non_null(hdr(&r, "Retry-After"));
	resp_free(&r);
	assert_int_equal(invoke(h, key, "multi", "still", NULL, &r), 200);
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static void test_reservation_holds_host_slots(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--max-vms", "4", "--unreserved-floor", "1", NULL };
	struct par pu[6], pr[2];
	char *key;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "reserved", FNS_DIR "/multi", NULL);
	deploy(h, key, "open", FNS_DIR "/multi", NULL);
	put_config(h, key, "reserved", "{\"reserved\": 2}", 200, NULL);
	sleep(2); /* the scheduler reads reservations within a second */
	/* A burst on the unreserved function gets the 2 slots left; the 2 reserved stay free. */
	par_two(h, key, "open", 6, pu, "reserved", 2, pr);
	assert_int_equal(par_count(pu, 6, 200, NULL), 6); /* queued for the 2 slots, not refused */
	assert_int_equal(par_count(pr, 2, 200, NULL), 2);
	assert_true(max_overlap(h, key, "open") <= 2);
	assert_int_equal(max_overlap(h, key, "reserved"), 2); /* both ran at once, beside the burst */
	free(key);
	hd_stop(h);
}

static void test_host_memory(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--host-memory-mb", "300", NULL };
	struct resp r;
	char *key;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);  /* 256 MB */
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL); /* 128 MB */
	assert_int_equal(invoke(h, key, "multi", "x", NULL, &r), 200);
	resp_free(&r);
	/* 256 + 128 MB of guest memory would pass the host's 300 MB. */
	assert_int_equal(invoke(h, key, "hello", "x", NULL, &r), 429);
	assert_string_equal(error_code(&r), "HostCapacityExceeded");
	resp_free(&r);
	assert_int_equal(invoke(h, key, "multi", "again", NULL, &r), 200);
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static void test_provisioned_metering(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--keep-warm", "1", NULL };
	struct resp r;
	char *key;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL); /* 128 MB */
	put_config(h, key, "hello", "{\"provisioned\": 1}", 200, NULL);
	sleep(4);
	put_config(h, key, "hello", "{\"provisioned\": 0}", 200, NULL);
	sleep(2); /* the VM leaves after its TTL and records its last stretch */
	json_t *j = usage(h, key, NULL, "group_by=none");
	json_t *row = json_array_get(json_object_get(j, "usage"), 0);
	int64_t pms = json_integer_value(json_object_get(row, "provisioned_ms"));
	int64_t pmbms = json_integer_value(json_object_get(row, "provisioned_mb_ms"));
	fprintf(stderr, "provisioned for %lld ms (%lld MB-ms)\n", (long long)pms, (long long)pmbms);
	/* Kept ~4-6 s, billed by the GB-s with no invocation at all. */
	assert_true(pms >= 3000 && pms <= 10000);
	assert_int_equal(pmbms, pms * 128);
	assert_int_equal(json_integer_value(json_object_get(row, "invocations")), 0);
	json_decref(j);
	/* Provisioned GB-s counts against the monthly budget too. */
	set_limits(h, "acme", "{\"budget_mb_ms\": 100000}"); /* less than already kept */
	assert_int_equal(invoke(h, key, "hello", "x", NULL, &r), 429);
	assert_string_equal(error_code(&r), "BudgetExceeded");
	resp_free(&r);
	/* Those records are usage, not invocations: the function's log stays empty. */
	assert_int_equal(http(h, "GET", "/v1/functions/hello/logs", key, NULL, NULL, 0, NULL, &r), 200);
	assert_non_null(strstr(r.body, "\"invocations\":[]"));
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static void test_crash_keeps_records(void **state)
{
	struct hd *h = *state;
	struct par p[16];
	struct resp r;
	char *key;
	pid_t loader;
	int pipefd[2];

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "multi", FNS_DIR "/multi", NULL);
	assert_int_equal(pipe(pipefd), 0);
	/* A child sends a burst and reports which responses it received. */
	loader = fork();
	if (loader == 0) {
		par_invoke(h, key, "multi", "slow", 16, p);
		for (int i = 0; i < 16; i++)
			if (p[i].status == 200)
				dprintf(pipefd[1], "%s\n", p[i].request_id);
		_exit(0);
	}
	close(pipefd[1]);
	usleep(450000);
	kill(h->pid, SIGKILL); /* mid-burst */
	waitpid(h->pid, NULL, 0);
	h->pid = 0;
	waitpid(loader, NULL, 0);
	char ids[4096] = "";
	ssize_t got = read(pipefd[0], ids, sizeof(ids) - 1);
	close(pipefd[0]);
	ids[got > 0 ? got : 0] = 0;
	hd_start(h);
	/* Every delivered response has exactly one record. */
	assert_int_equal(http(h, "GET", "/v1/functions/multi/logs?limit=1000", key, NULL, NULL, 0,
			      NULL, &r), 200);
	json_t *j = body_json(&r);
	json_t *invs = json_object_get(j, "invocations");
	int delivered = 0;
	for (char *save = NULL, *id = strtok_r(ids, "\n", &save); id; id = strtok_r(NULL, "\n", &save)) {
		int found = 0;

		for (size_t i = 0; i < json_array_size(invs); i++)
			found += !strcmp(json_string_value(json_object_get(json_array_get(invs, i), "request_id")), id);
		assert_int_equal(found, 1);
		delivered++;
	}
	fprintf(stderr, "%d responses delivered before the kill, all recorded once\n", delivered);
	/* The aggregates equal the records, exactly (nothing counted twice). */
	int64_t raw = 0;
	for (size_t i = 0; i < json_array_size(invs); i++)
		raw += json_integer_value(json_object_get(json_array_get(invs, i), "billed_ms"));
	json_decref(j);
	resp_free(&r);
	j = usage(h, key, NULL, "group_by=none");
	json_t *row = json_array_get(json_object_get(j, "usage"), 0);
	assert_int_equal(json_integer_value(json_object_get(row, "billed_ms")), raw);
	json_decref(j);
	free(key);
	hd_stop(h);
}

static void put_config(struct hd *h, const char *key, const char *fn, const char *json,
		       long want, const char *code)
{
	struct resp r;
	char path[128];

	snprintf(path, sizeof(path), "/v1/functions/%s/config", fn);
	assert_int_equal(http(h, "PUT", path, key, NULL, json, strlen(json), NULL, &r), want);
	if (code)
		assert_string_equal(error_code(&r), code);
	resp_free(&r);
}

/* Sends a burst to two functions at once. */
static void par_two(struct hd *h, const char *key, const char *f1, int n1, struct par *p1,
		    const char *f2, int n2, struct par *p2)
{
	pid_t child;
	int fds[2];

	assert_int_equal(pipe(fds), 0);
	child = fork();
	if (child == 0) {
		par_invoke(h, key, f2, "slow", n2, p2);
		if (write(fds[1], p2, sizeof(*p2) * (size_t)n2) < 0)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	par_invoke(h, key, f1, "slow", n1, p1);
	size_t want = sizeof(*p2) * (size_t)n2, got = 0;
	while (got < want) {
		ssize_t k = read(fds[0], (char *)p2 + got, want - got);

		if (k <= 0)
			break;
		got += (size_t)k;
	}
	close(fds[0]);
	waitpid(child, NULL, 0);
	assert_int_equal(got, want);
}

static void test_reserved_concurrency(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--max-vms", "10", NULL };
	struct par pa[4], pb[8];
	char *key;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "alpha", FNS_DIR "/multi", NULL);
	deploy(h, key, "beta", FNS_DIR "/multi", NULL);
	set_limits(h, "acme", "{\"max_concurrency\": 4}");
	/* Reservations must fit the tenant's limit and the host's capacity minus its floor. */
	put_config(h, key, "alpha", "{\"reserved\": 5}", 409, "ReservationTooLarge");
	put_config(h, key, "alpha", "{\"reserved\": 2}", 200, NULL);
	put_config(h, key, "beta", "{\"reserved\": 3}", 409, "ReservationTooLarge");
	/* Provisioned VMs count against the reservation and the tenant's limits. */
	put_config(h, key, "alpha", "{\"provisioned\": 3}", 409, "ProvisionedExceedsLimits");
	put_config(h, key, "alpha", "{\"reserved\": -1}", 400, "InvalidRequest");
	/* A burst on both at once: alpha gets its 2 (a guarantee), beta shares 4 - 2 = 2. */
	par_two(h, key, "alpha", 4, pa, "beta", 8, pb);
	int a_ok = par_count(pa, 4, 200, NULL), b_ok = par_count(pb, 8, 200, NULL);
	fprintf(stderr, "alpha %d/4 admitted, beta %d/8 admitted\n", a_ok, b_ok);
	assert_true(a_ok >= 2);
	assert_true(par_count(pa, 4, 429, "ReservedConcurrencyLimitExceeded") + a_ok == 4);
	assert_true(par_count(pb, 8, 429, "TenantConcurrencyLimitExceeded") + b_ok == 8);
	assert_true(max_overlap(h, key, "alpha") <= 2); /* a cap */
	assert_true(max_overlap(h, key, "beta") <= 2);  /* never into alpha's share */
	/* A second tenant cannot reserve past the host's capacity minus the floor (10 - 1). */
	char *k2 = tenant_create(h, "other");
	deploy(h, k2, "big", FNS_DIR "/multi", NULL);
	put_config(h, k2, "big", "{\"reserved\": 8}", 409, "ReservationTooLarge");
	put_config(h, k2, "big", "{\"reserved\": 7}", 200, NULL);
	free(k2);
	free(key);
	hd_stop(h);
}

/* Issue 14: a reservation sum that overflowed let a tenant escape its concurrency limit. */
static void test_reservation_overflow(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "process", "--allow-unisolated",
					    "--max-vms", "40", NULL };
	struct par pa[20], pb[20];
	struct resp r;
	char *key;

	hd_start_args(h, args);
	key = tenant_create(h, "acme");
	deploy(h, key, "alpha", FNS_DIR "/multi", NULL);
	deploy(h, key, "beta", FNS_DIR "/multi", NULL);
	set_limits(h, "acme", "{\"max_concurrency\": 10}");
	put_config(h, key, "alpha", "{\"reserved\": 1}", 200, NULL);
	/* 1 + INT64_MAX wrapped negative and passed the check. */
	put_config(h, key, "beta", "{\"reserved\": 9223372036854775807}", 400, "InvalidRequest");
	put_config(h, key, "beta", "{\"reserved\": 9223372036854775806}", 400, "InvalidRequest");
	put_config(h, key, "beta", "{\"reserved\": 1000000}", 409, "ReservationTooLarge");
	put_config(h, key, "beta", "{\"reserved\": 10}", 409, "ReservationTooLarge");
	/* Nothing was stored; a fitting reservation still works. */
	assert_int_equal(http(h, "GET", "/v1/functions/beta", key, NULL, NULL, 0, NULL, &r), 200);
	json_t *j = body_json(&r);
	assert_int_equal(json_integer_value(json_object_get(j, "reserved")), 0);
	json_decref(j);
	resp_free(&r);
	put_config(h, key, "beta", "{\"reserved\": 9}", 200, NULL);
	/* 40 at once: never more than the tenant's 10 running. */
	par_two(h, key, "alpha", 20, pa, "beta", 20, pb);
	int a_ok = par_count(pa, 20, 200, NULL), b_ok = par_count(pb, 20, 200, NULL);
	int a_max = max_overlap(h, key, "alpha"), b_max = max_overlap(h, key, "beta");
	fprintf(stderr, "alpha %d/20 (at most %d at once), beta %d/20 (at most %d at once)\n",
		a_ok, a_max, b_ok, b_max);
	assert_true(a_max <= 1 && b_max <= 9);
	assert_true(a_ok >= 1 && b_ok >= 9);
	free(key);
	hd_stop(h);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_metering_arithmetic),
		cmocka_unit_test_setup_teardown(test_concurrency_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_quota, setup, teardown),
		cmocka_unit_test_setup_teardown(test_budget_mid_burst, setup, teardown),
		cmocka_unit_test_setup_teardown(test_function_and_package_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_code_storage_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limit_change_under_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_usage_sums, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async_waits_past_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_capacity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_keeps_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserved_concurrency, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reservation_holds_host_slots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_provisioned_metering, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reservation_overflow, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_ALL);
	srand((unsigned)getpid());
	return HEARTH_RUN_TESTS("quota", tests, argc, argv);
}
