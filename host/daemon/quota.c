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

/* This host's lease of one pool of a tenant's slots (store_slots_lease()). */
struct lease {
	int64_t held;
	int64_t retry_us;  /* refused: not asked again before this */
	int64_t used_us;   /* the last admission under it */
};

struct fstate {
	int64_t function_id;
	int64_t reserved;
	int64_t running;
	int64_t running_unreserved;  /* of running, admitted from the shared pool */
	struct lease pool;           /* of the function's reserved pool (fleet-wide cap) */
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
	/* this host's share of the rate limit: rate and burst over the live hosts, rounded up */
	int64_t rate, burst;
	int shared_by;
	/* fleet-wide concurrency: this host's lease of the tenant's unreserved pool */
	struct lease pool;
	int64_t last_admit_us;
	struct tstate *next;
};

struct quota {
	struct store *store;
	pthread_mutex_t mu;
	struct tstate *tenants;
	int hosts;               /* live hosts sharing the store (1 alone) */
	int64_t lease_epoch;     /* store_lease_epoch() when the leases held were granted */
	/* the sweeper: idle leases back, limits and monthly usage fresh from the store */
	pthread_t sweeper;
	pthread_cond_t cond;
	bool stopping, started;
};

/* Sweeps: every SWEEP_MS; a lease unused for LEASE_IDLE_US goes back; limits and the month's
 * usage are re-read every REFRESH_US (other hosts of a fleet change and use them). */
#define SWEEP_MS 250
#define LEASE_IDLE_US 1000000
#define REFRESH_US 1000000
/* A refused lease is asked again after this; meanwhile admissions over the lease are refused. */
#define LEASE_RETRY_US 50000

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
/*
 * The rate limit is the fleet's: each of n live hosts refills its bucket at
 * rate/n and holds burst/n (rounded up, so the fleet admits at most rate +
 * n - 1 a second and a burst of at most burst + n - 1). Called with q->mu held.
 */
static void share_rate(struct quota *q, struct tstate *t)
{
	int n = q->hosts > 0 ? q->hosts : 1;

	t->rate = (t->lim.rate_per_s + n - 1) / n;
	t->burst = (t->lim.burst + n - 1) / n;
	t->shared_by = n;
}

static void refresh(struct quota *q, struct tstate *t, int64_t now_us)
{
	int64_t wall = wall_us(), start, next;
	/* The month boundaries (two timegm calls) are only needed when the month changes. */
	int month = month_of(wall, NULL, NULL);

	struct tenant_limits nl;

	/* A store that cannot be read keeps the limits known so far (never "no limits"). */
	if (!t->loaded && store_limits_get(q->store, t->tenant, &nl) == 0) {
		int64_t *ids = NULL, *res = NULL;
		size_t n = 0;

		t->lim = nl;
		share_rate(q, t);
		t->tokens_milli = t->burst * 1000;
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
			/* Saturates: a stored value must never wrap the sum negative. */
			if (__builtin_add_overflow(t->reserved_total, res[i], &t->reserved_total))
				t->reserved_total = INT64_MAX;
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
	if (t->rate > 0) {
		/* 128-bit: hours of idle time times a large rate must not overflow. */
		__int128 add128 = (__int128)(now_us - t->refill_us) * t->rate / 1000;
		int64_t add = add128 > (__int128)t->burst * 1000 ? t->burst * 1000 :
								     (int64_t)add128; /* milli-tokens */

		if (add > 0) {
			t->tokens_milli += add;
			if (t->tokens_milli > t->burst * 1000)
				t->tokens_milli = t->burst * 1000;
			t->refill_us = now_us;
		}
	}
}

/* Leases revoked by the store (this host was taken for dead): void them all. Caller holds q->mu. */
static void check_epoch(struct quota *q)
{
	int64_t epoch = store_lease_epoch(q->store);

	if (epoch == q->lease_epoch)
		return;
	for (struct tstate *t = q->tenants; t; t = t->next) {
		t->pool.held = 0;
		for (size_t i = 0; i < t->nfns; i++)
			t->fns[i].pool.held = 0;
	}
	q->lease_epoch = epoch;
}

/*
 * Room for one more invocation in a pool of the tenant's slots (function_id
 * 0: the unreserved pool; else that function's reserved pool) under this
 * host's lease of it, leasing a block more when the lease is full (a store
 * round trip, once per block, not per invocation). running: this host's
 * invocations admitted from the pool. Called with q->mu held.
 */
static bool lease_room(struct quota *q, struct tstate *t, int64_t function_id, struct lease *l,
		       int64_t limit, int64_t running, int64_t now)
{
	int64_t block = limit / 8 > 0 ? limit / 8 : 1, held;

	check_epoch(q);
	if (running < l->held)
		return true;
	if (now < l->retry_us)
		return false;
	if (store_slots_lease(q->store, t->tenant, function_id, limit, running + block, &held) == 0)
		l->held = held;
	if (running < l->held)
		return true;
	l->retry_us = now + LEASE_RETRY_US;
	return false;
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
	if (t->loaded && t->shared_by != (q->hosts > 0 ? q->hosts : 1)) {
		share_rate(q, t);
		if (t->tokens_milli > t->burst * 1000)
			t->tokens_milli = t->burst * 1000;
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
	} else if (t->rate > 0 && t->tokens_milli < 1000) {
		*retry_after_s = (int)((1000 - t->tokens_milli) / t->rate / 1000 + 1);
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
	} else if (t->lim.max_concurrency > 0 && t->running >= t->lim.max_concurrency) {
		/* This host alone is at the limit (a reservation set while others ran). */
		*retry_after_s = 1;
		r = QUOTA_CONCURRENCY;
	} else if (f->reserved > 0 &&
		   !lease_room(q, t, f->function_id, &f->pool, f->reserved,
			       f->running - f->running_unreserved, now)) {
		/* The function's reserved slots are leased by other hosts of the fleet. */
		*retry_after_s = 1;
		r = QUOTA_RESERVED;
	} else if (f->reserved == 0 && t->lim.max_concurrency > 0 &&
		   !lease_room(q, t, 0, &t->pool, t->lim.max_concurrency - t->reserved_total,
			       t->running_unreserved, now)) {
		/* The tenant's unreserved slots are leased by other hosts of the fleet. */
		*retry_after_s = 1;
		r = QUOTA_CONCURRENCY;
	} else {
		t->last_admit_us = now;
		if (t->rate > 0)
			t->tokens_milli -= 1000;
		t->running++;
		f->running++;
		if (f->reserved == 0) {
			f->running_unreserved++;
			t->running_unreserved++;
			t->pool.used_us = now;
		} else {
			f->pool.used_us = now;
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

void quota_budget_summary(struct quota *q, double *max_used_ratio, int *tenants_at_80)
{
	int month = month_of(wall_us(), NULL, NULL);

	*max_used_ratio = 0;
	*tenants_at_80 = 0;
	pthread_mutex_lock(&q->mu);
	for (struct tstate *t = q->tenants; t; t = t->next) {
		double r;

		/* A tenant whose limits were just changed is counted again at its next admission. */
		if (!t->loaded || t->lim.budget_mb_ms <= 0 || t->month != month)
			continue;
		r = (double)t->month_mb_ms / (double)t->lim.budget_mb_ms;
		if (r > *max_used_ratio)
			*max_used_ratio = r;
		if (t->month_mb_ms * 5 >= (uint64_t)t->lim.budget_mb_ms * 4)
			(*tenants_at_80)++;
	}
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

/* The stored reservations differ from the ones loaded (changed on another host). Caller holds q->mu. */
static bool reservations_differ(const struct tstate *t, const int64_t *ids, const int64_t *res,
				size_t n)
{
	size_t have = 0, found;

	for (size_t i = 0; i < t->nfns; i++)
		have += t->fns[i].reserved > 0;
	if (have != n)
		return true;
	for (size_t i = 0; i < n; i++) {
		for (found = 0; found < t->nfns && t->fns[found].function_id != ids[i]; found++)
			;
		if (found == t->nfns || t->fns[found].reserved != res[i])
			return true;
	}
	return false;
}

/*
 * Gives back the spare part of a lease unused for LEASE_IDLE_US; at a
 * refresh, asks again for the lease held, which the store cuts to what the
 * pool leaves if its size shrank (a limit or a reservation lowered): so the
 * fleet gets back within the new size as running invocations drain, even on
 * a host that is never idle. Called with q->mu held.
 */
static void keep_lease(struct quota *q, struct tstate *t, int64_t function_id, struct lease *l,
		       int64_t limit, int64_t running, int64_t now, bool refresh)
{
	int64_t want, held;

	if (l->held > running && now - l->used_us > LEASE_IDLE_US)
		want = running;
	else if (refresh && l->held > 0)
		want = l->held;
	else
		return;
	if (store_slots_lease(q->store, t->tenant, function_id, limit, want, &held) == 0)
		l->held = held;
}

/* One sweep of one tenant, outside q->mu for the store's reads. */
static void sweep_tenant(struct quota *q, int64_t tenant, bool refresh_now)
{
	struct tenant_limits lim;
	struct tstate *t;
	int64_t now = mono_us(), start = 0, next = 0, *ids = NULL, *res = NULL;
	uint64_t used = 0;
	size_t nres = 0;
	bool have_lim = false, have_used = false, have_res = false;

	if (refresh_now) {
		have_lim = store_limits_get(q->store, tenant, &lim) == 0;
		have_res = store_reservations(q->store, tenant, &ids, &res, &nres) == 0;
		month_of(wall_us(), &start, &next);
		used = store_usage_since(q->store, tenant, start);
		have_used = true;
	}
	pthread_mutex_lock(&q->mu);
	t = get(q, tenant);
	if (t && t->loaded) {
		/* Changed on another host: reload at the next admission (as quota_invalidate). */
		if ((have_lim && memcmp(&lim, &t->lim, sizeof(lim)) != 0) ||
		    (have_res && reservations_differ(t, ids, res, nres))) {
			t->loaded = false;
			t->month = 0;
		}
		/* Other hosts' usage counts toward the budget (the store's sum includes ours). */
		if (have_used && t->month == month_of(wall_us(), NULL, NULL) && used > t->month_mb_ms)
			t->month_mb_ms = used;
	}
	if (t) {
		keep_lease(q, t, 0, &t->pool, t->lim.max_concurrency - t->reserved_total,
			   t->running_unreserved, now, refresh_now);
		for (size_t i = 0; i < t->nfns; i++) {
			struct fstate *f = &t->fns[i];

			keep_lease(q, t, f->function_id, &f->pool, f->reserved,
				   f->running - f->running_unreserved, now, refresh_now);
		}
	}
	pthread_mutex_unlock(&q->mu);
	free(ids);
	free(res);
}

/* Holds a lease of any of its pools. Called with q->mu held. */
static bool holds_lease(const struct tstate *t)
{
	if (t->pool.held > 0)
		return true;
	for (size_t i = 0; i < t->nfns; i++)
		if (t->fns[i].pool.held > 0)
			return true;
	return false;
}

static void *sweeper(void *arg)
{
	struct quota *q = arg;
	int64_t last_refresh = 0;

	pthread_mutex_lock(&q->mu);
	while (!q->stopping) {
		struct timespec ts;
		int64_t now, *ids = NULL;
		size_t n = 0, cap = 0;
		bool refresh;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += SWEEP_MS * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&q->cond, &q->mu, &ts);
		if (q->stopping)
			break;
		now = mono_us();
		check_epoch(q);
		refresh = now - last_refresh >= REFRESH_US;
		if (refresh) {
			int hosts = 1;

			last_refresh = now;
			pthread_mutex_unlock(&q->mu);
			if (store_live_hosts(q->store, &hosts) != 0 || hosts < 1)
				hosts = 0; /* unknown: keep the last count */
			pthread_mutex_lock(&q->mu);
			if (hosts > 0)
				q->hosts = hosts;
		}
		/* Tenants active in the last minute, or holding a lease. */
		for (struct tstate *t = q->tenants; t; t = t->next) {
			if (!holds_lease(t) && now - t->last_admit_us > 60000000)
				continue;
			if (n == cap) {
				int64_t *ni = realloc(ids, (cap = cap ? cap * 2 : 16) * sizeof(*ids));

				if (!ni)
					break;
				ids = ni;
			}
			ids[n++] = t->tenant;
		}
		pthread_mutex_unlock(&q->mu);
		for (size_t i = 0; i < n; i++)
			sweep_tenant(q, ids[i], refresh);
		free(ids);
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

int quota_create(struct store *store, struct quota **out)
{
	struct quota *q = calloc(1, sizeof(*q));

	if (!q)
		return -ENOMEM;
	q->store = store;
	q->hosts = 1;
	if (store_live_hosts(store, &q->hosts) != 0 || q->hosts < 1)
		q->hosts = 1;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cond, NULL);
	if (pthread_create(&q->sweeper, NULL, sweeper, q) != 0) {
		free(q);
		return -EAGAIN;
	}
	q->started = true;
	*out = q;
	return 0;
}

void quota_destroy(struct quota *q)
{
	struct tstate *t, *n;

	if (!q)
		return;
	if (q->started) {
		pthread_mutex_lock(&q->mu);
		q->stopping = true;
		pthread_cond_signal(&q->cond);
		pthread_mutex_unlock(&q->mu);
		pthread_join(q->sweeper, NULL);
	}
	for (t = q->tenants; t; t = n) {
		n = t->next;
		free(t->fns);
		free(t);
	}
	pthread_mutex_destroy(&q->mu);
	free(q);
}
