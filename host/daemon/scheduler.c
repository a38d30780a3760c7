/*
 * scheduler.c - warm pools and VM threads; see scheduler.h.
 */
#include "scheduler.h"

#include <errno.h>
#include <poll.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "agent.pb-c.h"
#include "log.h"
#include "metrics.h"
#include "quota.h"

/* Clones in a row that may fail before the version's snapshot is dropped and taken again. */
#define CLONE_FAILURES_MAX 3

struct pool {
	int64_t version_id;
	struct fn_version ver;
	struct hearth_engine *eng;
	pthread_mutex_t *eng_mu;
	struct invocation *qhead, *qtail;
	int nqueued, nvms, nidle, nbooting, provisioned;
	int nsaved, nrestoring;   /* VMs suspended to disk (scale to zero) and coming back */
	int nreturning;           /* VMs answering their caller, back in the pool right after */
	int64_t reserved;         /* the function's reserved concurrency (0 = none) */
	unsigned caps;
	bool dead;
	bool snap_ready, snap_taking;   /* CLONE engines: the version's snapshot */
	int clone_failures;             /* clones in a row that never became Ready */
	char snap_mem[512], snap_state[512];
	bool ws_recording;               /* a clone is recording the snapshot's working set */
	struct vm_slot *lendable;        /* idle warm VMs sched_run_inline may take */
	int64_t recent_us;               /* moving average of invocation times (0: none yet) */
	pthread_cond_t cond;
	struct pool *next;
};

/*
 * A VM thread's idle VM, lent to a caller's thread by sched_run_inline. Lives
 * on the VM thread's stack; every field is under sched.mu.
 */
struct vm_slot {
	struct vm_slot *next;     /* in pool.lendable */
	struct agent_conn *conn;
	struct hearth_vm *vm;
	bool listed;              /* in pool.lendable */
	bool lent;                /* a caller's thread uses conn: the VM thread waits */
	bool broken;              /* the caller found the agent failed: replace the VM */
	int64_t used_us;          /* mono_us when a caller last gave it back */
	struct invocation *handoff; /* sent by a caller, not answered yet: the VM thread's now */
};

struct sched {
	struct sched_config cfg;
	struct sched_engines eng;
	pthread_mutex_t eng_mu_libvirt, eng_mu_process, eng_mu_builtin;
	struct store *store;
	pthread_mutex_t mu;
	pthread_cond_t all_gone;
	struct pool *pools;
	int total_vms;     /* running + booting */
	int64_t mem_used_mb;  /* guest memory of those VMs */
	int64_t reserved_total; /* reservations of every function on this host */
	int threads;
	bool stopping;
	pthread_t keeper;
	pthread_cond_t keeper_cond;
};

/*
 * Host capacity: VMs at most max_vms, their guest memory at most
 * host_memory_mb, their vCPUs (one each) at most ncpu x vcpu_overcommit.
 * Called with s->mu held.
 */
static bool host_has_room(struct sched *s, const struct pool *p)
{
	int64_t held = s->reserved_total; /* reserved slots not yet taken by their functions */
	int slots = s->cfg.max_vms;

	for (const struct pool *q = s->pools; q; q = q->next) {
		int64_t used = q->nvms + q->nbooting + q->nrestoring;

		if (q->reserved > 0 && !q->dead)
			held -= used < q->reserved ? used : q->reserved;
	}
	if (held < 0)
		held = 0;
	/* A function inside its reservation may use the held slots; others may not. */
	if (!(p->reserved > 0 && p->nvms + p->nbooting + p->nrestoring < p->reserved))
		slots -= (int)held;
	return s->total_vms < slots &&
	       s->mem_used_mb + p->ver.memory_mb <= s->cfg.host_memory_mb &&
	       s->total_vms + 1 <= s->cfg.vcpu_capacity;
}

static void count_vm(struct sched *s, const struct pool *p, int d)
{
	s->total_vms += d;
	s->mem_used_mb += d * (int64_t)p->ver.memory_mb;
}

int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct hearth_engine *sched_engine_for(struct sched *s, const char *name)
{
	if (!name || !*name || strcmp(name, "auto") == 0)
		return s->eng.dflt;
	if (strcmp(name, "libvirt") == 0)
		return s->eng.libvirt;
	if (strcmp(name, "process") == 0)
		return s->eng.process;
	if (strcmp(name, "builtin") == 0)
		return s->eng.builtin;
	return NULL;
}

static pthread_mutex_t *engine_lock_for(struct sched *s, struct hearth_engine *e)
{
	return e == s->eng.process ? &s->eng_mu_process :
	       e == s->eng.builtin ? &s->eng_mu_builtin : &s->eng_mu_libvirt;
}

/*
 * A platform error goes to the tenant (the answer, its invocation's logs):
 * host paths in an engine's message (a run directory, a kept console) are
 * the operator's, who has the whole message in hearthd's log. Each absolute
 * path that starts a word becomes "<host path>".
 */
static void redact_host_paths(char *s)
{
	static const char mark[] = "<host path>";
	char out[sizeof(((struct invocation *)0)->error)];
	size_t o = 0;

	for (const char *p = s; *p && o + 1 < sizeof(out);) {
		if (*p == '/' && (p == s || p[-1] == ' ' || p[-1] == '(')) {
			if (o + sizeof(mark) > sizeof(out))
				break;
			memcpy(out + o, mark, sizeof(mark) - 1);
			o += sizeof(mark) - 1;
			while (*p && *p != ' ' && *p != ')' && *p != ';' && *p != ',')
				p++;
			continue;
		}
		out[o++] = *p++;
	}
	out[o] = 0;
	memcpy(s, out, o + 1);
}

static void fail_inv(struct invocation *inv, int http, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void fail_inv(struct invocation *inv, int http, const char *code, const char *fmt, ...)
{
	va_list ap;

	inv->outcome = INV_PLATFORM_ERROR;
	inv->http_status = http;
	snprintf(inv->error_code, sizeof(inv->error_code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(inv->error, sizeof(inv->error), fmt, ap);
	va_end(ap);
	redact_host_paths(inv->error);
	inv->end_wall_us = wall_us();
	if (!inv->start_wall_us)
		inv->start_wall_us = inv->end_wall_us;
	inv->done(inv);
}

/*
 * The function's own init failed (its init step, or its runtime's init): a
 * function error with what the agent reported, its output as the logs, as
 * Lambda reports an init failure to the caller.
 */
static void fail_init(struct invocation *inv, const char *msg, uint64_t boot_us)
{
	const char *out = strstr(msg, "; output: ");

	if (!out)
		out = strstr(msg, "; stderr: ");
	memset(&inv->res, 0, sizeof(inv->res));
	inv->outcome = INV_OK;
	inv->res.status = AGENT_INVOKE_INIT_FAILED;
	inv->res.error = strndup(msg, out ? (size_t)(out - msg) : strlen(msg));
	if (out) {
		out += 10;
		inv->res.logs = (uint8_t *)strdup(out);
		inv->res.logs_len = inv->res.logs ? strlen(out) : 0;
	}
	inv->cold = true;
	inv->cold_path = "boot";
	inv->boot_us = boot_us;
	inv->end_wall_us = wall_us();
	if (!inv->start_wall_us)
		inv->start_wall_us = inv->end_wall_us;
	metrics_invocation("InitError", 0, true, false);
	inv->done(inv);
}

static struct invocation *pop(struct pool *p)
{
	struct invocation *inv = p->qhead;

	if (inv) {
		p->qhead = inv->next;
		if (!p->qhead)
			p->qtail = NULL;
		p->nqueued--;
		inv->next = NULL;
	}
	return inv;
}

/* Parses the stored JSON args/env of a version into agent_config arrays. */
struct vm_conf {
	const char **args, **env;
	char **env_storage;
	size_t nargs, nenv;
	json_t *args_j;
};

static void vm_conf_free(struct vm_conf *c)
{
	for (size_t i = 0; i < c->nenv; i++)
		free(c->env_storage[i]);
	free(c->env_storage);
	free(c->args);
	free(c->env);
	json_decref(c->args_j);
}

/*
 * Runtime mode: the Lambda environment of the function (the agent adds
 * AWS_LAMBDA_RUNTIME_API and defaults). The manifest's own env wins.
 */
static void vm_conf_add_lambda_env(const struct fn_version *v, const char *region,
				   struct vm_conf *c)
{
	char *add[6];
	size_t n = 0;

	if (asprintf(&add[n], "AWS_LAMBDA_FUNCTION_NAME=%s", v->name) >= 0) n++;
	if (asprintf(&add[n], "AWS_LAMBDA_FUNCTION_VERSION=%d", v->version) >= 0) n++;
	if (asprintf(&add[n], "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=%u", v->memory_mb) >= 0) n++;
	if (asprintf(&add[n], "AWS_REGION=%s", region) >= 0) n++;
	if (asprintf(&add[n], "LAMBDA_TASK_ROOT=/var/task") >= 0) n++;
	if (asprintf(&add[n], "TZ=:UTC") >= 0) n++;
	const char **env = realloc(c->env, (c->nenv + n + 1) * sizeof(char *));
	char **st = env ? realloc(c->env_storage, (c->nenv + n + 1) * sizeof(char *)) : NULL;

	if (env)
		c->env = env;
	if (st)
		c->env_storage = st;
	for (size_t i = 0; i < n; i++) {
		size_t k = strcspn(add[i], "=") + 1;
		bool have = false;

		for (size_t j = 0; j < c->nenv && !have; j++)
			have = strncmp(c->env[j], add[i], k) == 0;
		if (have || !env || !st) {
			free(add[i]);
			continue;
		}
		c->env_storage[c->nenv] = add[i];
		c->env[c->nenv++] = add[i];
	}
}

static void vm_conf_build(const struct fn_version *v, struct vm_conf *c)
{
	json_t *env = json_loads(v->env_json ? v->env_json : "{}", 0, NULL);
	const char *k;
	json_t *val;
	size_t i;

	memset(c, 0, sizeof(*c));
	c->args_j = json_loads(v->args_json ? v->args_json : "[]", 0, NULL);
	c->nargs = json_array_size(c->args_j);
	c->args = calloc(c->nargs + 1, sizeof(char *));
	for (i = 0; c->args && i < c->nargs; i++)
		c->args[i] = json_string_value(json_array_get(c->args_j, i));
	c->nenv = json_object_size(env);
	c->env = calloc(c->nenv + 1, sizeof(char *));
	c->env_storage = calloc(c->nenv + 1, sizeof(char *));
	i = 0;
	json_object_foreach(env, k, val) {
		if (c->env && c->env_storage &&
		    asprintf(&c->env_storage[i], "%s=%s", k, json_string_value(val)) >= 0) {
			c->env[i] = c->env_storage[i];
			i++;
		}
	}
	c->nenv = i;
	json_decref(env);
}

struct vm_thread_arg {
	struct sched *s;
	struct pool *p;
	bool prewarm;
	bool provisioned;   /* started for the provisioned count: its kept time is metered */
};

static void vm_stop(struct pool *p, struct hearth_vm *vm, struct agent_conn *conn);

/* The builtin engine's pool figures, for /metrics. */
static void vmm_pool_metrics(struct sched *s)
{
	struct hearth_pool_stats st;

	if (s->eng.builtin && hearth_engine_pool_stats(s->eng.builtin, &st) == 0)
		metrics_vmm_pool(st.idle, st.starting, st.hits, st.misses, st.discarded);
}

/*
 * Tells the builtin engine how many idle pre-started processes to keep per VM
 * shape: cfg.vmm_pool for every shape whose version has a snapshot, within
 * the VMs and guest memory the host has left (a pooled process becomes a VM
 * the moment it is used). Called with s->mu held.
 */
static void vmm_pool_plan(struct sched *s)
{
	struct hearth_pool_shape sh[16];
	int n = 0;
	int64_t free_vms = s->cfg.max_vms - s->total_vms;
	int64_t free_mb = s->cfg.host_memory_mb - s->mem_used_mb;

	if (!s->eng.builtin)
		return;
	for (const struct pool *p = s->pools; p && s->cfg.vmm_pool > 0; p = p->next) {
		int i;

		if (p->eng != s->eng.builtin || !p->snap_ready || p->dead)
			continue;
		for (i = 0; i < n; i++)
			if (sh[i].memory_mb == p->ver.memory_mb)
				break;
		if (i < n || n == (int)(sizeof(sh) / sizeof(sh[0])))
			continue;
		int64_t want = s->cfg.vmm_pool;
		if (want > free_vms)
			want = free_vms;
		if (p->ver.memory_mb > 0 && want > free_mb / p->ver.memory_mb)
			want = free_mb / p->ver.memory_mb;
		if (want < 0)
			want = 0;
		free_vms -= want;
		free_mb -= want * p->ver.memory_mb;
		sh[n++] = (struct hearth_pool_shape){ .memory_mb = p->ver.memory_mb, .vcpus = 1,
						      .count = (int)want };
	}
	hearth_engine_pool_set(s->eng.builtin, sh, n);
}

/*
 * Restores a clone of the version's snapshot and brings its agent to Ready:
 * Hello, then fresh entropy before anything else (clones must not share RNG
 * state), all within the restore timeout. On failure the caller destroys
 * whatever *vmp and *connp hold.
 */
static int clone_start(struct sched *s, struct pool *p, const char *mem, const char *state,
		       struct hearth_vm **vmp, struct agent_conn **connp, char *err, size_t errlen)
{
	int64_t deadline = mono_us() + (int64_t)s->cfg.restore_timeout_ms * 1000;
	uint8_t seed[32];
	int rc;

	char ws[600];
	struct hearth_vm_spec shape = { .memory_mb = p->ver.memory_mb, .vcpus = 1 };

	snprintf(ws, sizeof(ws), "%s.ws", state);
	if (access(ws, R_OK) == 0)
		shape.prefetch = ws;

	pthread_mutex_lock(p->eng_mu);
	rc = hearth_vm_clone(p->eng, mem, state, &shape, vmp, err, errlen);
	pthread_mutex_unlock(p->eng_mu);
	vmm_pool_metrics(s);
	if (rc)
		return rc;
	rc = hearth_vm_connect(*vmp, s->cfg.restore_timeout_ms, connp, err, errlen);
	if (rc)
		return rc;
	int left_ms = (int)((deadline - mono_us()) / 1000);
	rc = agent_hello(*connp, left_ms > 0 ? left_ms : 1, NULL);
	if (rc) {
		snprintf(err, errlen, "agent hello: %s", agent_strerror(rc));
		return -EIO;
	}
	left_ms = (int)((deadline - mono_us()) / 1000);
	if (RAND_bytes(seed, sizeof(seed)) != 1 ||
	    (rc = agent_reseed(*connp, seed, sizeof(seed), left_ms > 0 ? left_ms : 1)) != 0) {
		snprintf(err, errlen, "agent reseed: %s", rc ? agent_strerror(rc) : "no entropy");
		return -EIO;
	}
	pthread_mutex_lock(&s->mu);
	p->clone_failures = 0;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

/* Boots (or restores) a VM and brings its agent to Ready. */
static int vm_start(struct sched *s, struct pool *p, struct hearth_vm **vmp,
		    struct agent_conn **connp, uint64_t *boot_us, uint64_t *init_us, bool *restored,
		    bool *init_failed, char *err, size_t errlen)
{
	char mem[512], state[512];
	struct hearth_vm_spec spec = {
		.kernel = p->eng == s->eng.builtin ? s->cfg.builtin_kernel : s->cfg.kernel,
		.initrd = p->ver.image_path,
		.memory_mb = p->ver.memory_mb,
		.vcpus = 1,
	};
	struct agent_config ac = { 0 };
	struct vm_conf vc;
	uint8_t seed[32];
	int64_t t0 = mono_us();
	int rc;

	bool clone = false;

	pthread_mutex_lock(&s->mu);
	if (p->snap_ready) {
		clone = true;
		snprintf(mem, sizeof(mem), "%s", p->snap_mem);
		snprintf(state, sizeof(state), "%s", p->snap_state);
	}
	pthread_mutex_unlock(&s->mu);
	if (clone) {
		rc = clone_start(s, p, mem, state, vmp, connp, err, errlen);
		if (rc == 0) {
			/* The snapshot was taken after Ready: the clone's agent is configured. */
			*restored = true;
			*boot_us = (uint64_t)(mono_us() - t0);
			*init_us = 0;
			return 0;
		}
		/*
		 * A clone that is not Ready within the restore timeout never gets
		 * an invocation: it is destroyed and this VM boots instead. After
		 * a few such clones in a row the snapshot itself is suspect: it is
		 * dropped, and this booted VM takes a new one.
		 */
		metrics_clone_failed();
		vm_stop(p, *vmp, *connp);
		*vmp = NULL;
		*connp = NULL;
		pthread_mutex_lock(&s->mu);
		bool drop = ++p->clone_failures >= CLONE_FAILURES_MAX && p->snap_ready;
		if (drop)
			p->snap_ready = false;
		pthread_mutex_unlock(&s->mu);
		hlog_warn("sched", "a clone of %s v%d was not Ready within %d ms (%s): destroyed; "
			  "booting a VM instead%s", p->ver.name, p->ver.version,
			  s->cfg.restore_timeout_ms, err,
			  drop ? "; the snapshot is dropped and will be taken again" : "");
		t0 = mono_us();
	}
	pthread_mutex_lock(p->eng_mu);
	rc = hearth_vm_create(p->eng, &spec, vmp, err, errlen);
	pthread_mutex_unlock(p->eng_mu);
	if (rc)
		return rc;
	*restored = false;
	rc = hearth_vm_connect(*vmp, s->cfg.boot_timeout_ms, connp, err, errlen);
	if (rc)
		return rc;
	rc = agent_hello(*connp, s->cfg.boot_timeout_ms, NULL);
	if (rc) {
		snprintf(err, errlen, "agent hello: %s", agent_strerror(rc));
		return -EIO;
	}
	if (RAND_bytes(seed, sizeof(seed)) != 1 ||
	    (rc = agent_reseed(*connp, seed, sizeof(seed), 10000)) != 0) {
		snprintf(err, errlen, "agent reseed failed");
		return -EIO;
	}
	*boot_us = (uint64_t)(mono_us() - t0);
	vm_conf_build(&p->ver, &vc);
	char arn[400];

	if (p->ver.runtime[0]) {
		/* Lambda's shape, with the tenant id as the account id. */
		snprintf(arn, sizeof(arn), "arn:aws:lambda:%s:%012lld:function:%s:%d", s->cfg.region,
			 (long long)p->ver.tenant_id, p->ver.name, p->ver.version);
		vm_conf_add_lambda_env(&p->ver, s->cfg.region, &vc);
		ac.runtime = true;
		ac.function_arn = arn;
	}
	ac.handler = p->ver.handler;
	ac.args = vc.args;
	ac.nargs = vc.nargs;
	ac.env = vc.env;
	ac.nenv = vc.nenv;
	ac.workdir = "/var/task";
	ac.timeout_ms = p->ver.timeout_ms;
	ac.init = p->ver.init[0] ? p->ver.init : NULL;
	rc = agent_configure(*connp, &ac, s->cfg.boot_timeout_ms + 60000, init_us);
	vm_conf_free(&vc);
	if (rc == AGENT_EREMOTE &&
	    agent_last_error_code(*connp) == HEARTH__ERROR_CODE__ERR_INIT_FAILED) {
		*init_failed = true; /* the function's fault, reported to callers as such */
		snprintf(err, errlen, "%s", agent_last_error(*connp));
		return -EIO;
	}
	if (rc) {
		snprintf(err, errlen, "agent configure: %s%s%s", agent_strerror(rc),
			 rc == AGENT_EREMOTE ? ": " : "",
			 rc == AGENT_EREMOTE ? agent_last_error(*connp) : "");
		return -EIO;
	}
	return 0;
}

static void vm_stop(struct pool *p, struct hearth_vm *vm, struct agent_conn *conn)
{
	char err[256];

	agent_close(conn);
	if (!vm)
		return;
	pthread_mutex_lock(p->eng_mu);
	if (hearth_vm_destroy(vm, err, sizeof(err)))
		hlog_warn("sched", "destroying a VM of %s v%d: %s", p->ver.name, p->ver.version, err);
	pthread_mutex_unlock(p->eng_mu);
}

static int spawn_vm(struct sched *s, struct pool *p, bool prewarm, bool provisioned);

/* "size-mtime" of a file: enough to tell builds of the kernel or of hearth-vmm apart. */
static void file_id(const char *path, char *out, size_t n)
{
	struct stat st;

	if (path && stat(path, &st) == 0)
		snprintf(out, n, "%lld-%lld", (long long)st.st_size, (long long)st.st_mtime);
	else
		snprintf(out, n, "none");
}

static void snapshot_key(struct sched *s, struct pool *p, char *kernel, char *vmm, char *shape,
			 size_t n)
{
	file_id(s->cfg.builtin_kernel, kernel, n);
	file_id(s->cfg.vmm_bin, vmm, n);
	snprintf(shape, n, "%umb-1cpu", p->ver.memory_mb);
}

/*
 * Removes every snapshot file of a version (memory, state, working set,
 * half-written temporaries), by the name vm_take_snapshot gives them. Version
 * ids are never reused, so nothing of another version can match.
 */
static void remove_snapshot_files(struct sched *s, int64_t version_id)
{
	char pat[600];
	glob_t g;

	if (!s->cfg.snapshot_dir)
		return;
	snprintf(pat, sizeof(pat), "%s/v%lld-*", s->cfg.snapshot_dir, (long long)version_id);
	if (glob(pat, 0, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++)
		unlink(g.gl_pathv[i]);
	globfree(&g);
}

/*
 * Writes the version's snapshot from this idle, Ready VM (it keeps running)
 * and publishes it for clones. Called without s->mu.
 */
static void vm_take_snapshot(struct sched *s, struct pool *p, struct hearth_vm *vm)
{
	char mem[512], state[512], tmpm[600], tmps[600], err[512], kid[64], vid[64], shape[64];
	int64_t t0 = mono_us();
	int rc;

	snapshot_key(s, p, kid, vid, shape, sizeof(kid));
	snprintf(mem, sizeof(mem), "%s/v%lld-%s-%s.mem", s->cfg.snapshot_dir, (long long)p->version_id,
		 shape, kid);
	snprintf(state, sizeof(state), "%s/v%lld-%s-%s.state", s->cfg.snapshot_dir,
		 (long long)p->version_id, shape, kid);
	/* Written under temporary names and renamed: a snapshot is never seen half-written. */
	snprintf(tmpm, sizeof(tmpm), "%s.tmp", mem);
	snprintf(tmps, sizeof(tmps), "%s.tmp", state);
	pthread_mutex_lock(p->eng_mu);
	rc = hearth_vm_snapshot(vm, tmpm, tmps, err, sizeof(err));
	pthread_mutex_unlock(p->eng_mu);
	if (rc == 0) {
		/* A working set recorded for an earlier snapshot of that name is not this one's. */
		char ws[600];

		snprintf(ws, sizeof(ws), "%s.ws", state);
		unlink(ws);
	}
	if (rc == 0 && (rename(tmpm, mem) < 0 || rename(tmps, state) < 0)) {
		snprintf(err, sizeof(err), "rename: %s", strerror(errno));
		rc = -EIO;
	}
	if (rc == 0)
		rc = store_snapshot_put(s->store, p->version_id, hearth_engine_name(p->eng), kid, vid,
					shape, mem, state);
	pthread_mutex_lock(&s->mu);
	p->snap_taking = false;
	bool dead = p->dead;
	if (rc == 0 && !dead) {
		snprintf(p->snap_mem, sizeof(p->snap_mem), "%s", mem);
		snprintf(p->snap_state, sizeof(p->snap_state), "%s", state);
		p->snap_ready = true;
	}
	pthread_mutex_unlock(&s->mu);
	if (rc == 0 && dead) {
		/* The version was deleted while this was written: it must not stay on disk. */
		remove_snapshot_files(s, p->version_id);
		return;
	}
	if (rc) {
		unlink(tmpm);
		unlink(tmps);
		hlog_warn("sched", "snapshot of %s v%d failed: %s", p->ver.name, p->ver.version, err);
	} else {
		hlog_info("sched", "snapshot of %s v%d taken in %lld us; cold starts now restore it",
			  p->ver.name, p->ver.version, (long long)(mono_us() - t0));
	}
}

/*
 * Writes a usage record for the time a provisioned VM was kept since *since
 * (Lambda bills provisioned concurrency by the GB-s it is kept, used or not).
 */
static void meter_provisioned(struct sched *s, struct pool *p, struct hearth_vm *vm, int *n,
			      int64_t *since)
{
	int64_t now = wall_us();
	char id[200];
	struct inv_record rec = { 0 };

	if (now - *since < 1000)
		return;
	snprintf(id, sizeof(id), "prov-%s-%d", hearth_vm_name(vm), ++*n);
	rec.request_id = id;
	rec.attempt = 1;
	rec.tenant_id = p->ver.tenant_id;
	rec.version_id = p->version_id;
	rec.function = p->ver.name;
	rec.version = p->ver.version;
	rec.kind = "provisioned";
	rec.start_us = *since;
	rec.end_us = now;
	rec.duration_us = (uint64_t)(now - *since);
	rec.billed_ms = quota_billed_ms(rec.duration_us);
	rec.mb_ms = quota_mb_ms(p->ver.memory_mb, rec.billed_ms);
	rec.memory_mb = p->ver.memory_mb;
	rec.status = "Provisioned";
	if (store_invocation_add(s->store, &rec))
		hlog_error("sched", "could not record provisioned time of %s", hearth_vm_name(vm));
	else if (s->cfg.on_usage)
		s->cfg.on_usage(s->cfg.on_usage_ctx, p->ver.tenant_id, rec.mb_ms);
	*since = now;
}

static const char *status_name(int st)
{
	switch (st) {
	case AGENT_INVOKE_OK: return "Success";
	case AGENT_INVOKE_FUNCTION_ERROR: return "FunctionError";
	case AGENT_INVOKE_CRASHED: return "Crashed";
	case AGENT_INVOKE_TIMEOUT: return "Timeout";
	case AGENT_INVOKE_RESPONSE_TOO_LARGE: return "ResponseTooLarge";
	default: return "PlatformError";
	}
}

/*
 * Suspends an idle VM to disk (engines with SAVE_RESTORE) and waits, using no
 * CPU or guest memory, until an invocation needs it or the parked TTL ends.
 * Called and returns with s->mu held. Returns 0 when the VM is running again
 * (reconnected, reseeded: clones and restores never reuse RNG state), or
 * -EAGAIN when it is gone (counts already adjusted; the caller only frees it).
 */
static int vm_park(struct sched *s, struct pool *p, struct hearth_vm *vm, struct agent_conn **conn,
		   uint64_t *restore_us)
{
	char err[512];
	uint8_t seed[32];
	int64_t t0, deadline;
	int rc;

	p->nvms--;
	p->nsaved++;
	count_vm(s, p, -1); /* a saved VM holds no host memory */
	metrics_vms(-1);
	pthread_mutex_unlock(&s->mu);
	agent_close(*conn);
	*conn = NULL;
	pthread_mutex_lock(p->eng_mu);
	rc = hearth_vm_save(vm, err, sizeof(err));
	pthread_mutex_unlock(p->eng_mu);
	pthread_mutex_lock(&s->mu);
	if (rc) {
		hlog_warn("sched", "saving %s failed (%s); destroying it", hearth_vm_name(vm), err);
		p->nsaved--;
		return -EAGAIN;
	}
	hlog_debug("sched", "%s saved to disk (scale to zero)", hearth_vm_name(vm));
	deadline = mono_us() + s->cfg.parked_ttl_ms * 1000;
	for (;;) {
		struct timespec ts;
		int64_t wall = wall_us() + (deadline - mono_us());

		if (p->dead || s->stopping || mono_us() >= deadline) {
			p->nsaved--;
			return -EAGAIN;
		}
		if (p->qhead && p->nidle == 0 && p->nrestoring < p->nqueued)
			break;
		ts.tv_sec = wall / 1000000;
		ts.tv_nsec = (wall % 1000000) * 1000;
		pthread_cond_timedwait(&p->cond, &s->mu, &ts);
	}
	p->nsaved--;
	p->nrestoring++;
	count_vm(s, p, 1);
	pthread_mutex_unlock(&s->mu);
	t0 = mono_us();
	pthread_mutex_lock(p->eng_mu);
	rc = hearth_vm_restore(vm, err, sizeof(err));
	pthread_mutex_unlock(p->eng_mu);
	if (rc == 0)
		rc = hearth_vm_connect(vm, s->cfg.boot_timeout_ms, conn, err, sizeof(err));
	if (rc == 0 && (rc = agent_hello(*conn, s->cfg.boot_timeout_ms, NULL)) != 0)
		snprintf(err, sizeof(err), "agent hello after restore: %s", agent_strerror(rc));
	if (rc == 0 && (RAND_bytes(seed, sizeof(seed)) != 1 ||
			(rc = agent_reseed(*conn, seed, sizeof(seed), 10000)) != 0))
		snprintf(err, sizeof(err), "agent reseed after restore failed");
	*restore_us = (uint64_t)(mono_us() - t0);
	pthread_mutex_lock(&s->mu);
	p->nrestoring--;
	if (rc) {
		hlog_error("sched", "restoring %s failed: %s; booting a new VM instead",
			   hearth_vm_name(vm), err);
		count_vm(s, p, -1);
		if (p->qhead && p->nbooting < p->nqueued && host_has_room(s, p))
			spawn_vm(s, p, false, false);
		return -EAGAIN;
	}
	p->nvms++;
	metrics_vms(1);
	return 0;
}

/*
 * After a clone's first invocation: the guest pages it touched are the
 * snapshot's working set (host/vmm/workset.h). Recorded once per snapshot,
 * next to it, for later clones to prefetch. Called without s->mu.
 */
static void record_workset(struct sched *s, struct pool *p, struct hearth_vm *vm)
{
	char ws[600], err[512];
	int rc;

	pthread_mutex_lock(&s->mu);
	bool go = p->snap_ready && !p->ws_recording;
	if (go) {
		snprintf(ws, sizeof(ws), "%s.ws", p->snap_state);
		go = access(ws, F_OK) != 0;
	}
	if (go)
		p->ws_recording = true;
	pthread_mutex_unlock(&s->mu);
	if (!go)
		return;
	pthread_mutex_lock(p->eng_mu);
	rc = hearth_vm_workset(vm, ws, err, sizeof(err));
	pthread_mutex_unlock(p->eng_mu);
	if (rc)
		hlog_warn("sched", "working set of %s v%d not recorded: %s", p->ver.name,
			  p->ver.version, err);
	else
		hlog_info("sched", "working set of %s v%d recorded from a clone's first invocation; "
			  "later clones prefetch it", p->ver.name, p->ver.version);
	pthread_mutex_lock(&s->mu);
	p->ws_recording = false;
	pthread_mutex_unlock(&s->mu);
}

/*
 * After the agent answered inv (rc 0) or failed (rc): sets inv's outcome and
 * the metrics, and folds the time into the pool's average. true when the VM
 * must be replaced.
 */
static bool finish_outcome(struct sched *s, struct pool *p, struct hearth_vm *vm,
			   struct invocation *inv, int rc)
{
	bool broken = false;

	inv->end_wall_us = wall_us();
	metrics_concurrency(-1);
	if (rc) {
		char why[200];
		/* The VMM may have ended, and can say why (its cgroup killed it, say). */
		enum hearth_vm_end end = hearth_vm_exit_reason(vm, 500, why, sizeof(why));
		bool ended = end != HEARTH_VM_LIVES;

		char kept[4400];

		broken = true;
		hearth_vm_keep_console(vm, kept, sizeof(kept));
		hlog_error("sched", "agent of %s failed during %s: %s%s%s; replacing the VM (its "
			   "console is kept in %s)", hearth_vm_name(vm), inv->request_id,
			   agent_strerror(rc), ended ? ": " : "", ended ? why : "", kept);
		inv->outcome = INV_PLATFORM_ERROR;
		inv->http_status = 502;
		snprintf(inv->error_code, sizeof(inv->error_code), "%s",
			 end == HEARTH_VM_OUT_OF_MEMORY ? "VMOutOfMemory" : "AgentFailed");
		if (ended)
			snprintf(inv->error, sizeof(inv->error),
				 "the function VM ended: %s; it has been replaced", why);
		else
			snprintf(inv->error, sizeof(inv->error),
				 "the function VM stopped responding (%s); it has been "
				 "replaced", agent_strerror(rc));
		metrics_invocation("PlatformError", 0, false, true);
	} else {
		inv->outcome = INV_OK;
		metrics_invocation(status_name(inv->res.status), inv->res.duration_us,
				   inv->res.status != AGENT_INVOKE_OK, false);
	}
	pthread_mutex_lock(&s->mu);
	{
		int64_t took = inv->end_wall_us - inv->start_wall_us;

		if (took < 0)
			took = 0;
		/* Clamped: one slow call must not take a fast function off the inline path. */
		if (took > 2 * (int64_t)s->cfg.inline_max_us)
			took = 2 * (int64_t)s->cfg.inline_max_us;
		p->recent_us = p->recent_us ? (p->recent_us * 7 + took) / 8 : took;
	}
	pthread_mutex_unlock(&s->mu);
	return broken;
}

/*
 * Puts slot in the pool's lendable list, unless it is there or lent out now.
 * Called with s->mu held.
 */
static void slot_list(struct pool *p, struct vm_slot *slot, struct agent_conn *conn,
		      struct hearth_vm *vm)
{
	if (slot->listed || slot->lent)
		return;
	slot->conn = conn;
	slot->vm = vm;
	slot->next = p->lendable;
	p->lendable = slot;
	slot->listed = true;
}

/* The live pool of a version, or NULL. Called with s->mu held. */
static struct pool *pool_find(struct sched *s, int64_t version_id)
{
	for (struct pool *p = s->pools; p; p = p->next)
		if (p->version_id == version_id && !p->dead)
			return p;
	return NULL;
}

/* Says why a VM found dead before work was sent to it ended. Called without s->mu. */
static void log_ended_idle(const struct fn_version *v, struct hearth_vm *vm)
{
	char why[200], kept[4400];

	hearth_vm_exit_reason(vm, 500, why, sizeof(why));
	hearth_vm_keep_console(vm, kept, sizeof(kept));
	hlog_warn("sched", "%s of %s v%d ended while idle (%s); a new VM takes the queued work "
		  "(its console is kept in %s)", hearth_vm_name(vm), v->name, v->version, why, kept);
}

/* Takes slot out of the pool's lendable list if it is there. Called with s->mu held. */
static void slot_unlist(struct pool *p, struct vm_slot *slot)
{
	for (struct vm_slot **pp = &p->lendable; *pp; pp = &(*pp)->next)
		if (*pp == slot) {
			*pp = slot->next;
			break;
		}
	slot->listed = false;
}

static void *vm_thread(void *arg)
{
	struct vm_thread_arg *a = arg;
	struct sched *s = a->s;
	struct pool *p = a->p;
	bool prewarm = a->prewarm, first = true, broken = false, restored = false, cloned = false;
	bool take_snapshot = false, provisioned = a->provisioned;
	int64_t metered_since = 0;
	int nmeter = 0;
	uint64_t restore_us = 0;
	struct hearth_vm *vm = NULL;
	struct agent_conn *conn = NULL;
	uint64_t boot_us = 0, init_us = 0;
	char err[2048] = "";
	bool init_failed = false, ended_idle = false;
	struct vm_slot slot = { 0 };
	int rc;

	free(a);
	rc = vm_start(s, p, &vm, &conn, &boot_us, &init_us, &cloned, &init_failed, err,
		      sizeof(err));
	pthread_mutex_lock(&s->mu);
	p->nbooting--;
	if (rc) {
		struct invocation *inv;
		char kept[4400] = "";

		if (vm)
			hearth_vm_keep_console(vm, kept, sizeof(kept));
		if (strstr(err, kept))
			kept[0] = 0; /* the engine's message names it already */
		hlog_error("sched", "VM for %s v%d failed to start: %s%s%s%s", p->ver.name,
			   p->ver.version, err, kept[0] ? " (its console is kept in " : "", kept,
			   kept[0] ? ")" : "");
		count_vm(s, p, -1);
		/*
		 * This VM was started for the invocation at the head of the queue:
		 * fail it. If no other VM is alive or coming, fail the rest too
		 * rather than let them wait forever.
		 */
		if (!prewarm && (inv = pop(p))) {
			pthread_mutex_unlock(&s->mu);
			if (init_failed)
				fail_init(inv, err, boot_us);
			else
				fail_inv(inv, 503, "VMStartFailed", "function VM failed to start: %s",
					 err);
			pthread_mutex_lock(&s->mu);
		}
		while (p->nvms == 0 && p->nbooting == 0 && (inv = pop(p))) {
			pthread_mutex_unlock(&s->mu);
			if (init_failed)
				fail_init(inv, err, boot_us);
			else
				fail_inv(inv, 503, "VMStartFailed", "function VM failed to start: %s",
					 err);
			pthread_mutex_lock(&s->mu);
		}
		pthread_mutex_unlock(&s->mu);
		vm_stop(p, vm, conn);
		goto out;
	}
	p->nvms++;
	metrics_vms(1);
	metered_since = wall_us();
	if ((p->caps & HEARTH_ENGINE_CAP_CLONE) && !p->snap_ready && !p->snap_taking &&
	    s->cfg.snapshot_dir) {
		p->snap_taking = true; /* this VM takes it, once idle */
		take_snapshot = true;
	}
	hlog_debug("sched", "VM up for %s v%d (%s in %llu us, init %llu us)", p->ver.name,
		   p->ver.version, hearth_vm_name(vm), (unsigned long long)boot_us,
		   (unsigned long long)init_us);
	for (;;) {
		struct invocation *inv = NULL;
		int64_t idle_since = mono_us();
		bool handed = false;

		if (take_snapshot && !p->qhead && !p->dead && !s->stopping) {
			take_snapshot = false;
			pthread_mutex_unlock(&s->mu);
			vm_take_snapshot(s, p, vm);
			pthread_mutex_lock(&s->mu);
			idle_since = mono_us();
			continue;
		}
		/* Warm and served before: callers' threads may borrow it (sched_run_inline). */
		if (!first && !restored && !take_snapshot)
			slot_list(p, &slot, conn, vm);
		while (slot.lent || (!slot.handoff && !slot.broken && !p->dead && !s->stopping &&
				     !p->qhead)) {
			int64_t deadline, wall;
			struct timespec ts;

			if (slot.used_us > idle_since)
				idle_since = slot.used_us;
			deadline = idle_since + s->cfg.keep_warm_ms * 1000;
			wall = wall_us() + (deadline - mono_us());
			ts.tv_sec = wall / 1000000;
			ts.tv_nsec = (wall % 1000000) * 1000;
			p->nidle++;
			rc = pthread_cond_timedwait(&p->cond, &s->mu, &ts);
			p->nidle--;
			if (slot.lent || slot.handoff || slot.broken || slot.used_us > idle_since)
				continue; /* lent meanwhile: not idle since idle_since */
			if (provisioned && rc == ETIMEDOUT) {
				pthread_mutex_unlock(&s->mu);
				meter_provisioned(s, p, vm, &nmeter, &metered_since);
				pthread_mutex_lock(&s->mu);
			}
			if (rc == ETIMEDOUT && !p->qhead && mono_us() >= deadline &&
			    p->nvms > p->provisioned)
				break;
			if (rc == ETIMEDOUT && mono_us() >= deadline)
				idle_since = mono_us(); /* provisioned: stay */
		}
		if (slot.listed)
			slot_unlist(p, &slot);
		if (slot.handoff) {
			/* A caller sent it on this VM and could not wait: answer it here. */
			inv = slot.handoff;
			slot.handoff = NULL;
			handed = true;
			goto run;
		}
		if (slot.broken) {
			/* A caller's invocation found the agent failed (and was answered so). */
			broken = true;
			ended_idle = true;
			break;
		}
		if (!p->dead && !s->stopping && !p->qhead && (p->caps & HEARTH_ENGINE_CAP_SAVE_RESTORE)) {
			/* Scale to zero without forgetting: suspend to disk, restore on demand. */
			rc = vm_park(s, p, vm, &conn, &restore_us);
			if (rc == 0) {
				restored = true;
				continue;
			}
			if (rc == -EAGAIN) /* parked VM expired or failed: it is gone */
				goto gone;
		}
		if (p->dead || s->stopping || !p->qhead)
			break;
		if (!agent_conn_alive(conn)) {
			/*
			 * The VM ended while idle (killed, crashed): the work queued for it
			 * was never sent, so a new VM takes it instead of failing it.
			 */
			pthread_mutex_unlock(&s->mu);
			log_ended_idle(&p->ver, vm);
			pthread_mutex_lock(&s->mu);
			ended_idle = true;
			break;
		}
		inv = pop(p);
run:
		pthread_mutex_unlock(&s->mu);

		bool first_run = first || restored;

		if (first && !prewarm) {
			inv->cold = true;
			inv->cold_path = cloned ? "restore" : "boot";
			inv->boot_us = boot_us;
			inv->init_us = init_us;
			metrics_cold_start(boot_us, init_us);
			metrics_cold_start_path(inv->cold_path);
		} else if (restored) {
			inv->cold = true;
			inv->cold_path = "restore";
			inv->boot_us = restore_us;
			inv->init_us = 0;
			metrics_cold_start(restore_us, 0);
			metrics_cold_start_path("restore");
		}
		first = false;
		restored = false;
		if (handed) {
			rc = agent_invoke_recv(conn, (int)p->ver.timeout_ms + 10000, &inv->res);
		} else {
			metrics_concurrency(1);
			inv->start_wall_us = wall_us();
			rc = agent_invoke(conn, inv->request_id, inv->payload, inv->payload_len, 0,
					  (int)p->ver.timeout_ms + 10000, &inv->res);
		}
		broken = finish_outcome(s, p, vm, inv, rc);
		/*
		 * The caller may send its next request as soon as done() answers,
		 * before this thread is idle again: counted as returning, this VM
		 * takes that request instead of a new VM being started for it.
		 */
		pthread_mutex_lock(&s->mu);
		if (!broken) {
			p->nreturning++;
			/*
			 * Lendable before done() answers, so that the caller's next request
			 * finds it. This thread touches neither conn nor vm again before it
			 * waits, unless it still has to record the working set or take the
			 * snapshot (then it lists itself later).
			 */
			if (!(first_run && cloned) && !take_snapshot)
				slot_list(p, &slot, conn, vm);
		}
		pthread_mutex_unlock(&s->mu);
		inv->done(inv);
		if (!broken && first_run && cloned)
			record_workset(s, p, vm);
		pthread_mutex_lock(&s->mu);
		if (!broken)
			p->nreturning--;
		if (broken) {
			/* Whatever queued meanwhile counted on no VM: start one for it. */
			if (p->qhead && p->nbooting + p->nrestoring < p->nqueued && host_has_room(s, p))
				spawn_vm(s, p, false, false);
			break;
		}
	}
	p->nvms--;
	count_vm(s, p, -1);
	metrics_vms(-1);
	if (take_snapshot)
		p->snap_taking = false; /* gone before it was idle: the next VM takes it */
	if (ended_idle && p->qhead && p->nbooting + p->nrestoring < p->nqueued &&
	    host_has_room(s, p))
		spawn_vm(s, p, false, false);
	pthread_mutex_unlock(&s->mu);
	if (provisioned)
		meter_provisioned(s, p, vm, &nmeter, &metered_since);
	vm_stop(p, vm, conn);
	hlog_debug("sched", "VM of %s v%d gone", p->ver.name, p->ver.version);
	goto out;
gone:
	pthread_mutex_unlock(&s->mu);
	vm_stop(p, vm, conn);
out:
	pthread_mutex_lock(&s->mu);
	s->threads--;
	pthread_cond_broadcast(&s->all_gone);
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/*
 * Gives a lent slot back to its VM's thread: with an invocation to finish
 * (handoff), as broken (the thread replaces the VM), or ready for more (back
 * in the lendable list at once; its thread sleeps on and never sees the loan).
 */
static void slot_return(struct sched *s, struct pool *p, struct vm_slot *sl,
			struct invocation *handoff, bool broken)
{
	pthread_mutex_lock(&s->mu);
	sl->lent = false;
	sl->handoff = handoff;
	sl->broken = broken;
	if (!handoff && !broken) {
		sl->used_us = mono_us();
		if (!p->dead && !s->stopping)
			slot_list(p, sl, sl->conn, sl->vm);
	}
	/* Wake the thread only if it has something to do. */
	if (handoff || broken || p->qhead)
		pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&s->mu);
}

enum sched_inline sched_run_inline(struct sched *s, struct invocation *inv)
{
	struct vm_slot *sl;
	struct pollfd pfd;
	struct pool *p;
	bool broken;
	int rc, n;

	pthread_mutex_lock(&s->mu);
	p = pool_find(s, inv->ver.id);
	/* Never ahead of invocations waiting in line; never for slow functions. */
	if (!p || s->stopping || p->qhead || !(sl = p->lendable) || p->recent_us <= 0 ||
	    p->recent_us > s->cfg.inline_max_us) {
		pthread_mutex_unlock(&s->mu);
		return SCHED_INLINE_NONE;
	}
	p->lendable = sl->next;
	sl->listed = false;
	sl->lent = true;
	pthread_mutex_unlock(&s->mu);

	if (!agent_conn_alive(sl->conn)) {
		/* Ended while idle: nothing was sent. Its thread replaces it; this call queues. */
		log_ended_idle(&inv->ver, sl->vm);
		slot_return(s, p, sl, NULL, true);
		return SCHED_INLINE_NONE;
	}

	inv->queued_mono_us = mono_us();
	metrics_concurrency(1);
	inv->start_wall_us = wall_us();
	rc = agent_invoke_send(sl->conn, inv->request_id, inv->payload, inv->payload_len, 0);
	if (rc == 0) {
		pfd = (struct pollfd){ .fd = agent_fd(sl->conn), .events = POLLIN };
		do
			n = poll(&pfd, 1, SCHED_INLINE_WAIT_MS);
		while (n < 0 && errno == EINTR);
		if (n == 0) {
			/* Slower than it used to be: the VM's thread waits for it instead. */
			metrics_inline(true);
			if (inv->will_wait)
				inv->will_wait(inv);
			slot_return(s, p, sl, inv, false);
			return SCHED_INLINE_PENDING;
		}
		rc = agent_invoke_recv(sl->conn, (int)inv->ver.timeout_ms + 10000, &inv->res);
	}
	metrics_inline(false);
	broken = finish_outcome(s, p, sl->vm, inv, rc);
	slot_return(s, p, sl, NULL, broken);
	return SCHED_INLINE_DONE;
}

/* Called with s->mu held. */
static int spawn_vm(struct sched *s, struct pool *p, bool prewarm, bool provisioned)
{
	struct vm_thread_arg *a = malloc(sizeof(*a));
	pthread_attr_t attr;
	pthread_t t;

	if (!a)
		return -ENOMEM;
	a->s = s;
	a->p = p;
	a->prewarm = prewarm;
	a->provisioned = provisioned;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	if (pthread_create(&t, &attr, vm_thread, a)) {
		pthread_attr_destroy(&attr);
		free(a);
		return -EAGAIN;
	}
	pthread_attr_destroy(&attr);
	p->nbooting++;
	count_vm(s, p, 1);
	s->threads++;
	return 0;
}

/* Called with s->mu held. */
static struct pool *pool_get(struct sched *s, const struct fn_version *v)
{
	struct pool *p;
	struct hearth_engine *e;

	if ((p = pool_find(s, v->id)))
		return p;
	e = sched_engine_for(s, v->engine);
	if (!e)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->version_id = v->id;
	p->ver = *v;
	p->ver.args_json = strdup(v->args_json ? v->args_json : "[]");
	p->ver.env_json = strdup(v->env_json ? v->env_json : "{}");
	p->eng = e;
	p->eng_mu = engine_lock_for(s, e);
	p->caps = hearth_engine_caps(e);
	p->reserved = store_function_reserved(s->store, v->function_id);
	if ((p->caps & HEARTH_ENGINE_CAP_CLONE) && s->cfg.snapshot_dir) {
		char kid[64], vid[64], shape[64];

		snapshot_key(s, p, kid, vid, shape, sizeof(kid));
		if (store_snapshot_get(s->store, p->version_id, hearth_engine_name(e), kid, vid, shape,
				       p->snap_mem, sizeof(p->snap_mem), p->snap_state,
				       sizeof(p->snap_state)) == 0 &&
		    access(p->snap_mem, R_OK) == 0 && access(p->snap_state, R_OK) == 0)
			p->snap_ready = true;
	}
	pthread_cond_init(&p->cond, NULL);
	p->next = s->pools;
	s->pools = p;
	return p;
}

void sched_submit(struct sched *s, struct invocation *inv)
{
	struct pool *p;

	inv->queued_mono_us = mono_us();
	pthread_mutex_lock(&s->mu);
	if (s->stopping) {
		pthread_mutex_unlock(&s->mu);
		fail_inv(inv, 503, "ShuttingDown", "hearthd is shutting down");
		return;
	}
	p = pool_get(s, &inv->ver);
	if (!p) {
		pthread_mutex_unlock(&s->mu);
		fail_inv(inv, 503, "EngineUnavailable", "engine '%s' is not enabled on this host",
			 inv->ver.engine);
		return;
	}
	/* Refuse only when nothing of this pool exists or is coming; otherwise wait in line. */
	if (!host_has_room(s, p) && p->nvms == 0 && p->nbooting == 0 &&
	    p->nrestoring == 0 && p->nsaved == 0) {
		pthread_mutex_unlock(&s->mu);
		metrics_throttle_reason("HostCapacityExceeded");
		fail_inv(inv, 429, "HostCapacityExceeded",
			 "the host runs its maximum of %d VMs; retry later", s->cfg.max_vms);
		return;
	}
	if (p->qtail)
		p->qtail->next = inv;
	else
		p->qhead = inv;
	p->qtail = inv;
	p->nqueued++;
	if (p->nidle > 0)
		pthread_cond_signal(&p->cond);
	else if (p->nsaved > 0 && p->nrestoring < p->nqueued)
		pthread_cond_broadcast(&p->cond); /* a parked VM restores for it */
	else if (p->nbooting + p->nrestoring + p->nreturning < p->nqueued && host_has_room(s, p))
		spawn_vm(s, p, false, false);
	pthread_mutex_unlock(&s->mu);
}

void sched_drop_versions(struct sched *s, const int64_t *ids, size_t n)
{
	pthread_mutex_lock(&s->mu);
	for (struct pool *p = s->pools; p; p = p->next) {
		for (size_t i = 0; i < n; i++) {
			if (p->version_id != ids[i] || p->dead)
				continue;
			p->dead = true;
			p->snap_ready = false; /* its files go below; running clones keep their mapping */
			pthread_cond_broadcast(&p->cond);
			struct invocation *inv;
			while ((inv = pop(p))) {
				pthread_mutex_unlock(&s->mu);
				fail_inv(inv, 410, "FunctionDeleted", "the function was deleted");
				pthread_mutex_lock(&s->mu);
			}
		}
	}
	pthread_mutex_unlock(&s->mu);
	/* Snapshots of deleted versions (also ones an earlier hearthd wrote) leave the disk. */
	for (size_t i = 0; i < n; i++)
		remove_snapshot_files(s, ids[i]);
}

static int prewarm(struct sched *s, const struct fn_version *v, int count, bool provisioned)
{
	struct pool *p;
	int started = 0;

	pthread_mutex_lock(&s->mu);
	p = pool_get(s, v);
	while (p && !s->stopping && p->nvms + p->nbooting < count && host_has_room(s, p) &&
	       spawn_vm(s, p, true, provisioned) == 0)
		started++;
	pthread_mutex_unlock(&s->mu);
	return started;
}

int sched_prewarm(struct sched *s, const struct fn_version *v, int count)
{
	return prewarm(s, v, count, false);
}

void sched_reconcile(struct sched *s)
{
	int64_t *ids, *rids, *rcounts, total_reserved = 0;
	int *counts;
	size_t n, nr;

	/* All SQL first: the scheduler lock is not held across queries. */
	store_provisioned_list(s->store, &ids, &counts, &n);
	store_reservations(s->store, 0, &rids, &rcounts, &nr);
	for (size_t i = 0; i < nr; i++)
		total_reserved += rcounts[i];
	pthread_mutex_lock(&s->mu);
	s->reserved_total = total_reserved;
	for (struct pool *p = s->pools; p; p = p->next) {
		p->reserved = 0;
		for (size_t i = 0; i < nr; i++)
			if (rids[i] == p->ver.function_id)
				p->reserved = rcounts[i];
	}
	free(rids);
	free(rcounts);
	vmm_pool_plan(s);
	for (struct pool *p = s->pools; p; p = p->next) {
		int want = 0;

		for (size_t i = 0; i < n; i++)
			if (ids[i] == p->version_id)
				want = counts[i];
		if (p->provisioned != want) {
			p->provisioned = want;
			pthread_cond_broadcast(&p->cond); /* surplus VMs re-check their TTL */
		}
	}
	pthread_mutex_unlock(&s->mu);
	for (size_t i = 0; i < n; i++) {
		struct fn_version v;

		if (store_version_by_id(s->store, ids[i], &v) == 0) {
			pthread_mutex_lock(&s->mu);
			struct pool *p = pool_get(s, &v);
			if (p)
				p->provisioned = counts[i];
			pthread_mutex_unlock(&s->mu);
			prewarm(s, &v, counts[i], true);
			fn_version_free(&v);
		}
	}
	free(ids);
	free(counts);
}

static void *keeper_thread(void *arg)
{
	struct sched *s = arg;

	pthread_mutex_lock(&s->mu);
	while (!s->stopping) {
		struct timespec ts;
		int64_t w = wall_us() + 1000000;

		ts.tv_sec = w / 1000000;
		ts.tv_nsec = (w % 1000000) * 1000;
		pthread_cond_timedwait(&s->keeper_cond, &s->mu, &ts);
		if (s->stopping)
			break;
		pthread_mutex_unlock(&s->mu);
		sched_reconcile(s);
		vmm_pool_metrics(s);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

void sched_set_usage_hook(struct sched *s, void (*fn)(void *, int64_t, uint64_t), void *ctx)
{
	pthread_mutex_lock(&s->mu);
	s->cfg.on_usage = fn;
	s->cfg.on_usage_ctx = ctx;
	pthread_mutex_unlock(&s->mu);
}

void sched_stats(struct sched *s, int64_t version_id, struct sched_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&s->mu);
	for (struct pool *p = s->pools; p; p = p->next) {
		if (version_id && p->version_id != version_id)
			continue;
		st->vms += p->nvms;
		st->idle += p->nidle;
		st->booting += p->nbooting;
		st->queued += p->nqueued;
		st->saved += p->nsaved;
		st->snapshot |= p->snap_ready;
	}
	pthread_mutex_unlock(&s->mu);
}

int sched_create(const struct sched_config *cfg, const struct sched_engines *engines,
		 struct store *store, struct sched **out)
{
	struct sched *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	if (s->cfg.keep_warm_ms <= 0)
		s->cfg.keep_warm_ms = 10 * 60 * 1000;
	if (s->cfg.max_vms <= 0)
		s->cfg.max_vms = 64;
	if (s->cfg.boot_timeout_ms <= 0)
		s->cfg.boot_timeout_ms = 60000;
	if (s->cfg.restore_timeout_ms <= 0)
		s->cfg.restore_timeout_ms = 5000;
	if (!s->cfg.region || !s->cfg.region[0])
		s->cfg.region = "us-east-1";
	if (s->cfg.host_memory_mb <= 0) {
		/* All of RAM but 1 GiB for the host itself. */
		int64_t total = (int64_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) / (1 << 20);

		s->cfg.host_memory_mb = total > 2048 ? total - 1024 : total;
	}
	if (s->cfg.vcpu_capacity <= 0)
		s->cfg.vcpu_capacity = (int)sysconf(_SC_NPROCESSORS_ONLN) * 16;
	if (s->cfg.parked_ttl_ms <= 0)
		s->cfg.parked_ttl_ms = 24 * 3600 * 1000LL;
	s->eng = *engines;
	s->store = store;
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->eng_mu_libvirt, NULL);
	pthread_mutex_init(&s->eng_mu_process, NULL);
	pthread_mutex_init(&s->eng_mu_builtin, NULL);
	pthread_cond_init(&s->all_gone, NULL);
	pthread_cond_init(&s->keeper_cond, NULL);
	if (pthread_create(&s->keeper, NULL, keeper_thread, s)) {
		free(s);
		return -EAGAIN;
	}
	*out = s;
	return 0;
}

void sched_destroy(struct sched *s)
{
	struct pool *p, *next;

	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_broadcast(&s->keeper_cond);
	for (p = s->pools; p; p = p->next) {
		struct invocation *inv;

		pthread_cond_broadcast(&p->cond);
		while ((inv = pop(p))) {
			pthread_mutex_unlock(&s->mu);
			fail_inv(inv, 503, "ShuttingDown", "hearthd is shutting down");
			pthread_mutex_lock(&s->mu);
		}
	}
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->keeper, NULL);
	pthread_mutex_lock(&s->mu);
	while (s->threads > 0)
		pthread_cond_wait(&s->all_gone, &s->mu);
	pthread_mutex_unlock(&s->mu);
	for (p = s->pools; p; p = next) {
		next = p->next;
		fn_version_free(&p->ver);
		pthread_cond_destroy(&p->cond);
		free(p);
	}
	free(s);
}
