/*
 * store.h - hearthd's durable state, behind one interface with two backends
 * (store_backend.h): SQLite in WAL mode (one host; the default) and
 * PostgreSQL (a fleet of hosts sharing tenants, functions, images, limits,
 * the ledger and the async queue; see docs/fleet.md).
 *
 * The backends own the schema and every SQL statement. The schema is
 * versioned; a database whose schema is newer than the binary is refused at
 * open. One connection, guarded by a mutex, shared by all hearthd threads. Durability: each call commits before
 * it returns (WAL + synchronous=NORMAL survives a killed process; a power
 * loss may lose the last commits, never corrupt the file).
 *
 * Tables: tenants (ids never reused), deleted_tenants, api_keys (SHA-256 hashes only), aws_keys
 * (secrets sealed under the host key), functions, versions
 * (immutable, numbered per function), invocations (one row per finished
 * invocation: status, durations, logs), async_queue (durable event queue),
 * dead_letters, snapshots (index for engines that can clone).
 *
 * All functions return 0 on success or a negative errno (-ENOENT when a row
 * is missing, -EEXIST on a uniqueness clash, -EIO on an SQLite failure, which
 * is also logged).
 */
#ifndef HEARTH_STORE_H
#define HEARTH_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct store;

/* The SQLite backend on the file at path, without an image directory (no image GC). */
int store_open(const char *path, struct store **out);

/* What a fleet host tells the shared store about itself (PostgreSQL backend). */
struct store_options {
	const char *host_id;    /* unique among live hosts; default: the hostname */
	const char *address;    /* its API address, shown by `hearthctl status` */
	const char *image_dir;  /* images by hash: deploys' and (PostgreSQL) fetched ones; GC'd */
	const char *state_dir;  /* the ledger spool (records made while the database is away) */
	/*
	 * SQLite: invocation records go through a journal next to the database
	 * and are committed in batches (ledger.h). batch_us: how long a batch
	 * waits for more records (0: none).
	 */
	bool ledger_journal;
	unsigned ledger_batch_us;
};
/* true for postgresql://... and postgres://... */
bool store_is_url(const char *spec);
/*
 * spec: a PostgreSQL URL (the fleet backend; registers the host and starts
 * its heartbeat) or a SQLite file path. On failure err holds one line saying
 * why (bad connection string, server unreachable, schema too new, host id in
 * use by a live host, built without libpq).
 */
int store_open_spec(const char *spec, const struct store_options *o, struct store **out, char *err,
		    size_t errlen);
void store_close(struct store *s);
/* "sqlite" or "postgresql". */
const char *store_backend(struct store *s);

/* ---- fleet ---- */
/*
 * Concurrency slot leases. A tenant's slots are split into disjoint pools:
 * function_id 0 is the tenant's unreserved pool (limit: max_concurrency minus
 * the sum of its reservations), a function's id is that function's reserved
 * pool (limit: its reservation). Sets this host's lease of the pool to want,
 * or to what is left of the pool after the leases of the other live hosts if
 * that is less (never below 0); *held = the lease now held. The sum of all
 * live hosts' leases of a pool never exceeds its size, so admitting against
 * one's own leases keeps every pool, and so the tenant, under its limit
 * fleet-wide. A host's leases end with its heartbeat (docs/fleet.md).
 *
 * limit is the caller's view of the pool's size (0 = no limit). PostgreSQL
 * takes the smaller of it and the size the stored rows give, read in the
 * lease's own transaction, so a host whose cached limits are stale never
 * over-leases; when the reservations exceed max_concurrency (the limit was
 * lowered after them), every reserved pool shrinks by the excess there. One
 * host alone (SQLite): *held = min(want, limit), no I/O.
 */
int store_slots_lease(struct store *s, int64_t tenant_id, int64_t function_id, int64_t limit,
		      int64_t want, int64_t *held);
/*
 * Changes when this host's leases were revoked: it was cut off from the
 * store longer than a heartbeat's lifetime, so the other hosts took it for
 * dead and may have leased its slots; its lease rows are gone and every
 * lease it believes it holds is void (lease again). No I/O; 0 on SQLite.
 */
int64_t store_lease_epoch(struct store *s);
/* Hosts known to the store: host_id, address, started_at, heartbeat_ms_ago, live (SQLite: []). */
json_t *store_hosts(struct store *s);
/* How many hosts are live (heartbeat fresh), this one included; 1 alone (SQLite). */
int store_live_hosts(struct store *s, int *n);
/* 0 when the store is reachable; else -EIO and why (the host refuses new work meanwhile). */
int store_health(struct store *s, char *why, size_t n);

/* ---- image garbage collection ---- */
/*
 * Images are content-addressed (sha256): one copy per hash in the shared
 * store (PostgreSQL: images rows), and one file per hash in each host's cache
 * (image_dir/<sha256>.cpio; on SQLite that directory is the only copy).
 * store_image_gc() removes the images that no version references any more:
 * with shared, from the shared store (PostgreSQL; ignored on SQLite), and
 * always from this host's cache, together with temporary files left by a
 * crashed fetch or build (older than ten minutes).
 *
 * Safe against a deploy of the same hash on another host: store_version_add()
 * holds a key-share lock on the image's row from before its version exists
 * until it commits (re-storing the bytes if the row is gone), and removal
 * takes the row's update lock and only then looks for versions, so either the
 * version commits first and the image is kept, or the removal commits first
 * and the deploy stores the image again. The caller must keep this host's own
 * deploys out while it runs (imagegc.h): a deploy writes the image file before
 * its version exists.
 */
struct store_image_gc {
	int removed_shared;   /* rows removed from the shared store */
	int removed_local;    /* files removed from this host's image directory */
	int kept_for_deploy;  /* unreferenced when listed, referenced once locked: kept */
	uint64_t bytes;       /* freed: the shared rows' and the local files' bytes */
};
int store_image_gc(struct store *s, bool shared, struct store_image_gc *st);
/*
 * Changes when some host removed images from the shared store (seen at this
 * host's heartbeats): its own cache may hold files to remove. No I/O; 0 on
 * SQLite.
 */
int64_t store_image_gc_epoch(struct store *s);

/* ---- tenants and keys ---- */
int store_tenant_create(struct store *s, const char *name, int64_t *id);
int store_tenant_id(struct store *s, const char *name, int64_t *id);
/*
 * Deletes a tenant and everything it owned: keys, limits, functions, versions,
 * invocation records (logs), queued events, dead letters and the snapshot
 * index. Its hourly usage stays, billed to the deleted tenant (shown as
 * "<name> (deleted)" in every-tenant usage). Ids are never reused. Fills the
 * ids of its versions, so that the caller can drop their VMs (caller frees).
 */
int store_tenant_delete(struct store *s, const char *name, int64_t **ids, size_t *nids);
json_t *store_tenant_list(struct store *s);

/* tenant_id 0 = an admin key. hash is 32 bytes. */
int store_key_add(struct store *s, const char *key_id, int64_t tenant_id, const uint8_t *hash);
/* Looks a key up by id; fills the stored hash and tenant (0 = admin). */
int store_key_get(struct store *s, const char *key_id, uint8_t *hash, int64_t *tenant_id,
		  char *tenant_name, size_t namelen);
int store_key_delete(struct store *s, const char *key_id, int64_t tenant_id);
json_t *store_key_list(struct store *s, int64_t tenant_id);
bool store_has_admin_key(struct store *s);
/* AWS access keys (awskeys.h): the secret is stored sealed, never in clear. */
int store_aws_key_add(struct store *s, const char *key_id, int64_t tenant_id, const uint8_t *sealed,
		      size_t len);
/* *len: the buffer's size in, the sealed length out. -ENOENT if no such key. */
int store_aws_key_get(struct store *s, const char *key_id, int64_t *tenant_id, char *tenant_name,
		      size_t namelen, uint8_t *sealed, size_t *len);
int store_aws_key_delete(struct store *s, const char *key_id, int64_t tenant_id);
json_t *store_aws_key_list(struct store *s, int64_t tenant_id);

/* ---- tenant limits (0 = unlimited) ---- */
struct tenant_limits {
	int64_t max_concurrency;
	int64_t max_memory_mb;      /* memory of invocations running at once */
	int64_t rate_per_s;         /* token bucket refill */
	int64_t burst;              /* token bucket size */
	int64_t max_functions;
	int64_t max_package_bytes;
	int64_t budget_mb_ms;       /* per calendar month (UTC); 1 GB-s = 1,024,000 MB-ms */
	int64_t max_code_bytes;     /* code storage: the bytes of the images of the tenant's
				     * versions, each distinct image once (store_code_bytes) */
};
int store_limits_get(struct store *s, int64_t tenant_id, struct tenant_limits *l);
int store_limits_set(struct store *s, int64_t tenant_id, const struct tenant_limits *l);
/*
 * The tenant's code storage: the bytes of the distinct images its versions
 * use (SQLite: the image files on this host; PostgreSQL: the shared images).
 * *has_sha: whether image sha256 (may be NULL) is among them already, so that
 * a deploy of the same package adds nothing.
 */
int store_code_bytes(struct store *s, int64_t tenant_id, const char *sha256, int64_t *bytes,
		     bool *has_sha);

/* ---- usage ---- */
/* MB-ms billed to the tenant since since_us: invocations and provisioned VMs. */
uint64_t store_usage_since(struct store *s, int64_t tenant_id, int64_t since_us);
/*
 * Usage between from_us and to_us from the hourly aggregates, grouped by
 * "hour", "function" or "none". tenant_id 0 = every tenant (admin).
 */
json_t *store_usage_query(struct store *s, int64_t tenant_id, int64_t from_us, int64_t to_us,
			  const char *group_by);

/* ---- snapshot index (engines that clone) ---- */
int store_snapshot_put(struct store *s, int64_t version_id, const char *engine, const char *kernel_id,
		       const char *vmm_version, const char *shape, const char *mem, const char *state);
int store_snapshot_get(struct store *s, int64_t version_id, const char *engine, const char *kernel_id,
		       const char *vmm_version, const char *shape, char *mem, size_t memlen,
		       char *state, size_t statelen);

/* ---- functions and versions ---- */
struct fn_version {
	int64_t id;           /* versions.id, unique across functions */
	int64_t function_id;
	int64_t tenant_id;
	char name[128];
	int version;
	char image_sha256[65];
	char image_path[512];
	char handler[512];
	char *args_json;      /* JSON array */
	char *env_json;       /* JSON object */
	char init[512];
	uint32_t memory_mb;
	uint32_t timeout_ms;
	char engine[16];
	char runtime[16];     /* "" = exec mode; "provided" = a Lambda custom runtime (bootstrap) */
	uint64_t package_bytes;
	int provisioned;      /* the function's provisioned count */
};
void fn_version_free(struct fn_version *v);

/* Creates the function if needed and appends a version; fills v->id, v->version. */
int store_version_add(struct store *s, struct fn_version *v);
/* version 0 = latest. */
int store_version_get(struct store *s, int64_t tenant_id, const char *name, int version,
		      struct fn_version *v);
int store_version_by_id(struct store *s, int64_t version_id, struct fn_version *v);
json_t *store_function_list(struct store *s, int64_t tenant_id);
json_t *store_function_get(struct store *s, int64_t tenant_id, const char *name);
/* Deletes the function; fills the ids of its versions (caller frees *ids). */
int store_function_delete(struct store *s, int64_t tenant_id, const char *name, int64_t **ids,
			  size_t *nids);
int store_function_set_provisioned(struct store *s, int64_t tenant_id, const char *name, int n);
/* Reserved concurrency of a function (0 = none). */
int store_function_set_reserved(struct store *s, int64_t tenant_id, const char *name, int64_t n);
/* Reservations of a tenant's functions (tenant 0 = every tenant): (function id, reserved) pairs. */
int store_reservations(struct store *s, int64_t tenant_id, int64_t **ids, int64_t **res, size_t *n);
/* Reserved concurrency of one function (by functions.id); 0 if none. */
int64_t store_function_reserved(struct store *s, int64_t function_id);
/* Sum of reservations of a tenant (0 = every tenant), leaving out one function of that tenant. */
int64_t store_reserved_sum(struct store *s, int64_t tenant_id, const char *except_name);
/* Versions whose function wants provisioned VMs: (version_id, count) pairs of latest versions. */
int store_provisioned_list(struct store *s, int64_t **ids, int **counts, size_t *n);
int store_function_count(struct store *s, int64_t tenant_id, int64_t *n);
/*
 * Latest versions for the Lambda API: name, version, handler, memory_mb,
 * timeout_ms, image_sha256, package_bytes, engine, created_at. One function
 * (name given; version 0 = latest), or up to limit functions whose names sort after `after`.
 */
json_t *store_lambda_functions(struct store *s, int64_t tenant_id, const char *name, int version,
			       const char *after, int limit);

/* ---- invocations (finished) ---- */
struct inv_record {
	const char *request_id;
	int attempt;               /* 1 for sync; async attempts count from 1 */
	int64_t tenant_id;
	int64_t version_id;
	const char *function;
	int version;
	const char *kind;          /* "sync" or "event" */
	int64_t start_us;          /* wall clock, µs since the epoch */
	int64_t end_us;
	uint64_t duration_us;
	uint64_t billed_ms;
	uint64_t mb_ms;            /* memory_mb x billed_ms */
	uint32_t memory_mb;
	uint64_t max_rss_kb;
	bool cold;
	const char *cold_path;     /* "boot" or "restore" (cold starts; NULL = "boot") */
	uint64_t init_ms;
	uint64_t boot_ms;          /* the boot or the restore, after cold_path */
	const char *status;        /* "Success", "FunctionError", "Timeout", ... */
	const char *error;
	const uint8_t *logs;
	size_t logs_len;
};
/*
 * Records one invocation. With the ledger journal (store_options), it is on
 * file when this returns and committed within milliseconds; every reader of
 * records waits for that commit first.
 */
int store_invocation_add(struct store *s, const struct inv_record *r);
/*
 * Records that neither the journal nor the store would take (a full disk) are
 * held in memory until they do (ledger.h). How many are held now; hearthd
 * refuses new invocations while this is not 0.
 */
size_t store_records_held(struct store *s);
/* n records in one transaction (rcs[i]: each one's outcome, -EEXIST if stored before). */
int store_invocation_add_batch(struct store *s, const struct inv_record *r, size_t n, int *rcs);
json_t *store_invocation_logs(struct store *s, int64_t tenant_id, const char *function, int limit);

/* ---- async queue ---- */
struct async_item {
	char request_id[64];
	int64_t tenant_id;
	int64_t version_id;
	uint8_t *payload;
	size_t payload_len;
	int attempts;
	int64_t created_ms;
};
void async_item_free(struct async_item *a);
int store_async_put(struct store *s, const char *request_id, int64_t tenant_id, int64_t version_id,
		    const void *payload, size_t len, int64_t now_ms);
/* Claims up to max due items (state queued, next_at <= now): marks them running. */
int store_async_claim(struct store *s, int64_t now_ms, struct async_item *items, int max, int *n);
enum async_action { ASYNC_SUCCEEDED, ASYNC_RETRY, ASYNC_DEAD };
/*
 * Records an attempt (its invocation row) and its consequence in ONE
 * transaction: after a crash either both are there or neither, so an attempt
 * is never reported twice and a success never re-run after it was recorded.
 */
int store_async_complete(struct store *s, const struct inv_record *r, enum async_action action,
			 int attempts, int64_t next_ms, const char *error, int64_t now_ms);
/* Puts a claimed event back, untried, until next_ms (admission said "not now"). */
int store_async_defer(struct store *s, const char *request_id, int64_t next_ms);
/* Crash recovery: items left "running" by a killed hearthd go back to the queue. */
int store_async_recover(struct store *s, int *n);
/* Earliest next_at of queued items, or -1. */
int64_t store_async_next_due(struct store *s);
json_t *store_async_get(struct store *s, int64_t tenant_id, const char *request_id);
json_t *store_dead_letters(struct store *s, int64_t tenant_id, int limit);

#endif
