/*
 * bench_vmm_qemu.c - QEMU's snapshot restore, the reference hearth-vmm is
 * measured against: a migration stream of the same guest with the same RAM
 * size, written once through QMP `migrate`, loaded by a fresh QEMU with
 * `-incoming "exec:cat FILE"`. "Running" is QMP query-status saying so
 * (QEMU has no vhost-vsock here, so there is no vsock reply to wait for, and
 * the guest idles in hlt without console output once restored).
 * QMP goes through bench_qmp.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_qmp.h"
#include "bench_vmm.h"
#include "harness.h"

#define BOOT_TIMEOUT_MS 15000
#define QMP_TIMEOUT_MS 15000

static void seterr(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

/* Starts QEMU; incoming NULL boots the guest, else loads that migration file. */
static pid_t qemu_start(struct bv_qemu *q, const char *accel, const char *qmp_path,
			const char *console, const char *incoming)
{
	struct bv_qemu_opts o = {
		.bin = q->bin,
		.machine = "microvm,rtc=off,pic=off,pit=off,isa-serial=on",
		.accel = accel,
		.cpu = "qemu64",
		.mem_mib = q->mem_mib,
		.nographic = true,
		.console_id = "c0",
		.console = console,
		.kernel = q->guest,
		.qmp = qmp_path,
		.incoming = incoming,
	};
	struct bv_qemu_argv a;
	if (bv_qemu_argv(&o, &a) < 0)
		return -1;
	char errlog[400];
	snprintf(errlog, sizeof(errlog), "%s/qemu.stderr", q->dir);
	return bv_spawn(a.av, -1, -1, errlog);
}

/* The last line QEMU wrote to stderr (warnings about the CPU model are expected). */
static void qemu_last_error(struct bv_qemu *q, char *out, size_t len)
{
	char p[400];
	snprintf(p, sizeof(p), "%s/qemu.stderr", q->dir);
	char *s = slurp(p, NULL);
	size_t n = strlen(s);
	while (n && s[n - 1] == '\n')
		s[--n] = 0;
	char *last = strrchr(s, '\n');
	snprintf(out, len, "%s", last ? last + 1 : s[0] ? s : "(nothing on stderr)");
	free(s);
}

static int file_nonempty(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && st.st_size > 0;
}

/* Boots, waits for the console, migrates to q->mig. Returns 0 or -1. */
static int make_snapshot(struct bv_qemu *q, const char *accel, char *err, size_t errlen)
{
	char qmp_path[400], console[400], cmd[900];
	snprintf(qmp_path, sizeof(qmp_path), "%s/boot.qmp", q->dir);
	snprintf(console, sizeof(console), "%s/boot.console", q->dir);
	unlink(qmp_path);
	unlink(console);
	unlink(q->mig);
	pid_t pid = qemu_start(q, accel, qmp_path, console, NULL);
	if (pid < 0) {
		seterr(err, errlen, "fork failed");
		return -1;
	}
	struct qmp m = { .fd = -1 };
	int rc = -1;
	long long deadline = now_us() + BOOT_TIMEOUT_MS * 1000LL;
	while (!file_nonempty(console)) {
		if (bv_exited(pid) || now_us() > deadline) {
			char last[200];
			qemu_last_error(q, last, sizeof(last));
			seterr(err, errlen, "the guest printed nothing under -accel %s: %s", accel, last);
			pid = -1;
			goto out;
		}
		usleep(1000);
	}
	usleep(100 * 1000); /* let the guest reach its idle hlt */
	if (qmp_open(&m, qmp_path, pid, deadline, err, errlen) < 0)
		goto out;
	/* Live (not stopped first): the destination then starts running on its own. */
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > %s\"}}\n", q->mig);
	json_t *r = qmp_cmd(&m, cmd, deadline, err, errlen);
	if (!r)
		goto out;
	json_decref(r);
	for (;;) {
		r = qmp_cmd(&m, "{\"execute\":\"query-migrate\"}\n", deadline, err, errlen);
		if (!r)
			goto out;
		const char *st = json_string_value(json_object_get(r, "status"));
		int done = st && !strcmp(st, "completed"), failed = !st || !strcmp(st, "failed");
		char stcopy[64];
		snprintf(stcopy, sizeof(stcopy), "%s", st ? st : "(none)");
		json_decref(r);
		if (done)
			break;
		if (failed || now_us() > deadline) {
			seterr(err, errlen, "migration to %s did not complete: %s", q->mig, stcopy);
			goto out;
		}
		usleep(2000);
	}
	rc = 0;
out:
	qmp_close(&m);
	if (pid > 0)
		bv_stop(pid, SIGTERM, 5000);
	return rc;
}

long long bv_qemu_restore(struct bv_qemu *q, int settle_ms, struct bv_mem mem[2], char *err,
			  size_t errlen)
{
	char qmp_path[400], console[400];
	snprintf(qmp_path, sizeof(qmp_path), "%s/restore.qmp", q->dir);
	snprintf(console, sizeof(console), "%s/restore.console", q->dir);
	unlink(qmp_path);
	struct qmp m = { .fd = -1 };
	long long t0 = now_us(), t = -1;
	pid_t pid = qemu_start(q, q->accel, qmp_path, console, q->mig);
	if (pid < 0) {
		seterr(err, errlen, "fork failed");
		return -1;
	}
	long long deadline = t0 + QMP_TIMEOUT_MS * 1000LL;
	if (qmp_open(&m, qmp_path, pid, deadline, err, errlen) < 0)
		goto out;
	for (;;) {
		json_t *r = qmp_cmd(&m, "{\"execute\":\"query-status\"}\n", deadline, err, errlen);
		if (!r)
			goto out;
		const char *st = json_string_value(json_object_get(r, "status"));
		int running = st && !strcmp(st, "running");
		char stcopy[64];
		snprintf(stcopy, sizeof(stcopy), "%s", st ? st : "(none)");
		json_decref(r);
		if (running) {
			t = now_us() - t0;
			break;
		}
		/* "inmigrate" while loading; anything else means the restore went wrong. */
		if (strcmp(stcopy, "inmigrate") || now_us() > deadline) {
			char last[200];
			qemu_last_error(q, last, sizeof(last));
			seterr(err, errlen, "QEMU restore ended in state '%s': %s", stcopy, last);
			goto out;
		}
		usleep(100);
	}
	if (mem) {
		usleep((useconds_t)settle_ms * 1000);
		if (bv_mem_rollup(pid, &mem[0]) < 0 ||
		    bv_mem_mapping(pid, NULL, (long long)q->mem_mib * 1024, &mem[1]) != 1) {
			seterr(err, errlen, "QEMU's guest RAM mapping (anonymous, %d MiB) not found in smaps",
			       q->mem_mib);
			t = -1;
		}
	}
out:
	qmp_close(&m);
	bv_stop(pid, SIGKILL, 5000);
	return t;
}

int bv_qemu_prepare(struct bv_qemu *q, char *err, size_t errlen)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(q->dir, sizeof(q->dir), "%s/bench-vmm-qemu-XXXXXX", tmp);
	if (!mkdtemp(q->dir)) {
		q->dir[0] = 0;
		seterr(err, errlen, "mkdtemp: %s", strerror(errno));
		return -1;
	}
	snprintf(q->mig, sizeof(q->mig), "%s/snapshot.mig", q->dir);
	if (access(q->bin, X_OK) < 0) {
		seterr(err, errlen, "%s: %s", q->bin, strerror(errno));
		return -1;
	}
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "%s -version", q->bin);
	FILE *f = popen(cmd, "r");
	q->version[0] = 0;
	if (f) {
		if (fgets(q->version, sizeof(q->version), f))
			q->version[strcspn(q->version, "\n")] = 0;
		pclose(f);
	}
	static const char *const accels[] = { "kvm", "tcg" };
	char e[512] = "";
	/* QEMU_ACCEL=tcg skips KVM (to exercise the fallback, or to compare against TCG). */
	const char *force = getenv("QEMU_ACCEL");
	int first = force && !strcmp(force, "tcg");
	if (first)
		snprintf(q->why_not_kvm, sizeof(q->why_not_kvm), "not tried: QEMU_ACCEL=tcg");
	for (int i = first; i < 2; i++) {
		q->accel = accels[i];
		if (make_snapshot(q, q->accel, e, sizeof(e)) == 0 &&
		    bv_qemu_restore(q, 0, NULL, e, sizeof(e)) >= 0)
			return 0;
		if (i == 0) {
			/* Keep what fits: the reason is for humans. */
			size_t n = strnlen(e, sizeof(q->why_not_kvm) - 1);

			memcpy(q->why_not_kvm, e, n);
			q->why_not_kvm[n] = 0;
		}
	}
	seterr(err, errlen, "QEMU snapshot/restore failed under kvm (%s) and tcg (%s)", q->why_not_kvm,
	       e);
	return -1;
}

void bv_qemu_cleanup(struct bv_qemu *q)
{
	static const char *const files[] = { "snapshot.mig", "boot.qmp", "boot.console",
					     "restore.qmp", "restore.console", "qemu.stderr" };
	if (!q->dir[0])
		return;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char p[400];
		snprintf(p, sizeof(p), "%s/%s", q->dir, files[i]);
		unlink(p);
	}
	rmdir(q->dir);
	q->dir[0] = 0;
}
