/*
 * scheduler.h - hearthd's scheduler: warm pools of function VMs.
 *
 * Each function version has a pool. A VM serves one invocation at a time.
 * sched_submit() queues an invocation on its version's pool; an idle VM of
 * the pool takes it, or, when none is idle, a new VM is started (a cold
 * start: restore from the version's snapshot where the engine can clone,
 * else a boot). A VM idle for longer than the keep-warm TTL is destroyed, so
 * functions scale to zero; a function's provisioned count of VMs is kept up
 * at all times. Every VM thread owns its VM and its agent connection; the
 * engine itself is called under a per-engine lock.
 *
 * On engines that can save and restore a VM (libvirt), an idle VM past its
 * TTL is not destroyed but suspended to disk: it then uses no CPU or guest
 * memory, and the next invocation restores it (cold start path "restore",
 * much faster than a boot), after which the host sends Reseed before anything
 * else. A parked VM is destroyed after parked_ttl_ms.
 *
 * On engines that clone one snapshot into many VMs (builtin), the first VM of
 * a version takes a snapshot of itself once its agent is Ready and it is idle
 * (snapshot pre-warming, in the background of serving); from then on every
 * cold start of that version restores a clone of it (path "restore") instead
 * of booting, and sends Reseed before anything else. The snapshot index is in
 * SQLite, keyed by version, engine, kernel, hearth-vmm build and VM shape.
 *
 * Reserved concurrency holds host capacity back: VMs of functions without a
 * reservation may not use the slots that reserved functions have not taken.
 *
 * A VM whose agent dies (connection lost, no answer within the deadline) is
 * destroyed and replaced on demand; the invocation it was running fails with
 * a platform error.
 *
 * Completion: the invocation's done() callback runs on the VM thread (or on
 * the submitting thread when the invocation fails before reaching a VM).
 */
#ifndef HEARTH_DAEMON_SCHEDULER_H
#define HEARTH_DAEMON_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "agent_client.h"
#include "engine.h"
#include "store.h"

struct sched;

struct sched_config {
	const char *kernel;          /* guest kernel for libvirt (bzImage) */
	const char *builtin_kernel;  /* guest kernel for the builtin engine (vmlinux or bzImage) */
	const char *snapshot_dir;    /* where per-version snapshots live (CLONE engines) */
	const char *vmm_bin;         /* hearth-vmm, part of the snapshot key */
	/* Called with usage that is not an invocation (provisioned VM time), for budgets. */
	void (*on_usage)(void *ctx, int64_t tenant_id, uint64_t mb_ms);
	void *on_usage_ctx;
	int64_t keep_warm_ms;        /* idle VM lifetime; default 10 minutes */
	int64_t parked_ttl_ms;       /* how long a saved (scaled-to-zero) VM is kept; default 24 h */
	int max_vms;                 /* host-wide cap on VMs */
	int64_t host_memory_mb;      /* guest memory of all VMs at most; 0 = RAM - 1 GiB */
	int vcpu_capacity;           /* vCPUs of all VMs at most (ncpu x overcommit); 0 = ncpu x 16 */
	int boot_timeout_ms;         /* boot + agent Ready */
	int restore_timeout_ms;      /* clone restored + agent answering Reseed; default 5 s */
	const char *region;          /* runtime mode: AWS_REGION and ARNs; default us-east-1 */
	/*
	 * Pre-started hearth-vmm processes kept idle per VM shape that has a
	 * snapshot (builtin engine; 0: none, every clone spawns its process).
	 * Capped so that pooled processes never exceed what max_vms and
	 * host_memory_mb leave free.
	 */
	int vmm_pool;
	/*
	 * sched_run_inline takes functions whose recent calls took at most this
	 * many microseconds (0: never). hearthd's default: SCHED_INLINE_MAX_US.
	 */
	int inline_max_us;
};

/* Engines by kind; NULL when not enabled on this host. */
struct sched_engines {
	struct hearth_engine *libvirt;
	struct hearth_engine *process;
	struct hearth_engine *builtin;
	struct hearth_engine *dflt;  /* the "auto" choice */
};

enum inv_outcome {
	INV_OK = 0,          /* the handler ran; see res.status for function errors */
	INV_PLATFORM_ERROR,  /* no result: VM failed to start, agent died, ... */
};

struct invocation {
	char request_id[64];
	struct fn_version ver;       /* a copy; owned by the invocation */
	const uint8_t *payload;
	size_t payload_len;
	bool async;

	/* filled by the scheduler */
	enum inv_outcome outcome;
	int http_status;             /* for platform errors */
	char error_code[48];
	char error[256];
	struct agent_result res;
	bool cold;
	const char *cold_path;       /* "boot" or "restore" */
	uint64_t boot_us, init_us;
	int64_t start_wall_us, end_wall_us;
	int64_t queued_mono_us;

	void (*done)(struct invocation *inv);
	/* sched_run_inline: called before a VM's thread takes the invocation over (may be NULL) */
	void (*will_wait)(struct invocation *inv);
	void *arg;
	struct invocation *next;
};

int sched_create(const struct sched_config *cfg, const struct sched_engines *engines,
		 struct store *store, struct sched **out);
/* Stops every VM thread and destroys every VM. */
void sched_destroy(struct sched *s);

/* Picks the engine for a version's engine name ("auto", "libvirt", "process"). */
struct hearth_engine *sched_engine_for(struct sched *s, const char *name);

/* Queues inv; inv->done() is called exactly once, possibly before this returns. */
void sched_submit(struct sched *s, struct invocation *inv);

/*
 * The fast path of a warm sync invocation: runs inv in the caller's thread on
 * an idle warm VM of its version, without a thread handoff either way.
 * Taken only when no invocation of the version waits in line and its recent
 * invocations were short (cfg.inline_max_us); the caller waits at most
 * SCHED_INLINE_WAIT_MS for the answer.
 *   SCHED_INLINE_NONE     nothing was done: sched_submit it as usual.
 *   SCHED_INLINE_DONE     finished here: inv's outcome is set; done() is not called.
 *   SCHED_INLINE_PENDING  sent, not answered in time: will_wait(inv) was called,
 *                         then the VM's own thread took it over and calls done()
 *                         (possibly before this returns).
 */
enum sched_inline { SCHED_INLINE_NONE, SCHED_INLINE_DONE, SCHED_INLINE_PENDING };
#define SCHED_INLINE_MAX_US 500 /* hearthd's default for cfg.inline_max_us */
#define SCHED_INLINE_WAIT_MS 2
enum sched_inline sched_run_inline(struct sched *s, struct invocation *inv);

/* Destroys the pools (and VMs) of these versions; queued invocations fail. */
void sched_drop_versions(struct sched *s, const int64_t *ids, size_t n);

/*
 * Starts VMs for a version until it has at least `count` (prewarm); returns
 * how many were started. Used for provisioned concurrency and `prewarm`.
 */
int sched_prewarm(struct sched *s, const struct fn_version *v, int count);

/* Sets the hook for non-invocation usage (see sched_config.on_usage). */
void sched_set_usage_hook(struct sched *s, void (*fn)(void *, int64_t, uint64_t), void *ctx);

/* Re-reads provisioned counts from the store and tops pools up (called periodically). */
void sched_reconcile(struct sched *s);

struct sched_stats {
	int vms, idle, booting, queued, saved;
	bool snapshot;   /* the version has a snapshot to clone */
};
void sched_stats(struct sched *s, int64_t version_id, struct sched_stats *st);

int64_t mono_us(void);
int64_t wall_us(void);

#endif
