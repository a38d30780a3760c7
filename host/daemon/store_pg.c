/*
 * store_pg.c - the PostgreSQL backend of the store interface (store.h): a
 * fleet of hearthd hosts sharing one database through libpq. See
 * docs/fleet.md for what is shared, the host registry and the failure cases.
 *
 * One connection per host, guarded by a mutex. Every call is its own
 * transaction (or one statement). The host registers under its host id at
 * open (refused while another live host holds that id) and a thread renews
 * its heartbeat every HB_MS; a host whose heartbeat is older than HOST_TTL_MS
 * is dead: the async events it had claimed are taken over by the others.
 * Images are content-addressed rows (sha256 -> bytes); each host caches them
 * in its image directory by hash, checks a cached file's hash once per
 * process, and fetches it again when it is missing or corrupt.
 */
#include "store_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <uuid/uuid.h>

#include "log.h"

#define HB_MS 1000
#define HOST_TTL_MS 5000
/* The database's clock (ms): heartbeats are compared on one clock, not the hosts'. */
#define DB_NOW_MS "(extract(epoch from clock_timestamp()) * 1000)::bigint"

struct pg {
	PGconn *conn;
	pthread_mutex_t mu;
	char host_id[129];
	char boot_id[37];
	char address[256];
	char image_dir[400]; /* fits fn_version.image_path with the hash */
	/* image hashes whose cached file was checked by this process */
	char (*verified)[65];
	size_t nverified, capverified;
	/* health: the last failure, cleared by the next success. These, hb_ok_ms and
	 * evicted are guarded by hmu, not mu: store_health() must answer at once even
	 * while a statement or a reconnection holds mu. */
	pthread_mutex_t hmu;
	bool healthy;
	char why[256];
	pthread_t hb;
	bool hb_started, stopping;
	int64_t hb_ok_ms; /* monotonic time of the last renewed heartbeat */
	bool evicted;     /* another host took this host id over: no more work here */
	int64_t up_since_ms; /* monotonic: connected without a gap since then */
	int64_t lease_epoch; /* bumped when this host's leases are revoked (hmu) */
	int64_t image_gc_epoch; /* the fleet's image_gc.epoch at the last heartbeat (hmu) */
	char spool[4200];    /* ledger records kept while the database was unreachable */
	bool spooled;
	pthread_cond_t hb_cond;
};

/* The schema, one step per version; a database at version k runs steps k+1.. */
static const char *const migrations[] = {
	/* 1 */
	"CREATE TABLE tenants(id BIGSERIAL PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
	"  created_at BIGINT NOT NULL);"
	"CREATE TABLE deleted_tenants(id BIGINT PRIMARY KEY, name TEXT NOT NULL,"
	"  deleted_at BIGINT NOT NULL);"
	"CREATE TABLE api_keys(key_id TEXT PRIMARY KEY,"
	"  tenant_id BIGINT REFERENCES tenants(id) ON DELETE CASCADE, hash BYTEA NOT NULL,"
	"  created_at BIGINT NOT NULL);"
	"CREATE TABLE aws_keys(key_id TEXT PRIMARY KEY,"
	"  tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
	"  sealed BYTEA NOT NULL, created_at BIGINT NOT NULL);"
	"CREATE TABLE functions(id BIGSERIAL PRIMARY KEY,"
	"  tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE, name TEXT NOT NULL,"
	"  latest INT NOT NULL DEFAULT 0, provisioned INT NOT NULL DEFAULT 0,"
	"  reserved BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, UNIQUE(tenant_id, name));"
	"CREATE TABLE images(sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL, created_at BIGINT NOT NULL);"
	"CREATE TABLE versions(id BIGSERIAL PRIMARY KEY,"
	"  function_id BIGINT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,"
	"  version INT NOT NULL, image_sha256 TEXT NOT NULL REFERENCES images(sha256),"
	"  handler TEXT NOT NULL, args TEXT NOT NULL, env TEXT NOT NULL, init TEXT NOT NULL,"
	"  memory_mb INT NOT NULL, timeout_ms INT NOT NULL, engine TEXT NOT NULL,"
	"  package_bytes BIGINT NOT NULL, created_at BIGINT NOT NULL, runtime TEXT NOT NULL DEFAULT '',"
	"  UNIQUE(function_id, version));"
	"CREATE TABLE invocations(request_id TEXT NOT NULL, attempt INT NOT NULL,"
	"  tenant_id BIGINT NOT NULL, version_id BIGINT NOT NULL, function TEXT NOT NULL,"
	"  version INT NOT NULL, kind TEXT NOT NULL, start_us BIGINT NOT NULL, end_us BIGINT NOT NULL,"
	"  duration_us BIGINT NOT NULL, billed_ms BIGINT NOT NULL, memory_mb INT NOT NULL,"
	"  max_rss_kb BIGINT NOT NULL, cold INT NOT NULL, init_ms BIGINT NOT NULL,"
	"  boot_ms BIGINT NOT NULL, status TEXT NOT NULL, error TEXT, logs BYTEA,"
	"  mb_ms BIGINT NOT NULL DEFAULT 0, cold_path TEXT, host_id TEXT NOT NULL,"
	"  PRIMARY KEY(request_id, attempt));"
	"CREATE INDEX invocations_by_fn ON invocations(tenant_id, function, start_us);"
	"CREATE TABLE usage_hourly(tenant_id BIGINT NOT NULL, function TEXT NOT NULL,"
	"  hour BIGINT NOT NULL, invocations BIGINT NOT NULL, errors BIGINT NOT NULL,"
	"  cold_starts BIGINT NOT NULL, duration_us BIGINT NOT NULL, billed_ms BIGINT NOT NULL,"
	"  mb_ms BIGINT NOT NULL, provisioned_ms BIGINT NOT NULL DEFAULT 0,"
	"  provisioned_mb_ms BIGINT NOT NULL DEFAULT 0, PRIMARY KEY(tenant_id, function, hour));"
	"CREATE TABLE tenant_limits("
	"  tenant_id BIGINT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,"
	"  max_concurrency BIGINT NOT NULL, max_memory_mb BIGINT NOT NULL,"
	"  rate_per_s BIGINT NOT NULL, burst BIGINT NOT NULL, max_functions BIGINT NOT NULL,"
	"  max_package_bytes BIGINT NOT NULL, budget_mb_ms BIGINT NOT NULL);"
	"CREATE TABLE async_queue(request_id TEXT PRIMARY KEY, tenant_id BIGINT NOT NULL,"
	"  version_id BIGINT NOT NULL, payload BYTEA NOT NULL, attempts INT NOT NULL DEFAULT 0,"
	"  state TEXT NOT NULL, next_at_ms BIGINT NOT NULL, created_ms BIGINT NOT NULL,"
	"  last_error TEXT, claimed_by TEXT);"
	"CREATE INDEX async_due ON async_queue(state, next_at_ms);"
	"CREATE TABLE dead_letters(request_id TEXT PRIMARY KEY, tenant_id BIGINT NOT NULL,"
	"  function TEXT NOT NULL, version INT NOT NULL, payload BYTEA NOT NULL,"
	"  attempts INT NOT NULL, reason TEXT NOT NULL, failed_ms BIGINT NOT NULL);"
	/* Snapshot files are local to a host: the index is per host. */
	"CREATE TABLE snapshots(host_id TEXT NOT NULL, version_id BIGINT NOT NULL,"
	"  engine TEXT NOT NULL, kernel_id TEXT NOT NULL, vmm_version TEXT NOT NULL,"
	"  shape TEXT NOT NULL, mem_path TEXT NOT NULL, state_path TEXT NOT NULL,"
	"  created_at BIGINT NOT NULL,"
	"  PRIMARY KEY(host_id, version_id, engine, kernel_id, vmm_version, shape));"
	"CREATE TABLE hosts(host_id TEXT PRIMARY KEY, boot_id TEXT NOT NULL, address TEXT,"
	"  started_at BIGINT NOT NULL, heartbeat_at BIGINT NOT NULL);"
	/* Concurrency slots a host holds of a tenant's limit; they count while the host is live. */
	"CREATE TABLE slot_leases(tenant_id BIGINT NOT NULL, host_id TEXT NOT NULL,"
	"  slots BIGINT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY(tenant_id, host_id));",
	/* 2: leases per pool (0 = the tenant's unreserved slots, else a function's reserved
	 * ones); image GC: versions by image, and an epoch bumped when images are removed. */
	"ALTER TABLE slot_leases ADD COLUMN function_id BIGINT NOT NULL DEFAULT 0;"
	"ALTER TABLE slot_leases DROP CONSTRAINT slot_leases_pkey;"
	"ALTER TABLE slot_leases ADD PRIMARY KEY(tenant_id, function_id, host_id);"
	"CREATE INDEX versions_by_image ON versions(image_sha256);"
	"CREATE TABLE image_gc(id INT PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL);"
	"INSERT INTO image_gc VALUES (1, 0);",
	/* 3: the code storage limit (bytes of the tenant's distinct images) */
	"ALTER TABLE tenant_limits ADD COLUMN max_code_bytes BIGINT NOT NULL DEFAULT 0;",
};

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Connected, without a gap, for longer than a heartbeat's lifetime: every
 * live host has renewed its heartbeat since, so a stale one means a dead
 * host (and not one that could not reach the database any more than we
 * could, e.g. while the database restarted). Only then are a dead host's
 * events taken over and its leases ignored. Caller holds mu.
 */
static bool settled(struct pg *p)
{
	return mono_ms() - p->up_since_ms > HOST_TTL_MS + 2 * HB_MS;
}

static void set_unhealthy(struct pg *p, const char *what)
{
	char msg[200];
	size_t n;

	snprintf(msg, sizeof(msg), "%s", what);
	for (char *c = msg; *c; c++) /* libpq's messages span lines */
		if (*c == '\n' || *c == '\t')
			*c = ' ';
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = 0;
	pthread_mutex_lock(&p->hmu);
	if (p->healthy || strcmp(p->why, msg) != 0)
		hlog_error("store", "PostgreSQL: %s", msg);
	p->healthy = false;
	snprintf(p->why, sizeof(p->why), "%s", msg);
	pthread_mutex_unlock(&p->hmu);
}

static void set_healthy(struct pg *p)
{
	pthread_mutex_lock(&p->hmu);
	p->healthy = true;
	pthread_mutex_unlock(&p->hmu);
}

/* Reconnects a broken connection (caller holds mu). 0 when usable. */
static int ensure_conn(struct pg *p)
{
	if (PQstatus(p->conn) == CONNECTION_OK)
		return 0;
	PQreset(p->conn);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		set_unhealthy(p, PQerrorMessage(p->conn));
		return -EIO;
	}
	hlog_info("store", "PostgreSQL: connection re-established");
	return 0;
}

/*
 * Runs sql with arguments described by fmt (as in store_sqlite.c): i = int64,
 * t = text (NULL allowed), b = bytes (pointer, size_t), n = NULL. Returns the
 * result (PGRES_COMMAND_OK or PGRES_TUPLES_OK) or NULL (logged); *state gets
 * the SQLSTATE of a failure when state is given. Caller holds mu.
 */
static PGresult *qv(struct pg *p, char *state, const char *sql, const char *fmt, va_list ap)
{
	const char *vals[32];
	int lens[32], fmts[32], n = 0;
	char nums[32][24];
	PGresult *r;
	ExecStatusType st;

	if (state)
		state[0] = 0;
	for (const char *f = fmt; f && *f && n < 32; f++, n++) {
		lens[n] = 0;
		fmts[n] = 0;
		if (*f == 'i') {
			snprintf(nums[n], sizeof(nums[n]), "%lld", (long long)va_arg(ap, int64_t));
			vals[n] = nums[n];
		} else if (*f == 't') {
			vals[n] = va_arg(ap, const char *);
		} else if (*f == 'b') {
			const void *ptr = va_arg(ap, const void *);
			size_t len = va_arg(ap, size_t);

			vals[n] = ptr ? ptr : "";
			lens[n] = (int)len;
			fmts[n] = 1;
		} else {
			vals[n] = NULL;
		}
	}
	if (ensure_conn(p))
		return NULL;
	r = PQexecParams(p->conn, sql, n, NULL, vals, lens, fmts, 0);
	st = PQresultStatus(r);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		set_healthy(p);
		return r;
	}
	if (state && PQresultErrorField(r, PG_DIAG_SQLSTATE))
		snprintf(state, 6, "%s", PQresultErrorField(r, PG_DIAG_SQLSTATE));
	if (PQstatus(p->conn) != CONNECTION_OK)
		set_unhealthy(p, PQerrorMessage(p->conn));
	/* constraint clashes, and locks asked with NOWAIT, are the caller's */
	else if (!state || (strncmp(state, "23", 2) != 0 && strcmp(state, "55P03") != 0))
		hlog_error("store", "PostgreSQL: %s(%.120s)", PQresultErrorMessage(r), sql);
	PQclear(r);
	return NULL;
}

static PGresult *q(struct pg *p, const char *sql, const char *fmt, ...)
{
	va_list ap;
	PGresult *r;

	va_start(ap, fmt);
	r = qv(p, NULL, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* As q(), with the SQLSTATE of a failure in state (8 bytes). */
static PGresult *qs(struct pg *p, char *state, const char *sql, const char *fmt, ...)
{
	va_list ap;
	PGresult *r;

	va_start(ap, fmt);
	r = qv(p, state, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* A statement without rows: 0, -EEXIST on a uniqueness or key clash, -EIO. *changed = rows. */
static int run(struct pg *p, int64_t *changed, const char *sql, const char *fmt, ...)
{
	char state[8];
	va_list ap;
	PGresult *r;

	va_start(ap, fmt);
	r = qv(p, state, sql, fmt, ap);
	va_end(ap);
	if (!r)
		return strncmp(state, "23", 2) == 0 ? -EEXIST : -EIO;
	if (changed)
		*changed = atoll(PQcmdTuples(r));
	PQclear(r);
	return 0;
}

static int begin(struct pg *p) { return run(p, NULL, "BEGIN", NULL); }
static int finish(struct pg *p, int rc)
{
	if (rc == 0 && run(p, NULL, "COMMIT", NULL) == 0)
		return 0;
	if (PQstatus(p->conn) == CONNECTION_OK)
		run(p, NULL, "ROLLBACK", NULL);
	return rc ? rc : -EIO;
}

static int64_t col_i(PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static void col_s(PGresult *r, int row, int col, char *dst, size_t n)
{
	snprintf(dst, n, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

/* A bytea column (text format, hex) as fresh bytes. */
static uint8_t *col_b(PGresult *r, int row, int col, size_t *len)
{
	unsigned char *u;
	uint8_t *out;

	*len = 0;
	if (PQgetisnull(r, row, col))
		return calloc(1, 1);
	u = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), len);
	if (!u)
		return NULL;
	out = malloc(*len ? *len : 1);
	if (out)
		memcpy(out, u, *len);
	PQfreemem(u);
	return out;
}

#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_NUMERIC 1700

/* Every row as a JSON object keyed by column name (as store_sqlite.c's). Frees r. */
static json_t *rows_json(PGresult *r)
{
	json_t *arr = json_array();

	for (int i = 0; r && i < PQntuples(r); i++) {
		json_t *o = json_object();

		for (int c = 0; c < PQnfields(r); c++) {
			const char *name = PQfname(r, c);
			Oid t = PQftype(r, c);

			if (PQgetisnull(r, i, c)) {
				json_object_set_new(o, name, json_null());
			} else if (t == OID_INT8 || t == OID_INT4 || t == OID_INT2 || t == OID_NUMERIC) {
				json_object_set_new(o, name, json_integer(col_i(r, i, c)));
			} else if (t == OID_BYTEA) {
				size_t n;
				uint8_t *b = col_b(r, i, c, &n);
				json_t *v = json_stringn(b ? (const char *)b : "", b ? n : 0);

				if (!v) { /* shown as text with invalid UTF-8 replaced */
					for (size_t k = 0; b && k < n; k++)
						if (b[k] & 0x80)
							b[k] = '?';
					v = json_stringn(b ? (const char *)b : "", b ? n : 0);
				}
				free(b);
				json_object_set_new(o, name, v);
			} else {
				json_object_set_new(o, name, json_string(PQgetvalue(r, i, c)));
			}
		}
		json_array_append_new(arr, o);
	}
	PQclear(r);
	return arr;
}

static int lock_(struct pg *p)
{
	pthread_mutex_lock(&p->mu);
	return 1;
}

static int unlock_(struct pg *p)
{
	pthread_mutex_unlock(&p->mu);
	return 0;
}

/* Runs the statement after it with p->mu held; `break` leaves it (and unlocks). */
#define LOCKED(p) \
	for (int o_ = lock_(p); o_; o_ = unlock_(p)) \
		for (int i_ = 1; i_; i_ = 0)

/* ---- images ------------------------------------------------------------------- */

static int sha256_file(const char *path, char hex[65])
{
	unsigned char buf[65536], md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = 0;

	if (fd < 0 || !c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) {
		if (fd >= 0)
			close(fd);
		EVP_MD_CTX_free(c);
		return -EIO;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		EVP_DigestUpdate(c, buf, (size_t)n);
	close(fd);
	EVP_DigestFinal_ex(c, md, &mdlen);
	EVP_MD_CTX_free(c);
	if (n < 0)
		return -EIO;
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static bool verified(struct pg *p, const char *sha)
{
	for (size_t i = 0; i < p->nverified; i++)
		if (strcmp(p->verified[i], sha) == 0)
			return true;
	return false;
}

static void mark_verified(struct pg *p, const char *sha)
{
	if (p->nverified == p->capverified) {
		size_t cap = p->capverified ? p->capverified * 2 : 16;
		char(*v)[65] = realloc(p->verified, cap * sizeof(*v));

		if (!v)
			return;
		p->verified = v;
		p->capverified = cap;
	}
	snprintf(p->verified[p->nverified++], 65, "%s", sha);
}

static void unmark_verified(struct pg *p, const char *sha)
{
	for (size_t i = 0; i < p->nverified; i++)
		if (strcmp(p->verified[i], sha) == 0) {
			memcpy(p->verified[i], p->verified[--p->nverified], 65);
			return;
		}
}

/* Makes <image_dir>/<sha>.cpio hold the image with that hash (caller holds mu). */
static int ensure_image(struct pg *p, const char *sha, char *path, size_t n)
{
	char hex[65], tmp[512];
	PGresult *r;
	uint8_t *data;
	size_t len;
	int fd, rc = 0;

	snprintf(path, n, "%s/%s.cpio", p->image_dir, sha);
	if (verified(p, sha))
		return 0;
	if (sha256_file(path, hex) == 0) {
		if (strcmp(hex, sha) == 0) {
			mark_verified(p, sha);
			return 0;
		}
		hlog_warn("store", "cached image %s is corrupt (its hash is %s): fetching it again",
			  path, hex);
	}
	r = q(p, "SELECT data FROM images WHERE sha256 = $1", "t", sha);
	if (!r || PQntuples(r) != 1) {
		hlog_error("store", "image %s is not in the shared store", sha);
		PQclear(r);
		return -EIO;
	}
	data = col_b(r, 0, 0, &len);
	PQclear(r);
	if (!data)
		return -ENOMEM;
	mkdir(p->image_dir, 0700);
	snprintf(tmp, sizeof(tmp), "%s/.%s.%d.tmp", p->image_dir, sha, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len || fsync(fd) != 0)
		rc = -EIO;
	if (fd >= 0)
		close(fd);
	free(data);
	if (rc == 0 && (sha256_file(tmp, hex) || strcmp(hex, sha) != 0)) {
		hlog_error("store", "image %s from the shared store does not match its hash", sha);
		rc = -EIO;
	}
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -EIO;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	mark_verified(p, sha);
	hlog_info("store", "image %s fetched from the shared store (%zu bytes)", sha, len);
	return 0;
}

/* Reads a whole file; *len its size. NULL on failure. */
static uint8_t *read_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *data = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0 && fstat(fd, &st) == 0 && (data = malloc(st.st_size ? (size_t)st.st_size : 1)) &&
	    read(fd, data, (size_t)st.st_size) != st.st_size) {
		free(data);
		data = NULL;
	}
	if (fd >= 0)
		close(fd);
	*len = data ? (size_t)st.st_size : 0;
	return data;
}

/*
 * Inside the deploy's transaction: makes the image's row exist and holds a
 * key-share lock on it until the transaction ends, so that image GC (which
 * takes the row's update lock before it looks for versions) cannot remove
 * it before the version that references it is committed. A row GC removed
 * just before is stored again from the deploy's file. Caller holds mu.
 */
static int hold_image(struct pg *p, const char *sha, const char *path)
{
	static const char *const lock_row = "SELECT 1 FROM images WHERE sha256 = $1 FOR KEY SHARE";
	char hex[65];
	PGresult *r;
	uint8_t *data;
	size_t len;
	int rc, n;

	r = q(p, lock_row, "t", sha);
	if (!r)
		return -EIO;
	n = PQntuples(r);
	PQclear(r);
	if (n == 1)
		return 0;
	if (sha256_file(path, hex) || strcmp(hex, sha) != 0) {
		hlog_error("store", "image %s does not hash to its name %s", path, sha);
		return -EIO;
	}
	data = read_file(path, &len);
	if (!data)
		return -EIO;
	/* A concurrent deploy inserting the same hash: this waits for it, then does nothing. */
	rc = run(p, NULL, "INSERT INTO images(sha256, data, created_at) VALUES($1, $2, $3)"
		 " ON CONFLICT (sha256) DO NOTHING", "tbi", sha, data, len, now_s());
	free(data);
	r = rc ? NULL : q(p, lock_row, "t", sha);
	if (!rc && (!r || PQntuples(r) != 1))
		rc = -EIO;
	PQclear(r);
	if (rc == 0)
		mark_verified(p, sha);
	return rc;
}

/* ---- tenants and keys ------------------------------------------------------------ */

static int pg_tenant_create(struct pg *p, const char *name, int64_t *id)
{
	int rc = -EIO;

	LOCKED(p) {
		PGresult *r;

		r = q(p, "INSERT INTO tenants(name, created_at) VALUES($1, $2)"
			 " ON CONFLICT (name) DO NOTHING RETURNING id", "ti", name, now_s());
		if (r) {
			rc = PQntuples(r) == 1 ? 0 : -EEXIST;
			if (rc == 0 && id)
				*id = col_i(r, 0, 0);
			PQclear(r);
		}
	}
	return rc;
}

static int pg_tenant_id(struct pg *p, const char *name, int64_t *id)
{
	int rc = -ENOENT;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT id FROM tenants WHERE name = $1", "t", name);

		if (!r)
			rc = -EIO;
		else if (PQntuples(r) == 1) {
			*id = col_i(r, 0, 0);
			rc = 0;
		}
		PQclear(r);
	}
	return rc;
}

/* The ids of versions selected by sql (one int64 argument). */
static int version_ids(struct pg *p, const char *sql, int64_t id, const char *name, int64_t **ids,
		       size_t *nids)
{
	PGresult *r = name ? q(p, sql, "it", id, name) : q(p, sql, "i", id);
	int n;

	*ids = NULL;
	*nids = 0;
	if (!r)
		return -EIO;
	n = PQntuples(r);
	*ids = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
	if (!*ids) {
		PQclear(r);
		return -ENOMEM;
	}
	for (int i = 0; i < n; i++)
		(*ids)[i] = col_i(r, i, 0);
	*nids = (size_t)n;
	PQclear(r);
	return 0;
}

static int pg_tenant_delete(struct pg *p, const char *name, int64_t **ids, size_t *nids)
{
	static const char *const owned[] = {
		"DELETE FROM invocations WHERE tenant_id = $1",
		"DELETE FROM async_queue WHERE tenant_id = $1",
		"DELETE FROM dead_letters WHERE tenant_id = $1",
		"DELETE FROM snapshots WHERE version_id IN (SELECT v.id FROM versions v"
		"  JOIN functions f ON f.id = v.function_id WHERE f.tenant_id = $1)",
		"DELETE FROM tenants WHERE id = $1",
	};
	int rc = -EIO;

	*ids = NULL;
	*nids = 0;
	LOCKED(p) {
		PGresult *r;
		int64_t id = 0;

		if (begin(p))
			break;
		r = q(p, "SELECT id FROM tenants WHERE name = $1 FOR UPDATE", "t", name);
		rc = !r ? -EIO : PQntuples(r) == 1 ? 0 : -ENOENT;
		if (rc == 0)
			id = col_i(r, 0, 0);
		PQclear(r);
		if (rc == 0)
			rc = version_ids(p, "SELECT v.id FROM versions v JOIN functions f ON"
					 " f.id = v.function_id WHERE f.tenant_id = $1", id, NULL, ids,
					 nids);
		if (rc == 0)
			rc = run(p, NULL, "INSERT INTO deleted_tenants(id, name, deleted_at)"
				 " VALUES($1, $2, $3) ON CONFLICT (id) DO UPDATE SET name ="
				 " excluded.name, deleted_at = excluded.deleted_at", "iti", id, name,
				 now_s());
		for (size_t i = 0; rc == 0 && i < sizeof(owned) / sizeof(owned[0]); i++)
			rc = run(p, NULL, owned[i], "i", id);
		rc = finish(p, rc);
	}
	if (rc) {
		free(*ids);
		*ids = NULL;
		*nids = 0;
	}
	return rc;
}

static json_t *pg_tenant_list(struct pg *p)
{
	json_t *j = NULL;

	LOCKED(p) j = rows_json(q(p, "SELECT t.name, t.created_at, (SELECT COUNT(*) FROM functions"
				     " f WHERE f.tenant_id = t.id) AS functions FROM tenants t"
				     " ORDER BY t.name", NULL));
	return j;
}

static int pg_key_add(struct pg *p, const char *key_id, int64_t tenant_id, const uint8_t *hash)
{
	int rc = -EIO;

	LOCKED(p) {
		if (tenant_id)
			rc = run(p, NULL, "INSERT INTO api_keys(key_id, tenant_id, hash, created_at)"
				 " VALUES($1, $2, $3, $4)", "tibi", key_id, tenant_id, hash, (size_t)32,
				 now_s());
		else
			rc = run(p, NULL, "INSERT INTO api_keys(key_id, tenant_id, hash, created_at)"
				 " VALUES($1, NULL, $2, $3)", "tbi", key_id, hash, (size_t)32, now_s());
	}
	return rc;
}

static int pg_key_get(struct pg *p, const char *key_id, uint8_t *hash, int64_t *tenant_id,
		      char *tenant_name, size_t namelen)
{
	int rc = -ENOENT;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT k.hash, COALESCE(k.tenant_id, 0), COALESCE(t.name, '')"
				   " FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id"
				   " WHERE k.key_id = $1", "t", key_id);
		size_t n;
		uint8_t *b;

		if (!r) {
			rc = -EIO;
			break;
		}
		if (PQntuples(r) == 1 && (b = col_b(r, 0, 0, &n))) {
			if (n == 32) {
				memcpy(hash, b, 32);
				*tenant_id = col_i(r, 0, 1);
				col_s(r, 0, 2, tenant_name, namelen);
				rc = 0;
			}
			free(b);
		}
		PQclear(r);
	}
	return rc;
}

static int del_owned(struct pg *p, const char *sql, const char *key_id, int64_t tenant_id)
{
	int64_t n = 0;
	int rc = -EIO;

	LOCKED(p) rc = run(p, &n, sql, "ti", key_id, tenant_id);
	return rc ? rc : n ? 0 : -ENOENT;
}

static int pg_key_delete(struct pg *p, const char *key_id, int64_t tenant_id)
{
	return del_owned(p, "DELETE FROM api_keys WHERE key_id = $1 AND tenant_id = $2", key_id,
			 tenant_id);
}

static json_t *pg_key_list(struct pg *p, int64_t tenant_id)
{
	json_t *j = NULL;

	LOCKED(p) j = rows_json(q(p, "SELECT key_id, created_at FROM api_keys WHERE tenant_id = $1"
				     " ORDER BY created_at", "i", tenant_id));
	return j;
}

static bool pg_has_admin_key(struct pg *p)
{
	bool has = false;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT 1 FROM api_keys WHERE tenant_id IS NULL LIMIT 1", NULL);

		has = r && PQntuples(r) == 1;
		PQclear(r);
	}
	return has;
}

static int pg_aws_key_add(struct pg *p, const char *key_id, int64_t tenant_id, const uint8_t *sealed,
			  size_t len)
{
	int rc = -EIO;

	LOCKED(p) rc = run(p, NULL, "INSERT INTO aws_keys(key_id, tenant_id, sealed, created_at)"
			   " VALUES($1, $2, $3, $4)", "tibi", key_id, tenant_id, sealed, len, now_s());
	return rc;
}

static int pg_aws_key_get(struct pg *p, const char *key_id, int64_t *tenant_id, char *tenant_name,
			  size_t namelen, uint8_t *sealed, size_t *len)
{
	int rc = -ENOENT;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT k.tenant_id, t.name, k.sealed FROM aws_keys k"
				   " JOIN tenants t ON t.id = k.tenant_id WHERE k.key_id = $1", "t",
				key_id);
		size_t n;
		uint8_t *b;

		if (!r) {
			rc = -EIO;
			break;
		}
		if (PQntuples(r) == 1 && (b = col_b(r, 0, 2, &n))) {
			if (n <= *len) {
				*tenant_id = col_i(r, 0, 0);
				col_s(r, 0, 1, tenant_name, namelen);
				memcpy(sealed, b, n);
				*len = n;
				rc = 0;
			} else {
				rc = -EIO;
			}
			free(b);
		}
		PQclear(r);
	}
	return rc;
}

static int pg_aws_key_delete(struct pg *p, const char *key_id, int64_t tenant_id)
{
	return del_owned(p, "DELETE FROM aws_keys WHERE key_id = $1 AND tenant_id = $2", key_id,
			 tenant_id);
}

static json_t *pg_aws_key_list(struct pg *p, int64_t tenant_id)
{
	json_t *j = NULL;

	LOCKED(p) j = rows_json(q(p, "SELECT key_id AS access_key_id, created_at FROM aws_keys"
				     " WHERE tenant_id = $1 ORDER BY created_at, key_id", "i",
				  tenant_id));
	return j;
}

/* ---- limits and usage --------------------------------------------------------------- */

/* -EIO (and l untouched) when the store cannot be read: never "no limits". */
static int pg_limits_get(struct pg *p, int64_t tenant_id, struct tenant_limits *l)
{
	int rc = -EIO;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT max_concurrency, max_memory_mb, rate_per_s, burst,"
				   " max_functions, max_package_bytes, budget_mb_ms, max_code_bytes"
				   " FROM tenant_limits WHERE tenant_id = $1", "i", tenant_id);

		if (r) {
			rc = 0;
			memset(l, 0, sizeof(*l));
		}
		if (r && PQntuples(r) == 1) {
			l->max_concurrency = col_i(r, 0, 0);
			l->max_memory_mb = col_i(r, 0, 1);
			l->rate_per_s = col_i(r, 0, 2);
			l->burst = col_i(r, 0, 3);
			l->max_functions = col_i(r, 0, 4);
			l->max_package_bytes = col_i(r, 0, 5);
			l->budget_mb_ms = col_i(r, 0, 6);
			l->max_code_bytes = col_i(r, 0, 7);
		}
		PQclear(r);
	}
	return rc;
}

static int pg_limits_set(struct pg *p, int64_t tenant_id, const struct tenant_limits *l)
{
	int rc = -EIO;

	LOCKED(p) rc = run(p, NULL, "INSERT INTO tenant_limits(tenant_id, max_concurrency,"
			   " max_memory_mb, rate_per_s, burst, max_functions, max_package_bytes,"
			   " budget_mb_ms, max_code_bytes) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9)"
			   " ON CONFLICT (tenant_id) DO"
			   " UPDATE SET max_concurrency = excluded.max_concurrency, max_memory_mb ="
			   " excluded.max_memory_mb, rate_per_s = excluded.rate_per_s, burst ="
			   " excluded.burst, max_functions = excluded.max_functions,"
			   " max_package_bytes = excluded.max_package_bytes, budget_mb_ms ="
			   " excluded.budget_mb_ms, max_code_bytes = excluded.max_code_bytes",
			   "iiiiiiiii", tenant_id, l->max_concurrency, l->max_memory_mb, l->rate_per_s,
			   l->burst, l->max_functions, l->max_package_bytes, l->budget_mb_ms,
			   l->max_code_bytes);
	return rc;
}

static int pg_code_bytes(struct pg *p, int64_t tenant_id, const char *sha256, int64_t *bytes,
			 bool *has_sha)
{
	int rc = -EIO;

	*bytes = 0;
	*has_sha = false;
	LOCKED(p) {
		/* versions.package_bytes holds the image's size; each distinct image counts once. */
		PGresult *r = q(p, "SELECT COALESCE(SUM(b), 0), COALESCE(BOOL_OR(sha = $2), false)"
				   " FROM (SELECT v.image_sha256 AS sha, MAX(v.package_bytes) AS b FROM"
				   " versions v JOIN functions f ON f.id = v.function_id WHERE"
				   " f.tenant_id = $1 GROUP BY v.image_sha256) t", "it", tenant_id,
				sha256 ? sha256 : "");

		if (r && PQntuples(r) == 1) {
			*bytes = col_i(r, 0, 0);
			*has_sha = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
			rc = 0;
		}
		PQclear(r);
	}
	return rc;
}

static uint64_t pg_usage_since(struct pg *p, int64_t tenant_id, int64_t since_us)
{
	uint64_t v = 0;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT COALESCE(SUM(mb_ms + provisioned_mb_ms), 0) FROM"
				   " usage_hourly WHERE tenant_id = $1 AND hour >= $2", "ii", tenant_id,
				since_us / 3600000000LL);

		if (r && PQntuples(r) == 1)
			v = (uint64_t)col_i(r, 0, 0);
		PQclear(r);
	}
	return v;
}

static json_t *pg_usage_query(struct pg *p, int64_t tenant_id, int64_t from_us, int64_t to_us,
			      const char *group_by)
{
	const char *cols, *group;
	char sql[2048];
	json_t *j = NULL;

	if (strcmp(group_by, "hour") == 0) {
		cols = "u.hour * 3600 AS hour_start, t.name AS tenant, u.function,";
		group = "GROUP BY u.tenant_id, t.name, u.function, u.hour"
			" ORDER BY u.hour, t.name, u.function";
	} else if (strcmp(group_by, "function") == 0) {
		cols = "t.name AS tenant, u.function,";
		group = "GROUP BY u.tenant_id, t.name, u.function ORDER BY t.name, u.function";
	} else {
		cols = "t.name AS tenant,";
		group = "GROUP BY u.tenant_id, t.name ORDER BY t.name";
	}
	snprintf(sql, sizeof(sql),
		 "SELECT %s SUM(u.invocations) AS invocations, SUM(u.errors) AS errors,"
		 " SUM(u.cold_starts) AS cold_starts, SUM(u.duration_us) AS duration_us,"
		 " SUM(u.billed_ms) AS billed_ms, SUM(u.mb_ms) AS mb_ms,"
		 " SUM(u.provisioned_ms) AS provisioned_ms, SUM(u.provisioned_mb_ms) AS provisioned_mb_ms"
		 " FROM usage_hourly u"
		 " JOIN (SELECT id, name FROM tenants UNION ALL"
		 "       SELECT id, name || ' (deleted)' FROM deleted_tenants) t ON t.id = u.tenant_id"
		 " WHERE ($1::bigint = 0 OR u.tenant_id = $1::bigint)"
		 " AND u.hour >= $2 AND u.hour < $3 %s", cols, group);
	LOCKED(p) j = rows_json(q(p, sql, "iii", tenant_id, from_us / 3600000000LL,
				  (to_us + 3600000000LL - 1) / 3600000000LL));
	return j;
}

/* ---- snapshot index (per host: the files are local) ---------------------------------- */

static int pg_snapshot_put(struct pg *p, int64_t version_id, const char *engine, const char *kernel_id,
			   const char *vmm_version, const char *shape, const char *mem,
			   const char *state)
{
	int rc = -EIO;

	LOCKED(p) rc = run(p, NULL, "INSERT INTO snapshots(host_id, version_id, engine, kernel_id,"
			   " vmm_version, shape, mem_path, state_path, created_at)"
			   " VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (host_id, version_id, engine,"
			   " kernel_id, vmm_version, shape) DO UPDATE SET mem_path = excluded.mem_path,"
			   " state_path = excluded.state_path, created_at = excluded.created_at",
			   "titttttti", p->host_id, version_id, engine, kernel_id, vmm_version, shape,
			   mem, state, now_s());
	return rc;
}

static int pg_snapshot_get(struct pg *p, int64_t version_id, const char *engine, const char *kernel_id,
			   const char *vmm_version, const char *shape, char *mem, size_t memlen,
			   char *state, size_t statelen)
{
	int rc = -ENOENT;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT mem_path, state_path FROM snapshots WHERE host_id = $1 AND"
				   " version_id = $2 AND engine = $3 AND kernel_id = $4 AND"
				   " vmm_version = $5 AND shape = $6", "titttt", p->host_id, version_id,
				engine, kernel_id, vmm_version, shape);

		if (r && PQntuples(r) == 1) {
			col_s(r, 0, 0, mem, memlen);
			col_s(r, 0, 1, state, statelen);
			rc = 0;
		}
		PQclear(r);
	}
	return rc;
}

/* ---- functions and versions ------------------------------------------------------------ */

static int pg_version_add(struct pg *p, struct fn_version *v)
{
	int rc = -EIO;

	LOCKED(p) {
		PGresult *r;

		/* The image's row first, locked until the version is committed (image GC). */
		if ((rc = begin(p)))
			break;
		rc = hold_image(p, v->image_sha256, v->image_path);
		if (rc == 0)
			rc = run(p, NULL, "INSERT INTO functions(tenant_id, name, created_at)"
				 " VALUES($1,$2,$3) ON CONFLICT (tenant_id, name) DO NOTHING", "iti",
				 v->tenant_id, v->name, now_s());
		/* The row lock orders concurrent deploys of one function (on any host). */
		r = rc ? NULL : q(p, "SELECT id, latest + 1 FROM functions WHERE tenant_id = $1 AND"
				     " name = $2 FOR UPDATE", "it", v->tenant_id, v->name);
		if (!rc && (!r || PQntuples(r) != 1))
			rc = -EIO;
		if (!rc) {
			v->function_id = col_i(r, 0, 0);
			v->version = (int)col_i(r, 0, 1);
		}
		PQclear(r);
		r = rc ? NULL : q(p, "INSERT INTO versions(function_id, version, image_sha256, handler,"
				     " args, env, init, memory_mb, timeout_ms, engine, package_bytes,"
				     " created_at, runtime) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)"
				     " RETURNING id", "iitttttiitiit", v->function_id, (int64_t)v->version,
				  v->image_sha256, v->handler, v->args_json ? v->args_json : "[]",
				  v->env_json ? v->env_json : "{}", v->init, (int64_t)v->memory_mb,
				  (int64_t)v->timeout_ms, v->engine, (int64_t)v->package_bytes, now_s(),
				  v->runtime);
		if (!rc && (!r || PQntuples(r) != 1))
			rc = -EIO;
		if (!rc)
			v->id = col_i(r, 0, 0);
		PQclear(r);
		if (!rc)
			rc = run(p, NULL, "UPDATE functions SET latest = $1 WHERE id = $2", "ii",
				 (int64_t)v->version, v->function_id);
		rc = finish(p, rc);
	}
	return rc;
}

#define VERSION_COLS                                                                        \
	"v.id, v.function_id, f.tenant_id, f.name, v.version, v.image_sha256,"              \
	" v.handler, v.args, v.env, v.init, v.memory_mb, v.timeout_ms, v.engine,"          \
	" v.package_bytes, f.provisioned, v.runtime FROM versions v"                       \
	" JOIN functions f ON f.id = v.function_id"

/* Fills v from r's first row; the image is made present in this host's cache. */
static int fetch_version(struct pg *p, PGresult *r, struct fn_version *v)
{
	int rc = -ENOENT;

	memset(v, 0, sizeof(*v));
	if (!r)
		return -EIO;
	if (PQntuples(r) == 1) {
		v->id = col_i(r, 0, 0);
		v->function_id = col_i(r, 0, 1);
		v->tenant_id = col_i(r, 0, 2);
		col_s(r, 0, 3, v->name, sizeof(v->name));
		v->version = (int)col_i(r, 0, 4);
		col_s(r, 0, 5, v->image_sha256, sizeof(v->image_sha256));
		col_s(r, 0, 6, v->handler, sizeof(v->handler));
		v->args_json = strdup(PQgetvalue(r, 0, 7));
		v->env_json = strdup(PQgetvalue(r, 0, 8));
		col_s(r, 0, 9, v->init, sizeof(v->init));
		v->memory_mb = (uint32_t)col_i(r, 0, 10);
		v->timeout_ms = (uint32_t)col_i(r, 0, 11);
		col_s(r, 0, 12, v->engine, sizeof(v->engine));
		v->package_bytes = (uint64_t)col_i(r, 0, 13);
		v->provisioned = (int)col_i(r, 0, 14);
		col_s(r, 0, 15, v->runtime, sizeof(v->runtime));
		rc = ensure_image(p, v->image_sha256, v->image_path, sizeof(v->image_path));
		if (rc)
			fn_version_free(v);
	}
	PQclear(r);
	return rc;
}

static int pg_version_get(struct pg *p, int64_t tenant_id, const char *name, int version,
			  struct fn_version *v)
{
	int rc = -EIO;

	LOCKED(p) {
		if (version > 0)
			rc = fetch_version(p, q(p, "SELECT " VERSION_COLS " WHERE f.tenant_id = $1 AND"
					       " f.name = $2 AND v.version = $3", "iti", tenant_id,
					       name, (int64_t)version), v);
		else
			rc = fetch_version(p, q(p, "SELECT " VERSION_COLS " WHERE f.tenant_id = $1 AND"
					       " f.name = $2 AND v.version = f.latest", "it",
					       tenant_id, name), v);
	}
	return rc;
}

static int pg_version_by_id(struct pg *p, int64_t version_id, struct fn_version *v)
{
	int rc = -EIO;

	LOCKED(p) rc = fetch_version(p, q(p, "SELECT " VERSION_COLS " WHERE v.id = $1", "i",
					  version_id), v);
	return rc;
}

static json_t *pg_function_list(struct pg *p, int64_t tenant_id)
{
	json_t *j = NULL;

	LOCKED(p) j = rows_json(q(p, "SELECT f.name, f.latest AS latest_version, f.provisioned,"
				     " v.memory_mb, v.timeout_ms, v.engine, v.image_sha256, f.created_at"
				     " FROM functions f JOIN versions v ON v.function_id = f.id AND"
				     " v.version = f.latest WHERE f.tenant_id = $1 ORDER BY f.name", "i",
				  tenant_id));
	return j;
}

static json_t *pg_function_get(struct pg *p, int64_t tenant_id, const char *name)
{
	json_t *fn = NULL, *versions = NULL, *o;

	LOCKED(p) {
		fn = rows_json(q(p, "SELECT name, latest AS latest_version, provisioned, reserved,"
				    " created_at FROM functions WHERE tenant_id = $1 AND name = $2", "it",
				 tenant_id, name));
		if (json_array_size(fn) == 0)
			break;
		versions = rows_json(q(p, "SELECT v.version, v.image_sha256, v.handler, v.memory_mb,"
					  " v.timeout_ms, v.engine, v.package_bytes, v.created_at,"
					  " CASE v.runtime WHEN '' THEN 'exec' ELSE v.runtime END AS runtime"
					  " FROM versions v JOIN functions f ON f.id = v.function_id"
					  " WHERE f.tenant_id = $1 AND f.name = $2 ORDER BY v.version", "it",
				       tenant_id, name));
	}
	if (json_array_size(fn) == 0) {
		json_decref(fn);
		return NULL;
	}
	o = json_incref(json_array_get(fn, 0));
	json_decref(fn);
	json_object_set_new(o, "versions", versions ? versions : json_array());
	return o;
}

static int pg_function_delete(struct pg *p, int64_t tenant_id, const char *name, int64_t **ids,
			      size_t *nids)
{
	int rc = -EIO;

	*ids = NULL;
	*nids = 0;
	LOCKED(p) {
		int64_t n = 0;

		if (begin(p))
			break;
		rc = version_ids(p, "SELECT v.id FROM versions v JOIN functions f ON f.id ="
				 " v.function_id WHERE f.tenant_id = $1 AND f.name = $2", tenant_id,
				 name, ids, nids);
		if (rc == 0)
			rc = run(p, &n, "DELETE FROM functions WHERE tenant_id = $1 AND name = $2", "it",
				 tenant_id, name);
		if (rc == 0 && n == 0)
			rc = -ENOENT;
		rc = finish(p, rc);
	}
	if (rc) {
		free(*ids);
		*ids = NULL;
		*nids = 0;
	}
	return rc;
}

static int pg_function_set_provisioned(struct pg *p, int64_t tenant_id, const char *name, int n)
{
	int64_t c = 0;
	int rc = -EIO;

	LOCKED(p) rc = run(p, &c, "UPDATE functions SET provisioned = $1 WHERE tenant_id = $2 AND"
			   " name = $3", "iit", (int64_t)n, tenant_id, name);
	return rc ? rc : c ? 0 : -ENOENT;
}

static int pg_function_set_reserved(struct pg *p, int64_t tenant_id, const char *name, int64_t n)
{
	int64_t c = 0;
	int rc = -EIO;

	LOCKED(p) rc = run(p, &c, "UPDATE functions SET reserved = $1 WHERE tenant_id = $2 AND"
			   " name = $3", "iit", n, tenant_id, name);
	return rc ? rc : c ? 0 : -ENOENT;
}

/* Two-column integer pairs of r into fresh arrays. */
static int pairs(PGresult *r, int64_t **a, int64_t **b, int **bi, size_t *n)
{
	int k = r ? PQntuples(r) : 0;

	*n = 0;
	*a = malloc((size_t)(k ? k : 1) * sizeof(int64_t));
	if (b)
		*b = malloc((size_t)(k ? k : 1) * sizeof(int64_t));
	else
		*bi = malloc((size_t)(k ? k : 1) * sizeof(int));
	if (!*a || (b ? !*b : !*bi)) {
		PQclear(r);
		return -ENOMEM;
	}
	for (int i = 0; i < k; i++) {
		(*a)[i] = col_i(r, i, 0);
		if (b)
			(*b)[i] = col_i(r, i, 1);
		else
			(*bi)[i] = (int)col_i(r, i, 1);
	}
	*n = (size_t)k;
	PQclear(r);
	return 0;
}

static int pg_reservations(struct pg *p, int64_t tenant_id, int64_t **ids, int64_t **res, size_t *n)
{
	int rc = -EIO;

	LOCKED(p) rc = pairs(q(p, "SELECT id, reserved FROM functions WHERE ($1::bigint = 0 OR"
			       " tenant_id = $1::bigint) AND reserved > 0", "i", tenant_id), ids, res,
			     NULL, n);
	return rc;
}

static int64_t pg_function_reserved(struct pg *p, int64_t function_id)
{
	int64_t v = 0;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT reserved FROM functions WHERE id = $1", "i", function_id);

		if (r && PQntuples(r) == 1)
			v = col_i(r, 0, 0);
		PQclear(r);
	}
	return v;
}

static int64_t pg_reserved_sum(struct pg *p, int64_t tenant_id, const char *except_name)
{
	int64_t v = 0;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT LEAST(COALESCE(SUM(reserved), 0), 9200000000000000000)"
				   "::bigint FROM functions WHERE ($1::bigint = 0 OR tenant_id ="
				   " $1::bigint) AND NOT (tenant_id = $1::bigint AND name = $2)", "it",
				tenant_id, except_name ? except_name : "");

		if (r && PQntuples(r) == 1)
			v = col_i(r, 0, 0);
		PQclear(r);
	}
	return v;
}

static int pg_provisioned_list(struct pg *p, int64_t **ids, int **counts, size_t *n)
{
	int rc = -EIO;

	LOCKED(p) rc = pairs(q(p, "SELECT v.id, f.provisioned FROM functions f JOIN versions v ON"
			       " v.function_id = f.id AND v.version = f.latest WHERE f.provisioned > 0",
			       NULL), ids, NULL, counts, n);
	return rc;
}

static int pg_function_count(struct pg *p, int64_t tenant_id, int64_t *n)
{
	*n = 0;
	LOCKED(p) {
		PGresult *r = q(p, "SELECT COUNT(*) FROM functions WHERE tenant_id = $1", "i",
				tenant_id);

		if (r && PQntuples(r) == 1)
			*n = col_i(r, 0, 0);
		PQclear(r);
	}
	return 0;
}

static json_t *pg_lambda_functions(struct pg *p, int64_t tenant_id, const char *name, int version,
				   const char *after, int limit)
{
	json_t *j = NULL;

	LOCKED(p) {
		if (name)
			j = rows_json(q(p, "SELECT f.name, v.version, v.handler, v.memory_mb, v.timeout_ms,"
				       " v.image_sha256, v.package_bytes, v.engine, v.created_at"
				       " FROM functions f JOIN versions v ON v.function_id = f.id AND"
				       " v.version = CASE WHEN $1::int > 0 THEN $1::int ELSE f.latest END"
				       " WHERE f.tenant_id = $2 AND f.name = $3", "iit", (int64_t)version,
				       tenant_id, name));
		else
			j = rows_json(q(p, "SELECT f.name, v.version, v.handler, v.memory_mb, v.timeout_ms,"
				       " v.image_sha256, v.package_bytes, v.engine, v.created_at"
				       " FROM functions f JOIN versions v ON v.function_id = f.id AND"
				       " v.version = f.latest WHERE f.tenant_id = $1 AND f.name > $2"
				       " ORDER BY f.name LIMIT $3", "iti", tenant_id, after ? after : "",
				       (int64_t)limit));
	}
	return j;
}

/* ---- the usage ledger ---------------------------------------------------------------------- */

/*
 * One record and its hourly aggregate, in ONE statement (one round trip; a
 * statement is atomic on its own, and it also runs inside the callers'
 * transactions). Idempotent by (request id, attempt): a record already there
 * (a retry after a lost commit answer, a replayed spool, a second host
 * finishing the same event) is neither added nor counted again, because the
 * aggregate only moves for a row the INSERT returned. Caller holds mu.
 */
#define INSERT_RECORD                                                                          \
	"WITH ins AS (INSERT INTO invocations(request_id, attempt, tenant_id, version_id,"      \
	" function, version, kind, start_us, end_us, duration_us, billed_ms, memory_mb,"       \
	" max_rss_kb, cold, init_ms, boot_ms, status, error, logs, mb_ms, cold_path, host_id)" \
	" VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)" \
	" ON CONFLICT (request_id, attempt) DO NOTHING RETURNING 1) "

static int invocation_insert(struct pg *p, const struct inv_record *r)
{
	int64_t hour = r->start_us / 3600000000LL;

#define RECORD_ARGS                                                                            \
	r->request_id, (int64_t)r->attempt, r->tenant_id, r->version_id, r->function,           \
		(int64_t)r->version, r->kind, r->start_us, r->end_us, (int64_t)r->duration_us,  \
		(int64_t)r->billed_ms, (int64_t)r->memory_mb, (int64_t)r->max_rss_kb,            \
		(int64_t)r->cold, (int64_t)r->init_ms, (int64_t)r->boot_ms, r->status, r->error, \
		r->logs, r->logs_len, (int64_t)r->mb_ms, r->cold ? r->cold_path : NULL, p->host_id
	if (strcmp(r->kind, "provisioned") == 0)
		/* Time a provisioned VM was kept: billed apart from invocations. */
		return run(p, NULL, INSERT_RECORD "INSERT INTO usage_hourly(tenant_id, function, hour,"
			   " invocations, errors, cold_starts, duration_us, billed_ms, mb_ms,"
			   " provisioned_ms, provisioned_mb_ms) SELECT $23, $24, $25, 0, 0, 0, 0, 0, 0,"
			   " $26, $27 FROM ins ON CONFLICT (tenant_id, function, hour) DO UPDATE SET"
			   " provisioned_ms = usage_hourly.provisioned_ms + excluded.provisioned_ms,"
			   " provisioned_mb_ms = usage_hourly.provisioned_mb_ms + excluded.provisioned_mb_ms",
			   "tiiitit" "iiiiiiiii" "ttbitt" "itiii", RECORD_ARGS, r->tenant_id, r->function,
			   hour, (int64_t)r->billed_ms, (int64_t)r->mb_ms);
	return run(p, NULL, INSERT_RECORD "INSERT INTO usage_hourly(tenant_id, function, hour,"
		   " invocations, errors, cold_starts, duration_us, billed_ms, mb_ms)"
		   " SELECT $23, $24, $25, 1, $26, $27, $28, $29, $30 FROM ins"
		   " ON CONFLICT (tenant_id, function, hour) DO UPDATE SET"
		   " invocations = usage_hourly.invocations + 1,"
		   " errors = usage_hourly.errors + excluded.errors,"
		   " cold_starts = usage_hourly.cold_starts + excluded.cold_starts,"
		   " duration_us = usage_hourly.duration_us + excluded.duration_us,"
		   " billed_ms = usage_hourly.billed_ms + excluded.billed_ms,"
		   " mb_ms = usage_hourly.mb_ms + excluded.mb_ms",
		   "tiiitit" "iiiiiiiii" "ttbitt" "itiiiiii", RECORD_ARGS, r->tenant_id, r->function,
		   hour, (int64_t)(strcmp(r->status, "Success") != 0), (int64_t)r->cold,
		   (int64_t)r->duration_us, (int64_t)r->billed_ms, (int64_t)r->mb_ms);
#undef RECORD_ARGS
}

static int spool_add(struct pg *p, const struct inv_record *r, const char *op,
		     enum async_action action, int attempts, int64_t next_ms, const char *error,
		     int64_t now_ms);
static int async_complete_locked(struct pg *p, const struct inv_record *r,
				 enum async_action action, int attempts, int64_t next_ms,
				 const char *error, int64_t now_ms);

static int pg_invocation_add(struct pg *p, const struct inv_record *r)
{
	int rc = -EIO;

	LOCKED(p) {
		rc = invocation_insert(p, r);
		/* Unreachable: kept locally, recorded when the database is back. */
		if (rc == -EIO)
			rc = spool_add(p, r, "inv", 0, 0, 0, NULL, 0);
	}
	return rc;
}

/* One transaction would need a savepoint per record; records commit one by one instead. */
static int pg_invocation_add_batch(struct pg *p, const struct inv_record *r, size_t n, int *rcs)
{
	for (size_t i = 0; i < n; i++)
		rcs[i] = pg_invocation_add(p, &r[i]);
	return 0;
}

/* ---- the local spool: records made while the database was unreachable ----------------------- */

/*
 * Appends one record (and, for an async outcome, what follows from it) to
 * the spool as a JSON line, fsync'd before returning: durable on this host
 * like a committed row. Caller holds mu.
 */
static int spool_add(struct pg *p, const struct inv_record *r, const char *op,
		     enum async_action action, int attempts, int64_t next_ms, const char *error,
		     int64_t now_ms)
{
	json_t *j;
	char *line;
	int fd, rc = 0;
	size_t n;

	if (!p->spool[0])
		return -EIO;
	j = store_record_json(r);
	if (j && json_object_update_new(j, json_pack("{s:s,s:i,s:i,s:I,s:s?,s:I}", "op", op,
							  "action", (int)action, "attempts", attempts,
							  "next_ms", (json_int_t)next_ms,
							  "async_error", error, "now_ms",
							  (json_int_t)now_ms)) != 0) {
		json_decref(j);
		j = NULL;
	}
	line = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!line)
		return -ENOMEM;
	n = strlen(line);
	line[n] = '\n'; /* the terminating NUL becomes the line's end */
	fd = open(p->spool, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, line, n + 1) != (ssize_t)(n + 1) || fsync(fd) != 0)
		rc = -EIO;
	if (fd >= 0)
		close(fd);
	free(line);
	if (rc) {
		hlog_error("store", "cannot keep record %s in %s: %s", r->request_id, p->spool,
			   strerror(errno));
		return rc;
	}
	if (!p->spooled)
		hlog_warn("store", "the database is unreachable: records are kept in %s until it "
			  "is back", p->spool);
	p->spooled = true;
	return 0;
}

static int64_t ji(json_t *j, const char *k)
{
	return (int64_t)json_integer_value(json_object_get(j, k));
}

static const char *js(json_t *j, const char *k)
{
	return json_string_value(json_object_get(j, k));
}

/* Records one spooled line; 0 when done (or no longer needed). Caller holds mu. */
static int spool_replay_one(struct pg *p, json_t *j)
{
	uint8_t *logs = NULL;
	struct inv_record r;
	int rc;

	if (store_record_parse(j, &r, &logs)) {
		hlog_error("store", "%s: a malformed line is dropped", p->spool);
		free(logs);
		return 0;
	}
	if (strcmp(js(j, "op") ? js(j, "op") : "", "async") == 0) {
		rc = async_complete_locked(p, &r, (enum async_action)ji(j, "action"),
					   (int)ji(j, "attempts"), ji(j, "next_ms"),
					   js(j, "async_error"), ji(j, "now_ms"));
		if (rc == -ESTALE) /* another host took the event over: its outcome counts */
			rc = 0;
	} else {
		rc = invocation_insert(p, &r);
	}
	free(logs);
	return rc;
}

/*
 * Records what the spool holds (idempotent: a line recorded before a crash
 * is not counted twice), then empties it. Lines that fail stay. Caller
 * holds mu.
 */
static void spool_replay(struct pg *p)
{
	FILE *f = fopen(p->spool, "r"), *keep = NULL;
	char tmp[4300], *line = NULL;
	size_t cap = 0;
	int done = 0, kept = 0;

	if (!f) {
		p->spooled = false;
		return;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", p->spool);
	while (getline(&line, &cap, f) > 0) {
		json_t *j = json_loads(line, 0, NULL);

		if (j && spool_replay_one(p, j) == 0) {
			done++;
		} else if (j) {
			if (!keep)
				keep = fopen(tmp, "w");
			if (keep)
				fputs(line, keep);
			kept++;
		}
		json_decref(j);
	}
	free(line);
	fclose(f);
	if (keep) {
		fflush(keep);
		fsync(fileno(keep));
		fclose(keep);
		rename(tmp, p->spool);
	} else if (kept == 0) {
		unlink(p->spool);
		p->spooled = false;
	}
	if (done)
		hlog_info("store", "%d records kept while the database was unreachable are recorded"
			  "%s", done, kept ? " (some are still waiting)" : "");
}

static json_t *pg_invocation_logs(struct pg *p, int64_t tenant_id, const char *function, int limit)
{
	json_t *j = NULL;

	LOCKED(p) j = rows_json(q(p, "SELECT request_id, function, version, kind, start_us,"
				     " duration_us, billed_ms, memory_mb, max_rss_kb, cold, cold_path,"
				     " init_ms, boot_ms, status, error, logs FROM invocations"
				     " WHERE tenant_id = $1 AND function = $2 AND kind != 'provisioned'"
				     " ORDER BY start_us DESC LIMIT $3", "iti", tenant_id, function,
				  (int64_t)limit));
	return j;
}

/* ---- async queue (shared by the fleet) -------------------------------------------------------- */

static int pg_async_put(struct pg *p, const char *request_id, int64_t tenant_id, int64_t version_id,
			const void *payload, size_t len, int64_t now_ms)
{
	int rc = -EIO;

	LOCKED(p) rc = run(p, NULL, "INSERT INTO async_queue(request_id, tenant_id, version_id,"
			   " payload, state, next_at_ms, created_ms) VALUES($1,$2,$3,$4,'queued',$5,$6)",
			   "tiibii", request_id, tenant_id, version_id, payload, len, now_ms, now_ms);
	return rc;
}

/* Hosts whose heartbeat is fresh (on the database's clock). */
#define LIVE_HOSTS "(SELECT host_id FROM hosts WHERE heartbeat_at > " DB_NOW_MS " - 5000)"

/*
 * Claims due events, and events that a dead host had claimed (its heartbeat
 * expired before it recorded them). SKIP LOCKED: hosts claiming at once get
 * different events, without waiting on each other.
 */
static int pg_async_claim(struct pg *p, int64_t now_ms, struct async_item *items, int max, int *n)
{
	*n = 0;
	LOCKED(p) {
		PGresult *r = settled(p) ?
			q(p, "UPDATE async_queue SET state = 'running', claimed_by = $1"
			     " WHERE request_id IN (SELECT request_id FROM async_queue WHERE"
			     " (state = 'queued' AND next_at_ms <= $2) OR (state = 'running' AND"
			     " claimed_by NOT IN " LIVE_HOSTS ") ORDER BY next_at_ms LIMIT $3"
			     " FOR UPDATE SKIP LOCKED) RETURNING request_id, tenant_id, version_id,"
			     " payload, attempts, created_ms", "tii", p->host_id, now_ms, (int64_t)max) :
			q(p, "UPDATE async_queue SET state = 'running', claimed_by = $1"
			     " WHERE request_id IN (SELECT request_id FROM async_queue WHERE"
			     " state = 'queued' AND next_at_ms <= $2 ORDER BY next_at_ms LIMIT $3"
			     " FOR UPDATE SKIP LOCKED) RETURNING request_id, tenant_id, version_id,"
			     " payload, attempts, created_ms", "tii", p->host_id, now_ms, (int64_t)max);
		int k = r ? PQntuples(r) : 0;

		for (int i = 0; i < k && i < max; i++) {
			struct async_item *a = &items[*n];

			memset(a, 0, sizeof(*a));
			col_s(r, i, 0, a->request_id, sizeof(a->request_id));
			a->tenant_id = col_i(r, i, 1);
			a->version_id = col_i(r, i, 2);
			a->payload = col_b(r, i, 3, &a->payload_len);
			if (!a->payload) {
				/* not handed out: back to the queue */
				run(p, NULL, "UPDATE async_queue SET state = 'queued', claimed_by = NULL"
				    " WHERE request_id = $1", "t", a->request_id);
				continue;
			}
			a->attempts = (int)col_i(r, i, 4);
			a->created_ms = col_i(r, i, 5);
			(*n)++;
		}
		PQclear(r);
	}
	return 0;
}

static int async_complete_locked(struct pg *p, const struct inv_record *r, enum async_action action,
			     int attempts, int64_t next_ms, const char *error, int64_t now_ms)
{
	int rc = -EIO;

	do {
		PGresult *res;

		if (begin(p))
			break;
		/* Still ours? A host taken for dead may finish late: the event was handed to
		 * another host meanwhile, whose outcome is the one recorded. */
		res = q(p, "SELECT 1 FROM async_queue WHERE request_id = $1 AND state = 'running'"
			   " AND claimed_by = $2 FOR UPDATE", "tt", r->request_id, p->host_id);
		rc = !res ? -EIO : PQntuples(res) == 1 ? 0 : -ESTALE;
		PQclear(res);
		if (rc == -ESTALE)
			hlog_warn("store", "event %s was taken over by another host; this host's "
				  "attempt is not recorded", r->request_id);
		if (rc == 0)
			rc = invocation_insert(p, r);
		if (rc == 0 && action == ASYNC_SUCCEEDED)
			rc = run(p, NULL, "UPDATE async_queue SET state = 'succeeded', attempts = $1,"
				 " payload = ''::bytea, claimed_by = NULL WHERE request_id = $2", "it",
				 (int64_t)attempts, r->request_id);
		else if (rc == 0 && action == ASYNC_RETRY)
			rc = run(p, NULL, "UPDATE async_queue SET state = 'queued', attempts = $1,"
				 " next_at_ms = $2, last_error = $3, claimed_by = NULL WHERE request_id = $4",
				 "iitt", (int64_t)attempts, next_ms, error, r->request_id);
		else if (rc == 0) {
			rc = run(p, NULL, "INSERT INTO dead_letters(request_id, tenant_id, function,"
				 " version, payload, attempts, reason, failed_ms) SELECT request_id,"
				 " tenant_id, $1, $2, payload, $3, $4, $5 FROM async_queue WHERE"
				 " request_id = $6 ON CONFLICT (request_id) DO NOTHING", "tiitit",
				 r->function, (int64_t)r->version, (int64_t)attempts, error, now_ms,
				 r->request_id);
			if (rc == 0)
				rc = run(p, NULL, "UPDATE async_queue SET state = 'dead', attempts = $1,"
					 " last_error = $2, payload = ''::bytea, claimed_by = NULL"
					 " WHERE request_id = $3", "itt", (int64_t)attempts, error,
					 r->request_id);
		}
		rc = finish(p, rc);
	} while (0);
	return rc;
}

static int spool_add(struct pg *p, const struct inv_record *r, const char *op,
		     enum async_action action, int attempts, int64_t next_ms, const char *error,
		     int64_t now_ms);

static int pg_async_complete(struct pg *p, const struct inv_record *r, enum async_action action,
			     int attempts, int64_t next_ms, const char *error, int64_t now_ms)
{
	int rc = -EIO;

	LOCKED(p) {
		rc = async_complete_locked(p, r, action, attempts, next_ms, error, now_ms);
		/* Unreachable: kept locally, recorded when the database is back. */
		if (rc == -EIO)
			rc = spool_add(p, r, "async", action, attempts, next_ms, error, now_ms);
	}
	return rc;
}

static int pg_async_defer(struct pg *p, const char *request_id, int64_t next_ms)
{
	int rc = -EIO;

	LOCKED(p) rc = run(p, NULL, "UPDATE async_queue SET state = 'queued', next_at_ms = $1,"
			   " claimed_by = NULL WHERE request_id = $2 AND state = 'running' AND"
			   " claimed_by = $3", "itt", next_ms, request_id, p->host_id);
	return rc;
}

/* At start: this host's own claims (a previous run of it was killed) go back to the queue. */
static int pg_async_recover(struct pg *p, int *n)
{
	int64_t c = 0;
	int rc = -EIO;

	LOCKED(p) rc = run(p, &c, "UPDATE async_queue SET state = 'queued', claimed_by = NULL"
			   " WHERE state = 'running' AND claimed_by = $1", "t", p->host_id);
	*n = (int)c;
	return rc;
}

static int64_t pg_async_next_due(struct pg *p)
{
	int64_t t = -1;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT MIN(next_at_ms) FROM async_queue WHERE state = 'queued'",
				NULL);

		if (r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
			t = col_i(r, 0, 0);
		PQclear(r);
	}
	return t;
}

static json_t *pg_async_get(struct pg *p, int64_t tenant_id, const char *request_id)
{
	json_t *j = NULL, *o;

	LOCKED(p) j = rows_json(q(p, "SELECT request_id, state, attempts, next_at_ms, created_ms,"
				     " last_error FROM async_queue WHERE tenant_id = $1 AND"
				     " request_id = $2", "it", tenant_id, request_id));
	o = json_array_size(j) ? json_incref(json_array_get(j, 0)) : NULL;
	json_decref(j);
	return o;
}

static json_t *pg_dead_letters(struct pg *p, int64_t tenant_id, int limit)
{
	json_t *j = NULL;

	LOCKED(p) j = rows_json(q(p, "SELECT request_id, function, version, attempts, reason,"
				     " failed_ms, payload FROM dead_letters WHERE tenant_id = $1"
				     " ORDER BY failed_ms DESC LIMIT $2", "ii", tenant_id,
				  (int64_t)limit));
	return j;
}

/* ---- concurrency slot leases ------------------------------------------------------------------ */

/*
 * The size of a pool of a tenant's slots from its stored rows (store.h): the
 * unreserved pool is max_concurrency minus the reservations; a reserved pool
 * is the function's reservation, shrunk by the excess when the reservations
 * exceed max_concurrency, so the pools never sum to more than the limit.
 * Never above the caller's limit; -1 = no limit.
 */
static int64_t pool_size(int64_t function_id, int64_t limit, int64_t max, int64_t reserved_sum,
			 int64_t reserved)
{
	int64_t size = -1;

	if (function_id == 0 && max > 0)
		size = max > reserved_sum ? max - reserved_sum : 0;
	else if (function_id != 0) {
		size = reserved;
		if (max > 0 && reserved_sum > max)
			size = reserved > reserved_sum - max ? reserved - (reserved_sum - max) : 0;
	}
	if (limit > 0 && (size < 0 || size > limit))
		size = limit;
	return size;
}

static int pg_slots_lease(struct pg *p, int64_t tenant_id, int64_t function_id, int64_t limit,
			  int64_t want, int64_t *held)
{
	int rc = -EIO;

	LOCKED(p) {
		PGresult *r;
		int64_t others = 0, size = -1, grant;

		if (begin(p))
			break;
		/* One lease change of a tenant's pools at a time, fleet-wide. */
		rc = run(p, NULL, "SELECT pg_advisory_xact_lock(7235, $1::int)", "i", tenant_id);
		/* The pool's size from the rows, not from this host's cache of them; the other
		 * hosts' leases of it. Not settled yet: a stale heartbeat may be a live host
		 * that has not renewed it yet, so its leases still count. */
		r = rc ? NULL : q(p, "SELECT COALESCE((SELECT max_concurrency FROM tenant_limits WHERE"
				     " tenant_id = $1), 0), (SELECT LEAST(COALESCE(SUM(reserved), 0),"
				     " 9200000000000000000)::bigint FROM functions WHERE tenant_id = $1),"
				     " COALESCE((SELECT reserved FROM functions WHERE tenant_id = $1 AND"
				     " id = $2), 0), (SELECT COALESCE(SUM(l.slots), 0)::bigint FROM"
				     " slot_leases l JOIN hosts h ON h.host_id = l.host_id WHERE"
				     " l.tenant_id = $1 AND l.function_id = $2 AND l.host_id <> $3 AND"
				     " (h.heartbeat_at > " DB_NOW_MS " - 5000 OR $4::int = 0))", "iiti",
				  tenant_id, function_id, p->host_id, (int64_t)settled(p));
		if (!rc && (!r || PQntuples(r) != 1))
			rc = -EIO;
		if (!rc) {
			size = pool_size(function_id, limit, col_i(r, 0, 0), col_i(r, 0, 1),
					 col_i(r, 0, 2));
			others = col_i(r, 0, 3);
		}
		PQclear(r);
		grant = want < 0 ? 0 : want;
		if (size >= 0 && grant > size - others)
			grant = size - others > 0 ? size - others : 0;
		/* A lease of 0 is no row: the table holds what is leased, nothing more. */
		if (!rc && grant > 0)
			rc = run(p, NULL, "INSERT INTO slot_leases(tenant_id, function_id, host_id, slots,"
				 " updated_at) VALUES($1, $2, $3, $4, " DB_NOW_MS ") ON CONFLICT"
				 " (tenant_id, function_id, host_id) DO UPDATE SET slots = excluded.slots,"
				 " updated_at = excluded.updated_at", "iiti", tenant_id, function_id,
				 p->host_id, grant);
		else if (!rc)
			rc = run(p, NULL, "DELETE FROM slot_leases WHERE tenant_id = $1 AND"
				 " function_id = $2 AND host_id = $3", "iit", tenant_id, function_id,
				 p->host_id);
		rc = finish(p, rc);
		if (rc == 0)
			*held = grant;
	}
	return rc;
}

/* ---- image GC ---------------------------------------------------------------------------- */

/*
 * Removes one image from the shared store if no version references it: the
 * row's update lock first, then the check, in a statement that sees what
 * deploys committed meanwhile. A row a deploy holds (the key-share lock of
 * hold_image()) is not waited for: that deploy is about to use the image, so
 * it is kept (a later sweep looks again). 1 = removed, 0 = gone already,
 * -EBUSY = held or referenced (kept). Caller holds mu.
 */
static int drop_shared_image(struct pg *p, const char *sha, uint64_t *bytes)
{
	char state[8];
	PGresult *r;
	int rc;

	if (begin(p))
		return -EIO;
	r = qs(p, state, "SELECT octet_length(data) FROM images WHERE sha256 = $1 FOR UPDATE NOWAIT",
	       "t", sha);
	rc = r ? (PQntuples(r) == 1 ? 1 : 0) : strcmp(state, "55P03") == 0 ? -EBUSY : -EIO;
	if (rc == 1)
		*bytes = (uint64_t)col_i(r, 0, 0);
	PQclear(r);
	if (rc == 1) {
		r = q(p, "SELECT 1 FROM versions WHERE image_sha256 = $1 LIMIT 1", "t", sha);
		rc = !r ? -EIO : PQntuples(r) ? -EBUSY : 1;
		PQclear(r);
	}
	if (rc == 1 && run(p, NULL, "DELETE FROM images WHERE sha256 = $1", "t", sha))
		rc = -EIO;
	if (rc == 1 && run(p, NULL, "UPDATE image_gc SET epoch = epoch + 1 WHERE id = 1", NULL))
		rc = -EIO;
	if (rc == 1)
		return finish(p, 0) == 0 ? 1 : -EIO;
	finish(p, -EBUSY); /* nothing written: roll back */
	return rc;
}

static int pg_image_gc(struct pg *p, bool shared, struct store_image_gc *st)
{
	struct cache_file *files = NULL;
	char (*cand)[65] = NULL;
	size_t n = 0, ncand = 0;
	int rc = 0;

	memset(st, 0, sizeof(*st));
	if (shared) {
		LOCKED(p) {
			PGresult *r = q(p, "SELECT sha256 FROM images i WHERE NOT EXISTS (SELECT 1 FROM"
					   " versions v WHERE v.image_sha256 = i.sha256)", NULL);

			if (!r) {
				rc = -EIO;
				break;
			}
			ncand = (size_t)PQntuples(r);
			cand = calloc(ncand ? ncand : 1, sizeof(*cand));
			for (size_t i = 0; cand && i < ncand; i++)
				col_s(r, (int)i, 0, cand[i], sizeof(cand[i]));
			PQclear(r);
			if (!cand)
				rc = -ENOMEM;
		}
		/* One image per transaction: a long sweep never holds up a deploy for long. */
		for (size_t i = 0; rc == 0 && i < ncand; i++) {
			uint64_t bytes = 0;
			int k = -EIO;

			LOCKED(p) k = drop_shared_image(p, cand[i], &bytes);
			if (k == 1) {
				st->removed_shared++;
				st->bytes += bytes;
				hlog_info("imagegc", "image %s removed from the shared store (%llu bytes):"
					  " no version uses it", cand[i], (unsigned long long)bytes);
			} else if (k == -EBUSY) {
				st->kept_for_deploy++;
				hlog_info("imagegc", "image %s kept: a deploy referenced it meanwhile",
					  cand[i]);
			} else if (k < 0) {
				rc = k;
			}
		}
		free(cand);
	}
	if (rc)
		return rc;
	rc = store_cache_list(p->image_dir, &files, &n, &st->removed_local, &st->bytes);
	/* This host's files that no version uses, asked in one statement: '{sha,sha,...}'. */
	char *arr = rc == 0 && n ? malloc(n * 65 + 3) : NULL;

	if (rc == 0 && n && !arr)
		rc = -ENOMEM;
	if (arr) {
		size_t k = 0;

		arr[k++] = '{';
		for (size_t i = 0; i < n; i++) {
			memcpy(arr + k, files[i].sha256, 64);
			k += 64;
			arr[k++] = i + 1 < n ? ',' : '}';
		}
		arr[k] = 0;
		LOCKED(p) {
			PGresult *r = q(p, "SELECT x FROM unnest($1::text[]) x WHERE NOT EXISTS (SELECT 1"
					   " FROM versions v WHERE v.image_sha256 = x)", "t", arr);

			if (!r) { /* unknown: keep them all */
				rc = -EIO;
				break;
			}
			/* Under mu: no fetch of these images into the cache meanwhile. */
			for (int i = 0; i < PQntuples(r); i++) {
				const char *sha = PQgetvalue(r, i, 0);

				unmark_verified(p, sha);
				if (store_cache_remove(p->image_dir, sha) != 0)
					continue;
				st->removed_local++;
				for (size_t j = 0; j < n; j++)
					if (strcmp(files[j].sha256, sha) == 0)
						st->bytes += files[j].bytes;
			}
			PQclear(r);
		}
		free(arr);
	}
	free(files);
	return rc;
}

static int64_t pg_image_gc_epoch(struct pg *p)
{
	int64_t e;

	pthread_mutex_lock(&p->hmu);
	e = p->image_gc_epoch;
	pthread_mutex_unlock(&p->hmu);
	return e;
}

/* ---- hosts ----------------------------------------------------------------------------------- */

static json_t *pg_hosts(struct pg *p)
{
	json_t *j = NULL;

	LOCKED(p) j = rows_json(q(p, "SELECT host_id, address, started_at, " DB_NOW_MS
				     " - heartbeat_at AS heartbeat_ms_ago, (heartbeat_at > " DB_NOW_MS
				     " - 5000)::int AS live FROM hosts ORDER BY host_id", NULL));
	return j;
}

/*
 * Unhealthy: the last statement failed, or the heartbeat was not renewed for
 * HB_STALE_MS: the others will take this host for dead at HOST_TTL_MS and
 * reuse its leases, so it stops taking work well before.
 */
#define HB_STALE_MS 3000

static int64_t pg_lease_epoch(struct pg *p)
{
	int64_t e;

	pthread_mutex_lock(&p->hmu);
	e = p->lease_epoch;
	pthread_mutex_unlock(&p->hmu);
	return e;
}

static int pg_live_hosts(struct pg *p, int *n)
{
	int rc = -EIO;

	LOCKED(p) {
		PGresult *r = q(p, "SELECT COUNT(*) FROM " LIVE_HOSTS " x", NULL);

		if (r && PQntuples(r) == 1) {
			*n = (int)col_i(r, 0, 0);
			if (*n < 1)
				*n = 1; /* this host, whose heartbeat the database has not seen lately */
			rc = 0;
		}
		PQclear(r);
	}
	return rc;
}

static int pg_health(struct pg *p, char *why, size_t n)
{
	int rc = 0;

	pthread_mutex_lock(&p->hmu);
	{
		int64_t age = mono_ms() - p->hb_ok_ms;

		if (p->evicted) {
			snprintf(why, n, "this host's id %s was taken over by another host",
				 p->host_id);
			rc = -EIO;
		} else if (p->healthy && age > HB_STALE_MS) {
			snprintf(why, n, "the fleet database has not renewed this host's heartbeat "
				 "for %lld ms", (long long)age);
			rc = -EIO;
		} else if (!p->healthy) {
			snprintf(why, n, "the fleet database is unreachable: %s", p->why);
			rc = -EIO;
		} else if (n) {
			why[0] = 0;
		}
	}
	pthread_mutex_unlock(&p->hmu);
	return rc;
}

static void *heartbeat(void *arg)
{
	struct pg *p = arg;
	bool revoke = false;

	pthread_mutex_lock(&p->mu);
	while (!p->stopping) {
		struct timespec ts;
		int64_t c = 0;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += HB_MS / 1000;
		pthread_cond_timedwait(&p->hb_cond, &p->mu, &ts);
		if (p->stopping)
			break;
		/* The renewal also reads the image GC epoch: other hosts removed images. */
		PGresult *r = q(p, "UPDATE hosts SET heartbeat_at = " DB_NOW_MS " WHERE host_id = $1"
				   " AND boot_id = $2 RETURNING (SELECT epoch FROM image_gc WHERE id = 1)",
				"tt", p->host_id, p->boot_id);

		if (r) {
			c = PQntuples(r);
			pthread_mutex_lock(&p->hmu);
			if (c)
				p->image_gc_epoch = col_i(r, 0, 0);
			PQclear(r);
			if (c == 0 && !p->evicted) {
				hlog_error("store", "this host's id %s was taken over by another host "
					   "(its heartbeat had expired); restart this hearthd",
					   p->host_id);
				p->evicted = true;
			} else if (c) {
				int64_t now = mono_ms();

				/* Back after a gap: other hosts' heartbeats look stale for a
				 * while; take nothing over until they had time to renew. */
				if (now - p->hb_ok_ms > 2 * HB_MS)
					p->up_since_ms = now;
				/* Cut off longer than a heartbeat lives: the others took this
				 * host for dead and may have leased its slots. Its leases are
				 * void: drop them here, and quota leases again. */
				if (now - p->hb_ok_ms >= HOST_TTL_MS - HB_MS) {
					p->lease_epoch++;
					revoke = true;
				}
				p->hb_ok_ms = now;
			}
			pthread_mutex_unlock(&p->hmu);
			if (revoke) {
				hlog_warn("store", "this host was cut off from the database for a "
					  "heartbeat's lifetime: its concurrency leases are revoked");
				run(p, NULL, "DELETE FROM slot_leases WHERE host_id = $1", "t",
				    p->host_id);
				revoke = false;
			}
			if (c) {
				if (p->spooled)
					spool_replay(p);
			}
		}
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* ---- open and close ----------------------------------------------------------------------- */

static void pg_free(struct pg *p)
{
	if (!p)
		return;
	if (p->hb_started) {
		pthread_mutex_lock(&p->mu);
		p->stopping = true;
		pthread_cond_signal(&p->hb_cond);
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->hb, NULL);
		/* A clean stop frees the host id at once. */
		if (PQstatus(p->conn) == CONNECTION_OK)
			run(p, NULL, "UPDATE hosts SET heartbeat_at = 0 WHERE host_id = $1 AND"
			    " boot_id = $2", "tt", p->host_id, p->boot_id);
	}
	PQfinish(p->conn);
	free(p->verified);
	pthread_mutex_destroy(&p->mu);
	pthread_mutex_destroy(&p->hmu);
	pthread_cond_destroy(&p->hb_cond);
	free(p);
}

static void one_line(char *s)
{
	for (char *c = s; *c; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	for (size_t n = strlen(s); n && s[n - 1] == ' ';)
		s[--n] = 0;
}

/* Brings the schema to STORE_PG_SCHEMA, one step at a time, or refuses a newer one. */
static int migrate(struct pg *p, char *err, size_t errlen)
{
	PGresult *r;
	int cur = 0, rc;

	if (begin(p))
		goto fail;
	/* One host migrates at a time; the others wait, then see the new version. */
	if (run(p, NULL, "SELECT pg_advisory_xact_lock(7233371040)", NULL) ||
	    run(p, NULL, "CREATE TABLE IF NOT EXISTS schema_version(version INT NOT NULL,"
		" applied_at BIGINT NOT NULL)", NULL))
		goto fail;
	r = q(p, "SELECT COALESCE(MAX(version), 0) FROM schema_version", NULL);
	if (!r)
		goto fail;
	cur = (int)col_i(r, 0, 0);
	PQclear(r);
	if (cur > STORE_PG_SCHEMA) {
		finish(p, -EPROTO);
		snprintf(err, errlen, "the PostgreSQL schema is at version %d, newer than this "
			 "hearthd's (%d); refusing to use it (run a newer hearthd)", cur,
			 STORE_PG_SCHEMA);
		return -EPROTO;
	}
	for (int v = cur + 1; v <= STORE_PG_SCHEMA; v++) {
		r = PQexec(p->conn, migrations[v - 1]);
		rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -EIO;
		if (rc) {
			snprintf(err, errlen, "schema step %d failed: %s", v, PQresultErrorMessage(r));
			one_line(err);
			PQclear(r);
			finish(p, rc);
			return rc;
		}
		PQclear(r);
		if (run(p, NULL, "INSERT INTO schema_version(version, applied_at) VALUES($1, $2)", "ii",
			(int64_t)v, now_s()))
			goto fail;
		hlog_info("store", "PostgreSQL schema brought to version %d", v);
	}
	if (finish(p, 0) == 0)
		return 0;
fail:
	finish(p, -EIO);
	snprintf(err, errlen, "schema check failed: %s", PQerrorMessage(p->conn));
	one_line(err);
	return -EIO;
}

/* Registers this host; refused while a live host holds the same id. */
static int register_host(struct pg *p, char *err, size_t errlen)
{
	PGresult *r;
	int rc;

	if (begin(p))
		goto fail;
	/* Two hosts registering one id at once: one waits for the other's transaction. */
	if (run(p, NULL, "SELECT pg_advisory_xact_lock(7233, hashtext($1))", "t", p->host_id))
		goto fail;
	r = q(p, "SELECT address, " DB_NOW_MS " - heartbeat_at FROM hosts WHERE host_id = $1", "t",
	      p->host_id);
	if (!r)
		goto fail;
	if (PQntuples(r) == 1 && col_i(r, 0, 1) < HOST_TTL_MS) {
		snprintf(err, errlen, "host id '%s' is in use by a live host (address %s, heartbeat "
			 "%lld ms ago); give this host another --host-id, or wait %d s after that "
			 "host stopped", p->host_id, PQgetvalue(r, 0, 0),
			 (long long)col_i(r, 0, 1), HOST_TTL_MS / 1000);
		PQclear(r);
		finish(p, -EEXIST);
		return -EEXIST;
	}
	PQclear(r);
	rc = run(p, NULL, "INSERT INTO hosts(host_id, boot_id, address, started_at, heartbeat_at)"
		 " VALUES($1, $2, $3, $4, " DB_NOW_MS ") ON CONFLICT (host_id) DO UPDATE SET"
		 " boot_id = excluded.boot_id, address = excluded.address,"
		 " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at", "ttti",
		 p->host_id, p->boot_id, p->address, now_s());
	/* A previous run of this host id is dead: its leases and its claims go. */
	if (rc == 0)
		rc = run(p, NULL, "DELETE FROM slot_leases WHERE host_id = $1", "t", p->host_id);
	if (finish(p, rc) == 0)
		return 0;
fail:
	finish(p, -EIO);
	snprintf(err, errlen, "host registration failed: %s", PQerrorMessage(p->conn));
	one_line(err);
	return -EIO;
}

#define S void *impl_
#define IMPL ((struct pg *)impl_)
#define STORE_OP(R, N, P, A) static R pg_op_##N P { return pg_##N A; }
#include "store_ops.def"
#undef STORE_OP

static void pg_op_close(void *impl_)
{
	pg_free(IMPL);
}

static const struct store_ops pg_ops = {
	.backend = "postgresql",
	.close = pg_op_close,
#define STORE_OP(R, N, P, A) .N = pg_op_##N,
#include "store_ops.def"
#undef STORE_OP
};
#undef S
#undef IMPL

int store_pg_open(const char *conninfo, const struct store_options *o, const struct store_ops **ops,
		  void **impl, char *err, size_t errlen)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
	struct pg *p;
	uuid_t u;
	int rc;

	if (!opts) {
		snprintf(err, errlen, "bad PostgreSQL connection string: %s",
			 perr ? perr : "out of memory");
		one_line(err);
		PQfreemem(perr);
		return -EINVAL;
	}
	PQconninfoFree(opts);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->mu, NULL);
	pthread_mutex_init(&p->hmu, NULL);
	pthread_cond_init(&p->hb_cond, NULL);
	snprintf(p->host_id, sizeof(p->host_id), "%s", o && o->host_id ? o->host_id : "localhost");
	snprintf(p->address, sizeof(p->address), "%s", o && o->address ? o->address : "");
	snprintf(p->image_dir, sizeof(p->image_dir), "%s", o && o->image_dir ? o->image_dir : ".");
	if (o && o->state_dir)
		snprintf(p->spool, sizeof(p->spool), "%s/ledger-spool.jsonl", o->state_dir);
	uuid_generate_random(u);
	uuid_unparse_lower(u, p->boot_id);
	{
		/*
		 * Defaults the URL may override (it comes last): give up connecting after
		 * 3 s, and notice a server that vanished (network cut, machine gone)
		 * within seconds, not at the kernel's TCP timeout: until then every
		 * store call would wait on this connection.
		 */
		const char *const keys[] = { "connect_timeout", "keepalives_idle",
					     "keepalives_interval", "keepalives_count",
					     "tcp_user_timeout", "dbname", NULL };
		const char *const vals[] = { "3", "5", "2", "2", "5000", conninfo, NULL };

		p->conn = PQconnectdbParams(keys, vals, 1);
	}
	if (PQstatus(p->conn) != CONNECTION_OK) {
		snprintf(err, errlen, "cannot connect to PostgreSQL: %s", PQerrorMessage(p->conn));
		one_line(err);
		pg_free(p);
		return -ECONNREFUSED;
	}
	p->healthy = true;
	/* Quiet: the schema steps' notices are not news. */
	run(p, NULL, "SET client_min_messages = warning", NULL);
	rc = migrate(p, err, errlen);
	if (rc == 0)
		rc = register_host(p, err, errlen);
	if (rc == 0) { /* the image GC epoch as it is now: only later removals are news */
		PGresult *r = q(p, "SELECT epoch FROM image_gc WHERE id = 1", NULL);

		if (r && PQntuples(r) == 1)
			p->image_gc_epoch = col_i(r, 0, 0);
		PQclear(r);
	}
	p->hb_ok_ms = p->up_since_ms = mono_ms();
	if (rc == 0 && access(p->spool, F_OK) == 0) {
		p->spooled = true; /* a previous run's records, kept while the database was away */
		spool_replay(p);
	}
	if (rc == 0 && pthread_create(&p->hb, NULL, heartbeat, p) != 0) {
		snprintf(err, errlen, "cannot start the heartbeat thread");
		rc = -EAGAIN;
	}
	if (rc) {
		pg_free(p);
		return rc;
	}
	p->hb_started = true;
	hlog_info("store", "PostgreSQL store: host %s registered (schema version %d)", p->host_id,
		  STORE_PG_SCHEMA);
	*ops = &pg_ops;
	*impl = p;
	return 0;
}
