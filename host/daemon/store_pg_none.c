/*
 * store_pg_none.c - stands in for store_pg.c when hearthd is built without
 * libpq: a PostgreSQL store URL is a clear error.
 */
#include "store_backend.h"

#include <errno.h>
#include <stdio.h>

int store_pg_open(const char *conninfo, const struct store_options *o, const struct store_ops **ops,
		  void **impl, char *err, size_t errlen)
{
	(void)conninfo;
	(void)o;
	(void)ops;
	(void)impl;
	snprintf(err, errlen, "this hearthd was built without PostgreSQL support (libpq-dev was "
		 "not found at build time); rebuild with it to use a postgresql:// store");
	return -ENOTSUP;
}
