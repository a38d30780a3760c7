/*
 * store_backend.h - what a store backend provides (internal to the store:
 * nothing above store.h includes this).
 *
 * A backend is a table of operations, one per function of store.h (listed
 * once, in store_ops.def), each taking the backend's own handle. store.c
 * dispatches store_<op>(s, ...) to s->ops-><op>(s->impl, ...), so the callers
 * of store.h never know which backend holds the state.
 *
 * Backends: store_sqlite.c (one host, the default) and store_pg.c (a fleet of
 * hosts sharing one PostgreSQL database; built when libpq is found).
 */
#ifndef HEARTH_STORE_BACKEND_H
#define HEARTH_STORE_BACKEND_H

#include "store.h"

/* Schema versions this binary knows; a database with a newer one is refused. */
#define STORE_SQLITE_SCHEMA 1
#define STORE_PG_SCHEMA 3

struct store_ops {
	const char *backend; /* "sqlite", "postgresql" */
	void (*close)(void *impl);
#define S void *impl
#define STORE_OP(R, N, P, A) R(*N) P;
#include "store_ops.def"
#undef STORE_OP
#undef S
};

/*
 * An invocation record as one JSON object, and back (the ledger journal and
 * PostgreSQL's spool keep records as lines of it). Logs are base64
 * ("logs64"); a spool line of an earlier hearthd has them in hex ("logs").
 * store_record_parse points r's strings into j and puts the decoded logs in
 * *logs (caller frees, also on failure). 0, or -EINVAL for a line missing a
 * field that every record has.
 */
json_t *store_record_json(const struct inv_record *r);
int store_record_parse(json_t *j, struct inv_record *r, uint8_t **logs);

/* image_dir: where the images live (image GC); NULL = none. */
int store_sqlite_open(const char *path, const char *image_dir, const struct store_ops **ops,
		      void **impl);
/* -ENOTSUP when hearthd was built without libpq. err gets a one-line reason. */
int store_pg_open(const char *conninfo, const struct store_options *o, const struct store_ops **ops,
		  void **impl, char *err, size_t errlen);

/*
 * The image directory of this host (store_cache.c), for both backends' image
 * GC: the files named <sha256>.cpio, and temporary files of builds
 * (".image-*") and fetches (".<sha256>.<pid>.tmp").
 */
struct cache_file {
	char sha256[65];
	uint64_t bytes;
};
/*
 * Lists dir's image files (caller frees *files); removes temporary files
 * older than ten minutes (left by a crash: a build or fetch takes seconds)
 * and counts them into *removed and *bytes. Other files are left alone.
 */
int store_cache_list(const char *dir, struct cache_file **files, size_t *n, int *removed,
		     uint64_t *bytes);
/* Removes dir/<sha256>.cpio. 0, or -errno (-ENOENT: already gone). */
int store_cache_remove(const char *dir, const char *sha256);

#endif
