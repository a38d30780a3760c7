/*
 * bench_json.h - the machine-readable results of a `ci/bench` benchmark, read
 * by `ci/bench report` (ci/bench-report). One JSON object per benchmark run
 * (jansson), written to the file named by $HEARTH_BENCH_OUT (nothing is
 * written when it is unset or empty):
 *
 *   { "schema": "hearth-bench/1", "bench": "vmm", "label": "...",
 *     "date": "2026-12-01T05:40:00Z",
 *     "machine": { "cpu": "...", "cores": 2, "kernel": "6.1.0", "kvm": "..." },
 *     "engine": "hearth-vmm (KVM: PVM ...)",
 *     "samples": { KEY: { "kind": "warm"|"boot"|"restore"|"other", "label": "...",
 *                         "unit": "us", "n": N, "p50": .., "p90": .., "p99": ..,
 *                         "min": .., "max": .., "values": [ raw samples ] } },
 *     "series":  { KEY: { "kind": "restores_vs_concurrency"|"memory_vs_clones"|
 *                                 "throughput_vs_connections"|"other",
 *                         "label": "...", "x": "x axis", "y": "y axis",
 *                         "points": [ [x, y], ... ] } },
 *     "figures": { KEY: { "value": V, "unit": "...", "label": "..." } } }
 *
 * Percentiles are nearest-rank over the raw values. JSON has no NaN or
 * infinity: such samples, points and figures are left out. Every call is a
 * no-op on a NULL report, so a benchmark can call them unconditionally.
 */
#ifndef HEARTH_BENCH_JSON_H
#define HEARTH_BENCH_JSON_H

#include <jansson.h>

/* A new report with the date and the machine facts filled in; engine may be NULL (set later). */
json_t *bj_new(const char *bench, const char *label, const char *engine);
void bj_set(json_t *r, const char *key, const char *value);  /* a top-level string: engine, label, ... */
void bj_machine_set(json_t *r, const char *key, const char *value); /* machine.<key> */
/* Raw samples, one distribution (order kept as measured). */
void bj_samples(json_t *r, const char *key, const char *kind, const char *label, const char *unit,
		const double *v, int n);
void bj_samples_ll(json_t *r, const char *key, const char *kind, const char *label,
		   const char *unit, const long long *v, int n);
/* One point of a series (a sweep); the series is created on first use. */
void bj_point(json_t *r, const char *key, const char *kind, const char *label, const char *x_axis,
	      const char *y_axis, double x, double y);
void bj_figure(json_t *r, const char *key, double value, const char *unit, const char *label);
/* The value of the first /proc/cpuinfo line starting with field ("?" if none). */
void bj_cpuinfo(const char *field, char *out, size_t len);
/* Writes to $HEARTH_BENCH_OUT (if set) and frees r. Returns 0, or -1 with a message on stderr. */
int bj_write(json_t *r);

#endif
