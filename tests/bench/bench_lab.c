/*
 * bench_lab - `ci/bench lab`: hearth-vmm next to QEMU (-accel kvm) with a real
 * Linux function, side by side in one run inside the KVM lab (ci/kvm-lab: L1
 * under QEMU TCG with an emulated AMD SVM CPU, /dev/kvm with the real KVM
 * interface). Same guest kernel (kernel-config/ vmlinux), same image (the lab's
 * probe package with hearth-agent as /init), 256 MiB, 1 vCPU, same command line.
 *
 *  1. boot to agent Ready: process start (just before fork/exec of the VMM) ->
 *     the agent's Ready, i.e. the host connected, Hello answered, Configure
 *     sent and answered with Ready;
 *  2. restore to the first agent reply: process start of the restoring VMM ->
 *     the restored agent's answer to Hello (the first message the host sends;
 *     it connects as soon as the VMM's socket exists).
 *     hearth-vmm restores its own snapshot (control socket `snapshot MEM
 *     STATE`, taken after Ready with the host connection open, as hearthd does;
 *     restored with --no-verify-memory). QEMU restores with -incoming
 *     "exec:cat FILE" a migration stream (QMP `migrate` to "exec:cat > FILE")
 *     of a VM it booted to Ready, its agent connection open too.
 *  3. pooled restore to the first agent reply: a hearth-vmm --pool of the
 *     snapshot's shape, started and ready beforehand (untimed, as hearthd's
 *     pool keeps them), from the control command `restore STATE MEM
 *     vsock=...` being sent -> the restored agent's answer to Hello.
 *  4. working-set prefetch: hearth-vmm restore (spawned) -> the first Invoke
 *     answered (Hello, Reseed, Invoke: the function's first run touches what
 *     a cold start needs), without and with --prefetch of the working set
 *     recorded from one clone's first Invoke (control `workset FILE`).
 *  Each restored agent then gets Reseed and an Invoke (untimed) to show that
 *  the clone really works.
 *
 * Agent channels: hearth-vmm, virtio-vsock through its hybrid vsock socket
 * (port 52). QEMU, -M microvm with a virtio-serial port named
 * HEARTH_AGENT_SERIAL_NAME (virtio-serial-device on virtio-mmio) bound to a
 * chardev Unix socket, as the libvirt engine does on hosts without
 * vhost-vsock; the agent picks it by name.
 *
 * Runs are interleaved (hearth-vmm, QEMU, hearth-vmm, ...) so that drift in
 * the shared host hits both alike. Prints median, min and max per figure and
 * `boot ratio qemu/hearth-vmm: <N>x`, `restore ratio qemu/hearth-vmm: <N>x` and
 * `restore ratio qemu/pooled hearth-vmm: <N>x`.
 * A side that fails says why, and no figure is printed for it.
 *
 * usage: bench_lab [runs]   (default 5; only inside the lab: HEARTH_LAB=1)
 *   env QEMU=/path/to/qemu-system-x86_64, QEMU_ACCEL=tcg (to try the QEMU
 *       path off the lab), HEARTH_VMM=/path/to/hearth-vmm,
 *       HEARTH_KEEP_TMP=1 (keep the consoles, logs and snapshots),
 *       $HEARTH_LAB_DIR/host-machine: the host's CPU line (ci/bench.d/lab)
 */
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_client.h"
#include "bench_qmp.h"
#include "bench_vmm.h"
#include "harness.h"
#include "image.h"
#include "bench_json.h"
#include "lab_env.h"
#include "msg.h"

#define MAX_RUNS 50
#define MEM_MIB "256"
#define CMDLINE "console=ttyS0 quiet panic=-1"
/* Nested TCG is slow: these bound hangs, they measure nothing. */
#define BOOT_MS (getenv("BENCH_LAB_BOOT_MS") ? atoi(getenv("BENCH_LAB_BOOT_MS")) : 150000)
#define RESTORE_MS 60000
#define INVOKE_MS 60000

static char work[256];
static char kernel[600], image[512], handler[256];
static const char *qemu_bin = "/usr/bin/qemu-system-x86_64";
static const char *qemu_accel = "kvm";
static char qemu_version[128] = "?";
/* Each side's guest console of its first boot (quiet: critical lines, the agent's), shown last. */
static char *first_console[2];

/* One VMM process and what the host holds of it. */
struct vm {
	pid_t pid;
	char tag[32];
	char sock[320], ctl[320], qmp[320], console[320], errlog[320];
	struct agent_conn *c;
};

/* One figure: the successful runs, or why there are none. */
struct fig {
	long long us[MAX_RUNS];
	int n, tried;
	char why[600];
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench_lab: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void why(struct fig *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void why(struct fig *f, const char *fmt, ...)
{
	if (f->why[0])
		return; /* the first failure explains; later ones are usually the same */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->why, sizeof(f->why), fmt, ap);
	va_end(ap);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(p);
	return 0;
}

static void rm_work(void)
{
	if (work[0] && getenv("HEARTH_KEEP_TMP"))
		fprintf(stderr, "bench_lab: kept %s\n", work);
	else if (work[0])
		nftw(work, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void find_kernel(void)
{
	const char *k = lab_kernel();
	if (!k)
		die("the guest kernel is not built (run kernel-config/build)");
	snprintf(kernel, sizeof(kernel), "%s", k);
}

static void build_image(void)
{
	struct hearth_image img;
	char err[512], out[300];
	snprintf(out, sizeof(out), "%s/images", work);
	struct hearth_image_opts o = {
		.package = LAB_FNS_DIR "/probe",
		.agent = HEARTH_AGENT_BIN,
		.out_dir = out,
	};
	if (hearth_image_build(&o, &img, err, sizeof(err)) < 0)
		die("building the probe image: %s", err);
	snprintf(image, sizeof(image), "%s", img.path);
	snprintf(handler, sizeof(handler), "%s", img.manifest.handler);
	hearth_image_free(&img);
}

static void vm_init(struct vm *v, const char *tag)
{
	memset(v, 0, sizeof(*v));
	v->pid = -1;
	snprintf(v->tag, sizeof(v->tag), "%s", tag);
	snprintf(v->sock, sizeof(v->sock), "%s/%s.sock", work, tag);
	snprintf(v->ctl, sizeof(v->ctl), "%s/%s.ctl", work, tag);
	snprintf(v->qmp, sizeof(v->qmp), "%s/%s.qmp", work, tag);
	snprintf(v->console, sizeof(v->console), "%s/%s.console", work, tag);
	snprintf(v->errlog, sizeof(v->errlog), "%s/%s.stderr", work, tag);
	unlink(v->sock);
	unlink(v->ctl);
	unlink(v->qmp);
	unlink(v->console);
	unlink(v->errlog);
}

/* Ends the VMM and its files: nothing outlives a run. */
static void vm_end(struct vm *v)
{
	agent_close(v->c);
	v->c = NULL;
	if (v->pid > 0)
		bv_stop(v->pid, SIGKILL, 5000);
	v->pid = -1;
	if (getenv("HEARTH_KEEP_TMP"))
		return;
	unlink(v->sock);
	unlink(v->ctl);
	unlink(v->qmp);
	unlink(v->console);
	unlink(v->errlog);
}

/* The last non-empty line of a file, for failure messages. */
static void last_line(const char *path, char *out, size_t len)
{
	char *s = slurp(path, NULL);
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = 0;
	char *l = strrchr(s, '\n');
	snprintf(out, len, "%s", l ? l + 1 : s[0] ? s : "(empty)");
	free(s);
}

static void vm_failure(struct vm *v, struct fig *f, const char *what)
{
	char e[200], c[200];
	last_line(v->errlog, e, sizeof(e));
	last_line(v->console, c, sizeof(c));
	why(f, "%s: %s (VMM %s; stderr: %s; console: %s)", v->tag, what,
	    v->pid > 0 && !bv_exited(v->pid) ? "running" : "exited", e, c);
}

/* ---- starting VMMs ------------------------------------------------------- */

static pid_t hvmm_start(struct vm *v, const char *snap_mem, const char *snap_state)
{
	const char *av[32];
	int n = 0;
	av[n++] = vmm_bin();
	av[n++] = "--console";
	av[n++] = v->console;
	if (snap_mem) {
		av[n++] = "--restore";
		av[n++] = snap_state;
		av[n++] = "--restore-mem";
		av[n++] = snap_mem;
		av[n++] = "--no-verify-memory";
	} else {
		av[n++] = "--kernel";
		av[n++] = kernel;
		av[n++] = "--initrd";
		av[n++] = image;
		av[n++] = "--mem";
		av[n++] = MEM_MIB;
		av[n++] = "--vcpus";
		av[n++] = "1";
		av[n++] = "--cmdline";
		av[n++] = CMDLINE;
	}
	av[n++] = "--vsock-socket";
	av[n++] = v->sock;
	av[n++] = "--control";
	av[n++] = v->ctl;
	av[n] = NULL;
	return v->pid = bv_spawn(av, -1, -1, v->errlog);
}

static pid_t qemu_start(struct vm *v, const char *incoming)
{
	char agent[400];
	snprintf(agent, sizeof(agent), "socket,id=agent,path=%s,server=on,wait=off", v->sock);
	const char *const devices[] = {
		"-device", "virtio-serial-device",
		"-chardev", agent,
		"-device", "virtserialport,chardev=agent,name=" HEARTH_AGENT_SERIAL_NAME,
		NULL,
	};
	struct bv_qemu_opts o = {
		.bin = qemu_bin,
		.machine = "microvm",
		.accel = qemu_accel,
		.cpu = strcmp(qemu_accel, "kvm") ? "max" : "host",
		.mem_mib = atoi(MEM_MIB),
		.smp = "1",
		.no_reboot = true,
		.console_id = "con",
		.console = v->console,
		.kernel = kernel,
		.initrd = image,
		.append = CMDLINE,
		.extra = devices,
		.qmp = v->qmp,
		.incoming = incoming,
	};
	struct bv_qemu_argv a;
	if (bv_qemu_argv(&o, &a) < 0)
		return v->pid = -1;
	return v->pid = bv_spawn(a.av, -1, -1, v->errlog);
}

/* Connects to the agent as soon as the VMM's socket takes it, then Hello. */
static int agent_up(struct vm *v, bool qemu, int timeout_ms, struct fig *f)
{
	long long deadline = now_us() + (long long)timeout_ms * 1000;
	int rc;
	for (;;) {
		rc = qemu ? agent_connect_unix(v->sock, 200, &v->c)
			  : agent_connect_hybrid_vsock(v->sock, HEARTH_AGENT_VSOCK_PORT, 200, &v->c);
		if (rc == 0)
			break;
		if (bv_exited(v->pid)) {
			v->pid = -1;
			vm_failure(v, f, "the VMM exited before its agent answered");
			return -1;
		}
		if (now_us() > deadline) {
			vm_failure(v, f, "no agent connection");
			return -1;
		}
		usleep(1000);
	}
	int left = (int)((deadline - now_us()) / 1000);
	rc = agent_hello(v->c, left > 0 ? left : 1, NULL);
	if (rc != 0) {
		char w[100];
		snprintf(w, sizeof(w), "Hello: %s", agent_strerror(rc));
		vm_failure(v, f, w);
		return -1;
	}
	return 0;
}

static int configure(struct vm *v, struct fig *f)
{
	const char *args[] = { NULL };
	struct agent_config ac = {
		.handler = handler,
		.args = args,
		.workdir = "/var/task",
		.timeout_ms = 30000,
	};
	int rc = agent_configure(v->c, &ac, BOOT_MS, NULL);
	if (rc != 0) {
		char w[300];
		snprintf(w, sizeof(w), "Configure: %s: %s", agent_strerror(rc), agent_last_error(v->c));
		vm_failure(v, f, w);
		return -1;
	}
	return 0;
}

/* Reseed, then an Invoke that must echo: the clone works, not just answers. */
static int clone_works(struct vm *v, struct fig *f)
{
	uint8_t seed[32];
	if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		die("getrandom: %s", strerror(errno));
	int rc = agent_reseed(v->c, seed, sizeof(seed), RESTORE_MS);
	if (rc != 0) {
		char w[100];
		snprintf(w, sizeof(w), "Reseed: %s", agent_strerror(rc));
		vm_failure(v, f, w);
		return -1;
	}
	struct agent_result res;
	memset(&res, 0, sizeof(res));
	rc = agent_invoke(v->c, "bench", "restored", 8, 0, INVOKE_MS, &res);
	bool ok = rc == 0 && res.status == AGENT_INVOKE_OK && res.body_len == 14 &&
		  !memcmp(res.body, "echo=restored\n", 14);
	if (!ok) {
		char w[300];
		snprintf(w, sizeof(w), "Invoke after restore: %s, status %s, body '%.*s'",
			 agent_strerror(rc), agent_invoke_status_name(res.status),
			 (int)(res.body_len > 60 ? 60 : res.body_len), res.body ? (char *)res.body : "");
		vm_failure(v, f, w);
	}
	agent_result_free(&res);
	return ok ? 0 : -1;
}

/* ---- snapshots --------------------------------------------------------- */

static int hvmm_snapshot(struct vm *v, const char *mem, const char *state, struct fig *f)
{
	char cmd[800];
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", mem, state);
	const char *rep = vmm_ctl(v->ctl, cmd);
	if (!rep || strncmp(rep, "OK snapshot", 11)) {
		char w[300];
		snprintf(w, sizeof(w), "snapshot: %s", rep ? rep : "(no answer on the control socket)");
		vm_failure(v, f, w);
		return -1;
	}
	return 0;
}

/* Live migration of the running VM into a file, as `virsh save` does it. */
static int qemu_snapshot(struct vm *v, const char *mig, struct fig *f)
{
	struct qmp q = { .fd = -1 };
	char err[400], cmd[600];
	long long deadline = now_us() + RESTORE_MS * 1000LL;
	int rc = -1;
	if (qmp_open(&q, v->qmp, v->pid, deadline, err, sizeof(err)) < 0)
		goto out;
	snprintf(cmd, sizeof(cmd),
		 "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > %s\"}}\n", mig);
	json_t *r = qmp_cmd(&q, cmd, deadline, err, sizeof(err));
	if (!r)
		goto out;
	json_decref(r);
	for (;;) {
		r = qmp_cmd(&q, "{\"execute\":\"query-migrate\"}\n", deadline, err, sizeof(err));
		if (!r)
			goto out;
		const char *st = json_string_value(json_object_get(r, "status"));
		char s[64];
		snprintf(s, sizeof(s), "%s", st ? st : "(none)");
		json_decref(r);
		if (!strcmp(s, "completed"))
			break;
		if (!strcmp(s, "failed") || now_us() > deadline) {
			snprintf(err, sizeof(err), "migration to %s ended '%s'", mig, s);
			goto out;
		}
		usleep(5000);
	}
	rc = 0;
out:
	qmp_close(&q);
	if (rc < 0)
		vm_failure(v, f, err);
	return rc;
}

/* ---- the runs ---------------------------------------------------------- */

/*
 * One boot to Ready; if snap (hearth-vmm: mem, state; QEMU: the migration
 * file) is given, the Ready VM is then snapshotted (untimed). Returns 0 or -1.
 */
static int boot_once(bool qemu, int i, struct fig *f, const char *snap1, const char *snap2,
		     struct fig *snapfig)
{
	struct vm v;
	char tag[32];
	snprintf(tag, sizeof(tag), "%s-boot%d", qemu ? "qemu" : "hvmm", i);
	vm_init(&v, tag);
	f->tried++;
	long long t0 = now_us();
	if ((qemu ? qemu_start(&v, NULL) : hvmm_start(&v, NULL, NULL)) < 0)
		die("fork: %s", strerror(errno));
	int rc = agent_up(&v, qemu, BOOT_MS, f);
	if (rc == 0)
		rc = configure(&v, f);
	if (rc == 0) {
		f->us[f->n++] = now_us() - t0;
		if (!first_console[qemu])
			first_console[qemu] = slurp(v.console, NULL);
		if (snap1)
			rc = qemu ? qemu_snapshot(&v, snap1, snapfig)
				  : hvmm_snapshot(&v, snap1, snap2, snapfig);
	}
	vm_end(&v);
	return rc;
}

static void restore_once(bool qemu, int i, struct fig *f, const char *snap1, const char *snap2)
{
	struct vm v;
	char tag[32];
	snprintf(tag, sizeof(tag), "%s-restore%d", qemu ? "qemu" : "hvmm", i);
	vm_init(&v, tag);
	f->tried++;
	long long t0 = now_us();
	if ((qemu ? qemu_start(&v, snap1) : hvmm_start(&v, snap1, snap2)) < 0)
		die("fork: %s", strerror(errno));
	if (agent_up(&v, qemu, RESTORE_MS, f) == 0) {
		long long t = now_us() - t0;
		if (clone_works(&v, f) == 0)
			f->us[f->n++] = t;
	}
	vm_end(&v);
}

/* A pooled hearth-vmm, made ready untimed; timed from the 'restore' command to Hello. */
static void pooled_once(int i, struct fig *f, const char *snap_mem, const char *snap_state)
{
	struct vm v;
	char tag[32], cmd[1200];
	snprintf(tag, sizeof(tag), "hvmm-pooled%d", i);
	vm_init(&v, tag);
	f->tried++;
	const char *av[] = { vmm_bin(), "--pool", "--mem", MEM_MIB, "--vcpus", "1", "--console",
			     v.console, "--control", v.ctl, NULL };
	if ((v.pid = bv_spawn(av, -1, -1, v.errlog)) < 0)
		die("fork: %s", strerror(errno));
	const char *r = vmm_ctl(v.ctl, "status");
	if (!r || strncmp(r, "OK state=pooled", 15)) {
		vm_failure(&v, f, "the pooled process never said it was pooled");
		vm_end(&v);
		return;
	}
	snprintf(cmd, sizeof(cmd), "restore %s %s vsock=%s", snap_state, snap_mem, v.sock);
	long long t0 = now_us();
	r = vmm_ctl(v.ctl, cmd);
	if (!r || strncmp(r, "OK restored", 11)) {
		why(f, "%s: restore refused: %s", tag, r ? r : "(no answer)");
		vm_end(&v);
		return;
	}
	if (agent_up(&v, false, RESTORE_MS, f) == 0) {
		long long t = now_us() - t0;
		if (clone_works(&v, f) == 0)
			f->us[f->n++] = t;
	}
	vm_end(&v);
}

/*
 * Spawned restore -> first Invoke answered, with the working set ws prefetched
 * or not; when record is set, this clone's working set is written there.
 */
static void invoke_once(int i, struct fig *f, const char *snap_mem, const char *snap_state,
			const char *ws, const char *record)
{
	struct vm v;
	char tag[32];
	snprintf(tag, sizeof(tag), "hvmm-%s%d", ws ? "pf" : "nopf", i);
	vm_init(&v, tag);
	f->tried++;
	const char *av[] = { vmm_bin(), "--console", v.console, "--restore", snap_state,
			     "--restore-mem", snap_mem, "--no-verify-memory", "--vsock-socket", v.sock,
			     "--control", v.ctl, ws ? "--prefetch" : NULL, ws, NULL };
	long long t0 = now_us();
	if ((v.pid = bv_spawn(av, -1, -1, v.errlog)) < 0)
		die("fork: %s", strerror(errno));
	if (agent_up(&v, false, RESTORE_MS, f) == 0 && clone_works(&v, f) == 0) {
		f->us[f->n++] = now_us() - t0;
		if (record) {
			char cmd[800];
			snprintf(cmd, sizeof(cmd), "workset %s", record);
			const char *r = vmm_ctl(v.ctl, cmd);
			printf("  working set of a clone's first Invoke: %s\n", r ? r : "(no answer)");
		}
	}
	vm_end(&v);
}

/* ---- output ------------------------------------------------------------ */

/* median (nearest rank, as bv_pct), min, max in ms; false if there is no figure. */
static bool stats(struct fig *f, double *med, double *min, double *max)
{
	if (f->n == 0)
		return false;
	long long v[MAX_RUNS], p50, p99;
	memcpy(v, f->us, sizeof(long long) * (size_t)f->n);
	bv_pct(v, f->n, &p50, &p99);
	*med = p50 / 1000.0;
	*min = v[0] / 1000.0;
	*max = v[f->n - 1] / 1000.0;
	return true;
}

static void row(const char *name, struct fig *f)
{
	double med, min, max;
	if (stats(f, &med, &min, &max))
		printf("  %-11s median %9.1f ms   min %9.1f   max %9.1f   (%d of %d runs)\n", name, med,
		       min, max, f->n, f->tried);
	else
		printf("  %-11s no figure: %s\n", name, f->why[0] ? f->why : "not run");
	if (f->n && f->n < f->tried)
		printf("  %-11s %d run(s) failed; the first: %s\n", "", f->tried - f->n, f->why);
}

static void ratio(const char *what, const char *side, struct fig *h, struct fig *q)
{
	double hm, qm, x, y;
	if (stats(h, &hm, &x, &y) && stats(q, &qm, &x, &y))
		printf("%s ratio qemu/%s: %.2fx\n", what, side, qm / hm);
	else
		printf("%s ratio qemu/%s: not measured (%s has no figure, see above)\n", what, side,
		       h->n ? "QEMU" : side);
}

static void show_console(const char *name, const char *s)
{
	int lines = 0;
	while (s && *s && lines < 20) {
		size_t n = strcspn(s, "\r\n");
		if (n) {
			printf("  %-10s | %.*s\n", name, (int)(n > 110 ? 110 : n), s);
			lines++;
		}
		s += n;
		s += strspn(s, "\r\n");
	}
	if (!lines)
		printf("  %-10s | %s\n", name, s ? "(nothing)" : "(no successful boot)");
}

static char host_line[300]; /* the host's CPU line, from the lab share */

static void header(int runs)
{
	char host[300] = "", l1[300], kvm[300], p[400];
	const char *lab = getenv("HEARTH_LAB_DIR");
	if (lab) {
		snprintf(p, sizeof(p), "%s/host-machine", lab);
		FILE *f = fopen(p, "r");
		if (f) {
			if (fgets(host, sizeof(host), f))
				host[strcspn(host, "\n")] = 0;
			fclose(f);
		}
	}
	snprintf(host_line, sizeof(host_line), "%s", host);
	bv_machine(l1, sizeof(l1));
	bv_kvm_flavour(kvm, sizeof(kvm));
	printf("== ci/bench lab: hearth-vmm vs QEMU, a real Linux function, inside the KVM lab ==\n");
	printf("machine: %s\n", host[0] ? host : "(host CPU line not given)");
	printf("nested: everything runs in L1, a Debian 6.1 kernel under QEMU TCG (emulated AMD SVM\n"
	       "  + NPT) with kvm_amd loaded: /dev/kvm there has the real KVM interface.\n"
	       "  L1: %s; KVM: %s\n"
	       "  Everything is emulated twice: absolute times mean nothing; the ratios, measured\n"
	       "  side by side in this one run, hold.\n",
	       l1, kvm);
	const char *ib = strrchr(image, '/');
	printf("guest (the same for both): kernel %s\n"
	       "  image: the lab's probe package, hearth-agent as /init (%.16s...)\n"
	       "  %s MiB, 1 vCPU, cmdline \"%s\"\n",
	       kernel, ib ? ib + 1 : image, MEM_MIB, CMDLINE);
	printf("hearth-vmm: %s\n"
	       "  agent channel: virtio-vsock on virtio-mmio (hybrid vsock Unix socket, port %u)\n",
	       vmm_bin(), HEARTH_AGENT_VSOCK_PORT);
	printf("QEMU: %s\n"
	       "  -M microvm -accel %s -cpu %s; agent channel: virtio-serial port %s\n"
	       "  (virtio-serial-device on virtio-mmio) bound to a chardev Unix socket\n",
	       qemu_version, qemu_accel, strcmp(qemu_accel, "kvm") ? "max" : "host",
	       HEARTH_AGENT_SERIAL_NAME);
	printf("intervals (CLOCK_MONOTONIC in this process; %d runs each, interleaved):\n"
	       "  boot:    just before fork/exec of the VMM -> the agent's Ready (host connected as\n"
	       "           soon as the socket takes it, Hello answered, Configure answered)\n"
	       "  restore: just before fork/exec of the restoring VMM -> the restored agent's reply\n"
	       "           to Hello, the first message sent (hearth-vmm: its own snapshot, --restore\n"
	       "           --no-verify-memory; QEMU: -incoming \"exec:cat FILE\" of a migration stream\n"
	       "           (QMP migrate \"exec:cat > FILE\") of a VM booted to Ready; both taken with\n"
	       "           the host's agent connection open). Each clone then answers Reseed and an\n"
	       "           Invoke (untimed) or its run counts as failed.\n"
	       "  pooled:  hearth-vmm --pool started and ready beforehand (untimed) -> from sending\n"
	       "           'restore STATE MEM vsock=P' on its control socket to the reply to Hello\n",
	       runs);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int runs = argc > 1 ? atoi(argv[1]) : 5;
	if (runs < 1 || runs > MAX_RUNS)
		die("runs must be 1..%d", MAX_RUNS);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!getenv("HEARTH_LAB") && !getenv("QEMU_ACCEL"))
		die("not inside the KVM lab: run `ci/bench lab`");
	if (access("/dev/kvm", R_OK | W_OK) < 0 && !getenv("QEMU_ACCEL"))
		die("no usable /dev/kvm");
	if (getenv("QEMU"))
		qemu_bin = getenv("QEMU");
	if (getenv("QEMU_ACCEL"))
		qemu_accel = getenv("QEMU_ACCEL");
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(work, sizeof(work), "%s/bench-lab-XXXXXX", tmp);
	if (!mkdtemp(work))
		die("mkdtemp: %s", strerror(errno));
	atexit(rm_work);   /* runs after bv_kill_all (atexit order is reversed) */
	bv_proc_init();
	find_kernel();
	build_image();
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "%s -version 2>/dev/null", qemu_bin);
	FILE *p = popen(cmd, "r");
	if (p) {
		if (fgets(qemu_version, sizeof(qemu_version), p))
			qemu_version[strcspn(qemu_version, "\n")] = 0;
		pclose(p);
	}
	header(runs);

	struct fig hb = { 0 }, qb = { 0 }, hr = { 0 }, qr = { 0 }, hp = { 0 }, pf0 = { 0 },
		   pf1 = { 0 };
	char hmem[320], hstate[320], qmig[320];
	snprintf(hmem, sizeof(hmem), "%s/hvmm.mem", work);
	snprintf(hstate, sizeof(hstate), "%s/hvmm.state", work);
	snprintf(qmig, sizeof(qmig), "%s/qemu.mig", work);
	bool hsnap = false, qsnap = false;

	/* The last boot of each side is snapshotted (untimed) for the restores. */
	struct fig hs = { 0 }, qs = { 0 };
	bool have_qemu = access(qemu_bin, X_OK) == 0;
	if (!have_qemu) {
		snprintf(qb.why, sizeof(qb.why), "%s: %s", qemu_bin, strerror(errno));
		snprintf(qs.why, sizeof(qs.why), "%s", qb.why);
	}
	for (int i = 0; i < runs; i++) {
		bool last = i == runs - 1;
		int h0 = hb.n, q0 = qb.n;
		int rc = boot_once(false, i, &hb, last ? hmem : NULL, hstate, &hs);
		hsnap = last && rc == 0;
		if (have_qemu) {
			rc = boot_once(true, i, &qb, last ? qmig : NULL, NULL, &qs);
			qsnap = last && rc == 0;
		}
		printf("  boot run %d/%d: hearth-vmm %s, qemu %s\n", i + 1, runs,
		       hb.n > h0 ? "ok" : "failed", !have_qemu ? "not run" : qb.n > q0 ? "ok" : "failed");
	}
	if (!hsnap && !hs.why[0])
		snprintf(hs.why, sizeof(hs.why), "the last boot failed: %.500s", hb.why);
	if (!qsnap && !qs.why[0])
		snprintf(qs.why, sizeof(qs.why), "the last boot failed: %.500s", qb.why);
	if (!hsnap) {
		snprintf(hr.why, sizeof(hr.why), "no snapshot: %.500s", hs.why);
		snprintf(hp.why, sizeof(hp.why), "no snapshot: %.500s", hs.why);
	}
	if (!qsnap)
		snprintf(qr.why, sizeof(qr.why), "no migration stream: %.500s", qs.why);
	for (int i = 0; i < runs && (hsnap || qsnap); i++) {
		if (hsnap) {
			restore_once(false, i, &hr, hmem, hstate);
			pooled_once(i, &hp, hmem, hstate);
		}
		if (qsnap)
			restore_once(true, i, &qr, qmig, NULL);
		printf("  restore run %d/%d done\n", i + 1, runs);
	}

	/* Working-set prefetch, off and on, interleaved; the set comes from the first run. */
	char ws[320];
	snprintf(ws, sizeof(ws), "%s/hvmm.ws", work);
	for (int i = 0; i < runs && hsnap; i++) {
		invoke_once(i, &pf0, hmem, hstate, NULL, i == 0 ? ws : NULL);
		if (access(ws, R_OK) == 0)
			invoke_once(i, &pf1, hmem, hstate, ws, NULL);
		else
			why(&pf1, "no working set was recorded");
		printf("  prefetch run %d/%d done\n", i + 1, runs);
	}

	printf("\nboot to agent Ready (process start -> Ready):\n");
	row("hearth-vmm", &hb);
	row("qemu", &qb);
	printf("restore to the first agent reply (process start -> Hello answered):\n");
	row("hearth-vmm", &hr);
	row("qemu", &qr);
	printf("pooled restore to the first agent reply ('restore' sent -> Hello answered):\n");
	row("pooled", &hp);
	printf("hearth-vmm restore to the first Invoke answered (process start -> Hello, Reseed,\n"
	       "Invoke answered), the working set prefetched or not:\n");
	row("no prefetch", &pf0);
	row("prefetch", &pf1);
	printf("\n");
	{
		double a, b, x, y;
		if (stats(&pf0, &a, &x, &y) && stats(&pf1, &b, &x, &y))
			printf("prefetch ratio off/on: %.2fx\n", a / b);
	}
	ratio("boot", "hearth-vmm", &hb, &qb);
	ratio("restore", "hearth-vmm", &hr, &qr);
	ratio("restore", "pooled hearth-vmm", &hp, &qr);
	{
		/*
		 * Machine-readable results: $HEARTH_BENCH_OUT, else bench-lab.json in the
		 * lab share, which ci/bench.d/lab copies out. The machine facts are L1's
		 * (emulated); the host's CPU line goes in machine.host.
		 */
		char eng[300], path[400] = "";
		const char *lab = getenv("HEARTH_LAB_DIR");
		snprintf(eng, sizeof(eng),
			 "hearth-vmm and %s -accel %s, nested in the KVM lab (L1 under QEMU TCG)",
			 qemu_version, qemu_accel);
		json_t *js = bj_new("lab", "hearth-vmm vs QEMU, a real Linux function, KVM lab", eng);
		bj_machine_set(js, "host", host_line[0] ? host_line : "(not given)");
		bj_machine_set(js, "nested", "L1 under QEMU TCG; absolute times mean nothing, ratios hold");
		bj_samples_ll(js, "boot_vmm_us", "boot", "lab: hearth-vmm boot to agent Ready", "us",
			      hb.us, hb.n);
		bj_samples_ll(js, "boot_qemu_us", "boot", "lab: QEMU boot to agent Ready", "us", qb.us,
			      qb.n);
		bj_samples_ll(js, "restore_vmm_us", "restore",
			      "lab: hearth-vmm restore to first agent reply", "us", hr.us, hr.n);
		bj_samples_ll(js, "restore_pooled_us", "restore",
			      "lab: pooled hearth-vmm restore to first agent reply", "us", hp.us, hp.n);
		bj_samples_ll(js, "restore_qemu_us", "restore",
			      "lab: QEMU -incoming restore to first agent reply", "us", qr.us, qr.n);
		double a, b, x, y;
		if (stats(&hb, &a, &x, &y) && stats(&qb, &b, &x, &y))
			bj_figure(js, "ratio_boot_qemu_vs_vmm", b / a, "x", "boot ratio qemu/hearth-vmm");
		if (stats(&hr, &a, &x, &y) && stats(&qr, &b, &x, &y))
			bj_figure(js, "ratio_restore_qemu_vs_vmm", b / a, "x",
				  "restore ratio qemu/hearth-vmm");
		if (stats(&hp, &a, &x, &y) && stats(&qr, &b, &x, &y))
			bj_figure(js, "ratio_restore_qemu_vs_pooled", b / a, "x",
				  "restore ratio qemu/pooled hearth-vmm");
		if (stats(&pf0, &a, &x, &y) && stats(&pf1, &b, &x, &y))
			bj_figure(js, "ratio_prefetch_off_on", a / b, "x", "prefetch ratio off/on");
		if (!getenv("HEARTH_BENCH_OUT") && lab) {
			snprintf(path, sizeof(path), "%s/bench-lab.json", lab);
			setenv("HEARTH_BENCH_OUT", path, 1);
		}
		bj_write(js);
	}
	printf("\nguest console of each side's first boot (\"quiet\": critical kernel lines and the "
	       "agent's):\n");
	show_console("hearth-vmm", first_console[0]);
	show_console("qemu", first_console[1]);
	free(first_console[0]);
	free(first_console[1]);
	/* QEMU's failures are reported above; only hearth-vmm's fail the benchmark. */
	return hb.n && hr.n && hp.n ? 0 : 1;
}
