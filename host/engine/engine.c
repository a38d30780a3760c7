/*
 * engine.c - dispatch from the engine interface (engine.h) to a backend, and
 * the parts every backend shares: argument checks, VM naming, run dirs.
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "engine_backend.h"

int hearth_engine_fail(char *err, size_t errlen, int errnum, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -(errnum > 0 ? errnum : EIO);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

int hearth_engine_rmtree(const char *dir)
{
	struct stat st;

	if (lstat(dir, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
		return -(errno ? errno : EIO);
	return 0;
}

static int mkdir_p(const char *dir)
{
	char buf[4096];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		buf[i] = i == len ? '\0' : '/';
	}
	return 0;
}

const char *hearth_vm_state_name(enum hearth_vm_state s)
{
	switch (s) {
	case HEARTH_VM_RUNNING: return "running";
	case HEARTH_VM_PAUSED: return "paused";
	case HEARTH_VM_SAVED: return "saved";
	case HEARTH_VM_STOPPED: return "stopped";
	default: return "unknown";
	}
}

static char *dup_or(const char *s, const char *def)
{
	return strdup(s ? s : def);
}

int hearth_engine_open(const struct hearth_engine_config *cfg, struct hearth_engine **out,
		       char *err, size_t errlen)
{
	struct hearth_engine *e;
	int rc;

	*out = NULL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	e->cfg = *cfg;
	switch (cfg->kind) {
	case HEARTH_ENGINE_LIBVIRT: e->ops = &hearth_engine_libvirt_ops; break;
	case HEARTH_ENGINE_PROCESS: e->ops = &hearth_engine_process_ops; break;
	case HEARTH_ENGINE_BUILTIN: e->ops = &hearth_engine_builtin_ops; break;
	default:
		free(e);
		return hearth_engine_fail(err, errlen, ENOTSUP,
					  "engine kind %d is not available in this build",
					  (int)cfg->kind);
	}
	e->run_dir = dup_or(cfg->run_dir, "/run/hearth");
	e->libvirt_uri = dup_or(cfg->libvirt_uri, "qemu:///system");
	e->name_prefix = dup_or(cfg->name_prefix, "hearth-");
	if (!e->run_dir || !e->libvirt_uri || !e->name_prefix) {
		rc = hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
		goto fail;
	}
	e->cfg.run_dir = e->run_dir;
	e->cfg.libvirt_uri = e->libvirt_uri;
	e->cfg.name_prefix = e->name_prefix;
	/* Leave room for "/<prefix><uuid>/root/agent.sock" under the 108-byte sun_path. */
	if (strlen(e->run_dir) + strlen(e->name_prefix) + 36 + 20 > 107) {
		rc = hearth_engine_fail(err, errlen, ENAMETOOLONG,
					"run_dir '%s' is too long for Unix socket paths", e->run_dir);
		goto fail;
	}
	rc = mkdir_p(e->run_dir);
	if (rc < 0) {
		hearth_engine_fail(err, errlen, -rc, "mkdir %s: %s", e->run_dir, strerror(-rc));
		goto fail;
	}
	rc = e->ops->open(e, err, errlen);
	if (rc < 0)
		goto fail;
	*out = e;
	return 0;
fail:
	free(e->run_dir);
	free(e->libvirt_uri);
	free(e->name_prefix);
	free(e);
	return rc;
}

void hearth_engine_close(struct hearth_engine *e)
{
	if (!e)
		return;
	e->ops->close(e);
	free(e->run_dir);
	free(e->libvirt_uri);
	free(e->name_prefix);
	free(e);
}

unsigned hearth_engine_caps(const struct hearth_engine *e)
{
	return e->caps;
}

const char *hearth_engine_name(const struct hearth_engine *e)
{
	return e->ops->name;
}

const char *hearth_engine_accel(const struct hearth_engine *e)
{
	return e->accel ? e->accel : "none";
}

bool hearth_kvm_runs_stock_guests(void)
{
	char line[4096];
	bool hw = false;
	FILE *f;

	if (access("/dev/kvm", R_OK | W_OK) < 0)
		return false;
	/* PVM (kvm_pvm) runs unmodified guests only through the emulator. */
	if (access("/sys/module/kvm_pvm", F_OK) == 0)
		return false;
	f = fopen("/proc/cpuinfo", "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "flags", 5) != 0)
			continue;
		hw = strstr(line, " vmx") || strstr(line, " svm");
		break;
	}
	fclose(f);
	return hw;
}

/* Allocates a VM with a fresh name and run directory. */
static int vm_new(struct hearth_engine *e, struct hearth_vm **out, char *err, size_t errlen)
{
	struct hearth_vm *vm = calloc(1, sizeof(*vm));
	uuid_t u;
	int rc;

	if (!vm)
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	vm->engine = e;
	uuid_generate_random(u);
	uuid_unparse_lower(u, vm->uuid);
	snprintf(vm->name, sizeof(vm->name), "%s%s", e->name_prefix, vm->uuid);
	if (asprintf(&vm->dir, "%s/%s", e->run_dir, vm->name) < 0) {
		free(vm);
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	}
	if (mkdir(vm->dir, 0700) < 0) {
		rc = hearth_engine_fail(err, errlen, errno, "mkdir %s: %s", vm->dir, strerror(errno));
		free(vm->dir);
		free(vm);
		return rc;
	}
	*out = vm;
	return 0;
}

static void failed_console_path(const struct hearth_vm *vm, char *path, size_t len)
{
	snprintf(path, len, "%s/failed/%s.console.log", vm->engine->run_dir, vm->name);
}

void hearth_vm_keep_console(struct hearth_vm *vm, char *path, size_t len)
{
	vm->keep_console = vm->console_log != NULL;
	if (len)
		failed_console_path(vm, path, len);
}

struct kept {
	struct timespec mtime;
	char name[256];
};

static int older_first(const void *a, const void *b)
{
	const struct timespec *x = &((const struct kept *)a)->mtime;
	const struct timespec *y = &((const struct kept *)b)->mtime;

	if (x->tv_sec != y->tv_sec)
		return x->tv_sec < y->tv_sec ? -1 : 1;
	return x->tv_nsec < y->tv_nsec ? -1 : x->tv_nsec > y->tv_nsec;
}

/* Moves a failed VM's console log to <run_dir>/failed/ and keeps the newest there. */
static void keep_console(struct hearth_vm *vm)
{
	char dir[4096], path[4400];
	struct kept *k = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	struct stat sb;
	DIR *d;

	if (!vm->console_log || access(vm->console_log, F_OK) < 0)
		return;
	snprintf(dir, sizeof(dir), "%s/failed", vm->engine->run_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return;
	failed_console_path(vm, path, sizeof(path));
	if (rename(vm->console_log, path) < 0)
		return;
	utimensat(AT_FDCWD, path, NULL, 0); /* its mtime: when it was kept */
	if (!(d = opendir(dir)))
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &sb, 0) < 0)
			continue;
		if (n == cap) {
			struct kept *nk = realloc(k, (cap = cap ? cap * 2 : 64) * sizeof(*k));

			if (!nk)
				break;
			k = nk;
		}
		k[n].mtime = sb.st_mtim;
		snprintf(k[n].name, sizeof(k[n].name), "%s", e->d_name);
		n++;
	}
	/* The oldest beyond HEARTH_FAILED_CONSOLES go. */
	if (n > HEARTH_FAILED_CONSOLES) {
		qsort(k, n, sizeof(*k), older_first);
		for (size_t i = 0; i < n - HEARTH_FAILED_CONSOLES; i++)
			unlinkat(dirfd(d), k[i].name, 0);
	}
	closedir(d);
	free(k);
}

static void vm_discard(struct hearth_vm *vm)
{
	keep_console(vm); /* a create or clone that failed */
	hearth_engine_rmtree(vm->dir);
	free(vm->dir);
	free(vm->console_log);
	free(vm);
}

int hearth_vm_clone(struct hearth_engine *e, const char *mem_path, const char *state_path,
		    const struct hearth_vm_spec *shape, struct hearth_vm **out, char *err,
		    size_t errlen)
{
	struct hearth_vm *vm;
	int rc;

	*out = NULL;
	if (!(e->caps & HEARTH_ENGINE_CAP_CLONE) || !e->ops->clone)
		return hearth_engine_fail(err, errlen, ENOTSUP, "the %s engine cannot clone snapshots",
					  e->ops->name);
	rc = vm_new(e, &vm, err, errlen);
	if (rc)
		return rc;
	rc = e->ops->clone(vm, mem_path, state_path, shape, err, errlen);
	if (rc < 0) {
		vm_discard(vm);
		return rc;
	}
	vm->state = HEARTH_VM_RUNNING;
	*out = vm;
	return 0;
}

int hearth_vm_workset(struct hearth_vm *vm, const char *path, char *err, size_t errlen)
{
	if (!vm->engine->ops->workset)
		return hearth_engine_fail(err, errlen, ENOTSUP, "the %s engine records no working sets",
					  vm->engine->ops->name);
	return vm->engine->ops->workset(vm, path, err, errlen);
}

enum hearth_vm_end hearth_vm_exit_reason(struct hearth_vm *vm, int wait_ms, char *buf, size_t len)
{
	if (len)
		buf[0] = 0;
	if (!vm->engine->ops->exit_reason)
		return HEARTH_VM_LIVES;
	return vm->engine->ops->exit_reason(vm, wait_ms, buf, len);
}

int hearth_engine_pool_set(struct hearth_engine *e, const struct hearth_pool_shape *shapes, int n)
{
	if (!e->ops->pool_set)
		return -ENOTSUP;
	if (n < 0 || (n > 0 && !shapes))
		return -EINVAL;
	return e->ops->pool_set(e, shapes, n);
}

int hearth_engine_pool_stats(struct hearth_engine *e, struct hearth_pool_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!e->ops->pool_stats)
		return -ENOTSUP;
	return e->ops->pool_stats(e, st);
}

int hearth_vm_create(struct hearth_engine *e, const struct hearth_vm_spec *spec,
		     struct hearth_vm **out, char *err, size_t errlen)
{
	struct hearth_vm *vm;
	int rc;

	*out = NULL;
	if (!spec || !spec->initrd)
		return hearth_engine_fail(err, errlen, EINVAL, "vm spec needs an initrd (image)");
	if ((e->caps & HEARTH_ENGINE_CAP_BOOTS_KERNEL) && !spec->kernel)
		return hearth_engine_fail(err, errlen, EINVAL, "vm spec needs a kernel");
	if (spec->memory_mb && (spec->memory_mb < 32 || spec->memory_mb > 65536))
		return hearth_engine_fail(err, errlen, EINVAL, "memory_mb %u is out of range 32..65536",
					  spec->memory_mb);
	if (spec->vcpus > 64)
		return hearth_engine_fail(err, errlen, EINVAL, "vcpus %u is out of range 1..64",
					  spec->vcpus);
	rc = vm_new(e, &vm, err, errlen);
	if (rc)
		return rc;
	rc = e->ops->create(vm, spec, err, errlen);
	if (rc < 0) {
		vm_discard(vm);
		return rc;
	}
	vm->state = HEARTH_VM_RUNNING;
	*out = vm;
	return 0;
}

int hearth_vm_connect(struct hearth_vm *vm, int timeout_ms, struct agent_conn **out, char *err,
		      size_t errlen)
{
	*out = NULL;
	if (vm->state != HEARTH_VM_RUNNING)
		return hearth_engine_fail(err, errlen, EINVAL, "%s is %s, not running", vm->name,
					  hearth_vm_state_name(vm->state));
	return vm->engine->ops->connect(vm, timeout_ms, out, err, errlen);
}

static int need(struct hearth_vm *vm, unsigned cap, const char *what, char *err, size_t errlen)
{
	if (vm->engine->caps & cap)
		return 0;
	return hearth_engine_fail(err, errlen, ENOTSUP, "the %s engine cannot %s",
				  vm->engine->ops->name, what);
}

static int need_state(struct hearth_vm *vm, enum hearth_vm_state s, const char *what, char *err,
		      size_t errlen)
{
	if (vm->state == s)
		return 0;
	return hearth_engine_fail(err, errlen, EINVAL, "cannot %s %s: it is %s", what, vm->name,
				  hearth_vm_state_name(vm->state));
}

int hearth_vm_pause(struct hearth_vm *vm, char *err, size_t errlen)
{
	int rc = need(vm, HEARTH_ENGINE_CAP_PAUSE, "pause", err, errlen);

	if (!rc)
		rc = need_state(vm, HEARTH_VM_RUNNING, "pause", err, errlen);
	if (!rc)
		rc = vm->engine->ops->pause(vm, err, errlen);
	if (!rc)
		vm->state = HEARTH_VM_PAUSED;
	return rc;
}

int hearth_vm_resume(struct hearth_vm *vm, char *err, size_t errlen)
{
	int rc = need(vm, HEARTH_ENGINE_CAP_PAUSE, "resume", err, errlen);

	if (!rc)
		rc = need_state(vm, HEARTH_VM_PAUSED, "resume", err, errlen);
	if (!rc)
		rc = vm->engine->ops->resume(vm, err, errlen);
	if (!rc)
		vm->state = HEARTH_VM_RUNNING;
	return rc;
}

int hearth_vm_snapshot(struct hearth_vm *vm, const char *mem_path, const char *state_path,
		       char *err, size_t errlen)
{
	int rc = need(vm, HEARTH_ENGINE_CAP_CLONE, "snapshot", err, errlen);

	if (rc)
		return rc;
	if (!vm->engine->ops->snapshot)
		return hearth_engine_fail(err, errlen, ENOTSUP, "snapshot is not supported");
	return vm->engine->ops->snapshot(vm, mem_path, state_path, err, errlen);
}

int hearth_vm_save(struct hearth_vm *vm, char *err, size_t errlen)
{
	int rc = need(vm, HEARTH_ENGINE_CAP_SAVE_RESTORE, "save", err, errlen);

	if (!rc && vm->state != HEARTH_VM_RUNNING && vm->state != HEARTH_VM_PAUSED)
		rc = need_state(vm, HEARTH_VM_RUNNING, "save", err, errlen);
	if (!rc)
		rc = vm->engine->ops->save(vm, err, errlen);
	if (!rc)
		vm->state = HEARTH_VM_SAVED;
	return rc;
}

int hearth_vm_restore(struct hearth_vm *vm, char *err, size_t errlen)
{
	int rc = need(vm, HEARTH_ENGINE_CAP_SAVE_RESTORE, "restore", err, errlen);

	if (!rc)
		rc = need_state(vm, HEARTH_VM_SAVED, "restore", err, errlen);
	if (!rc)
		rc = vm->engine->ops->restore(vm, err, errlen);
	if (!rc)
		vm->state = HEARTH_VM_RUNNING;
	return rc;
}

int hearth_vm_stats(struct hearth_vm *vm, struct hearth_vm_stats *st, char *err, size_t errlen)
{
	memset(st, 0, sizeof(*st));
	st->state = vm->state;
	return vm->engine->ops->stats(vm, st, err, errlen);
}

const char *hearth_vm_name(const struct hearth_vm *vm)
{
	return vm->name;
}

const char *hearth_vm_console_log(const struct hearth_vm *vm)
{
	return vm->console_log;
}

int hearth_vm_destroy(struct hearth_vm *vm, char *err, size_t errlen)
{
	int rc, rc2;

	if (!vm)
		return 0;
	rc = vm->engine->ops->destroy(vm, err, errlen);
	if (vm->keep_console)
		keep_console(vm);
	rc2 = hearth_engine_rmtree(vm->dir);
	if (rc2 < 0 && rc == 0)
		rc = hearth_engine_fail(err, errlen, -rc2, "removing %s: %s", vm->dir, strerror(-rc2));
	free(vm->dir);
	free(vm->console_log);
	free(vm);
	return rc;
}

void hearth_spawnattr_clean(posix_spawnattr_t *a)
{
	sigset_t none, dfl;

	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGHUP);
	posix_spawnattr_init(a);
	posix_spawnattr_setsigmask(a, &none);
	posix_spawnattr_setsigdefault(a, &dfl);
	posix_spawnattr_setflags(a, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
}
