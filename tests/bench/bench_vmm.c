/*
 * bench_vmm - `ci/bench vmm`: hearth-vmm snapshot restore next to QEMU's,
 * side by side in one run on this machine.
 *
 *  1. hearth-vmm restore latency, process start (just before fork) ->
 *     a. its "vCPUs started" line on stderr (vCPU threads entering KVM_RUN
 *        with the restored state; QEMU's "running" is the same point);
 *     b. the restored vCPU having run guest code: the echo guest's first UART
 *        byte after the restore (it prints when the vsock transport-reset
 *        event wakes it) - the figure held against the target and QEMU;
 *     c. the echo guest's first vsock reply: hybrid-vsock CONNECT 52 +
 *        Hello answered;
 *     console and stderr are pipes, so each moment is seen without polling
 *     files; with hearth-vmm's own breakdown, and again with the memory
 *     file's SHA-256 verified.
 *  2. QEMU restoring a migration stream of the same guest and RAM size with
 *     -incoming "exec:cat FILE", process start -> QMP query-status "running"
 *     (-accel kvm -cpu qemu64, TCG if KVM does not work; no vhost-vsock here,
 *     so no vsock reply to wait for, and the guest idles in hlt silently).
 *  3. VMM memory overhead per VM: RSS, PSS and Private_Dirty of the process
 *     minus those of the guest RAM mapping (the guest pages touched), for
 *     hearth-vmm; RSS and PSS for QEMU.
 *  4. N (50) concurrent clones of one snapshot: restores per second until
 *     all answered Hello, and the memory they share.
 *  + the raw KVM ioctl costs of this host in hearth-vmm's order (and the
 *    slow order it avoids), and a cold boot of the same guest for reference.
 * p50/p99 over `runs` runs (default 20). Prints `restore ratio vs qemu: <N>x`.
 *
 * usage: bench_vmm [runs [clones [rounds [density [prefetch_mib]]]]]
 *        (defaults 20 50 3 1000 32)
 *   env QEMU=/path/to/qemu-system-x86_64, QEMU_ACCEL=tcg (skip KVM for QEMU),
 *       HEARTH_VMM=/path/to/hearth-vmm, HEARTH_KEEP_TMP=1 (keep the temp dirs)
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent_client.h"
#include "bench_json.h"
#include "bench_vmm.h"
#include "harness.h"

#define T_MS 20000
#define MEM_MIB 32
#define AGENT_PORT 52
#define MAX_CLONES 200
#define ROUND_GAP_MS 1000

/* Targets from the issue. */
#define TARGET_RESTORE_US 1000
#define TARGET_OVERHEAD_KIB 3072
#define TARGET_RATIO 50.0

static char workdir[256];
static char snap_mem[320], snap_state[320];
static char ctx_line[700]; /* machine / KVM / QEMU: printed with every block of figures */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static struct bv_qemu qemu_ref;
static json_t *js; /* the machine-readable results (bench_json.h) */

static void qemu_cleanup(void)
{
	if (!getenv("HEARTH_KEEP_TMP"))
		bv_qemu_cleanup(&qemu_ref);
}

static void rm_workdir(void)
{
	if (!workdir[0] || getenv("HEARTH_KEEP_TMP"))
		return;
	DIR *d = opendir(workdir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char p[600];
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", workdir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(workdir);
	workdir[0] = 0;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench_vmm: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	bv_kill_all();
	exit(1);
}

/* <workdir>/<tag><i>.<ext> */
static void wpath(char *buf, size_t len, const char *tag, int i, const char *ext)
{
	snprintf(buf, len, "%s/%s%d.%s", workdir, tag, i, ext);
}

/* Prints one figure: p50 and p99 of v (microseconds) in ms. */
static void line_ms(const char *what, long long *v, int n, long long *p50_out)
{
	long long p50, p99;
	bv_pct(v, n, &p50, &p99);
	printf("  %-60s p50 %8.2f ms  p99 %8.2f ms  (n=%d)\n", what, p50 / 1000.0, p99 / 1000.0, n);
	if (p50_out)
		*p50_out = p50;
}

static void line_kib(const char *what, long long *v, int n, long long *p50_out)
{
	long long p50, p99;
	bv_pct(v, n, &p50, &p99);
	printf("  %-60s p50 %8lld KiB p99 %8lld KiB (n=%d)\n", what, p50, p99, n);
	if (p50_out)
		*p50_out = p50;
}

static int ctl(const char *path, const char *cmd, char *reply, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		snprintf(reply, len, "cannot connect to %s", path);
		return -1;
	}
	dprintf(fd, "%s\n", cmd);
	ssize_t n = read(fd, reply, len - 1);
	close(fd);
	reply[n > 0 ? n : 0] = 0;
	reply[strcspn(reply, "\n")] = 0;
	return strncmp(reply, "OK", 2) == 0 ? 0 : -1;
}

/* now_us() when the guest answered Hello on vsock port 52, or -1. */
static long long hello_at(const char *sock)
{
	struct agent_conn *c = NULL;
	long long deadline = now_us() + (long long)T_MS * 1000;
	/* Only a VMM whose guest driver is not up yet refuses CONNECT: retry then. */
	while (agent_connect_hybrid_vsock(sock, AGENT_PORT, T_MS, &c) != AGENT_OK) {
		if (now_us() > deadline)
			return -1;
		usleep(200);
	}
	int rc = agent_hello(c, T_MS, NULL);
	long long t = now_us();
	agent_close(c);
	return rc == AGENT_OK ? t : -1;
}

/*
 * A hearth-vmm with its console (and, for the timed restores, its stderr) on
 * pipes, so that the moment each shows up is seen without polling files.
 */
struct vmm {
	pid_t pid;
	long long t0;         /* process start: just before fork */
	long long t_con;      /* first console byte, or -1 */
	long long t_started;  /* its "vCPUs started" line on stderr, or -1 */
	int con, errp;        /* read ends; errp -1: stderr goes to the file err */
	size_t con_len, err_len;
	char con_buf[4096], err_buf[4096];
	char sock[320], err[320], ctl[320];
};

static int vmm_start(struct vmm *v, int i, const char *tag, const char *const *args, bool control,
		     bool err_pipe)
{
	v->con = v->errp = -1;
	v->con_len = v->err_len = 0;
	v->con_buf[0] = v->err_buf[0] = 0;
	v->t_con = v->t_started = -1;
	wpath(v->sock, sizeof(v->sock), tag, i, "sock");
	wpath(v->err, sizeof(v->err), tag, i, "err");
	wpath(v->ctl, sizeof(v->ctl), tag, i, "ctl");
	unlink(v->sock);
	unlink(v->err);
	unlink(v->ctl);
	const char *av[32];
	int n = 0;
	av[n++] = vmm_bin();
	for (int k = 0; args[k] && n < 24; k++)
		av[n++] = args[k];
	av[n++] = "--vsock-socket"; /* pooled: bound at start, as hearthd's pool does */
	av[n++] = v->sock;
	av[n++] = "--console";
	av[n++] = "fd:3";
	if (control) {
		av[n++] = "--control";
		av[n++] = v->ctl;
	}
	av[n] = NULL;
	int wr, ewr = -1;
	if (bv_console_pipe(&v->con, &wr) < 0 || (err_pipe && bv_console_pipe(&v->errp, &ewr) < 0))
		return -1;
	v->t0 = now_us();
	v->pid = bv_spawn(av, wr, ewr, err_pipe ? NULL : v->err);
	close(wr);
	if (ewr >= 0)
		close(ewr);
	return v->pid > 0 ? 0 : -1;
}

/* Appends what fd has to buf (the rest is dropped once buf is full); 0 if nothing came. */
static int take(int fd, char *buf, size_t *len, size_t cap)
{
	char scratch[512];
	int got = 0;
	for (;;) {
		char *dst = *len < cap - 1 ? buf + *len : scratch;
		size_t room = *len < cap - 1 ? cap - 1 - *len : sizeof(scratch);
		ssize_t k = read(fd, dst, room);
		if (k <= 0)
			return got;
		got = 1;
		if (dst != scratch) {
			*len += (size_t)k;
			buf[*len] = 0;
		}
	}
}

/* Waits up to timeout_ms for output on either pipe and takes it, noting when things showed. */
static void vmm_pump(struct vmm *v, int timeout_ms)
{
	struct pollfd p[2] = { { .fd = v->con, .events = POLLIN }, { .fd = v->errp, .events = POLLIN } };
	if (poll(p, v->errp >= 0 ? 2 : 1, timeout_ms) <= 0)
		return;
	long long t = now_us();
	if ((p[0].revents & POLLIN) && take(v->con, v->con_buf, &v->con_len, sizeof(v->con_buf)) &&
	    v->t_con < 0)
		v->t_con = t;
	if (v->errp >= 0 && (p[1].revents & POLLIN) &&
	    take(v->errp, v->err_buf, &v->err_len, sizeof(v->err_buf)) && v->t_started < 0) {
		const char *l = strstr(v->err_buf, "vCPUs started ");
		if (l && strchr(l, '\n'))
			v->t_started = t;
	}
	if ((p[0].revents & POLLHUP) && !(p[0].revents & POLLIN) && bv_exited(v->pid))
		v->pid = -1; /* gone (reaped): vmm_until gives up at once */
}

/*
 * Waits until the console has shown needle and then needle2 (either may be
 * NULL: any byte), and, if started, the "vCPUs started" line came. 0 or -1.
 */
static int vmm_until(struct vmm *v, const char *needle, const char *needle2, bool started,
		     int timeout_ms)
{
	long long deadline = now_us() + (long long)timeout_ms * 1000;
	for (;;) {
		const char *a = needle ? strstr(v->con_buf, needle) : (v->con_len ? v->con_buf : NULL);
		bool con_ok = a && (!needle2 || strstr(a + (needle ? strlen(needle) : 0), needle2));
		if (con_ok && (!started || v->t_started >= 0))
			return 0;
		long long left = (deadline - now_us()) / 1000;
		if (left < 0 || v->pid < 0)
			return -1;
		vmm_pump(v, left > 100 ? 100 : (int)left + 1);
	}
}

/* What hearth-vmm said on stderr, for error messages. */
static const char *vmm_said(struct vmm *v)
{
	if (v->errp < 0) {
		char *s = slurp(v->err, NULL);
		snprintf(v->err_buf, sizeof(v->err_buf), "%s", s);
		free(s);
	}
	return v->err_buf[0] ? v->err_buf : "(nothing on stderr)";
}

static void vmm_end(struct vmm *v)
{
	bv_stop(v->pid, SIGTERM, 5000);
	v->pid = -1;
	if (v->errp >= 0)
		take(v->errp, v->err_buf, &v->err_len, sizeof(v->err_buf));
	if (v->con >= 0)
		close(v->con);
	if (v->errp >= 0)
		close(v->errp);
	v->con = v->errp = -1;
}

/* hearth-vmm's own line: "vCPUs started T us after start (... L, ... V, ... S)". */
static int vmm_own_times(const char *text, long long t[4])
{
	const char *p = strstr(text, "vCPUs started ");
	return p && sscanf(p, "vCPUs started %lld us after start (state file read and checked %lld, "
			      "VM + memory + vCPUs created %lld, state restored %lld)",
			   &t[0], &t[1], &t[2], &t[3]) == 4
		       ? 0
		       : -1;
}

static void make_snapshot(void)
{
	static struct vmm v;
	const char *args[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "32", NULL };
	char reply[600], cmd[800];
	if (vmm_start(&v, 0, "src", args, true, false) < 0)
		die("cannot start hearth-vmm %s", vmm_bin());
	if (vmm_until(&v, "vsock echo guest ready", NULL, false, T_MS) < 0)
		die("the echo guest did not boot under %s: %s", vmm_bin(), vmm_said(&v));
	if (hello_at(v.sock) < 0)
		die("the echo guest did not answer Hello: %s", vmm_said(&v));
	/*
	 * The guest logs the Hello after answering it: let it finish and go idle
	 * (hlt), so that every restore starts from the same point and its first
	 * UART byte comes from the restore's transport-reset event.
	 */
	if (vmm_until(&v, "agent: hello\n", NULL, false, 5000) < 0)
		die("the echo guest did not log its Hello: '%s'", v.con_buf);
	usleep(100 * 1000);
	snprintf(snap_mem, sizeof(snap_mem), "%s/snap.mem", workdir);
	snprintf(snap_state, sizeof(snap_state), "%s/snap.state", workdir);
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", snap_mem, snap_state);
	if (ctl(v.ctl, cmd, reply, sizeof(reply)) < 0)
		die("snapshot failed: %s", reply);
	vmm_end(&v);
	struct stat sm, ss;
	stat(snap_mem, &sm);
	stat(snap_state, &ss);
	printf("snapshot: the vsock echo guest, %d MiB RAM, 1 vCPU, idle after one Hello "
	       "(memory file %lld KiB, state file %lld bytes; '%s')\n",
	       MEM_MIB, (long long)sm.st_size >> 10, (long long)ss.st_size, reply);
}

/* ---- figures kept for the summary ---- */
static long long h_started_p50 = -1, h_run_p50 = -1, h_reply_p50 = -1, q_run_p50 = -1;
static long long h_ovh_dirty_p50 = -1;
static long long h_ovh_pss_p50 = -1, h_ovh_rss_p50 = -1, q_ovh_rss_p50 = -1, q_ovh_pss_p50 = -1;
static long long kvm_p50[BV_KVM_N], exec_p50 = -1, h_own_p50 = -1;
static double clone_rate = -1;
static long long clone_ovh_pss = -1, clone_ovh_rss = -1;

static void section_kvm_floor(int runs)
{
	long long *v[BV_KVM_N], *cpu[BV_KVM_N];
	for (int s = 0; s < BV_KVM_N; s++) {
		v[s] = calloc((size_t)runs, sizeof(long long));
		cpu[s] = calloc((size_t)runs, sizeof(long long));
	}
	for (int i = 0; i < runs; i++) {
		long long us[BV_KVM_N], cus[BV_KVM_N];
		if (bv_kvm_probe(snap_mem, (size_t)MEM_MIB << 20, us, cus) < 0)
			die("KVM probe failed: %s", strerror(errno));
		for (int s = 0; s < BV_KVM_N; s++) {
			v[s][i] = us[s];
			cpu[s][i] = cus[s];
		}
	}
	printf("\n[0] raw KVM costs in this process, %d MiB memslot over the snapshot file "
	       "(what every restore pays before loading state; %s):\n",
	       MEM_MIB, ctx_line);
	for (int s = 0; s < BV_KVM_N; s++) {
		char what[120];
		line_ms(bv_kvm_step_names[s], v[s], runs, &kvm_p50[s]);
		snprintf(what, sizeof(what), "  of which CPU time (user + kernel)");
		line_ms(what, cpu[s], runs, NULL);
		free(v[s]);
		free(cpu[s]);
	}
	long long *x = calloc((size_t)runs, sizeof(long long));
	for (int i = 0; i < runs; i++) {
		const char *av[] = { vmm_bin(), "--help", NULL };
		long long t0 = now_us();
		pid_t pid = bv_spawn(av, -1, -1, NULL);
		while (!bv_exited(pid))
			usleep(50);
		x[i] = now_us() - t0;
	}
	line_ms("fork + exec + dynamic linking + exit of hearth-vmm --help", x, runs, &exec_p50);
	free(x);
}

/* Per-run figures of one restore series. */
enum {
	R_STARTED, R_RUN, R_REPLY, R_OWN, R_OWN_LOAD, R_OWN_VM, R_OWN_STATE,
	R_RSS, R_PSS, R_GUEST, R_OVH_RSS, R_OVH_PSS, R_OVH_DIRTY, R_N
};

static void section_restore(int runs, bool verify)
{
	long long *f[R_N];
	for (int k = 0; k < R_N; k++)
		f[k] = calloc((size_t)runs, sizeof(long long));
	const char *args[] = { "--restore", snap_state, "--restore-mem", snap_mem,
			       verify ? NULL : "--no-verify-memory", NULL };
	char top[600] = "";
	static struct vmm v;
	for (int i = 0; i < runs; i++) {
		if (vmm_start(&v, i, verify ? "rv" : "r", args, false, true) < 0)
			die("spawn failed");
		if (vmm_until(&v, NULL, NULL, true, T_MS) < 0)
			die("restore run %d: no console output or no 'vCPUs started' from the restore: %s",
			    i, vmm_said(&v));
		long long th = hello_at(v.sock);
		if (th < 0)
			die("restore run %d: no Hello reply over vsock: %s", i, vmm_said(&v));
		/* Continuity: the restored guest saw the transport reset and served this Hello. */
		if (vmm_until(&v, "transport reset\n", "agent: hello\n", false, 2000) < 0)
			die("restore run %d: the restored guest did not log its reset and Hello: '%s'", i,
			    v.con_buf);
		f[R_STARTED][i] = v.t_started - v.t0;
		f[R_RUN][i] = v.t_con - v.t0;
		f[R_REPLY][i] = th - v.t0;
		struct bv_mem all, g;
		if (bv_mem_rollup(v.pid, &all) < 0 || bv_mem_mapping(v.pid, snap_mem, 0, &g) < 1)
			die("restore run %d: no smaps for pid %d or no mapping of %s", i, (int)v.pid,
			    snap_mem);
		if (i == runs - 1 && bv_mem_top(v.pid, snap_mem, 6, top, sizeof(top)) < 0)
			snprintf(top, sizeof(top), "(smaps unreadable)");
		f[R_RSS][i] = all.rss;
		f[R_PSS][i] = all.pss;
		f[R_GUEST][i] = g.rss;
		f[R_OVH_RSS][i] = all.rss - g.rss;
		f[R_OVH_PSS][i] = all.pss - g.pss;
		f[R_OVH_DIRTY][i] = all.private_dirty - g.private_dirty;
		long long t[4];
		if (vmm_own_times(v.err_buf, t) < 0)
			die("restore run %d: hearth-vmm did not report its restore times: %s", i,
			    vmm_said(&v));
		f[R_OWN][i] = t[0];
		f[R_OWN_LOAD][i] = t[1];
		f[R_OWN_VM][i] = t[2] - t[1];
		f[R_OWN_STATE][i] = t[3] - t[2];
		vmm_end(&v);
	}
	if (!verify) {
		bj_samples_ll(js, "restore_spawned_run_us", "restore",
			      "hearth-vmm spawned restore: process start -> restored guest code ran", "us",
			      f[R_RUN], runs);
		bj_samples_ll(js, "restore_spawned_reply_us", "other",
			      "hearth-vmm spawned restore: process start -> first vsock reply", "us",
			      f[R_REPLY], runs);
		bj_samples_ll(js, "vmm_overhead_pss_kib", "other",
			      "hearth-vmm PSS outside guest RAM, one VM", "KiB", f[R_OVH_PSS], runs);
	}
	printf("\n[1%s] hearth-vmm restore, %s (%s):\n", verify ? "b" : "a",
	       verify ? "memory file SHA-256 verified" : "--no-verify-memory (trusted store)",
	       ctx_line);
	line_ms("process start -> 'vCPUs started' (vCPU threads entering KVM_RUN)", f[R_STARTED],
		runs, verify ? NULL : &h_started_p50);
	line_ms("process start -> restored vCPU ran guest code (1st UART byte)", f[R_RUN], runs,
		verify ? NULL : &h_run_p50);
	line_ms("process start -> echo guest's first vsock reply (Hello)", f[R_REPLY], runs,
		verify ? NULL : &h_reply_p50);
	line_ms("  hearth-vmm's own clock: main() -> vCPU threads started", f[R_OWN], runs,
		verify ? NULL : &h_own_p50);
	line_ms(verify ? "    read + check state file + memory file SHA-256" : "    read + check state file",
		f[R_OWN_LOAD], runs, NULL);
	line_ms("    create VM, memslot, irqchip, vCPUs, devices", f[R_OWN_VM], runs, NULL);
	line_ms("    load vCPU/irqchip/PIT/clock/device state", f[R_OWN_STATE], runs, NULL);
	if (!verify) {
		printf("\n[3a] hearth-vmm memory per VM, one restored VM after its Hello "
		       "(smaps; guest RAM = the MAP_PRIVATE mapping of the memory file; %s):\n",
		       ctx_line);
		line_kib("RSS of the process", f[R_RSS], runs, NULL);
		line_kib("PSS of the process", f[R_PSS], runs, NULL);
		line_kib("guest RAM pages touched (RSS of the guest mapping)", f[R_GUEST], runs, NULL);
		line_kib("overhead: RSS minus the guest mapping's RSS", f[R_OVH_RSS], runs,
			 &h_ovh_rss_p50);
		line_kib("overhead: PSS minus the guest mapping's PSS", f[R_OVH_PSS], runs,
			 &h_ovh_pss_p50);
		line_kib("overhead: Private_Dirty minus the guest mapping's (COW copies)",
			 f[R_OVH_DIRTY], runs, &h_ovh_dirty_p50);
		printf("  largest RSS outside guest RAM (last run): %s\n", top);
		printf("  (RSS counts shared library pages in full; PSS splits them among every "
		       "process mapping them, so it depends on what else runs; Private_Dirty is what "
		       "no other VM can share: heap, stacks, relocated data)\n");
	}
	for (int k = 0; k < R_N; k++)
		free(f[k]);
}

/* ---- pooled restore (hearth-vmm --pool) ---- */

static long long p_reply_cmd_p50 = -1, p_run_p50 = -1, p_hello_p50 = -1, p_own_p50 = -1;
static double pool_rate = -1;

/* Starts a pooled hearth-vmm of the snapshot's shape and waits until it says it is ready. */
/*
 * What the jail costs a spawned restore (hearthd jails every hearth-vmm when
 * it runs as root): the same restore with and without --jail-uid, alternated
 * run by run so that both see the same machine. The jail's share is its
 * set-up before the restore: the files opened, a cgroup created, a fork into
 * the PID namespace, the other namespaces, the tmpfs root and pivot_root, the
 * uid change. Needs root.
 */
static void section_restore_jailed(int runs)
{
	if (geteuid() != 0) {
		printf("\n[1d] jailed restore: not measured (needs root)\n");
		return;
	}
	bool cg = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 ||
		  access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0;
	long long *run[2], *reply[2];
	for (int k = 0; k < 2; k++) {
		run[k] = calloc((size_t)runs, sizeof(long long));
		reply[k] = calloc((size_t)runs, sizeof(long long));
	}
	static struct vmm v;
	for (int i = 0; i < runs; i++)
		for (int k = 0; k < 2; k++) {
			char uid[16];
			snprintf(uid, sizeof(uid), "%d", 2100500000 + i);
			const char *args[] = { "--restore", snap_state, "--restore-mem", snap_mem,
					       "--no-verify-memory", k ? "--jail-uid" : NULL, uid,
					       cg ? NULL : "--jail-no-cgroup", NULL };
			if (vmm_start(&v, i, k ? "rj" : "ru", args, false, true) < 0)
				die("spawn failed");
			if (vmm_until(&v, NULL, NULL, true, T_MS) < 0)
				die("jailed restore run %d: no 'vCPUs started': %s", i, vmm_said(&v));
			long long th = hello_at(v.sock);
			if (th < 0)
				die("jailed restore run %d: no Hello reply: %s", i, vmm_said(&v));
			run[k][i] = v.t_con - v.t0;
			reply[k][i] = th - v.t0;
			vmm_end(&v);
		}
	long long p_run[2], p_reply[2];
	printf("\n[1d] spawned restore, unjailed and jailed (--jail-uid%s), alternated (%s):\n",
	       cg ? ", with a cgroup" : ", no cgroup here", ctx_line);
	line_ms("unjailed: process start -> restored guest code ran", run[0], runs, &p_run[0]);
	line_ms("jailed:   process start -> restored guest code ran", run[1], runs, &p_run[1]);
	line_ms("unjailed: process start -> first vsock reply", reply[0], runs, &p_reply[0]);
	line_ms("jailed:   process start -> first vsock reply", reply[1], runs, &p_reply[1]);
	printf("  jail cost (p50 difference, code ran): %.2f ms; ratio jailed/unjailed %.2fx\n",
	       (p_run[1] - p_run[0]) / 1000.0, (double)p_run[1] / (double)p_run[0]);
	bj_samples_ll(js, "restore_spawned_unjailed_run_us", "restore",
		      "hearth-vmm spawned restore, unjailed (alternated with jailed)", "us", run[0],
		      runs);
	bj_samples_ll(js, "restore_spawned_jailed_run_us", "restore",
		      "hearth-vmm spawned restore, jailed (--jail-uid)", "us", run[1], runs);
	bj_figure(js, "jail_cost_ms", (p_run[1] - p_run[0]) / 1000.0, "ms",
		  "jailed minus unjailed spawned restore, p50, process start -> code ran");
	for (int k = 0; k < 2; k++) {
		free(run[k]);
		free(reply[k]);
	}
}

static void pool_start_mib(struct vmm *v, int i, const char *tag, int mib, long long *ready_us)
{
	char mem[16];
	snprintf(mem, sizeof(mem), "%d", mib);
	const char *args[] = { "--pool", "--mem", mem, NULL };
	if (vmm_start(v, i, tag, args, true, true) < 0)
		die("spawning a pooled hearth-vmm failed");
	long long deadline = now_us() + (long long)T_MS * 1000;
	while (!strstr(v->err_buf, "ready ") || !strchr(strstr(v->err_buf, "ready "), '\n')) {
		if (now_us() > deadline || v->pid < 0)
			die("pooled hearth-vmm %d never said it was ready: %s", i, vmm_said(v));
		vmm_pump(v, 100);
	}
	if (ready_us)
		*ready_us = now_us() - v->t0;
}

static void pool_start(struct vmm *v, int i, const char *tag, long long *ready_us)
{
	pool_start_mib(v, i, tag, MEM_MIB, ready_us);
}

/* Sends 'restore' to a pooled process; returns now_us() at the OK reply, or -1. */
static long long pool_restore(struct vmm *v, long long *own_us, char *reply, size_t len)
{
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "restore %s %s", snap_state, snap_mem);
	if (ctl(v->ctl, cmd, reply, len) < 0)
		return -1;
	long long t = now_us();
	if (own_us && sscanf(reply, "OK restored us=%lld", own_us) != 1)
		*own_us = -1;
	return t;
}

enum { P_READY, P_REPLY, P_RUN, P_HELLO, P_OWN, P_PSS, P_RSS, P_IDLE_PSS, P_IDLE_RSS, P_N };

static void section_pooled(int runs)
{
	long long *f[P_N];
	for (int k = 0; k < P_N; k++)
		f[k] = calloc((size_t)runs, sizeof(long long));
	static struct vmm v;
	char reply[600];
	for (int i = 0; i < runs; i++) {
		pool_start(&v, i, "p", &f[P_READY][i]);
		/* Let it settle, as a pooled process waiting in hearthd's pool would be. */
		usleep(20 * 1000);
		struct bv_mem idle;
		if (bv_mem_rollup(v.pid, &idle) < 0)
			die("pooled run %d: no smaps", i);
		f[P_IDLE_PSS][i] = idle.pss;
		f[P_IDLE_RSS][i] = idle.rss;
		bv_drain(v.con);
		long long t0 = now_us();
		long long t_ok = pool_restore(&v, &f[P_OWN][i], reply, sizeof(reply));
		if (t_ok < 0)
			die("pooled run %d: restore refused: %s", i, reply);
		if (vmm_until(&v, NULL, NULL, false, T_MS) < 0)
			die("pooled run %d: no console output after the restore: %s", i, vmm_said(&v));
		long long th = hello_at(v.sock);
		if (th < 0)
			die("pooled run %d: no Hello reply over vsock: %s", i, vmm_said(&v));
		if (vmm_until(&v, "transport reset\n", "agent: hello\n", false, 2000) < 0)
			die("pooled run %d: the restored guest did not log its reset and Hello: '%s'", i,
			    v.con_buf);
		f[P_REPLY][i] = t_ok - t0;
		f[P_RUN][i] = v.t_con - t0;
		f[P_HELLO][i] = th - t0;
		struct bv_mem all, g;
		if (bv_mem_rollup(v.pid, &all) < 0 || bv_mem_mapping(v.pid, snap_mem, 0, &g) < 1)
			die("pooled run %d: no smaps or no mapping of %s", i, snap_mem);
		f[P_PSS][i] = all.pss - g.pss;
		f[P_RSS][i] = all.rss - g.rss;
		vmm_end(&v);
	}
	bj_samples_ll(js, "restore_pooled_run_us", "restore",
		      "hearth-vmm pooled restore: 'restore' sent -> restored guest code ran", "us",
		      f[P_RUN], runs);
	bj_samples_ll(js, "restore_pooled_reply_us", "other",
		      "hearth-vmm pooled restore: 'restore' sent -> first vsock reply", "us", f[P_HELLO],
		      runs);
	printf("\n[1c] hearth-vmm pooled restore (--pool: process, KVM VM, irqchip, vCPUs and "
	       "seccomp filters made ahead; %s):\n", ctx_line);
	line_ms("off the critical path: process start -> pooled and ready", f[P_READY], runs, NULL);
	line_ms("'restore' sent -> control reply OK (vCPUs running)", f[P_REPLY], runs,
		&p_reply_cmd_p50);
	line_ms("'restore' sent -> restored vCPU ran guest code (1st UART byte)", f[P_RUN], runs,
		&p_run_p50);
	line_ms("'restore' sent -> echo guest's first vsock reply (Hello)", f[P_HELLO], runs,
		&p_hello_p50);
	line_ms("  hearth-vmm's own clock: command read -> vCPUs running", f[P_OWN], runs,
		&p_own_p50);
	line_kib("idle pooled process: PSS", f[P_IDLE_PSS], runs, NULL);
	line_kib("idle pooled process: RSS", f[P_IDLE_RSS], runs, NULL);
	line_kib("restored, after Hello: PSS minus the guest mapping's", f[P_PSS], runs, NULL);
	line_kib("restored, after Hello: RSS minus the guest mapping's", f[P_RSS], runs, NULL);
	for (int k = 0; k < P_N; k++)
		free(f[k]);
}

struct pclone {
	struct vmm v;
	long long sent, ok, reply; /* absolute now_us(); -1 on failure */
	char why[600];
};

static void *pclone_run(void *arg)
{
	struct pclone *c = arg;
	c->ok = pool_restore(&c->v, NULL, c->why, sizeof(c->why));
	c->reply = c->ok < 0 ? -1 : hello_at(c->v.sock);
	return NULL;
}

static void section_pooled_clones(int nclones, int rounds)
{
	struct pclone *c = calloc((size_t)nclones, sizeof(*c));
	pthread_t *th = calloc((size_t)nclones, sizeof(*th));
	long long *rate_x1000 = calloc((size_t)rounds, sizeof(long long));
	printf("\n[4b] %d concurrent restores into pooled hearth-vmm processes, %d rounds "
	       "(the %d pooled processes are started and ready before the clock starts; %s):\n",
	       nclones, rounds, nclones, ctx_line);
	for (int r = 0; r < rounds; r++) {
		if (r > 0)
			usleep(ROUND_GAP_MS * 1000);
		long long tp = now_us();
		for (int i = 0; i < nclones; i++)
			pool_start(&c[i].v, i, "pc", NULL);
		long long ready = now_us();
		usleep(ROUND_GAP_MS * 1000);
		long long t0 = now_us();
		for (int i = 0; i < nclones; i++)
			if (pthread_create(&th[i], NULL, pclone_run, &c[i]) != 0)
				die("pthread_create failed");
		long long last = 0;
		long long *lat = calloc((size_t)nclones, sizeof(long long));
		for (int i = 0; i < nclones; i++) {
			pthread_join(th[i], NULL);
			if (c[i].ok < 0 || c[i].reply < 0)
				die("round %d: pooled clone %d did not come up: %s %s", r, i, c[i].why,
				    vmm_said(&c[i].v));
			if (c[i].reply > last)
				last = c[i].reply;
			lat[i] = c[i].reply - t0;
		}
		double wall_s = (last - t0) / 1e6;
		rate_x1000[r] = (long long)(nclones / wall_s * 1000);
		long long p50, p99;
		bv_pct(lat, nclones, &p50, &p99);
		free(lat);
		printf("  round %d: %d pooled processes ready in %.1f ms (off the critical path); all "
		       "restored and answered Hello %.1f ms after the first 'restore' was sent -> "
		       "%.1f restores/s; per clone p50 %.1f ms p99 %.1f ms\n",
		       r + 1, nclones, (ready - tp) / 1000.0, (last - t0) / 1000.0, nclones / wall_s,
		       p50 / 1000.0, p99 / 1000.0);
		for (int i = 0; i < nclones; i++)
			kill(c[i].v.pid, SIGTERM);
		for (int i = 0; i < nclones; i++) {
			vmm_end(&c[i].v);
			unlink(c[i].v.err);
		}
	}
	long long p50, p99;
	bv_pct(rate_x1000, rounds, &p50, &p99);
	pool_rate = p50 / 1000.0;
	bj_point(js, "restores_per_s_pooled", "restores_vs_concurrency",
		 "restores into pooled hearth-vmm processes ('restore' -> Hello), median round",
		 "concurrent restores", "restores/s", nclones, pool_rate);
	printf("  restores/s into %d pooled processes: median of %d rounds %.1f\n", nclones, rounds,
	       pool_rate);
	free(rate_x1000);
	free(c);
	free(th);
}

/* ---- density: many idle clones of one 128 MiB snapshot ---- */

#define DENSITY_MEM_MIB 128

static int density_n = 1000;
static double density_rate = -1, density_pss_kib = -1, density_ovh_kib = -1, density_dirty_kib = -1,
	      density_guest_kib = -1;

/* MemAvailable of /proc/meminfo, KiB. */
static long long mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[200];
	long long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %lld kB", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

/* Processes whose command line mentions dir (what a clean stop must leave: none). */
static int procs_mentioning(const char *dir)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;
	while (d && (de = readdir(d))) {
		char path[300], buf[4096];
		if (atoi(de->d_name) <= 0 || atoi(de->d_name) == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		for (size_t i = 0; i < len; i++)
			if (!buf[i])
				buf[i] = ' ';
		buf[len] = 0;
		n += strstr(buf, dir) != NULL;
	}
	if (d)
		closedir(d);
	return n;
}

static void section_density(void)
{
	if (density_n <= 0)
		return;
	static struct vmm src;
	char mem[16], smem[320], sstate[320], reply[600], cmd[800], ddir[300];
	snprintf(mem, sizeof(mem), "%d", DENSITY_MEM_MIB);
	const char *bargs[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", mem, NULL };
	if (vmm_start(&src, 0, "dsrc", bargs, true, false) < 0 ||
	    vmm_until(&src, "vsock echo guest ready", NULL, false, T_MS) < 0 || hello_at(src.sock) < 0 ||
	    vmm_until(&src, "agent: hello\n", NULL, false, 5000) < 0)
		die("density: the %d MiB echo guest did not come up: %s", DENSITY_MEM_MIB,
		    vmm_said(&src));
	usleep(100 * 1000);
	snprintf(smem, sizeof(smem), "%s/d.mem", workdir);
	snprintf(sstate, sizeof(sstate), "%s/d.state", workdir);
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", smem, sstate);
	if (ctl(src.ctl, cmd, reply, sizeof(reply)) < 0)
		die("density: snapshot failed: %s", reply);
	vmm_end(&src);
	/* The clones' sockets in a directory of their own, so that the clean-up is checkable. */
	snprintf(ddir, sizeof(ddir), "%s/density", workdir);
	if (mkdir(ddir, 0700) < 0)
		die("mkdir %s: %s", ddir, strerror(errno));

	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	long long avail0 = mem_available();
	pid_t *pid = calloc((size_t)density_n, sizeof(pid_t));
	char (*sock)[320] = calloc((size_t)density_n, sizeof(*sock));
	printf("\n[6] density: %d idle clones of one %d MiB snapshot of the echo guest (spawned "
	       "restores, --no-verify-memory; each answers Hello before the next batch; %s):\n",
	       density_n, DENSITY_MEM_MIB, ctx_line);
	long long t0 = now_us();
	const int batch = 50;
	for (int i = 0; i < density_n; i += batch) {
		int end = i + batch < density_n ? i + batch : density_n;
		for (int k = i; k < end; k++) {
			snprintf(sock[k], sizeof(sock[k]), "%s/c%d.sock", ddir, k);
			const char *av[] = { vmm_bin(), "--restore", sstate, "--restore-mem", smem,
					     "--no-verify-memory", "--vsock-socket", sock[k], NULL };
			pid[k] = bv_spawn(av, -1, -1, NULL);
			if (pid[k] < 0)
				die("density: spawning clone %d failed (%s); RLIMIT_NOFILE %llu", k,
				    strerror(errno), (unsigned long long)rl.rlim_cur);
		}
		for (int k = i; k < end; k++)
			if (hello_at(sock[k]) < 0)
				die("density: clone %d of %d did not answer Hello (%s)", k, density_n,
				    bv_exited(pid[k]) ? "it exited" : "it runs");
	}
	long long t_up = now_us() - t0;
	density_rate = density_n / (t_up / 1e6);
	sleep(1);
	long long avail1 = mem_available();
	struct bv_mem sum = { 0 }, gsum = { 0 };
	for (int k = 0; k < density_n; k++) {
		struct bv_mem a, g;
		if (bv_mem_rollup(pid[k], &a) < 0 || bv_mem_mapping(pid[k], smem, 0, &g) < 1)
			die("density: clone %d: no smaps", k);
		sum.pss += a.pss;
		sum.rss += a.rss;
		sum.private_dirty += a.private_dirty;
		gsum.pss += g.pss;
		gsum.rss += g.rss;
		gsum.private_dirty += g.private_dirty;
	}
	density_pss_kib = (double)sum.pss / density_n;
	density_ovh_kib = (double)(sum.pss - gsum.pss) / density_n;
	density_dirty_kib = (double)sum.private_dirty / density_n;
	density_guest_kib = (double)gsum.pss;
	bj_point(js, "mem_vmm_pss_per_clone_density", "memory_vs_clones",
		 "density run: hearth-vmm PSS outside guest RAM per idle clone (128 MiB snapshot)",
		 "concurrent clones", "KiB per clone", density_n, density_ovh_kib);
	bj_point(js, "mem_all_pss_per_clone_density", "memory_vs_clones",
		 "density run: whole process PSS per idle clone (128 MiB snapshot)",
		 "concurrent clones", "KiB per clone", density_n, density_pss_kib);
	printf("  all %d restored and answering Hello after %.2f s: %.0f restores/s (batches of %d)\n",
	       density_n, t_up / 1e6, density_rate, batch);
	printf("  per clone: PSS %.0f KiB (VMM outside guest RAM %.0f KiB), Private_Dirty %.0f KiB "
	       "(copy-on-write guest pages %.0f KiB of it), RSS %.0f KiB\n",
	       density_pss_kib, density_ovh_kib, density_dirty_kib,
	       (double)gsum.private_dirty / density_n, (double)sum.rss / density_n);
	printf("  guest RAM actually held by all %d: %.1f MiB (PSS of the guest mappings), against "
	       "%d x %d MiB = %d MiB configured\n",
	       density_n, density_guest_kib / 1024, density_n, DENSITY_MEM_MIB,
	       density_n * DENSITY_MEM_MIB);
	printf("  MemAvailable fell by %.1f MiB while they ran (the kernel's own per-VM memory "
	       "included: page tables, KVM structures)\n",
	       (avail0 - avail1) / 1024.0);
	long long ts = now_us();
	for (int k = 0; k < density_n; k++)
		kill(pid[k], SIGTERM);
	for (int k = 0; k < density_n; k++)
		bv_stop(pid[k], SIGTERM, 10000);
	long long t_stop = now_us() - ts;
	int left = procs_mentioning(ddir);
	int files = 0;
	DIR *d = opendir(ddir);
	struct dirent *de;
	while (d && (de = readdir(d)))
		files += de->d_name[0] != '.';
	if (d)
		closedir(d);
	printf("  stopped (SIGTERM) and reaped in %.2f s; processes left: %d; files left in their "
	       "directory: %d%s\n",
	       t_stop / 1e6, left, files, left || files ? "  <- NOT CLEAN" : " (clean)");
	if (left || files)
		die("density: the clones did not stop cleanly");
	rmdir(ddir);
	unlink(smem);
	unlink(sstate);
	free(pid);
	free(sock);
}

/* ---- working-set prefetch: restore -> first Invoke reply, with and without ---- */

#define PF_MEM_MIB 128
static int pf_touch_mib = 32;
static long long pf_off_p50 = -1, pf_on_p50 = -1;

/* now_us() when the guest answered an Invoke (its working set touched first), or -1. */
static long long invoke_at(const char *sock)
{
	struct agent_conn *c = NULL;
	long long deadline = now_us() + (long long)T_MS * 1000;
	while (agent_connect_hybrid_vsock(sock, AGENT_PORT, T_MS, &c) != AGENT_OK) {
		if (now_us() > deadline)
			return -1;
		usleep(200);
	}
	struct agent_result res;
	memset(&res, 0, sizeof(res));
	int rc = agent_hello(c, T_MS, NULL);
	if (rc == AGENT_OK)
		rc = agent_invoke(c, "pf", "x", 1, 0, T_MS, &res);
	long long t = now_us();
	agent_result_free(&res);
	agent_close(c);
	return rc == AGENT_OK ? t : -1;
}

static void section_prefetch(int runs)
{
	if (pf_touch_mib <= 0)
		return;
	static struct vmm src, v;
	char mem[16], cmdline[64], smem[320], sstate[320], ws[320], reply[600], cmd[1400];
	snprintf(mem, sizeof(mem), "%d", PF_MEM_MIB);
	snprintf(cmdline, sizeof(cmdline), "hearth.touch_mib=%d", pf_touch_mib);
	const char *bargs[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", mem, "--cmdline",
				cmdline, NULL };
	if (vmm_start(&src, 0, "pfsrc", bargs, true, false) < 0 ||
	    vmm_until(&src, "vsock echo guest ready", NULL, false, T_MS) < 0 ||
	    invoke_at(src.sock) < 0 || vmm_until(&src, "invoke #1\n", NULL, false, 5000) < 0)
		die("prefetch: the echo guest touching %d MiB did not come up: %s", pf_touch_mib,
		    vmm_said(&src));
	usleep(100 * 1000);
	snprintf(smem, sizeof(smem), "%s/pf.mem", workdir);
	snprintf(sstate, sizeof(sstate), "%s/pf.state", workdir);
	snprintf(ws, sizeof(ws), "%s/pf.ws", workdir);
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", smem, sstate);
	if (ctl(src.ctl, cmd, reply, sizeof(reply)) < 0)
		die("prefetch: snapshot failed: %s", reply);
	vmm_end(&src);
	/* The working set: one clone's first Invoke, recorded. */
	pool_start_mib(&v, 0, "pfrec", PF_MEM_MIB, NULL);
	snprintf(cmd, sizeof(cmd), "restore %s %s", sstate, smem);
	if (ctl(v.ctl, cmd, reply, sizeof(reply)) < 0 || invoke_at(v.sock) < 0)
		die("prefetch: recording clone failed: %s %s", reply, vmm_said(&v));
	snprintf(cmd, sizeof(cmd), "workset %s", ws);
	if (ctl(v.ctl, cmd, reply, sizeof(reply)) < 0)
		die("prefetch: workset failed: %s", reply);
	vmm_end(&v);
	char recorded[600];
	snprintf(recorded, sizeof(recorded), "%s", reply);

	long long *off = calloc((size_t)runs, sizeof(long long)),
		  *on = calloc((size_t)runs, sizeof(long long)),
		  *on_ok = calloc((size_t)runs, sizeof(long long));
	for (int i = 0; i < 2 * runs; i++) {
		bool with = i % 2; /* interleaved: drift hits both alike */
		pool_start_mib(&v, i, with ? "pfon" : "pfoff", PF_MEM_MIB, NULL);
		usleep(20 * 1000);
		if (with)
			snprintf(cmd, sizeof(cmd), "restore %s %s prefetch=%s", sstate, smem, ws);
		else
			snprintf(cmd, sizeof(cmd), "restore %s %s", sstate, smem);
		long long t0 = now_us();
		if (ctl(v.ctl, cmd, reply, sizeof(reply)) < 0)
			die("prefetch run %d: restore refused: %s", i, reply);
		long long t_ok = now_us();
		long long t = invoke_at(v.sock);
		if (t < 0)
			die("prefetch run %d: no Invoke reply: %s", i, vmm_said(&v));
		if (with) {
			on[i / 2] = t - t0;
			on_ok[i / 2] = t_ok - t0;
		} else {
			off[i / 2] = t - t0;
		}
		vmm_end(&v);
	}
	printf("\n[7] working-set prefetch: the echo guest reads %d MiB (one load per page) on "
	       "each Invoke; %d MiB snapshot; pooled restores, interleaved (%s):\n",
	       pf_touch_mib, PF_MEM_MIB, ctx_line);
	printf("  recorded after one clone's first Invoke: '%s'\n", recorded);
	line_ms("prefetch off: 'restore' sent -> first Invoke answered", off, runs, &pf_off_p50);
	line_ms("prefetch on:  'restore' sent -> first Invoke answered", on, runs, &pf_on_p50);
	line_ms("  of which 'restore' sent -> control OK (prefetch included)", on_ok, runs, NULL);
	free(off);
	free(on);
	free(on_ok);
	unlink(smem);
	unlink(sstate);
	unlink(ws);
}

static void section_qemu(struct bv_qemu *q, int runs)
{
	long long *t = calloc((size_t)runs, sizeof(long long)),
		  *rss = calloc((size_t)runs, sizeof(long long)),
		  *pss = calloc((size_t)runs, sizeof(long long)),
		  *guest = calloc((size_t)runs, sizeof(long long)),
		  *ovh_rss = calloc((size_t)runs, sizeof(long long)),
		  *ovh_pss = calloc((size_t)runs, sizeof(long long));
	char err[600];
	for (int i = 0; i < runs; i++) {
		struct bv_mem m[2];
		t[i] = bv_qemu_restore(q, 50, m, err, sizeof(err));
		if (t[i] < 0)
			die("QEMU restore run %d: %s", i, err);
		rss[i] = m[0].rss;
		pss[i] = m[0].pss;
		guest[i] = m[1].rss;
		ovh_rss[i] = m[0].rss - m[1].rss;
		ovh_pss[i] = m[0].pss - m[1].pss;
	}
	{
		char l[200];
		snprintf(l, sizeof(l), "QEMU -incoming (-accel %s): process start -> running", q->accel);
		bj_samples_ll(js, "restore_qemu_us", "restore", l, "us", t, runs);
	}
	printf("\n[2] QEMU restore: %s -M microvm -accel %s -cpu qemu64 -m %d -incoming "
	       "\"exec:cat FILE\" (%s):\n",
	       q->version, q->accel, MEM_MIB, ctx_line);
	line_ms("process start -> QMP query-status 'running'", t, runs, &q_run_p50);
	printf("  %-60s not measurable: no /dev/vhost-vsock on this host\n",
	       "process start -> first vsock reply");
	printf("\n[3b] QEMU memory per VM, 50 ms after 'running' (guest RAM = its anonymous "
	       "%d MiB RAM block):\n",
	       MEM_MIB);
	line_kib("RSS of the process", rss, runs, NULL);
	line_kib("PSS of the process", pss, runs, NULL);
	line_kib("guest RAM pages touched (RSS of the RAM block)", guest, runs, NULL);
	line_kib("overhead: RSS minus the RAM block's RSS", ovh_rss, runs, &q_ovh_rss_p50);
	line_kib("overhead: PSS minus the RAM block's PSS", ovh_pss, runs, &q_ovh_pss_p50);
	free(t);
	free(rss);
	free(pss);
	free(guest);
	free(ovh_rss);
	free(ovh_pss);
}

static void section_cold(int runs)
{
	long long *a = calloc((size_t)runs, sizeof(long long)), *b = calloc((size_t)runs, sizeof(long long));
	const char *args[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "32", NULL };
	for (int i = 0; i < runs; i++) {
		static struct vmm v;
		if (vmm_start(&v, i, "cold", args, false, false) < 0)
			die("spawn failed");
		int up = vmm_until(&v, NULL, NULL, false, T_MS);
		long long th = up < 0 ? -1 : hello_at(v.sock);
		if (up < 0 || th < 0)
			die("cold boot run %d failed: %s", i, vmm_said(&v));
		a[i] = v.t_con - v.t0;
		b[i] = th - v.t0;
		vmm_end(&v);
		unlink(v.err);
	}
	bj_samples_ll(js, "boot_vmm_run_us", "boot",
		      "hearth-vmm cold boot (32 MiB echo guest): process start -> first UART byte", "us",
		      a, runs);
	bj_samples_ll(js, "boot_vmm_reply_us", "other",
		      "hearth-vmm cold boot: process start -> first vsock reply", "us", b, runs);
	printf("\n[5] for reference, hearth-vmm cold boot of the same guest (%d MiB; %s):\n", MEM_MIB,
	       ctx_line);
	line_ms("process start -> first UART byte", a, runs, NULL);
	line_ms("process start -> first vsock reply (Hello)", b, runs, NULL);
	free(a);
	free(b);
}

struct clone {
	struct vmm v;
	long long run, reply; /* absolute now_us(), -1 on failure */
};

static void *clone_wait(void *arg)
{
	struct clone *c = arg;
	c->run = vmm_until(&c->v, NULL, NULL, false, T_MS) < 0 ? -1 : c->v.t_con;
	c->reply = c->run < 0 ? -1 : hello_at(c->v.sock);
	return NULL;
}

static void section_clones(int nclones, int rounds)
{
	struct clone *c = calloc((size_t)nclones, sizeof(*c));
	pthread_t *th = calloc((size_t)nclones, sizeof(*th));
	long long *rate_x1000 = calloc((size_t)rounds, sizeof(long long));
	const char *args[] = { "--restore", snap_state, "--restore-mem", snap_mem, "--no-verify-memory",
			       NULL };
	printf("\n[4] %d concurrent hearth-vmm clones of one snapshot, %d rounds "
	       "(--no-verify-memory, each with its own vsock and control socket; %s):\n",
	       nclones, rounds, ctx_line);
	for (int r = 0; r < rounds; r++) {
		/*
		 * The kernel finishes tearing the previous round's VMs down after their
		 * processes are reaped; do not let that overlap the next round.
		 */
		if (r > 0)
			usleep(ROUND_GAP_MS * 1000);
		long long t0 = now_us();
		for (int i = 0; i < nclones; i++) {
			if (vmm_start(&c[i].v, i, "c", args, true, false) < 0)
				die("round %d: spawning clone %d failed", r, i);
		}
		long long spawned = now_us();
		for (int i = 0; i < nclones; i++)
			if (pthread_create(&th[i], NULL, clone_wait, &c[i]) != 0)
				die("pthread_create failed");
		long long last_run = 0, last_reply = 0;
		long long *lat = calloc((size_t)nclones, sizeof(long long));
		for (int i = 0; i < nclones; i++) {
			pthread_join(th[i], NULL);
			if (c[i].run < 0 || c[i].reply < 0)
				die("round %d: clone %d did not come up: %s", r, i, vmm_said(&c[i].v));
			if (c[i].run > last_run)
				last_run = c[i].run;
			if (c[i].reply > last_reply)
				last_reply = c[i].reply;
			lat[i] = c[i].reply - c[i].v.t0;
		}
		double wall_s = (last_reply - t0) / 1e6;
		rate_x1000[r] = (long long)(nclones / wall_s * 1000);
		long long p50, p99;
		bv_pct(lat, nclones, &p50, &p99);
		free(lat);
		printf("  round %d: all %d running after %.1f ms, all answered Hello after %.1f ms "
		       "(fork loop %.1f ms) -> %.1f restores/s; per clone start -> Hello p50 %.1f ms "
		       "p99 %.1f ms\n",
		       r + 1, nclones, (last_run - t0) / 1000.0, (last_reply - t0) / 1000.0,
		       (spawned - t0) / 1000.0, nclones / wall_s, p50 / 1000.0, p99 / 1000.0);

		if (r == rounds - 1) {
			/* What the clones share, all of them idle after their Hello. */
			struct bv_mem sum = { 0 }, gsum = { 0 };
			for (int i = 0; i < nclones; i++) {
				struct bv_mem a, g;
				if (bv_mem_rollup(c[i].v.pid, &a) < 0 ||
				    bv_mem_mapping(c[i].v.pid, snap_mem, 0, &g) < 1)
					die("clone %d: no smaps", i);
				sum.rss += a.rss;
				sum.pss += a.pss;
				gsum.rss += g.rss;
				gsum.pss += g.pss;
				gsum.shared_clean += g.shared_clean;
				gsum.shared_dirty += g.shared_dirty;
				gsum.private_clean += g.private_clean;
				gsum.private_dirty += g.private_dirty;
			}
			clone_ovh_rss = (sum.rss - gsum.rss) / nclones;
			clone_ovh_pss = (sum.pss - gsum.pss) / nclones;
			printf("  memory of the %d idle clones (last round):\n", nclones);
			printf("    all processes: RSS %lld KiB, PSS %lld KiB -> %lld KiB counted more "
			       "than once (shared)\n",
			       sum.rss, sum.pss, sum.rss - sum.pss);
			printf("    guest RAM mappings: RSS %lld KiB (%lld per clone), PSS %lld KiB; "
			       "shared with other clones %lld KiB (Shared_Clean %lld + Shared_Dirty %lld), "
			       "private %lld KiB (copy-on-write copies %lld, clean %lld)\n",
			       gsum.rss, gsum.rss / nclones, gsum.pss,
			       gsum.shared_clean + gsum.shared_dirty, gsum.shared_clean,
			       gsum.shared_dirty, gsum.private_clean + gsum.private_dirty,
			       gsum.private_dirty, gsum.private_clean);
			printf("    guest RAM actually held: %lld KiB for %d clones (%.0f KiB per clone; "
			       "%d x %d MiB = %d KiB configured)\n",
			       gsum.pss, nclones, (double)gsum.pss / nclones, nclones, MEM_MIB,
			       nclones * MEM_MIB * 1024);
			printf("    VMM overhead per clone: PSS %lld KiB, RSS %lld KiB (process minus "
			       "guest mapping)\n",
			       clone_ovh_pss, clone_ovh_rss);
			bj_point(js, "mem_vmm_pss_per_clone", "memory_vs_clones",
				 "hearth-vmm PSS outside guest RAM, per clone", "concurrent clones",
				 "KiB per clone", nclones, (double)clone_ovh_pss);
			bj_point(js, "mem_guest_pss_per_clone", "memory_vs_clones",
				 "guest RAM held (PSS of the 32 MiB guest mapping), per clone",
				 "concurrent clones", "KiB per clone", nclones,
				 (double)gsum.pss / nclones);
			bj_point(js, "mem_all_pss_per_clone", "memory_vs_clones",
				 "whole hearth-vmm process PSS, per clone (32 MiB guest)",
				 "concurrent clones", "KiB per clone", nclones, (double)sum.pss / nclones);
		}
		long long td = now_us();
		for (int i = 0; i < nclones; i++)
			kill(c[i].v.pid, SIGTERM);
		for (int i = 0; i < nclones; i++) {
			vmm_end(&c[i].v);
			unlink(c[i].v.err);
		}
		printf("  round %d: %d clones stopped (SIGTERM) and reaped in %.1f ms\n", r + 1, nclones,
		       (now_us() - td) / 1000.0);
	}
	long long p50, p99;
	bv_pct(rate_x1000, rounds, &p50, &p99);
	clone_rate = p50 / 1000.0;
	bj_point(js, "restores_per_s_spawned", "restores_vs_concurrency",
		 "spawned hearth-vmm restores (process start -> Hello), median round",
		 "concurrent restores", "restores/s", nclones, clone_rate);
	printf("  restores/s with %d concurrent clones: median of %d rounds %.1f\n", nclones, rounds,
	       clone_rate);
	free(rate_x1000);
	free(c);
	free(th);
}

static const char *verdict(bool met)
{
	return met ? "MET" : "MISSED";
}

static void summary(const struct bv_qemu *qr, int nclones)
{
	/*
	 * The ratio takes hearth-vmm's later point (guest code ran), QEMU's
	 * "running" status; the headline uses the pooled path, which hearthd uses.
	 */
	double ratio_spawned = (double)q_run_p50 / (double)h_run_p50;
	double ratio = (double)q_run_p50 / (double)p_run_p50;
	double ratio_same = (double)q_run_p50 / (double)h_started_p50;
	long long floor_us = kvm_p50[BV_KVM_CREATE_VM] + kvm_p50[BV_KVM_MEMSLOT] +
			     kvm_p50[BV_KVM_IRQCHIP_PIT] + kvm_p50[BV_KVM_VCPU];
	char label[80];
	printf("\n== summary (%s) ==\n", ctx_line);
	printf("  %-52s %-22s %-9s %s\n", "figure", "p50", "target", "verdict");
	printf("  %-52s %9.2f ms%10s %-9s %s\n", "hearth-vmm restore: start -> vCPUs started",
	       h_started_p50 / 1000.0, "", "<= 1 ms", verdict(h_started_p50 <= TARGET_RESTORE_US));
	printf("  %-52s %9.2f ms%10s %-9s %s\n", "hearth-vmm restore: start -> restored code ran",
	       h_run_p50 / 1000.0, "", "<= 1 ms", verdict(h_run_p50 <= TARGET_RESTORE_US));
	printf("  %-52s %9.2f ms\n", "hearth-vmm restore: start -> first vsock reply",
	       h_reply_p50 / 1000.0);
	printf("  %-52s %9.2f ms%10s %-9s %s\n", "pooled restore: 'restore' sent -> code ran",
	       p_run_p50 / 1000.0, "", "<= 1 ms", verdict(p_run_p50 <= TARGET_RESTORE_US));
	printf("  %-52s %9.2f ms\n", "pooled restore: 'restore' sent -> control OK",
	       p_reply_cmd_p50 / 1000.0);
	printf("  %-52s %9.2f ms\n", "pooled restore: 'restore' sent -> first vsock reply",
	       p_hello_p50 / 1000.0);
	printf("  %-52s %9.2f ms   (no vsock reply: no vhost-vsock)\n",
	       "QEMU -incoming: start -> running", q_run_p50 / 1000.0);
	printf("  %-52s %9.1f x%11s %-9s %s\n", "QEMU running / pooled restore code ran", ratio, "",
	       ">= 50x", verdict(ratio >= TARGET_RATIO));
	printf("  %-52s %9.1f x%11s %-9s %s\n", "QEMU running / spawned restore code ran",
	       ratio_spawned, "", ">= 50x", verdict(ratio_spawned >= TARGET_RATIO));
	printf("  %-52s %9.1f x%11s %-9s %s\n", "QEMU running / hearth-vmm vCPUs started", ratio_same,
	       "", ">= 50x", verdict(ratio_same >= TARGET_RATIO));
	printf("  %-52s %9lld KiB PSS%4s %-9s %s\n", "hearth-vmm overhead per VM, one VM",
	       h_ovh_pss_p50, "", "<= 3 MiB", verdict(h_ovh_pss_p50 <= TARGET_OVERHEAD_KIB));
	printf("  %-52s %9lld KiB RSS%4s %-9s %s\n", "", h_ovh_rss_p50, "", "<= 3 MiB",
	       verdict(h_ovh_rss_p50 <= TARGET_OVERHEAD_KIB));
	printf("  %-52s %9lld KiB dirty%2s %-9s %s\n", "", h_ovh_dirty_p50, "", "<= 3 MiB",
	       verdict(h_ovh_dirty_p50 <= TARGET_OVERHEAD_KIB));
	snprintf(label, sizeof(label), "hearth-vmm overhead per VM, %d clones (mean)", nclones);
	printf("  %-52s %9lld KiB PSS%4s %-9s %s\n", label, clone_ovh_pss, "", "<= 3 MiB",
	       verdict(clone_ovh_pss <= TARGET_OVERHEAD_KIB));
	printf("  %-52s %9lld KiB RSS%4s %-9s %s\n", "", clone_ovh_rss, "", "<= 3 MiB",
	       verdict(clone_ovh_rss <= TARGET_OVERHEAD_KIB));
	printf("  %-52s %9lld KiB PSS, %lld KiB RSS\n", "QEMU overhead per VM, one VM", q_ovh_pss_p50,
	       q_ovh_rss_p50);
	snprintf(label, sizeof(label), "restores/s, %d concurrent clones (median round)", nclones);
	printf("  %-52s %9.1f /s%12s %-9s %s\n", label, clone_rate, "", ">= 200/s",
	       verdict(clone_rate >= 200));
	snprintf(label, sizeof(label), "restores/s, %d concurrent into pooled processes", nclones);
	printf("  %-52s %9.1f /s%12s %-9s %s\n", label, pool_rate, "", ">= 200/s",
	       verdict(pool_rate >= 200));
	if (pf_touch_mib > 0)
		printf("  %-52s %9.2f ms off, %.2f ms on: %.2fx\n",
		       "prefetch: restore -> 1st Invoke touching its RAM", pf_off_p50 / 1000.0,
		       pf_on_p50 / 1000.0, (double)pf_off_p50 / (double)pf_on_p50);
	if (density_n > 0) {
		snprintf(label, sizeof(label), "density: %d idle clones of a %d MiB snapshot", density_n,
			 DENSITY_MEM_MIB);
		printf("  %-52s %9.0f KiB PSS%4s %-9s %s\n", label, density_ovh_kib, "", "<= 1 MiB",
		       verdict(density_ovh_kib <= 1024));
		printf("  %-52s %9.0f KiB PSS per clone in all, %.0f KiB Private_Dirty; guest RAM "
		       "held %.1f MiB in all; %.0f restores/s\n",
		       "", density_pss_kib, density_dirty_kib, density_guest_kib / 1024, density_rate);
	}
	printf("  where a restore's time goes here: fork + exec + dynamic linking of hearth-vmm "
	       "%.2f ms; its main() -> vCPUs started %.2f ms, of which the kernel's VM set-up "
	       "(create VM + memslot + irqchip/PIT + vCPU) %.2f ms; then the emulated guest code "
	       "up to its first UART byte\n",
	       exec_p50 / 1000.0, h_own_p50 / 1000.0, floor_us / 1000.0);
	printf("  (a memslot added after the irqchip would wait %.2f ms more on this host; "
	       "hearth-vmm adds it first)\n",
	       (kvm_p50[BV_KVM_MEMSLOT_LATE] - kvm_p50[BV_KVM_MEMSLOT]) / 1000.0);
	printf("  QEMU: %s, -accel %s -cpu qemu64%s%s%s\n", qr->version, qr->accel,
	       qr->why_not_kvm[0] ? " (KVM not used: " : "", qr->why_not_kvm,
	       qr->why_not_kvm[0] ? ")" : "");
	printf("restore ratio vs qemu: %.1fx\n", ratio);
	bj_figure(js, "restore_spawned_run_p50_us", (double)h_run_p50, "us",
		  "hearth-vmm spawned restore -> guest code ran, p50");
	bj_figure(js, "restore_pooled_run_p50_us", (double)p_run_p50, "us",
		  "hearth-vmm pooled restore -> guest code ran, p50");
	bj_figure(js, "restore_qemu_p50_us", (double)q_run_p50, "us", "QEMU -incoming -> running, p50");
	bj_figure(js, "ratio_restore_qemu_vs_pooled", ratio, "x", "QEMU restore p50 / pooled hearth-vmm p50");
	bj_figure(js, "ratio_restore_qemu_vs_spawned", ratio_spawned, "x",
		  "QEMU restore p50 / spawned hearth-vmm p50");
	bj_figure(js, "vmm_overhead_pss_one_vm_kib", (double)h_ovh_pss_p50, "KiB",
		  "hearth-vmm PSS outside guest RAM, one VM, p50");
	bj_figure(js, "qemu_overhead_pss_one_vm_kib", (double)q_ovh_pss_p50, "KiB",
		  "QEMU PSS outside guest RAM, one VM, p50");
	if (h_ovh_pss_p50 > 0)
		bj_figure(js, "ratio_overhead_qemu_vs_vmm", (double)q_ovh_pss_p50 / h_ovh_pss_p50, "x",
			  "QEMU / hearth-vmm PSS outside guest RAM, one VM");
	snprintf(label, sizeof(label), "spawned restores/s, %d concurrent clones", nclones);
	bj_figure(js, "restores_per_s_spawned", clone_rate, "/s", label);
	snprintf(label, sizeof(label), "pooled restores/s, %d concurrent", nclones);
	bj_figure(js, "restores_per_s_pooled", pool_rate, "/s", label);
	if (density_n > 0) {
		bj_figure(js, "density_clones", density_n, "clones", "density run: idle clones");
		bj_figure(js, "density_vmm_pss_per_clone_kib", density_ovh_kib, "KiB",
			  "density: hearth-vmm PSS outside guest RAM per clone");
		bj_figure(js, "density_restores_per_s", density_rate, "/s", "density: restores/s");
	}
	if (pf_touch_mib > 0 && pf_on_p50 > 0)
		bj_figure(js, "ratio_prefetch_off_on", (double)pf_off_p50 / pf_on_p50, "x",
			  "prefetch off / on, restore -> first Invoke");
}

int main(int argc, char **argv)
{
	int runs = argc > 1 ? atoi(argv[1]) : 20;
	int nclones = argc > 2 ? atoi(argv[2]) : 50;
	int rounds = argc > 3 ? atoi(argv[3]) : 3;
	if (argc > 4)
		density_n = atoi(argv[4]);
	if (argc > 5)
		pf_touch_mib = atoi(argv[5]);
	if (runs < 1 || runs > 10000 || nclones < 1 || nclones > MAX_CLONES || rounds < 1 ||
	    rounds > 100 || density_n < 0 || density_n > 3000 || pf_touch_mib < 0 ||
	    pf_touch_mib > PF_MEM_MIB - 32) {
		fprintf(stderr, "usage: bench_vmm [runs (1..10000, default 20) [clones (1..%d, default 50) "
				"[rounds (1..100, default 3) [density clones (0..3000, default 1000) "
				"[prefetch MiB (0..96, default 32)]]]]]\n",
			MAX_CLONES);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	bv_proc_init();
	/* Density: a socket per clone is connected once; children inherit nothing of ours. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(workdir, sizeof(workdir), "%s/bench-vmm-XXXXXX", tmp);
	if (!mkdtemp(workdir))
		die("mkdtemp %s: %s", workdir, strerror(errno));
	atexit(rm_workdir);

	char machine[300], kvm[300];
	bv_machine(machine, sizeof(machine));
	bv_kvm_flavour(kvm, sizeof(kvm));
	printf("machine: %s\n", machine);
	printf("KVM: %s\n", kvm);
	printf("hearth-vmm: %s; guest: %s\n", vmm_bin(), guest_path("vsock_echo.elf"));

	make_snapshot();

	qemu_ref.mem_mib = MEM_MIB;
	qemu_ref.guest = guest_path("vsock_echo.elf");
	qemu_ref.bin = getenv("QEMU") ? getenv("QEMU") : "/usr/bin/qemu-system-x86_64";
	atexit(qemu_cleanup);
	char err[1200];
	if (bv_qemu_prepare(&qemu_ref, err, sizeof(err)) < 0)
		die("QEMU reference unavailable: %s", err);
	printf("QEMU: %s, accelerator: -accel %s -cpu qemu64%s%s\n", qemu_ref.version, qemu_ref.accel,
	       qemu_ref.why_not_kvm[0] ? "; KVM not used: " : " (KVM worked)", qemu_ref.why_not_kvm);
	snprintf(ctx_line, sizeof(ctx_line), "%s; KVM %s; QEMU -accel %s", machine,
		 access("/sys/module/kvm_pvm", F_OK) == 0 ? "PVM" : "hardware", qemu_ref.accel);
	{
		char eng[600];
		snprintf(eng, sizeof(eng), "hearth-vmm on KVM (%s); reference: %s, -accel %s -M microvm",
			 access("/sys/module/kvm_pvm", F_OK) == 0 ? "PVM" : "hardware", qemu_ref.version,
			 qemu_ref.accel);
		js = bj_new("vmm", "hearth-vmm snapshot restore next to QEMU -incoming, 32 MiB echo guest",
			    eng);
		bj_set(js, "kvm_detail", kvm);
	}

	section_kvm_floor(runs);
	section_restore(runs, false);
	section_restore(runs, true);
	section_pooled(runs);
	section_restore_jailed(runs);
	section_qemu(&qemu_ref, runs);
	/*
	 * The concurrency sweep (restores/s and memory per clone against the number
	 * of clones): HEARTH_BENCH_CLONES_SWEEP, default "1,5,10,25", points below
	 * `clones` only; "" skips it. `clones` itself is always measured, last.
	 */
	const char *sw = getenv("HEARTH_BENCH_CLONES_SWEEP");
	char swbuf[200];
	snprintf(swbuf, sizeof(swbuf), "%s", sw ? sw : "1,5,10,25");
	for (char *save = NULL, *tok = strtok_r(swbuf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		int k = atoi(tok);
		if (k < 1 || k >= nclones)
			continue;
		section_clones(k, rounds);
		section_pooled_clones(k, rounds);
	}
	section_clones(nclones, rounds);
	section_pooled_clones(nclones, rounds);
	section_cold(runs);
	section_prefetch(runs);
	section_density();
	summary(&qemu_ref, nclones);
	return bj_write(js) < 0 ? 1 : 0;
}
