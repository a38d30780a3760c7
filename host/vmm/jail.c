/* jail.c - hearth-vmm's jail. See jail.h. */
#include "jail.h"

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#include "fileref.h"
#include "seccomp_filter.h"
#include "vm.h"

#if defined(__SANITIZE_ADDRESS__)
/*
 * LeakSanitizer's exit-time check reads /proc, which a jail does not have: a
 * jailed process would end with "LeakSanitizer has encountered a fatal error".
 * Sanitizer builds therefore check leaks only where hearth-vmm runs unjailed
 * (the vmm tests); LSan asks this at exit. The supervisor is in the same case:
 * after unshare(CLONE_NEWPID), LSan's tracer thread would start in the new
 * namespace.
 */
static volatile int lsan_off;
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
	return lsan_off;
}
#define SANITIZER_JAILED() (lsan_off = 1)
#else
#define SANITIZER_JAILED() ((void)0)
#endif

#define CG_V2_ROOT "/sys/fs/cgroup"
#define CG_MAX 3

/* The cgroup directories of this VM (one for v2, one per controller for v1). */
static struct {
	char dir[CG_MAX][PATH_MAX];
	int parent[CG_MAX]; /* O_PATH fds of their parents, for removal without open() */
	int n;
	bool v2;
	uint64_t mem_max;
	int events; /* memory.events (v2) or memory.oom_control (v1), opened at creation */
} cg = { .events = -1 };

static int write_str(const char *dir, const char *file, const char *val)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "%s/%s", dir, file);
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, val, strlen(val));
	int e = errno;
	close(fd);
	errno = e;
	return n == (ssize_t)strlen(val) ? 0 : -1;
}

/* The value of "key N" in the flat keyed file open at fd (memory.events, memory.oom_control). */
static long long keyed(int fd, const char *key)
{
	char buf[1024];
	ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
	if (n <= 0)
		return -1;
	buf[n] = 0;
	size_t kl = strlen(key);
	for (char *line = buf; line; line = strchr(line, '\n')) {
		line += *line == '\n';
		if (!strncmp(line, key, kl) && line[kl] == ' ')
			return atoll(line + kl + 1);
	}
	return -1;
}

/* Records cg.dir[i] as made: opens its parent for cgroup_remove(). */
static int cg_made(int i)
{
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%s", cg.dir[i]);
	*strrchr(parent, '/') = 0;
	cg.parent[i] = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
	cg.n = i + 1;
	return cg.parent[i] < 0 ? -1 : 0;
}

/* This process's cgroup path in hierarchy `ctrl` ("" for v2's unified line). */
static void own_path(const char *ctrl, char *out, size_t n)
{
	char line[512];
	FILE *f = fopen("/proc/self/cgroup", "re");
	snprintf(out, n, "/");
	while (f && fgets(line, sizeof(line), f)) {
		char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
		if (!b)
			continue;
		*b = 0;
		bool match = false;
		for (char *t = strtok(a + 1, ","); t; t = strtok(NULL, ","))
			if (!strcmp(t, ctrl))
				match = true;
		if (match || (!*ctrl && a + 1 == b)) {
			b[1 + strcspn(b + 1, "\n")] = 0;
			snprintf(out, n, "%s", b + 1);
			break;
		}
	}
	if (f)
		fclose(f);
}

static int mkdir_p(const char *path, mode_t mode)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = 0;
			if (mkdir(p, mode) < 0 && errno != EEXIST)
				return -1;
			*s = '/';
		}
	return mkdir(p, mode) < 0 && errno != EEXIST ? -1 : 0;
}

/* Opens the memory controller's event counts, read once the VMM has ended. */
static int open_events(const char *file, const char **why)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "%s/%s", cg.dir[0], file);
	cg.events = open(p, O_RDONLY | O_CLOEXEC);
	if (cg.events < 0)
		*why = "cannot open the VM cgroup's memory events";
	return cg.events < 0 ? -1 : 0;
}

/* Creates this VM's cgroup(s) with their limits. 0, or -1 with *why set. */
static int cgroup_create(const struct jail_cfg *j, const char *name, const char **why)
{
	char v[64];
	struct stat st;
	cg.mem_max = j->mem_max;
	if (stat(CG_V2_ROOT "/cgroup.controllers", &st) == 0) {
		/*
		 * v2: under <root>/hearth, with memory, cpu and pids enabled on the
		 * way down (the root cgroup is exempt from the no-internal-process
		 * rule, and hearth/ holds no process of its own).
		 */
		cg.v2 = true;
		if (write_str(CG_V2_ROOT, "cgroup.subtree_control", "+memory +cpu +pids") < 0 ||
		    mkdir_p(CG_V2_ROOT "/hearth", 0755) < 0 ||
		    write_str(CG_V2_ROOT "/hearth", "cgroup.subtree_control", "+memory +cpu +pids") < 0) {
			*why = "cgroup v2: cannot enable the memory, cpu and pids controllers";
			return -1;
		}
		snprintf(cg.dir[0], sizeof(cg.dir[0]), CG_V2_ROOT "/hearth/%s", name);
		if (mkdir(cg.dir[0], 0755) < 0 || cg_made(0) < 0) {
			*why = "cgroup v2: cannot create the VM's cgroup";
			return -1;
		}
		int bad = 0;
		if (j->mem_max) {
			snprintf(v, sizeof(v), "%llu", (unsigned long long)j->mem_max);
			bad |= write_str(cg.dir[0], "memory.max", v);
			write_str(cg.dir[0], "memory.swap.max", "0"); /* absent without swap accounting */
		}
		if (j->cpus) {
			snprintf(v, sizeof(v), "%u 100000", j->cpus * 100000u);
			bad |= write_str(cg.dir[0], "cpu.max", v);
		}
		if (j->pids_max) {
			snprintf(v, sizeof(v), "%u", j->pids_max);
			bad |= write_str(cg.dir[0], "pids.max", v);
		}
		if (bad) {
			*why = "cgroup v2: cannot set the VM's limits";
			return -1;
		}
		return open_events("memory.events", why);
	}
	/* v1: one directory per controller, under this process's own cgroup there. */
	static const char *const ctrl[CG_MAX] = { "memory", "cpu", "pids" };
	for (int i = 0; i < CG_MAX; i++) {
		char base[PATH_MAX / 2], own[PATH_MAX / 4];
		snprintf(base, sizeof(base), CG_V2_ROOT "/%s", ctrl[i]);
		if (stat(base, &st) < 0) {
			*why = i == 0 ? "no cgroup v2 and no cgroup v1 memory controller mounted"
				      : "cgroup v1: the cpu or pids controller is not mounted";
			return -1;
		}
		own_path(ctrl[i], own, sizeof(own));
		snprintf(cg.dir[i], sizeof(cg.dir[i]), "%s%s/hearth/%s", base,
			 strcmp(own, "/") ? own : "", name);
		if (mkdir_p(cg.dir[i], 0755) < 0 || cg_made(i) < 0) {
			*why = "cgroup v1: cannot create the VM's cgroup";
			return -1;
		}
	}
	int bad = 0;
	if (j->mem_max) {
		snprintf(v, sizeof(v), "%llu", (unsigned long long)j->mem_max);
		bad |= write_str(cg.dir[0], "memory.limit_in_bytes", v);
		write_str(cg.dir[0], "memory.memsw.limit_in_bytes", v); /* absent without swap accounting */
	}
	if (j->cpus) {
		snprintf(v, sizeof(v), "%u", j->cpus * 100000u);
		bad |= write_str(cg.dir[1], "cpu.cfs_period_us", "100000");
		bad |= write_str(cg.dir[1], "cpu.cfs_quota_us", v);
	}
	if (j->pids_max) {
		snprintf(v, sizeof(v), "%u", j->pids_max);
		bad |= write_str(cg.dir[2], "pids.max", v);
	}
	if (bad) {
		*why = "cgroup v1: cannot set the VM's limits";
		return -1;
	}
	return open_events("memory.oom_control", why);
}

static long long cgroup_oom_kills(void)
{
	return cg.n ? keyed(cg.events, "oom_kill") : 0;
}

static void cgroup_remove(void)
{
	for (int i = cg.n - 1; i >= 0; i--)
		if (cg.parent[i] >= 0)
			unlinkat(cg.parent[i], strrchr(cg.dir[i], '/') + 1, AT_REMOVEDIR);
		else
			rmdir(cg.dir[i]); /* its parent could not be opened: only before the fork */
}

static void set_limit(int res, rlim_t v, const char *what)
{
	struct rlimit r = { v, v };
	if (setrlimit(res, &r) < 0)
		err(VMM_EXIT_ERROR, "jail: setrlimit %s", what);
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* Closes every fd but 0-2 and keep[]. */
static void close_others(int *keep, int n)
{
	qsort(keep, (size_t)n, sizeof(int), cmp_int);
	unsigned from = 3;
	for (int i = 0; i < n; i++) {
		if (keep[i] < 3)
			continue;
		if ((unsigned)keep[i] > from)
			close_range(from, (unsigned)keep[i] - 1, 0);
		from = (unsigned)keep[i] + 1;
	}
	close_range(from, ~0U, 0);
}

static pid_t child_pid;

static void forward(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

/*
 * The supervisor keeps root's uid (the cgroup directories belong to root) but
 * nothing else: no capability but CAP_KILL (the VMM runs under another uid),
 * an empty bounding set, no_new_privs, and a seccomp filter that allows
 * waiting, signals, stderr, and removing the cgroup through the fds it holds.
 */
static void confine_supervisor(void)
{
	for (int c = 0; c <= 63; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			err(VMM_EXIT_ERROR, "jail: supervisor: dropping capability %d", c);
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	memset(d, 0, sizeof(d));
	d[0].effective = d[0].permitted = 1u << CAP_KILL;
	if (syscall(SYS_capset, &h, d) < 0)
		err(VMM_EXIT_ERROR, "jail: supervisor: capset");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		err(VMM_EXIT_ERROR, "jail: supervisor: no_new_privs");
	set_limit(RLIMIT_CORE, 0, "core");
	set_limit(RLIMIT_NPROC, 0, "nproc");
	seccomp_install_supervisor();
}

/* The parent outside the namespaces: wait for the VMM, report, clean up. */
static void supervise(pid_t child, int alive_w)
{
	child_pid = child;
	/* Nothing but stderr (the console log), the liveness pipe and the cgroup's fds stays open. */
	int keep[CG_MAX + 2], nkeep = 0;
	keep[nkeep++] = alive_w;
	if (cg.events >= 0)
		keep[nkeep++] = cg.events;
	for (int i = 0; i < cg.n; i++)
		keep[nkeep++] = cg.parent[i];
	for (int fd = 0; fd < 2; fd++) {
		bool kept = false;
		for (int i = 0; i < nkeep; i++)
			kept |= keep[i] == fd;
		if (!kept)
			close(fd);
	}
	close_others(keep, nkeep);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = forward;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	confine_supervisor();
	int st;
	while (waitpid(child, &st, 0) < 0)
		if (errno != EINTR)
			err(VMM_EXIT_ERROR, "jail: waitpid");
	long long ooms = cgroup_oom_kills();
	cgroup_remove();
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL && ooms > 0) {
		fprintf(stderr,
			"hearth-vmm: the VM was killed by its cgroup: memory limit of %llu MiB "
			"(guest RAM plus VMM overhead) reached\n",
			(unsigned long long)(cg.mem_max >> 20));
		exit(VMM_EXIT_CGROUP_OOM);
	}
	if (WIFEXITED(st))
		exit(WEXITSTATUS(st));
	signal(WTERMSIG(st), SIG_DFL);
	raise(WTERMSIG(st));
	exit(128 + WTERMSIG(st));
}

void jail_enter(struct jail_cfg *j)
{
	if (j->uid == 0 || j->gid == 0)
		errx(VMM_EXIT_USAGE, "jail: the uid and gid must not be 0");
	if (geteuid() != 0)
		errx(VMM_EXIT_ERROR, "jail: hearth-vmm must start as root to jail itself");
	if (!j->root)
		j->root = JAIL_DEFAULT_ROOT;

	/* 1. Files, as root: they are all this process will ever open on the host. */
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0 || fref_register("/dev/kvm", kvm) < 0)
		err(VMM_EXIT_ERROR, "jail: open /dev/kvm");
	for (int i = 0; i < j->nfiles; i++) {
		int fd = open(j->files[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			err(VMM_EXIT_ERROR, "jail: cannot open %s", j->files[i]);
		if (fref_register(j->files[i], fd) < 0)
			errx(VMM_EXIT_ERROR, "jail: too many files");
	}
	for (int i = 0; i < j->ndirs; i++) {
		struct stat st;
		if (lstat(j->dirs[i], &st) < 0 || !S_ISDIR(st.st_mode))
			errx(VMM_EXIT_USAGE, "jail: %s is not a directory", j->dirs[i]);
		if (!strcmp(j->dirs[i], "/") || !strncmp(j->dirs[i], "/proc", 5) ||
		    !strncmp(j->dirs[i], "/sys", 4) || !strncmp(j->dirs[i], "/dev", 4))
			errx(VMM_EXIT_USAGE, "jail: %s cannot be the socket directory", j->dirs[i]);
		if (chown(j->dirs[i], j->uid, j->gid) < 0 || chmod(j->dirs[i], 0700) < 0)
			err(VMM_EXIT_ERROR, "jail: chown %s", j->dirs[i]);
	}

	/* 2. The cgroup, then the namespaces, then the fork into the PID namespace. */
	char name[64];
	snprintf(name, sizeof(name), "vmm-%d", (int)getpid());
	const char *why = NULL;
	if (!j->no_cgroup && cgroup_create(j, name, &why) < 0) {
		int e = errno;
		cgroup_remove();
		errno = e;
		err(VMM_EXIT_ERROR, "jail: %s (%s; --jail-no-cgroup runs without one)", why,
		    cg.n ? cg.dir[cg.n - 1] : "");
	}
	if (j->no_cgroup)
		fprintf(stderr, "hearth-vmm: jail: no cgroup (--jail-no-cgroup): no memory, CPU "
				"or pids limit\n");
	int alive[2];
	if (pipe2(alive, O_CLOEXEC) < 0)
		err(VMM_EXIT_ERROR, "jail: pipe");
	/* The supervisor stays in the host's other namespaces (it removes the cgroup). */
	if (unshare(CLONE_NEWPID) < 0) {
		cgroup_remove();
		err(VMM_EXIT_ERROR, "jail: unshare of the PID namespace failed");
	}
	SANITIZER_JAILED(); /* the supervisor's LSan would trace from the new PID namespace */
	pid_t pid = fork();
	if (pid < 0) {
		cgroup_remove();
		err(VMM_EXIT_ERROR, "jail: fork");
	}
	if (pid > 0) {
		close(alive[0]);
		supervise(pid, alive[1]);
	}
	close(alive[1]);

	/* 3. The child: PID 1 of its namespace. Into the cgroup, then the other namespaces. */
	for (int i = 0; i < cg.n; i++)
		if (write_str(cg.dir[i], "cgroup.procs", "0") < 0)
			err(VMM_EXIT_ERROR, "jail: joining %s", cg.dir[i]);
	if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
		err(VMM_EXIT_ERROR, "jail: unshare of the mount, network, IPC and UTS namespaces");
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0 || fref_register("/proc/self/pagemap", pm) < 0)
		err(VMM_EXIT_ERROR, "jail: open /proc/self/pagemap");
	if (sethostname("hearth-vmm", 10) < 0)
		err(VMM_EXIT_ERROR, "jail: sethostname");

	/* 4. The root: an empty tmpfs with the socket directories, the host's root detached. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		err(VMM_EXIT_ERROR, "jail: making the mounts private");
	if (mkdir_p(j->root, 0755) < 0)
		err(VMM_EXIT_ERROR, "jail: mkdir %s", j->root);
	if (mount("hearth-jail", j->root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "size=64k,nr_inodes=64,mode=0755") < 0)
		err(VMM_EXIT_ERROR, "jail: mounting the root tmpfs on %s", j->root);
	for (int i = 0; i < j->ndirs; i++) {
		char in[PATH_MAX];
		snprintf(in, sizeof(in), "%s%s", j->root, j->dirs[i]);
		if (mkdir_p(in, 0755) < 0 || mount(j->dirs[i], in, NULL, MS_BIND, NULL) < 0 ||
		    mount(NULL, in, NULL, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  NULL) < 0)
			err(VMM_EXIT_ERROR, "jail: binding %s", j->dirs[i]);
	}
	if (chdir(j->root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
	    umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		err(VMM_EXIT_ERROR, "jail: pivot_root into %s", j->root);
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  NULL) < 0)
		err(VMM_EXIT_ERROR, "jail: making the root read-only");

	/* 5. Limits and fds. */
	set_limit(RLIMIT_CORE, 0, "core");
	set_limit(RLIMIT_NOFILE, 1024, "nofile");
	if (j->pids_max)
		set_limit(RLIMIT_NPROC, j->pids_max, "nproc");
	if (j->mem_max)
		set_limit(RLIMIT_FSIZE, j->mem_max, "fsize");
	int keep[FREF_MAX + 5];
	int nkeep = fref_fds(keep, FREF_MAX);
	keep[nkeep++] = alive[0];
	for (int i = 0; i < j->nkeep; i++)
		keep[nkeep++] = j->keep[i];
	close_others(keep, nkeep);

	/* 6. Credentials: no groups, the VM's own uid/gid, no capability, no new privileges. */
	for (int c = 0; c <= 63; c++)
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			err(VMM_EXIT_ERROR, "jail: dropping capability %d from the bounding set", c);
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	if (setgroups(0, NULL) < 0 || setresgid(j->gid, j->gid, j->gid) < 0 ||
	    setresuid(j->uid, j->uid, j->uid) < 0)
		err(VMM_EXIT_ERROR, "jail: dropping to uid %u gid %u", (unsigned)j->uid,
		    (unsigned)j->gid);
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0 || d[0].effective || d[1].effective || d[0].permitted ||
	    d[1].permitted)
		errx(VMM_EXIT_ERROR, "jail: capabilities left after the uid change");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		err(VMM_EXIT_ERROR, "jail: no_new_privs");
	/* The credential change cleared any parent-death signal: set it now, then check. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		err(VMM_EXIT_ERROR, "jail: parent-death signal");
	struct pollfd p = { alive[0], POLLIN, 0 };
	if (poll(&p, 1, 0) != 0)
		errx(VMM_EXIT_ERROR, "jail: the supervisor is gone");
}
