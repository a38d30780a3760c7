/*
 * bench_vmm - hearth-vmm start-up costs, side by side in one run (ci/bench vmm):
 *  1. snapshot restore: process start -> the restored vCPU running guest code
 *     (its first console byte after restore), and -> the echo guest's first
 *     vsock reply (hybrid connect + Hello answered);
 *  2. cold boot of the same guest: -> first console byte, -> first vsock reply;
 *  3. QEMU -M microvm under TCG booting the hello guest (PVH entry) to its first
 *     console line, for reference, next to hearth-vmm booting the same image;
 *  4. memory per idle clone: PSS of 10 restored clones of one snapshot.
 * p50/p99 over `runs` (default 20) runs each.
 * usage: bench_vmm [runs]
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent_client.h"
#include "harness.h"

#define T_MS 20000

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return x < y ? -1 : x > y;
}

static void report(const char *what, long long *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_ll);
	int i99 = (int)((n * 99 + 99) / 100) - 1;
	if (i99 >= n)
		i99 = n - 1;
	printf("  %-58s p50 %8.2f ms   p99 %8.2f ms   (n=%d)\n", what, v[n / 2] / 1000.0,
	       v[i99] / 1000.0, n);
}

static long long file_size(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

/* Microseconds from t0 until the file has at least `min` bytes (or contains needle). */
static long long wait_output(const char *path, const char *needle, long long t0)
{
	long long deadline = now_us() + (long long)T_MS * 1000;
	while (now_us() < deadline) {
		if (file_size(path) > 0) {
			if (!needle)
				return now_us() - t0;
			char *s = slurp(path, NULL);
			int ok = strstr(s, needle) != NULL;
			free(s);
			if (ok)
				return now_us() - t0;
		}
		usleep(50);
	}
	return -1;
}

/* Microseconds from t0 until the guest answered Hello over vsock. */
static long long wait_reply(const char *sock, long long t0)
{
	struct agent_conn *c = NULL;
	long long deadline = now_us() + (long long)T_MS * 1000;
	/* Until the guest driver is up, the VMM refuses CONNECT: retry. */
	while (agent_connect_hybrid_vsock(sock, 52, T_MS, &c) != AGENT_OK) {
		if (now_us() > deadline)
			return -1;
		usleep(100);
	}
	long long r = agent_hello(c, T_MS, NULL) == AGENT_OK ? now_us() - t0 : -1;
	agent_close(c);
	return r;
}

static int ctl(const char *path, const char *cmd, char *reply, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = -1;
	for (int i = 0; i < 4000 && fd < 0; i++) {
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			close(fd);
			fd = -1;
			usleep(1000);
		}
	}
	if (fd < 0)
		return -1;
	dprintf(fd, "%s\n", cmd);
	ssize_t n = read(fd, reply, len - 1);
	close(fd);
	reply[n > 0 ? n : 0] = 0;
	return strncmp(reply, "OK", 2) == 0 ? 0 : -1;
}

static void stop(struct vmm_run *r)
{
	if (r->pid > 0) {
		kill(r->pid, SIGTERM);
		vmm_wait(r, T_MS);
	}
}

static long long pss_kb(pid_t pid, const char *field)
{
	char p[64], line[256];
	snprintf(p, sizeof(p), "/proc/%d/smaps_rollup", (int)pid);
	FILE *f = fopen(p, "r");
	long long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, field, strlen(field)))
			v = atoll(line + strlen(field));
	if (f)
		fclose(f);
	return v;
}

static long long run_qemu(const char *qemu, const char *image, const char *dir, int idx)
{
	char con[400];
	snprintf(con, sizeof(con), "%s/qemu%d.con", dir, idx);
	char chardev[500];
	snprintf(chardev, sizeof(chardev), "file,id=c0,path=%s", con);
	long long t0 = now_us();
	pid_t pid = fork();
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		dup2(nul, 0);
		dup2(nul, 1);
		dup2(nul, 2);
		execl(qemu, qemu, "-M", "microvm,rtc=off,pic=off,pit=off,isa-serial=on",
		      "-accel", "tcg", "-m", "32", "-nodefaults", "-no-user-config", "-nographic",
		      "-no-reboot", "-display", "none", "-chardev", chardev, "-serial", "chardev:c0",
		      "-kernel", image, (char *)NULL);
		_exit(127);
	}
	long long t = wait_output(con, "hello from the hearth test guest", t0);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return t;
}

int main(int argc, char **argv)
{
	int runs = argc > 1 ? atoi(argv[1]) : 20;
	if (runs < 1 || runs > 1000)
		runs = 20;
	long long *a = calloc((size_t)runs, sizeof(long long)), *b = calloc((size_t)runs, sizeof(long long)),
		  *c = calloc((size_t)runs, sizeof(long long)), *d = calloc((size_t)runs, sizeof(long long));

	/* The snapshot: an idle echo guest after one Hello. */
	struct vmm_run src;
	vmm_run_init(&src, "bench-src");
	char sock[400], ctlp[400], mem[400], state[400], cmd[900], reply[512];
	snprintf(sock, sizeof(sock), "%s/v.sock", src.dir);
	snprintf(ctlp, sizeof(ctlp), "%s/ctl", src.dir);
	snprintf(mem, sizeof(mem), "%s/snap.mem", src.dir);
	snprintf(state, sizeof(state), "%s/snap.state", src.dir);
	const char *sav[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "32",
			      "--vsock-socket", sock, "--control", ctlp, NULL };
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (vmm_spawn(&src, sav) < 0 || wait_reply(sock, now_us()) < 0) {
		fprintf(stderr, "bench_vmm: the echo guest did not come up\n");
		vmm_run_cleanup(&src);
		return 1;
	}
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", mem, state);
	if (ctl(ctlp, cmd, reply, sizeof(reply)) < 0) {
		fprintf(stderr, "bench_vmm: snapshot failed: %s\n", reply);
		vmm_teardown(NULL);
		return 1;
	}
	printf("snapshot of a 32 MiB echo guest: %s", reply);
	stop(&src);

	/* 1. restore */
	long long *e1 = calloc((size_t)runs, sizeof(long long)), *e2 = calloc((size_t)runs, sizeof(long long)),
		  *e3 = calloc((size_t)runs, sizeof(long long)), *e4 = calloc((size_t)runs, sizeof(long long));
	for (int verify = 0; verify < 2; verify++) {
		for (int i = 0; i < runs; i++) {
			struct vmm_run r;
			vmm_run_init(&r, "bench-restore");
			char s2[400];
			snprintf(s2, sizeof(s2), "%s/v.sock", r.dir);
			const char *av[] = { "--restore", state, "--restore-mem", mem, "--vsock-socket", s2,
					     verify ? NULL : "--no-verify-memory", NULL };
			long long t0 = now_us();
			vmm_spawn(&r, av);
			a[i] = wait_output(r.console, NULL, t0);
			b[i] = wait_reply(s2, t0);
			stop(&r);
			/* hearth-vmm's own account, from main() on. */
			char *log = slurp(r.errlog, NULL), *p = strstr(log, "vCPUs started ");
			long long tot = -1, ld = -1, vm = -1, st = -1;
			if (p)
				sscanf(p, "vCPUs started %lld us after start (state file read and checked %lld, "
					  "VM + memory + vCPUs created %lld, state restored %lld)",
				       &tot, &ld, &vm, &st);
			free(log);
			e1[i] = tot;
			e2[i] = ld;
			e3[i] = vm - ld;
			e4[i] = st - vm;
			vmm_run_cleanup(&r);
			if (a[i] < 0 || b[i] < 0 || tot < 0) {
				fprintf(stderr, "bench_vmm: restore run %d failed\n", i);
				vmm_teardown(NULL);
				return 1;
			}
		}
		printf("restore (%s):\n", verify ? "memory file SHA-256 verified" : "--no-verify-memory");
		report("process start -> restored vCPU runs guest code", a, runs);
		report("process start -> first vsock reply (Hello)", b, runs);
		report("  inside hearth-vmm: main() -> vCPU threads started", e1, runs);
		report("    read + check state file (+ memory SHA-256)", e2, runs);
		report("    create VM, map memory (KVM memslot), vCPUs", e3, runs);
		report("    restore vCPU/irqchip/PIT/clock/device state", e4, runs);
	}

	/* 2. cold boot of the same guest */
	for (int i = 0; i < runs; i++) {
		struct vmm_run r;
		vmm_run_init(&r, "bench-cold");
		char s2[400];
		snprintf(s2, sizeof(s2), "%s/v.sock", r.dir);
		const char *av[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "32",
				     "--vsock-socket", s2, NULL };
		long long t0 = now_us();
		vmm_spawn(&r, av);
		a[i] = wait_output(r.console, NULL, t0);
		b[i] = wait_reply(s2, t0);
		stop(&r);
		vmm_run_cleanup(&r);
	}
	printf("cold boot (same echo guest, 32 MiB):\n");
	report("process start -> first guest console byte", a, runs);
	report("process start -> first vsock reply (Hello)", b, runs);

	/* 3. the hello guest: hearth-vmm vs QEMU microvm/TCG */
	const char *qemu = getenv("QEMU") ? getenv("QEMU") : "/usr/bin/qemu-system-x86_64";
	int nq = 0;
	for (int i = 0; i < runs; i++) {
		struct vmm_run r;
		vmm_run_init(&r, "bench-hello");
		const char *av[] = { "--kernel", guest_path("hello.elf"), "--mem", "32", NULL };
		long long t0 = now_us();
		vmm_spawn(&r, av);
		c[i] = wait_output(r.console, "hello from the hearth test guest", t0);
		vmm_wait(&r, T_MS);
		if (access(qemu, X_OK) == 0) {
			d[i] = run_qemu(qemu, guest_path("hello.elf"), r.dir, i);
			if (d[i] >= 0)
				nq++;
		}
		vmm_run_cleanup(&r);
	}
	printf("hello guest, process start -> its console line:\n");
	report("hearth-vmm cold boot (KVM)", c, runs);
	if (nq == runs)
		report("QEMU 'microvm' TCG (PVH entry), reference", d, runs);
	else
		printf("  QEMU microvm reference: not measured (%s missing or failed %d/%d runs)\n",
		       qemu, runs - nq, runs);

	/* 4. memory per idle clone */
	enum { CLONES = 10 };
	struct vmm_run cl[CLONES];
	long long pss = 0, rss = 0;
	int ok = 1;
	for (int i = 0; i < CLONES; i++) {
		vmm_run_init(&cl[i], "bench-clone");
		char s2[400];
		snprintf(s2, sizeof(s2), "%s/v.sock", cl[i].dir);
		const char *av[] = { "--restore", state, "--restore-mem", mem, "--vsock-socket", s2,
				     "--no-verify-memory", NULL };
		vmm_spawn(&cl[i], av);
		if (wait_reply(s2, now_us()) < 0)
			ok = 0;
	}
	usleep(500 * 1000);
	for (int i = 0; i < CLONES; i++) {
		pss += pss_kb(cl[i].pid, "Pss:");
		rss += pss_kb(cl[i].pid, "Rss:");
	}
	printf("10 idle clones of one snapshot (after one Hello each)%s:\n", ok ? "" : " [some failed]");
	printf("  PSS per clone %lld KiB (RSS %lld KiB; guest RAM 32768 KiB)\n", pss / CLONES,
	       rss / CLONES);
	for (int i = 0; i < CLONES; i++) {
		stop(&cl[i]);
		vmm_run_cleanup(&cl[i]);
	}
	vmm_run_cleanup(&src);
	return 0;
}
