/*
 * api.c - the HTTP API of hearthd; see api.h.
 */
#include "api.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <uuid/uuid.h>

#include "api_internal.h"
#include "async.h"
#include "awskeys.h"
#include "auth.h"
#include "image.h"
#include "imagegc.h"
#include "lambda_api.h"
#include "log.h"
#include "metrics.h"
#include "quota.h"
#include "ui.h"

#define SMALL_BODY_LIMIT (1u << 20)
#define MIN_MEMORY_MB 128
#define MAX_MEMORY_MB 10240
#define MAX_TIMEOUT_MS 900000u
#define MAX_ENV_BYTES 4096
#define MAX_PATH_LEN 511         /* decoded path; longer is 414, never cut */
#define MAX_URI_LEN 4096         /* raw path and query */
#define MAX_RESERVED 1000000     /* far above any host's VM slots; keeps sums in range */

/* ---- responses ------------------------------------------------------------- */

static enum MHD_Result send_buf(struct MHD_Connection *c, unsigned status, const char *type,
				void *buf, size_t len, const char *const *headers)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(buf);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	for (size_t i = 0; headers && headers[i]; i += 2)
		MHD_add_response_header(r, headers[i], headers[i + 1]);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *j,
				 const char *const *headers)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	size_t n;

	json_decref(j);
	if (!s)
		return MHD_NO;
	n = strlen(s);
	s = realloc(s, n + 2);
	s[n] = '\n';
	return send_buf(c, status, "application/json", s, n + 1, headers);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *code,
				  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *code,
				  const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_t *m = json_string(msg);
	return send_json(c, status,
			 json_pack("{s:{s:s,s:o}}", "error", "code", code, "message",
				   m ? m : json_string("(message not UTF-8)")),
			 NULL);
}

/*
 * The host could not store something (its disk, not the client, is at fault):
 * 507 InsufficientStorage when the disk is full, 500 StorageError otherwise.
 */
static enum MHD_Result send_storage_error(struct MHD_Connection *c, int e, const char *what)
{
	if (e == ENOSPC || e == EDQUOT)
		return send_error(c, 507, "InsufficientStorage",
				  "%s: the host's disk is full; the operator must free space", what);
	return send_error(c, 500, "StorageError", "%s: %s", what, strerror(e));
}

/*
 * Deploys must leave a->disk_reserve bytes free on the state directory's file
 * system, so that a tenant's images never take the room invocation records
 * need. NULL if need more bytes fit, else why not (for a 507).
 */
static const char *disk_short(struct api *a, uint64_t need, char *why, size_t len)
{
	struct statvfs v;

	if (!a->disk_reserve || statvfs(a->cfg.state_dir, &v) != 0)
		return NULL;
	uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize;
	if (avail >= need && avail - need >= a->disk_reserve)
		return NULL;
	snprintf(why, len, "the host keeps %llu MiB of its disk free for invocation records, and "
		 "%llu MiB are free: no room for a deploy now; the operator must free space",
		 (unsigned long long)(a->disk_reserve >> 20), (unsigned long long)(avail >> 20));
	return why;
}

/* ---- helpers ------------------------------------------------------------------ */

static bool valid_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

static const char *header(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static const char *query(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

enum MHD_Result api_send_buf(struct MHD_Connection *c, unsigned status, const char *type, void *buf,
			     size_t len, const char *const *headers)
{
	return send_buf(c, status, type, buf, len, headers);
}

enum MHD_Result api_send_json(struct MHD_Connection *c, unsigned status, json_t *j,
			      const char *const *headers)
{
	return send_json(c, status, j, headers);
}

const char *api_header(struct MHD_Connection *c, const char *name)
{
	return header(c, name);
}

const char *api_query(struct MHD_Connection *c, const char *name)
{
	return query(c, name);
}

/*
 * Parses a query argument of decimal digits only, 0..max: -1 if absent, -2 if
 * malformed or out of range (never truncated to a smaller type).
 */
static long long query_int(struct MHD_Connection *c, const char *name, long long max)
{
	const char *v = query(c, name);
	char *end;
	long long n;

	if (!v)
		return -1;
	if (v[0] < '0' || v[0] > '9')
		return -2;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno || *end || n < 0 || n > max)
		return -2;
	return n;
}

static void new_request_id(char out[64])
{
	uuid_t u;

	uuid_generate_random(u);
	uuid_unparse_lower(u, out);
}

/* ---- invocation results ------------------------------------------------------- */

const char *api_status_name(const struct invocation *inv)
{
	if (inv->outcome != INV_OK)
		return "PlatformError";
	switch (inv->res.status) {
	case AGENT_INVOKE_OK: return "Success";
	case AGENT_INVOKE_FUNCTION_ERROR: return "FunctionError";
	case AGENT_INVOKE_CRASHED: return "Crashed";
	case AGENT_INVOKE_TIMEOUT: return "Timeout";
	case AGENT_INVOKE_RESPONSE_TOO_LARGE: return "ResponseTooLarge";
	case AGENT_INVOKE_INIT_FAILED: return "InitError";
	default: return "PlatformError";
	}
}

void api_record_invocation(struct store *store, struct invocation *inv, const char *kind,
			   int attempt, struct inv_record *rec_out)
{
	struct inv_record rec = {
		.request_id = inv->request_id,
		.attempt = attempt,
		.tenant_id = inv->ver.tenant_id,
		.version_id = inv->ver.id,
		.function = inv->ver.name,
		.version = inv->ver.version,
		.kind = kind,
		.start_us = inv->start_wall_us,
		.end_us = inv->end_wall_us,
		.memory_mb = inv->ver.memory_mb,
		.cold = inv->cold,
		.cold_path = inv->cold_path ? inv->cold_path : "boot",
		.init_ms = inv->init_us / 1000,
		.boot_ms = inv->boot_us / 1000,
		.status = api_status_name(inv),
	};
	char line[512];

	if (inv->outcome == INV_OK) {
		rec.duration_us = inv->res.duration_us;
		rec.billed_ms = quota_billed_ms(inv->res.duration_us);
		rec.mb_ms = quota_mb_ms(inv->ver.memory_mb, rec.billed_ms);
		rec.max_rss_kb = inv->res.max_rss_kb;
		rec.error = inv->res.error;
		rec.logs = inv->res.logs;
		rec.logs_len = inv->res.logs_len;
	} else {
		rec.error = inv->error;
	}
	if (rec_out) {
		*rec_out = rec;
		return; /* the caller commits it (async: together with the queue update) */
	}
	if (store_invocation_add(store, &rec))
		hlog_error("api", "could not record invocation %s", inv->request_id);
	snprintf(line, sizeof(line),
		 "REPORT RequestId: %s Duration: %.2f ms Billed Duration: %llu ms Memory Size: %u MB"
		 " Max Memory Used: %llu MB%s",
		 inv->request_id, rec.duration_us / 1000.0, (unsigned long long)rec.billed_ms,
		 rec.memory_mb, (unsigned long long)((rec.max_rss_kb + 1023) / 1024), "");
	if (inv->cold) {
		size_t n = strlen(line);

		snprintf(line + n, sizeof(line) - n, " Init Duration: %.2f ms",
			 (inv->init_us + inv->boot_us) / 1000.0);
	}
	hlog_event("info", "report", inv->request_id,
		   json_pack("{s:s,s:i,s:s,s:s,s:I,s:I,s:b}", "function", inv->ver.name, "version",
			     inv->ver.version, "kind", kind, "status", rec.status, "duration_us",
			     (json_int_t)rec.duration_us, "billed_ms", (json_int_t)rec.billed_ms,
			     "cold_start", inv->cold),
		   "%s", line);
}

/* A sync invocation has its outcome: record it (durably, before any answer) and free its slot. */
static void sync_finish(struct invocation *inv)
{
	struct req *r = inv->arg;
	uint64_t mb_ms = inv->outcome == INV_OK ?
		quota_mb_ms(inv->ver.memory_mb, quota_billed_ms(inv->res.duration_us)) : 0;

	api_record_invocation(r->api->store, inv, "sync", 1, NULL);
	quota_release(r->api->cfg.quota, inv->ver.tenant_id, inv->ver.function_id,
		      inv->ver.memory_mb, mb_ms);
	__atomic_store_n(&r->inv_done, 1, __ATOMIC_RELEASE);
}

static void sync_done(struct invocation *inv)
{
	struct req *r = inv->arg;

	sync_finish(inv);
	MHD_resume_connection(r->conn);
}

/* sched_run_inline could not wait for the answer: the result comes as for sched_submit. */
static void sync_will_wait(struct invocation *inv)
{
	struct req *r = inv->arg;

	MHD_suspend_connection(r->conn);
}

static void free_invocation(struct invocation *inv)
{
	if (!inv)
		return;
	agent_result_free(&inv->res);
	fn_version_free(&inv->ver);
	free(inv);
}

int api_meter_headers(const struct invocation *inv, struct api_meter_bufs *b, const char **h, int k)
{
	const char *path = inv->cold_path ? inv->cold_path : "boot";

	snprintf(b->dur, sizeof(b->dur), "%.3f", inv->res.duration_us / 1000.0);
	snprintf(b->billed, sizeof(b->billed), "%llu",
		 (unsigned long long)quota_billed_ms(inv->res.duration_us));
	snprintf(b->mem, sizeof(b->mem), "%llu", (unsigned long long)((inv->res.max_rss_kb + 1023) / 1024));
	h[k++] = "X-Hearth-Duration-Ms";
	h[k++] = b->dur;
	h[k++] = "X-Hearth-Billed-Duration-Ms";
	h[k++] = b->billed;
	h[k++] = "X-Hearth-Max-Memory-Used-Mb";
	h[k++] = b->mem;
	h[k++] = "X-Hearth-Cold-Start";
	h[k++] = inv->cold ? "true" : "false";
	if (inv->cold) {
		snprintf(b->boot, sizeof(b->boot), "%.3f", inv->boot_us / 1000.0);
		snprintf(b->init, sizeof(b->init), "%.3f", inv->init_us / 1000.0);
		h[k++] = "X-Hearth-Cold-Start-Path";
		h[k++] = path;
		h[k++] = strcmp(path, "restore") == 0 ? "X-Hearth-Restore-Ms" : "X-Hearth-Boot-Ms";
		h[k++] = b->boot;
		h[k++] = "X-Hearth-Init-Ms";
		h[k++] = b->init;
	}
	return k;
}

enum MHD_Result api_respond_invocation(struct req *r)
{
	struct invocation *inv = r->inv;
	struct api_meter_bufs b;
	const char *h[32];
	int k = 0;

	if (r->lam)
		return lambda_respond(r);
	snprintf(b.ver, sizeof(b.ver), "%d", inv->ver.version);
	h[k++] = "X-Hearth-Request-Id";
	h[k++] = inv->request_id;
	h[k++] = "X-Hearth-Function-Version";
	h[k++] = b.ver;
	if (inv->outcome != INV_OK) {
		if (inv->http_status == 429) {
			h[k++] = "Retry-After";
			h[k++] = "1";
		}
		h[k] = NULL;
		json_t *m = json_string(inv->error);
		return send_json(r->conn, (unsigned)inv->http_status,
				 json_pack("{s:{s:s,s:o,s:s}}", "error", "code", inv->error_code,
					   "message", m ? m : json_string("platform error"),
					   "request_id", inv->request_id),
				 h);
	}
	k = api_meter_headers(inv, &b, h, k);
	if (inv->res.status != AGENT_INVOKE_OK) {
		/* A function error: the call worked, the function failed (as Lambda reports it). */
		json_t *out = json_stringn((const char *)inv->res.body, inv->res.body_len);
		json_t *logs = json_stringn((const char *)inv->res.logs, inv->res.logs_len);
		json_t *msg = json_string(inv->res.error ? inv->res.error : "");

		h[k++] = "X-Hearth-Function-Error";
		h[k++] = api_status_name(inv);
		h[k] = NULL;
		return send_json(r->conn, 200,
				 json_pack("{s:s,s:o,s:i,s:i,s:o,s:o,s:s}", "errorType",
					   api_status_name(inv), "errorMessage",
					   msg ? msg : json_string(""), "exitCode", inv->res.exit_code,
					   "signal", inv->res.signal, "output",
					   out ? out : json_null(), "logs", logs ? logs : json_null(),
					   "request_id", inv->request_id),
				 h);
	}
	h[k] = NULL;
	void *body = inv->res.body;

	inv->res.body = NULL; /* handed to MHD, which frees it */
	return send_buf(r->conn, 200, "application/octet-stream", body ? body : strdup(""),
			body ? inv->res.body_len : 0, h);
}

/* ---- handlers ------------------------------------------------------------------- */

enum api_invoke_result api_invoke_start(struct req *r, int64_t tenant_id, const char *name,
					int version, enum api_invoke_mode mode,
					struct api_invoke_out *out)
{
	struct api *a = r->api;
	struct invocation *inv;
	enum quota_reason why;
	int rc, retry = 0;

	memset(out, 0, sizeof(*out));
	inv = calloc(1, sizeof(*inv));
	if (!inv) {
		out->status = 500;
		out->code = "OutOfMemory";
		snprintf(out->message, sizeof(out->message), "out of memory");
		return API_INVOKE_REFUSED;
	}
	if ((rc = store_version_get(a->store, tenant_id, name, version, &inv->ver)) != 0 &&
	    rc != -ENOENT) {
		free(inv);
		out->status = 503;
		out->code = "StoreUnavailable";
		snprintf(out->message, sizeof(out->message), "the state store cannot be read now");
		return API_INVOKE_REFUSED;
	}
	if (rc) {
		free(inv);
		out->status = 404;
		out->code = "FunctionNotFound";
		if (version > 0)
			snprintf(out->message, sizeof(out->message), "function %s version %d not found",
				 name, version);
		else
			snprintf(out->message, sizeof(out->message), "function %s not found", name);
		return API_INVOKE_REFUSED;
	}
	out->version = inv->ver.version;
	new_request_id(inv->request_id);
	snprintf(out->request_id, sizeof(out->request_id), "%s", inv->request_id);
	if (mode == API_INVOKE_DRYRUN) {
		free_invocation(inv);
		return API_INVOKE_CHECKED;
	}
	size_t held = store_records_held(a->store);
	if (held) {
		free_invocation(inv);
		out->status = 507;
		out->code = "InsufficientStorage";
		snprintf(out->message, sizeof(out->message),
			 "hearthd cannot record invocations now: its state disk refuses writes (%zu "
			 "records wait in memory); try again later", held);
		return API_INVOKE_REFUSED;
	}
	if (mode == API_INVOKE_EVENT) {
		rc = store_async_put(a->store, inv->request_id, tenant_id, inv->ver.id, r->body, r->len,
				     wall_us() / 1000);
		free_invocation(inv);
		if (rc) {
			out->status = 500;
			out->code = "QueueUnavailable";
			snprintf(out->message, sizeof(out->message), "could not queue the event");
			return API_INVOKE_REFUSED;
		}
		metrics_async("queued");
		async_kick(a->async);
		return API_INVOKE_QUEUED;
	}
	why = quota_admit(a->cfg.quota, tenant_id, inv->ver.function_id, inv->ver.memory_mb, &retry);
	if (why != QUOTA_OK) {
		free_invocation(inv);
		metrics_throttle_reason(quota_reason_code(why));
		out->status = 429;
		out->code = quota_reason_code(why);
		out->reason = why;
		out->retry_after = retry;
		snprintf(out->message, sizeof(out->message),
			 "the tenant's limit refuses this invocation now");
		return API_INVOKE_REFUSED;
	}
	inv->payload = (const uint8_t *)r->body;
	inv->payload_len = r->len;
	inv->done = sync_done;
	inv->will_wait = sync_will_wait;
	inv->arg = r;
	r->inv = inv;
	/* A warm VM is idle and the function is fast: run it in this thread. */
	switch (sched_run_inline(a->sched, inv)) {
	case SCHED_INLINE_DONE:
		sync_finish(inv);
		return API_INVOKE_ANSWERED;
	case SCHED_INLINE_PENDING:
		return API_INVOKE_SUBMITTED; /* suspended by sync_will_wait */
	case SCHED_INLINE_NONE:
		break;
	}
	/* Suspend first: the result may come back before sched_submit returns. */
	MHD_suspend_connection(r->conn);
	sched_submit(a->sched, inv);
	return API_INVOKE_SUBMITTED;
}

static enum MHD_Result h_invoke(struct req *r, const struct principal *who, const char *name)
{
	struct MHD_Connection *c = r->conn;
	const char *type = header(c, "X-Hearth-Invocation-Type");
	long long version = query_int(c, "version", INT_MAX);
	enum api_invoke_mode mode = API_INVOKE_SYNC;
	struct api_invoke_out o;

	if (version == -2)
		return send_error(c, 400, "InvalidParameter", "version must be an integer 1..%d", INT_MAX);
	if (type && strcmp(type, "Event") == 0)
		mode = API_INVOKE_EVENT;
	else if (type && strcmp(type, "RequestResponse") != 0)
		return send_error(c, 400, "InvalidParameter",
				  "X-Hearth-Invocation-Type must be RequestResponse or Event");
	switch (api_invoke_start(r, who->tenant_id, name, version > 0 ? (int)version : 0, mode, &o)) {
	case API_INVOKE_ANSWERED:
		return api_respond_invocation(r);
	case API_INVOKE_SUBMITTED:
		return MHD_YES;
	case API_INVOKE_QUEUED: {
		char loc[96];
		const char *h[] = { "X-Hearth-Request-Id", o.request_id, "Location", loc, NULL };

		snprintf(loc, sizeof(loc), "/v1/invocations/%s", o.request_id);
		return send_json(c, 202,
				 json_pack("{s:s,s:s,s:i}", "request_id", o.request_id, "function",
					   name, "version", o.version),
				 h);
	}
	case API_INVOKE_CHECKED:
		break;
	case API_INVOKE_REFUSED:
		if (o.status == 429) {
			char ra[16];
			const char *h[] = { "Retry-After", ra, NULL };

			snprintf(ra, sizeof(ra), "%d", o.retry_after);
			return send_json(c, 429,
					 json_pack("{s:{s:s,s:s,s:i}}", "error", "code", o.code,
						   "message", o.message, "retry_after_s", o.retry_after),
					 h);
		}
		return send_error(c, o.status, o.code, "%s", o.message);
	}
	return send_error(c, 500, "InternalError", "unexpected invoke result");
}

static int env_bytes(const struct hearth_manifest *m)
{
	int n = 0;

	for (size_t i = 0; i < m->nenv; i++)
		n += (int)strlen(m->env[i]) + 1;
	return n;
}

static enum MHD_Result h_deploy(struct req *r, const struct principal *who, const char *name)
{
	struct api *a = r->api;
	struct MHD_Connection *c = r->conn;
	const char *ctype = header(c, "Content-Type");
	char tmp[600] = "", err[512];
	const char *package;
	struct hearth_image img = { 0 };
	struct hearth_image_opts opts = { 0 };
	struct fn_version v = { 0 };
	long long mem = query_int(c, "memory_mb", UINT32_MAX);
	long long tmo = query_int(c, "timeout_ms", UINT32_MAX);
	const char *engine = query(c, "engine");
	json_t *args, *env;
	struct tenant_limits lim; /* read once, below */
	bool code_locked = false;
	int rc;

	if (!valid_name(name))
		return send_error(c, 400, "InvalidName",
				  "function names are 1-64 characters of [A-Za-z0-9_-]");
	if (mem == -2 || tmo == -2)
		return send_error(c, 400, "InvalidParameter",
				  "memory_mb and timeout_ms are integers (%d-%d MB, 1-%u ms)",
				  MIN_MEMORY_MB, MAX_MEMORY_MB, MAX_TIMEOUT_MS);
	if (mem >= 0 && (mem < MIN_MEMORY_MB || mem > MAX_MEMORY_MB))
		return send_error(c, 400, "InvalidMemory", "memory_mb must be %d to %d, got %lld",
				  MIN_MEMORY_MB, MAX_MEMORY_MB, mem);
	if (tmo >= 0 && (tmo < 1 || tmo > MAX_TIMEOUT_MS))
		return send_error(c, 400, "InvalidTimeout", "timeout_ms must be 1 to %u, got %lld",
				  MAX_TIMEOUT_MS, tmo);
	{
		int64_t nfn = 0;
		json_t *existing = store_function_get(a->store, who->tenant_id, name);

		bool is_new = existing == NULL;

		json_decref(existing);
		if (store_limits_get(a->store, who->tenant_id, &lim))
			return send_error(c, 503, "StoreUnavailable",
					  "the tenant's limits cannot be read now");
		if (lim.max_package_bytes > 0 && (int64_t)r->len > lim.max_package_bytes)
			return send_error(c, 413, "PackageTooLarge",
					  "the package is %zu bytes; this tenant's limit is %lld", r->len,
					  (long long)lim.max_package_bytes);
		store_function_count(a->store, who->tenant_id, &nfn);
		if (is_new && lim.max_functions > 0 && nfn >= lim.max_functions)
			return send_error(c, 403, "FunctionLimitExceeded",
					  "this tenant may have at most %lld functions",
					  (long long)lim.max_functions);
	}
	if (ctype && strncmp(ctype, "application/json", 16) == 0) {
		/* An admin deploys from a path on the server. */
		json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
		const char *path = json_string_value(json_object_get(j, "path"));

		if (!who->admin || !a->cfg.allow_server_path_deploy) {
			json_decref(j);
			return send_error(c, 403, "Forbidden",
					  "only the admin may deploy from a server path");
		}
		if (!path || path[0] != '/') {
			json_decref(j);
			return send_error(c, 400, "InvalidRequest",
					  "body must be {\"path\": \"/absolute/package\"}");
		}
		snprintf(tmp, sizeof(tmp), "%s", path);
		json_decref(j);
		package = tmp;
	} else {
		/* The upload was streamed to disk as it came (on_request); removed once read. */
		if (r->len == 0 || r->upload_fd < 0)
			return send_error(c, 400, "EmptyPackage",
					  "send the function package (.tar.gz) as the request body");
		close(r->upload_fd);
		r->upload_fd = -1;
		package = r->upload_path;
	}
	/* The image holds the package unpacked and the agent: room for about that. */
	struct stat ast;
	uint64_t need = r->len * 4 + (stat(a->cfg.agent_bin, &ast) == 0 ? (uint64_t)ast.st_size : 0);
	char dwhy[256];
	if (disk_short(a, need, dwhy, sizeof(dwhy))) {
		if (package == r->upload_path) {
			unlink(r->upload_path);
			r->upload_path[0] = 0;
		}
		return send_error(c, 507, "InsufficientStorage", "%s", dwhy);
	}
	opts.package = package;
	opts.agent = a->cfg.agent_bin;
	opts.busybox = a->cfg.busybox;
	opts.out_dir = a->images_dir;
	/* From the image file's creation until its version exists: no image GC here. */
	imagegc_deploy_begin(a->cfg.imagegc);
	rc = hearth_image_build(&opts, &img, err, sizeof(err));
	if (package == r->upload_path) {
		/* Read: gone before the answer, not after it (on_completed runs later). */
		unlink(r->upload_path);
		r->upload_path[0] = 0;
	}
	if (rc == HEARTH_IMAGE_HOST_FAULT) {
		int e = errno;

		imagegc_deploy_end(a->cfg.imagegc);
		hlog_error("api", "deploy of %s: the image could not be built: %s", name, err);
		return send_storage_error(c, e, "the host could not build the image");
	}
	if (rc) {
		imagegc_deploy_end(a->cfg.imagegc);
		return send_error(c, 400, "InvalidPackage", "%s", err);
	}
	if (mem >= 0)
		img.manifest.memory_mb = (uint32_t)mem;
	if (tmo >= 0)
		img.manifest.timeout_ms = (uint32_t)tmo;
	if (img.manifest.memory_mb < MIN_MEMORY_MB || img.manifest.memory_mb > MAX_MEMORY_MB) {
		rc = send_error(c, 400, "InvalidMemory", "memory_mb must be %d to %d, got %u",
				MIN_MEMORY_MB, MAX_MEMORY_MB, img.manifest.memory_mb);
		goto out;
	}
	if (img.manifest.timeout_ms < 1 || img.manifest.timeout_ms > MAX_TIMEOUT_MS) {
		rc = send_error(c, 400, "InvalidTimeout", "timeout_ms must be 1 to %u, got %u",
				MAX_TIMEOUT_MS, img.manifest.timeout_ms);
		goto out;
	}
	if (env_bytes(&img.manifest) > MAX_ENV_BYTES) {
		rc = send_error(c, 400, "EnvTooLarge", "env takes %d bytes; the limit is %d",
				env_bytes(&img.manifest), MAX_ENV_BYTES);
		goto out;
	}
	if (!engine)
		engine = "auto";
	if (!sched_engine_for(a->sched, engine)) {
		rc = send_error(c, 400, "EngineUnavailable",
				"engine '%s' is not enabled on this host (auto, builtin, libvirt, process)",
				engine);
		goto out;
	}
	v.tenant_id = who->tenant_id;
	snprintf(v.name, sizeof(v.name), "%s", name);
	snprintf(v.image_sha256, sizeof(v.image_sha256), "%s", img.sha256);
	snprintf(v.image_path, sizeof(v.image_path), "%s", img.path);
	snprintf(v.handler, sizeof(v.handler), "%s", img.manifest.handler);
	snprintf(v.init, sizeof(v.init), "%s", img.manifest.init ? img.manifest.init : "");
	snprintf(v.engine, sizeof(v.engine), "%s", engine);
	snprintf(v.runtime, sizeof(v.runtime), "%s", img.manifest.runtime ? "provided" : "");
	v.memory_mb = img.manifest.memory_mb;
	v.timeout_ms = img.manifest.timeout_ms;
	v.package_bytes = img.size;
	args = json_array();
	for (size_t i = 0; i < img.manifest.nargs; i++)
		json_array_append_new(args, json_string(img.manifest.args[i]));
	env = json_object();
	for (size_t i = 0; i < img.manifest.nenv; i++) {
		char *kv = strdup(img.manifest.env[i]), *eq = kv ? strchr(kv, '=') : NULL;

		if (eq) {
			*eq = 0;
			json_object_set_new(env, kv, json_string(eq + 1));
		}
		free(kv);
	}
	/* Runtime mode: the manifest's "handler" is the Lambda handler setting, _HANDLER. */
	if (img.manifest.runtime && !json_object_get(env, "_HANDLER"))
		json_object_set_new(env, "_HANDLER", json_string(img.manifest.lambda_handler ?
								  img.manifest.lambda_handler : ""));
	v.args_json = json_dumps(args, JSON_COMPACT);
	v.env_json = json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(args);
	json_decref(env);
	if (lim.max_code_bytes > 0) {
		/* The tenant's code storage, with this image unless one of its versions has it. */
		int64_t used;
		bool has;

		pthread_mutex_lock(&a->code_mu);
		code_locked = true;
		if (store_code_bytes(a->store, who->tenant_id, img.sha256, &used, &has)) {
			fn_version_free(&v);
			rc = send_error(c, 503, "StoreUnavailable", "the state store cannot be read now");
			goto out;
		}
		if (!has && used + (int64_t)img.size > lim.max_code_bytes) {
			fn_version_free(&v);
			rc = send_error(c, 403, "CodeStorageExceeded",
					"this tenant's versions take %lld bytes of code storage, and this "
					"image (%llu bytes) would pass its limit of %lld; delete functions "
					"to make room", (long long)used, (unsigned long long)img.size,
					(long long)lim.max_code_bytes);
			goto out;
		}
	}
	if (store_version_add(a->store, &v)) {
		fn_version_free(&v);
		rc = send_error(c, 500, "StorageError", "could not record the version");
		goto out;
	}
	hlog_info("api", "deployed %s/%s version %d (image %s)", who->tenant, name, v.version,
		  img.sha256);
	rc = send_json(c, 201,
		       json_pack("{s:s,s:i,s:s,s:s,s:i,s:i,s:s,s:I}", "name", name, "version",
				 v.version, "image_sha256", img.sha256, "handler", v.handler,
				 "memory_mb", v.memory_mb, "timeout_ms", v.timeout_ms, "engine",
				 v.engine, "image_bytes", (json_int_t)img.size),
		       NULL);
	fn_version_free(&v);
out:
	if (code_locked)
		pthread_mutex_unlock(&a->code_mu);
	/* A refused deploy's image stays until the next sweep finds no version using it. */
	imagegc_deploy_end(a->cfg.imagegc);
	hearth_image_free(&img);
	return rc;
}

/*
 * PUT /v1/functions/{f}/config {"provisioned": N, "reserved": N}: either or
 * both. A reservation must fit in the tenant's concurrency (with the other
 * reservations) and in the host's capacity minus the unreserved floor;
 * provisioned VMs count against the tenant's concurrency (and the
 * reservation, if any) and its memory.
 */
static enum MHD_Result h_config(struct req *r, const struct principal *who, const char *name)
{
	struct api *a = r->api;
	struct MHD_Connection *c = r->conn;
	json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
	json_t *jp = json_object_get(j, "provisioned"), *jr = json_object_get(j, "reserved");
	json_int_t prov = json_integer_value(jp), res = json_integer_value(jr);
	bool has_p = jp != NULL, has_r = jr != NULL;
	bool bad = !json_is_object(j) || (!has_p && !has_r) || (has_p && !json_is_integer(jp)) ||
		   (has_r && !json_is_integer(jr)) || prov < 0 || prov > 1000 || res < 0 ||
		   res > MAX_RESERVED;
	struct tenant_limits lim;
	struct fn_version v;
	json_t *cur;

	json_decref(j);
	if (bad)
		return send_error(c, 400, "InvalidRequest",
				  "body must be {\"provisioned\": 0..1000, \"reserved\": 0..%d}",
				  MAX_RESERVED);
	if (store_version_get(a->store, who->tenant_id, name, 0, &v))
		return send_error(c, 404, "FunctionNotFound", "function %s not found", name);
	cur = store_function_get(a->store, who->tenant_id, name);
	if (!has_p)
		prov = json_integer_value(json_object_get(cur, "provisioned"));
	if (!has_r)
		res = json_integer_value(json_object_get(cur, "reserved"));
	json_decref(cur);
	if (store_limits_get(a->store, who->tenant_id, &lim)) {
		fn_version_free(&v);
		return send_error(c, 503, "StoreUnavailable", "the tenant's limits cannot be read now");
	}
	if (has_r && res > 0) {
		int64_t tenant_others = store_reserved_sum(a->store, who->tenant_id, name);
		int64_t host_others = store_reserved_sum(a->store, 0, NULL) -
				      store_reserved_sum(a->store, who->tenant_id, NULL) + tenant_others;
		int64_t tenant_sum, host_sum;
		/* Stored sums come from the database; an overflow counts as "too large". */
		bool tenant_over = __builtin_add_overflow(tenant_others, (int64_t)res, &tenant_sum);
		bool host_over = __builtin_add_overflow(host_others, (int64_t)res, &host_sum);

		if (lim.max_concurrency > 0 && (tenant_over || tenant_sum > lim.max_concurrency)) {
			fn_version_free(&v);
			return send_error(c, 409, "ReservationTooLarge",
					  "reservations of this tenant would be %lld, over its concurrency"
					  " limit of %lld", tenant_over ? LLONG_MAX : (long long)tenant_sum,
					  (long long)lim.max_concurrency);
		}
		if (host_over || host_sum > a->cfg.host_capacity - a->cfg.unreserved_floor) {
			fn_version_free(&v);
			return send_error(c, 409, "ReservationTooLarge",
					  "reservations on this host would be %lld; at most %d of its %d"
					  " VM slots may be reserved", host_over ? LLONG_MAX : (long long)host_sum,
					  a->cfg.host_capacity - a->cfg.unreserved_floor,
					  a->cfg.host_capacity);
		}
	}
	if (prov > 0 && ((lim.max_concurrency > 0 && prov > lim.max_concurrency) ||
			 (res > 0 && prov > res) ||
			 (lim.max_memory_mb > 0 && prov * (int64_t)v.memory_mb > lim.max_memory_mb))) {
		fn_version_free(&v);
		return send_error(c, 409, "ProvisionedExceedsLimits",
				  "%lld provisioned VMs of %u MB exceed the tenant's concurrency,"
				  " memory or this function's reservation", (long long)prov, v.memory_mb);
	}
	fn_version_free(&v);
	if ((has_r && store_function_set_reserved(a->store, who->tenant_id, name, res)) ||
	    (has_p && store_function_set_provisioned(a->store, who->tenant_id, name, (int)prov)))
		return send_error(c, 500, "StorageError", "could not store the configuration");
	quota_invalidate(a->cfg.quota, who->tenant_id);
	sched_reconcile(a->sched);
	return send_json(c, 200, json_pack("{s:s,s:I,s:I}", "name", name, "provisioned", prov,
					   "reserved", res), NULL);
}

static enum MHD_Result h_function(struct req *r, const struct principal *who, const char *method,
				  const char *name, const char *sub)
{
	struct api *a = r->api;
	struct MHD_Connection *c = r->conn;

	if (!sub && strcmp(method, "POST") == 0)
		return h_deploy(r, who, name);
	if (!sub && strcmp(method, "GET") == 0) {
		json_t *f = store_function_get(a->store, who->tenant_id, name);

		if (!f)
			return send_error(c, 404, "FunctionNotFound", "function %s not found", name);
		return send_json(c, 200, f, NULL);
	}
	if (!sub && strcmp(method, "DELETE") == 0) {
		int64_t *ids;
		size_t n;

		if (store_function_delete(a->store, who->tenant_id, name, &ids, &n))
			return send_error(c, 404, "FunctionNotFound", "function %s not found", name);
		sched_drop_versions(a->sched, ids, n);
		free(ids);
		imagegc_kick(a->cfg.imagegc); /* its images, unless other versions use them */
		return send_json(c, 200, json_pack("{s:s,s:b}", "name", name, "deleted", 1), NULL);
	}
	if (sub && strcmp(sub, "invoke") == 0 && strcmp(method, "POST") == 0)
		return h_invoke(r, who, name);
	if (sub && strcmp(sub, "logs") == 0 && strcmp(method, "GET") == 0) {
		long long limit = query_int(c, "limit", 1000);

		if (limit == -2)
			return send_error(c, 400, "InvalidParameter", "limit must be 1..1000");
		return send_json(c, 200,
				 json_pack("{s:o}", "invocations",
					   store_invocation_logs(a->store, who->tenant_id, name,
								 limit > 0 ? (int)limit : 20)),
				 NULL);
	}
	if (sub && strcmp(sub, "config") == 0 && strcmp(method, "PUT") == 0)
		return h_config(r, who, name);
	if (sub && strcmp(sub, "prewarm") == 0 && strcmp(method, "POST") == 0) {
		struct fn_version v;
		long long count = query_int(c, "count", 100);
		struct hearth_engine *e;
		int started;

		if (count == -2)
			return send_error(c, 400, "InvalidParameter", "count must be 1..100");
		if (store_version_get(a->store, who->tenant_id, name, 0, &v))
			return send_error(c, 404, "FunctionNotFound", "function %s not found", name);
		struct sched_stats ss;
		bool clones;

		e = sched_engine_for(a->sched, v.engine);
		clones = e && (hearth_engine_caps(e) & HEARTH_ENGINE_CAP_CLONE);
		started = sched_prewarm(a->sched, &v, count > 0 ? (int)count : 1);
		sched_stats(a->sched, v.id, &ss);
		json_t *j = json_pack("{s:s,s:i,s:s,s:b,s:i,s:s}", "name", name, "version", v.version,
				      "engine", e ? hearth_engine_name(e) : v.engine, "snapshot",
				      ss.snapshot, "started_vms", started, "note",
				      clones ? "warm VMs start now; the first one snapshots itself once"
					       " Ready and idle, and later cold starts restore it" :
					       "this engine cannot clone snapshots: prewarm boots warm"
					       " VMs that serve the next invocations without a cold start");
		fn_version_free(&v);
		return send_json(c, 202, j, NULL);
	}
	return send_error(c, 404, "NotFound", "no such endpoint");
}

static enum MHD_Result h_tenants(struct req *r, const char *method, const char *tname,
				 const char *sub, const char *key_id)
{
	struct api *a = r->api;
	struct MHD_Connection *c = r->conn;
	char key[AUTH_KEY_LEN + 1], id[17];
	int64_t tid;
	int rc;

	if (!tname && strcmp(method, "GET") == 0)
		return send_json(c, 200, json_pack("{s:o}", "tenants", store_tenant_list(a->store)),
				 NULL);
	if (!tname && strcmp(method, "POST") == 0) {
		json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
		char name[80];
		const char *n = json_string_value(json_object_get(j, "name"));

		snprintf(name, sizeof(name), "%s", n ? n : "");
		json_decref(j);
		if (!valid_name(name))
			return send_error(c, 400, "InvalidName",
					  "body must be {\"name\": \"...\"}, 1-64 of [A-Za-z0-9_-]");
		rc = store_tenant_create(a->store, name, &tid);
		if (rc == -EEXIST)
			return send_error(c, 409, "TenantExists", "tenant %s already exists", name);
		if (rc || auth_key_create(a->store, tid, key, id))
			return send_error(c, 500, "StorageError", "could not create the tenant");
		hlog_info("api", "created tenant %s", name);
		return send_json(c, 201, json_pack("{s:s,s:s,s:s}", "name", name, "key_id", id,
						   "api_key", key), NULL);
	}
	if (!tname)
		return send_error(c, 405, "MethodNotAllowed", "use GET or POST");
	if (store_tenant_id(a->store, tname, &tid))
		return send_error(c, 404, "TenantNotFound", "tenant %s not found", tname);
	if (sub && strcmp(sub, "limits") == 0 && !key_id) {
		struct tenant_limits l;

		if (strcmp(method, "PUT") == 0) {
			json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
			const char *k;
			json_t *v;
			bool bad = !json_is_object(j);

			store_limits_get(a->store, tid, &l);
			json_object_foreach(j, k, v) {
				int64_t *f = strcmp(k, "max_concurrency") == 0 ? &l.max_concurrency :
					     strcmp(k, "max_memory_mb") == 0 ? &l.max_memory_mb :
					     strcmp(k, "rate_per_s") == 0 ? &l.rate_per_s :
					     strcmp(k, "burst") == 0 ? &l.burst :
					     strcmp(k, "max_functions") == 0 ? &l.max_functions :
					     strcmp(k, "max_package_bytes") == 0 ? &l.max_package_bytes :
					     strcmp(k, "budget_mb_ms") == 0 ? &l.budget_mb_ms :
					     strcmp(k, "max_code_bytes") == 0 ? &l.max_code_bytes : NULL;

				/* Bounds keep every later computation (x1000 tokens, GB-s) in range. */
				if (strcmp(k, "budget_gb_s") == 0 && json_is_integer(v) &&
				    json_integer_value(v) >= 0 &&
				    json_integer_value(v) <= INT64_MAX / 2 / (int64_t)MB_MS_PER_GB_S) {
					l.budget_mb_ms = json_integer_value(v) * (int64_t)MB_MS_PER_GB_S;
					continue;
				}
				if (!f || !json_is_integer(v) || json_integer_value(v) < 0 ||
				    json_integer_value(v) > (f == &l.budget_mb_ms ? INT64_MAX / 2 :
							     f == &l.rate_per_s || f == &l.burst ?
								     1000000000LL : 1000000000000LL)) {
					bad = true;
					break;
				}
				*f = json_integer_value(v);
			}
			json_decref(j);
			if (bad)
				return send_error(c, 400, "InvalidLimits",
						  "limits are non-negative integers: max_concurrency,"
						  " max_memory_mb, rate_per_s, burst (each at most 10^9 for"
						  " rate and burst, 10^12 otherwise), max_functions,"
						  " max_package_bytes, max_code_bytes, budget_gb_s or"
						  " budget_mb_ms (0 = none)");
			if (l.rate_per_s > 0 && l.burst == 0)
				l.burst = l.rate_per_s; /* a bucket of one second by default */
			if (store_limits_set(a->store, tid, &l))
				return send_error(c, 500, "StorageError", "could not store the limits");
			quota_invalidate(a->cfg.quota, tid); /* effective now, no restart */
			hlog_info("api", "limits of tenant %s changed", tname);
		} else if (strcmp(method, "GET") != 0) {
			return send_error(c, 405, "MethodNotAllowed", "use GET or PUT");
		}
		store_limits_get(a->store, tid, &l);
		char gbs[48];
		int64_t code_used = 0;
		bool unused;
		quota_format_gb_s((uint64_t)l.budget_mb_ms, gbs, sizeof(gbs));
		store_code_bytes(a->store, tid, NULL, &code_used, &unused);
		return send_json(c, 200,
				 json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:I,s:I}", "tenant",
					   tname, "max_concurrency", (json_int_t)l.max_concurrency,
					   "max_memory_mb", (json_int_t)l.max_memory_mb, "rate_per_s",
					   (json_int_t)l.rate_per_s, "burst", (json_int_t)l.burst,
					   "max_functions", (json_int_t)l.max_functions,
					   "max_package_bytes", (json_int_t)l.max_package_bytes,
					   "budget_mb_ms", (json_int_t)l.budget_mb_ms, "budget_gb_s", gbs,
					   "max_code_bytes", (json_int_t)l.max_code_bytes,
					   "code_bytes_used", (json_int_t)code_used),
				 NULL);
	}
	if (!sub && strcmp(method, "DELETE") == 0) {
		int64_t *ids;
		size_t nids;

		rc = store_tenant_delete(a->store, tname, &ids, &nids);
		if (rc == -ENOENT)
			return send_error(c, 404, "TenantNotFound", "tenant %s not found", tname);
		if (rc)
			return send_error(c, 500, "StorageError", "could not delete the tenant");
		/* Its VMs go too: nothing of it may serve anyone again. */
		sched_drop_versions(a->sched, ids, nids);
		free(ids);
		imagegc_kick(a->cfg.imagegc);
		quota_invalidate(a->cfg.quota, tid);
		hlog_info("api", "deleted tenant %s and everything it owned", tname);
		return send_json(c, 200, json_pack("{s:s,s:b}", "name", tname, "deleted", 1), NULL);
	}
	if (sub && strcmp(sub, "keys") == 0) {
		const char *type = query(c, "type");

		if (!key_id && strcmp(method, "POST") == 0 && type && strcmp(type, "aws") == 0) {
			char akid[AWSKEY_ID_LEN + 1], secret[AWSKEY_SECRET_LEN + 1];
			json_t *j;

			if (awskeys_create(a->awskeys, tid, akid, secret))
				return send_error(c, 500, "StorageError",
						  "could not create the AWS key (see hearthd's log)");
			hlog_info("api", "created AWS access key %s for tenant %s", akid, tname);
			j = json_pack("{s:s,s:s,s:s,s:s}", "tenant", tname, "access_key_id", akid,
				      "secret_access_key", secret, "region", a->cfg.aws_region);
			OPENSSL_cleanse(secret, sizeof(secret));
			return send_json(c, 201, j, NULL);
		}
		if (!key_id && strcmp(method, "POST") == 0 && type && strcmp(type, "hearth") != 0)
			return send_error(c, 400, "InvalidParameter", "type is hearth (default) or aws");
		if (!key_id && strcmp(method, "POST") == 0) {
			if (auth_key_create(a->store, tid, key, id))
				return send_error(c, 500, "StorageError", "could not create the key");
			return send_json(c, 201, json_pack("{s:s,s:s,s:s}", "tenant", tname, "key_id",
							   id, "api_key", key), NULL);
		}
		if (!key_id && strcmp(method, "GET") == 0)
			return send_json(c, 200, json_pack("{s:o,s:o}", "keys", store_key_list(a->store, tid),
							   "aws_keys", store_aws_key_list(a->store, tid)),
					 NULL);
		if (key_id && strcmp(method, "DELETE") == 0) {
			if (awskeys_is_id(key_id) ? store_aws_key_delete(a->store, key_id, tid) :
						    store_key_delete(a->store, key_id, tid))
				return send_error(c, 404, "KeyNotFound", "key %s not found", key_id);
			return send_json(c, 200, json_pack("{s:s,s:b}", "key_id", key_id, "deleted", 1),
					 NULL);
		}
	}
	return send_error(c, 404, "NotFound", "no such endpoint");
}

/* GET /v1/usage?from=&to=&group_by=hour|function|none&format=json|csv (times in Unix seconds). */
static enum MHD_Result h_usage(struct req *r, const struct principal *who)
{
	struct api *a = r->api;
	struct MHD_Connection *c = r->conn;
	long long from = query_int(c, "from", 100000000000LL);
	long long to = query_int(c, "to", 100000000000LL);
	const char *group = query(c, "group_by"), *format = query(c, "format");
	const char *t = header(c, "X-Hearth-Tenant");
	int64_t tenant = who->tenant_id;
	json_t *rows, *row;
	size_t i;

	if (from == -2 || to == -2)
		return send_error(c, 400, "InvalidParameter", "from and to are Unix times in seconds");
	if (!group)
		group = "function";
	if (strcmp(group, "hour") && strcmp(group, "function") && strcmp(group, "none"))
		return send_error(c, 400, "InvalidParameter", "group_by is hour, function or none");
	if (format && strcmp(format, "json") && strcmp(format, "csv"))
		return send_error(c, 400, "InvalidParameter", "format is json or csv");
	if (who->admin) {
		tenant = 0; /* every tenant, unless one is named */
		if (t && store_tenant_id(a->store, t, &tenant))
			return send_error(c, 404, "TenantNotFound", "tenant %s not found", t);
	}
	if (from < 0)
		from = 0;
	if (to < 0)
		to = wall_us() / 1000000 + 1;
	rows = store_usage_query(a->store, tenant, from * 1000000, to * 1000000, group);
	json_array_foreach(rows, i, row) {
		char gbs[48];

		quota_format_gb_s((uint64_t)json_integer_value(json_object_get(row, "mb_ms")), gbs,
				  sizeof(gbs));
		json_object_set_new(row, "gb_s", json_string(gbs));
	}
	if (format && strcmp(format, "csv") == 0) {
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);
		bool hour = strcmp(group, "hour") == 0, fn = strcmp(group, "none") != 0;

		fprintf(f, "%stenant%s,invocations,errors,cold_starts,duration_us,billed_ms,mb_ms,gb_s\n",
			hour ? "hour_start," : "", fn ? ",function" : "");
		json_array_foreach(rows, i, row) {
			if (hour)
				fprintf(f, "%lld,", (long long)json_integer_value(json_object_get(row, "hour_start")));
			fprintf(f, "%s", json_string_value(json_object_get(row, "tenant")));
			if (fn)
				fprintf(f, ",%s", json_string_value(json_object_get(row, "function")));
			fprintf(f, ",%lld,%lld,%lld,%lld,%lld,%lld,%s\n",
				(long long)json_integer_value(json_object_get(row, "invocations")),
				(long long)json_integer_value(json_object_get(row, "errors")),
				(long long)json_integer_value(json_object_get(row, "cold_starts")),
				(long long)json_integer_value(json_object_get(row, "duration_us")),
				(long long)json_integer_value(json_object_get(row, "billed_ms")),
				(long long)json_integer_value(json_object_get(row, "mb_ms")),
				json_string_value(json_object_get(row, "gb_s")));
		}
		fclose(f);
		json_decref(rows);
		return send_buf(c, 200, "text/csv", buf, len, NULL);
	}
	return send_json(c, 200, json_pack("{s:I,s:I,s:s,s:o}", "from", (json_int_t)from, "to",
					   (json_int_t)to, "group_by", group, "usage", rows), NULL);
}

/* Splits "/a/b/c" into at most max segments (modifies buf). */
static int split_path(char *buf, char **seg, int max)
{
	int n = 0;

	for (char *save = NULL, *t = strtok_r(buf, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
		if (n == max)
			return -1;
		seg[n++] = t;
	}
	return n;
}

static enum MHD_Result route(struct req *r, const char *method, const char *url)
{
	struct api *a = r->api;
	struct MHD_Connection *c = r->conn;
	struct principal who = r->who;
	char path[MAX_PATH_LEN + 1];
	char *seg[6];
	int n;

	if (strcmp(url, "/healthz") == 0)
		return send_json(c, 200, json_pack("{s:s}", "status", "ok"), NULL);
	if (strcmp(url, "/readyz") == 0) {
		/* Ready for new work: the process answers AND its state store does (a fleet host
		 * that lost PostgreSQL is alive but not ready); for load balancers. */
		char why[300];
		size_t held = store_records_held(a->store);

		if (held)
			return send_json(c, 503, json_pack("{s:s,s:s,s:I}", "status", "unavailable",
							   "reason", "the state disk refuses writes: "
							   "invocation records wait in memory",
							   "records_held", (json_int_t)held), NULL);
		if (store_health(a->store, why, sizeof(why)))
			return send_json(c, 503, json_pack("{s:s,s:s}", "status", "unavailable",
							   "reason", why), NULL);
		return send_json(c, 200, json_pack("{s:s}", "status", "ready"), NULL);
	}
	if (strcmp(url, "/metrics") == 0 && strcmp(method, "GET") == 0) {
		size_t len;
		double ratio;
		int at_80;

		quota_budget_summary(a->cfg.quota, &ratio, &at_80);
		metrics_budget(ratio, at_80);
		metrics_records_held(store_records_held(a->store));
		char *m = metrics_render(&len);

		return m ? send_buf(c, 200, "text/plain; version=0.0.4", m, len, NULL) : MHD_NO;
	}
	if (r->lam)
		return lambda_route(r, method, url);
	if (ui_is_path(url))
		return ui_serve(a->ui, c, method, url);
	if (ui_is_api(url))
		return ui_api(a->ui, c, &who, method, url);
	if (r->too_large)
		return send_error(c, 413, "PayloadTooLarge", "request body exceeds %zu bytes", r->limit);
	if (r->io_error)
		return send_storage_error(c, r->io_errno, "cannot store the upload");
	snprintf(path, sizeof(path), "%s", url); /* fits: begin_request refused longer ones */
	n = split_path(path, seg, 6);
	if (n < 2 || strcmp(seg[0], "v1") != 0)
		return send_error(c, 404, "NotFound", "no such endpoint");
	if (strcmp(seg[1], "tenants") == 0) {
		if (!who.admin)
			return send_error(c, 403, "Forbidden", "tenant administration needs the admin key");
		if (n > 5)
			return send_error(c, 404, "NotFound", "no such endpoint");
		return h_tenants(r, method, n > 2 ? seg[2] : NULL, n > 3 ? seg[3] : NULL,
				 n > 4 ? seg[4] : NULL);
	}
	if (strcmp(seg[1], "usage") == 0 && n == 2 && strcmp(method, "GET") == 0)
		return h_usage(r, &who);
	if (strcmp(seg[1], "hosts") == 0 && n == 2 && strcmp(method, "GET") == 0) {
		if (!who.admin)
			return send_error(c, 403, "Forbidden", "the host list needs the admin key");
		return send_json(c, 200, json_pack("{s:s,s:o}", "store", store_backend(a->store),
						   "hosts", store_hosts(a->store)), NULL);
	}
	/* Everything else acts for one tenant; the admin names it with X-Hearth-Tenant. */
	if (who.admin) {
		const char *t = header(c, "X-Hearth-Tenant");

		if (!t)
			return send_error(c, 400, "TenantRequired",
					  "the admin key acts for a tenant named in X-Hearth-Tenant");
		if (store_tenant_id(a->store, t, &who.tenant_id))
			return send_error(c, 404, "TenantNotFound", "tenant %s not found", t);
		snprintf(who.tenant, sizeof(who.tenant), "%s", t);
	}
	if (strcmp(seg[1], "functions") == 0) {
		if (n == 2 && strcmp(method, "GET") == 0)
			return send_json(c, 200, json_pack("{s:o}", "functions",
							   store_function_list(a->store, who.tenant_id)),
					 NULL);
		if (n == 3 || n == 4)
			return h_function(r, &who, method, seg[2], n == 4 ? seg[3] : NULL);
	}
	if (strcmp(seg[1], "invocations") == 0 && n == 3 && strcmp(method, "GET") == 0) {
		json_t *j = store_async_get(a->store, who.tenant_id, seg[2]);

		if (!j)
			return send_error(c, 404, "InvocationNotFound", "no event %s", seg[2]);
		return send_json(c, 200, j, NULL);
	}
	if (strcmp(seg[1], "dead-letters") == 0 && n == 2 && strcmp(method, "GET") == 0) {
		long long limit = query_int(c, "limit", 1000);

		if (limit == -2)
			return send_error(c, 400, "InvalidParameter", "limit must be 1..1000");
		return send_json(c, 200,
				 json_pack("{s:o}", "dead_letters",
					   store_dead_letters(a->store, who.tenant_id,
							      limit > 0 && limit <= 1000 ? (int)limit : 100)),
				 NULL);
	}
	return send_error(c, 404, "NotFound", "no such endpoint");
}

static bool is_package_upload(const char *method, const char *url, const char *ctype)
{
	return strcmp(method, "POST") == 0 && strncmp(url, "/v1/functions/", 14) == 0 &&
	       url[14] && !strchr(url + 14, '/') &&
	       !(ctype && strncmp(ctype, "application/json", 16) == 0);
}

/* Only a package (streamed to disk) and an invoke payload may be large. */
static size_t body_limit(struct api *a, const char *method, const char *url, const char *ctype)
{
	size_t n = strlen(url);

	if (strcmp(method, "POST") == 0 && n > 7 && strcmp(url + n - 7, "/invoke") == 0)
		return a->cfg.max_invoke_payload;
	if (is_package_upload(method, url, ctype))
		return a->cfg.max_package;
	return SMALL_BODY_LIMIT;
}

/* ---- connections ------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct conn *conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

struct conn *api_conn_of(struct MHD_Connection *c)
{
	return conn_of(c);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct api *a = cls;
	struct conn *k = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

		k = calloc(1, sizeof(*k));
		if (!k)
			return; /* on_unescape still refuses bad names without it */
		k->fd = ci ? ci->connect_fd : -1;
		k->header_since_ms = mono_ms();
		pthread_mutex_lock(&a->conns_mu);
		k->next = a->conns;
		if (a->conns)
			a->conns->prev = k;
		a->conns = k;
		pthread_mutex_unlock(&a->conns_mu);
		*socket_context = k;
		return;
	}
	if (!k)
		return;
	/* MHD notifies CLOSED before it closes the fd: once unlisted, the sweeper never touches it. */
	pthread_mutex_lock(&a->conns_mu);
	if (k->prev)
		k->prev->next = k->next;
	else
		a->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	pthread_mutex_unlock(&a->conns_mu);
	free(k->raw_uri);
	free(k);
	*socket_context = NULL;
}

static void conn_set_waiting(struct api *a, struct MHD_Connection *c, bool waiting)
{
	struct conn *k = conn_of(c);

	if (!k)
		return;
	pthread_mutex_lock(&a->conns_mu);
	k->header_since_ms = waiting ? mono_ms() : 0;
	pthread_mutex_unlock(&a->conns_mu);
}

/*
 * The header deadline: a connection that has not delivered a complete request
 * header within header_timeout_s of connecting (or of its previous response)
 * is shut down; MHD then sees the end of the stream and closes it itself.
 */
static void *sweeper_main(void *arg)
{
	struct api *a = arg;
	const int64_t limit = (int64_t)a->cfg.header_timeout_s * 1000;

	while (!__atomic_load_n(&a->stopping, __ATOMIC_ACQUIRE)) {
		int64_t now = mono_ms();
		int cut = 0;

		pthread_mutex_lock(&a->conns_mu);
		for (struct conn *k = a->conns; k; k = k->next) {
			if (k->header_since_ms && now - k->header_since_ms >= limit && k->fd >= 0) {
				shutdown(k->fd, SHUT_RDWR);
				k->header_since_ms = 0;
				cut++;
			}
		}
		pthread_mutex_unlock(&a->conns_mu);
		if (cut)
			hlog_info("api", "closed %d connection(s) that sent no complete request header"
				  " within %d s", cut, a->cfg.header_timeout_s);
		usleep(200000);
	}
	return NULL;
}

/* Called with the raw request target (path and query), before it is decoded. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct conn *k = conn_of(c);

	(void)cls;
	if (k) {
		k->bad_escape = false;
		k->uri_too_long = strlen(uri) > MAX_URI_LEN;
		/* SigV4 signs the path and query as sent, before decoding. */
		free(k->raw_uri);
		k->raw_uri = !k->uri_too_long && lambda_is_path(uri) ? strdup(uri) : NULL;
	}
	return NULL; /* *con_cls: on_request allocates the request */
}

/*
 * libmicrohttpd decodes the path and each query key and value in place and
 * hands out NUL-terminated strings: "evil%00.tar" would become "evil". Decode
 * with its own routine, and mark the request when the result holds a NUL or a
 * control character, so that it is refused rather than cut.
 */
static size_t on_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	size_t n = MHD_http_unescape(s);
	struct conn *k;

	(void)cls;
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] >= 0x20 && s[i] != 0x7f)
			continue;
		k = conn_of(c);
		if (k) {
			k->bad_escape = true;
		} else {
			s[0] = 0; /* no connection state: an empty name is refused anyway */
			return 0;
		}
		break;
	}
	return n;
}

struct header_counts {
	int content_length, transfer_encoding, authorization;
	bool malformed; /* a name or value with a control character, or a name with a space */
};

/*
 * RFC 9110 5.1/5.5: a field name is a token; a value holds no control
 * character but tab. The sizes catch a NUL, which C strings hide.
 */
static bool field_ok(const char *key, size_t key_size, const char *value, size_t value_size)
{
	if (!key || !key_size)
		return false;
	for (size_t i = 0; i < key_size; i++)
		if ((unsigned char)key[i] <= 0x20 || key[i] == 0x7f)
			return false;
	for (size_t i = 0; value && i < value_size; i++)
		if (((unsigned char)value[i] < 0x20 && value[i] != '\t') || value[i] == 0x7f)
			return false;
	return true;
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
				    size_t key_size, const char *value, size_t value_size)
{
	struct header_counts *n = cls;

	(void)kind;
	if (!field_ok(key, key_size, value, value_size))
		n->malformed = true;
	if (strcasecmp(key, "Content-Length") == 0)
		n->content_length++;
	else if (strcasecmp(key, "Transfer-Encoding") == 0)
		n->transfer_encoding++;
	else if (strcasecmp(key, "Authorization") == 0)
		n->authorization++;
	return MHD_YES;
}

/* A refusal before routing, in the format of the API the path belongs to. */
static enum MHD_Result early_error(struct req *r, const char *url, unsigned status,
				   const char *code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static enum MHD_Result early_error(struct req *r, const char *url, unsigned status,
				   const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (lambda_is_path(url))
		return lambda_refuse(r, status, "InvalidRequestContentException", msg);
	return send_error(r->conn, status, code, "%s", msg);
}

/*
 * The request header is complete and no byte of the body has been read: refuse
 * here whatever can be refused, above all a request without a valid key, so
 * that nobody unauthenticated makes hearthd read or store a body.
 */
static enum MHD_Result begin_request(struct req *r, const char *method, const char *url)
{
	struct api *a = r->api;
	struct MHD_Connection *c = r->conn;
	struct conn *k = conn_of(c);
	struct header_counts n = { 0 };
	const char *cl = header(c, "Content-Length"), *auth = NULL;
	size_t auth_len = 0;

	if (k && k->uri_too_long)
		return early_error(r, url, 414, "URITooLong", "the request target exceeds %d bytes",
				   MAX_URI_LEN);
	if (strlen(url) > MAX_PATH_LEN)
		return early_error(r, url, 414, "URITooLong", "the path exceeds %d bytes", MAX_PATH_LEN);
	if (k && k->bad_escape)
		return early_error(r, url, 400, "InvalidPath",
				   "the path or a query argument decodes to a NUL or control character");
	MHD_get_connection_values_n(c, MHD_HEADER_KIND, count_header, &n);
	if (n.malformed) {
		/*
		 * libmicrohttpd takes a line that starts with NUL for the header's
		 * end and reads what follows as another request (found by fuzz_http:
		 * a NUL in a folded line, then a NUL line): answer once, and close.
		 */
		static const char *const close_hdr[] = { "Connection", "close", NULL };

		if (lambda_is_path(url))
			return lambda_refuse(r, 400, "InvalidRequestContentException",
					     "a header field holds a control character");
		return send_json(c, 400,
				 json_pack("{s:{s:s,s:s}}", "error", "code", "InvalidHeader", "message",
					   "a header field name or value holds a control character "
					   "(or the name a space)"),
				 close_hdr);
	}
	if (n.content_length > 1 || (n.content_length && n.transfer_encoding))
		return early_error(r, url, 400, "InvalidContentLength",
				   "send one Content-Length header, or Transfer-Encoding alone");
	/*
	 * libmicrohttpd decodes only chunked; given another coding it waits for a
	 * body it cannot delimit until the idle timeout (RFC 9112 6.1: answer 501).
	 */
	if (n.transfer_encoding &&
	    (n.transfer_encoding > 1 || strcasecmp(header(c, "Transfer-Encoding"), "chunked")))
		return early_error(r, url, 501, "UnsupportedTransferEncoding",
				   "the only transfer coding accepted is one Transfer-Encoding: chunked");
	if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 ||
	    strcmp(url, "/metrics") == 0 || ui_is_path(url))
		return MHD_YES;
	if (lambda_is_path(url))
		return lambda_begin(r, method, url);
	/* A fleet host that lost its database refuses new work (running work finishes). */
	char why[300];

	if (store_health(a->store, why, sizeof(why)))
		return send_error(c, 503, "StoreUnavailable", "%s; this host takes no new work "
				  "until it is back", why);
	MHD_lookup_connection_value_n(c, MHD_HEADER_KIND, "Authorization", 13, &auth, &auth_len);
	if (n.authorization > 1 || auth_check(a->store, auth, auth_len, &r->who)) {
		if (store_health(a->store, why, sizeof(why))) /* the key could not be looked up */
			return send_error(c, 503, "StoreUnavailable", "%s", why);
		return send_error(c, 401, "Unauthorized",
				  "missing or invalid API key (Authorization: Bearer <key>)");
	}
	r->limit = body_limit(a, method, url, header(c, "Content-Type"));
	if (cl && strtoull(cl, NULL, 10) > r->limit) /* MHD refused non-numeric values already */
		return send_error(c, 413, "PayloadTooLarge", "request body exceeds %zu bytes",
				  r->limit);
	if (is_package_upload(method, url, header(c, "Content-Type"))) {
		struct tenant_limits lim;

		if (!r->who.admin && cl && store_limits_get(a->store, r->who.tenant_id, &lim) == 0 &&
		    lim.max_package_bytes > 0 &&
		    strtoull(cl, NULL, 10) > (unsigned long long)lim.max_package_bytes)
			return send_error(c, 413, "PackageTooLarge",
					  "the package is %s bytes; this tenant's limit is %lld", cl,
					  (long long)lim.max_package_bytes);
		char dwhy[256];
		if (disk_short(a, cl ? strtoull(cl, NULL, 10) : 0, dwhy, sizeof(dwhy)))
			return send_error(c, 507, "InsufficientStorage", "%s", dwhy);
		/* Packages go to disk as they arrive, never whole into memory. */
		snprintf(r->upload_path, sizeof(r->upload_path), "%s/upload-XXXXXX.tar.gz",
			 a->tmp_dir);
		r->upload_fd = mkostemps(r->upload_path, 7, O_CLOEXEC);
		if (r->upload_fd < 0) {
			r->upload_path[0] = 0;
			return send_storage_error(c, errno, "cannot store the upload");
		}
	}
	return MHD_YES;
}

static bool write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static void take_body(struct req *r, const char *data, size_t n)
{
	if (r->too_large || r->io_error)
		return;
	if (r->len + n > r->limit) {
		r->too_large = true;
		free(r->body);
		r->body = NULL;
		r->len = 0;
		return;
	}
	if (r->upload_fd >= 0) {
		if (!write_all(r->upload_fd, data, n)) {
			r->io_error = true;
			r->io_errno = errno ? errno : EIO;
		}
		r->len += n;
		return;
	}
	char *nb = realloc(r->body, r->len + n + 1);

	if (!nb) {
		r->io_error = true;
		r->io_errno = ENOMEM;
		return;
	}
	memcpy(nb + r->len, data, n);
	r->body = nb;
	r->len += n;
	r->body[r->len] = 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct api *a = cls;
	struct req *r = *con_cls;

	(void)version;
	if (!r) {
		conn_set_waiting(a, c, false); /* the header is complete */
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		r->api = a;
		r->conn = c;
		r->upload_fd = -1;
		r->limit = SMALL_BODY_LIMIT;
		*con_cls = r;
		return begin_request(r, method, url);
	}
	if (r->inv) {
		/* Resumed: the invocation has finished. */
		if (!__atomic_load_n(&r->inv_done, __ATOMIC_ACQUIRE))
			return MHD_YES;
		return api_respond_invocation(r);
	}
	if (*upload_size) {
		take_body(r, upload, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	return route(r, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct req *r = *con_cls;

	(void)toe;
	/* A kept-alive connection gets the same deadline for its next request header. */
	conn_set_waiting(cls, c, true);
	if (!r)
		return;
	free_invocation(r->inv);
	lambda_req_free(r->lam);
	if (r->upload_fd >= 0)
		close(r->upload_fd);
	if (r->upload_path[0])
		unlink(r->upload_path);
	free(r->body);
	free(r);
	*con_cls = NULL;
}

static int unix_listen(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	/* Keys still authenticate each request; the mode only limits who can connect. */
	chmod(path, 0666);
	return fd;
}

static struct MHD_Daemon *start_daemon(struct api *a, int port, int listen_fd)
{
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
			 MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	/* Options both listeners share: decoding checks, header deadline, request hooks. */
#define COMMON_OPTIONS                                                                         \
	MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,                                          \
	MHD_OPTION_NOTIFY_CONNECTION, on_connection, a,                                        \
	MHD_OPTION_URI_LOG_CALLBACK, on_uri, a,                                                \
	MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, a,                                          \
	MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)a->cfg.conn_timeout_s,                        \
	MHD_OPTION_THREAD_POOL_SIZE, (unsigned)a->cfg.threads

	if (listen_fd >= 0) {
		/* The local socket has its own connection budget: TCP clients cannot use it up. */
		return MHD_start_daemon(flags, 0, NULL, NULL, on_request, a,
					MHD_OPTION_LISTEN_SOCKET, listen_fd, COMMON_OPTIONS,
					MHD_OPTION_CONNECTION_LIMIT, (unsigned)a->cfg.unix_max_conns,
					MHD_OPTION_END);
	}
	inet_pton(AF_INET, a->cfg.listen_host, &sin.sin_addr);
	return MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, a,
				MHD_OPTION_SOCK_ADDR, &sin, COMMON_OPTIONS,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)a->cfg.max_conns,
				MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)a->cfg.max_conns_per_ip,
				MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
				MHD_OPTION_END);
#undef COMMON_OPTIONS
}

static void api_free(struct api *a)
{
	if (a->sweeper_started) {
		__atomic_store_n(&a->stopping, 1, __ATOMIC_RELEASE);
		pthread_join(a->sweeper, NULL);
	}
	pthread_mutex_destroy(&a->conns_mu);
	pthread_mutex_destroy(&a->code_mu);
	awskeys_close(a->awskeys);
	ui_close(a->ui);
	free(a);
}

int api_start(const struct api_config *cfg, struct store *store, struct sched *sched,
	      struct async *async, struct api **out)
{
	struct api *a = calloc(1, sizeof(*a));

	if (!a)
		return -ENOMEM;
	a->cfg = *cfg;
	if (!a->cfg.max_invoke_payload)
		a->cfg.max_invoke_payload = 6u << 20;
	if (!a->cfg.max_package)
		a->cfg.max_package = 64u << 20;
	if (a->cfg.conn_timeout_s <= 0)
		a->cfg.conn_timeout_s = 30;
	if (a->cfg.header_timeout_s <= 0)
		a->cfg.header_timeout_s = API_DEFAULT_HEADER_TIMEOUT_S;
	if (a->cfg.max_conns <= 0)
		a->cfg.max_conns = API_DEFAULT_MAX_CONNS;
	if (a->cfg.max_conns_per_ip <= 0)
		a->cfg.max_conns_per_ip = API_DEFAULT_MAX_CONNS_PER_IP;
	if (a->cfg.unix_max_conns <= 0)
		a->cfg.unix_max_conns = API_DEFAULT_UNIX_MAX_CONNS;
	if (a->cfg.threads <= 0)
		a->cfg.threads = 2;
	a->store = store;
	a->sched = sched;
	a->async = async;
	if (!a->cfg.aws_region || !a->cfg.aws_region[0])
		a->cfg.aws_region = API_DEFAULT_AWS_REGION;
	pthread_mutex_init(&a->conns_mu, NULL);
	pthread_mutex_init(&a->code_mu, NULL);
	if (awskeys_open(store, cfg->state_dir, &a->awskeys)) {
		pthread_mutex_destroy(&a->conns_mu);
	pthread_mutex_destroy(&a->code_mu);
		free(a);
		return -ENOMEM;
	}
	{
		struct ui_env ue = { store, sched, a->cfg.host_capacity, a->cfg.unreserved_floor };

		if (ui_open(cfg->ui_dir, &ue, &a->ui)) {
			api_free(a);
			return -ENOMEM;
		}
	}
	snprintf(a->images_dir, sizeof(a->images_dir), "%s/images", cfg->state_dir);
	snprintf(a->tmp_dir, sizeof(a->tmp_dir), "%s/tmp", cfg->state_dir);
	mkdir(a->images_dir, 0700);
	mkdir(a->tmp_dir, 0700);
	if (cfg->disk_reserve_mb >= 0) {
		a->disk_reserve = (uint64_t)cfg->disk_reserve_mb << 20;
	} else {
		struct statvfs v;

		if (statvfs(cfg->state_dir, &v) == 0)
			a->disk_reserve = (uint64_t)v.f_blocks * v.f_frsize / 20;
		if (a->disk_reserve > (1ull << 30))
			a->disk_reserve = 1ull << 30;
	}
	if (a->disk_reserve)
		hlog_info("api", "deploys leave %llu MiB free on %s for invocation records "
			  "(--disk-reserve-mb)", (unsigned long long)(a->disk_reserve >> 20),
			  cfg->state_dir);
	if (pthread_create(&a->sweeper, NULL, sweeper_main, a) != 0) {
		hlog_error("api", "cannot start the header deadline thread");
		api_free(a);
		return -EAGAIN;
	}
	a->sweeper_started = true;
	if (cfg->listen_host) {
		a->tcp = start_daemon(a, cfg->port, -1);
		if (!a->tcp) {
			hlog_error("api", "cannot listen on %s:%d", cfg->listen_host, cfg->port);
			api_free(a);
			return -EADDRINUSE;
		}
		hlog_info("api", "listening on http://%s:%d (at most %d connections, %d per IP;"
			  " request headers within %d s)", cfg->listen_host, cfg->port,
			  a->cfg.max_conns, a->cfg.max_conns_per_ip, a->cfg.header_timeout_s);
	}
	if (cfg->unix_path) {
		int fd = unix_listen(cfg->unix_path);

		a->unx = fd >= 0 ? start_daemon(a, 0, fd) : NULL;
		if (!a->unx) {
			hlog_error("api", "cannot listen on %s: %s", cfg->unix_path,
				   strerror(fd < 0 ? -fd : EIO));
			if (a->tcp)
				MHD_stop_daemon(a->tcp);
			api_free(a);
			return -EIO;
		}
		hlog_info("api", "listening on unix:%s (at most %d connections)", cfg->unix_path,
			  a->cfg.unix_max_conns);
	}
	*out = a;
	return 0;
}

void api_quiesce(struct api *a)
{
	if (a->tcp)
		MHD_quiesce_daemon(a->tcp);
	if (a->unx)
		MHD_quiesce_daemon(a->unx);
}

void api_stop(struct api *a)
{
	if (a->tcp)
		MHD_stop_daemon(a->tcp);
	if (a->unx) {
		MHD_stop_daemon(a->unx);
		unlink(a->cfg.unix_path);
	}
	api_free(a);
}
