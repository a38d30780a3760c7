/*
 * store.c - the store interface (store.h): picks a backend at open and
 * dispatches every operation to it (see store_backend.h).
 */
#include "store_backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct store {
	const struct store_ops *ops;
	void *impl;
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
	return rc ? rc : wrap(ops, impl, out);
}

void store_close(struct store *s)
{
	if (!s)
		return;
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

/* Every operation: store_<op>(s, ...) -> the backend's. */
#define S struct store *s
#define IMPL s->impl
#define STORE_OP(R, N, P, A) R store_##N P { return s->ops->N A; }
#include "store_ops.def"
#undef STORE_OP
#undef S
#undef IMPL
