/*
 * quota.c - admission control; see quota.h.
 */
#include "quota.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scheduler.h"

struct fstate {
	int64_t function_id;
	int64_t reserved;
	int64_t running;
	int64_t running_unreserved;  /* of running, admitted from the shared pool */
};

/* Token bucket in milli-tokens, so refill needs no floating point. */
struct tstate {
	int64_t tenant;
	bool loaded;
	struct tenant_limits lim;
	int64_t running;
	int64_t memory_mb;
	int64_t tokens_milli;
	int64_t refill_us;
	int month;              /* yyyymm of month_mb_ms */
	uint64_t month_mb_ms;
	struct fstate *fns;      /* functions seen (running counts) and their reservations */
	size_t nfns;
	int64_t reserved_total;  /* sum of the tenant's reservations */
	int64_t running_unreserved;
	struct tstate *next;
};

struct quota {
	struct store *store;
	pthread_mutex_t mu;
	struct tstate *tenants;
};

const char *quota_reason_code(enum quota_reason r)
{
	switch (r) {
	case QUOTA_CONCURRENCY: return "TenantConcurrencyLimitExceeded";
	case QUOTA_RATE: return "RateLimitExceeded";
	case QUOTA_MEMORY: return "MemoryQuotaExceeded";
	case QUOTA_BUDGET: return "BudgetExceeded";
	case QUOTA_RESERVED: return "ReservedConcurrencyLimitExceeded";
	default: return "OK";
	}
}

uint64_t quota_billed_ms(uint64_t duration_us)
{
	uint64_t ms = duration_us / 1000 + (duration_us % 1000 != 0);

	return ms ? ms : 1;
}

uint64_t quota_mb_ms(uint32_t memory_mb, uint64_t billed_ms)
{
	return (uint64_t)memory_mb * billed_ms;
}

void quota_format_gb_s(uint64_t mb_ms, char *out, size_t outlen)
{
	/* 1 GB-s = 1,024,000 MB-ms; six decimals of GB-s = MB-ms * 10^6 / 1,024,000. */
	uint64_t whole = mb_ms / MB_MS_PER_GB_S, rest = mb_ms % MB_MS_PER_GB_S;
	uint64_t frac = (rest * 1000000ull) / MB_MS_PER_GB_S; /* truncated, never rounded up */

	snprintf(out, outlen, "%llu.%06llu", (unsigned long long)whole, (unsigned long long)frac);
}

static int month_of(int64_t wall_us, int64_t *start_us, int64_t *next_us)
{
	time_t t = (time_t)(wall_us / 1000000);
	struct tm tm;

	gmtime_r(&t, &tm);
	if (start_us) {
		struct tm b = { .tm_year = tm.tm_year, .tm_mon = tm.tm_mon, .tm_mday = 1 };
		struct tm n = { .tm_year = tm.tm_year + (tm.tm_mon == 11), .tm_mon = (tm.tm_mon + 1) % 12,
				.tm_mday = 1 };

		*start_us = (int64_t)timegm(&b) * 1000000;
		*next_us = (int64_t)timegm(&n) * 1000000;
	}
	return (tm.tm_year + 1900) * 100 + tm.tm_mon + 1;
}

static struct tstate *get(struct quota *q, int64_t tenant)
{
	struct tstate *t;

	for (t = q->tenants; t; t = t->next)
		if (t->tenant == tenant)
			return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->tenant = tenant;
	t->next = q->tenants;
	q->tenants = t;
	return t;
}

/* Called with q->mu held. */
static struct fstate *fn_get(struct tstate *t, int64_t function_id)
{
	struct fstate *nf;

	for (size_t i = 0; i < t->nfns; i++)
		if (t->fns[i].function_id == function_id)
			return &t->fns[i];
	nf = realloc(t->fns, (t->nfns + 1) * sizeof(*nf));
	if (!nf)
		return NULL;
	t->fns = nf;
	memset(&t->fns[t->nfns], 0, sizeof(*nf));
	t->fns[t->nfns].function_id = function_id;
	return &t->fns[t->nfns++];
}

/* Called with q->mu held. */
static void refresh(struct quota *q, struct tstate *t, int64_t now_us)
{
	int64_t wall = wall_us(), start, next;
	/* The month boundaries (two timegm calls) are only needed when the month changes. */
	int month = month_of(wall, NULL, NULL);

	if (!t->loaded) {
		int64_t *ids = NULL, *res = NULL;
		size_t n = 0;

		store_limits_get(q->store, t->tenant, &t->lim);
		t->tokens_milli = t->lim.burst * 1000;
		t->refill_us = now_us;
		/* Reservations change only through config: reload them with the limits. */
		for (size_t i = 0; i < t->nfns; i++)
			t->fns[i].reserved = 0;
		t->reserved_total = 0;
		store_reservations(q->store, t->tenant, &ids, &res, &n);
		for (size_t i = 0; i < n; i++) {
			struct fstate *f = fn_get(t, ids[i]);

			if (f)
				f->reserved = res[i];
			t->reserved_total += res[i];
		}
		free(ids);
		free(res);
		t->loaded = true;
	}
	if (t->month != month) {
		month_of(wall, &start, &next);
		t->month_mb_ms = store_usage_since(q->store, t->tenant, start);
		t->month = month;
	}
	if (t->lim.rate_per_s > 0) {
		/* 128-bit: hours of idle time times a large rate must not overflow. */
		__int128 add128 = (__int128)(now_us - t->refill_us) * t->lim.rate_per_s / 1000;
		int64_t add = add128 > (__int128)t->lim.burst * 1000 ? t->lim.burst * 1000 :
								     (int64_t)add128; /* milli-tokens */

		if (add > 0) {
			t->tokens_milli += add;
			if (t->tokens_milli > t->lim.burst * 1000)
				t->tokens_milli = t->lim.burst * 1000;
			t->refill_us = now_us;
		}
	}
}

enum quota_reason quota_admit(struct quota *q, int64_t tenant, int64_t function_id,
			      uint32_t memory_mb, int *retry_after_s)
{
	int64_t now = mono_us(), start, next;
	enum quota_reason r = QUOTA_OK;
	struct tstate *t;
	struct fstate *f;

	*retry_after_s = 0;
	pthread_mutex_lock(&q->mu);
	t = get(q, tenant);
	if (!t) {
		pthread_mutex_unlock(&q->mu);
		*retry_after_s = 1;
		return QUOTA_CONCURRENCY;
	}
	refresh(q, t, now);
	f = fn_get(t, function_id);
	if (!f) {
		pthread_mutex_unlock(&q->mu);
		*retry_after_s = 1;
		return QUOTA_CONCURRENCY;
	}
	if (t->lim.budget_mb_ms > 0 && t->month_mb_ms >= (uint64_t)t->lim.budget_mb_ms) {
		month_of(wall_us(), &start, &next);
		*retry_after_s = (int)((next - wall_us()) / 1000000 + 1);
		r = QUOTA_BUDGET;
	} else if (t->lim.rate_per_s > 0 && t->tokens_milli < 1000) {
		*retry_after_s = (int)((1000 - t->tokens_milli) / t->lim.rate_per_s / 1000 + 1);
		r = QUOTA_RATE;
	} else if (f->reserved > 0 && f->running >= f->reserved) {
		*retry_after_s = 1;
		r = QUOTA_RESERVED;
	} else if (f->reserved == 0 && t->lim.max_concurrency > 0 &&
		   t->running_unreserved >= t->lim.max_concurrency - t->reserved_total) {
		/* Unreserved functions share what the reservations leave. */
		*retry_after_s = 1;
		r = QUOTA_CONCURRENCY;
	} else if (t->lim.max_memory_mb > 0 && t->memory_mb + memory_mb > t->lim.max_memory_mb) {
		*retry_after_s = 1;
		r = QUOTA_MEMORY;
	} else {
		if (t->lim.rate_per_s > 0)
			t->tokens_milli -= 1000;
		t->running++;
		f->running++;
		if (f->reserved == 0) {
			f->running_unreserved++;
			t->running_unreserved++;
		}
		t->memory_mb += memory_mb;
	}
	pthread_mutex_unlock(&q->mu);
	return r;
}

void quota_release(struct quota *q, int64_t tenant, int64_t function_id, uint32_t memory_mb,
		   uint64_t mb_ms)
{
	struct tstate *t;

	pthread_mutex_lock(&q->mu);
	t = get(q, tenant);
	if (t) {
		struct fstate *f = fn_get(t, function_id);

		/*
		 * Give back to the shared pool first what was taken from it, even if
		 * a reservation was set meanwhile, so the counts never drift.
		 */
		if (f) {
			f->running--;
			if (f->running_unreserved > 0) {
				f->running_unreserved--;
				t->running_unreserved--;
			}
		}
		t->running--;
		t->memory_mb -= memory_mb;
		t->month_mb_ms += mb_ms;
	}
	pthread_mutex_unlock(&q->mu);
}

void quota_add_usage(struct quota *q, int64_t tenant, uint64_t mb_ms)
{
	struct tstate *t;

	pthread_mutex_lock(&q->mu);
	t = get(q, tenant);
	if (t)
		t->month_mb_ms += mb_ms;
	pthread_mutex_unlock(&q->mu);
}

void quota_invalidate(struct quota *q, int64_t tenant)
{
	struct tstate *t;

	pthread_mutex_lock(&q->mu);
	for (t = q->tenants; t; t = t->next)
		if (t->tenant == tenant) {
			t->loaded = false; /* running counts stay: they are facts, not limits */
			t->month = 0;
		}
	pthread_mutex_unlock(&q->mu);
}

int quota_create(struct store *store, struct quota **out)
{
	struct quota *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	q->store = store;
	pthread_mutex_init(&q->mu, NULL);
	*out = q;
	return 0;
}

void quota_destroy(struct quota *q)
{
	struct tstate *t, *n;

	if (!q)
		return;
	for (t = q->tenants; t; t = n) {
		n = t->next;
		free(t->fns);
		free(t);
	}
	pthread_mutex_destroy(&q->mu);
	free(q);
}
