/*
 * store.c - the store interface (store.h): picks a backend at open and
 * dispatches every operation to it (see store_backend.h).
 */
#include "store_backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ledger.h"
#include "log.h"

struct store {
	const struct store_ops *ops;
	void *impl;
	struct ledger *ledger; /* invocation records go through it (SQLite, when asked) */
};

static int wrap(const struct store_ops *ops, void *impl, struct store **out)
{
	struct store *s = calloc(1, sizeof(*s));

	if (!s) {
		ops->close(impl);
		return -ENOMEM;
	}
	s->ops = ops;
	s->impl = impl;
	*out = s;
	return 0;
}

/* The ledger's store side: the backend's batch commit. */
static int commit_records(void *ctx, const struct inv_record *r, size_t n, int *rcs)
{
	struct store *s = ctx;

	return s->ops->invocation_add_batch(s->impl, r, n, rcs);
}

int store_open(const char *path, struct store **out)
{
	const struct store_ops *ops;
	void *impl;
	int rc = store_sqlite_open(path, NULL, &ops, &impl);

	return rc ? rc : wrap(ops, impl, out);
}

bool store_is_url(const char *spec)
{
	return strncmp(spec, "postgresql://", 13) == 0 || strncmp(spec, "postgres://", 11) == 0;
}

int store_open_spec(const char *spec, const struct store_options *o, struct store **out, char *err,
		    size_t errlen)
{
	const struct store_ops *ops;
	void *impl;
	int rc;

	if (errlen)
		err[0] = 0;
	if (!store_is_url(spec)) {
		rc = store_sqlite_open(spec, o ? o->image_dir : NULL, &ops, &impl);
		if (rc && errlen)
			snprintf(err, errlen, "cannot open the SQLite store %s (see the log above)", spec);
	} else {
		rc = store_pg_open(spec, o, &ops, &impl, err, errlen);
	}
	if (rc || (rc = wrap(ops, impl, out)))
		return rc;
	if (!store_is_url(spec) && o && o->ledger_journal) {
		char base[4200];

		snprintf(base, sizeof(base), "%s-ledger", spec);
		rc = ledger_open(base, commit_records, *out, o->ledger_batch_us, &(*out)->ledger);
		if (rc) {
			if (errlen)
				snprintf(err, errlen, "cannot open the ledger journal %s.{0,1}: %s", base,
					 strerror(-rc));
			store_close(*out);
			*out = NULL;
		}
	}
	return rc;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	ledger_close(s->ledger); /* commits what it holds first */
	s->ops->close(s->impl);
	free(s);
}

const char *store_backend(struct store *s)
{
	return s->ops->backend;
}

void fn_version_free(struct fn_version *v)
{
	free(v->args_json);
	free(v->env_json);
	v->args_json = v->env_json = NULL;
}

void async_item_free(struct async_item *a)
{
	free(a->payload);
	a->payload = NULL;
}

/*
 * Before an operation that reads or deletes what invocation records feed:
 * what the ledger holds is committed first, so callers read their own writes
 * and a deletion leaves nothing behind to land after it.
 */
static void ledger_first(struct store *s)
{
	if (s->ledger && ledger_sync(s->ledger, 10000))
		hlog_warn("store", "the ledger journal could not be committed in 10 s: this read "
				   "may miss the newest invocation records");
}

int store_invocation_add(struct store *s, const struct inv_record *r)
{
	if (!s->ledger)
		return s->ops->invocation_add(s->impl, r);
	if (ledger_add(s->ledger, r) == 0)
		return 0;
	/* Not on file (a full disk, say): commit it directly rather than lose it, */
	if (s->ops->invocation_add(s->impl, r) == 0)
		return 0;
	/* or hold it in memory until the disk takes it (new calls are refused meanwhile). */
	return ledger_hold(s->ledger, r);
}

size_t store_records_held(struct store *s)
{
	return s->ledger ? ledger_held(s->ledger) : 0;
}

/* Every other operation: store_<op>(s, ...) -> the backend's. */
#define S struct store *s
#define IMPL s->impl
#define STORE_OP(R, N, P, A) R store_##N P { return s->ops->N A; }
#define STORE_OP_LEDGER_READ(R, N, P, A) R store_##N P { ledger_first(s); return s->ops->N A; }
#define STORE_OP_LEDGER_WRITE(R, N, P, A)
#include "store_ops.def"
#undef STORE_OP
#undef STORE_OP_LEDGER_READ
#undef STORE_OP_LEDGER_WRITE
#undef S
#undef IMPL

/* ---- invocation records as JSON (the ledger journal, PostgreSQL's spool) ---- */

json_t *store_record_json(const struct inv_record *r)
{
	size_t n = r->logs_len;
	char *b64 = malloc(4 * ((n + 2) / 3) + 1);
	json_t *j;

	if (!b64)
		return NULL;
	EVP_EncodeBlock((unsigned char *)b64, r->logs ? r->logs : (const uint8_t *)"", (int)n);
	j = json_pack("{s:s,s:i,s:I,s:I,s:s,s:i,s:s,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:b,s:s?,"
		      "s:I,s:I,s:s,s:s?,s:s}",
		      "request_id", r->request_id, "attempt", r->attempt,
		      "tenant_id", (json_int_t)r->tenant_id, "version_id", (json_int_t)r->version_id,
		      "function", r->function, "version", r->version, "kind", r->kind,
		      "start_us", (json_int_t)r->start_us, "end_us", (json_int_t)r->end_us,
		      "duration_us", (json_int_t)r->duration_us, "billed_ms", (json_int_t)r->billed_ms,
		      "mb_ms", (json_int_t)r->mb_ms, "memory_mb", (int)r->memory_mb,
		      "max_rss_kb", (json_int_t)r->max_rss_kb, "cold", r->cold,
		      "cold_path", r->cold_path, "init_ms", (json_int_t)r->init_ms,
		      "boot_ms", (json_int_t)r->boot_ms, "status", r->status, "error", r->error,
		      "logs64", b64);
	free(b64);
	return j;
}

static int64_t ji(json_t *j, const char *k)
{
	return (int64_t)json_integer_value(json_object_get(j, k));
}

static const char *js(json_t *j, const char *k)
{
	return json_string_value(json_object_get(j, k));
}

static int decode_logs(json_t *j, uint8_t **logs, size_t *len)
{
	const char *b64 = js(j, "logs64"), *hex = js(j, "logs");
	size_t n = b64 ? strlen(b64) : hex ? strlen(hex) / 2 : 0;
	uint8_t *out = malloc(n ? n : 1);

	*logs = out;
	*len = 0;
	if (!out)
		return -ENOMEM;
	if (b64) {
		int k = n ? EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n) : 0;

		if (k < 0 || n % 4)
			return -EINVAL;
		/* EVP_DecodeBlock counts the padding as zero bytes. */
		for (size_t i = n; i > 0 && b64[i - 1] == '=' && k > 0; i--)
			k--;
		*len = (size_t)k;
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned v = 0;

		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	*len = n;
	return 0;
}

int store_record_parse(json_t *j, struct inv_record *r, uint8_t **logs)
{
	size_t n = 0;
	int rc = decode_logs(j, logs, &n);

	*r = (struct inv_record){
		.request_id = js(j, "request_id"), .attempt = (int)ji(j, "attempt"),
		.tenant_id = ji(j, "tenant_id"), .version_id = ji(j, "version_id"),
		.function = js(j, "function"), .version = (int)ji(j, "version"),
		.kind = js(j, "kind"), .start_us = ji(j, "start_us"), .end_us = ji(j, "end_us"),
		.duration_us = (uint64_t)ji(j, "duration_us"), .billed_ms = (uint64_t)ji(j, "billed_ms"),
		.mb_ms = (uint64_t)ji(j, "mb_ms"), .memory_mb = (uint32_t)ji(j, "memory_mb"),
		.max_rss_kb = (uint64_t)ji(j, "max_rss_kb"),
		.cold = json_is_true(json_object_get(j, "cold")), .cold_path = js(j, "cold_path"),
		.init_ms = (uint64_t)ji(j, "init_ms"), .boot_ms = (uint64_t)ji(j, "boot_ms"),
		.status = js(j, "status"), .error = js(j, "error"), .logs = *logs, .logs_len = n,
	};
	if (rc)
		return rc;
	if (!r->request_id || !r->function || !r->kind || !r->status || r->attempt < 1)
		return -EINVAL;
	return 0;
}
