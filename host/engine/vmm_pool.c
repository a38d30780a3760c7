/* vmm_pool.c - pre-started hearth-vmm processes (see vmm_pool.h). */
#include "vmm_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine_backend.h"
#include "jail_uid.h"

extern char **environ;

#define MAX_SHAPES 16
#define TICK_MS 100
#define READY_TIMEOUT_MS 10000 /* a process not pooled-and-answering by then is replaced */
#define CHECK_EVERY_MS 5000    /* idle processes are asked for their status this often */
#define STATUS_TIMEOUT_MS 500
#define RESTORE_TIMEOUT_MS 5000

struct proc {
	struct proc *next;
	pid_t pid;
	uint32_t mem_mb, vcpus;
	bool ready;
	bool busy; /* the pool thread is talking to it: not to be taken */
	int64_t started_ms, checked_ms;
	uint32_t uid; /* jail uid, 0 = none */
	char dir[256], ctl[300], sock[300];
};

struct vmm_pool {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t thread;
	bool stop;
	char *bin, *run_dir, *prefix;
	struct vmm_jail jail;
	struct hearth_pool_shape shapes[MAX_SHAPES];
	int nshapes;
	struct proc *procs;
	unsigned seq;
	uint64_t hits, misses, started, discarded;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The allocator itself is shared with the libvirt engine (jail_uid.h). */
uint32_t vmm_jail_uid_get(const struct vmm_jail *j)
{
	return j->on ? jail_uid_get(j->uid_base) : 0;
}

void vmm_jail_uid_put(const struct vmm_jail *j, uint32_t uid)
{
	if (j->on)
		jail_uid_put(j->uid_base, uid);
}

void vmm_jail_argv(const struct vmm_jail *j, uint32_t uid, char **argv, int *i, char buf[16])
{
	if (!j->on || !uid)
		return;
	snprintf(buf, 16, "%u", uid);
	argv[(*i)++] = "--jail-uid";
	argv[(*i)++] = buf;
	if (j->no_cgroup)
		argv[(*i)++] = "--jail-no-cgroup";
	argv[*i] = NULL;
}

int vmm_ctl_cmd(const char *path, const char *cmd, int timeout_ms, char *reply, size_t len)
{
	return vmm_ctl_cmd_fds(path, cmd, NULL, 0, timeout_ms, reply, len);
}

int vmm_ctl_cmd_fds(const char *path, const char *cmd, const int *fds, int nfds, int timeout_ms,
		    char *reply, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t n = 0;
	int64_t deadline = now_ms() + timeout_ms;

	reply[0] = 0;
	if (fd < 0 || strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(reply, len, "control socket %s: %s", path,
			 fd < 0 ? strerror(errno) : "path too long");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(reply, len, "control socket %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	/* The line and its files in one message: the files arrive with its first byte. */
	char line[2100];
	int ll = snprintf(line, sizeof(line), "%s\n", cmd);
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(8 * sizeof(int))];
	} cm;
	struct iovec iov = { line, (size_t)ll };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (ll < 0 || (size_t)ll >= sizeof(line) || nfds < 0 || nfds > 8) {
		snprintf(reply, len, "control socket %s: command too long", path);
		close(fd);
		return -1;
	}
	if (nfds > 0) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.b;
		mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	if (sendmsg(fd, &mh, MSG_NOSIGNAL) != ll) {
		snprintf(reply, len, "control socket %s: write failed", path);
		close(fd);
		return -1;
	}
	while (n < len - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline - now_ms();

		if (left <= 0 || poll(&p, 1, (int)left) <= 0 || read(fd, reply + n, 1) != 1)
			break;
		if (reply[n] == '\n')
			break;
		n++;
	}
	close(fd);
	reply[n] = 0;
	if (n == 0) {
		snprintf(reply, len, "no answer on %s within %d ms", path, timeout_ms);
		return -1;
	}
	return 0;
}

/* Kills a process that is no VM's, reaps it and removes its directory. */
static void proc_discard(struct vmm_pool *p, struct proc *c)
{
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
	}
	vmm_jail_uid_put(&p->jail, c->uid);
	hearth_engine_rmtree(c->dir);
	free(c);
}

/* Starts one pooled process of a shape (called without the lock). NULL on failure. */
static struct proc *proc_spawn(struct vmm_pool *p, uint32_t mem_mb, uint32_t vcpus, unsigned seq)
{
	struct proc *c = calloc(1, sizeof(*c));
	char mem[16], cpus[16], log[300], pidf[300];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t sa;
	FILE *f;
	int rc;

	if (!c)
		return NULL;
	c->mem_mb = mem_mb;
	c->vcpus = vcpus;
	snprintf(c->dir, sizeof(c->dir), "%s/%spool-%d-%u", p->run_dir, p->prefix, (int)getpid(),
		 seq);
	snprintf(c->ctl, sizeof(c->ctl), "%s/ctl.sock", c->dir);
	snprintf(c->sock, sizeof(c->sock), "%s/v.sock", c->dir);
	snprintf(log, sizeof(log), "%s/console.log", c->dir);
	snprintf(pidf, sizeof(pidf), "%s/pid", c->dir);
	if (mkdir(c->dir, 0700) < 0) {
		free(c);
		return NULL;
	}
	snprintf(mem, sizeof(mem), "%u", mem_mb);
	snprintf(cpus, sizeof(cpus), "%u", vcpus);
	/* The vsock socket is bound now: a restore has one thing less to do. */
	char *argv[20] = { p->bin, "--pool", "--mem", mem, "--vcpus", cpus, "--control", c->ctl,
			   "--vsock-socket", c->sock, "--console", "-", NULL };
	char uidbuf[16];
	int ai = 12;

	c->uid = vmm_jail_uid_get(&p->jail);
	if (p->jail.on && !c->uid) {
		proc_discard(p, c);
		return NULL;
	}
	vmm_jail_argv(&p->jail, c->uid, argv, &ai, uidbuf);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_APPEND | O_CREAT, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	hearth_spawnattr_clean(&sa);
	rc = p->bin[0] == '/' ? posix_spawn(&c->pid, p->bin, &fa, &sa, argv, environ)
			      : posix_spawnp(&c->pid, p->bin, &fa, &sa, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&sa);
	if (rc) {
		c->pid = 0;
		proc_discard(p, c);
		return NULL;
	}
	f = fopen(pidf, "we");
	if (f) {
		fprintf(f, "%d\n", (int)c->pid);
		fclose(f);
	}
	c->started_ms = now_ms();
	return c;
}

static int wanted(const struct vmm_pool *p, uint32_t mem_mb, uint32_t vcpus)
{
	for (int i = 0; i < p->nshapes; i++)
		if (p->shapes[i].memory_mb == mem_mb && p->shapes[i].vcpus == vcpus)
			return p->shapes[i].count;
	return 0;
}

static int have(const struct vmm_pool *p, uint32_t mem_mb, uint32_t vcpus)
{
	int n = 0;

	for (const struct proc *c = p->procs; c; c = c->next)
		n += c->mem_mb == mem_mb && c->vcpus == vcpus;
	return n;
}

/* Unlinks c from the list (lock held). */
static void unlink_proc(struct vmm_pool *p, struct proc *c)
{
	for (struct proc **pp = &p->procs; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			return;
		}
}

/*
 * One pass: drop the dead, the silent and the surplus; check the idle; start
 * what is missing. Lock held on entry and exit; dropped around process I/O.
 */
static void tick(struct vmm_pool *p)
{
	int64_t t = now_ms();

	/* Exited processes, and surplus ones (unready first: they cost least to lose). */
	for (int pass = 0; pass < 2; pass++) {
		struct proc *c = p->procs, *next;

		for (; c; c = next) {
			next = c->next;
			if (c->busy)
				continue;
			bool dead = waitpid(c->pid, NULL, WNOHANG) == c->pid;
			bool surplus = (pass == 0 ? !c->ready : true) &&
				       have(p, c->mem_mb, c->vcpus) > wanted(p, c->mem_mb, c->vcpus);

			if (!dead && !surplus)
				continue;
			if (dead) {
				c->pid = 0;
				p->discarded++;
			}
			unlink_proc(p, c);
			pthread_mutex_unlock(&p->mu);
			proc_discard(p, c);
			pthread_mutex_lock(&p->mu);
			next = p->procs; /* the list may have changed meanwhile */
		}
	}
	/* Not ready yet, or due for a check: ask for the status. */
	for (struct proc *c = p->procs; c; c = c->next) {
		char reply[256];
		bool ok;

		if (c->busy || (c->ready && t - c->checked_ms < CHECK_EVERY_MS))
			continue;
		c->busy = true;
		pthread_mutex_unlock(&p->mu);
		ok = vmm_ctl_cmd(c->ctl, "status", STATUS_TIMEOUT_MS, reply, sizeof(reply)) == 0;
		pthread_mutex_lock(&p->mu);
		c->busy = false;
		c->checked_ms = now_ms();
		if (ok && strncmp(reply, "OK state=pooled ", 16) == 0) {
			c->ready = true;
			continue;
		}
		/*
		 * A process that answered something else, or that stopped answering
		 * once ready, or never became ready in time, is replaced.
		 */
		if (ok || c->ready || t - c->started_ms > READY_TIMEOUT_MS) {
			unlink_proc(p, c);
			p->discarded++;
			pthread_mutex_unlock(&p->mu);
			proc_discard(p, c);
			pthread_mutex_lock(&p->mu);
			break; /* the list changed: the next tick carries on */
		}
	}
	/* Start what is missing, shape by shape. */
	for (int i = 0; i < p->nshapes && !p->stop; i++) {
		struct hearth_pool_shape sh = p->shapes[i];

		while (!p->stop && have(p, sh.memory_mb, sh.vcpus) < sh.count) {
			unsigned seq = ++p->seq;
			struct proc *c;

			pthread_mutex_unlock(&p->mu);
			c = proc_spawn(p, sh.memory_mb, sh.vcpus, seq);
			pthread_mutex_lock(&p->mu);
			if (!c)
				break; /* try again next tick */
			c->next = p->procs;
			p->procs = c;
			p->started++;
			if (i >= p->nshapes || p->shapes[i].memory_mb != sh.memory_mb)
				break; /* the shapes changed meanwhile */
		}
	}
}

static void *pool_thread(void *arg)
{
	struct vmm_pool *p = arg;

	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		struct timespec ts;

		tick(p);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (!p->stop)
			pthread_cond_timedwait(&p->cond, &p->mu, &ts);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int vmm_pool_open(struct vmm_pool **out, const char *vmm_bin, const char *run_dir,
		  const char *prefix, const struct vmm_jail *jail)
{
	struct vmm_pool *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (!p)
		return -ENOMEM;
	if (jail)
		p->jail = *jail;
	p->bin = strdup(vmm_bin);
	p->run_dir = strdup(run_dir);
	p->prefix = strdup(prefix);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cond, NULL);
	if (!p->bin || !p->run_dir || !p->prefix ||
	    pthread_create(&p->thread, NULL, pool_thread, p) != 0) {
		free(p->bin);
		free(p->run_dir);
		free(p->prefix);
		free(p);
		return -ENOMEM;
	}
	*out = p;
	return 0;
}

void vmm_pool_close(struct vmm_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->thread, NULL);
	while (p->procs) {
		struct proc *c = p->procs;

		p->procs = c->next;
		proc_discard(p, c);
	}
	free(p->bin);
	free(p->run_dir);
	free(p->prefix);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cond);
	free(p);
}

void vmm_pool_set(struct vmm_pool *p, const struct hearth_pool_shape *shapes, int n)
{
	bool changed;

	if (n > MAX_SHAPES)
		n = MAX_SHAPES;
	pthread_mutex_lock(&p->mu);
	changed = n != p->nshapes || memcmp(p->shapes, shapes, (size_t)n * sizeof(*shapes)) != 0;
	memcpy(p->shapes, shapes, (size_t)n * sizeof(*shapes));
	p->nshapes = n;
	if (changed)
		pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->mu);
}

int vmm_pool_take(struct vmm_pool *p, uint32_t memory_mb, uint32_t vcpus, const char *state,
		  const char *mem, const char *console, const char *prefetch,
		  struct vmm_pool_proc *out, char *err, size_t errlen)
{
	struct proc *c;
	char cmd[64], reply[600];

	pthread_mutex_lock(&p->mu);
	for (c = p->procs; c; c = c->next)
		if (c->ready && !c->busy && c->mem_mb == memory_mb && c->vcpus == vcpus)
			break;
	if (!c) {
		p->misses++;
		pthread_mutex_unlock(&p->mu);
		return 1;
	}
	unlink_proc(p, c);
	pthread_cond_broadcast(&p->cond); /* refill */
	pthread_mutex_unlock(&p->mu);

	/*
	 * The files go with the command, opened here: a jailed process can open
	 * nothing on the host (and an unjailed one is served the same way).
	 */
	int fds[4], nf = 0, ok;

	fds[nf++] = open(state, O_RDONLY | O_CLOEXEC);
	fds[nf++] = open(mem, O_RDONLY | O_CLOEXEC);
	fds[nf++] = open(console, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (prefetch)
		fds[nf++] = open(prefetch, O_RDONLY | O_CLOEXEC);
	/* A working set that cannot be opened only costs speed: restore without it. */
	if (prefetch && fds[3] < 0)
		nf--;
	ok = fds[0] >= 0 && fds[1] >= 0 && fds[2] >= 0;
	if (!ok)
		snprintf(reply, sizeof(reply), "cannot open the snapshot or console: %s",
			 strerror(errno));
	snprintf(cmd, sizeof(cmd), "restore @0 @1 console=@2%s", nf == 4 ? " prefetch=@3" : "");
	if (ok)
		ok = vmm_ctl_cmd_fds(c->ctl, cmd, fds, nf, RESTORE_TIMEOUT_MS, reply,
				     sizeof(reply)) == 0 &&
		     strncmp(reply, "OK restored", 11) == 0;
	for (int i = 0; i < nf; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (ok) {
		out->pid = c->pid;
		out->uid = c->uid;
		snprintf(out->dir, sizeof(out->dir), "%s", c->dir);
		snprintf(out->ctl, sizeof(out->ctl), "%s", c->ctl);
		snprintf(out->sock, sizeof(out->sock), "%s", c->sock);
		free(c);
		pthread_mutex_lock(&p->mu);
		p->hits++;
		pthread_mutex_unlock(&p->mu);
		return 0;
	}
	snprintf(err, errlen, "pooled hearth-vmm %d: %s", (int)c->pid, reply);
	proc_discard(p, c);
	pthread_mutex_lock(&p->mu);
	p->misses++;
	p->discarded++;
	pthread_mutex_unlock(&p->mu);
	return -1;
}

void vmm_pool_stats(struct vmm_pool *p, struct hearth_pool_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&p->mu);
	for (const struct proc *c = p->procs; c; c = c->next) {
		if (c->ready)
			st->idle++;
		else
			st->starting++;
	}
	st->hits = p->hits;
	st->misses = p->misses;
	st->started = p->started;
	st->discarded = p->discarded;
	pthread_mutex_unlock(&p->mu);
}
