/*
 * bench_quota: what admission and metering add to an invocation, and how
 * fast the durable usage ledger writes.
 *   1. quota_admit() + quota_release() for one tenant: p50/p99 per pair.
 *   2. one durable invocation record (store_invocation_add: record + hourly
 *      aggregate, committed, SQLite WAL) written alone: p50/p99.
 *   3. ledger throughput: T threads writing records at once (group commit),
 *      records/s, next to one thread (one commit per record) in the same run.
 * usage: bench_quota DIR [seconds]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "bench_json.h"
#include "quota.h"
#include "scheduler.h"
#include "store.h"

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct store *st;
static int64_t tenant;
static atomic_long seq;
static double stop_at;

static void fill(struct inv_record *r, char *id)
{
	snprintf(id, 64, "bench-%ld", atomic_fetch_add(&seq, 1));
	memset(r, 0, sizeof(*r));
	r->request_id = id;
	r->attempt = 1;
	r->tenant_id = tenant;
	r->version_id = 1;
	r->function = "bench";
	r->version = 1;
	r->kind = "sync";
	r->start_us = wall_us();
	r->end_us = r->start_us + 1234;
	r->duration_us = 1234;
	r->billed_ms = quota_billed_ms(1234);
	r->memory_mb = 128;
	r->mb_ms = quota_mb_ms(128, r->billed_ms);
	r->status = "Success";
	r->logs = (const uint8_t *)"a log line\n";
	r->logs_len = 11;
}

static void *writer(void *arg)
{
	long *n = arg;
	char id[64];
	struct inv_record r;

	while (now_s() < stop_at) {
		fill(&r, id);
		if (store_invocation_add(st, &r) == 0)
			(*n)++;
	}
	return NULL;
}

static double throughput(int threads, double secs)
{
	pthread_t t[64];
	long n[64] = { 0 }, total = 0;
	double t0 = now_s();

	stop_at = t0 + secs;
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, writer, &n[i]);
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		total += n[i];
	}
	return total / (now_s() - t0);
}

int main(int argc, char **argv)
{
	enum { N = 20000 };
	static double lat[N];
	char path[512], id[64];
	struct quota *q;
	double secs = argc > 2 ? atof(argv[2]) : 3;
	int retry;

	if (argc < 2) {
		fprintf(stderr, "usage: bench_quota DIR [seconds]\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/bench.db", argv[1]);
	if (store_open(path, &st) || store_tenant_create(st, "bench", &tenant) || quota_create(st, &q))
		return 1;
	struct tenant_limits lim = { .max_concurrency = 1000, .max_memory_mb = 1 << 20,
				     .rate_per_s = 1000000000, .burst = 1000000000,
				     .budget_mb_ms = INT64_MAX / 2 };
	store_limits_set(st, tenant, &lim);
	char eng[200];
	snprintf(eng, sizeof(eng), "none (in-process quota checks and SQLite %s usage ledger, no VM)",
		 sqlite3_libversion());
	json_t *js = bj_new("quota", "admission and metering overhead, durable usage ledger", eng);
	bj_set(js, "ledger_dir", argv[1]);

	/* 1. admission: every limit armed, so every check runs. */
	for (int i = 0; i < N; i++) {
		double t0 = now_s();

		for (int k = 0; k < 100; k++) {
			if (quota_admit(q, tenant, 1, 128, &retry) != QUOTA_OK)
				return 1;
			quota_release(q, tenant, 1, 128, 128);
		}
		lat[i] = (now_s() - t0) / 100 * 1e6;
	}
	qsort(lat, N, sizeof(lat[0]), cmp);
	bj_figure(js, "admission_p50_us", lat[N / 2], "us", "quota_admit + quota_release, p50");
	bj_figure(js, "admission_p99_us", lat[N * 99 / 100], "us", "quota_admit + quota_release, p99");
	printf("admission (quota_admit + quota_release, all limits armed): p50 %.3f us  p99 %.3f us\n",
	       lat[N / 2], lat[N * 99 / 100]);
	double admit_p50 = lat[N / 2];

	/* 2. one durable record, alone. */
	int n2 = 2000;
	for (int i = 0; i < n2; i++) {
		struct inv_record r;
		double t0;

		fill(&r, id);
		t0 = now_s();
		if (store_invocation_add(st, &r))
			return 1;
		lat[i] = (now_s() - t0) * 1e6;
	}
	bj_samples(js, "metering_record_us", "other",
		   "one durable usage record (record + hourly aggregate, WAL commit)", "us", lat, n2);
	qsort(lat, (size_t)n2, sizeof(lat[0]), cmp);
	printf("metering record, durable commit (record + hourly aggregate, WAL): p50 %.1f us  p99 %.1f us\n",
	       lat[n2 / 2], lat[n2 * 99 / 100]);
	printf("admission + metering per invocation: p50 %.1f us (target <= 20 us)\n",
	       admit_p50 + lat[n2 / 2]);

	/* 3. ledger throughput, side by side. */
	double one = throughput(1, secs), many = throughput(16, secs), lots = throughput(64, secs);
	printf("ledger throughput, durable: 1 writer %.0f records/s; 16 writers %.0f records/s;"
	       " 64 writers %.0f records/s (group commit; target >= 20000)\n", one, many, lots);
	bj_figure(js, "admission_plus_metering_p50_us", admit_p50 + lat[n2 / 2], "us",
		  "admission + metering per invocation, p50 (target <= 20 us)");
	bj_point(js, "ledger_records_per_s", "other", "durable ledger records/s (group commit)",
		 "concurrent writers", "records/s", 1, one);
	bj_point(js, "ledger_records_per_s", "other", "durable ledger records/s (group commit)",
		 "concurrent writers", "records/s", 16, many);
	bj_point(js, "ledger_records_per_s", "other", "durable ledger records/s (group commit)",
		 "concurrent writers", "records/s", 64, lots);
	bj_figure(js, "ratio_ledger_64_vs_1_writer", lots / one, "x",
		  "ledger records/s, 64 writers / 1 writer");
	quota_destroy(q);
	store_close(st);
	return bj_write(js) < 0 ? 1 : 0;
}
