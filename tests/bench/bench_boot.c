/*
 * bench_boot.c - boot, invoke and save/restore latency of real function VMs
 * under the libvirt engine (run by `ci/bench boot`).
 *
 * Each run boots a fresh VM from the echo function image and measures:
 *   cold boot to Ready   hearth_vm_create() -> agent Hello -> Configure -> Ready
 *   first invoke         the first Invoke after Ready
 *   warm invoke          the median of the next --warm invokes
 *   save                 hearth_vm_save() (virDomainSave, suspend to disk)
 *   restore              hearth_vm_restore() (virDomainRestore)
 *   restore to invoke    restore + reconnect + Hello + Reseed + one Invoke
 * and prints the p50 (with min and max) over --runs runs, in milliseconds,
 * with the accelerator the engine picked and the host CPU.
 *
 * usage: bench_boot --kernel BZIMAGE --agent HEARTH_AGENT --fn FN_ECHO
 *                   [--runs N] [--warm N] [--memory MB] [--work DIR]
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "bench_json.h"
#include "engine.h"
#include "image.h"

enum { M_BOOT, M_FIRST, M_WARM, M_SAVE, M_RESTORE, M_RESTORE_INVOKE, M_N };
static const char *const metric_names[M_N] = {
	"cold boot to Ready", "first invoke", "warm invoke", "save (suspend to disk)",
	"restore", "restore to first invoke",
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "bench_boot: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void invoke_ok(struct agent_conn *c, const char *id)
{
	static const char payload[] = "benchmark payload";
	struct agent_result r;
	int rc = agent_invoke(c, id, payload, sizeof(payload) - 1, 0, 30000, &r);

	if (rc)
		die("invoke %s: %s (%s)", id, agent_strerror(rc), agent_last_error(c));
	if (r.status != AGENT_INVOKE_OK || r.body_len != sizeof(payload) - 1)
		die("invoke %s: status %s", id, agent_invoke_status_name(r.status));
	agent_result_free(&r);
}

static struct agent_conn *hello(struct hearth_vm *vm)
{
	struct agent_conn *c;
	char err[512];
	int rc;

	if (hearth_vm_connect(vm, 60000, &c, err, sizeof(err)))
		die("connect: %s", err);
	rc = agent_hello(c, 60000, NULL);
	if (rc)
		die("hello: %s", agent_strerror(rc));
	return c;
}

static void cpu_model(char *out, size_t len)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(out, len, "unknown CPU");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
			snprintf(out, len, "%s", strchr(line, ':') + 2);
			out[strcspn(out, "\n")] = '\0';
			break;
		}
	fclose(f);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"kernel", required_argument, NULL, 'k'}, {"agent", required_argument, NULL, 'a'},
		{"fn", required_argument, NULL, 'f'},     {"runs", required_argument, NULL, 'r'},
		{"warm", required_argument, NULL, 'w'},   {"memory", required_argument, NULL, 'm'},
		{"work", required_argument, NULL, 'd'},   {NULL, 0, NULL, 0},
	};
	const char *kernel = NULL, *agent = NULL, *fn = NULL, *work = "/tmp/hearth-bench-work";
	int runs = 5, warm = 5, memory = 128, c;
	struct hearth_engine_config cfg = {
		.kind = HEARTH_ENGINE_LIBVIRT,
		.run_dir = "/tmp/hearth-bench",
		.name_prefix = "hearth-bench-",
	};
	struct hearth_image_opts io = {0};
	struct hearth_image img;
	struct hearth_engine *e;
	char err[512], path[4096], cpu[256];
	double *m[M_N];

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'k': kernel = optarg; break;
		case 'a': agent = optarg; break;
		case 'f': fn = optarg; break;
		case 'r': runs = atoi(optarg); break;
		case 'w': warm = atoi(optarg); break;
		case 'm': memory = atoi(optarg); break;
		case 'd': work = optarg; break;
		default: return 2;
		}
	}
	if (!kernel || !agent || !fn || runs < 1 || warm < 1)
		die("usage: bench_boot --kernel BZIMAGE --agent AGENT --fn FN_ECHO [--runs N] "
		    "[--warm N] [--memory MB] [--work DIR]");

	/* The echo function package, as in the e2e tests. */
	snprintf(path, sizeof(path), "rm -rf '%s/pkg' && mkdir -p '%s/pkg' && cp '%s' '%s/pkg/fn' &&"
		 " printf '{\"handler\": \"fn\", \"memory_mb\": %d}' > '%s/pkg/manifest.json'",
		 work, work, fn, work, memory, work);
	if (system(path) != 0)
		die("preparing the package in %s failed", work);
	snprintf(path, sizeof(path), "%s/pkg", work);
	io.package = path;
	io.agent = agent;
	io.out_dir = work;
	if (hearth_image_build(&io, &img, err, sizeof(err)))
		die("image: %s", err);
	if (hearth_engine_open(&cfg, &e, err, sizeof(err)))
		die("engine: %s", err);
	for (int i = 0; i < M_N; i++)
		if (!(m[i] = calloc((size_t)runs, sizeof(double))))
			die("out of memory");

	for (int run = 0; run < runs; run++) {
		struct hearth_vm_spec spec = {.kernel = kernel, .initrd = img.path,
					      .memory_mb = img.manifest.memory_mb};
		struct agent_config ac = {.handler = img.manifest.handler};
		double t0, w[64];
		unsigned char seed[32] = {0};
		struct hearth_vm *vm;
		struct agent_conn *conn;
		char id[32];
		int rc, nw = warm > 64 ? 64 : warm;

		t0 = now_ms();
		if (hearth_vm_create(e, &spec, &vm, err, sizeof(err)))
			die("create: %s", err);
		conn = hello(vm);
		rc = agent_configure(conn, &ac, 60000, NULL);
		if (rc)
			die("configure: %s (%s)", agent_strerror(rc), agent_last_error(conn));
		m[M_BOOT][run] = now_ms() - t0;

		t0 = now_ms();
		invoke_ok(conn, "first");
		m[M_FIRST][run] = now_ms() - t0;
		for (int i = 0; i < nw; i++) {
			snprintf(id, sizeof(id), "warm-%d", i);
			t0 = now_ms();
			invoke_ok(conn, id);
			w[i] = now_ms() - t0;
		}
		m[M_WARM][run] = median(w, nw);

		agent_close(conn);
		t0 = now_ms();
		if (hearth_vm_save(vm, err, sizeof(err)))
			die("save: %s", err);
		m[M_SAVE][run] = now_ms() - t0;

		t0 = now_ms();
		if (hearth_vm_restore(vm, err, sizeof(err)))
			die("restore: %s", err);
		m[M_RESTORE][run] = now_ms() - t0;
		conn = hello(vm);
		rc = agent_reseed(conn, seed, sizeof(seed), 30000);
		if (rc)
			die("reseed: %s", agent_strerror(rc));
		invoke_ok(conn, "restored");
		m[M_RESTORE_INVOKE][run] = now_ms() - t0;

		agent_close(conn);
		if (hearth_vm_destroy(vm, err, sizeof(err)))
			die("destroy: %s", err);
		fprintf(stderr, "run %d/%d: boot %.0f ms, first %.1f ms, warm %.1f ms, save %.0f ms, "
				"restore %.0f ms\n",
			run + 1, runs, m[M_BOOT][run], m[M_FIRST][run], m[M_WARM][run],
			m[M_SAVE][run], m[M_RESTORE][run]);
	}

	cpu_model(cpu, sizeof(cpu));
	printf("bench boot: libvirt engine, accelerator %s, %d runs, %d MiB guest, %s, %ld CPUs\n",
	       strcmp(hearth_engine_accel(e), "kvm") ? "TCG (QEMU emulation)" : "KVM", runs,
	       memory, cpu, sysconf(_SC_NPROCESSORS_ONLN));
	char eng[160];
	snprintf(eng, sizeof(eng), "libvirt engine, QEMU q35, accelerator %s",
		 strcmp(hearth_engine_accel(e), "kvm") ? "TCG (QEMU emulation)" : "KVM");
	json_t *js = bj_new("boot", "real function VMs under the libvirt engine (echo function)", eng);
	static const char *const keys[M_N] = { "boot_us", "first_invoke_us", "warm_us", "save_us",
					       "restore_us", "restore_invoke_us" };
	static const char *const kinds[M_N] = { "boot", "other", "warm", "other", "restore", "other" };
	for (int i = 0; i < M_N; i++) {
		double us[runs];
		char l[200];
		for (int r = 0; r < runs; r++)
			us[r] = m[i][r] * 1000;
		snprintf(l, sizeof(l), "libvirt %s%s", metric_names[i],
			 i == M_WARM ? " (median of each run's warm invokes)" : "");
		bj_samples(js, keys[i], kinds[i], l, "us", us, runs);
	}
	printf("%-26s %10s %10s %10s\n", "metric (ms)", "p50", "min", "max");
	for (int i = 0; i < M_N; i++) {
		double p50 = median(m[i], runs);

		printf("%-26s %10.1f %10.1f %10.1f\n", metric_names[i], p50, m[i][0],
		       m[i][runs - 1]);
		if (i == M_BOOT || i == M_RESTORE)
			bj_figure(js, i == M_BOOT ? "boot_p50_us" : "restore_p50_us", p50 * 1000, "us",
				  metric_names[i]);
		free(m[i]);
	}
	if (bj_write(js) < 0)
		return 1;
	hearth_image_free(&img);
	hearth_engine_close(e);
	rmdir(cfg.run_dir);
	return 0;
}
