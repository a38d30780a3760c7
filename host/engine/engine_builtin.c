/*
 * engine_builtin.c - microVMs run by hearth-vmm (host/vmm), one process each.
 *
 * Per VM, in <run_dir>/<name>/: v.sock (hybrid vsock: the agent channel),
 * ctl.sock (hearth-vmm's control socket), console.log, pid. hearth-vmm is
 * started with posix_spawn (no fork of the multithreaded caller). Snapshots
 * are taken through the control socket while the VM keeps running; a clone
 * is a hearth-vmm restoring that snapshot (memory mapped MAP_PRIVATE, so
 * clones share it): a pre-started one of the snapshot's shape when the pool
 * (vmm_pool.h) has one ready, else a newly spawned one. hearth-vmm needs
 * nothing but /dev/kvm.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "engine_backend.h"
#include "msg.h"
#include "vmm_pool.h"

extern char **environ;

/* hearth-vmm's exit codes that say why a VM ended (host/vmm/vm.h). */
enum { VMM_EXIT_GUEST_CRASH = 3, VMM_EXIT_CGROUP_OOM = 5 };

struct bi_vm {
	pid_t pid;
	uint32_t uid; /* its hearth-vmm's jail uid (0: not jailed) */
	char sock[300], ctl[300], pidfile[256];
	char pooldir[256]; /* a pooled process's own directory (removed at destroy), or "" */
};

struct bi_engine {
	char *bin;
	struct vmm_pool *pool;
	struct vmm_jail jail;
};

static struct vmm_jail *jail_of(const struct hearth_vm *vm)
{
	return &((struct bi_engine *)vm->engine->priv)->jail;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Kills hearth-vmm processes a crashed run left in run_dir (their pid files). */
static void reap_leftovers(struct hearth_engine *e)
{
	DIR *d = opendir(e->run_dir);
	struct dirent *de;
	size_t plen = strlen(e->name_prefix);

	while (d && (de = readdir(d))) {
		char path[600], buf[32], exe[600], link[600];
		FILE *f;
		int pid = 0;
		ssize_t n;

		if (strncmp(de->d_name, e->name_prefix, plen) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s/pid", e->run_dir, de->d_name);
		f = fopen(path, "re");
		if (f && fgets(buf, sizeof(buf), f))
			pid = atoi(buf);
		if (f)
			fclose(f);
		/* Only kill it if that pid still is a hearth-vmm (pids get reused). */
		snprintf(exe, sizeof(exe), "/proc/%d/exe", pid);
		n = pid > 0 ? readlink(exe, link, sizeof(link) - 1) : -1;
		if (n > 0) {
			link[n] = 0;
			if (strstr(link, "hearth-vmm"))
				kill(pid, SIGKILL);
		}
		snprintf(path, sizeof(path), "%s/%s", e->run_dir, de->d_name);
		hearth_engine_rmtree(path);
	}
	if (d)
		closedir(d);
}

static int bi_open(struct hearth_engine *e, char *err, size_t errlen)
{
	const char *bin = e->cfg.vmm_bin ? e->cfg.vmm_bin : "hearth-vmm";

	if (access("/dev/kvm", R_OK | W_OK) < 0)
		return hearth_engine_fail(err, errlen, errno, "builtin engine: /dev/kvm: %s",
					  strerror(errno));
	if (strchr(bin, '/') && access(bin, X_OK) < 0)
		return hearth_engine_fail(err, errlen, errno, "builtin engine: %s: %s", bin,
					  strerror(errno));
	if (e->cfg.jail && geteuid() != 0)
		return hearth_engine_fail(err, errlen, EPERM, "builtin engine: jailing hearth-vmm "
					  "needs root (or turn the jail off)");
	struct bi_engine *be = calloc(1, sizeof(*be));

	if (be && e->cfg.jail) {
		struct stat st;

		be->jail.on = true;
		be->jail.uid_base = e->cfg.jail_uid_base ? e->cfg.jail_uid_base : HEARTH_JAIL_UID_BASE;
		be->jail.no_cgroup = stat("/sys/fs/cgroup/cgroup.controllers", &st) < 0 &&
				     stat("/sys/fs/cgroup/memory/memory.limit_in_bytes", &st) < 0;
		if (be->jail.no_cgroup)
			fprintf(stderr, "hearthd: builtin engine: no cgroup v2 and no cgroup v1 "
					"memory controller mounted: VMs are jailed without memory, "
					"CPU or pids limits\n");
	}
	if (!be || !(be->bin = strdup(bin))) {
		free(be);
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	}
	e->priv = be;
	e->caps = HEARTH_ENGINE_CAP_ISOLATED | HEARTH_ENGINE_CAP_BOOTS_KERNEL |
		  HEARTH_ENGINE_CAP_PAUSE | HEARTH_ENGINE_CAP_CLONE | HEARTH_ENGINE_CAP_VSOCK;
	e->accel = "kvm";
	reap_leftovers(e);
	int rc = vmm_pool_open(&be->pool, be->bin, e->run_dir, e->name_prefix, &be->jail);
	if (rc) {
		free(be->bin);
		free(be);
		e->priv = NULL;
		return hearth_engine_fail(err, errlen, -rc, "builtin engine: VMM pool: %s",
					  strerror(-rc));
	}
	return 0;
}

static void bi_close(struct hearth_engine *e)
{
	struct bi_engine *be = e->priv;

	if (!be)
		return;
	vmm_pool_close(be->pool);
	free(be->bin);
	free(be);
	e->priv = NULL;
}

static const char *vmm_bin_of(const struct hearth_vm *vm)
{
	return ((struct bi_engine *)vm->engine->priv)->bin;
}

static int bi_pool_set(struct hearth_engine *e, const struct hearth_pool_shape *shapes, int n)
{
	vmm_pool_set(((struct bi_engine *)e->priv)->pool, shapes, n);
	return 0;
}

static int bi_pool_stats(struct hearth_engine *e, struct hearth_pool_stats *st)
{
	vmm_pool_stats(((struct bi_engine *)e->priv)->pool, st);
	return 0;
}

/* Spawns hearth-vmm with argv; records its pid. */
static int spawn_vmm(struct hearth_vm *vm, struct bi_vm *b, char **argv, char *err, size_t errlen)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t sa;
	int rc, n = 0;
	FILE *f;
	char uidbuf[16];

	/* argv has room for the jail's options after its NULL (see the callers). */
	while (argv[n])
		n++;
	b->uid = vmm_jail_uid_get(jail_of(vm));
	if (jail_of(vm)->on && !b->uid)
		return hearth_engine_fail(err, errlen, EAGAIN, "no free jail uid");
	vmm_jail_argv(jail_of(vm), b->uid, argv, &n, uidbuf);

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, vm->console_log, O_WRONLY | O_APPEND | O_CREAT, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	hearth_spawnattr_clean(&sa);
	rc = argv[0][0] == '/' ? posix_spawn(&b->pid, argv[0], &fa, &sa, argv, environ) :
				 posix_spawnp(&b->pid, argv[0], &fa, &sa, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&sa);
	if (rc)
		return hearth_engine_fail(err, errlen, rc, "spawning %s: %s", argv[0], strerror(rc));
	f = fopen(b->pidfile, "we");
	if (f) {
		fprintf(f, "%d\n", (int)b->pid);
		fclose(f);
	}
	return 0;
}

static int bi_prepare(struct hearth_vm *vm, struct bi_vm **out, char *err, size_t errlen)
{
	struct bi_vm *b = calloc(1, sizeof(*b));

	if (!b)
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	snprintf(b->sock, sizeof(b->sock), "%s/v.sock", vm->dir);
	snprintf(b->ctl, sizeof(b->ctl), "%s/ctl.sock", vm->dir);
	snprintf(b->pidfile, sizeof(b->pidfile), "%s/pid", vm->dir);
	if (asprintf(&vm->console_log, "%s/console.log", vm->dir) < 0) {
		free(b);
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	}
	vm->priv = b;
	*out = b;
	return 0;
}

static int bi_create(struct hearth_vm *vm, const struct hearth_vm_spec *spec, char *err,
		     size_t errlen)
{
	char mem[16], cpus[16], cmdline[1024];
	struct bi_vm *b;
	int rc = bi_prepare(vm, &b, err, errlen);

	if (rc)
		return rc;
	snprintf(mem, sizeof(mem), "%u", spec->memory_mb ? spec->memory_mb : 128);
	snprintf(cpus, sizeof(cpus), "%u", spec->vcpus ? spec->vcpus : 1);
	snprintf(cmdline, sizeof(cmdline), "console=ttyS0 quiet panic=-1%s%s",
		 spec->cmdline_extra ? " " : "", spec->cmdline_extra ? spec->cmdline_extra : "");
	char *argv[] = { (char *)vmm_bin_of(vm), "--kernel", (char *)spec->kernel, "--initrd",
			 (char *)spec->initrd, "--mem", mem, "--vcpus", cpus, "--cmdline", cmdline,
			 "--vsock-socket", b->sock, "--control", b->ctl, "--console", "-", NULL,
			 NULL, NULL, NULL, NULL };
	return spawn_vmm(vm, b, argv, err, errlen);
}

static int bi_clone(struct hearth_vm *vm, const char *mem, const char *state,
		    const struct hearth_vm_spec *shape, char *err, size_t errlen)
{
	struct bi_vm *b;
	int rc = bi_prepare(vm, &b, err, errlen);

	if (rc)
		return rc;
	if (shape) {
		struct vmm_pool_proc pp;
		char why[300];

		/* The restore command checks the state file in full, as below. */
		rc = vmm_pool_take(((struct bi_engine *)vm->engine->priv)->pool,
				   shape->memory_mb ? shape->memory_mb : 128,
				   shape->vcpus ? shape->vcpus : 1, state, mem, vm->console_log,
				   shape->prefetch, &pp, why, sizeof(why));
		if (rc == 0) {
			FILE *f = fopen(b->pidfile, "we");

			b->pid = pp.pid;
			b->uid = pp.uid;
			snprintf(b->ctl, sizeof(b->ctl), "%s", pp.ctl);
			snprintf(b->sock, sizeof(b->sock), "%s", pp.sock);
			snprintf(b->pooldir, sizeof(b->pooldir), "%s", pp.dir);
			if (f) {
				fprintf(f, "%d\n", (int)b->pid);
				fclose(f);
			}
			return 0;
		}
		if (rc < 0) /* that process is gone; a spawned one takes over */
			fprintf(stderr, "hearthd: builtin engine: %s; spawning instead\n", why);
	}
	/*
	 * The state file is always checked in full (its SHA-256, libfdt, sizes).
	 * Hashing the whole memory file on every clone would cost more than the
	 * restore itself (~2 ms per MiB here); hearthd only clones snapshots it
	 * wrote into its own 0600 state directory and never modifies them, so the
	 * memory check is skipped here.
	 */
	char *argv[] = { (char *)vmm_bin_of(vm), "--restore", (char *)state, "--restore-mem",
			 (char *)mem, "--no-verify-memory", "--vsock-socket", b->sock, "--control",
			 b->ctl, "--console", "-", NULL, NULL, NULL, NULL, NULL, NULL, NULL };
	if (shape && shape->prefetch) {
		argv[12] = "--prefetch";
		argv[13] = (char *)shape->prefetch;
	}
	return spawn_vmm(vm, b, argv, err, errlen);
}

/* The end of the VM's console on one line, printable characters only (for an error). */
static void console_tail(const char *path, char *out, size_t n)
{
	char buf[160];
	ssize_t got = -1;
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	size_t k = 0;

	if (fd >= 0) {
		off_t end = lseek(fd, 0, SEEK_END);

		got = pread(fd, buf, sizeof(buf) - 1, end > (off_t)sizeof(buf) - 1 ?
						       end - (off_t)sizeof(buf) + 1 : 0);
		close(fd);
	}
	for (ssize_t i = 0; i < got && k + 1 < n; i++)
		out[k++] = buf[i] >= 0x20 && buf[i] < 0x7f ? buf[i] : ' ';
	out[k] = 0;
	if (!k)
		snprintf(out, n, "(nothing)");
}

static int bi_connect(struct hearth_vm *vm, int timeout_ms, struct agent_conn **out, char *err,
		      size_t errlen)
{
	struct bi_vm *b = vm->priv;
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	int rc;

	for (;;) {
		int st;
		/*
		 * An attempt may wait up to a second (no longer, so that a
		 * hearth-vmm that exited is noticed): hearth-vmm answers a request
		 * as soon as the guest accepts or refuses it, and holds it while a
		 * restored guest handles its transport reset.
		 */
		int64_t left = deadline < 0 ? 1000 : deadline - now_ms();

		rc = agent_connect_hybrid_vsock(b->sock, HEARTH_AGENT_VSOCK_PORT,
						left > 1000 ? 1000 : left > 1 ? (int)left : 1, out);
		if (rc == 0)
			return 0;
		if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
			char kept[4400];

			b->pid = 0;
			vm->state = HEARTH_VM_STOPPED;
			hearth_vm_keep_console(vm, kept, sizeof(kept));
			return hearth_engine_fail(err, errlen, EIO,
						  "%s: hearth-vmm exited (status %d%s) before the agent "
						  "answered; its console is kept in %s", vm->name,
						  WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
						  WIFEXITED(st) && WEXITSTATUS(st) == VMM_EXIT_CGROUP_OOM ?
							  ": killed by its cgroup's memory limit" : "",
						  kept);
		}
		if (deadline >= 0 && now_ms() >= deadline) {
			char tail[160], kept[4400];

			console_tail(vm->console_log, tail, sizeof(tail));
			hearth_vm_keep_console(vm, kept, sizeof(kept));
			return hearth_engine_fail(err, errlen, ETIMEDOUT,
						  "%s: the agent did not listen on vsock port %u; the "
						  "console (kept in %s) ends: %s", vm->name,
						  HEARTH_AGENT_VSOCK_PORT, kept, tail);
		}
		usleep(1000);
	}
}

/* One control command, one line back ("OK ..." or "ERR why"); 30 s at most. */
static int control(struct hearth_vm *vm, const char *cmd, char *err, size_t errlen)
{
	struct bi_vm *b = vm->priv;
	char line[512];

	if (vmm_ctl_cmd(b->ctl, cmd, 30000, line, sizeof(line)) < 0 || strncmp(line, "OK", 2) != 0)
		return hearth_engine_fail(err, errlen, EIO, "%s: %s: %s", vm->name, cmd, line);
	return 0;
}

static int bi_pause(struct hearth_vm *vm, char *err, size_t errlen)
{
	return control(vm, "pause", err, errlen);
}

static int bi_resume(struct hearth_vm *vm, char *err, size_t errlen)
{
	return control(vm, "resume", err, errlen);
}

/*
 * A control command that writes files (snapshot, workset): hearthd creates
 * each under a temporary name (0600) and passes it open; hearth-vmm, jailed or
 * not, writes into it; on OK the files are renamed into place, else removed.
 */
static int control_writing(struct hearth_vm *vm, const char *verb, const char **paths, int n,
			   char *err, size_t errlen)
{
	static unsigned seq;
	struct bi_vm *b = vm->priv;
	char tmp[2][600], cmd[64], line[512];
	int fds[2], rc = 0, k = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);

	for (int i = 0; i < n; i++) {
		snprintf(tmp[i], sizeof(tmp[i]), "%s.tmp.%d.%d", paths[i], (int)getpid(), k);
		fds[i] = open(tmp[i], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fds[i] < 0) {
			rc = hearth_engine_fail(err, errlen, errno, "%s: %s: %s", vm->name, tmp[i],
						strerror(errno));
			for (int j = 0; j < i; j++) {
				close(fds[j]);
				unlink(tmp[j]);
			}
			return rc;
		}
	}
	snprintf(cmd, sizeof(cmd), n == 2 ? "%s @0 @1" : "%s @0", verb);
	if (vmm_ctl_cmd_fds(b->ctl, cmd, fds, n, 30000, line, sizeof(line)) < 0 ||
	    strncmp(line, "OK", 2) != 0)
		rc = hearth_engine_fail(err, errlen, EIO, "%s: %s: %s", vm->name, verb, line);
	for (int i = 0; i < n; i++) {
		close(fds[i]);
		if (rc == 0 && rename(tmp[i], paths[i]) < 0)
			rc = hearth_engine_fail(err, errlen, errno, "%s: saving %s: %s", vm->name,
						paths[i], strerror(errno));
	}
	for (int i = 0; rc && i < n; i++)
		unlink(tmp[i]);
	return rc;
}

static int bi_snapshot(struct hearth_vm *vm, const char *mem, const char *state, char *err,
		       size_t errlen)
{
	const char *paths[2] = { mem, state };

	return control_writing(vm, "snapshot", paths, 2, err, errlen);
}

static int bi_workset(struct hearth_vm *vm, const char *path, char *err, size_t errlen)
{
	return control_writing(vm, "workset", &path, 1, err, errlen);
}

static int bi_stats(struct hearth_vm *vm, struct hearth_vm_stats *st, char *err, size_t errlen)
{
	struct bi_vm *b = vm->priv;
	char path[64], line[256];
	FILE *f;

	st->state = b->pid > 0 && kill(b->pid, 0) == 0 ? vm->state : HEARTH_VM_STOPPED;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)b->pid);
	f = b->pid > 0 ? fopen(path, "re") : NULL;
	while (f && fgets(line, sizeof(line), f))
		sscanf(line, "VmRSS: %lu", (unsigned long *)&st->rss_kb);
	if (f)
		fclose(f);
	return 0;
}

static enum hearth_vm_end bi_exit_reason(struct hearth_vm *vm, int wait_ms, char *buf, size_t len)
{
	struct bi_vm *b = vm->priv;
	int64_t deadline = now_ms() + wait_ms;
	int st;

	if (!b || b->pid <= 0)
		return HEARTH_VM_LIVES;
	for (;;) {
		if (waitpid(b->pid, &st, WNOHANG) == b->pid)
			break;
		if (now_ms() >= deadline)
			return HEARTH_VM_LIVES;
		usleep(5000);
	}
	b->pid = 0;
	vm->state = HEARTH_VM_STOPPED;
	if (WIFEXITED(st) && WEXITSTATUS(st) == VMM_EXIT_CGROUP_OOM) {
		snprintf(buf, len, "the VM was killed by its cgroup: it reached its memory limit "
				   "(guest RAM plus VMM overhead)");
		return HEARTH_VM_OUT_OF_MEMORY;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == VMM_EXIT_GUEST_CRASH)
		snprintf(buf, len, "the guest crashed (triple fault or an instruction KVM could "
				   "not emulate)");
	else if (WIFEXITED(st))
		snprintf(buf, len, "hearth-vmm exited with status %d", WEXITSTATUS(st));
	else
		snprintf(buf, len, "hearth-vmm was killed by signal %d", WTERMSIG(st));
	return HEARTH_VM_ENDED;
}

static int bi_destroy(struct hearth_vm *vm, char *err, size_t errlen)
{
	struct bi_vm *b = vm->priv;

	if (!b)
		return 0;
	if (b->pid > 0) {
		kill(b->pid, SIGKILL);
		waitpid(b->pid, NULL, 0);
	}
	if (b->pooldir[0])
		hearth_engine_rmtree(b->pooldir);
	vmm_jail_uid_put(jail_of(vm), b->uid);
	free(b);
	vm->priv = NULL;
	return 0;
}

const struct hearth_engine_ops hearth_engine_builtin_ops = {
	.name = "builtin",
	.open = bi_open,
	.close = bi_close,
	.create = bi_create,
	.connect = bi_connect,
	.pause = bi_pause,
	.resume = bi_resume,
	.snapshot = bi_snapshot,
	.clone = bi_clone,
	.stats = bi_stats,
	.destroy = bi_destroy,
	.workset = bi_workset,
	.exit_reason = bi_exit_reason,
	.pool_set = bi_pool_set,
	.pool_stats = bi_pool_stats,
};
