/*
 * jail.h - hearth-vmm confines itself before it touches guest input, after
 * Firecracker's jailer, when started with --jail-uid (hearthd always does so
 * when it runs as root):
 *
 *   - the files it needs (kernel, initrd, snapshot state and memory, working
 *     set, /dev/kvm, its own pagemap) are opened first, as root, and reached
 *     later through fileref.h; later files come over the control socket;
 *   - new mount, PID, IPC, UTS and network namespaces: no network device but
 *     a down `lo`, and hearth-vmm is PID 1 of its own namespace;
 *   - its root is a fresh read-only tmpfs (pivot_root; the host's root is
 *     detached) that holds nothing but its socket directory, bound read-write
 *     at the same path, so that hearthd and the VMM name sockets alike;
 *   - a cgroup of its own (v2, or the v1 memory, cpu and pids controllers):
 *     memory limit = guest RAM + overhead, CPU quota = vCPUs, a pids limit;
 *   - rlimits (no core dumps, bounded fds, processes and file size), every
 *     other fd closed, supplementary groups dropped, a unique unprivileged
 *     uid/gid, every capability gone (the bounding set included), and
 *     no_new_privs; seccomp filters follow as without the jail.
 *
 * A PID namespace takes effect for children only, so jail_enter() forks: the
 * child goes on as the VMM (PID 1 inside); the parent stays outside as a
 * supervisor that reads nothing from the guest or the VMM, forwards SIGTERM,
 * SIGINT and SIGHUP, waits, and exits with the VMM's status. When the VMM was
 * killed by its cgroup's memory limit it says so on stderr and exits with
 * VMM_EXIT_CGROUP_OOM; then it removes the cgroup. If the supervisor is
 * killed, the VMM gets SIGKILL (parent-death signal). The supervisor is
 * confined too: it keeps uid 0 (the cgroup directories are root's) but only
 * CAP_KILL, an empty bounding set, no_new_privs, and a seccomp filter without
 * open, socket, fork or exec; it reads the OOM count and removes the cgroup
 * through fds opened before.
 */
#ifndef HEARTH_VMM_JAIL_H
#define HEARTH_VMM_JAIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define JAIL_MAX_FILES 8
#define JAIL_MAX_DIRS 4
#define JAIL_DEFAULT_ROOT "/run/hearth-jail"
#define JAIL_DEFAULT_OVERHEAD_MIB 64u

struct jail_cfg {
	uid_t uid;
	gid_t gid;
	const char *root;                   /* mount point of the jail's tmpfs root */
	const char *files[JAIL_MAX_FILES];  /* opened before the drop (fileref names) */
	int nfiles;
	const char *dirs[JAIL_MAX_DIRS];    /* bound read-write at their host paths */
	int ndirs;
	uint64_t mem_max;                   /* cgroup memory limit in bytes (0: none) */
	unsigned cpus;                      /* cgroup CPU quota in CPUs (0: none) */
	unsigned pids_max;                  /* cgroup pids limit (0: none) */
	bool no_cgroup;                     /* run without a cgroup (said on stderr) */
	int keep[4];                        /* other fds to keep open (the console) */
	int nkeep;
};

/* Confines the process as above; returns in the jailed child only, exits on failure. */
void jail_enter(struct jail_cfg *j);

#endif
