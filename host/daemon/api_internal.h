/*
 * api_internal.h - what api.c shares with the other front end of the same
 * server, lambda_api.c (the Lambda Invoke API): the per-connection and
 * per-request state, response helpers, and the one invoke path both APIs use.
 * Not a public interface: only api.c and lambda_api.c include it.
 */
#ifndef HEARTH_DAEMON_API_INTERNAL_H
#define HEARTH_DAEMON_API_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#include "api.h"
#include "auth.h"
#include "quota.h"

/*
 * One per connection (MHD's socket context), for what libmicrohttpd does not
 * do itself: a deadline for a whole request header (its timeout is an idle
 * timeout, which a byte now and then defeats), and telling whether the URL or
 * a query argument decoded to a NUL or control character (it hands the
 * handler NUL-terminated strings, so "a%00b" would arrive as "a").
 */
struct conn {
	struct conn *prev, *next;
	int fd;
	int64_t header_since_ms; /* waiting for a request header since (monotonic); 0 = not */
	bool bad_escape;
	bool uri_too_long;
	char *raw_uri;           /* the current request's target as sent (Lambda API only: SigV4) */
};

struct api {
	struct api_config cfg;
	struct store *store;
	struct sched *sched;
	struct async *async;
	struct MHD_Daemon *tcp, *unx;
	char images_dir[512], tmp_dir[512];
	uint64_t disk_reserve;      /* bytes deploys leave free (api_config.disk_reserve_mb) */
	pthread_mutex_t code_mu;    /* a code storage check and its version's record, together */
	pthread_mutex_t conns_mu;   /* conns, and each conn's fd while it is listed */
	struct conn *conns;
	struct awskeys *awskeys;    /* AWS access keys for the Lambda API */
	struct ui *ui;              /* the web console (ui.h) */
	pthread_t sweeper;
	bool sweeper_started;
	int stopping;
};

struct req {
	struct api *api;
	struct MHD_Connection *conn;
	struct principal who;       /* authenticated at the header, before any body byte */
	char *body;
	size_t len, limit;
	bool too_large, io_error;
	int io_errno; /* why io_error: ENOSPC, EDQUOT... (ENOMEM for a body in memory) */
	int upload_fd;              /* a package upload streams to upload_path */
	char upload_path[600];
	struct invocation *inv;
	int inv_done;
	struct lambda_req *lam;     /* a Lambda API request (lambda_api.h), else NULL */
};

/* Sends a response; buf is malloc'd and handed to MHD. headers: name, value, ..., NULL. */
enum MHD_Result api_send_buf(struct MHD_Connection *c, unsigned status, const char *type, void *buf,
			     size_t len, const char *const *headers);
/* Sends j (its reference is taken) as JSON. */
enum MHD_Result api_send_json(struct MHD_Connection *c, unsigned status, json_t *j,
			      const char *const *headers);
const char *api_header(struct MHD_Connection *c, const char *name);
const char *api_query(struct MHD_Connection *c, const char *name);
struct conn *api_conn_of(struct MHD_Connection *c);

/* Metering headers of a finished invocation (name, value pairs appended to h at k). */
struct api_meter_bufs {
	char dur[32], billed[32], boot[32], init[32], ver[16], mem[32];
};
int api_meter_headers(const struct invocation *inv, struct api_meter_bufs *b, const char **h, int k);

enum api_invoke_mode { API_INVOKE_SYNC, API_INVOKE_EVENT, API_INVOKE_DRYRUN };
enum api_invoke_result {
	API_INVOKE_SUBMITTED,  /* sync: the connection is suspended; the result comes later */
	API_INVOKE_ANSWERED,   /* sync, run in this thread (sched_run_inline): answer with
				* api_respond_invocation now */
	API_INVOKE_QUEUED,     /* event stored durably (out->request_id) */
	API_INVOKE_CHECKED,    /* dry run: the function (version) exists */
	API_INVOKE_REFUSED,    /* out->status/code/message (and retry_after, reason on 429) */
};
struct api_invoke_out {
	unsigned status;
	const char *code;           /* hearth's error code */
	char message[256];
	int retry_after;
	enum quota_reason reason;   /* on a quota refusal */
	char request_id[64];
	int version;                /* the version found */
};

/*
 * The one invoke path of both APIs: looks the function version up for the
 * tenant (version 0 = latest), then queues the event, or admits the call
 * (quotas) and hands it to the scheduler with the request's body as payload.
 * When it returns API_INVOKE_SUBMITTED, r->inv is set and the request's
 * respond step runs when the invocation is done (lambda_respond for a Lambda
 * request); API_INVOKE_ANSWERED means it is done already (run in this thread):
 * the caller answers at once with api_respond_invocation.
 */
enum api_invoke_result api_invoke_start(struct req *r, int64_t tenant_id, const char *name,
					int version, enum api_invoke_mode mode,
					struct api_invoke_out *out);

/* The answer to a finished sync invocation (r->inv): hearth's or, for r->lam, Lambda's. */
enum MHD_Result api_respond_invocation(struct req *r);

#endif
