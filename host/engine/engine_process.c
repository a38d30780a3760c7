/*
 * engine_process.c - hearth-agent as a plain host process. DEVELOPMENT ONLY.
 *
 * There is no VM: the function image is unpacked into the VM directory and
 * its /init (hearth-agent) runs chrooted there, in fresh PID and mount
 * namespaces so that destroying the "VM" kills every process the function
 * left behind. The function shares the host kernel, and a chroot is not a
 * security boundary: it gives NO isolation. hearth_engine_open() therefore
 * refuses this engine unless cfg->allow_unisolated is set, and it warns.
 *
 * Layout of a process "VM":
 *   <dir>/root/             the unpacked image; the agent's /
 *   <dir>/root/agent.sock   the agent's Unix socket (--unix /agent.sock)
 *   <dir>/console.log       the agent's stdout and stderr
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "agent_client.h"
#include "engine_backend.h"

#define STACK_SIZE (256 * 1024)

struct pr_vm {
	pid_t pid;            /* PID 1 of the VM's PID namespace, our child */
	char *root;
	char *sock;
	int status;           /* wait status once exited */
	bool exited;
	/* Prepared before clone(): the child must not allocate. */
	char proc_dir[4096];
	char dev_dir[4096];
	char uid_map[64], gid_map[64];
	bool userns;
	int log_fd;
	int err_fd;           /* child reports a set-up failure here */
	void *stack;
};

/* Removes <run_dir>/<prefix>* left by a crashed run (its processes died with it). */
static void pr_reap_dirs(struct hearth_engine *e)
{
	char path[4096];
	struct dirent *de;
	DIR *d = opendir(e->run_dir);

	if (!d)
		return;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, e->name_prefix, strlen(e->name_prefix))) {
			snprintf(path, sizeof(path), "%s/%s", e->run_dir, de->d_name);
			hearth_engine_rmtree(path);
		}
	closedir(d);
}

static int pr_open(struct hearth_engine *e, char *err, size_t errlen)
{
	if (!e->cfg.allow_unisolated)
		return hearth_engine_fail(err, errlen, EPERM,
					  "the process engine runs functions WITHOUT isolation; "
					  "enable it explicitly (allow_unisolated) for development only");
	if (!e->cfg.quiet)
		fprintf(stderr, "hearth: WARNING: process engine: functions run as host processes "
				"with NO isolation. Use it for development and tests only.\n");
	e->caps = HEARTH_ENGINE_CAP_DEV_ONLY;
	e->accel = "none";
	pr_reap_dirs(e);
	return 0;
}

static void pr_close(struct hearth_engine *e)
{
	(void)e;
}

/* Unpacks the image cpio into root, refusing anything that could escape it. */
static int unpack(const char *image, const char *root, char *err, size_t errlen)
{
	struct archive *a = archive_read_new(), *w = archive_write_disk_new();
	struct archive_entry *ae;
	int r, rc = -EIO;

	if (!a || !w) {
		rc = hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
		goto out;
	}
	archive_read_support_format_cpio(a);
	archive_read_support_filter_none(a);
	archive_read_support_filter_gzip(a);
	archive_write_disk_set_options(w, ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
						  ARCHIVE_EXTRACT_SECURE_SYMLINKS);
	if (archive_read_open_filename(a, image, 64 * 1024) != ARCHIVE_OK) {
		rc = hearth_engine_fail(err, errlen, EINVAL, "image %s: %s", image,
					archive_error_string(a));
		goto out;
	}
	while ((r = archive_read_next_header(a, &ae)) == ARCHIVE_OK) {
		const char *name = archive_entry_pathname(ae);
		mode_t type = archive_entry_filetype(ae);
		char path[4096];

		/* Device nodes come from the host's /dev, bind-mounted at start. */
		if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
			continue;
		if (!name || name[0] == '/' || strstr(name, "..")) {
			rc = hearth_engine_fail(err, errlen, EINVAL, "image %s: bad entry name '%s'",
						image, name ? name : "");
			goto out;
		}
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, name) >= sizeof(path)) {
			rc = hearth_engine_fail(err, errlen, ENAMETOOLONG, "image entry path too long");
			goto out;
		}
		archive_entry_set_pathname(ae, path);
		if (archive_write_header(w, ae) != ARCHIVE_OK ||
		    archive_write_data_block(w, NULL, 0, 0) < ARCHIVE_WARN) {
			rc = hearth_engine_fail(err, errlen, EIO, "unpacking %s: %s", name,
						archive_error_string(w));
			goto out;
		}
		if (type == AE_IFREG) {
			const void *buf;
			size_t len;
			la_int64_t off;

			while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK)
				if (archive_write_data_block(w, buf, len, off) != ARCHIVE_OK) {
					rc = hearth_engine_fail(err, errlen, EIO, "unpacking %s: %s",
								name, archive_error_string(w));
					goto out;
				}
			if (r != ARCHIVE_EOF) {
				rc = hearth_engine_fail(err, errlen, EIO, "reading %s: %s", name,
							archive_error_string(a));
				goto out;
			}
		}
		if (archive_write_finish_entry(w) != ARCHIVE_OK) {
			rc = hearth_engine_fail(err, errlen, EIO, "unpacking %s: %s", name,
						archive_error_string(w));
			goto out;
		}
	}
	if (r != ARCHIVE_EOF) {
		rc = hearth_engine_fail(err, errlen, EINVAL, "image %s: %s", image,
					archive_error_string(a));
		goto out;
	}
	rc = 0;
out:
	if (a)
		archive_read_free(a);
	if (w)
		archive_write_free(w);
	return rc;
}

static void child_fail(struct pr_vm *p, const char *what)
{
	char msg[256];
	int n = snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));

	if (write(p->err_fd, msg, (size_t)n) < 0)
		_exit(126);
	_exit(126);
}

static void write_file(struct pr_vm *p, const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	if (fd < 0 || write(fd, text, strlen(text)) < 0)
		child_fail(p, path);
	close(fd);
}

/* PID 1 of the VM's namespace: set up the chroot, run the agent, reap. */
static int child_main(void *arg)
{
	struct pr_vm *p = arg;
	pid_t agent;
	int st;

	/* If hearthd dies, its dev "VMs" die with it instead of running on unowned.
	 * (The signal follows the creating thread: create VMs from a long-lived one.) */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		child_fail(p, "prctl(PR_SET_PDEATHSIG)");
	/*
	 * hearthd blocks SIGTERM, SIGINT and SIGHUP (for its sigwait) and ignores
	 * SIGPIPE; both would pass through exec to the agent and its handlers.
	 */
	{
		sigset_t none;
		struct sigaction dfl = { .sa_handler = SIG_DFL };

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		sigaction(SIGPIPE, &dfl, NULL);
	}
	if (p->userns) {
		write_file(p, "/proc/self/setgroups", "deny");
		write_file(p, "/proc/self/uid_map", p->uid_map);
		write_file(p, "/proc/self/gid_map", p->gid_map);
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		child_fail(p, "mount --make-rprivate /");
	if (mount("proc", p->proc_dir, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		child_fail(p, "mount proc");
	if (mount("/dev", p->dev_dir, NULL, MS_BIND | MS_REC, NULL) < 0)
		child_fail(p, "bind-mount /dev");
	if (chroot(p->root) < 0 || chdir("/") < 0)
		child_fail(p, "chroot");
	dup2(p->log_fd, 1);
	dup2(p->log_fd, 2);
	close(p->log_fd);
	/*
	 * We were cloned from a multithreaded hearthd and never exec ourselves:
	 * drop every other fd it had open (client connections, other VMs' agent
	 * sockets), or this namespace would keep them alive after hearthd closes
	 * them.
	 */
	if (p->err_fd > 3)
		close_range(3, (unsigned)p->err_fd - 1, 0);
	close_range((unsigned)p->err_fd + 1, ~0U, 0);
	/*
	 * A raw fork syscall, not glibc's fork(): that takes locks (malloc,
	 * stdio) another hearthd thread may have held at the moment of clone(),
	 * which deadlocks this child forever (and sanitizers intercept vfork).
	 * The child only execs.
	 */
	agent = (pid_t)syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, 0);
	if (agent < 0)
		child_fail(p, "fork");
	if (agent == 0) {
		char *const argv[] = {"/init", "--unix", "/agent.sock", NULL};
		char *const envp[] = {"PATH=/bin:/usr/bin", NULL};

		static const char msg[] = "exec /init failed";

		execve("/init", argv, envp);
		/* only async-signal-safe calls in this child */
		if (write(p->err_fd, msg, sizeof(msg) - 1) < 0)
			_exit(127);
		_exit(127);
	}
	close(p->err_fd);
	/* As PID 1 we inherit every orphan: reap them until the agent exits. */
	for (;;) {
		pid_t w = wait(&st);

		if (w == agent)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (w < 0 && errno != EINTR)
			return 125;
	}
}

static void pr_vm_free(struct pr_vm *p)
{
	if (!p)
		return;
	free(p->root);
	free(p->sock);
	free(p->stack);
	free(p);
}

static int pr_create(struct hearth_vm *vm, const struct hearth_vm_spec *spec, char *err,
		     size_t errlen)
{
	struct pr_vm *p = calloc(1, sizeof(*p));
	int pipefd[2] = {-1, -1}, rc, flags;
	char msg[256];
	ssize_t n;

	if (!p)
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	vm->priv = p;
	p->log_fd = -1;
	if (asprintf(&p->root, "%s/root", vm->dir) < 0 ||
	    asprintf(&p->sock, "%s/agent.sock", p->root) < 0 ||
	    asprintf(&vm->console_log, "%s/console.log", vm->dir) < 0 ||
	    !(p->stack = malloc(STACK_SIZE))) {
		rc = hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
		goto fail;
	}
	if (mkdir(p->root, 0755) < 0) {
		rc = hearth_engine_fail(err, errlen, errno, "mkdir %s: %s", p->root, strerror(errno));
		goto fail;
	}
	rc = unpack(spec->initrd, p->root, err, errlen);
	if (rc < 0)
		goto fail;
	snprintf(p->proc_dir, sizeof(p->proc_dir), "%s/proc", p->root);
	snprintf(p->dev_dir, sizeof(p->dev_dir), "%s/dev", p->root);
	mkdir(p->proc_dir, 0755);
	mkdir(p->dev_dir, 0755);
	p->userns = geteuid() != 0;
	snprintf(p->uid_map, sizeof(p->uid_map), "0 %u 1", (unsigned)geteuid());
	snprintf(p->gid_map, sizeof(p->gid_map), "0 %u 1", (unsigned)getegid());
	p->log_fd = open(vm->console_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (p->log_fd < 0 || pipe2(pipefd, O_CLOEXEC) < 0) {
		rc = hearth_engine_fail(err, errlen, errno, "console log / pipe: %s",
					strerror(errno));
		goto fail;
	}
	p->err_fd = pipefd[1];
	flags = CLONE_NEWPID | CLONE_NEWNS | SIGCHLD | (p->userns ? CLONE_NEWUSER : 0);
	p->pid = clone(child_main, (char *)p->stack + STACK_SIZE, flags, p);
	if (p->pid < 0) {
		rc = hearth_engine_fail(err, errlen, errno,
					"clone(CLONE_NEWPID|CLONE_NEWNS%s): %s",
					p->userns ? "|CLONE_NEWUSER" : "", strerror(errno));
		goto fail;
	}
	close(pipefd[1]);
	pipefd[1] = -1;
	close(p->log_fd);
	p->log_fd = -1;
	/* EOF means the child reached exec or its reaper loop; a message means it failed. */
	n = read(pipefd[0], msg, sizeof(msg) - 1);
	close(pipefd[0]);
	pipefd[0] = -1;
	if (n > 0) {
		msg[n] = '\0';
		waitpid(p->pid, NULL, 0);
		p->pid = 0;
		rc = hearth_engine_fail(err, errlen, EIO, "process engine: starting %s: %s",
					vm->name, msg);
		goto fail;
	}
	return 0;
fail:
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	if (p->log_fd >= 0)
		close(p->log_fd);
	pr_vm_free(p);
	vm->priv = NULL;
	return rc;
}

static int pr_connect(struct hearth_vm *vm, int timeout_ms, struct agent_conn **out, char *err,
		      size_t errlen)
{
	struct pr_vm *p = vm->priv;
	int rc = agent_connect_unix(p->sock, timeout_ms, out);

	if (rc < 0)
		return hearth_engine_fail(err, errlen, errno ? errno : EIO,
					  "%s: connecting to %s: %s", vm->name, p->sock,
					  agent_strerror(rc));
	return 0;
}

static int pr_stats(struct hearth_vm *vm, struct hearth_vm_stats *st, char *err, size_t errlen)
{
	struct pr_vm *p = vm->priv;
	char path[64], line[256];
	FILE *f;

	(void)err;
	(void)errlen;
	if (!p->exited && waitpid(p->pid, &p->status, WNOHANG) == p->pid)
		p->exited = true;
	if (p->exited) {
		st->state = vm->state = HEARTH_VM_STOPPED;
		return 0;
	}
	st->state = HEARTH_VM_RUNNING;
	/* The agent is the only child of our PID 1; its RSS is the VM's. */
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)p->pid, (int)p->pid);
	f = fopen(path, "re");
	if (f) {
		int agent = 0;

		if (fscanf(f, "%d", &agent) == 1 && agent > 0)
			snprintf(path, sizeof(path), "/proc/%d/status", agent);
		fclose(f);
	}
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lu", (unsigned long *)&st->rss_kb) == 1)
			break;
	fclose(f);
	st->memory_kb = st->rss_kb;
	return 0;
}

static int pr_destroy(struct hearth_vm *vm, char *err, size_t errlen)
{
	struct pr_vm *p = vm->priv;

	(void)err;
	(void)errlen;
	if (!p)
		return 0;
	/* Killing PID 1 of the namespace kills every process in it. */
	if (p->pid > 0 && !p->exited) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, &p->status, 0);
	}
	/* The proc and dev mounts lived in the child's mount namespace, gone with it. */
	pr_vm_free(p);
	vm->priv = NULL;
	return 0;
}

const struct hearth_engine_ops hearth_engine_process_ops = {
	.name = "process",
	.open = pr_open,
	.close = pr_close,
	.create = pr_create,
	.connect = pr_connect,
	.stats = pr_stats,
	.destroy = pr_destroy,
};
