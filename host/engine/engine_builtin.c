/*
 * engine_builtin.c - microVMs run by hearth-vmm (host/vmm), one process each.
 *
 * Per VM, in <run_dir>/<name>/: v.sock (hybrid vsock: the agent channel),
 * ctl.sock (hearth-vmm's control socket), console.log, pid. hearth-vmm is
 * started with posix_spawn (no fork of the multithreaded caller). Snapshots
 * are taken through the control socket while the VM keeps running; a clone
 * is a new hearth-vmm restoring that snapshot (memory mapped MAP_PRIVATE, so
 * clones share it). hearth-vmm needs nothing but /dev/kvm.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "engine_backend.h"
#include "msg.h"

extern char **environ;

struct bi_vm {
	pid_t pid;
	char sock[256], ctl[256], pidfile[256];
};

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
	e->priv = strdup(bin);
	if (!e->priv)
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	e->caps = HEARTH_ENGINE_CAP_ISOLATED | HEARTH_ENGINE_CAP_BOOTS_KERNEL |
		  HEARTH_ENGINE_CAP_PAUSE | HEARTH_ENGINE_CAP_CLONE | HEARTH_ENGINE_CAP_VSOCK;
	e->accel = "kvm";
	reap_leftovers(e);
	return 0;
}

static void bi_close(struct hearth_engine *e)
{
	free(e->priv);
	e->priv = NULL;
}

/* Spawns hearth-vmm with argv; records its pid. */
static int spawn_vmm(struct hearth_vm *vm, struct bi_vm *b, char **argv, char *err, size_t errlen)
{
	posix_spawn_file_actions_t fa;
	int rc;
	FILE *f;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, vm->console_log, O_WRONLY | O_APPEND | O_CREAT, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	rc = argv[0][0] == '/' ? posix_spawn(&b->pid, argv[0], &fa, NULL, argv, environ) :
				 posix_spawnp(&b->pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
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
	char *argv[] = { vm->engine->priv, "--kernel", (char *)spec->kernel, "--initrd",
			 (char *)spec->initrd, "--mem", mem, "--vcpus", cpus, "--cmdline", cmdline,
			 "--vsock-socket", b->sock, "--control", b->ctl, "--console", "-", NULL };
	return spawn_vmm(vm, b, argv, err, errlen);
}

static int bi_clone(struct hearth_vm *vm, const char *mem, const char *state, char *err,
		    size_t errlen)
{
	struct bi_vm *b;
	int rc = bi_prepare(vm, &b, err, errlen);

	if (rc)
		return rc;
	/*
	 * The state file is always checked in full (its SHA-256, libfdt, sizes).
	 * Hashing the whole memory file on every clone would cost more than the
	 * restore itself (~2 ms per MiB here); hearthd only clones snapshots it
	 * wrote into its own 0600 state directory and never modifies them, so the
	 * memory check is skipped here.
	 */
	char *argv[] = { vm->engine->priv, "--restore", (char *)state, "--restore-mem", (char *)mem,
			 "--no-verify-memory", "--vsock-socket", b->sock, "--control", b->ctl,
			 "--console", "-", NULL };
	return spawn_vmm(vm, b, argv, err, errlen);
}

static int bi_connect(struct hearth_vm *vm, int timeout_ms, struct agent_conn **out, char *err,
		      size_t errlen)
{
	struct bi_vm *b = vm->priv;
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	int rc;

	for (;;) {
		int st;

		rc = agent_connect_hybrid_vsock(b->sock, HEARTH_AGENT_VSOCK_PORT, 100, out);
		if (rc == 0)
			return 0;
		if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
			b->pid = 0;
			vm->state = HEARTH_VM_STOPPED;
			return hearth_engine_fail(err, errlen, EIO,
						  "%s: hearth-vmm exited (status %d) before the agent "
						  "answered; see %s", vm->name,
						  WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
						  vm->console_log);
		}
		if (deadline >= 0 && now_ms() >= deadline)
			return hearth_engine_fail(err, errlen, ETIMEDOUT,
						  "%s: the agent did not listen on vsock port %u",
						  vm->name, HEARTH_AGENT_VSOCK_PORT);
		usleep(1000);
	}
}

/* One control command, one line back ("OK ..." or "ERR why"). */
static int control(struct hearth_vm *vm, const char *cmd, char *err, size_t errlen)
{
	struct bi_vm *b = vm->priv;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char line[512];
	size_t n = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (strlen(b->ctl) >= sizeof(sa.sun_path)) {
		if (fd >= 0)
			close(fd);
		return hearth_engine_fail(err, errlen, ENAMETOOLONG, "%s: control path too long",
					  vm->name);
	}
	memcpy(sa.sun_path, b->ctl, strlen(b->ctl) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return hearth_engine_fail(err, errlen, e, "%s: control socket: %s", vm->name,
					  strerror(e));
	}
	if (write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd) || write(fd, "\n", 1) != 1) {
		close(fd);
		return hearth_engine_fail(err, errlen, EIO, "%s: control write failed", vm->name);
	}
	while (n < sizeof(line) - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, 30000) <= 0 || read(fd, line + n, 1) != 1)
			break;
		if (line[n++] == '\n')
			break;
	}
	close(fd);
	line[n] = 0;
	line[strcspn(line, "\n")] = 0;
	if (strncmp(line, "OK", 2) != 0)
		return hearth_engine_fail(err, errlen, EIO, "%s: %s: %s", vm->name, cmd,
					  n ? line : "no answer");
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

static int bi_snapshot(struct hearth_vm *vm, const char *mem, const char *state, char *err,
		       size_t errlen)
{
	char cmd[1200];

	if (strpbrk(mem, " \n") || strpbrk(state, " \n"))
		return hearth_engine_fail(err, errlen, EINVAL, "snapshot paths may not hold spaces");
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", mem, state);
	return control(vm, cmd, err, errlen);
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

static int bi_destroy(struct hearth_vm *vm, char *err, size_t errlen)
{
	struct bi_vm *b = vm->priv;

	if (!b)
		return 0;
	if (b->pid > 0) {
		kill(b->pid, SIGKILL);
		waitpid(b->pid, NULL, 0);
	}
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
};
