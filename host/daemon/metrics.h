/*
 * metrics.h - hearthd's Prometheus metrics (text exposition format).
 *
 * Aggregate over all tenants: per-tenant figures are usage data, served only
 * to their tenant through the API. Updates are lock-free atomics.
 */
#ifndef HEARTH_DAEMON_METRICS_H
#define HEARTH_DAEMON_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void metrics_invocation(const char *status, uint64_t duration_us, bool function_error,
			bool platform_error);
void metrics_throttle(void);
/* A 429 with its reason code (RateLimitExceeded, HostCapacityExceeded, ...); counts in the total too. */
void metrics_throttle_reason(const char *reason);
void metrics_cold_start(uint64_t boot_us, uint64_t init_us);
/* The path of a cold start just counted by metrics_cold_start(): "boot" or "restore". */
void metrics_cold_start_path(const char *path);
/*
 * Budgets, aggregated (per-tenant figures stay in the API): the largest share
 * of its monthly GB-s budget any tenant with a budget has used, and how many
 * such tenants are at 80% or more. Set just before rendering (quota.h).
 */
void metrics_budget(double max_used_ratio, int tenants_at_80);
void metrics_concurrency(int delta);
/* Invocation records held in memory because the disk refused them (store_records_held). */
void metrics_records_held(size_t n);
/* An invocation run by sched_run_inline; handoff: finished by the VM's thread. */
void metrics_inline(bool handoff);
void metrics_vms(int delta);
/* A restored clone that was not Ready in time (destroyed; a VM booted instead). */
void metrics_clone_failed(void);
/* The builtin engine's pool of pre-started hearth-vmm processes (engine.h). */
void metrics_vmm_pool(int idle, int starting, uint64_t hits, uint64_t misses, uint64_t discarded);
void metrics_async(const char *what); /* "queued", "retried", "dead", "succeeded" */
/* One image GC sweep (imagegc.h): what it removed, kept for a deploy, and freed. */
void metrics_image_gc(int removed_shared, int removed_local, int kept_for_deploy, uint64_t bytes);

/* Renders the exposition text into a malloc'ed buffer. */
char *metrics_render(size_t *len);

#endif
