/*
 * test_lab.c - hearth-vmm with the real guest kernel (kernel-config/) and the
 * real hearth-agent as /init, on KVM's real (non-PVM) interface. Each case
 * runs inside the KVM lab (ci/kvm-lab: L1 under QEMU TCG with an emulated
 * AMD SVM CPU); ctest boots one L1 per case.
 *
 * The host side talks to the agent exactly as hearthd does: hybrid vsock,
 * Hello, Configure (boot) or Reseed (restore), then Invokes, with the
 * connection kept open while the snapshot is taken.
 *
 * Skips (77) with the reason when it is not inside the lab, or when the guest
 * kernel has not been built.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent_client.h"
#include "harness.h"
#include "lab_env.h"
#include "image.h"

/* Nested TCG: everything is slow. These bound hangs; they measure nothing. */
#define BOOT_MS 120000
#define RESTORE_MS 30000
#define INVOKE_MS 60000
#define CLONES 10

static const char *kernel;
static char image[512], handler[256];
static bool handler_shell;


static void build_image(void)
{
	struct hearth_image img;
	char err[512];
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char out[300];
	snprintf(out, sizeof(out), "%s/lab-images", tmp);
	struct hearth_image_opts o = {
		.package = LAB_FNS_DIR "/probe",
		.agent = HEARTH_AGENT_BIN,
		.out_dir = out,
	};
	if (hearth_image_build(&o, &img, err, sizeof(err)) < 0) {
		fprintf(stderr, "image build failed: %s\n", err);
		exit(1);
	}
	snprintf(image, sizeof(image), "%s", img.path);
	snprintf(handler, sizeof(handler), "%s", img.manifest.handler);
	handler_shell = img.manifest.shell;
	hearth_image_free(&img);
}

struct guest {
	struct vmm_run r;
	char sock[320], ctl[320];
	struct agent_conn *c;
};

static const char *ctl(struct guest *g, const char *cmd)
{
	const char *r = vmm_ctl(g->ctl, cmd);
	assert_non_null(r);
	return r;
}

static void show_console(struct guest *g)
{
	size_t n;
	const char *st = vmm_ctl(g->ctl, "status");
	fprintf(stderr, "---- %s status: %s\n", g->r.dir, st ? st : "(no answer)");
	char *s = slurp(g->r.console, &n);
	char *e = slurp(g->r.errlog, &n);
	fprintf(stderr, "---- %s console ----\n%s\n---- %s stderr ----\n%s\n----\n", g->r.dir, s,
		g->r.dir, e);
	free(s);
	free(e);
}

static void paths(struct guest *g)
{
	snprintf(g->sock, sizeof(g->sock), "%s/v.sock", g->r.dir);
	snprintf(g->ctl, sizeof(g->ctl), "%s/ctl.sock", g->r.dir);
}

static void hello(struct guest *g, int timeout_ms)
{
	int rc = agent_hello(g->c, timeout_ms, NULL);
	if (rc != 0) {
		show_console(g);
		fail_msg("%s: Hello: %s", g->r.dir, agent_strerror(rc));
	}
}

/* Waits for the agent's vsock port; 0, or the last error (the VMM may have exited). */
static int try_connect(struct guest *g, int timeout_ms)
{
	long long deadline = now_us() + (long long)timeout_ms * 1000;
	int rc;
	do {
		rc = agent_connect_hybrid_vsock(g->sock, 52, 1000, &g->c);
		if (rc == 0)
			break;
		if (vmm_exited(&g->r))
			break;
		usleep(20000);
	} while (now_us() < deadline);
	return rc;
}

static void connect_agent(struct guest *g, int timeout_ms)
{
	int rc = try_connect(g, timeout_ms);
	if (rc != 0) {
		show_console(g);
		fail_msg("%s: no agent on vsock port 52: %s", g->r.dir, agent_strerror(rc));
	}
	hello(g, timeout_ms);
}

static void guest_boot(struct guest *g, const char *tag, unsigned vcpus, const char *cmdline)
{
	char cpus[8];
	snprintf(cpus, sizeof(cpus), "%u", vcpus);
	vmm_run_init(&g->r, tag);
	paths(g);
	const char *argv[] = { "--kernel", kernel, "--initrd", image, "--mem", "256", "--vcpus",
			       cpus, "--cmdline", cmdline ? cmdline : "console=ttyS0 quiet panic=-1",
			       "--vsock-socket", g->sock, "--control", g->ctl, NULL };
	assert_int_equal(vmm_spawn(&g->r, argv), 0);
	int rc = try_connect(g, BOOT_MS);
	size_t n = 0;
	char *con = rc ? slurp(g->r.console, &n) : NULL;
	free(con);
	if (rc && n == 0) {
		/*
		 * The nested first-boot failure (issue 9's notes; the lab's hearthd
		 * cases see it as 503 VMStartFailed): the L2 kernel dies or hangs
		 * before its first console byte, seen in a few percent of lab boots
		 * and never outside the lab. Said loudly, then booted once more; a
		 * second failure fails the case.
		 */
		fprintf(stderr, "LAB: %s: the boot died before any console output (%s); "
				"booting once more\n",
			g->r.dir, agent_strerror(rc));
		show_console(g);
		vmm_run_cleanup(&g->r);
		vmm_run_init(&g->r, tag);
		paths(g);
		assert_int_equal(vmm_spawn(&g->r, argv), 0);
		rc = try_connect(g, BOOT_MS);
	}
	if (rc != 0) {
		show_console(g);
		fail_msg("%s: no agent on vsock port 52: %s", g->r.dir, agent_strerror(rc));
	}
	hello(g, BOOT_MS);
	const char *args[] = { NULL };
	struct agent_config ac = {
		.handler = handler,
		.args = args,
		.workdir = "/var/task",
		.timeout_ms = 30000,
	};
	(void)handler_shell;
	uint64_t init_us = 0;
	rc = agent_configure(g->c, &ac, BOOT_MS, &init_us);
	if (rc != 0) {
		show_console(g);
		fail_msg("Configure: %s: %s", agent_strerror(rc), agent_last_error(g->c));
	}
}

static void guest_restore(struct guest *g, const char *tag, const char *mem, const char *state)
{
	vmm_run_init(&g->r, tag);
	paths(g);
	const char *argv[] = { "--restore", state, "--restore-mem", mem, "--no-verify-memory",
			       "--vsock-socket", g->sock, "--control", g->ctl, NULL };
	assert_int_equal(vmm_spawn(&g->r, argv), 0);
}

/* What hearthd does first with every restored clone: Hello, then fresh entropy. */
static void clone_ready(struct guest *g, const uint8_t seed[32])
{
	connect_agent(g, RESTORE_MS);
	int rc = agent_reseed(g->c, seed, 32, RESTORE_MS);
	if (rc != 0) {
		show_console(g);
		fail_msg("Reseed: %s", agent_strerror(rc));
	}
}

/* Invokes the probe with event; returns its response (malloc'ed, NUL-terminated). */
static char *invoke(struct guest *g, const char *event)
{
	struct agent_result res;
	memset(&res, 0, sizeof(res));
	int rc = agent_invoke(g->c, "lab", event, strlen(event), 0, INVOKE_MS, &res);
	if (rc != 0 || res.status != AGENT_INVOKE_OK) {
		show_console(g);
		fail_msg("invoke %s: rc %s, status %s, error %s, logs %.*s", event, agent_strerror(rc),
			 agent_invoke_status_name(res.status), res.error ? res.error : "-",
			 (int)res.logs_len, res.logs ? (const char *)res.logs : "");
	}
	char *out = calloc(1, res.body_len + 1);
	assert_non_null(out);
	memcpy(out, res.body, res.body_len);
	agent_result_free(&res);
	return out;
}

static void expect_echo(struct guest *g, const char *word)
{
	char want[128];
	snprintf(want, sizeof(want), "echo=%s\n", word);
	char *got = invoke(g, word);
	assert_string_equal(got, want);
	free(got);
}

/* The snapshot outlives the VM it was taken from (guest_stop removes the VM's directory). */
static void snapshot(struct guest *g, char *mem, char *state, size_t n)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char dir[300];
	snprintf(dir, sizeof(dir), "%s/lab-snap-XXXXXX", tmp);
	assert_non_null(mkdtemp(dir));
	snprintf(mem, n, "%s/snap.mem", dir);
	snprintf(state, n, "%s/snap.state", dir);
	char cmd[800];
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", mem, state);
	const char *rep = ctl(g, cmd);
	if (strncmp(rep, "OK snapshot", 11) != 0)
		fail_msg("snapshot: %s", rep);
}

static void guest_stop(struct guest *g)
{
	agent_close(g->c);
	g->c = NULL;
	const char *r = vmm_ctl(g->ctl, "stop");
	if (r)
		assert_string_equal(r, "OK stopping");
	assert_int_equal(vmm_wait(&g->r, 30000), 4);
	vmm_run_cleanup(&g->r);
}

static void random_seed(uint8_t seed[32])
{
	assert_int_equal(RAND_bytes(seed, 32), 1);
}

/* ---- cases -------------------------------------------------------------- */

/* Boot to agent Ready; Ping and Invoke over hybrid vsock. */
static void boot_invoke(void **st)
{
	(void)st;
	struct guest g;
	long long t0 = now_us();
	guest_boot(&g, "boot", 1, NULL);
	printf("boot to Ready: %lld ms (nested TCG)\n", (now_us() - t0) / 1000);
	struct agent_pong pong;
	assert_int_equal(agent_ping(g.c, INVOKE_MS, &pong), 0);
	assert_false(pong.busy);
	expect_echo(&g, "hello");
	char *up = invoke(&g, "uptime");
	assert_non_null(strstr(up, "boot_id="));
	free(up);
	guest_stop(&g);
}

/*
 * A snapshot of a running Linux VM, taken as hearthd takes it (the host's
 * agent connection open), restored: the clone answers Hello, Reseed, Ping and
 * Invoke, and the original keeps working.
 */
static void restore_answers(void **st)
{
	(void)st;
	struct guest a, b;
	char mem[400], state[400];
	uint8_t seed[32];
	guest_boot(&a, "orig", 1, NULL);
	expect_echo(&a, "before");
	snapshot(&a, mem, state, sizeof(mem));
	expect_echo(&a, "after");

	long long t0 = now_us();
	guest_restore(&b, "clone", mem, state);
	random_seed(seed);
	clone_ready(&b, seed);
	printf("restore to Reseed answered: %lld ms (nested TCG)\n", (now_us() - t0) / 1000);
	struct agent_pong pong;
	assert_int_equal(agent_ping(b.c, INVOKE_MS, &pong), 0);
	expect_echo(&b, "clone");
	expect_echo(&a, "original");
	guest_stop(&b);
	guest_stop(&a);
}

/* Two clones of one snapshot, reseeded differently, draw different random bytes. */
static void clones_differ(void **st)
{
	(void)st;
	struct guest a, c[2];
	char mem[400], state[400];
	char *rnd[2];
	guest_boot(&a, "orig", 1, NULL);
	expect_echo(&a, "ready");
	snapshot(&a, mem, state, sizeof(mem));
	guest_stop(&a);
	for (int i = 0; i < 2; i++) {
		uint8_t seed[32];
		guest_restore(&c[i], i ? "cloneB" : "cloneA", mem, state);
		random_seed(seed);
		clone_ready(&c[i], seed);
		rnd[i] = invoke(&c[i], "random");
		printf("clone %d: %s", i, rnd[i]);
		assert_non_null(strstr(rnd[i], "random="));
		assert_int_equal(strlen(rnd[i]), strlen("random=\n") + 32);
	}
	assert_string_not_equal(rnd[0], rnd[1]);
	for (int i = 0; i < 2; i++) {
		free(rnd[i]);
		guest_stop(&c[i]);
	}
}

/* Ten clones of one snapshot at once: every one answers an Invoke. */
static void ten_clones(void **st)
{
	(void)st;
	struct guest a, c[CLONES];
	char mem[400], state[400], tag[16], word[16];
	guest_boot(&a, "orig", 1, NULL);
	expect_echo(&a, "ready");
	snapshot(&a, mem, state, sizeof(mem));
	guest_stop(&a);
	long long t0 = now_us();
	for (int i = 0; i < CLONES; i++) {
		snprintf(tag, sizeof(tag), "c%d", i);
		guest_restore(&c[i], tag, mem, state);
	}
	for (int i = 0; i < CLONES; i++) {
		uint8_t seed[32];
		random_seed(seed);
		clone_ready(&c[i], seed);
	}
	for (int i = 0; i < CLONES; i++) {
		snprintf(word, sizeof(word), "clone%d", i);
		expect_echo(&c[i], word);
	}
	printf("%d clones restored and invoked in %lld ms (nested TCG)\n", CLONES,
	       (now_us() - t0) / 1000);
	for (int i = 0; i < CLONES; i++)
		guest_stop(&c[i]);
}

/* Pins a probe to CPU n and returns the CPU it ran on (-1 if taskset failed). */
static int ran_on(struct guest *g, int n)
{
	char ev[32];
	snprintf(ev, sizeof(ev), "oncpu %d", n);
	char *s = invoke(g, ev);
	int cpu = -1;
	const char *p = strstr(s, "cpu=");
	if (p)
		cpu = atoi(p + 4);
	free(s);
	return cpu;
}

/* A 2-vCPU guest boots, snapshots and restores with both vCPUs running. */
static void smp_two_vcpus(void **st)
{
	(void)st;
	struct guest a, b;
	char mem[400], state[400];
	uint8_t seed[32];
	guest_boot(&a, "smp", 2, NULL);
	char *s = invoke(&a, "cpus");
	printf("booted: %s", s);
	assert_non_null(strstr(s, "nproc=2 online=0-1"));
	free(s);
	assert_int_equal(ran_on(&a, 1), 1);
	snapshot(&a, mem, state, sizeof(mem));
	guest_stop(&a);

	guest_restore(&b, "smpclone", mem, state);
	random_seed(seed);
	clone_ready(&b, seed);
	assert_non_null(strstr(ctl(&b, "status"), "vcpus=2"));
	s = invoke(&b, "cpus");
	printf("restored: %s", s);
	assert_non_null(strstr(s, "nproc=2 online=0-1"));
	free(s);
	/* Work placed on each vCPU in turn runs there: both vCPUs were restored running. */
	for (int round = 0; round < 2; round++) {
		assert_int_equal(ran_on(&b, 0), 0);
		assert_int_equal(ran_on(&b, 1), 1);
	}
	guest_stop(&b);
}

/*
 * Restore on whatever CPU model L1 has (the ctest entry runs this case on a
 * qemu64 L1 without XSAVE as well): it works, or hearth-vmm refuses it with
 * a message that names what is missing. Never a silent clone.
 */
static void restore_any_cpu(void **st)
{
	(void)st;
	struct guest a, b;
	char mem[400], state[400];
	uint8_t seed[32];
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[4096];
	bool xsave = false;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "flags", 5)) {
			xsave = strstr(line, " xsave") != NULL;
			break;
		}
	if (f)
		fclose(f);
	printf("L1 CPU has xsave: %s\n", xsave ? "yes" : "no");
	guest_boot(&a, "orig", 1, NULL);
	expect_echo(&a, "before");
	snapshot(&a, mem, state, sizeof(mem));
	guest_stop(&a);
	guest_restore(&b, "clone", mem, state);
	usleep(3000 * 1000);
	if (vmm_exited(&b.r)) {
		int code = b.r.status;
		size_t n;
		char *e = slurp(b.r.errlog, &n);
		fprintf(stderr, "restore exited %d: %s\n", code, e);
		assert_non_null(strstr(e, "restore"));
		free(e);
		fail_msg("restore refused on this CPU model");
	}
	random_seed(seed);
	clone_ready(&b, seed);
	expect_echo(&b, "restored");
	guest_stop(&b);
}

/* ---- the machine hearth-vmm describes to Linux -------------------------- */

/* Console lines of a guest that probed hardware hearth-vmm does not have, or broke. */
static const char *const boot_errors[] = {
	"ACPI BIOS Error", "A valid RSDP was not found", "PCI: Fatal",
	"No config space access function", "i8042: Can't read CTR", "Error", "Fatal", "BUG",
	"Call Trace", "Unhandled", "WARNING",
};

/*
 * Cuts the one warning that is the lab's and not hearth-vmm's out of a
 * console: QEMU TCG's emulated SVM does not intercept XSETBV, so L1's KVM
 * never sees the guest enable AVX (KVM_GET_XCRS still reads XCR0 = 1 after
 * boot), never updates CPUID 0xd.0 EBX to match, and the guest warns "XSAVE
 * consistency problem" with a call trace. On hardware SVM or VMX KVM
 * intercepts XSETBV and the sizes agree. Only that block, from its "cut
 * here" line to its "end trace" line, is removed.
 */
static void drop_lab_xsave_warning(char *con)
{
	char *w = strstr(con, "XSAVE consistency problem: size ");
	if (!w)
		return;
	char *start = w;
	const char *cut = "------------[ cut here ]------------\n";
	if (w - con >= (ptrdiff_t)strlen(cut) && !strncmp(w - strlen(cut), cut, strlen(cut)))
		start = w - strlen(cut);
	char *end = strstr(w, "---[ end trace ");
	if (!end)
		return;
	end += strcspn(end, "\n");
	if (*end)
		end++;
	printf("(ignoring the XSAVE size warning of nested TCG: L1 never sees the guest's XSETBV)\n");
	memmove(start, end, strlen(end) + 1);
}

/* L1's kernel log: KVM reports there what a guest did that it does not handle. */
static char *l1_kernel_log(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t cap = 1 << 20, len = 0;
	char *buf = calloc(1, cap);
	assert_non_null(buf);
	char rec[8192];
	for (;;) {
		ssize_t n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue; /* records overwritten while reading: go on with the next */
		if (n <= 0)
			break;
		if (len + (size_t)n + 1 >= cap)
			break;
		memcpy(buf + len, rec, (size_t)n);
		len += (size_t)n;
	}
	close(fd);
	return buf;
}

/*
 * The real guest boots on hearth-vmm with warnings and errors on its console
 * (no `quiet`, loglevel=5) and 2 vCPUs, and neither its console nor L1's
 * kernel log holds an error line: no ACPI, PCI or i8042 probe failing, no
 * perf-counter MSR that KVM does not handle.
 */
static void boot_clean(void **st)
{
	(void)st;
	struct guest g;
	guest_boot(&g, "clean", 2, "console=ttyS0 loglevel=5 panic=-1");
	char *s = invoke(&g, "cpus");
	size_t n;
	char *con = slurp(g.r.console, &n);
	printf("---- guest console (loglevel=5) ----\n%s---- end ----\n", con);
	drop_lab_xsave_warning(con);
	for (size_t i = 0; i < sizeof(boot_errors) / sizeof(boot_errors[0]); i++)
		if (strstr(con, boot_errors[i]))
			fail_msg("the guest console holds \"%s\"", boot_errors[i]);
	free(con);
	assert_non_null(strstr(s, "nproc=2 online=0-1"));
	free(s);
	char *kl = l1_kernel_log();
	if (!kl) {
		fail_msg("cannot read L1's kernel log (/dev/kmsg): %s", strerror(errno));
	} else {
		/* An empty read would pass for a clean log: L1 has logged at least its boot. */
		assert_non_null(strstr(kl, "Linux version"));
		const char *u = strstr(kl, "Unhandled");
		if (u)
			fail_msg("L1's kernel log: %.160s", u);
		free(kl);
	}
	guest_stop(&g);
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return x < y ? -1 : x > y;
}

#define BENCH_BOOTS_MAX 50

/*
 * Benchmark, not a test (skipped unless LAB_BENCH_OLD_VMM names a hearth-vmm
 * built before the machine description: no MP table, no acpi=off, the reset-
 * only i8042, no PCI host bridge, no MSR filter). Boots to agent Ready with
 * the old and this hearth-vmm (or LAB_BENCH_NEW_VMM) in turn, LAB_BENCH_BOOTS
 * (default 7) times each,
 * on the command line the builtin engine uses, and prints both medians and
 * their ratio. The order alternates each round (old first, then new first),
 * and every VM is kept running until all are timed: L1 froze for good in
 * three of three runs that stopped each VM before booting the next (after 4
 * to 7 boots), and the figures are printed before anything is stopped.
 * ci/bench lab-boot builds the old one and runs this in the lab.
 */
static void boot_compare(void **st)
{
	(void)st;
	const char *old = getenv("LAB_BENCH_OLD_VMM");
	if (!old || access(old, X_OK) < 0) {
		printf("SKIP: LAB_BENCH_OLD_VMM names no hearth-vmm to compare with\n");
		skip();
	}
	int runs = getenv("LAB_BENCH_BOOTS") ? atoi(getenv("LAB_BENCH_BOOTS")) : 7;
	if (runs < 1 || runs > BENCH_BOOTS_MAX)
		runs = 7;
	unsigned vcpus = getenv("LAB_BENCH_VCPUS") ? (unsigned)atoi(getenv("LAB_BENCH_VCPUS")) : 1;
	if (vcpus < 1 || vcpus > 8)
		vcpus = 1;
	static struct guest g[2][BENCH_BOOTS_MAX];
	long long t[2][BENCH_BOOTS_MAX];
	const char *name[2] = { "old", "new" };
	for (int i = 0; i < runs; i++) {
		for (int j = 0; j < 2; j++) {
			int k = (i + j) % 2;
			char tag[16];
			snprintf(tag, sizeof(tag), "%s%d", name[k], i);
			if (k == 0)
				setenv("HEARTH_VMM", old, 1);
			else if (getenv("LAB_BENCH_NEW_VMM")) /* an A/A run checks the method */
				setenv("HEARTH_VMM", getenv("LAB_BENCH_NEW_VMM"), 1);
			else
				unsetenv("HEARTH_VMM");
			long long t0 = now_us();
			guest_boot(&g[k][i], tag, vcpus, NULL);
			t[k][i] = now_us() - t0;
			char *s = invoke(&g[k][i], "cpus");
			printf("boot %d %s: %lld ms to Ready, %.*s\n", i, name[k], t[k][i] / 1000,
			       (int)strcspn(s, "\n"), s);
			fflush(stdout);
			free(s);
		}
	}
	unsetenv("HEARTH_VMM");
	long long med[2];
	for (int k = 0; k < 2; k++) {
		long long sorted[BENCH_BOOTS_MAX];
		memcpy(sorted, t[k], sizeof(sorted[0]) * (size_t)runs);
		qsort(sorted, (size_t)runs, sizeof(sorted[0]), cmp_ll);
		med[k] = runs % 2 ? sorted[runs / 2] : (sorted[runs / 2 - 1] + sorted[runs / 2]) / 2;
		printf("%s machine description: boot to Ready median %lld ms (min %lld, max %lld, "
		       "%d boots, %u vCPU%s, nested TCG)\n",
		       name[k], med[k] / 1000, sorted[0] / 1000, sorted[runs - 1] / 1000, runs, vcpus,
		       vcpus > 1 ? "s" : "");
	}
	printf("boot ratio old/new: %.2fx\n", (double)med[0] / (double)med[1]);
	fflush(stdout);
	for (int i = 0; i < runs; i++)
		for (int k = 0; k < 2; k++)
			guest_stop(&g[k][i]);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(boot_invoke, vmm_teardown),
		cmocka_unit_test_teardown(restore_answers, vmm_teardown),
		cmocka_unit_test_teardown(clones_differ, vmm_teardown),
		cmocka_unit_test_teardown(ten_clones, vmm_teardown),
		cmocka_unit_test_teardown(smp_two_vcpus, vmm_teardown),
		cmocka_unit_test_teardown(restore_any_cpu, vmm_teardown),
		cmocka_unit_test_teardown(boot_clean, vmm_teardown),
		cmocka_unit_test_teardown(boot_compare, vmm_teardown),
	};
	kernel = lab_require();
	build_image();
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
