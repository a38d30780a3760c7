/*
 * vmm_pool.h - pre-started hearth-vmm processes for the builtin engine.
 *
 * A pooled process (hearth-vmm --pool) has been exec'd and linked, has its
 * KVM VM, irqchip, vCPUs, RAM reservation, vsock device and seccomp filters,
 * and waits on its control socket for one 'restore'. Turning it into a clone
 * costs a state-file read and the vCPU and device state loads: well under a
 * millisecond, against ~3 ms of process start and VM set-up for a spawned
 * restore.
 *
 * Pools are kept per shape (guest RAM in MiB, vCPUs) by a background thread
 * that starts processes up to the wanted count, checks that idle ones still
 * answer (a process that died or says anything but "pooled" is killed and
 * replaced), and stops the surplus when the wanted count falls. Nothing of a
 * restore happens on that thread: vmm_pool_take() runs on the caller's.
 *
 * What a pooled process carries from one VM to the next: nothing. A process
 * serves exactly one restore and exits with its VM; before that it never ran
 * guest code, and its RAM reservation is replaced by the snapshot's memory
 * file (MAP_FIXED) in the restore. The KVM VM, vCPUs and devices it made are
 * blank until the snapshot's state is loaded into them. So no tenant's memory,
 * registers, random state or sockets can reach another tenant's VM through
 * the pool.
 *
 * Each process lives in <run_dir>/<prefix>pool-<n>/ (ctl.sock, v.sock, pid,
 * console.log); the prefix makes a crashed hearthd's leftovers reaped like
 * its VMs' (engine_builtin.c).
 */
#ifndef HEARTH_ENGINE_VMM_POOL_H
#define HEARTH_ENGINE_VMM_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine.h"

struct vmm_pool;

/*
 * The jail of the engine's hearth-vmm processes: each gets a uid of its own
 * (uid_base + slot, never two live processes with one uid), and runs without
 * a cgroup only where the host has none usable (said once at start).
 */
struct vmm_jail {
	bool on;
	bool no_cgroup;
	uint32_t uid_base;
};
/* A free uid from the shared allocator (jail_uid.h); 0 when the jail is off or every uid is taken. */
uint32_t vmm_jail_uid_get(const struct vmm_jail *j);
void vmm_jail_uid_put(const struct vmm_jail *j, uint32_t uid);
/* Appends the jail's options for uid to argv at *i ("--jail-uid N" ...); buf holds the number. */
void vmm_jail_argv(const struct vmm_jail *j, uint32_t uid, char **argv, int *i, char buf[16]);

/* Starts the pool's thread (no shapes wanted yet). Returns 0 or -errno. */
int vmm_pool_open(struct vmm_pool **out, const char *vmm_bin, const char *run_dir,
		  const char *prefix, const struct vmm_jail *jail);
/* Stops the thread and every idle pooled process, removing their directories. */
void vmm_pool_close(struct vmm_pool *p);

/* The wanted idle count per shape; shapes not listed want none. At most 16 shapes. */
void vmm_pool_set(struct vmm_pool *p, const struct hearth_pool_shape *shapes, int n);

struct vmm_pool_proc {
	pid_t pid;
	uint32_t uid;   /* its jail uid (0: none); the caller puts it back when the process is gone */
	char dir[256];  /* the process's own directory: remove it once the process is gone */
	char ctl[300];  /* its control socket */
	char sock[300]; /* its hybrid vsock socket (bound when it was started) */
};

/*
 * Restores a snapshot in an idle pooled process of that shape, giving it the
 * console file (and the working set to prefetch, or NULL); its vsock socket
 * was bound when it started (out->sock): returns 0 and fills *out (the process
 * is now the caller's VM); 1 when no process of that shape was ready (a miss:
 * spawn instead); -1 when the chosen process failed (it is killed and its
 * directory removed; err says why; spawn instead).
 */
int vmm_pool_take(struct vmm_pool *p, uint32_t memory_mb, uint32_t vcpus, const char *state,
		  const char *mem, const char *console, const char *prefetch,
		  struct vmm_pool_proc *out, char *err, size_t errlen);

void vmm_pool_stats(struct vmm_pool *p, struct hearth_pool_stats *st);

/*
 * One command on a hearth-vmm control socket, the reply line (without its
 * newline) in reply, all within timeout_ms. Returns 0 if a line came back,
 * -1 otherwise (reply then says why). Also the builtin engine's VM control.
 * vmm_ctl_cmd_fds() passes nfds open files with it (SCM_RIGHTS), which the
 * command names "@0", "@1", ... (host/vmm/control.h): a jailed hearth-vmm
 * opens nothing on the host itself.
 */
int vmm_ctl_cmd(const char *path, const char *cmd, int timeout_ms, char *reply, size_t len);
int vmm_ctl_cmd_fds(const char *path, const char *cmd, const int *fds, int nfds, int timeout_ms,
		    char *reply, size_t len);

#endif
