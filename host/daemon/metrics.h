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
void metrics_cold_start(uint64_t boot_us, uint64_t init_us);
void metrics_concurrency(int delta);
void metrics_vms(int delta);
void metrics_async(const char *what); /* "queued", "retried", "dead", "succeeded" */

/* Renders the exposition text into a malloc'ed buffer. */
char *metrics_render(size_t *len);

#endif
