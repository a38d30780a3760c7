/*
 * e2e_vm.c - end-to-end tests: real guest kernel, real hearth-agent as /init,
 * real function images, real VMs under libvirt/QEMU (TCG here, KVM where it
 * can run stock guests), driven through the engine interface and the host
 * agent client exactly as hearthd will drive them.
 *
 * Usage: e2e_vm <case>; each case boots its own VM(s) and destroys them.
 * ctest registers every case (tests/e2e/CMakeLists.txt) behind two fixtures:
 * libvirtd running, and the guest kernel built (kernel-config/build).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent_client.h"
#include "engine.h"
#include "file_acl.h"
#include "image.h"
#include "msg.h"

#define PREFIX "hearth-e2e-"
/* Jail uids of their own: other hearth processes on this host use the default base. */
#define E2E_UID_BASE 2100000000u
#define BOOT_TIMEOUT_MS 60000
#define CALL_TIMEOUT_MS 30000

static char kernel_path[4096];
static struct hearth_vm *cur_vm; /* for the console dump on failure */

static void dump_console(void)
{
	const char *log = cur_vm ? hearth_vm_console_log(cur_vm) : NULL;
	char line[512];
	FILE *f;
	int n = 0;

	if (!log || !(f = fopen(log, "r")))
		return;
	fprintf(stderr, "---- console of %s (first 60 lines) ----\n", hearth_vm_name(cur_vm));
	while (n++ < 60 && fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fclose(f);
	fprintf(stderr, "----\n");
}

#define CHECK(cond, ...)                                                                   \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
			fprintf(stderr, __VA_ARGS__);                                      \
			fprintf(stderr, "\n");                                             \
			dump_console();                                                    \
			exit(1);                                                           \
		}                                                                          \
	} while (0)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void find_kernel(void)
{
	char cmd[4096], dir[4096] = "";
	FILE *p;

	snprintf(cmd, sizeof(cmd), "%s/kernel-config/build --print", HEARTH_SOURCE_DIR);
	p = popen(cmd, "r");
	CHECK(p, "popen %s", cmd);
	while (fgets(dir, sizeof(dir), p))
		;
	CHECK(pclose(p) == 0, "the guest kernel is not built: run kernel-config/build");
	dir[strcspn(dir, "\n")] = '\0';
	CHECK(strlen(dir) + sizeof("/bzImage") <= sizeof(kernel_path), "kernel dir too long: %s", dir);
	memcpy(kernel_path, dir, strlen(dir));
	memcpy(kernel_path + strlen(dir), "/bzImage", sizeof("/bzImage"));
	CHECK(access(kernel_path, R_OK) == 0, "%s: %s", kernel_path, strerror(errno));
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	CHECK(f, "fopen %s: %s", path, strerror(errno));
	fputs(text, f);
	CHECK(fclose(f) == 0, "write %s", path);
	CHECK(chmod(path, mode) == 0, "chmod %s", path);
}

static void copy_file(const char *from, const char *to)
{
	char cmd[3 * 8192 + 64];

	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && chmod 755 '%s'", from, to, to);
	CHECK(system(cmd) == 0, "%s", cmd);
}

/* Makes a package directory, builds its image, returns the image (caller frees). */
static void build_image(const char *name, const char *binary, const char *script,
			const char *manifest, struct hearth_image *img)
{
	char dir[1024], path[8192], err[512];
	struct hearth_image_opts o = {0};

	snprintf(dir, sizeof(dir), "%s/pkg-%s", E2E_WORK_DIR, name);
	snprintf(path, sizeof(path), "rm -rf '%s' && mkdir -p '%s'", dir, dir);
	CHECK(system(path) == 0, "%s", path);
	if (binary) {
		snprintf(path, sizeof(path), "%s/%s", dir, strrchr(binary, '/') + 1);
		copy_file(binary, path);
	}
	if (script) {
		snprintf(path, sizeof(path), "%s/handler.sh", dir);
		write_file(path, script, 0755);
	}
	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	write_file(path, manifest, 0644);
	o.package = dir;
	o.agent = getenv("HEARTH_E2E_AGENT") ? getenv("HEARTH_E2E_AGENT") : HEARTH_AGENT_BIN;
	o.out_dir = E2E_WORK_DIR "/images";
	CHECK(hearth_image_build(&o, img, err, sizeof(err)) == 0, "image %s: %s", name, err);
}

/* The libvirt engine as hearthd opens it: jailed when the tests run as root. */
static struct hearth_engine *open_libvirt_cfg(struct hearth_engine_config *cfg)
{
	struct hearth_engine *e;
	char err[512];
	int rc;

	cfg->kind = HEARTH_ENGINE_LIBVIRT;
	cfg->run_dir = cfg->run_dir ? cfg->run_dir : E2E_RUN_DIR;
	cfg->name_prefix = cfg->name_prefix ? cfg->name_prefix : PREFIX;
	cfg->jail_uid_base = E2E_UID_BASE;
	rc = hearth_engine_open(cfg, &e, err, sizeof(err));
	CHECK(rc == 0, "engine open: %s", err);
	CHECK(hearth_engine_caps(e) & HEARTH_ENGINE_CAP_ISOLATED, "libvirt must isolate");
	printf("engine %s, accelerator %s, jail %s\n", hearth_engine_name(e),
	       hearth_engine_accel(e), cfg->jail ? "asked" : "off");
	return e;
}

static struct hearth_engine *open_libvirt(void)
{
	struct hearth_engine_config cfg = {.jail = geteuid() == 0};

	return open_libvirt_cfg(&cfg);
}

static void configure(struct agent_conn *c, const struct hearth_manifest *m)
{
	struct agent_config cfg = {
		.handler = m->handler,
		.args = (const char *const *)m->args,
		.nargs = m->nargs,
		.env = (const char *const *)m->env,
		.nenv = m->nenv,
		.timeout_ms = m->timeout_ms,
	};
	int rc = agent_configure(c, &cfg, CALL_TIMEOUT_MS, NULL);

	CHECK(rc == 0, "configure: %s (%s)", agent_strerror(rc), agent_last_error(c));
}

static struct agent_conn *hello(struct hearth_vm *vm, int timeout_ms)
{
	struct agent_conn *c;
	char err[512], *sw = NULL;
	int rc = hearth_vm_connect(vm, timeout_ms, &c, err, sizeof(err));

	CHECK(rc == 0, "connect: %s", err);
	rc = agent_hello(c, timeout_ms, &sw);
	CHECK(rc == 0, "hello: %s (%s)", agent_strerror(rc), agent_last_error(c));
	CHECK(sw && strstr(sw, "hearth-agent"), "agent software '%s'", sw ? sw : "(null)");
	free(sw);
	return c;
}

/* Boots img, waits for the agent, configures it from the manifest (-> Ready). */
static struct hearth_vm *boot(struct hearth_engine *e, const struct hearth_image *img,
			      struct agent_conn **conn)
{
	struct hearth_vm_spec spec = {
		.kernel = kernel_path,
		.initrd = img->path,
		.memory_mb = img->manifest.memory_mb,
	};
	struct hearth_vm *vm;
	char err[512];
	double t0 = now_s();
	int rc = hearth_vm_create(e, &spec, &vm, err, sizeof(err));

	CHECK(rc == 0, "create: %s", err);
	cur_vm = vm;
	*conn = hello(vm, BOOT_TIMEOUT_MS);
	configure(*conn, &img->manifest);
	printf("%s: booted to Ready in %.2f s\n", hearth_vm_name(vm), now_s() - t0);
	return vm;
}

static void destroy(struct hearth_vm *vm, struct agent_conn *c)
{
	char err[512], dir[4096], name[128];
	struct stat st;

	snprintf(name, sizeof(name), "%s", hearth_vm_name(vm));
	snprintf(dir, sizeof(dir), "%s/%s", E2E_RUN_DIR, name);
	agent_close(c);
	cur_vm = NULL;
	CHECK(hearth_vm_destroy(vm, err, sizeof(err)) == 0, "destroy: %s", err);
	CHECK(stat(dir, &st) < 0 && errno == ENOENT, "%s still exists after destroy", dir);
	if (!strncmp(dir, E2E_RUN_DIR "/", strlen(E2E_RUN_DIR) + 1)) {
		snprintf(dir, sizeof(dir), "/var/log/libvirt/qemu/%s.log", name);
		CHECK(stat(dir, &st) < 0 && errno == ENOENT, "%s still exists after destroy", dir);
	}
}

static void invoke(struct agent_conn *c, const char *id, const void *payload, size_t len,
		   uint32_t timeout_ms, struct agent_result *r)
{
	int rc = agent_invoke(c, id, payload, len, timeout_ms, CALL_TIMEOUT_MS, r);

	CHECK(rc == 0, "invoke %s: %s (%s)", id, agent_strerror(rc), agent_last_error(c));
	CHECK(r->request_id && !strcmp(r->request_id, id), "request id '%s' != '%s'",
	      r->request_id ? r->request_id : "", id);
}

static void expect_ok_body(struct agent_conn *c, const char *id, const char *in,
			   const char *want)
{
	struct agent_result r;

	invoke(c, id, in, strlen(in), 0, &r);
	CHECK(r.status == AGENT_INVOKE_OK, "%s: status %s (%s), logs '%.*s'", id,
	      agent_invoke_status_name(r.status), r.error ? r.error : "", (int)r.logs_len,
	      r.logs ? (char *)r.logs : "");
	CHECK(r.body_len == strlen(want) && !memcmp(r.body, want, r.body_len),
	      "%s: body '%.*s', want '%s'", id, (int)r.body_len, r.body ? (char *)r.body : "", want);
	agent_result_free(&r);
}

static unsigned check_jailed(struct hearth_vm *vm, unsigned long long limit_mib);
static void check_acl(const char *path, unsigned uid, int want);

static const char echo_manifest[] =
	"{\"handler\": \"fn_echo\", \"memory_mb\": 128, \"timeout_ms\": 5000}";

/* 1. A C echo function: boot, Ready, invoke, exact output, large payload, stats. */
static void case_echo_c(void)
{
	struct hearth_engine *e = open_libvirt();
	struct hearth_image img;
	struct agent_conn *c;
	struct hearth_vm *vm;
	struct hearth_vm_stats st;
	struct agent_result r;
	char err[512];
	size_t big = 200 * 1024;
	char *payload = malloc(big);

	build_image("echo", FN_ECHO_BIN, NULL, echo_manifest, &img);
	vm = boot(e, &img, &c);
	expect_ok_body(c, "echo-1", "hello from the host", "hello from the host");
	expect_ok_body(c, "echo-2", "", "");

	/* Larger than any virtio-serial buffer: exercises framing across many reads. */
	CHECK(payload, "malloc");
	for (size_t i = 0; i < big; i++)
		payload[i] = (char)('a' + i % 26);
	invoke(c, "echo-big", payload, big, 0, &r);
	CHECK(r.status == AGENT_INVOKE_OK && r.body_len == big && !memcmp(r.body, payload, big),
	      "big echo: status %s, %zu bytes back", agent_invoke_status_name(r.status),
	      r.body_len);
	agent_result_free(&r);
	free(payload);

	CHECK(hearth_vm_stats(vm, &st, err, sizeof(err)) == 0, "stats: %s", err);
	CHECK(st.state == HEARTH_VM_RUNNING, "state %s", hearth_vm_state_name(st.state));
	CHECK(st.memory_kb == 128 * 1024, "memory_kb %llu", (unsigned long long)st.memory_kb);
	printf("stats: %s, memory %llu KiB, host RSS %llu KiB\n", hearth_vm_state_name(st.state),
	       (unsigned long long)st.memory_kb, (unsigned long long)st.rss_kb);
	destroy(vm, c);
	hearth_image_free(&img);
	hearth_engine_close(e);
}

/* 2. A shell function: busybox /bin/sh in the image, env from the manifest, stderr as logs. */
static void case_shell(void)
{
	static const char script[] = "#!/bin/sh\n"
				     "read -r x\n"
				     "echo \"$GREETING, $x\"\n"
				     "echo \"note on stderr\" >&2\n";
	struct hearth_engine *e = open_libvirt();
	struct hearth_image img;
	struct agent_conn *c;
	struct hearth_vm *vm;
	struct agent_result r;

	build_image("shell", NULL, script,
		    "{\"handler\": \"handler.sh\", \"shell\": true, \"env\": {\"GREETING\": \"hi\"}}",
		    &img);
	CHECK(img.manifest.shell, "manifest shell flag");
	vm = boot(e, &img, &c);
	invoke(c, "sh-1", "world\n", 6, 0, &r);
	CHECK(r.status == AGENT_INVOKE_OK, "status %s (%s)", agent_invoke_status_name(r.status),
	      r.error ? r.error : "");
	CHECK(r.body_len == 10 && !memcmp(r.body, "hi, world\n", 10), "body '%.*s'",
	      (int)r.body_len, (char *)r.body);
	CHECK(r.logs && memmem(r.logs, r.logs_len, "note on stderr", 14), "logs '%.*s'",
	      (int)r.logs_len, r.logs ? (char *)r.logs : "");
	agent_result_free(&r);
	expect_ok_body(c, "sh-2", "again", "hi, again\n");
	destroy(vm, c);
	hearth_image_free(&img);
	hearth_engine_close(e);
}

/* 3. A crashing, a failing and a hanging function: clear errors, VM stays usable. */
static void case_crash_timeout(void)
{
	struct hearth_engine *e = open_libvirt();
	struct hearth_image img;
	struct agent_conn *c;
	struct hearth_vm *vm;
	struct agent_result r;
	struct agent_pong pong;
	double t0;

	build_image("misbehave", FN_MISBEHAVE_BIN, NULL,
		    "{\"handler\": \"fn_misbehave\", \"timeout_ms\": 10000}", &img);
	vm = boot(e, &img, &c);

	invoke(c, "crash", "crash", 5, 0, &r);
	CHECK(r.status == AGENT_INVOKE_CRASHED, "crash: status %s",
	      agent_invoke_status_name(r.status));
	CHECK(r.signal == 11, "crash: signal %d, want SIGSEGV", r.signal);
	CHECK(r.error && *r.error, "crash: no error message");
	printf("crash -> %s: %s\n", agent_invoke_status_name(r.status), r.error);
	agent_result_free(&r);

	invoke(c, "fail", "exit3", 5, 0, &r);
	CHECK(r.status == AGENT_INVOKE_FUNCTION_ERROR && r.exit_code == 3,
	      "exit3: status %s, exit %d", agent_invoke_status_name(r.status), r.exit_code);
	agent_result_free(&r);

	t0 = now_s();
	invoke(c, "hang", "hang", 4, 1500, &r);
	CHECK(r.status == AGENT_INVOKE_TIMEOUT, "hang: status %s",
	      agent_invoke_status_name(r.status));
	CHECK(r.error && *r.error, "hang: no error message");
	CHECK(now_s() - t0 < 15, "timeout took %.1f s", now_s() - t0);
	printf("hang -> %s after %.2f s: %s\n", agent_invoke_status_name(r.status), now_s() - t0,
	       r.error);
	agent_result_free(&r);

	/* The VM and the agent are still fine. */
	CHECK(agent_ping(c, CALL_TIMEOUT_MS, &pong) == 0, "ping after failures");
	CHECK(!pong.busy && pong.queued == 0, "agent still busy (%d) or queued (%u)", pong.busy,
	      pong.queued);
	expect_ok_body(c, "after", "still alive", "still alive");
	destroy(vm, c);
	hearth_image_free(&img);
	hearth_engine_close(e);
}

/* 4. Pause/resume and suspend-to-disk/restore, then invoke. */
static void case_save_restore(void)
{
	struct hearth_engine *e = open_libvirt();
	struct hearth_image img;
	struct agent_conn *c;
	struct hearth_vm *vm;
	struct hearth_vm_stats st;
	struct agent_pong pong;
	unsigned char seed[32];
	char err[512], save[4096];
	double t0;
	int rc;

	build_image("echo", FN_ECHO_BIN, NULL, echo_manifest, &img);
	vm = boot(e, &img, &c);
	expect_ok_body(c, "before", "before save", "before save");

	/* Paused vCPUs cannot answer; resumed ones can. */
	CHECK(hearth_vm_pause(vm, err, sizeof(err)) == 0, "pause: %s", err);
	CHECK(hearth_vm_stats(vm, &st, err, sizeof(err)) == 0 && st.state == HEARTH_VM_PAUSED,
	      "state after pause: %s", hearth_vm_state_name(st.state));
	rc = agent_ping(c, 1500, &pong);
	CHECK(rc != 0, "a paused VM answered a ping");
	CHECK(hearth_vm_resume(vm, err, sizeof(err)) == 0, "resume: %s", err);
	/* The resumed agent answers the ping it got while paused. virtio-serial has no
	 * connection boundary, so that late Pong must be read here: on a new
	 * connection it would arrive as a stale reply. */
	{
		Hearth__Envelope *env = NULL;

		rc = msg_recv(agent_fd(c), FRAME_DEFAULT_MAX, frame_now_ms() + CALL_TIMEOUT_MS, &env);
		CHECK(rc == 0 && env && env->msg_case == HEARTH__ENVELOPE__MSG_PONG,
		      "late pong after resume: %s, got %s", msg_strerror(rc),
		      env ? msg_name(env) : "nothing");
		msg_free(env);
	}
	CHECK(agent_ping(c, CALL_TIMEOUT_MS, &pong) == 0, "ping after resume: %s",
	      agent_last_error(c));
	expect_ok_body(c, "after-resume", "after resume", "after resume");

	t0 = now_s();
	CHECK(hearth_vm_save(vm, err, sizeof(err)) == 0, "save: %s", err);
	printf("save took %.2f s\n", now_s() - t0);
	agent_close(c);
	CHECK(hearth_vm_stats(vm, &st, err, sizeof(err)) == 0 && st.state == HEARTH_VM_SAVED,
	      "state after save: %s", hearth_vm_state_name(st.state));
	snprintf(save, sizeof(save), "%s/%s/save.img", E2E_RUN_DIR, hearth_vm_name(vm));
	CHECK(access(save, F_OK) == 0, "no save file %s", save);
	{
		virConnectPtr lv = virConnectOpen("qemu:///system");
		virDomainPtr d = lv ? virDomainLookupByName(lv, hearth_vm_name(vm)) : NULL;

		CHECK(lv, "virConnectOpen");
		CHECK(!d || virDomainIsActive(d) != 1, "domain still running after save");
		if (d)
			virDomainFree(d);
		virConnectClose(lv);
	}
	CHECK(hearth_vm_connect(vm, 100, &c, err, sizeof(err)) < 0, "connected to a saved VM");

	t0 = now_s();
	CHECK(hearth_vm_restore(vm, err, sizeof(err)) == 0, "restore: %s", err);
	c = hello(vm, CALL_TIMEOUT_MS);
	printf("restore to agent Hello took %.2f s\n", now_s() - t0);
	if (geteuid() == 0) /* jailed: the same uid, its memory limit set again */
		check_jailed(vm, 128 + HEARTH_LIBVIRT_OVERHEAD_TCG_MB);
	CHECK(access(save, F_OK) < 0, "save file left after restore");
	for (size_t i = 0; i < sizeof(seed); i++)
		seed[i] = (unsigned char)(rand() & 0xff);
	rc = agent_reseed(c, seed, sizeof(seed), CALL_TIMEOUT_MS);
	CHECK(rc == 0, "reseed: %s (%s)", agent_strerror(rc), agent_last_error(c));
	/* The agent kept its configuration across the save. */
	expect_ok_body(c, "after-restore", "after restore", "after restore");
	destroy(vm, c);
	hearth_image_free(&img);
	hearth_engine_close(e);
}

/* A VM whose guest dies (no usable /init): reported as stopped; destroy still cleans up. */
static void case_guest_crash(void)
{
	struct hearth_engine *e = open_libvirt();
	struct hearth_vm_spec spec = {.kernel = kernel_path, .memory_mb = 64};
	struct hearth_vm *vm;
	struct hearth_vm_stats st;
	struct agent_conn *c = NULL;
	char err[512], junk[4096];
	double t0 = now_s();
	int rc;

	/* Bad input first: a missing kernel is refused with a message naming it. */
	spec.initrd = "/nonexistent/image.cpio";
	rc = hearth_vm_create(e, &spec, &vm, err, sizeof(err));
	CHECK(rc < 0 && strstr(err, "/nonexistent/image.cpio"), "missing image: rc %d, '%s'", rc,
	      err);
	printf("missing image -> %s\n", err);

	/* An initramfs with no /init: the kernel panics and (panic=-1) the domain goes away. */
	snprintf(junk, sizeof(junk), "%s/junk.cpio", E2E_WORK_DIR);
	write_file(junk, "this is not a cpio archive\n", 0644);
	spec.initrd = junk;
	rc = hearth_vm_create(e, &spec, &vm, err, sizeof(err));
	CHECK(rc == 0, "create: %s", err);
	cur_vm = vm;
	do {
		CHECK(hearth_vm_stats(vm, &st, err, sizeof(err)) == 0, "stats: %s", err);
		if (st.state == HEARTH_VM_STOPPED)
			break;
		usleep(200000);
	} while (now_s() - t0 < 60);
	CHECK(st.state == HEARTH_VM_STOPPED, "a guest without /init is still %s",
	      hearth_vm_state_name(st.state));
	printf("guest without /init stopped after %.2f s\n", now_s() - t0);
	{
		char why[256];
		enum hearth_vm_end end = hearth_vm_exit_reason(vm, 0, why, sizeof(why));

		/* Gone, and not for memory: only a cgroup OOM kill is reported as one. */
		CHECK(end == HEARTH_VM_ENDED, "exit reason %d (%s) for a guest panic", (int)end, why);
		printf("exit reason: %s\n", why);
	}
	rc = hearth_vm_connect(vm, 500, &c, err, sizeof(err));
	CHECK(rc < 0, "connected to a stopped VM");
	printf("connect to stopped VM -> %s\n", err);
	cur_vm = NULL;
	CHECK(hearth_vm_destroy(vm, err, sizeof(err)) == 0, "destroy stopped VM: %s", err);
	unlink(junk);
	hearth_engine_close(e);
}

/* A run that dies without destroying its VMs: the next engine open reaps them. */
static void case_reap(void)
{
	struct hearth_image img;
	char name[256] = "", dir[4096];
	int pfd[2], st;
	pid_t pid;
	struct stat sb;

	build_image("echo", FN_ECHO_BIN, NULL, echo_manifest, &img);
	CHECK(pipe(pfd) == 0, "pipe");
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		struct hearth_engine *e = open_libvirt();
		struct hearth_vm_spec spec = {.kernel = kernel_path, .initrd = img.path};
		struct hearth_vm *vm;
		char err[512];

		if (hearth_vm_create(e, &spec, &vm, err, sizeof(err)) < 0) {
			fprintf(stderr, "child create: %s\n", err);
			_exit(1);
		}
		if (write(pfd[1], hearth_vm_name(vm), strlen(hearth_vm_name(vm))) < 0)
			_exit(1);
		_exit(0); /* "crash": no destroy, no close */
	}
	close(pfd[1]);
	CHECK(read(pfd[0], name, sizeof(name) - 1) > 0, "child reported no VM");
	close(pfd[0]);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "child failed");
	snprintf(dir, sizeof(dir), "%s/%s", E2E_RUN_DIR, name);
	{
		virConnectPtr lv = virConnectOpen("qemu:///system");
		virDomainPtr d = lv ? virDomainLookupByName(lv, name) : NULL;

		CHECK(d && virDomainIsActive(d) == 1, "the orphan %s is not running", name);
		virDomainFree(d);
		CHECK(stat(dir, &sb) == 0, "orphan dir %s missing", dir);
		/* Jailed: the child's first uid still has its ACL entries; the reap revokes them. */
		if (geteuid() == 0) {
			check_acl(img.path, E2E_UID_BASE, FILE_ACL_R);
			check_acl(kernel_path, E2E_UID_BASE, FILE_ACL_R);
		}

		hearth_engine_close(open_libvirt()); /* reaps */

		d = virDomainLookupByName(lv, name);
		CHECK(!d, "orphan %s survived the reap", name);
		virConnectClose(lv);
	}
	check_acl(img.path, E2E_UID_BASE, -ENOENT);
	check_acl(kernel_path, E2E_UID_BASE, -ENOENT);
	check_acl(E2E_RUN_DIR, E2E_UID_BASE, -ENOENT);
	CHECK(stat(dir, &sb) < 0, "orphan dir %s survived the reap", dir);
	printf("reaped orphan %s\n", name);
	hearth_image_free(&img);
}

/* Is any host process running with exactly this argv? */
static bool process_running(const char *arg0, const char *arg1)
{
	char path[300], buf[256], want[256];
	size_t wlen = (size_t)snprintf(want, sizeof(want), "%s%c%s", arg0, 0, arg1) + 1;
	struct dirent *de;
	bool found = false;
	DIR *d = opendir("/proc");

	CHECK(d, "opendir /proc");
	while (!found && (de = readdir(d))) {
		FILE *f;
		size_t n;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		found = n >= wlen && !memcmp(buf, want, wlen);
		if (found) {
			/* Only agents chrooted under this test's run dirs (E2E_RUN_DIR*) count, not others'. */
			char root[300], link[4096];
			ssize_t l;

			snprintf(root, sizeof(root), "/proc/%s/root", de->d_name);
			l = readlink(root, link, sizeof(link) - 1);
			link[l > 0 ? l : 0] = 0;
			found = l > 0 && !strncmp(link, E2E_RUN_DIR, strlen(E2E_RUN_DIR));
		}
	}
	closedir(d);
	return found;
}

/* The process engine (no VM, development only): refused by default, then really runs. */
static void case_process_engine(void)
{
	static const char script[] = "#!/bin/sh\n"
				     "echo \"pid $$ in $(cat /proc/self/status | grep -c Pid) lines, $(cat)\"\n";
	struct hearth_engine_config cfg = {
		.kind = HEARTH_ENGINE_PROCESS,
		.run_dir = E2E_RUN_DIR "-proc",
		.name_prefix = PREFIX,
	};
	struct hearth_vm_spec spec = {0};
	struct hearth_engine *e;
	struct hearth_image img, simg;
	struct hearth_vm *vm;
	struct hearth_vm_stats st;
	struct agent_conn *c;
	struct agent_result r;
	char err[512], dir[4096];
	struct stat sb;
	int rc;

	rc = hearth_engine_open(&cfg, &e, err, sizeof(err));
	CHECK(rc == -EPERM && strstr(err, "isolation"), "process engine opened without consent: %d '%s'",
	      rc, err);
	printf("without consent -> %s\n", err);
	cfg.allow_unisolated = true;
	CHECK(hearth_engine_open(&cfg, &e, err, sizeof(err)) == 0, "open: %s", err);
	CHECK(hearth_engine_caps(e) & HEARTH_ENGINE_CAP_DEV_ONLY, "process engine must be DEV_ONLY");
	CHECK(!(hearth_engine_caps(e) & HEARTH_ENGINE_CAP_ISOLATED), "process engine claims isolation");

	build_image("echo", FN_ECHO_BIN, NULL, echo_manifest, &img);
	spec.initrd = img.path;
	CHECK(hearth_vm_create(e, &spec, &vm, err, sizeof(err)) == 0, "create: %s", err);
	cur_vm = vm;
	c = hello(vm, CALL_TIMEOUT_MS);
	configure(c, &img.manifest);
	expect_ok_body(c, "proc-echo", "no vm here", "no vm here");
	CHECK(hearth_vm_stats(vm, &st, err, sizeof(err)) == 0 && st.state == HEARTH_VM_RUNNING &&
	      st.rss_kb > 0, "stats: %s rss %llu", hearth_vm_state_name(st.state),
	      (unsigned long long)st.rss_kb);
	rc = hearth_vm_pause(vm, err, sizeof(err));
	CHECK(rc == -ENOTSUP, "pause on the process engine: %d", rc);
	printf("pause -> %s\n", err);
	destroy(vm, c);

	/* A shell function (busybox needs /proc); destroy must kill the agent's namespace. */
	build_image("proc-shell", NULL, script, "{\"handler\": \"handler.sh\", \"shell\": true}",
		    &simg);
	spec.initrd = simg.path;
	CHECK(hearth_vm_create(e, &spec, &vm, err, sizeof(err)) == 0, "create: %s", err);
	cur_vm = vm;
	snprintf(dir, sizeof(dir), "%s-proc/%s", E2E_RUN_DIR, hearth_vm_name(vm));
	c = hello(vm, CALL_TIMEOUT_MS);
	configure(c, &simg.manifest);
	invoke(c, "proc-sh", "x", 1, 0, &r);
	CHECK(r.status == AGENT_INVOKE_OK && r.body_len > 0, "shell: %s (%s) '%.*s'",
	      agent_invoke_status_name(r.status), r.error ? r.error : "", (int)r.logs_len,
	      r.logs ? (char *)r.logs : "");
	printf("shell said: %.*s", (int)r.body_len, (char *)r.body);
	agent_result_free(&r);
	CHECK(process_running("/init", "--unix"), "the agent process is not running");
	destroy(vm, c);
	CHECK(!process_running("/init", "--unix"), "the agent process survived destroy");
	CHECK(stat(dir, &sb) < 0, "%s left behind", dir);
	CHECK(access("/dev/null", W_OK) == 0, "host /dev damaged");
	hearth_image_free(&img);
	hearth_image_free(&simg);
	hearth_engine_close(e);
	CHECK(rmdir(E2E_RUN_DIR "-proc") == 0, "run dir not empty: %s", strerror(errno));
}

/* ---- The libvirt jail (engine_libvirt.c): QEMU's uid, files, cgroup, sandbox ---- */

/* The running domain's QEMU pid (libvirtd's pid file). */
static pid_t qemu_pid(const char *name)
{
	char path[300];
	int pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/run/libvirt/qemu/%s.pid", name);
	f = fopen(path, "r");
	CHECK(f, "%s: %s", path, strerror(errno));
	CHECK(fscanf(f, "%d", &pid) == 1 && pid > 0, "%s: no pid", path);
	fclose(f);
	return (pid_t)pid;
}

/* A process's real, effective, saved and fs uid (or gid, with "Gid:"); all must agree. */
static unsigned proc_id(pid_t pid, const char *key)
{
	char path[64], line[256];
	unsigned a = 1, b = 2, c = 3, d = 4;
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	CHECK(f, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			found = sscanf(line + strlen(key), "%u %u %u %u", &a, &b, &c, &d) == 4;
	fclose(f);
	CHECK(found && a == b && b == c && c == d, "%s of %d: %u %u %u %u", key, (int)pid, a, b, c, d);
	return a;
}

static bool proc_cmdline_has(pid_t pid, const char *want)
{
	char path[64], buf[16384];
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	f = fopen(path, "r");
	CHECK(f, "%s", path);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	for (size_t i = 0; i < n; i++)
		if (!buf[i])
			buf[i] = ' ';
	buf[n] = '\0';
	return strstr(buf, want) != NULL;
}

/* The memory limit of the cgroup pid is in (v1 memory.limit_in_bytes or v2 memory.max). */
static unsigned long long memcg_file(pid_t pid, const char *v1, const char *v2)
{
	char path[4400], line[4096], *cg = NULL;
	unsigned long long v = 0;
	bool is_v1 = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	f = fopen(path, "r");
	CHECK(f, "%s", path);
	while (fgets(line, sizeof(line), f)) {
		char *c = strchr(line, ':'), *c2 = c ? strchr(c + 1, ':') : NULL;

		if (!c2)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (!strncmp(c + 1, "memory:", 7)) {
			cg = strdup(c2 + 1);
			is_v1 = true;
			break;
		}
		if (!strncmp(line, "0::", 3) && !cg)
			cg = strdup(c2 + 1);
	}
	fclose(f);
	CHECK(cg, "no memory cgroup for %d", (int)pid);
	snprintf(path, sizeof(path), is_v1 ? "/sys/fs/cgroup/memory%s/%s" : "/sys/fs/cgroup%s/%s", cg,
		 is_v1 ? v1 : v2);
	free(cg);
	f = fopen(path, "r");
	CHECK(f, "%s: %s", path, strerror(errno));
	CHECK(fscanf(f, "%llu", &v) == 1, "%s unreadable", path);
	fclose(f);
	return v;
}

/* errno of open(path) by a process with only uid (and gid) uid, 0 if it opened. */
static int open_as(unsigned uid, const char *path)
{
	int st;
	pid_t pid = fork();

	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 ||
		    setresuid(uid, uid, uid) < 0)
			_exit(255);
		_exit(open(path, O_RDONLY) < 0 ? errno : 0);
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) != 255,
	      "open_as child failed");
	return WEXITSTATUS(st);
}

static char *domain_xml(const char *name)
{
	virConnectPtr lv = virConnectOpen("qemu:///system");
	virDomainPtr d = lv ? virDomainLookupByName(lv, name) : NULL;
	char *xml = d ? virDomainGetXMLDesc(d, 0) : NULL;

	CHECK(xml, "live XML of %s", name);
	virDomainFree(d);
	virConnectClose(lv);
	return xml;
}

static void skip_unless_root(const char *what)
{
	if (geteuid() != 0) {
		printf("SKIP %s: the jail needs root\n", what);
		exit(77);
	}
}

/* What a jailed VM must look like while it runs; returns QEMU's uid. */
static unsigned check_jailed(struct hearth_vm *vm, unsigned long long limit_mib)
{
	const char *name = hearth_vm_name(vm);
	pid_t pid = qemu_pid(name);
	unsigned uid = proc_id(pid, "Uid:"), gid = proc_id(pid, "Gid:");
	char want[200], *xml = domain_xml(name);
	unsigned long long limit = memcg_file(pid, "memory.limit_in_bytes", "memory.max");

	CHECK(uid != 0 && uid >= E2E_UID_BASE && uid < E2E_UID_BASE + HEARTH_JAIL_UIDS,
	      "QEMU of %s runs as uid %u", name, uid);
	CHECK(gid == uid, "QEMU of %s: gid %u, uid %u", name, gid, uid);
	snprintf(want, sizeof(want), "<label>+%u:+%u</label>", uid, uid);
	CHECK(strstr(xml, "<seclabel type='static' model='dac' relabel='no'>") && strstr(xml, want),
	      "%s: no static DAC seclabel %s in\n%s", name, want, xml);
	snprintf(want, sizeof(want), "<hard_limit unit='KiB'>%llu</hard_limit>", limit_mib * 1024);
	CHECK(strstr(xml, "<memtune>") && strstr(xml, want), "%s: no %s in\n%s", name, want, xml);
	free(xml);
	CHECK(limit == limit_mib << 20, "%s: cgroup memory limit %llu, want %llu MiB", name, limit,
	      limit_mib);
	CHECK(proc_cmdline_has(pid, "-sandbox on,"), "QEMU of %s runs without -sandbox on", name);
	printf("%s: QEMU pid %d uid %u gid %u, cgroup limit %llu MiB, seccomp sandbox on\n", name,
	       (int)pid, uid, gid, limit >> 20);
	return uid;
}

static void check_acl(const char *path, unsigned uid, int want)
{
	int got = file_acl_get(path, uid);

	CHECK(got == want, "ACL of %s for uid %u: %d, want %d", path, uid, got, want);
}

/*
 * Two jailed VMs: each QEMU runs as a uid of its own (not root, not the
 * other's) with a static DAC label, the memory hard limit in its domain XML
 * and cgroup, and QEMU's seccomp sandbox; each VM's files carry an ACL entry
 * for its own uid only, and neither uid can read the other VM's image or
 * directory. Destroy takes every entry back and leaves the modes as they were.
 * First, the jail switched off: QEMU runs as libvirtd says (root here).
 */
static void case_jail(void)
{
	struct hearth_engine_config off = {.jail = false, .name_prefix = PREFIX "off-"};
	struct hearth_engine *e;
	struct hearth_image ia, ib;
	struct hearth_vm_spec spec = {.kernel = kernel_path};
	struct hearth_vm *va, *vb, *v0;
	struct agent_conn *ca, *cb;
	struct stat ka, kb, ia0, ia1, rd0, rd1;
	char err[512], dira[4096], dirb[4096], p[4400], *xml;
	unsigned ua, ub;
	unsigned long long limit = 128 + HEARTH_LIBVIRT_OVERHEAD_TCG_MB, peak;

	skip_unless_root("jail");
	build_image("misbehave", FN_MISBEHAVE_BIN, NULL,
		    "{\"handler\": \"fn_misbehave\", \"memory_mb\": 128, \"timeout_ms\": 20000}", &ia);
	build_image("echo", FN_ECHO_BIN, NULL, echo_manifest, &ib);
	/* Only the ACL lets a jailed QEMU read these. */
	CHECK(chmod(ia.path, 0600) == 0 && chmod(ib.path, 0600) == 0, "chmod images");
	CHECK(stat(kernel_path, &ka) == 0 && stat(ia.path, &ia0) == 0, "stat");

	/* --jail off: no seclabel, QEMU as libvirtd's configured user, no ACL. */
	e = open_libvirt_cfg(&off);
	spec.initrd = ib.path;
	CHECK(hearth_vm_create(e, &spec, &v0, err, sizeof(err)) == 0, "create unjailed: %s", err);
	xml = domain_xml(hearth_vm_name(v0));
	CHECK(!strstr(xml, "<seclabel type='static'") && !strstr(xml, "<hard_limit"),
	      "unjailed domain has a jail:\n%s", xml);
	free(xml);
	printf("jail off: QEMU uid %u\n", proc_id(qemu_pid(hearth_vm_name(v0)), "Uid:"));
	CHECK(file_acl_users(ib.path) == 0, "unjailed VM put an ACL on its image");
	CHECK(hearth_vm_destroy(v0, err, sizeof(err)) == 0, "destroy: %s", err);
	hearth_engine_close(e);

	e = open_libvirt();
	va = boot(e, &ia, &ca);
	vb = boot(e, &ib, &cb);
	expect_ok_body(ca, "a-1", "from a", "from a");
	expect_ok_body(cb, "b-1", "from b", "from b");
	ua = check_jailed(va, limit);
	ub = check_jailed(vb, limit);
	CHECK(ua != ub, "two domains share QEMU uid %u", ua);
	snprintf(dira, sizeof(dira), "%s/%s", E2E_RUN_DIR, hearth_vm_name(va));
	snprintf(dirb, sizeof(dirb), "%s/%s", E2E_RUN_DIR, hearth_vm_name(vb));

	/* Each VM's files: its own uid's entry, never the other's. */
	check_acl(dira, ua, FILE_ACL_R | FILE_ACL_X);
	check_acl(dira, ub, -ENOENT);
	check_acl(dirb, ub, FILE_ACL_R | FILE_ACL_X);
	check_acl(dirb, ua, -ENOENT);
	check_acl(ia.path, ua, FILE_ACL_R); /* dira/initrd is a link to it */
	check_acl(ia.path, ub, -ENOENT);
	check_acl(ib.path, ub, FILE_ACL_R);
	check_acl(ib.path, ua, -ENOENT);
	CHECK(file_acl_users(ia.path) == 1 && file_acl_users(ib.path) == 1, "extra ACL entries");
	check_acl(kernel_path, ua, FILE_ACL_R); /* one kernel, shared */
	check_acl(kernel_path, ub, FILE_ACL_R);
	check_acl(E2E_RUN_DIR, ua, FILE_ACL_X); /* 0700: search only */
	check_acl(E2E_RUN_DIR, ub, FILE_ACL_X);

	/* Hostile: neither uid reaches the other VM's image or directory. */
	snprintf(p, sizeof(p), "%s/initrd", dirb);
	CHECK(open_as(ua, p) == EACCES, "uid %u opened %s", ua, p);
	CHECK(open_as(ua, ib.path) == EACCES, "uid %u opened the other VM's image %s", ua, ib.path);
	CHECK(open_as(ub, ia.path) == EACCES, "uid %u opened the other VM's image %s", ub, ia.path);
	snprintf(p, sizeof(p), "%s/kernel", dira);
	CHECK(open_as(ub, p) == EACCES, "uid %u opened %s", ub, p);
	CHECK(open_as(ua, p) == 0, "uid %u cannot open its own %s", ua, p);
	snprintf(p, sizeof(p), "%s/" "jail.acl", dira);
	CHECK(open_as(ua, p) == EACCES, "uid %u opened its jail record %s", ua, p);
	CHECK(open_as(ua, E2E_RUN_DIR) == EACCES, "uid %u can list %s", ua, E2E_RUN_DIR);
	printf("uid %u cannot open VM b's image or directory; uid %u cannot open VM a's\n", ua, ub);

	/* Room for the guest's RAM: 100 MiB written in a 128 MiB guest stays under the limit. */
	expect_ok_body(ca, "a-touch", "touch 100", "touched 100");
	peak = memcg_file(qemu_pid(hearth_vm_name(va)), "memory.max_usage_in_bytes", "memory.peak");
	printf("VM a after writing 100 MiB: its cgroup's peak %llu MiB of %llu\n", peak >> 20, limit);

	CHECK(stat(E2E_RUN_DIR, &rd0) == 0, "stat");
	destroy(va, ca);
	check_acl(ia.path, ua, -ENOENT);
	CHECK(file_acl_users(ia.path) == 0, "ACL entries left on %s", ia.path);
	CHECK(stat(ia.path, &ia1) == 0 && ia1.st_mode == ia0.st_mode, "mode of %s %o, was %o",
	      ia.path, ia1.st_mode, ia0.st_mode);
	check_acl(kernel_path, ua, -ENOENT);
	check_acl(kernel_path, ub, FILE_ACL_R);
	check_acl(E2E_RUN_DIR, ua, -ENOENT);
	destroy(vb, cb);
	check_acl(ib.path, ub, -ENOENT);
	check_acl(kernel_path, ub, -ENOENT);
	check_acl(E2E_RUN_DIR, ub, -ENOENT);
	CHECK(stat(kernel_path, &kb) == 0 && kb.st_mode == ka.st_mode, "kernel mode %o, was %o",
	      kb.st_mode, ka.st_mode);
	CHECK(stat(E2E_RUN_DIR, &rd1) == 0 && (rd1.st_mode & 0777) == 0700, "run dir mode %o",
	      rd1.st_mode);
	printf("after destroy: no ACL entry of uid %u or %u left, modes unchanged\n", ua, ub);
	hearth_image_free(&ia);
	hearth_image_free(&ib);
	hearth_engine_close(e);
}

/*
 * A jailed VM whose QEMU outgrows its cgroup's hard limit is killed by the
 * kernel, and the engine says it ran out of memory (as the builtin engine
 * does for hearth-vmm). The limit is made small (16 MiB over guest RAM) and
 * the guest writes 100 MiB.
 */
static void case_jail_oom(void)
{
	struct hearth_engine_config cfg = {.jail = true, .mem_overhead_mb = 16};
	struct hearth_engine *e;
	struct hearth_image img;
	struct hearth_vm *vm;
	struct agent_conn *c;
	struct agent_result r;
	char why[256], err[512];
	enum hearth_vm_end end;
	unsigned uid;
	int rc;

	skip_unless_root("jail_oom");
	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) < 0 &&
	    access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) < 0) {
		printf("SKIP jail_oom: no cgroup memory controller\n");
		exit(77);
	}
	build_image("misbehave", FN_MISBEHAVE_BIN, NULL,
		    "{\"handler\": \"fn_misbehave\", \"memory_mb\": 128, \"timeout_ms\": 20000}", &img);
	e = open_libvirt_cfg(&cfg);
	vm = boot(e, &img, &c);
	uid = check_jailed(vm, 128 + 16);
	expect_ok_body(c, "small", "touch 1", "touched 1");
	rc = agent_invoke(c, "big", "touch 100", 9, 0, CALL_TIMEOUT_MS, &r);
	CHECK(rc != 0, "a 100 MiB write in a 144 MiB cgroup went through: %s",
	      r.body ? (char *)r.body : "");
	end = hearth_vm_exit_reason(vm, 10000, why, sizeof(why));
	CHECK(end == HEARTH_VM_OUT_OF_MEMORY, "exit reason %d: %s", (int)end, why);
	printf("killed: %s\n", why);
	agent_close(c);
	cur_vm = NULL;
	CHECK(hearth_vm_destroy(vm, err, sizeof(err)) == 0, "destroy: %s", err);
	check_acl(img.path, uid, -ENOENT);
	check_acl(kernel_path, uid, -ENOENT);
	hearth_image_free(&img);
	hearth_engine_close(e);
}

/* 5. After the other tests: no hearth-e2e-* domain, socket or file anywhere. */
static void case_cleanup(void)
{
	virConnectPtr lv = virConnectOpen("qemu:///system");
	virDomainPtr *doms = NULL;
	struct dirent *de;
	DIR *d;
	int n, left = 0;

	CHECK(lv, "virConnectOpen");
	n = virConnectListAllDomains(lv, &doms, 0);
	CHECK(n >= 0, "list domains");
	for (int i = 0; i < n; i++) {
		const char *name = virDomainGetName(doms[i]);

		if (name && !strncmp(name, PREFIX, strlen(PREFIX))) {
			fprintf(stderr, "leftover domain %s\n", name);
			left++;
		}
		virDomainFree(doms[i]);
	}
	free(doms);
	virConnectClose(lv);
	CHECK(left == 0, "%d leftover domain(s)", left);

	d = opendir(E2E_RUN_DIR);
	if (d) {
		while ((de = readdir(d)))
			if (de->d_name[0] != '.') {
				fprintf(stderr, "leftover %s/%s\n", E2E_RUN_DIR, de->d_name);
				left++;
			}
		closedir(d);
		CHECK(left == 0, "%d leftover file(s) in %s", left, E2E_RUN_DIR);
		CHECK(rmdir(E2E_RUN_DIR) == 0, "rmdir %s: %s", E2E_RUN_DIR, strerror(errno));
	}
	/* libvirtd and QEMU keep nothing of ours either: no managed save, no QEMU
	 * log, no status XML. */
	{
		static const char *const dirs[] = {"/var/lib/libvirt/qemu/save",
						   "/var/log/libvirt/qemu", "/run/libvirt/qemu"};

		for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
			d = opendir(dirs[i]);
			if (!d)
				continue;
			while ((de = readdir(d)))
				CHECK(strncmp(de->d_name, PREFIX, strlen(PREFIX)) != 0,
				      "%s/%s left behind", dirs[i], de->d_name);
			closedir(d);
		}
	}
	printf("no domain, socket or file left behind\n");
}

static const struct {
	const char *name;
	void (*run)(void);
	bool needs_kernel;
} cases[] = {
	{"echo_c", case_echo_c, true},
	{"shell", case_shell, true},
	{"crash_timeout", case_crash_timeout, true},
	{"save_restore", case_save_restore, true},
	{"guest_crash", case_guest_crash, true},
	{"reap", case_reap, true},
	{"jail", case_jail, true},
	{"jail_oom", case_jail_oom, true},
	{"process_engine", case_process_engine, false},
	{"cleanup", case_cleanup, false},
};

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: e2e_vm <case>\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	srand((unsigned)time(NULL));
	mkdir(E2E_WORK_DIR, 0755);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (strcmp(argv[1], cases[i].name))
			continue;
#ifdef HEARTH_AGENT_DYNAMIC
		if (strcmp(argv[1], "cleanup") && !getenv("HEARTH_E2E_AGENT")) {
			printf("SKIP %s: this is a sanitizer build, whose hearth-agent is linked "
			       "dynamically and cannot be a guest's /init (set HEARTH_E2E_AGENT "
			       "to a static one)\n", argv[1]);
			return 77;
		}
#endif
		if (cases[i].needs_kernel)
			find_kernel();
		cases[i].run();
		printf("PASS %s\n", cases[i].name);
		return 0;
	}
	fprintf(stderr, "e2e_vm: no case named %s\n", argv[1]);
	return 2;
}
