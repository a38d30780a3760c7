/*
 * log.h - hearthd's structured log: one JSON object per line on stderr.
 *
 * Every line has ts (RFC 3339, UTC, ms), level, component and msg; lines about
 * an invocation add request_id. hlog_report() prints the Lambda-style REPORT
 * line for an invocation, also as JSON (its text in "msg").
 */
#ifndef HEARTH_DAEMON_LOG_H
#define HEARTH_DAEMON_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

void hlog_set_verbose(bool verbose);

/* fields (may be NULL) is merged into the line and released. */
void hlog_event(const char *level, const char *component, const char *request_id, json_t *fields,
		const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define hlog_info(comp, ...) hlog_event("info", comp, NULL, NULL, __VA_ARGS__)
#define hlog_warn(comp, ...) hlog_event("warn", comp, NULL, NULL, __VA_ARGS__)
#define hlog_error(comp, ...) hlog_event("error", comp, NULL, NULL, __VA_ARGS__)
void hlog_debug(const char *comp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
