/*
 * exec.c - handler processes for hearth-agent; see exec.h.
 */
#include "exec.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int64_t run_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

int run_drop_to(uid_t uid, gid_t gid)
{
	if (uid == 0)
		return 0;
	if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
		return -1;
	return 0;
}

/* Runs in the child between fork and exec: only async-signal-safe calls. */
static void child(const struct run_spec *s, int in, int out, int err, int errpipe)
{
	sigset_t all;
	int e;

	setpgid(0, 0);
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		goto fail;
	if (run_drop_to(s->uid, s->gid) < 0)
		goto fail;
	if (s->workdir && s->workdir[0] && chdir(s->workdir) < 0)
		goto fail;
	execve(s->path, s->argv, s->envp);
fail:
	e = errno;
	if (write(errpipe, &e, sizeof(e)) < 0) {
		/* nothing more we can do */
	}
	_exit(127);
}

int run_start(struct run *r, const struct run_spec *s)
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, ep[2] = { -1, -1 };
	int rc = 0, e = 0;
	ssize_t n;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	r->fd_in = r->fd_out = r->fd_err = -1;
	r->pid = -1;
	r->payload = s->payload;
	r->payload_len = s->payload_len;
	r->max_out = s->max_out;
	r->max_log = s->max_log;
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) ||
	    pipe2(ep, O_CLOEXEC)) {
		rc = -errno;
		goto fail;
	}
	r->start_us = run_now_us();
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		goto fail;
	}
	if (pid == 0)
		child(s, in[0], out[1], err[1], ep[1]);
	setpgid(pid, pid); /* also in the child: whichever runs first wins the race */
	r->pid = pid;
	close(in[0]);
	close(out[1]);
	close(err[1]);
	close(ep[1]);
	/* exec closes ep[0]'s peer (CLOEXEC); a failed exec writes its errno first. */
	do
		n = read(ep[0], &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	close(ep[0]);
	r->fd_in = in[1];
	r->fd_out = out[0];
	r->fd_err = err[0];
	fcntl(r->fd_in, F_SETFL, O_NONBLOCK);
	fcntl(r->fd_out, F_SETFL, O_NONBLOCK);
	fcntl(r->fd_err, F_SETFL, O_NONBLOCK);
	if (n == (ssize_t)sizeof(e)) {
		r->spawn_errno = e;
		close_fd(&r->fd_in);
	} else if (r->payload_len == 0) {
		close_fd(&r->fd_in);
	}
	r->deadline_us = s->timeout_ms ? r->start_us + (int64_t)s->timeout_ms * 1000 : -1;
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0) close(in[i]);
		if (out[i] >= 0) close(out[i]);
		if (err[i] >= 0) close(err[i]);
		if (ep[i] >= 0) close(ep[i]);
	}
	return rc;
}

int run_pollfds(const struct run *r, struct pollfd *p)
{
	int n = 0;

	if (r->fd_in >= 0)
		p[n++] = (struct pollfd){ .fd = r->fd_in, .events = POLLOUT };
	if (r->fd_out >= 0)
		p[n++] = (struct pollfd){ .fd = r->fd_out, .events = POLLIN };
	if (r->fd_err >= 0)
		p[n++] = (struct pollfd){ .fd = r->fd_err, .events = POLLIN };
	return n;
}

static void kill_group(struct run *r)
{
	if (r->pid > 0)
		kill(-r->pid, SIGKILL);
}

/* Appends up to cap bytes; returns false when data beyond cap arrived. */
static bool append(uint8_t **buf, size_t *len, size_t cap, const uint8_t *data, size_t n)
{
	size_t take = n;

	if (*len + take > cap)
		take = cap - *len;
	if (take) {
		uint8_t *nb = realloc(*buf, *len + take);

		if (!nb)
			return false;
		memcpy(nb + *len, data, take);
		*buf = nb;
		*len += take;
	}
	return take == n;
}

/* Reads what is available from fd; returns false at EOF or error. */
static bool drain_one(struct run *r, int fd)
{
	uint8_t buf[65536];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK;
		if (n == 0)
			return false;
		if (fd == r->fd_out) {
			if (!append(&r->out, &r->out_len, r->max_out, buf, (size_t)n) &&
			    !r->too_large) {
				/* The response is already too big to return: stop the handler now. */
				r->too_large = true;
				kill_group(r);
				return false;
			}
		} else if (!append(&r->log, &r->log_len, r->max_log, buf, (size_t)n)) {
			r->log_truncated = true; /* keep draining so the handler never blocks */
		}
	}
}

static void feed_stdin(struct run *r)
{
	while (r->payload_off < r->payload_len) {
		ssize_t n = write(r->fd_in, r->payload + r->payload_off,
				  r->payload_len - r->payload_off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) /* EPIPE: the handler does not read its event; that is its choice */
			break;
		r->payload_off += (size_t)n;
	}
	close_fd(&r->fd_in);
}

static void maybe_done(struct run *r)
{
	if (r->exited && r->fd_out < 0 && r->fd_err < 0 && !r->done) {
		close_fd(&r->fd_in);
		r->done = true;
	}
}

void run_handle(struct run *r, const struct pollfd *p, int n)
{
	for (int i = 0; i < n; i++) {
		if (!p[i].revents)
			continue;
		if (p[i].fd == r->fd_in && r->fd_in >= 0) {
			if (p[i].revents & (POLLERR | POLLHUP))
				close_fd(&r->fd_in);
			else
				feed_stdin(r);
		} else if (p[i].fd == r->fd_out && r->fd_out >= 0) {
			if (!drain_one(r, r->fd_out))
				close_fd(&r->fd_out);
		} else if (p[i].fd == r->fd_err && r->fd_err >= 0) {
			if (!drain_one(r, r->fd_err))
				close_fd(&r->fd_err);
		}
	}
	maybe_done(r);
}

void run_on_exit(struct run *r, int wstatus, const struct rusage *ru)
{
	r->exited = true;
	r->wstatus = wstatus;
	r->ru = *ru;
	r->end_us = run_now_us();
	/*
	 * The handler is gone. Whatever it left running in its group dies with it
	 * (as when a Lambda invocation ends), so nothing can hold its pipes open.
	 * What it wrote before exiting is already in the pipes: drain it, and stop
	 * at EAGAIN rather than wait for a writer that escaped the group.
	 */
	kill(-r->pid, SIGKILL);
	if (r->fd_out >= 0) {
		drain_one(r, r->fd_out);
		close_fd(&r->fd_out);
	}
	if (r->fd_err >= 0) {
		drain_one(r, r->fd_err);
		close_fd(&r->fd_err);
	}
	maybe_done(r);
}

int run_check_deadline(struct run *r)
{
	int64_t left;

	if (r->deadline_us < 0 || r->exited)
		return -1;
	left = r->deadline_us - run_now_us();
	if (left > 0) /* round up: never wake (and kill) before the deadline */
		return left > 1000000000 ? 1000000 : (int)((left + 999) / 1000);
	if (!r->timed_out) {
		r->timed_out = true;
		kill_group(r);
	}
	return 50; /* SIGKILL is on its way; check back soon */
}

void run_abort(struct run *r)
{
	kill_group(r);
}

enum run_outcome run_outcome(const struct run *r, int *code)
{
	*code = 0;
	if (r->spawn_errno) {
		*code = r->spawn_errno;
		return RUN_SPAWN_FAILED;
	}
	if (r->timed_out)
		return RUN_TIMEOUT;
	if (r->too_large)
		return RUN_TOO_LARGE;
	if (WIFSIGNALED(r->wstatus)) {
		*code = WTERMSIG(r->wstatus);
		return RUN_SIGNALED;
	}
	*code = WEXITSTATUS(r->wstatus);
	return RUN_EXITED;
}

uint64_t run_duration_us(const struct run *r)
{
	return (uint64_t)(r->end_us - r->start_us);
}

void run_free(struct run *r)
{
	close_fd(&r->fd_in);
	close_fd(&r->fd_out);
	close_fd(&r->fd_err);
	free(r->out);
	free(r->log);
	r->out = r->log = NULL;
}

/*
 * Fast path: /proc/self/task/<tid>/children (CONFIG_PROC_CHILDREN) lists our
 * direct children. The agent is single-threaded, so the main task's list is
 * complete. Returns false when the file is unavailable.
 */
static bool sweep_children_file(void)
{
	char path[64], buf[4096];
	size_t len;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/children", getpid());
	f = fopen(path, "re");
	if (!f)
		return false;
	len = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[len] = 0;
	for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
		pid_t pid = (pid_t)atoi(tok);

		if (pid > 0)
			kill(pid, SIGKILL);
	}
	/* A full page may have been cut short: fall back to the slow scan then. */
	return len < sizeof(buf) - 1;
}

void run_sweep_orphans(void)
{
	pid_t self = getpid();

	if (sweep_children_file())
		return;

	DIR *d = opendir("/proc");
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[300], buf[512], *p;
		long ppid;
		pid_t pid = (pid_t)atoi(de->d_name);
		FILE *f;

		if (pid <= 0 || pid == self)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		f = fopen(path, "re");
		if (!f)
			continue;
		p = fgets(buf, sizeof(buf), f);
		fclose(f);
		/* The comm field may contain spaces and ')': parse after the last ')'. */
		if (!p || !(p = strrchr(buf, ')')))
			continue;
		if (sscanf(p + 1, " %*c %ld", &ppid) == 1 && ppid == self)
			kill(pid, SIGKILL);
	}
	closedir(d);
}
