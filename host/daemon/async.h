/*
 * async.h - the asynchronous invocation queue (X-Hearth-Invocation-Type: Event).
 *
 * Events are stored in SQLite before the 202 goes out. A dispatcher thread
 * claims due events and submits them to the scheduler; a failed attempt
 * (function error or platform error) is retried with exponential backoff, up
 * to `retries` times and while the event is younger than max_age; then it
 * goes to the dead-letter list. On start, events a killed hearthd left
 * running are put back in the queue (at-least-once execution; each attempt's
 * record and outcome are committed together, so none is reported twice).
 */
#ifndef HEARTH_DAEMON_ASYNC_H
#define HEARTH_DAEMON_ASYNC_H

#include <stdint.h>

#include "scheduler.h"
#include "store.h"

struct async_config {
	int retries;
	int64_t backoff_ms;
	int64_t max_age_ms;
	int max_inflight;
	struct quota *quota;   /* events past a tenant limit wait in the queue */
};

struct async;

int async_start(const struct async_config *cfg, struct store *store, struct sched *sched,
		struct async **out);
/* Wakes the dispatcher (a new event was queued). */
void async_kick(struct async *a);
/* Stops claiming events. In-flight attempts end when the scheduler stops. */
void async_stop(struct async *a);
/* Frees a; call after sched_destroy(), when no attempt can still complete. */
void async_free(struct async *a);

#endif
