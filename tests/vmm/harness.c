#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

long long now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

const char *vmm_bin(void)
{
	const char *e = getenv("HEARTH_VMM");
	return e ? e : HEARTH_VMM_BIN;
}

const char *guest_path(const char *name)
{
	static char buf[4][512];
	static int i;
	char *b = buf[i++ & 3];
	snprintf(b, 512, "%s/%s", HEARTH_GUEST_DIR, name);
	return b;
}

#define MAX_LIVE 16
static struct vmm_run *live[MAX_LIVE];
/*
 * A copy of each live run, by value: a test that fails jumps out of its frame,
 * so by teardown its struct vmm_run (often a local) is gone; the copy keeps
 * the pid and the paths the diagnosis needs.
 */
static struct vmm_run copy[MAX_LIVE];

static void sync_copy(const struct vmm_run *r)
{
	for (int i = 0; i < MAX_LIVE; i++)
		if (live[i] == r)
			copy[i] = *r;
}

/* Prints the last max bytes of a file, for a failed test's diagnosis. */
static void dump_tail(const char *what, const char *path, long max)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, size > max ? size - max : 0, SEEK_SET);
	fprintf(stderr, "---- %s (%s, last %ld of %ld bytes)\n", what, path, size > max ? max : size,
		size);
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stderr);
	fprintf(stderr, "\n---- end of %s\n", what);
	fclose(f);
}

/*
 * After a test: runs still registered here were not stopped by the test, which
 * means it failed on the way. Their console and stderr are printed before they
 * are killed, so that a failure in CI (the lab above all) can be diagnosed.
 */
int vmm_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < MAX_LIVE; i++)
		if (live[i]) {
			struct vmm_run c = copy[i];
			live[i] = NULL;
			if (c.pid > 0) {
				dump_tail("console", c.console, 3000);
				dump_tail("hearth-vmm stderr", c.errlog, 3000);
			}
			vmm_run_cleanup(&c);
		}
	return 0;
}

void vmm_run_init(struct vmm_run *r, const char *tag)
{
	memset(r, 0, sizeof(*r));
	for (int i = 0; i < MAX_LIVE; i++)
		if (!live[i]) {
			live[i] = r;
			break;
		}
	r->pid = -1;
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(r->dir, sizeof(r->dir), "%s/hvt-%s-XXXXXX", tmp, tag);
	if (!mkdtemp(r->dir)) {
		perror("mkdtemp");
		abort();
	}
	snprintf(r->console, sizeof(r->console), "%s/console", r->dir);
	snprintf(r->errlog, sizeof(r->errlog), "%s/stderr", r->dir);
	sync_copy(r);
}

int vmm_spawn(struct vmm_run *r, const char *const *argv)
{
	const char *av[64];
	int n = 0;
	av[n++] = vmm_bin();
	av[n++] = "--console";
	av[n++] = r->console;
	for (int i = 0; argv && argv[i] && n < 62; i++)
		av[n++] = argv[i];
	av[n] = NULL;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/*
		 * stdout too: a VMM left behind must not hold the test's stdout,
		 * which is ctest's pipe (ctest then waits for it to close, far
		 * past the test's end, and prints nothing). And it dies with the
		 * test process.
		 */
		int fd = open(r->errlog, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(av[0], (char *const *)av);
		_exit(127);
	}
	r->pid = pid;
	sync_copy(r);
	return 0;
}

int vmm_wait(struct vmm_run *r, int timeout_ms)
{
	long long deadline = now_us() + (long long)timeout_ms * 1000;
	for (;;) {
		int st;
		pid_t p = waitpid(r->pid, &st, WNOHANG);
		if (p == r->pid) {
			r->pid = -1;
			r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			sync_copy(r);
			return r->status;
		}
		if (now_us() > deadline) {
			kill(r->pid, SIGKILL);
			waitpid(r->pid, &st, 0);
			r->pid = -1;
			sync_copy(r);
			fprintf(stderr, "hearth-vmm timed out after %d ms (killed)\n", timeout_ms);
			r->status = -1;
			return -1;
		}
		usleep(1000);
	}
}

bool vmm_exited(struct vmm_run *r)
{
	int st;
	if (r->pid < 0)
		return true;
	if (waitpid(r->pid, &st, WNOHANG) != r->pid)
		return false;
	r->pid = -1;
	r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	sync_copy(r);
	return true;
}

int vmm_run_sync(struct vmm_run *r, const char *const *argv, int timeout_ms)
{
	if (vmm_spawn(r, argv) < 0)
		return -2;
	return vmm_wait(r, timeout_ms);
}

char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 4096, n = 0;
	char *b = malloc(cap + 1);
	if (f) {
		size_t k;
		while ((k = fread(b + n, 1, cap - n, f)) > 0) {
			n += k;
			if (n == cap) {
				cap *= 2;
				b = realloc(b, cap + 1);
			}
		}
		fclose(f);
	}
	b[n] = 0;
	if (len)
		*len = n;
	return b;
}

bool wait_for_text(const char *path, const char *needle, int timeout_ms)
{
	long long deadline = now_us() + (long long)timeout_ms * 1000;
	do {
		char *s = slurp(path, NULL);
		bool found = strstr(s, needle) != NULL;
		free(s);
		if (found)
			return true;
		usleep(2000);
	} while (now_us() < deadline);
	return false;
}

void vmm_run_cleanup(struct vmm_run *r)
{
	for (int i = 0; i < MAX_LIVE; i++)
		if (live[i] == r)
			live[i] = NULL;
	if (!r->dir[0])
		return;
	if (r->pid > 0) {
		kill(r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
		r->pid = -1;
	}
	if (getenv("HEARTH_KEEP_TMP")) {
		fprintf(stderr, "kept %s\n", r->dir);
		return;
	}
	DIR *d = opendir(r->dir);
	if (d) {
		struct dirent *e;
		char p[600];
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			snprintf(p, sizeof(p), "%s/%s", r->dir, e->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(r->dir);
	r->dir[0] = 0;
}

const char *vmm_ctl(const char *path, const char *cmd)
{
	static char reply[1100];
	int fd = -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return NULL;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	for (int i = 0; i < 2000; i++) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(fd);
		fd = -1;
		usleep(5000);
	}
	if (fd < 0)
		return NULL;
	/* A hearth-vmm that accepts but never answers fails the test, not hangs it. */
	struct timeval tv = { .tv_sec = 60 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char line[1024];
	int n = snprintf(line, sizeof(line), "%s\n", cmd);
	if (write(fd, line, (size_t)n) != n) {
		close(fd);
		return NULL;
	}
	size_t got = 0;
	while (got < sizeof(reply) - 1) {
		ssize_t k = read(fd, reply + got, 1);
		if (k < 0) {
			fprintf(stderr, "vmm_ctl: no answer to '%s' on %s: %s\n", cmd, path,
				strerror(errno));
			close(fd);
			return NULL;
		}
		if (k == 0 || reply[got] == '\n')
			break;
		got++;
	}
	reply[got] = 0;
	close(fd);
	return reply;
}
