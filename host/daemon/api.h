/*
 * api.h - hearthd's HTTP API (libmicrohttpd + jansson).
 *
 * Listens on TCP and on a Unix socket. Every request but /healthz and
 * /metrics needs "Authorization: Bearer <key>". Errors are JSON:
 *   {"error": {"code": "...", "message": "..."}}
 * with the matching HTTP status. Request bodies are limited per route (413
 * beyond), idle or slow connections are cut after a timeout, and a
 * synchronous invocation suspends its connection (no thread waits for it), so
 * thousands can be in flight at once.
 */
#ifndef HEARTH_DAEMON_API_H
#define HEARTH_DAEMON_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scheduler.h"
#include "store.h"

struct api_config {
	const char *listen_host;     /* TCP address; NULL = no TCP */
	int port;
	const char *unix_path;       /* NULL = no Unix socket */
	const char *state_dir;       /* images/, tmp/ */
	const char *agent_bin;       /* hearth-agent put in images as /init */
	const char *busybox;
	size_t max_invoke_payload;   /* bytes; default 6 MiB */
	size_t max_package;          /* upload bytes; default 64 MiB */
	int conn_timeout_s;
	int threads;
	bool allow_server_path_deploy; /* admin may deploy from a server path */
	int async_retries;           /* default 2 */
	int64_t async_backoff_ms;    /* first retry delay; doubles; default 1000 */
	int64_t async_max_age_ms;    /* default 6 hours */
	struct quota *quota;         /* admission control and metering */
	int host_capacity;           /* VM slots on this host (max_vms) */
	int unreserved_floor;        /* slots that reservations may not take */
};

struct api;
struct async;

int api_start(const struct api_config *cfg, struct store *store, struct sched *sched,
	      struct async *async, struct api **out);
/* Stops accepting connections; in-flight requests may still finish. */
void api_quiesce(struct api *a);
/* Stops the server; call after the scheduler has finished every invocation. */
void api_stop(struct api *a);

/* Records a finished invocation and logs its REPORT line (shared with async.c). */
struct invocation;
void api_record_invocation(struct store *store, struct invocation *inv, const char *kind,
			   int attempt, struct inv_record *rec_out);
const char *api_status_name(const struct invocation *inv);

#endif
