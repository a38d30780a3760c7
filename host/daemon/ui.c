/*
 * ui.c - the web console's static files and its read-only JSON endpoints
 * (see ui.h).
 */
#include "ui.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "log.h"
#include "quota.h"

/*
 * Scripts, styles, images and API calls from hearthd only; no inline script,
 * no plugins, no framing, no form posts elsewhere. uPlot sets element styles
 * through the CSSOM, which style-src does not restrict.
 */
#define UI_CSP                                                                                    \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "         \
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

struct ui_file {
	const char *name;  /* under /ui/ */
	const char *type;
	char *data;
	size_t len;
};

struct ui {
	struct ui_env env;
	char dir[512];
	bool loaded;
	struct ui_file files[6];
};

static const struct ui_file file_table[] = {
	{ "index.html", "text/html; charset=utf-8", NULL, 0 },
	{ "app.js", "text/javascript; charset=utf-8", NULL, 0 },
	{ "app.css", "text/css; charset=utf-8", NULL, 0 },
	{ "uPlot.iife.min.js", "text/javascript; charset=utf-8", NULL, 0 },
	{ "uPlot.min.css", "text/css; charset=utf-8", NULL, 0 },
	{ "favicon.svg", "image/svg+xml", NULL, 0 },
};

static int read_file(const char *path, char **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, r;

	if (!f)
		return -errno;
	for (;;) {
		if (n == cap) {
			char *nb = realloc(buf, cap ? cap * 2 : 65536);

			if (!nb) {
				free(buf);
				fclose(f);
				return -ENOMEM;
			}
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	*data = buf;
	*len = n;
	return 0;
}

int ui_open(const char *dir, const struct ui_env *env, struct ui **out)
{
	struct ui *u = calloc(1, sizeof(*u));
	size_t i;

	if (!u)
		return -ENOMEM;
	u->env = *env;
	memcpy(u->files, file_table, sizeof(file_table));
	snprintf(u->dir, sizeof(u->dir), "%s", dir ? dir : "");
	u->loaded = dir != NULL;
	for (i = 0; dir && i < sizeof(file_table) / sizeof(file_table[0]); i++) {
		char path[1024];
		int rc;

		snprintf(path, sizeof(path), "%s/%s", dir, u->files[i].name);
		rc = read_file(path, &u->files[i].data, &u->files[i].len);
		if (rc) {
			hlog_error("ui", "web console disabled: cannot read %s: %s", path,
				   strerror(-rc));
			u->loaded = false;
			break;
		}
	}
	if (u->loaded)
		hlog_info("ui", "web console at /ui/ (files from %s)", dir);
	*out = u;
	return 0;
}

void ui_close(struct ui *u)
{
	if (!u)
		return;
	for (size_t i = 0; i < sizeof(file_table) / sizeof(file_table[0]); i++)
		free(u->files[i].data);
	free(u);
}

bool ui_is_path(const char *url)
{
	return strcmp(url, "/ui") == 0 || strncmp(url, "/ui/", 4) == 0;
}

bool ui_is_api(const char *url)
{
	return strncmp(url, "/v1/console/", 12) == 0;
}

static void common_headers(struct MHD_Response *r)
{
	MHD_add_response_header(r, "Content-Security-Policy", UI_CSP);
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, "Cache-Control", "no-cache");
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
			     void *buf, size_t len, enum MHD_ResponseMemoryMode mode,
			     const char *location)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, mode);
	enum MHD_Result ret;

	if (!r) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(buf);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	if (location)
		MHD_add_response_header(r, "Location", location);
	common_headers(r);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	if (!s)
		return MHD_NO;
	return reply(c, status, "application/json", s, strlen(s), MHD_RESPMEM_MUST_FREE, NULL);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *code,
				   const char *msg)
{
	return reply_json(c, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message",
					       msg));
}

enum MHD_Result ui_serve(struct ui *u, struct MHD_Connection *c, const char *method,
			 const char *url)
{
	const char *name = url + 3;  /* after "/ui" */
	static const char moved[] = "see /ui/\n";

	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply_error(c, 405, "MethodNotAllowed", "the console is read with GET");
	if (*name == 0)
		return reply(c, 301, "text/plain", (void *)moved, sizeof(moved) - 1,
			     MHD_RESPMEM_PERSISTENT, "/ui/");
	name++;
	if (*name == 0)
		name = "index.html";
	for (size_t i = 0; i < sizeof(file_table) / sizeof(file_table[0]); i++) {
		if (strcmp(name, u->files[i].name) != 0)
			continue;
		if (!u->loaded)
			return reply_error(c, 503, "ConsoleUnavailable",
					   "the web console's files were not found at start "
					   "(see hearthd's log and --ui-dir)");
		return reply(c, 200, u->files[i].type, u->files[i].data, u->files[i].len,
			     MHD_RESPMEM_PERSISTENT, NULL);
	}
	return reply_error(c, 404, "NotFound", "no such console file");
}

/* The first second of this month (UTC): budgets are per calendar month (quota.c). */
static int64_t month_start_us(int64_t *next_us)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	tm.tm_mday = 1;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	t = timegm(&tm);
	tm.tm_mon++;
	*next_us = (int64_t)timegm(&tm) * 1000000;
	return (int64_t)t * 1000000;
}

static json_t *gb_s(uint64_t mb_ms)
{
	char buf[48];

	quota_format_gb_s(mb_ms, buf, sizeof(buf));
	return json_string(buf);
}

static json_t *limits_json(struct ui *u, int64_t tenant, const char *name)
{
	struct tenant_limits l;
	int64_t next, start = month_start_us(&next);
	uint64_t used = store_usage_since(u->env.store, tenant, start);

	int64_t code_used = 0;
	bool unused;

	store_limits_get(u->env.store, tenant, &l);
	store_code_bytes(u->env.store, tenant, NULL, &code_used, &unused);
	return json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:I,s:{s:I,s:o,s:I,s:I}}",
			 "tenant", name, "max_concurrency", (json_int_t)l.max_concurrency,
			 "max_memory_mb", (json_int_t)l.max_memory_mb, "rate_per_s",
			 (json_int_t)l.rate_per_s, "burst", (json_int_t)l.burst, "max_functions",
			 (json_int_t)l.max_functions, "max_package_bytes",
			 (json_int_t)l.max_package_bytes, "budget_mb_ms", (json_int_t)l.budget_mb_ms,
			 "budget_gb_s", gb_s((uint64_t)l.budget_mb_ms), "max_code_bytes",
			 (json_int_t)l.max_code_bytes, "code_bytes_used", (json_int_t)code_used,
			 "period", "used_mb_ms", (json_int_t)used, "used_gb_s", gb_s(used), "start",
			 (json_int_t)(start / 1000000), "end", (json_int_t)(next / 1000000));
}

/* Adds the live pool figures of every version of a function; returns the latest's id. */
static void add_pool_stats(struct ui *u, int64_t tenant, json_t *fn)
{
	const char *name = json_string_value(json_object_get(fn, "name"));
	json_int_t latest = json_integer_value(json_object_get(fn, "latest_version"));
	struct sched_stats sum = { 0 };
	json_t *snaps = json_array();

	for (json_int_t v = 1; name && v <= latest; v++) {
		struct fn_version fv;
		struct sched_stats st;

		if (store_version_get(u->env.store, tenant, name, (int)v, &fv))
			continue;
		sched_stats(u->env.sched, fv.id, &st);
		fn_version_free(&fv);
		sum.vms += st.vms;
		sum.idle += st.idle;
		sum.booting += st.booting;
		sum.queued += st.queued;
		sum.saved += st.saved;
		if (st.snapshot)
			json_array_append_new(snaps, json_integer(v));
	}
	json_object_set_new(fn, "vms", json_integer(sum.vms));
	json_object_set_new(fn, "warm_idle", json_integer(sum.idle));
	json_object_set_new(fn, "booting", json_integer(sum.booting));
	json_object_set_new(fn, "queued", json_integer(sum.queued));
	json_object_set_new(fn, "saved", json_integer(sum.saved));
	json_object_set_new(fn, "snapshot_versions", snaps);
}

/* The tenant's functions with their configuration and live pool state. */
static json_t *functions_json(struct ui *u, int64_t tenant)
{
	json_t *list = store_function_list(u->env.store, tenant), *fn;
	size_t i;

	json_array_foreach(list, i, fn) {
		const char *name = json_string_value(json_object_get(fn, "name"));
		json_t *full = name ? store_function_get(u->env.store, tenant, name) : NULL;

		json_t *res = json_object_get(full, "reserved");

		json_object_set_new(fn, "reserved", res ? json_incref(res) : json_integer(0));
		json_object_set_new(fn, "versions",
				    json_integer((json_int_t)json_array_size(
					    json_object_get(full, "versions"))));
		json_decref(full);
		add_pool_stats(u, tenant, fn);
	}
	return list;
}

static int by_start_desc(const void *a, const void *b)
{
	json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "start_us"));
	json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "start_us"));

	return x < y ? 1 : x > y ? -1 : 0;
}

/* The tenant's most recent invocations over all its functions. */
static json_t *invocations_json(struct ui *u, int64_t tenant, int limit)
{
	json_t *fns = store_function_list(u->env.store, tenant), *fn, *out = json_array();
	json_t **all = NULL;
	size_t i, n = 0, cap = 0;

	json_array_foreach(fns, i, fn) {
		const char *name = json_string_value(json_object_get(fn, "name"));
		json_t *rows = name ? store_invocation_logs(u->env.store, tenant, name, limit) : NULL;
		json_t *row;
		size_t k;

		json_array_foreach(rows, k, row) {
			if (n == cap) {
				json_t **na = realloc(all, (cap ? cap * 2 : 64) * sizeof(*all));

				if (!na)
					break;
				all = na;
				cap = cap ? cap * 2 : 64;
			}
			all[n++] = json_incref(row);
		}
		json_decref(rows);
	}
	json_decref(fns);
	if (n)
		qsort(all, n, sizeof(*all), by_start_desc);
	for (i = 0; i < n; i++) {
		if ((int)i < limit)
			json_array_append(out, all[i]);
		json_decref(all[i]);
	}
	free(all);
	return out;
}

static void meminfo(json_int_t *total_kb, json_int_t *avail_kb)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	long long v;

	*total_kb = *avail_kb = -1;
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemTotal: %lld kB", &v) == 1)
			*total_kb = v;
		else if (sscanf(line, "MemAvailable: %lld kB", &v) == 1)
			*avail_kb = v;
	}
	if (f)
		fclose(f);
}

/* The admin's view of the host: engine, capacity, memory, every pool. */
static json_t *host_json(struct ui *u)
{
	struct sched_stats all;
	struct hearth_engine *e = sched_engine_for(u->env.sched, "auto");
	json_t *tenants = store_tenant_list(u->env.store), *t, *pools = json_array();
	json_int_t total_kb, avail_kb, snapshots = 0;
	size_t i;

	sched_stats(u->env.sched, 0, &all);
	meminfo(&total_kb, &avail_kb);
	json_array_foreach(tenants, i, t) {
		const char *tname = json_string_value(json_object_get(t, "name"));
		int64_t tid;
		json_t *fns, *fn;
		size_t k;

		if (!tname || store_tenant_id(u->env.store, tname, &tid))
			continue;
		fns = functions_json(u, tid);
		json_array_foreach(fns, k, fn) {
			json_t *snaps = json_object_get(fn, "snapshot_versions");

			snapshots += (json_int_t)json_array_size(snaps);
			json_array_append_new(
				pools, json_pack("{s:s,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "tenant",
						 tname, "function", json_object_get(fn, "name"),
						 "latest_version", json_object_get(fn, "latest_version"),
						 "memory_mb", json_object_get(fn, "memory_mb"), "vms",
						 json_object_get(fn, "vms"), "warm_idle",
						 json_object_get(fn, "warm_idle"), "booting",
						 json_object_get(fn, "booting"), "queued",
						 json_object_get(fn, "queued"), "saved",
						 json_object_get(fn, "saved"), "snapshot_versions", snaps));
		}
		json_decref(fns);
	}
	json_decref(tenants);
	return json_pack("{s:s,s:b,s:i,s:i,s:{s:i,s:i,s:i,s:i,s:i},s:I,s:{s:I,s:I},s:o}", "engine",
			 e ? hearth_engine_name(e) : "none", "engine_clones",
			 e && (hearth_engine_caps(e) & HEARTH_ENGINE_CAP_CLONE), "capacity_vms",
			 u->env.host_capacity, "unreserved_floor", u->env.unreserved_floor, "vms",
			 "total", all.vms, "warm_idle", all.idle, "booting", all.booting, "queued",
			 all.queued, "saved", all.saved, "snapshots", snapshots, "memory_kb",
			 "total", total_kb, "available", avail_kb, "pools", pools);
}

enum MHD_Result ui_api(struct ui *u, struct MHD_Connection *c, const struct principal *who,
		       const char *method, const char *url)
{
	const char *what = url + 12;  /* after "/v1/console/" */
	const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Hearth-Tenant");
	struct principal p = *who;

	if (strcmp(method, "GET") != 0)
		return reply_error(c, 405, "MethodNotAllowed", "console endpoints are read with GET");
	if (strcmp(what, "whoami") == 0)
		return reply_json(c, 200, json_pack("{s:b,s:s?}", "admin", who->admin, "tenant",
						    who->admin ? NULL : who->tenant));
	if (strcmp(what, "host") == 0) {
		if (!who->admin)
			return reply_error(c, 403, "Forbidden", "the host page needs the admin key");
		return reply_json(c, 200, host_json(u));
	}
	if (strcmp(what, "functions") && strcmp(what, "invocations") && strcmp(what, "limits"))
		return reply_error(c, 404, "NotFound", "no such endpoint");
	/* A tenant's key reaches its own data only; X-Hearth-Tenant is the admin's. */
	if (who->admin) {
		if (!t)
			return reply_error(c, 400, "TenantRequired",
					   "the admin key acts for a tenant named in X-Hearth-Tenant");
		if (store_tenant_id(u->env.store, t, &p.tenant_id))
			return reply_error(c, 404, "TenantNotFound", "no such tenant");
		snprintf(p.tenant, sizeof(p.tenant), "%s", t);
	}
	if (strcmp(what, "functions") == 0)
		return reply_json(c, 200, json_pack("{s:o}", "functions",
						    functions_json(u, p.tenant_id)));
	if (strcmp(what, "limits") == 0)
		return reply_json(c, 200, limits_json(u, p.tenant_id, p.tenant));
	const char *ls = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
	char *end = NULL;
	long limit = ls ? strtol(ls, &end, 10) : 50;

	if (ls && (*ls < '0' || *ls > '9' || *end || limit < 1 || limit > 1000))
		return reply_error(c, 400, "InvalidParameter", "limit must be 1..1000");
	return reply_json(c, 200, json_pack("{s:o}", "invocations",
					    invocations_json(u, p.tenant_id, (int)limit)));
}
