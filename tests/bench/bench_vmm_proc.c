/* bench_vmm_proc.c - child processes, smaps figures, statistics, machine. See bench_vmm.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_json.h"
#include "bench_vmm.h"
#include "harness.h"

#define MAX_CHILDREN 4096 /* the density section runs 1,000 clones */

/* Read by the signal handler: only pids, written before the child can matter. */
static volatile pid_t children[MAX_CHILDREN];

static void reg(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == 0) {
			children[i] = pid;
			return;
		}
	/* Not tracked: still stopped by the caller, just not on an interrupted run. */
	fprintf(stderr, "bench_vmm: more than %d children\n", MAX_CHILDREN);
}

static void unreg(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

void bv_kill_all(void)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] > 0)
			kill(children[i], SIGKILL);
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] > 0) {
			waitpid(children[i], NULL, 0);
			children[i] = 0;
		}
}

static void on_fatal_signal(int sig)
{
	bv_kill_all(); /* kill() and waitpid() are async-signal-safe */
	signal(sig, SIG_DFL);
	/*
	 * exit() is not async-signal-safe, but it runs the atexit clean-up that
	 * removes the temp dirs (a 32 MiB memory file among them); a second
	 * signal still ends the process the default way.
	 */
	exit(128 + sig);
}

void bv_proc_init(void)
{
	atexit(bv_kill_all);
	struct sigaction sa = { .sa_handler = on_fatal_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

pid_t bv_spawn(const char *const *argv, int console_wr, int err_wr, const char *errlog)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/*
		 * stderr first, then the console to fd 3 (either may sit on fd 3 in
		 * the parent), and only then the opens, so that none lands on fd 3.
		 */
		if (err_wr >= 0 && dup2(err_wr, 2) < 0)
			_exit(127);
		if (console_wr >= 0 && console_wr != 3) {
			if (dup2(console_wr, 3) < 0)
				_exit(127);
		} else if (console_wr == 3) {
			fcntl(3, F_SETFD, 0);
		}
		int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (nul < 0 || dup2(nul, 0) < 0 || dup2(nul, 1) < 0)
			_exit(127);
		if (err_wr < 0) {
			int err = errlog ? open(errlog, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)
					 : nul;
			if (err < 0 || dup2(err, 2) < 0)
				_exit(127);
		}
		signal(SIGPIPE, SIG_DFL);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	reg(pid);
	return pid;
}

bool bv_exited(pid_t pid)
{
	if (waitpid(pid, NULL, WNOHANG) == pid) {
		unreg(pid);
		return true;
	}
	return false;
}

void bv_stop(pid_t pid, int sig, int timeout_ms)
{
	if (pid <= 0)
		return;
	kill(pid, sig);
	long long deadline = now_us() + (long long)timeout_ms * 1000;
	while (waitpid(pid, NULL, WNOHANG) != pid) {
		if (now_us() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			break;
		}
		usleep(500);
	}
	unreg(pid);
}

int bv_console_pipe(int *rd, int *wr)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	/* The write end reaches the child through dup2 in bv_spawn, which clears CLOEXEC. */
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	*rd = p[0];
	*wr = p[1];
	return 0;
}

long long bv_wait_readable(int rd, int timeout_ms)
{
	struct pollfd p = { .fd = rd, .events = POLLIN };
	long long deadline = now_us() + (long long)timeout_ms * 1000;
	for (;;) {
		int left = (int)((deadline - now_us()) / 1000);
		if (left < 0)
			return -1;
		int n = poll(&p, 1, left);
		if (n > 0)
			return (p.revents & POLLIN) ? now_us() : -1; /* POLLHUP alone: it died mute */
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

void bv_drain(int rd)
{
	char b[4096];
	while (read(rd, b, sizeof(b)) > 0)
		;
}

/* Adds a "Name:   N kB" line to m when it is one of the fields kept. */
static void mem_field(struct bv_mem *m, const char *line)
{
	static const struct {
		const char *name;
		size_t off;
	} f[] = {
		{ "Size:", offsetof(struct bv_mem, size) },
		{ "Rss:", offsetof(struct bv_mem, rss) },
		{ "Pss:", offsetof(struct bv_mem, pss) },
		{ "Shared_Clean:", offsetof(struct bv_mem, shared_clean) },
		{ "Shared_Dirty:", offsetof(struct bv_mem, shared_dirty) },
		{ "Private_Clean:", offsetof(struct bv_mem, private_clean) },
		{ "Private_Dirty:", offsetof(struct bv_mem, private_dirty) },
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		size_t n = strlen(f[i].name);
		if (!strncmp(line, f[i].name, n)) {
			*(long long *)((char *)m + f[i].off) += atoll(line + n);
			return;
		}
	}
}

int bv_mem_rollup(pid_t pid, struct bv_mem *m)
{
	char p[64], line[512];
	memset(m, 0, sizeof(*m));
	snprintf(p, sizeof(p), "/proc/%d/smaps_rollup", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		mem_field(m, line);
	fclose(f);
	m->size = 0; /* the rollup has no Size line; keep it meaningless rather than wrong */
	return m->rss > 0 ? 0 : -1;
}

/*
 * A header line of smaps is "start-end perms offset dev inode [path]"; a field
 * line starts with "Name:". Returns 1 for a header and sets *path (NULL for
 * an anonymous mapping) and *kib.
 */
static int smaps_header(char *line, const char **path, long long *kib)
{
	unsigned long long lo, hi;
	char perms[8];
	int used = 0;
	if (sscanf(line, "%llx-%llx %7s %*s %*s %*s%n", &lo, &hi, perms, &used) < 3 || used == 0)
		return 0;
	char *s = line + used;
	while (*s == ' ')
		s++;
	s[strcspn(s, "\n")] = 0;
	*path = *s ? s : NULL;
	*kib = (long long)((hi - lo) >> 10);
	return 1;
}

int bv_mem_mapping(pid_t pid, const char *path, long long size_kib, struct bv_mem *m)
{
	char p[64], line[1024];
	memset(m, 0, sizeof(*m));
	snprintf(p, sizeof(p), "/proc/%d/smaps", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	bool in = false;
	while (fgets(line, sizeof(line), f)) {
		const char *mp;
		long long kib;
		if (smaps_header(line, &mp, &kib)) {
			in = path ? (mp && !strcmp(mp, path)) : (!mp && kib == size_kib);
			if (in)
				m->vmas++;
			continue;
		}
		if (in)
			mem_field(m, line);
	}
	fclose(f);
	return m->vmas;
}

struct top_entry {
	char name[96];
	long long rss;
};

static int cmp_top(const void *a, const void *b)
{
	const struct top_entry *x = a, *y = b;
	return x->rss < y->rss ? 1 : x->rss > y->rss ? -1 : 0;
}

int bv_mem_top(pid_t pid, const char *skip_path, int top, char *out, size_t len)
{
	enum { MAXE = 128 };
	struct top_entry e[MAXE];
	int ne = 0, cur = -1;
	char p[64], line[1024];
	snprintf(p, sizeof(p), "/proc/%d/smaps", (int)pid);
	FILE *f = fopen(p, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		const char *mp;
		long long kib;
		if (smaps_header(line, &mp, &kib)) {
			cur = -1;
			if (mp && skip_path && !strcmp(mp, skip_path))
				continue;
			const char *base = mp ? (strrchr(mp, '/') ? strrchr(mp, '/') + 1 : mp) : "[anon]";
			for (int i = 0; i < ne && cur < 0; i++)
				if (!strcmp(e[i].name, base))
					cur = i;
			if (cur < 0 && ne < MAXE) {
				cur = ne++;
				snprintf(e[cur].name, sizeof(e[cur].name), "%s", base);
				e[cur].rss = 0;
			}
			continue;
		}
		if (cur >= 0 && !strncmp(line, "Rss:", 4))
			e[cur].rss += atoll(line + 4);
	}
	fclose(f);
	qsort(e, (size_t)ne, sizeof(e[0]), cmp_top);
	size_t o = 0;
	out[0] = 0;
	for (int i = 0; i < ne && i < top && o < len; i++)
		o += (size_t)snprintf(out + o, len - o, "%s%s %lld KiB", i ? ", " : "", e[i].name,
				      e[i].rss);
	return 0;
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return x < y ? -1 : x > y;
}

void bv_pct(long long *v, int n, long long *p50, long long *p99)
{
	if (n <= 0) {
		*p50 = *p99 = -1;
		return;
	}
	qsort(v, (size_t)n, sizeof(*v), cmp_ll);
	/* Nearest rank: the smallest value with at least p% of the runs at or below it. */
	int i50 = (n * 50 + 99) / 100 - 1, i99 = (n * 99 + 99) / 100 - 1;
	*p50 = v[i50 < 0 ? 0 : i50];
	*p99 = v[i99 >= n ? n - 1 : i99];
}

void bv_machine(char *buf, size_t len)
{
	char model[160];
	struct utsname u;
	bj_cpuinfo("model name", model, sizeof(model));
	if (uname(&u) < 0)
		snprintf(u.release, sizeof(u.release), "?");
	snprintf(buf, len, "%ld cores, %s, Linux %s", sysconf(_SC_NPROCESSORS_ONLN), model,
		 u.release);
}

void bv_kvm_flavour(char *buf, size_t len)
{
	char flags[4096];
	bj_cpuinfo("flags", flags, sizeof(flags));
	const char *hw = strstr(flags, " vmx") ? "vmx" : strstr(flags, " svm") ? "svm" : "no vmx/svm";
	if (access("/sys/module/kvm_pvm", F_OK) == 0)
		snprintf(buf, len,
			 "PVM (kvm_pvm module, %s): guests that are not PVM kernels run in KVM's "
			 "instruction emulator",
			 hw);
	else if (access("/sys/module/kvm_intel", F_OK) == 0)
		snprintf(buf, len, "kvm_intel (%s)", hw);
	else if (access("/sys/module/kvm_amd", F_OK) == 0)
		snprintf(buf, len, "kvm_amd (%s)", hw);
	else
		snprintf(buf, len, "unknown KVM module (%s)", hw);
}
