/*
 * Runtime mode through hearthd (ctest label "runtime"): the real hearthd on the
 * process engine (the agent chrooted into the real function image: busybox,
 * no curl) deploys custom-runtime packages (the examples and the rt_test
 * runtime) and invokes them over HTTP. Checks what a caller sees: bodies,
 * cold-start and init headers, warm state, the Lambda environment hearthd
 * gives, and init, crash and timeout failures as function errors with logs.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>

#include "../cmocka_main.h"
#include "harness.h"

static const char *const process_region[] = { "--engine", "process", "--allow-unisolated",
					      "--region", "eu-central-1", NULL };

/* A package dir holding the rt_test runtime as its bootstrap. */
static void rt_test_package(struct hd *h, char *dir, size_t n, const char *manifest)
{
	char cmd[1024];
	FILE *f;

	snprintf(dir, n, "%s/rtpkg", h->dir);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cp '%s' '%s/bootstrap'", dir, RT_TEST, dir);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "%s/manifest.json", dir);
	f = fopen(cmd, "w");
	assert_non_null(f);
	fputs(manifest, f);
	fclose(f);
}

static void test_rtd_examples(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key;
	int pid0 = -1;

	hd_start(h);
	key = tenant_create(h, "acme");

	/* The shell runtime (busybox wget inside the image). */
	deploy(h, key, "shell-rt", EXAMPLES_DIR "/runtime-shell", NULL);
	assert_int_equal(invoke(h, key, "shell-rt", "{\"n\": 1}", NULL, &r), 200);
	assert_null(hdr(&r, "X-Hearth-Function-Error"));
	assert_string_equal(r.body, "hello from a shell runtime: {\"n\": 1}");
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "true");
	/* Init is the runtime's start to its first /next: not zero on a boot. */
	assert_true(atof(hdr(&r, "X-Hearth-Init-Ms")) > 0);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "shell-rt", "warm", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "false");
	assert_string_equal(r.body, "hello from a shell runtime: warm");
	resp_free(&r);

	/* The C runtime. */
	deploy(h, key, "c-rt", EXAMPLES_BUILD "/runtime-c", NULL);
	assert_int_equal(invoke(h, key, "c-rt", "abc", NULL, &r), 200);
	assert_non_null(strstr(r.body, "ABC (event 1 of pid"));
	resp_free(&r);
	assert_int_equal(invoke(h, key, "c-rt", "xyz", NULL, &r), 200);
	assert_non_null(strstr(r.body, "XYZ (event 2 of pid"));
	resp_free(&r);

	/* The counter: state kept across warm invokes, one process. */
	deploy(h, key, "counter", EXAMPLES_DIR "/counter", NULL);
	for (int i = 1; i <= 5; i++) {
		json_t *j;

		assert_int_equal(invoke(h, key, "counter", "{}", NULL, &r), 200);
		j = body_json(&r);
		if (!j || json_integer_value(json_object_get(j, "count")) != i)
			fprintf(stderr, "counter invoke %d answered: %.*s\n", i, (int)r.len, r.body);
		assert_non_null(j);
		assert_int_equal(json_integer_value(json_object_get(j, "count")), i);
		if (pid0 < 0)
			pid0 = (int)json_integer_value(json_object_get(j, "pid"));
		assert_int_equal(json_integer_value(json_object_get(j, "pid")), pid0);
		assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), i == 1 ? "true" : "false");
		json_decref(j);
		resp_free(&r);
	}
	free(key);
	hd_stop(h);
}

/* What hearthd gives a runtime: the Lambda environment and the ARN. */
static void test_rtd_environment(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key, dir[256], want[256];

	hd_start_args(h, process_region);
	key = tenant_create(h, "acme");
	rt_test_package(h, dir, sizeof(dir),
			"{\"runtime\": \"provided\", \"handler\": \"app.main\", \"memory_mb\": 192}");
	deploy(h, key, "envfn", dir, NULL);
	/* The version says which mode it runs in. */
	assert_int_equal(http(h, "GET", "/v1/functions/envfn", key, NULL, NULL, 0, NULL, &r), 200);
	json_t *fj = body_json(&r);
	json_t *v = json_array_get(json_object_get(fj, "versions"), 0);
	assert_string_equal(json_string_value(json_object_get(v, "runtime")), "provided");
	json_decref(fj);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "envfn", "env", NULL, &r), 200);
	assert_null(hdr(&r, "X-Hearth-Function-Error"));
	assert_non_null(strstr(r.body, "_HANDLER=app.main\n"));
	assert_non_null(strstr(r.body, "LAMBDA_TASK_ROOT=/var/task\n"));
	assert_non_null(strstr(r.body, "AWS_LAMBDA_FUNCTION_NAME=envfn\n"));
	assert_non_null(strstr(r.body, "AWS_LAMBDA_FUNCTION_VERSION=1\n"));
	assert_non_null(strstr(r.body, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=192\n"));
	assert_non_null(strstr(r.body, "AWS_REGION=eu-central-1\n"));
	assert_non_null(strstr(r.body, "TZ=:UTC\n"));
	assert_non_null(strstr(r.body, "AWS_LAMBDA_RUNTIME_API=127.0.0.1:"));
	/* The runtime sees hearthd's request id. */
	snprintf(want, sizeof(want), "id=%s\n", hdr(&r, "X-Hearth-Request-Id"));
	assert_non_null(strstr(r.body, want));
	assert_non_null(strstr(r.body, "arn=arn:aws:lambda:eu-central-1:"));
	assert_non_null(strstr(r.body, ":function:envfn:1\n"));
	resp_free(&r);
	free(key);
	hd_stop(h);
}

/* Init failure, crash and timeout reach the caller as function errors with logs. */
static void test_rtd_failures(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key, dir[256];
	json_t *j;

	hd_start(h);
	key = tenant_create(h, "acme");

	deploy(h, key, "initfail", FNS_DIR "/rt_initfail", NULL);
	assert_int_equal(invoke(h, key, "initfail", "{}", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Function-Error"), "InitError");
	j = body_json(&r);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "errorType")), "InitError");
	assert_non_null(strstr(json_string_value(json_object_get(j, "errorMessage")),
			       "exited with status 1 during init"));
	assert_non_null(strstr(json_string_value(json_object_get(j, "logs")),
			       "DB_URL is not set"));
	json_decref(j);
	resp_free(&r);

	rt_test_package(h, dir, sizeof(dir), "{\"runtime\": \"provided\", \"timeout_ms\": 1000}");
	deploy(h, key, "rt", dir, NULL);
	assert_int_equal(invoke(h, key, "rt", "count", NULL, &r), 200);
	assert_memory_equal(r.body, "count=1 ", 8);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "rt", "crash", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Function-Error"), "FunctionError");
	j = body_json(&r);
	assert_non_null(strstr(json_string_value(json_object_get(j, "errorMessage")),
			       "Runtime.ExitError"));
	assert_non_null(strstr(json_string_value(json_object_get(j, "logs")), "rt_test: crashing"));
	json_decref(j);
	resp_free(&r);
	/* Restarted: a fresh runtime, in the same (warm) VM. */
	assert_int_equal(invoke(h, key, "rt", "count", NULL, &r), 200);
	assert_memory_equal(r.body, "count=1 ", 8);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start"), "false");
	resp_free(&r);
	assert_int_equal(invoke(h, key, "rt", "sleep 5000", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Function-Error"), "Timeout");
	resp_free(&r);
	assert_int_equal(invoke(h, key, "rt", "error", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Function-Error"), "FunctionError");
	j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "errorMessage")), "MyError.Kind");
	assert_non_null(strstr(json_string_value(json_object_get(j, "output")), "it broke"));
	json_decref(j);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "rt", "echo fine", NULL, &r), 200);
	assert_null(hdr(&r, "X-Hearth-Function-Error"));
	assert_string_equal(r.body, "fine");
	resp_free(&r);
	free(key);
	hd_stop(h);
}

/*
 * The inline fast path (sched_run_inline): once a runtime-mode function is
 * warm and fast, hearthd runs its invocations in the request's own thread.
 * Every invocation is delivered once (a counter in the runtime counts them),
 * a slow one is handed to the VM's thread and still answered, a crash and a
 * killed runtime are reported as before, and parallel callers all get their
 * own answers.
 */
static void test_rtd_inline(void **state)
{
	struct hd *h = *state;
	struct resp r;
	char *key, dir[256], want[32];
	struct par par[40];
	int inl, hand;

	hd_start_args(h, process_engine);
	key = tenant_create(h, "acme");
	rt_test_package(h, dir, sizeof(dir), "{\"runtime\": \"provided\", \"timeout_ms\": 2000}");
	deploy(h, key, "rt", dir, NULL);
	for (int i = 1; i <= 60; i++) {
		assert_int_equal(invoke(h, key, "rt", "count", NULL, &r), 200);
		snprintf(want, sizeof(want), "count=%d ", i);
		if (strncmp(r.body, want, strlen(want)) != 0)
			fail_msg("invocation %d answered %.*s", i, (int)r.len, r.body);
		resp_free(&r);
	}
	inl = metric(h, "hearth_invocations_inline_total");
	fprintf(stderr, "inline: %d of 60\n", inl);
	/* The first ones teach hearthd the function is fast; a busy host may slow a few. */
	assert_true(inl >= 20);
	/* Slower than the inline wait: handed to the VM's thread, answered all the same. */
	inl = metric(h, "hearth_invocations_inline_total");
	hand = metric(h, "hearth_invocations_inline_handoffs_total");
	assert_int_equal(invoke(h, key, "rt", "sleep 60", NULL, &r), 200);
	assert_string_equal(r.body, "slept");
	resp_free(&r);
	/* (Taken inline unless a loaded host made the recent calls look slow.) */
	if (metric(h, "hearth_invocations_inline_total") > inl)
		assert_int_equal(metric(h, "hearth_invocations_inline_handoffs_total"), hand + 1);
	else
		fprintf(stderr, "the slow call was not taken inline (recent calls were slow)\n");
	assert_int_equal(invoke(h, key, "rt", "count", NULL, &r), 200);
	fprintf(stderr, "after the slow one: %.*s\n", (int)r.len, r.body);
	assert_memory_equal(r.body, "count=62 ", 9);
	resp_free(&r);
	/* A deadline overrun on the inline path: Timeout, the runtime restarted. */
	for (int i = 0; i < 10; i++) { /* fast again */
		assert_int_equal(invoke(h, key, "rt", "echo x", NULL, &r), 200);
		resp_free(&r);
	}
	assert_int_equal(invoke(h, key, "rt", "crash", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Function-Error"), "FunctionError");
	resp_free(&r);
	assert_int_equal(invoke(h, key, "rt", "count", NULL, &r), 200);
	fprintf(stderr, "after the crash: %.*s\n", (int)r.len, r.body);
	assert_memory_equal(r.body, "count=1 ", 8);
	resp_free(&r);
	/* Parallel callers: each gets its answer. */
	par_invoke(h, key, "rt", "echo par", 40, par);
	assert_int_equal(par_count(par, 40, 200, NULL), 40);
	for (int i = 0; i < 40; i++)
		assert_memory_equal(par[i].body, "par", 3);
	assert_true(metric(h, "hearth_invocations_inline_total") > inl);
	free(key);
	hd_stop(h);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rtd_examples, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rtd_environment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rtd_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rtd_inline, setup, teardown),
	};

	return HEARTH_RUN_TESTS("runtime_daemon", tests, argc, argv);
}
