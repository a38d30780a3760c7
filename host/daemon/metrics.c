/*
 * metrics.c - counters and histograms for /metrics; see metrics.h.
 */
#include "metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double buckets_s[] = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
				    30, 60, 300, 900 };
#define NBUCKETS (sizeof(buckets_s) / sizeof(buckets_s[0]))

struct histogram {
	atomic_ullong bucket[NBUCKETS];
	atomic_ullong count;
	atomic_ullong sum_us;
};

static const char *const statuses[] = { "Success", "FunctionError", "Crashed", "Timeout",
					"ResponseTooLarge", "PlatformError" };
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))

static atomic_ullong invocations[NSTATUS];
static atomic_ullong function_errors, platform_errors, throttles, cold_starts, clone_failures;
static atomic_ullong inline_runs, inline_handoffs;
static atomic_llong concurrent, vms;
static atomic_llong pool_idle, pool_starting;
static atomic_ullong pool_hits, pool_misses, pool_discarded;
static atomic_ullong async_counts[4];
static atomic_ullong gc_runs, gc_removed_shared, gc_removed_local, gc_kept, gc_bytes;
/* The last name stands for any other reason. */
static const char *const reasons[] = { "RateLimitExceeded", "TenantConcurrencyLimitExceeded",
				       "ReservedConcurrencyLimitExceeded", "MemoryQuotaExceeded",
				       "BudgetExceeded", "HostCapacityExceeded", "Other" };
#define NREASONS (sizeof(reasons) / sizeof(reasons[0]))
static atomic_ullong throttles_by[NREASONS];
static atomic_ullong cold_by_path[2]; /* boot, restore */
static atomic_llong budget_ratio_ppm, budget_at_80, records_held;
static struct histogram duration, init_duration, boot_duration;

static void observe(struct histogram *h, uint64_t us)
{
	for (size_t i = 0; i < NBUCKETS; i++)
		if ((double)us <= buckets_s[i] * 1e6)
			atomic_fetch_add(&h->bucket[i], 1);
	atomic_fetch_add(&h->count, 1);
	atomic_fetch_add(&h->sum_us, us);
}

void metrics_invocation(const char *status, uint64_t duration_us, bool fe, bool pe)
{
	size_t i;

	for (i = 0; i < NSTATUS - 1 && strcmp(statuses[i], status) != 0; i++)
		;
	atomic_fetch_add(&invocations[i], 1);
	if (fe)
		atomic_fetch_add(&function_errors, 1);
	if (pe)
		atomic_fetch_add(&platform_errors, 1);
	if (!pe)
		observe(&duration, duration_us);
}

void metrics_throttle(void) { metrics_throttle_reason(NULL); }

void metrics_throttle_reason(const char *reason)
{
	size_t i;

	for (i = 0; i < NREASONS - 1 && !(reason && strcmp(reasons[i], reason) == 0); i++)
		;
	atomic_fetch_add(&throttles, 1);
	atomic_fetch_add(&throttles_by[i], 1);
}

void metrics_cold_start_path(const char *path)
{
	atomic_fetch_add(&cold_by_path[path && strcmp(path, "restore") == 0], 1);
}

void metrics_budget(double max_used_ratio, int tenants_at_80)
{
	atomic_store(&budget_ratio_ppm, (long long)(max_used_ratio * 1e6));
	atomic_store(&budget_at_80, tenants_at_80);
}

void metrics_records_held(size_t n)
{
	atomic_store(&records_held, (long long)n);
}

void metrics_clone_failed(void) { atomic_fetch_add(&clone_failures, 1); }

void metrics_inline(bool handoff)
{
	atomic_fetch_add(&inline_runs, 1);
	if (handoff)
		atomic_fetch_add(&inline_handoffs, 1);
}

void metrics_vmm_pool(int idle, int starting, uint64_t hits, uint64_t misses, uint64_t discarded)
{
	atomic_store(&pool_idle, idle);
	atomic_store(&pool_starting, starting);
	atomic_store(&pool_hits, hits);
	atomic_store(&pool_misses, misses);
	atomic_store(&pool_discarded, discarded);
}

void metrics_cold_start(uint64_t boot_us, uint64_t init_us)
{
	atomic_fetch_add(&cold_starts, 1);
	observe(&boot_duration, boot_us);
	observe(&init_duration, init_us);
}

void metrics_concurrency(int d) { atomic_fetch_add(&concurrent, d); }
void metrics_vms(int d) { atomic_fetch_add(&vms, d); }

void metrics_async(const char *what)
{
	static const char *const names[] = { "queued", "retried", "dead", "succeeded" };

	for (size_t i = 0; i < 4; i++)
		if (strcmp(names[i], what) == 0)
			atomic_fetch_add(&async_counts[i], 1);
}

void metrics_image_gc(int removed_shared, int removed_local, int kept_for_deploy, uint64_t bytes)
{
	atomic_fetch_add(&gc_runs, 1);
	atomic_fetch_add(&gc_removed_shared, (unsigned long long)removed_shared);
	atomic_fetch_add(&gc_removed_local, (unsigned long long)removed_local);
	atomic_fetch_add(&gc_kept, (unsigned long long)kept_for_deploy);
	atomic_fetch_add(&gc_bytes, bytes);
}

static void put_hist(FILE *f, const char *name, const char *help, struct histogram *h)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (size_t i = 0; i < NBUCKETS; i++)
		fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, buckets_s[i],
			(unsigned long long)atomic_load(&h->bucket[i]));
	fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)atomic_load(&h->count));
	fprintf(f, "%s_sum %.6f\n%s_count %llu\n", name, atomic_load(&h->sum_us) / 1e6, name,
		(unsigned long long)atomic_load(&h->count));
}

char *metrics_render(size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	if (!f)
		return NULL;
	fprintf(f, "# HELP hearth_invocations_total Finished invocations by status.\n"
		   "# TYPE hearth_invocations_total counter\n");
	for (size_t i = 0; i < NSTATUS; i++)
		fprintf(f, "hearth_invocations_total{status=\"%s\"} %llu\n", statuses[i],
			(unsigned long long)atomic_load(&invocations[i]));
	fprintf(f, "# HELP hearth_errors_total Failed invocations by origin.\n"
		   "# TYPE hearth_errors_total counter\n"
		   "hearth_errors_total{origin=\"function\"} %llu\n"
		   "hearth_errors_total{origin=\"platform\"} %llu\n",
		(unsigned long long)function_errors, (unsigned long long)platform_errors);
	fprintf(f, "# HELP hearth_throttles_total Invocations refused by admission (429).\n"
		   "# TYPE hearth_throttles_total counter\nhearth_throttles_total %llu\n",
		(unsigned long long)throttles);
	fprintf(f, "# HELP hearth_throttles_by_reason_total Invocations refused (429) by reason code.\n"
		   "# TYPE hearth_throttles_by_reason_total counter\n");
	for (size_t i = 0; i < NREASONS; i++)
		fprintf(f, "hearth_throttles_by_reason_total{reason=\"%s\"} %llu\n", reasons[i],
			(unsigned long long)atomic_load(&throttles_by[i]));
	fprintf(f, "# HELP hearth_cold_starts_by_path_total Cold starts by path: a VM booted, or a "
		   "snapshot clone or saved VM restored.\n"
		   "# TYPE hearth_cold_starts_by_path_total counter\n"
		   "hearth_cold_starts_by_path_total{path=\"boot\"} %llu\n"
		   "hearth_cold_starts_by_path_total{path=\"restore\"} %llu\n",
		(unsigned long long)atomic_load(&cold_by_path[0]),
		(unsigned long long)atomic_load(&cold_by_path[1]));
	fprintf(f, "# HELP hearth_budget_max_used_ratio The largest share of its monthly GB-s budget "
		   "used by a tenant with a budget (tenants seen since hearthd started).\n"
		   "# TYPE hearth_budget_max_used_ratio gauge\nhearth_budget_max_used_ratio %.6f\n"
		   "# HELP hearth_budget_tenants_at_80_percent Tenants that used 80%% or more of their "
		   "monthly GB-s budget.\n"
		   "# TYPE hearth_budget_tenants_at_80_percent gauge\n"
		   "hearth_budget_tenants_at_80_percent %lld\n",
		(double)atomic_load(&budget_ratio_ppm) / 1e6, (long long)atomic_load(&budget_at_80));
	fprintf(f, "# HELP hearth_invocation_records_held Invocation records the disk refused, held "
		   "in memory until it takes them; new invocations are refused meanwhile.\n"
		   "# TYPE hearth_invocation_records_held gauge\nhearth_invocation_records_held %lld\n",
		(long long)atomic_load(&records_held));
	fprintf(f, "# HELP hearth_cold_starts_total Invocations that waited for a new VM.\n"
		   "# TYPE hearth_cold_starts_total counter\nhearth_cold_starts_total %llu\n",
		(unsigned long long)cold_starts);
	fprintf(f, "# HELP hearth_invocations_inline_total Warm sync invocations run in the request's "
		   "own thread (no handoff to the VM's thread).\n"
		   "# TYPE hearth_invocations_inline_total counter\nhearth_invocations_inline_total %llu\n"
		   "# HELP hearth_invocations_inline_handoffs_total Of those, the ones not answered within "
		   "the inline wait, finished by the VM's thread.\n"
		   "# TYPE hearth_invocations_inline_handoffs_total counter\n"
		   "hearth_invocations_inline_handoffs_total %llu\n",
		(unsigned long long)inline_runs, (unsigned long long)inline_handoffs);
	fprintf(f, "# HELP hearth_clone_failures_total Restored clones not Ready within the restore "
		   "timeout (destroyed; a VM was booted instead).\n"
		   "# TYPE hearth_clone_failures_total counter\nhearth_clone_failures_total %llu\n",
		(unsigned long long)clone_failures);
	fprintf(f, "# HELP hearth_concurrent_executions Invocations running now.\n"
		   "# TYPE hearth_concurrent_executions gauge\nhearth_concurrent_executions %lld\n",
		(long long)concurrent);
	fprintf(f, "# HELP hearth_vms Function VMs alive now.\n# TYPE hearth_vms gauge\nhearth_vms %lld\n",
		(long long)vms);
	fprintf(f, "# HELP hearth_vmm_pool_idle Pre-started hearth-vmm processes ready for a "
		   "restore.\n# TYPE hearth_vmm_pool_idle gauge\nhearth_vmm_pool_idle %lld\n"
		   "# HELP hearth_vmm_pool_starting Pre-started hearth-vmm processes not ready yet.\n"
		   "# TYPE hearth_vmm_pool_starting gauge\nhearth_vmm_pool_starting %lld\n"
		   "# HELP hearth_vmm_pool_hits_total Clones restored in a pre-started process.\n"
		   "# TYPE hearth_vmm_pool_hits_total counter\nhearth_vmm_pool_hits_total %llu\n"
		   "# HELP hearth_vmm_pool_misses_total Clones that found no pre-started process "
		   "ready, or whose process failed (a new one was spawned).\n"
		   "# TYPE hearth_vmm_pool_misses_total counter\nhearth_vmm_pool_misses_total %llu\n"
		   "# HELP hearth_vmm_pool_discarded_total Pre-started processes that died, failed a "
		   "check or a restore (replaced).\n"
		   "# TYPE hearth_vmm_pool_discarded_total counter\n"
		   "hearth_vmm_pool_discarded_total %llu\n",
		(long long)pool_idle, (long long)pool_starting, (unsigned long long)pool_hits,
		(unsigned long long)pool_misses, (unsigned long long)pool_discarded);
	fprintf(f, "# HELP hearth_async_events_total Asynchronous events by outcome.\n"
		   "# TYPE hearth_async_events_total counter\n");
	static const char *const an[] = { "queued", "retried", "dead", "succeeded" };
	for (size_t i = 0; i < 4; i++)
		fprintf(f, "hearth_async_events_total{outcome=\"%s\"} %llu\n", an[i],
			(unsigned long long)atomic_load(&async_counts[i]));
	fprintf(f, "# HELP hearth_image_gc_runs_total Image garbage collection sweeps on this host.\n"
		   "# TYPE hearth_image_gc_runs_total counter\nhearth_image_gc_runs_total %llu\n"
		   "# HELP hearth_images_removed_total Images no version used any more, removed by "
		   "this host: from the fleet's shared store, or files from its image directory.\n"
		   "# TYPE hearth_images_removed_total counter\n"
		   "hearth_images_removed_total{from=\"shared\"} %llu\n"
		   "hearth_images_removed_total{from=\"local\"} %llu\n"
		   "# HELP hearth_image_gc_kept_for_deploy_total Unused images a deploy on another "
		   "host used again while they were being removed (kept).\n"
		   "# TYPE hearth_image_gc_kept_for_deploy_total counter\n"
		   "hearth_image_gc_kept_for_deploy_total %llu\n"
		   "# HELP hearth_image_gc_bytes_total Bytes freed by image garbage collection.\n"
		   "# TYPE hearth_image_gc_bytes_total counter\nhearth_image_gc_bytes_total %llu\n",
		(unsigned long long)atomic_load(&gc_runs),
		(unsigned long long)atomic_load(&gc_removed_shared),
		(unsigned long long)atomic_load(&gc_removed_local),
		(unsigned long long)atomic_load(&gc_kept), (unsigned long long)atomic_load(&gc_bytes));
	put_hist(f, "hearth_invocation_duration_seconds", "Handler run time of invocations.",
		 &duration);
	put_hist(f, "hearth_init_duration_seconds", "Init step time of cold starts.", &init_duration);
	put_hist(f, "hearth_cold_start_boot_seconds", "VM boot or restore time of cold starts.",
		 &boot_duration);
	fclose(f);
	return buf;
}
