/*
 * api.h - hearthd's HTTP API (libmicrohttpd + jansson).
 *
 * Listens on TCP and on a Unix socket. Every request but /healthz and
 * /metrics needs "Authorization: Bearer <key>". Errors are JSON:
 *   {"error": {"code": "...", "message": "..."}}
 * with the matching HTTP status. The key is checked as soon as the request
 * header is complete, before any byte of the body is read; package uploads
 * stream to disk. Request bodies are limited per route (413 beyond). A path
 * longer than 511 bytes (or a target over 4 KiB) is 414, and a path or query
 * argument that decodes to NUL or a control character is 400, never cut; a
 * Transfer-Encoding other than one "chunked" is 501 before any body byte.
 * Connections: TCP at most max_conns in total and max_conns_per_ip per client
 * address; the Unix socket has its own budget; a request header must be
 * complete within header_timeout_s of connecting (or of the previous
 * response), and idle connections are cut after conn_timeout_s. A synchronous
 * invocation suspends its connection (no thread waits for it), so thousands
 * can be in flight at once.
 *
 * Next to hearth's own API (/v1/...) it serves the Lambda Invoke API under
 * /2015-03-31/ (lambda_api.h), authenticated with AWS Signature Version 4
 * and per-tenant access keys (awskeys.h) instead of bearer keys. Both reach
 * functions through one invoke path, so quotas, metering, the async queue and
 * dead letters are the same whichever API is used.
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
	int conn_timeout_s;          /* idle; default 30 */
	int header_timeout_s;        /* whole request header; default API_DEFAULT_HEADER_TIMEOUT_S */
	int max_conns;               /* TCP connections in total; default API_DEFAULT_MAX_CONNS */
	int max_conns_per_ip;        /* TCP connections per client address */
	int unix_max_conns;          /* Unix socket connections */
	int threads;
	bool allow_server_path_deploy; /* admin may deploy from a server path */
	int async_retries;           /* default 2 */
	int64_t async_backoff_ms;    /* first retry delay; doubles; default 1000 */
	int64_t async_max_age_ms;    /* default 6 hours */
	struct quota *quota;         /* admission control and metering */
	struct imagegc *imagegc;     /* image GC (imagegc.h); NULL = none */
	int host_capacity;           /* VM slots on this host (max_vms) */
	int unreserved_floor;        /* slots that reservations may not take */
	const char *ui_dir;          /* the web console's files (ui.h); NULL = no console */
	const char *aws_region;      /* the Lambda API's region (SigV4 scope, ARNs); default us-east-1 */
	int64_t disk_reserve_mb;     /* free space deploys leave on state_dir's file system, for
				      * invocation records; -1 = 5% of it, at most 1 GiB; 0 = none */
};

#define API_DEFAULT_AWS_REGION "us-east-1"

#define API_DEFAULT_HEADER_TIMEOUT_S 10
#define API_DEFAULT_MAX_CONNS 8192
#define API_DEFAULT_MAX_CONNS_PER_IP 1024
#define API_DEFAULT_UNIX_MAX_CONNS 1024

struct api;
struct async;
struct imagegc;

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
