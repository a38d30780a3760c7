/*
 * engine_backend.h - what a backend provides to engine.c. Only engine*.c
 * include this; hearthd and tests use engine.h.
 *
 * engine.c owns the public structs' common parts and the argument checks;
 * a backend fills struct hearth_engine_ops and keeps its own state behind
 * the priv pointers. A hook may be NULL when the matching capability flag
 * is absent; engine.c then answers -ENOTSUP.
 */
#ifndef HEARTH_ENGINE_BACKEND_H
#define HEARTH_ENGINE_BACKEND_H

#include <spawn.h>
#include <stdarg.h>

#include "engine.h"

struct hearth_engine_ops {
	const char *name;
	int (*open)(struct hearth_engine *e, char *err, size_t errlen);
	void (*close)(struct hearth_engine *e);
	int (*create)(struct hearth_vm *vm, const struct hearth_vm_spec *spec, char *err,
		      size_t errlen);
	int (*connect)(struct hearth_vm *vm, int timeout_ms, struct agent_conn **out, char *err,
		       size_t errlen);
	int (*pause)(struct hearth_vm *vm, char *err, size_t errlen);
	int (*resume)(struct hearth_vm *vm, char *err, size_t errlen);
	int (*save)(struct hearth_vm *vm, char *err, size_t errlen);
	int (*restore)(struct hearth_vm *vm, char *err, size_t errlen);
	int (*stats)(struct hearth_vm *vm, struct hearth_vm_stats *st, char *err, size_t errlen);
	int (*snapshot)(struct hearth_vm *vm, const char *mem, const char *state, char *err,
			size_t errlen);
	int (*clone)(struct hearth_vm *vm, const char *mem, const char *state,
		     const struct hearth_vm_spec *shape, char *err, size_t errlen);
	int (*workset)(struct hearth_vm *vm, const char *path, char *err, size_t errlen);
	int (*pool_set)(struct hearth_engine *e, const struct hearth_pool_shape *shapes, int n);
	int (*pool_stats)(struct hearth_engine *e, struct hearth_pool_stats *st);
	enum hearth_vm_end (*exit_reason)(struct hearth_vm *vm, int wait_ms, char *buf, size_t len);
	/* Must release everything and free vm->priv even on failure. */
	int (*destroy)(struct hearth_vm *vm, char *err, size_t errlen);
};

struct hearth_engine {
	const struct hearth_engine_ops *ops;
	struct hearth_engine_config cfg; /* strings below are owned copies */
	char *run_dir;
	char *libvirt_uri;
	char *name_prefix;
	unsigned caps;        /* set by ops->open */
	const char *accel;    /* set by ops->open */
	void *priv;
};

struct hearth_vm {
	struct hearth_engine *engine;
	char name[128];       /* <prefix><uuid> */
	char uuid[37];
	char *dir;            /* <run_dir>/<name>: sockets, logs, save file */
	char *console_log;    /* NULL if none */
	bool keep_console;    /* destroy moves console_log to <run_dir>/failed/ (failed VMs) */
	enum hearth_vm_state state;
	void *priv;
};

extern const struct hearth_engine_ops hearth_engine_libvirt_ops;
extern const struct hearth_engine_ops hearth_engine_process_ops;
extern const struct hearth_engine_ops hearth_engine_builtin_ops;

/* printf into err (if not NULL) and return -errnum (errnum > 0). */
/*
 * Spawn attributes for a child of hearthd: no blocked signals and the
 * default action for SIGPIPE, SIGTERM, SIGINT and SIGHUP (hearthd blocks the
 * last three for its sigwait and ignores SIGPIPE; exec keeps both). Destroy
 * with posix_spawnattr_destroy.
 */
void hearth_spawnattr_clean(posix_spawnattr_t *a);
int hearth_engine_fail(char *err, size_t errlen, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Removes dir and everything under it, without following symlinks or
 * entering other mounted filesystems (a process VM bind-mounts /dev). */
int hearth_engine_rmtree(const char *dir);

#endif
