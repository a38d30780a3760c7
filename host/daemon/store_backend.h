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
#define STORE_PG_SCHEMA 1

struct store_ops {
	const char *backend; /* "sqlite", "postgresql" */
	void (*close)(void *impl);
#define S void *impl
#define STORE_OP(R, N, P, A) R(*N) P;
#include "store_ops.def"
#undef STORE_OP
#undef S
};

int store_sqlite_open(const char *path, const struct store_ops **ops, void **impl);
/* -ENOTSUP when hearthd was built without libpq. err gets a one-line reason. */
int store_pg_open(const char *conninfo, const struct store_options *o, const struct store_ops **ops,
		  void **impl, char *err, size_t errlen);

#endif
