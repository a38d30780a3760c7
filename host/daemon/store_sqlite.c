/*
 * store_sqlite.c - the SQLite backend of the store interface (store.h): one
 * hearthd with its state in one file (WAL mode). The default backend.
 */
#include "store_backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "log.h"

/* This file's handle: struct store here is the SQLite backend's own state. */
#define store sq_store

/* One invocation record waiting for the group commit that makes it durable. */
struct ledger_entry {
	const struct inv_record *rec;
	int rc;
	bool done;
	struct ledger_entry *next;
};

struct store {
	sqlite3 *db;
	pthread_mutex_t mu;
	/* group commit of invocation records (see store_invocation_add) */
	pthread_mutex_t lq_mu;
	pthread_cond_t lq_cond;
	struct ledger_entry *lq_head, *lq_tail;
	bool lq_leader;
	/* prepared statements of the hot paths, keyed by their (literal) SQL text */
	struct {
		const char *sql;
		sqlite3_stmt *st;
	} cache[32];
	int ncache;
	char *image_dir; /* the images (image GC); NULL = none */
};

#define STORE_STR_(x) #x
#define STORE_STR(x) STORE_STR_(x)

static const char *const schema =
	"PRAGMA foreign_keys=ON;"
	/* AUTOINCREMENT: an id is never handed out twice, even after the newest tenant is deleted. */
	"CREATE TABLE IF NOT EXISTS tenants("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL, created_at INTEGER NOT NULL);"
	/* Who a deleted tenant was: its usage stays billed to it. */
	"CREATE TABLE IF NOT EXISTS deleted_tenants("
	"  id INTEGER PRIMARY KEY, name TEXT NOT NULL, deleted_at INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS api_keys("
	"  key_id TEXT PRIMARY KEY, tenant_id INTEGER REFERENCES tenants(id) ON DELETE CASCADE,"
	"  hash BLOB NOT NULL, created_at INTEGER NOT NULL);"
	/* AWS SigV4 access keys: the secret sealed with AES-256-GCM under the host key (awskeys.h). */
	"CREATE TABLE IF NOT EXISTS aws_keys("
	"  key_id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
	"  sealed BLOB NOT NULL, created_at INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS functions("
	"  id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
	"  name TEXT NOT NULL, latest INTEGER NOT NULL DEFAULT 0, provisioned INTEGER NOT NULL DEFAULT 0,"
	"  reserved INTEGER NOT NULL DEFAULT 0,"
	"  created_at INTEGER NOT NULL, UNIQUE(tenant_id, name));"
	"CREATE TABLE IF NOT EXISTS versions("
	"  id INTEGER PRIMARY KEY, function_id INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,"
	"  version INTEGER NOT NULL, image_sha256 TEXT NOT NULL, image_path TEXT NOT NULL,"
	"  handler TEXT NOT NULL, args TEXT NOT NULL, env TEXT NOT NULL, init TEXT NOT NULL,"
	"  memory_mb INTEGER NOT NULL, timeout_ms INTEGER NOT NULL, engine TEXT NOT NULL,"
	"  package_bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, UNIQUE(function_id, version));"
	/* Image GC asks whether any version still uses an image. */
	"CREATE INDEX IF NOT EXISTS versions_by_image ON versions(image_sha256);"
	"CREATE TABLE IF NOT EXISTS invocations("
	"  request_id TEXT NOT NULL, attempt INTEGER NOT NULL, tenant_id INTEGER NOT NULL,"
	"  version_id INTEGER NOT NULL,"
	"  function TEXT NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL,"
	"  start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, duration_us INTEGER NOT NULL,"
	"  billed_ms INTEGER NOT NULL, memory_mb INTEGER NOT NULL, max_rss_kb INTEGER NOT NULL,"
	"  cold INTEGER NOT NULL, init_ms INTEGER NOT NULL, boot_ms INTEGER NOT NULL,"
	"  status TEXT NOT NULL, error TEXT, logs BLOB, mb_ms INTEGER NOT NULL DEFAULT 0,"
	"  cold_path TEXT,"
	"  PRIMARY KEY(request_id, attempt));"
	"CREATE TABLE IF NOT EXISTS usage_hourly("
	"  tenant_id INTEGER NOT NULL, function TEXT NOT NULL, hour INTEGER NOT NULL,"
	"  invocations INTEGER NOT NULL, errors INTEGER NOT NULL, cold_starts INTEGER NOT NULL,"
	"  duration_us INTEGER NOT NULL, billed_ms INTEGER NOT NULL, mb_ms INTEGER NOT NULL,"
	"  provisioned_ms INTEGER NOT NULL DEFAULT 0, provisioned_mb_ms INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY(tenant_id, function, hour));"
	"CREATE TABLE IF NOT EXISTS tenant_limits("
	"  tenant_id INTEGER PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,"
	"  max_concurrency INTEGER NOT NULL, max_memory_mb INTEGER NOT NULL,"
	"  rate_per_s INTEGER NOT NULL, burst INTEGER NOT NULL, max_functions INTEGER NOT NULL,"
	"  max_package_bytes INTEGER NOT NULL, budget_mb_ms INTEGER NOT NULL,"
	"  max_code_bytes INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS invocations_by_fn ON invocations(tenant_id, function, start_us);"
	"CREATE TABLE IF NOT EXISTS async_queue("
	"  request_id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL, version_id INTEGER NOT NULL,"
	"  payload BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL,"
	"  next_at_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, last_error TEXT);"
	"CREATE INDEX IF NOT EXISTS async_due ON async_queue(state, next_at_ms);"
	"CREATE TABLE IF NOT EXISTS dead_letters("
	"  request_id TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL, function TEXT NOT NULL,"
	"  version INTEGER NOT NULL, payload BLOB NOT NULL, attempts INTEGER NOT NULL,"
	"  reason TEXT NOT NULL, failed_ms INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS snapshots("
	"  version_id INTEGER NOT NULL, engine TEXT NOT NULL, kernel_id TEXT NOT NULL,"
	"  vmm_version TEXT NOT NULL, shape TEXT NOT NULL, mem_path TEXT NOT NULL,"
	"  state_path TEXT NOT NULL, created_at INTEGER NOT NULL,"
	"  PRIMARY KEY(version_id, engine, kernel_id, vmm_version, shape));";

/*
 * Databases made before tenant ids were AUTOINCREMENT: rebuild the tenants
 * table with it (SQLite's documented table rebuild, foreign keys off), and
 * start the sequence above every tenant id any table still mentions, so the id
 * of a tenant deleted before this upgrade is not handed out again either.
 */
static const char *const migrate_tenants =
	"PRAGMA foreign_keys=OFF;"
	"BEGIN IMMEDIATE;"
	"CREATE TABLE tenants_new("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL, created_at INTEGER NOT NULL);"
	"INSERT INTO tenants_new(id, name, created_at) SELECT id, name, created_at FROM tenants;"
	"DROP TABLE tenants;"
	"ALTER TABLE tenants_new RENAME TO tenants;"
	"COMMIT;"
	"PRAGMA foreign_keys=ON;";

static const char *const seed_tenant_sequence =
	"INSERT INTO sqlite_sequence(name, seq) SELECT 'tenants', 0"
	"  WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'tenants');"
	"UPDATE sqlite_sequence SET seq = MAX(seq,"
	"  IFNULL((SELECT MAX(id) FROM tenants), 0),"
	"  IFNULL((SELECT MAX(id) FROM deleted_tenants), 0),"
	"  IFNULL((SELECT MAX(tenant_id) FROM invocations), 0),"
	"  IFNULL((SELECT MAX(tenant_id) FROM usage_hourly), 0),"
	"  IFNULL((SELECT MAX(tenant_id) FROM async_queue), 0),"
	"  IFNULL((SELECT MAX(tenant_id) FROM dead_letters), 0)) WHERE name = 'tenants';";

/* Adds table.column (declared as decl) to a database made before it existed. */
static int add_column(struct store *s, const char *table, const char *column, const char *decl,
		      char **err)
{
	sqlite3_stmt *st = NULL;
	bool has = false;
	char sql[256];

	snprintf(sql, sizeof(sql), "SELECT 1 FROM pragma_table_info('%s') WHERE name = '%s'", table,
		 column);
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK)
		has = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	if (has)
		return 0;
	snprintf(sql, sizeof(sql), "ALTER TABLE %s ADD COLUMN %s %s", table, column, decl);
	return sqlite3_exec(s->db, sql, NULL, NULL, err) == SQLITE_OK ? 0 : -EIO;
}

static int sq_migrate(struct store *s, char **err)
{
	sqlite3_stmt *st = NULL;
	bool old = false;

	/*
	 * Columns newer than some databases: runtime mode ('' = exec), the code
	 * storage limit, and the cold-start path of invocations ("boot"/"restore").
	 */
	if (add_column(s, "versions", "runtime", "TEXT NOT NULL DEFAULT ''", err) ||
	    add_column(s, "tenant_limits", "max_code_bytes", "INTEGER NOT NULL DEFAULT 0", err) ||
	    add_column(s, "invocations", "cold_path", "TEXT", err))
		return -EIO;
	if (sqlite3_prepare_v2(s->db, "SELECT sql FROM sqlite_master WHERE type = 'table' AND"
			       " name = 'tenants'", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		const unsigned char *sql = sqlite3_column_text(st, 0);

		old = sql && !strstr((const char *)sql, "AUTOINCREMENT");
	}
	sqlite3_finalize(st);
	if (old && sqlite3_exec(s->db, migrate_tenants, NULL, NULL, err) != SQLITE_OK) {
		sqlite3_exec(s->db, "ROLLBACK; PRAGMA foreign_keys=ON;", NULL, NULL, NULL);
		return -EIO;
	}
	return sqlite3_exec(s->db, seed_tenant_sequence, NULL, NULL, err) == SQLITE_OK ? 0 : -EIO;
}

/*
 * The schema's version is SQLite's user_version: 0 = a database made before
 * versions were recorded (brought up to 1 by the idempotent steps above), 1 =
 * the schema above. A database newer than this binary is refused: its
 * meaning is unknown here and writing to it could damage it.
 */
static void sq_close(struct store *s);

static int sq_schema_version(struct store *s, const char *path, int *ver)
{
	sqlite3_stmt *st = NULL;

	*ver = 0;
	if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		hlog_error("store", "%s: cannot read the schema version: %s", path,
			   sqlite3_errmsg(s->db));
		sqlite3_finalize(st);
		return -EIO;
	}
	*ver = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (*ver > STORE_SQLITE_SCHEMA) {
		hlog_error("store", "%s: schema version %d is newer than this hearthd's (%d); "
			   "refusing to open it (run a newer hearthd)", path, *ver,
			   STORE_SQLITE_SCHEMA);
		return -EPROTO;
	}
	return 0;
}

static int sq_open(const char *path, struct store **out)
{
	struct store *s = calloc(1, sizeof(*s));
	char *err = NULL;
	int ver = 0;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->lq_mu, NULL);
	pthread_cond_init(&s->lq_cond, NULL);
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		hlog_error("store", "open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "no memory");
		sq_close(s);
		return -EIO;
	}
	sqlite3_busy_timeout(s->db, 5000);
	if (sq_schema_version(s, path, &ver)) {
		sq_close(s);
		return -EPROTO;
	}
	if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
			 &err) != SQLITE_OK ||
	    sqlite3_exec(s->db, schema, NULL, NULL, &err) != SQLITE_OK || sq_migrate(s, &err) ||
	    (ver < STORE_SQLITE_SCHEMA &&
	     sqlite3_exec(s->db, "PRAGMA user_version = " STORE_STR(STORE_SQLITE_SCHEMA), NULL,
			  NULL, &err) != SQLITE_OK)) {
		hlog_error("store", "schema: %s", err ? err : "?");
		sqlite3_free(err);
		sq_close(s);
		return -EIO;
	}
	*out = s;
	return 0;
}

static void sq_close(struct store *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->ncache; i++)
		sqlite3_finalize(s->cache[i].st);
	sqlite3_close(s->db);
	pthread_mutex_destroy(&s->mu);
	free(s->image_dir);
	free(s);
}

/*
 * Prepares sql and binds arguments described by fmt: i = int64, t = text
 * (NULL allowed), b = blob (pointer, size_t length), n = NULL (no argument).
 * The caller holds s->mu.
 */
static void bind_args(sqlite3_stmt *st, const char *fmt, va_list ap);

static sqlite3_stmt *prep(struct store *s, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st;
	va_list ap;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		hlog_error("store", "prepare: %s (%s)", sqlite3_errmsg(s->db), sql);
		return NULL;
	}
	va_start(ap, fmt);
	bind_args(st, fmt, ap);
	va_end(ap);
	return st;
}

/*
 * Like prep(), for hot paths: the statement is prepared once and kept (sql
 * must be a string literal: the cache is keyed by its address). Release it
 * with done(), never sqlite3_finalize().
 */
static sqlite3_stmt *prepc(struct store *s, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st = NULL;
	va_list ap;
	int i;

	for (i = 0; i < s->ncache; i++)
		if (s->cache[i].sql == sql) {
			st = s->cache[i].st;
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			break;
		}
	if (!st) {
		if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
		    SQLITE_OK) {
			hlog_error("store", "prepare: %s (%s)", sqlite3_errmsg(s->db), sql);
			return NULL;
		}
		if (s->ncache < (int)(sizeof(s->cache) / sizeof(s->cache[0]))) {
			s->cache[s->ncache].sql = sql;
			s->cache[s->ncache++].st = st;
		}
	}
	va_start(ap, fmt);
	bind_args(st, fmt, ap);
	va_end(ap);
	return st;
}

/* Finishes with a statement from prep() or prepc(). */
static void done(struct store *s, sqlite3_stmt *st)
{
	for (int i = 0; i < s->ncache; i++)
		if (s->cache[i].st == st) {
			sqlite3_reset(st);
			return;
		}
	sqlite3_finalize(st);
}

static void bind_args(sqlite3_stmt *st, const char *fmt, va_list ap)
{
	int i = 1;

	for (const char *f = fmt; f && *f; f++, i++) {
		if (*f == 'i') {
			sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
		} else if (*f == 't') {
			const char *t = va_arg(ap, const char *);

			if (t)
				sqlite3_bind_text(st, i, t, -1, SQLITE_TRANSIENT);
			else
				sqlite3_bind_null(st, i);
		} else if (*f == 'n') {
			sqlite3_bind_null(st, i);
		} else if (*f == 'b') {
			const void *p = va_arg(ap, const void *);
			size_t n = va_arg(ap, size_t);

			sqlite3_bind_blob64(st, i, p ? p : "", n, SQLITE_TRANSIENT);
		}
	}
}

/* Runs a statement that returns no rows; maps constraint failures to -EEXIST. */
static int run(struct store *s, sqlite3_stmt *st)
{
	int rc;

	if (!st)
		return -EIO;
	rc = sqlite3_step(st);
	done(s, st);
	if (rc == SQLITE_DONE)
		return 0;
	if (rc == SQLITE_CONSTRAINT)
		return -EEXIST;
	hlog_error("store", "step: %s", sqlite3_errmsg(s->db));
	return -EIO;
}

static void lock(struct store *s) { pthread_mutex_lock(&s->mu); }
static void unlock(struct store *s) { pthread_mutex_unlock(&s->mu); }

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

static void copy_col(sqlite3_stmt *st, int col, char *dst, size_t n)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	snprintf(dst, n, "%s", t ? (const char *)t : "");
}

/* Turns every row of st into a JSON object keyed by column name. */
static json_t *rows_json(sqlite3_stmt *st)
{
	json_t *arr = json_array();

	while (st && sqlite3_step(st) == SQLITE_ROW) {
		json_t *o = json_object();

		for (int c = 0; c < sqlite3_column_count(st); c++) {
			const char *name = sqlite3_column_name(st, c);

			switch (sqlite3_column_type(st, c)) {
			case SQLITE_INTEGER:
				json_object_set_new(o, name, json_integer(sqlite3_column_int64(st, c)));
				break;
			case SQLITE_NULL:
				json_object_set_new(o, name, json_null());
				break;
			case SQLITE_BLOB: {
				/* Logs and payloads: shown as text with invalid UTF-8 replaced. */
				int n = sqlite3_column_bytes(st, c);
				const char *p = sqlite3_column_blob(st, c);
				json_t *v = json_stringn(p ? p : "", (size_t)n);

				if (!v) {
					char *t = malloc((size_t)n + 1);

					for (int k = 0; t && k < n; k++)
						t[k] = (p[k] & 0x80) ? '?' : p[k];
					if (t)
						t[n] = 0;
					v = json_stringn(t ? t : "", t ? (size_t)n : 0);
					free(t);
				}
				json_object_set_new(o, name, v);
				break;
			}
			default:
				json_object_set_new(o, name,
						    json_string((const char *)sqlite3_column_text(st, c)));
			}
		}
		json_array_append_new(arr, o);
	}
	if (st)
		sqlite3_finalize(st);
	return arr;
}

/* ---- tenants and keys ---------------------------------------------------- */

static int sq_tenant_create(struct store *s, const char *name, int64_t *id)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "INSERT INTO tenants(name, created_at) VALUES(?, ?)", "ti", name, now_s()));
	if (rc == 0 && id)
		*id = sqlite3_last_insert_rowid(s->db);
	unlock(s);
	return rc;
}

static int sq_tenant_id(struct store *s, const char *name, int64_t *id)
{
	sqlite3_stmt *st;
	int rc = -ENOENT;

	lock(s);
	st = prep(s, "SELECT id FROM tenants WHERE name = ?", "t", name);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		rc = 0;
	}
	sqlite3_finalize(st);
	unlock(s);
	return rc;
}

static int sq_tenant_delete(struct store *s, const char *name, int64_t **ids, size_t *nids)
{
	static const char *const owned[] = {
		/* what the tenant ran and sent: logs, payloads, results */
		"DELETE FROM invocations WHERE tenant_id = ?",
		"DELETE FROM async_queue WHERE tenant_id = ?",
		"DELETE FROM dead_letters WHERE tenant_id = ?",
		"DELETE FROM snapshots WHERE version_id IN (SELECT v.id FROM versions v"
		"  JOIN functions f ON f.id = v.function_id WHERE f.tenant_id = ?)",
		/* keys, limits, functions and versions go by ON DELETE CASCADE */
		"DELETE FROM tenants WHERE id = ?",
	};
	sqlite3_stmt *st;
	int64_t id = 0, *v = NULL;
	size_t n = 0, cap = 0;
	int rc = -ENOENT;

	*ids = NULL;
	*nids = 0;
	lock(s);
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		unlock(s);
		return -EIO;
	}
	st = prep(s, "SELECT id FROM tenants WHERE name = ?", "t", name);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		id = sqlite3_column_int64(st, 0);
		rc = 0;
	}
	sqlite3_finalize(st);
	if (rc)
		goto out;
	st = prep(s, "SELECT v.id FROM versions v JOIN functions f ON f.id = v.function_id"
		     " WHERE f.tenant_id = ?", "i", id);
	while (st && sqlite3_step(st) == SQLITE_ROW) {
		if (n == cap) {
			int64_t *nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof(*v));

			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		v[n++] = sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	/* Usage stays (it is billed), under the deleted tenant's own identity. */
	if (rc == 0)
		rc = run(s, prep(s, "INSERT OR REPLACE INTO deleted_tenants(id, name, deleted_at)"
				    " VALUES(?,?,?)", "iti", id, name, now_s()));
	for (size_t i = 0; rc == 0 && i < sizeof(owned) / sizeof(owned[0]); i++)
		rc = run(s, prep(s, owned[i], "i", id));
out:
	sqlite3_exec(s->db, rc ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
	unlock(s);
	if (rc) {
		free(v);
		return rc;
	}
	*ids = v;
	*nids = n;
	return 0;
}

static json_t *sq_tenant_list(struct store *s)
{
	json_t *j;

	lock(s);
	j = rows_json(prep(s, "SELECT t.name, t.created_at, "
			      "(SELECT COUNT(*) FROM functions f WHERE f.tenant_id = t.id) AS functions "
			      "FROM tenants t ORDER BY t.name", NULL));
	unlock(s);
	return j;
}

static int sq_key_add(struct store *s, const char *key_id, int64_t tenant_id, const uint8_t *hash)
{
	int rc;

	lock(s);
	if (tenant_id)
		rc = run(s, prep(s, "INSERT INTO api_keys(key_id, tenant_id, hash, created_at)"
				    " VALUES(?,?,?,?)", "tibi", key_id, tenant_id, hash, (size_t)32, now_s()));
	else /* an admin key belongs to no tenant */
		rc = run(s, prep(s, "INSERT INTO api_keys(key_id, tenant_id, hash, created_at)"
				    " VALUES(?,?,?,?)", "tnbi", key_id, hash, (size_t)32, now_s()));
	unlock(s);
	return rc;
}

static int sq_key_get(struct store *s, const char *key_id, uint8_t *hash, int64_t *tenant_id,
		  char *tenant_name, size_t namelen)
{
	sqlite3_stmt *st;
	int rc = -ENOENT;

	lock(s);
	st = prepc(s, "SELECT k.hash, IFNULL(k.tenant_id, 0), IFNULL(t.name, '') FROM api_keys k "
		      "LEFT JOIN tenants t ON t.id = k.tenant_id WHERE k.key_id = ?", "t", key_id);
	if (st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 32) {
		memcpy(hash, sqlite3_column_blob(st, 0), 32);
		*tenant_id = sqlite3_column_int64(st, 1);
		copy_col(st, 2, tenant_name, namelen);
		rc = 0;
	}
	if (st)
		done(s, st);
	unlock(s);
	return rc;
}

static int sq_key_delete(struct store *s, const char *key_id, int64_t tenant_id)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "DELETE FROM api_keys WHERE key_id = ? AND tenant_id = ?", "ti", key_id,
			 tenant_id));
	if (rc == 0 && sqlite3_changes(s->db) == 0)
		rc = -ENOENT;
	unlock(s);
	return rc;
}

static json_t *sq_key_list(struct store *s, int64_t tenant_id)
{
	json_t *j;

	lock(s);
	j = rows_json(prep(s, "SELECT key_id, created_at FROM api_keys WHERE tenant_id = ? "
			      "ORDER BY created_at", "i", tenant_id));
	unlock(s);
	return j;
}

static int sq_aws_key_add(struct store *s, const char *key_id, int64_t tenant_id, const uint8_t *sealed,
		      size_t len)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "INSERT INTO aws_keys(key_id, tenant_id, sealed, created_at) VALUES(?,?,?,?)",
			 "tibi", key_id, tenant_id, sealed, len, now_s()));
	unlock(s);
	return rc;
}

static int sq_aws_key_get(struct store *s, const char *key_id, int64_t *tenant_id, char *tenant_name,
		      size_t namelen, uint8_t *sealed, size_t *len)
{
	sqlite3_stmt *st;
	int rc = -ENOENT;

	lock(s);
	st = prepc(s, "SELECT k.tenant_id, t.name, k.sealed FROM aws_keys k"
		      " JOIN tenants t ON t.id = k.tenant_id WHERE k.key_id = ?", "t", key_id);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		size_t n = (size_t)sqlite3_column_bytes(st, 2);

		if (n <= *len) {
			*tenant_id = sqlite3_column_int64(st, 0);
			copy_col(st, 1, tenant_name, namelen);
			memcpy(sealed, sqlite3_column_blob(st, 2), n);
			*len = n;
			rc = 0;
		} else {
			rc = -EIO;
		}
	}
	if (st)
		done(s, st);
	unlock(s);
	return rc;
}

static int sq_aws_key_delete(struct store *s, const char *key_id, int64_t tenant_id)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "DELETE FROM aws_keys WHERE key_id = ? AND tenant_id = ?", "ti", key_id,
			 tenant_id));
	if (rc == 0 && sqlite3_changes(s->db) == 0)
		rc = -ENOENT;
	unlock(s);
	return rc;
}

static json_t *sq_aws_key_list(struct store *s, int64_t tenant_id)
{
	json_t *j;

	lock(s);
	j = rows_json(prep(s, "SELECT key_id AS access_key_id, created_at FROM aws_keys"
			      " WHERE tenant_id = ? ORDER BY created_at, key_id", "i", tenant_id));
	unlock(s);
	return j;
}

static json_t *sq_lambda_functions(struct store *s, int64_t tenant_id, const char *name, int version,
			       const char *after, int limit)
{
	json_t *j;

	lock(s);
	if (name)
		j = rows_json(prep(s, "SELECT f.name, v.version, v.handler, v.memory_mb, v.timeout_ms,"
				      " v.image_sha256, v.package_bytes, v.engine, v.created_at"
				      " FROM functions f JOIN versions v ON v.function_id = f.id AND"
				      " v.version = CASE WHEN ? > 0 THEN ? ELSE f.latest END"
				      " WHERE f.tenant_id = ? AND f.name = ?",
				   "iiit", (int64_t)version, (int64_t)version, tenant_id, name));
	else
		j = rows_json(prep(s, "SELECT f.name, v.version, v.handler, v.memory_mb, v.timeout_ms,"
				      " v.image_sha256, v.package_bytes, v.engine, v.created_at"
				      " FROM functions f JOIN versions v ON v.function_id = f.id AND"
				      " v.version = f.latest WHERE f.tenant_id = ? AND f.name > ?"
				      " ORDER BY f.name LIMIT ?", "iti", tenant_id, after ? after : "",
				   (int64_t)limit));
	unlock(s);
	return j;
}

static bool sq_has_admin_key(struct store *s)
{
	sqlite3_stmt *st;
	bool has = false;

	lock(s);
	st = prep(s, "SELECT 1 FROM api_keys WHERE tenant_id IS NULL", NULL);
	has = st && sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	unlock(s);
	return has;
}

/* ---- functions and versions ---------------------------------------------- */

static int sq_version_add(struct store *s, struct fn_version *v)
{
	sqlite3_stmt *st;
	int rc;

	lock(s);
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		unlock(s);
		return -EIO;
	}
	rc = run(s, prep(s, "INSERT OR IGNORE INTO functions(tenant_id, name, created_at) VALUES(?,?,?)",
			 "iti", v->tenant_id, v->name, now_s()));
	if (rc)
		goto out;
	st = prep(s, "SELECT id, latest + 1 FROM functions WHERE tenant_id = ? AND name = ?", "it",
		  v->tenant_id, v->name);
	if (!st || sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		rc = -EIO;
		goto out;
	}
	v->function_id = sqlite3_column_int64(st, 0);
	v->version = sqlite3_column_int(st, 1);
	sqlite3_finalize(st);
	rc = run(s, prep(s, "INSERT INTO versions(function_id, version, image_sha256, image_path, handler,"
			    " args, env, init, memory_mb, timeout_ms, engine, package_bytes, created_at,"
			    " runtime) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)", "iittttttiitiit",
			 v->function_id, (int64_t)v->version, v->image_sha256, v->image_path, v->handler,
			 v->args_json ? v->args_json : "[]", v->env_json ? v->env_json : "{}", v->init,
			 (int64_t)v->memory_mb, (int64_t)v->timeout_ms, v->engine,
			 (int64_t)v->package_bytes, now_s(), v->runtime));
	if (rc)
		goto out;
	v->id = sqlite3_last_insert_rowid(s->db);
	rc = run(s, prep(s, "UPDATE functions SET latest = ? WHERE id = ?", "ii", (int64_t)v->version,
			 v->function_id));
out:
	sqlite3_exec(s->db, rc ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
	unlock(s);
	return rc;
}

#define VERSION_COLS                                                                          \
	"v.id, v.function_id, f.tenant_id, f.name, v.version, v.image_sha256, v.image_path,"  \
	" v.handler, v.args, v.env, v.init, v.memory_mb, v.timeout_ms, v.engine,"            \
	" v.package_bytes, f.provisioned, v.runtime FROM versions v"                        \
	" JOIN functions f ON f.id = v.function_id"

static int fetch_version(struct store *s, sqlite3_stmt *st, struct fn_version *v)
{
	int rc = -ENOENT;

	memset(v, 0, sizeof(*v));
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		v->id = sqlite3_column_int64(st, 0);
		v->function_id = sqlite3_column_int64(st, 1);
		v->tenant_id = sqlite3_column_int64(st, 2);
		copy_col(st, 3, v->name, sizeof(v->name));
		v->version = sqlite3_column_int(st, 4);
		copy_col(st, 5, v->image_sha256, sizeof(v->image_sha256));
		copy_col(st, 6, v->image_path, sizeof(v->image_path));
		copy_col(st, 7, v->handler, sizeof(v->handler));
		v->args_json = strdup((const char *)sqlite3_column_text(st, 8));
		v->env_json = strdup((const char *)sqlite3_column_text(st, 9));
		copy_col(st, 10, v->init, sizeof(v->init));
		v->memory_mb = (uint32_t)sqlite3_column_int(st, 11);
		v->timeout_ms = (uint32_t)sqlite3_column_int(st, 12);
		copy_col(st, 13, v->engine, sizeof(v->engine));
		v->package_bytes = (uint64_t)sqlite3_column_int64(st, 14);
		v->provisioned = sqlite3_column_int(st, 15);
		copy_col(st, 16, v->runtime, sizeof(v->runtime));
		rc = 0;
	}
	if (st)
		done(s, st);
	return rc;
}

static int sq_version_get(struct store *s, int64_t tenant_id, const char *name, int version,
		      struct fn_version *v)
{
	int rc;

	lock(s);
	if (version > 0)
		rc = fetch_version(s, prepc(s, "SELECT " VERSION_COLS " WHERE f.tenant_id = ? AND"
					       " f.name = ? AND v.version = ?", "iti", tenant_id, name,
					       (int64_t)version), v);
	else
		rc = fetch_version(s, prepc(s, "SELECT " VERSION_COLS " WHERE f.tenant_id = ? AND"
					       " f.name = ? AND v.version = f.latest", "it", tenant_id,
					       name), v);
	unlock(s);
	return rc;
}

static int sq_version_by_id(struct store *s, int64_t version_id, struct fn_version *v)
{
	int rc;

	lock(s);
	rc = fetch_version(s, prepc(s, "SELECT " VERSION_COLS " WHERE v.id = ?", "i", version_id), v);
	unlock(s);
	return rc;
}

static json_t *sq_function_list(struct store *s, int64_t tenant_id)
{
	json_t *j;

	lock(s);
	j = rows_json(prep(s, "SELECT f.name, f.latest AS latest_version, f.provisioned,"
			      " v.memory_mb, v.timeout_ms, v.engine, v.image_sha256, f.created_at"
			      " FROM functions f JOIN versions v ON v.function_id = f.id AND"
			      " v.version = f.latest WHERE f.tenant_id = ? ORDER BY f.name", "i",
			   tenant_id));
	unlock(s);
	return j;
}

static json_t *sq_function_get(struct store *s, int64_t tenant_id, const char *name)
{
	json_t *fn, *versions;

	lock(s);
	fn = rows_json(prep(s, "SELECT name, latest AS latest_version, provisioned, reserved, created_at"
			       " FROM functions WHERE tenant_id = ? AND name = ?", "it", tenant_id, name));
	if (json_array_size(fn) == 0) {
		json_decref(fn);
		unlock(s);
		return NULL;
	}
	versions = rows_json(prep(s, "SELECT v.version, v.image_sha256, v.handler, v.memory_mb,"
				     " v.timeout_ms, v.engine, v.package_bytes, v.created_at,"
				     " CASE v.runtime WHEN '' THEN 'exec' ELSE v.runtime END AS runtime"
				     " FROM versions v JOIN functions f ON f.id = v.function_id"
				     " WHERE f.tenant_id = ? AND f.name = ? ORDER BY v.version", "it",
				  tenant_id, name));
	unlock(s);
	json_t *o = json_incref(json_array_get(fn, 0));

	json_decref(fn);
	json_object_set_new(o, "versions", versions);
	return o;
}

static int sq_function_delete(struct store *s, int64_t tenant_id, const char *name, int64_t **ids,
			  size_t *nids)
{
	sqlite3_stmt *st;
	size_t n = 0, cap = 16;
	int64_t *v = malloc(cap * sizeof(*v));
	int rc;

	*ids = NULL;
	*nids = 0;
	lock(s);
	st = prep(s, "SELECT v.id FROM versions v JOIN functions f ON f.id = v.function_id"
		     " WHERE f.tenant_id = ? AND f.name = ?", "it", tenant_id, name);
	while (st && v && sqlite3_step(st) == SQLITE_ROW) {
		if (n == cap) {
			int64_t *nv = realloc(v, (cap *= 2) * sizeof(*v));

			if (!nv)
				break;
			v = nv;
		}
		v[n++] = sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	rc = run(s, prep(s, "DELETE FROM functions WHERE tenant_id = ? AND name = ?", "it", tenant_id,
			 name));
	if (rc == 0 && sqlite3_changes(s->db) == 0)
		rc = -ENOENT;
	unlock(s);
	if (rc) {
		free(v);
		return rc;
	}
	*ids = v;
	*nids = n;
	return 0;
}

static int sq_function_set_provisioned(struct store *s, int64_t tenant_id, const char *name, int n)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "UPDATE functions SET provisioned = ? WHERE tenant_id = ? AND name = ?",
			 "iit", (int64_t)n, tenant_id, name));
	if (rc == 0 && sqlite3_changes(s->db) == 0)
		rc = -ENOENT;
	unlock(s);
	return rc;
}

static int sq_provisioned_list(struct store *s, int64_t **ids, int **counts, size_t *n)
{
	sqlite3_stmt *st;
	size_t k = 0, cap = 0;

	*ids = NULL;
	*counts = NULL;
	lock(s);
	st = prep(s, "SELECT v.id, f.provisioned FROM functions f JOIN versions v ON"
		     " v.function_id = f.id AND v.version = f.latest WHERE f.provisioned > 0", NULL);
	while (st && sqlite3_step(st) == SQLITE_ROW) {
		if (k == cap) {
			cap = cap ? cap * 2 : 16;
			*ids = realloc(*ids, cap * sizeof(**ids));
			*counts = realloc(*counts, cap * sizeof(**counts));
		}
		(*ids)[k] = sqlite3_column_int64(st, 0);
		(*counts)[k] = sqlite3_column_int(st, 1);
		k++;
	}
	sqlite3_finalize(st);
	unlock(s);
	*n = k;
	return 0;
}

static int sq_function_count(struct store *s, int64_t tenant_id, int64_t *n)
{
	sqlite3_stmt *st;

	lock(s);
	st = prep(s, "SELECT COUNT(*) FROM functions WHERE tenant_id = ?", "i", tenant_id);
	*n = st && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	unlock(s);
	return 0;
}

/* ---- invocations ---------------------------------------------------------- */

static int invocation_insert(struct store *s, const struct inv_record *r)
{
	int rc = run(s, prepc(s, "INSERT INTO invocations(request_id, attempt, tenant_id, version_id, function,"
			    " version, kind, start_us, end_us, duration_us, billed_ms, memory_mb,"
			    " max_rss_kb, cold, init_ms, boot_ms, status, error, logs, mb_ms, cold_path)"
			    " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", "tiiitit" "iiiiiiiii" "ttbit",
			 r->request_id, (int64_t)r->attempt, r->tenant_id, r->version_id, r->function, (int64_t)r->version,
			 r->kind, r->start_us, r->end_us, (int64_t)r->duration_us,
			 (int64_t)r->billed_ms, (int64_t)r->memory_mb, (int64_t)r->max_rss_kb,
			 (int64_t)r->cold, (int64_t)r->init_ms, (int64_t)r->boot_ms, r->status,
			 r->error, r->logs, r->logs_len, (int64_t)r->mb_ms,
			 r->cold ? r->cold_path : NULL));

	if (rc)
		return rc;
	if (strcmp(r->kind, "provisioned") == 0)
		/* Time a provisioned VM was kept: billed apart from invocations. */
		return run(s, prepc(s, "INSERT INTO usage_hourly(tenant_id, function, hour, invocations,"
				       " errors, cold_starts, duration_us, billed_ms, mb_ms, provisioned_ms,"
				       " provisioned_mb_ms) VALUES(?,?,?,0,0,0,0,0,0,?,?)"
				       " ON CONFLICT(tenant_id, function, hour) DO UPDATE SET"
				       " provisioned_ms = provisioned_ms + excluded.provisioned_ms,"
				       " provisioned_mb_ms = provisioned_mb_ms + excluded.provisioned_mb_ms",
				    "itiii", r->tenant_id, r->function, r->start_us / 3600000000LL,
				    (int64_t)r->billed_ms, (int64_t)r->mb_ms));
	/* The hourly aggregate moves in the same transaction: sums always match. */
	return run(s, prepc(s, "INSERT INTO usage_hourly(tenant_id, function, hour, invocations, errors,"
			      " cold_starts, duration_us, billed_ms, mb_ms) VALUES(?,?,?,1,?,?,?,?,?)"
			      " ON CONFLICT(tenant_id, function, hour) DO UPDATE SET"
			      " invocations = invocations + 1, errors = errors + excluded.errors,"
			      " cold_starts = cold_starts + excluded.cold_starts,"
			      " duration_us = duration_us + excluded.duration_us,"
			      " billed_ms = billed_ms + excluded.billed_ms, mb_ms = mb_ms + excluded.mb_ms",
			   "itiiiiii", r->tenant_id, r->function, r->start_us / 3600000000LL,
			   (int64_t)(strcmp(r->status, "Success") != 0), (int64_t)r->cold,
			   (int64_t)r->duration_us, (int64_t)r->billed_ms, (int64_t)r->mb_ms));
}

/* One record inside an open transaction: a bad one fails alone. Caller holds the lock. */
static int insert_in_txn(struct store *s, const struct inv_record *r)
{
	int rc;

	run(s, prepc(s, "SAVEPOINT rec", NULL));
	rc = invocation_insert(s, r);
	if (rc)
		sqlite3_exec(s->db, "ROLLBACK TO rec", NULL, NULL, NULL);
	run(s, prepc(s, "RELEASE rec", NULL));
	return rc;
}

static int commit_txn(struct store *s)
{
	if (run(s, prepc(s, "COMMIT", NULL)) == 0)
		return 0;
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -EIO;
}

/* The ledger journal's batches (ledger.h): one transaction. */
static int sq_invocation_add_batch(struct store *s, const struct inv_record *r, size_t n, int *rcs)
{
	int rc;

	lock(s);
	rc = run(s, prepc(s, "BEGIN IMMEDIATE", NULL));
	for (size_t i = 0; rc == 0 && i < n; i++)
		rcs[i] = insert_in_txn(s, &r[i]);
	if (rc == 0)
		rc = commit_txn(s);
	unlock(s);
	return rc;
}

/*
 * Group commit: every caller queues its record and waits. Whoever finds no
 * commit in progress becomes the leader: it takes every queued record, writes
 * them in ONE transaction (a savepoint each, so one bad record fails alone),
 * commits, and wakes the others. Under load many records share one commit;
 * alone, a record commits at once. Either way a caller returns only after its
 * record is committed.
 */
static int sq_invocation_add(struct store *s, const struct inv_record *r)
{
	struct ledger_entry me = { .rec = r };

	pthread_mutex_lock(&s->lq_mu);
	if (s->lq_tail)
		s->lq_tail->next = &me;
	else
		s->lq_head = &me;
	s->lq_tail = &me;
	while (!me.done) {
		struct ledger_entry *batch;
		int rc;

		if (s->lq_leader) {
			pthread_cond_wait(&s->lq_cond, &s->lq_mu);
			continue;
		}
		s->lq_leader = true;
		batch = s->lq_head;
		s->lq_head = s->lq_tail = NULL;
		pthread_mutex_unlock(&s->lq_mu);

		lock(s);
		rc = run(s, prepc(s, "BEGIN IMMEDIATE", NULL));
		for (struct ledger_entry *e = batch; e; e = e->next)
			e->rc = rc ? rc : insert_in_txn(s, e->rec);
		if (rc == 0 && commit_txn(s) != 0)
			for (struct ledger_entry *e = batch; e; e = e->next)
				e->rc = -EIO;
		unlock(s);

		pthread_mutex_lock(&s->lq_mu);
		for (struct ledger_entry *e = batch, *n; e; e = n) {
			n = e->next; /* e may be freed by its owner once done is seen */
			e->done = true;
		}
		s->lq_leader = false;
		pthread_cond_broadcast(&s->lq_cond);
	}
	pthread_mutex_unlock(&s->lq_mu);
	return me.rc;
}

static int sq_async_complete(struct store *s, const struct inv_record *r, enum async_action action,
			 int attempts, int64_t next_ms, const char *error, int64_t now_ms)
{
	int rc;

	lock(s);
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		unlock(s);
		return -EIO;
	}
	rc = invocation_insert(s, r);
	if (rc == 0 && action == ASYNC_SUCCEEDED)
		rc = run(s, prep(s, "UPDATE async_queue SET state = 'succeeded', attempts = ?,"
				    " payload = x'' WHERE request_id = ?", "it", (int64_t)attempts,
				 r->request_id));
	else if (rc == 0 && action == ASYNC_RETRY)
		rc = run(s, prep(s, "UPDATE async_queue SET state = 'queued', attempts = ?,"
				    " next_at_ms = ?, last_error = ? WHERE request_id = ?", "iitt",
				 (int64_t)attempts, next_ms, error, r->request_id));
	else if (rc == 0) {
		rc = run(s, prep(s, "INSERT OR REPLACE INTO dead_letters(request_id, tenant_id, function,"
				    " version, payload, attempts, reason, failed_ms) SELECT request_id,"
				    " tenant_id, ?, ?, payload, ?, ?, ? FROM async_queue WHERE request_id = ?",
				 "tiitit", r->function, (int64_t)r->version, (int64_t)attempts, error,
				 now_ms, r->request_id));
		if (rc == 0)
			rc = run(s, prep(s, "UPDATE async_queue SET state = 'dead', attempts = ?,"
					    " last_error = ?, payload = x'' WHERE request_id = ?", "itt",
					 (int64_t)attempts, error, r->request_id));
	}
	sqlite3_exec(s->db, rc ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
	unlock(s);
	return rc;
}

static json_t *sq_invocation_logs(struct store *s, int64_t tenant_id, const char *function, int limit)
{
	json_t *j;

	lock(s);
	j = rows_json(prep(s, "SELECT request_id, function, version, kind, start_us, duration_us,"
			      " billed_ms, memory_mb, max_rss_kb, cold, cold_path, init_ms, boot_ms, status,"
			      " error, logs FROM invocations WHERE tenant_id = ? AND function = ? AND kind != 'provisioned'"
			      " ORDER BY start_us DESC LIMIT ?", "iti", tenant_id, function,
			   (int64_t)limit));
	unlock(s);
	return j;
}

/* ---- async queue ------------------------------------------------------------ */

static int sq_async_put(struct store *s, const char *request_id, int64_t tenant_id, int64_t version_id,
		    const void *payload, size_t len, int64_t now_ms)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "INSERT INTO async_queue(request_id, tenant_id, version_id, payload, state,"
			    " next_at_ms, created_ms) VALUES(?,?,?,?, 'queued', ?, ?)", "tiibii",
			 request_id, tenant_id, version_id, payload, len, now_ms, now_ms));
	unlock(s);
	return rc;
}

static int sq_async_claim(struct store *s, int64_t now_ms, struct async_item *items, int max, int *n)
{
	sqlite3_stmt *st;
	int k = 0;

	*n = 0;
	lock(s);
	sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	st = prep(s, "SELECT request_id, tenant_id, version_id, payload, attempts, created_ms"
		     " FROM async_queue WHERE state = 'queued' AND next_at_ms <= ?"
		     " ORDER BY next_at_ms LIMIT ?", "ii", now_ms, (int64_t)max);
	while (st && k < max && sqlite3_step(st) == SQLITE_ROW) {
		struct async_item *a = &items[k];
		int len = sqlite3_column_bytes(st, 3);

		memset(a, 0, sizeof(*a));
		copy_col(st, 0, a->request_id, sizeof(a->request_id));
		a->tenant_id = sqlite3_column_int64(st, 1);
		a->version_id = sqlite3_column_int64(st, 2);
		a->payload = malloc(len ? (size_t)len : 1);
		if (!a->payload)
			break;
		if (len)
			memcpy(a->payload, sqlite3_column_blob(st, 3), (size_t)len);
		a->payload_len = (size_t)len;
		a->attempts = sqlite3_column_int(st, 4);
		a->created_ms = sqlite3_column_int64(st, 5);
		k++;
	}
	sqlite3_finalize(st);
	for (int i = 0; i < k; i++)
		run(s, prep(s, "UPDATE async_queue SET state = 'running' WHERE request_id = ?", "t",
			    items[i].request_id));
	sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	unlock(s);
	*n = k;
	return 0;
}

static int sq_async_defer(struct store *s, const char *request_id, int64_t next_ms)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "UPDATE async_queue SET state = 'queued', next_at_ms = ? WHERE"
			    " request_id = ? AND state = 'running'", "it", next_ms, request_id));
	unlock(s);
	return rc;
}

static int sq_async_recover(struct store *s, int *n)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "UPDATE async_queue SET state = 'queued' WHERE state = 'running'", NULL));
	*n = sqlite3_changes(s->db);
	unlock(s);
	return rc;
}

static int64_t sq_async_next_due(struct store *s)
{
	sqlite3_stmt *st;
	int64_t t = -1;

	lock(s);
	st = prep(s, "SELECT MIN(next_at_ms) FROM async_queue WHERE state = 'queued'", NULL);
	if (st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
		t = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	unlock(s);
	return t;
}

static json_t *sq_async_get(struct store *s, int64_t tenant_id, const char *request_id)
{
	json_t *j, *o;

	lock(s);
	j = rows_json(prep(s, "SELECT request_id, state, attempts, next_at_ms, created_ms, last_error"
			      " FROM async_queue WHERE tenant_id = ? AND request_id = ?", "it",
			   tenant_id, request_id));
	unlock(s);
	o = json_array_size(j) ? json_incref(json_array_get(j, 0)) : NULL;
	json_decref(j);
	return o;
}

static json_t *sq_dead_letters(struct store *s, int64_t tenant_id, int limit)
{
	json_t *j;

	lock(s);
	j = rows_json(prep(s, "SELECT request_id, function, version, attempts, reason, failed_ms, payload"
			      " FROM dead_letters WHERE tenant_id = ? ORDER BY failed_ms DESC LIMIT ?",
			   "ii", tenant_id, (int64_t)limit));
	unlock(s);
	return j;
}

/* ---- limits and usage ------------------------------------------------------- */

static int sq_limits_get(struct store *s, int64_t tenant_id, struct tenant_limits *l)
{
	sqlite3_stmt *st;

	memset(l, 0, sizeof(*l));
	lock(s);
	st = prep(s, "SELECT max_concurrency, max_memory_mb, rate_per_s, burst, max_functions,"
		     " max_package_bytes, budget_mb_ms, max_code_bytes FROM tenant_limits"
		     " WHERE tenant_id = ?", "i", tenant_id);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		l->max_concurrency = sqlite3_column_int64(st, 0);
		l->max_memory_mb = sqlite3_column_int64(st, 1);
		l->rate_per_s = sqlite3_column_int64(st, 2);
		l->burst = sqlite3_column_int64(st, 3);
		l->max_functions = sqlite3_column_int64(st, 4);
		l->max_package_bytes = sqlite3_column_int64(st, 5);
		l->budget_mb_ms = sqlite3_column_int64(st, 6);
		l->max_code_bytes = sqlite3_column_int64(st, 7);
	}
	sqlite3_finalize(st);
	unlock(s);
	return 0;
}

static int sq_limits_set(struct store *s, int64_t tenant_id, const struct tenant_limits *l)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "INSERT OR REPLACE INTO tenant_limits(tenant_id, max_concurrency,"
			    " max_memory_mb, rate_per_s, burst, max_functions, max_package_bytes,"
			    " budget_mb_ms, max_code_bytes) VALUES(?,?,?,?,?,?,?,?,?)", "iiiiiiiii",
			 tenant_id, l->max_concurrency, l->max_memory_mb, l->rate_per_s, l->burst,
			 l->max_functions, l->max_package_bytes, l->budget_mb_ms,
			 l->max_code_bytes));
	unlock(s);
	return rc;
}

static int sq_code_bytes(struct store *s, int64_t tenant_id, const char *sha256, int64_t *bytes,
			 bool *has_sha)
{
	sqlite3_stmt *st;
	int rc = -EIO;

	*bytes = 0;
	*has_sha = false;
	lock(s);
	/* versions.package_bytes holds the image's size; each distinct image counts once. */
	st = prep(s, "SELECT COALESCE(SUM(b), 0), COALESCE(MAX(sha = ?), 0) FROM (SELECT"
		     " v.image_sha256 AS sha, MAX(v.package_bytes) AS b FROM versions v JOIN"
		     " functions f ON f.id = v.function_id WHERE f.tenant_id = ? GROUP BY"
		     " v.image_sha256)", "ti", sha256 ? sha256 : "", tenant_id);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		*bytes = sqlite3_column_int64(st, 0);
		*has_sha = sqlite3_column_int(st, 1) != 0;
		rc = 0;
	}
	sqlite3_finalize(st);
	unlock(s);
	return rc;
}

static uint64_t sq_usage_since(struct store *s, int64_t tenant_id, int64_t since_us)
{
	sqlite3_stmt *st;
	uint64_t v = 0;

	lock(s);
	st = prep(s, "SELECT IFNULL(SUM(mb_ms + provisioned_mb_ms), 0) FROM usage_hourly"
		     " WHERE tenant_id = ? AND hour >= ?",
		  "ii", tenant_id, since_us / 3600000000LL);
	if (st && sqlite3_step(st) == SQLITE_ROW)
		v = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	unlock(s);
	return v;
}

static json_t *sq_usage_query(struct store *s, int64_t tenant_id, int64_t from_us, int64_t to_us,
			  const char *group_by)
{
	const char *cols, *group;
	char sql[2048];
	json_t *j;

	if (strcmp(group_by, "hour") == 0) {
		cols = "u.hour * 3600 AS hour_start, t.name AS tenant, u.function,";
		group = "GROUP BY u.tenant_id, u.function, u.hour ORDER BY u.hour, t.name, u.function";
	} else if (strcmp(group_by, "function") == 0) {
		cols = "t.name AS tenant, u.function,";
		group = "GROUP BY u.tenant_id, u.function ORDER BY t.name, u.function";
	} else {
		cols = "t.name AS tenant,";
		group = "GROUP BY u.tenant_id ORDER BY t.name";
	}
	snprintf(sql, sizeof(sql),
		 "SELECT %s SUM(u.invocations) AS invocations, SUM(u.errors) AS errors,"
		 " SUM(u.cold_starts) AS cold_starts, SUM(u.duration_us) AS duration_us,"
		 " SUM(u.billed_ms) AS billed_ms, SUM(u.mb_ms) AS mb_ms,"
		 " SUM(u.provisioned_ms) AS provisioned_ms, SUM(u.provisioned_mb_ms) AS provisioned_mb_ms"
		 " FROM usage_hourly u"
		 " JOIN (SELECT id, name FROM tenants UNION ALL"
		 "       SELECT id, name || ' (deleted)' FROM deleted_tenants) t ON t.id = u.tenant_id"
		 " WHERE (? = 0 OR u.tenant_id = ?)"
		 " AND u.hour >= ? AND u.hour < ? %s", cols, group);
	lock(s);
	/* Hours are whole: a range covers every hour it touches. */
	j = rows_json(prep(s, sql, "iiii", tenant_id, tenant_id, from_us / 3600000000LL,
			   (to_us + 3600000000LL - 1) / 3600000000LL));
	unlock(s);
	return j;
}

/* ---- snapshot index ----------------------------------------------------------- */

static int sq_snapshot_put(struct store *s, int64_t version_id, const char *engine, const char *kernel_id,
		       const char *vmm_version, const char *shape, const char *mem, const char *state)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "INSERT OR REPLACE INTO snapshots(version_id, engine, kernel_id, vmm_version,"
			    " shape, mem_path, state_path, created_at) VALUES(?,?,?,?,?,?,?,?)",
			 "itttttti", version_id, engine, kernel_id, vmm_version, shape, mem, state,
			 now_s()));
	unlock(s);
	return rc;
}

static int sq_snapshot_get(struct store *s, int64_t version_id, const char *engine, const char *kernel_id,
		       const char *vmm_version, const char *shape, char *mem, size_t memlen,
		       char *state, size_t statelen)
{
	sqlite3_stmt *st;
	int rc = -ENOENT;

	lock(s);
	st = prep(s, "SELECT mem_path, state_path FROM snapshots WHERE version_id = ? AND engine = ?"
		     " AND kernel_id = ? AND vmm_version = ? AND shape = ?", "ittt" "t", version_id,
		  engine, kernel_id, vmm_version, shape);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		copy_col(st, 0, mem, memlen);
		copy_col(st, 1, state, statelen);
		rc = 0;
	}
	sqlite3_finalize(st);
	unlock(s);
	return rc;
}

static int sq_reservations(struct store *s, int64_t tenant_id, int64_t **ids, int64_t **res, size_t *n)
{
	sqlite3_stmt *st;
	size_t k = 0, cap = 0;

	*ids = NULL;
	*res = NULL;
	lock(s);
	st = prep(s, "SELECT id, reserved FROM functions WHERE (? = 0 OR tenant_id = ?) AND reserved > 0",
		  "ii", tenant_id, tenant_id);
	while (st && sqlite3_step(st) == SQLITE_ROW) {
		if (k == cap) {
			cap = cap ? cap * 2 : 8;
			*ids = realloc(*ids, cap * sizeof(**ids));
			*res = realloc(*res, cap * sizeof(**res));
		}
		(*ids)[k] = sqlite3_column_int64(st, 0);
		(*res)[k] = sqlite3_column_int64(st, 1);
		k++;
	}
	sqlite3_finalize(st);
	unlock(s);
	*n = k;
	return 0;
}

static int64_t sq_reserved_sum(struct store *s, int64_t tenant_id, const char *except_name)
{
	sqlite3_stmt *st;
	int64_t v = 0;

	lock(s);
	/* TOTAL, not SUM: a sum past int64 (values stored before reservations were bounded)
	 * saturates instead of failing the query and reading as 0. */
	st = prep(s, "SELECT CAST(MIN(TOTAL(reserved), 9.2e18) AS INTEGER) FROM functions"
		     " WHERE (? = 0 OR tenant_id = ?)"
		     " AND NOT (tenant_id = ? AND name = ?)", "iiit", tenant_id, tenant_id, tenant_id,
		  except_name ? except_name : "");
	if (st && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	unlock(s);
	return v;
}

static int sq_function_set_reserved(struct store *s, int64_t tenant_id, const char *name, int64_t n)
{
	int rc;

	lock(s);
	rc = run(s, prep(s, "UPDATE functions SET reserved = ? WHERE tenant_id = ? AND name = ?", "iit",
			 n, tenant_id, name));
	if (rc == 0 && sqlite3_changes(s->db) == 0)
		rc = -ENOENT;
	unlock(s);
	return rc;
}

static int64_t sq_function_reserved(struct store *s, int64_t function_id)
{
	sqlite3_stmt *st;
	int64_t v = 0;

	lock(s);
	st = prepc(s, "SELECT reserved FROM functions WHERE id = ?", "i", function_id);
	if (st && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	if (st)
		done(s, st);
	unlock(s);
	return v;
}

/* ---- one host: the fleet operations are trivial ------------------------------ */

static json_t *sq_hosts(struct store *s)
{
	(void)s;
	return json_array();
}

static int sq_slots_lease(struct store *s, int64_t tenant_id, int64_t function_id, int64_t limit,
			  int64_t want, int64_t *held)
{
	(void)s;
	(void)tenant_id;
	(void)function_id;
	*held = want < 0 ? 0 : limit > 0 && want > limit ? limit : want;
	return 0;
}

static int sq_live_hosts(struct store *s, int *n)
{
	(void)s;
	*n = 1;
	return 0;
}

static int64_t sq_lease_epoch(struct store *s)
{
	(void)s;
	return 0;
}

static int sq_health(struct store *s, char *why, size_t n)
{
	(void)s;
	if (n)
		why[0] = 0;
	return 0;
}

/* ---- image GC: the image directory is the only copy ----------------------------- */

static int sq_image_gc(struct store *s, bool shared, struct store_image_gc *st)
{
	struct cache_file *files = NULL;
	size_t n = 0;
	int rc;

	(void)shared;
	memset(st, 0, sizeof(*st));
	if (!s->image_dir)
		return 0;
	rc = store_cache_list(s->image_dir, &files, &n, &st->removed_local, &st->bytes);
	lock(s);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		sqlite3_stmt *q = prep(s, "SELECT 1 FROM versions WHERE image_sha256 = ? LIMIT 1", "t",
				       files[i].sha256);
		int step = q ? sqlite3_step(q) : SQLITE_ERROR;

		sqlite3_finalize(q);
		if (step == SQLITE_ROW)
			continue;
		if (step != SQLITE_DONE) { /* unknown: keep it */
			rc = -EIO;
			break;
		}
		if (store_cache_remove(s->image_dir, files[i].sha256) == 0) {
			st->removed_local++;
			st->bytes += files[i].bytes;
		}
	}
	unlock(s);
	free(files);
	return rc;
}

static int64_t sq_image_gc_epoch(struct store *s)
{
	(void)s;
	return 0;
}

/* ---- the ops table ------------------------------------------------------------ */

#define S void *impl_
#define IMPL ((struct store *)impl_)
#define STORE_OP(R, N, P, A) static R sq_op_##N P { return sq_##N A; }
#include "store_ops.def"
#undef STORE_OP

static void sq_op_close(void *impl_)
{
	sq_close(IMPL);
}

static const struct store_ops sq_ops = {
	.backend = "sqlite",
	.close = sq_op_close,
#define STORE_OP(R, N, P, A) .N = sq_op_##N,
#include "store_ops.def"
#undef STORE_OP
};
#undef S
#undef IMPL

int store_sqlite_open(const char *path, const char *image_dir, const struct store_ops **ops,
		      void **impl)
{
	struct store *s;
	int rc = sq_open(path, &s);

	if (rc)
		return rc;
	if (image_dir && !(s->image_dir = strdup(image_dir))) {
		sq_close(s);
		return -ENOMEM;
	}
	*ops = &sq_ops;
	*impl = s;
	return 0;
}
