/*
 * quota.h - per-tenant admission control and metering arithmetic.
 *
 * Limits live in SQLite (store.h, tenant_limits) and are cached here; the
 * admin changes them through the API and quota_invalidate() makes the change
 * effective at once. Admission is one critical section per invocation:
 * quota_admit() checks, in order, the tenant's rate (token bucket with a
 * burst), concurrency, memory in running invocations and monthly GB-second
 * budget, and reserves a concurrency slot and the memory; quota_release()
 * returns them and adds the invocation's usage. Because the check and the
 * reservation happen under one lock, a tenant's running invocations never
 * exceed its limit, not even for a moment.
 *
 * Reserved concurrency (per function, set with the function's config) is a
 * guarantee and a cap: a function with R reserved runs at most R at once,
 * and the tenant's other functions share only max_concurrency minus all its
 * reservations, so the R slots are always free for it.
 *
 * On a fleet (docs/fleet.md) both hold fleet-wide, without a store round trip
 * per invocation: a tenant's slots are split into disjoint pools, one per
 * reserved function (its R slots) and one for the rest (max_concurrency minus
 * the reservations), and a host admits an invocation only under its lease of
 * the pool it draws from (store_slots_lease()), leasing a block more when its
 * lease is full and giving the spare part back after a second unused. On one
 * host (SQLite) a lease is granted without I/O and admission is what it was.
 *
 * Units are integers, never floating point: usage is MB-milliseconds
 * (memory_mb x billed_ms); 1 GB-s = 1024 x 1000 MB-ms exactly.
 */
#ifndef HEARTH_DAEMON_QUOTA_H
#define HEARTH_DAEMON_QUOTA_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

#define MB_MS_PER_GB_S (1024ull * 1000ull)

enum quota_reason {
	QUOTA_OK = 0,
	QUOTA_CONCURRENCY,   /* TenantConcurrencyLimitExceeded */
	QUOTA_RATE,          /* RateLimitExceeded */
	QUOTA_MEMORY,        /* MemoryQuotaExceeded */
	QUOTA_BUDGET,        /* BudgetExceeded */
	QUOTA_RESERVED,      /* ReservedConcurrencyLimitExceeded */
};

const char *quota_reason_code(enum quota_reason r);

/* Billed duration: the duration rounded up to the next whole millisecond (at least 1). */
uint64_t quota_billed_ms(uint64_t duration_us);
/* Usage of one invocation in MB-ms. */
uint64_t quota_mb_ms(uint32_t memory_mb, uint64_t billed_ms);
/* Formats MB-ms as GB-seconds with exactly 6 decimals, by integer arithmetic. */
void quota_format_gb_s(uint64_t mb_ms, char *out, size_t outlen);

struct quota;

int quota_create(struct store *store, struct quota **out);
void quota_destroy(struct quota *q);

/*
 * Admits one invocation of memory_mb for tenant, reserving a slot; on refusal
 * returns the reason and the seconds after which a retry may succeed.
 */
enum quota_reason quota_admit(struct quota *q, int64_t tenant, int64_t function_id,
			      uint32_t memory_mb, int *retry_after_s);
/* Gives back what quota_admit() reserved and counts the usage (0 for platform errors). */
void quota_release(struct quota *q, int64_t tenant, int64_t function_id, uint32_t memory_mb,
		   uint64_t mb_ms);
/* Adds usage that is not an invocation (provisioned VMs) to the tenant's month. */
void quota_add_usage(struct quota *q, int64_t tenant, uint64_t mb_ms);
/*
 * Over the tenants seen since start that have a budget: the largest share of
 * it used this month, and how many used 80% or more (for metrics_budget()).
 */
void quota_budget_summary(struct quota *q, double *max_used_ratio, int *tenants_at_80);
/* Reloads the tenant's limits on its next admission. */
void quota_invalidate(struct quota *q, int64_t tenant);

#endif
