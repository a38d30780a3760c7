/*
 * pool tests: the builtin engine's pool of pre-started hearth-vmm processes
 * (host/engine/vmm_pool.c), driven through engine.h as hearthd drives it,
 * with the vsock echo test guest's snapshot: a clone restores in a pooled
 * process and answers; the pool refills; a pooled process that is killed, or
 * whose control socket answers garbage, is replaced; a clone of a shape with
 * no pooled process, or whose pooled process refuses the snapshot, falls back
 * to a spawned hearth-vmm that answers; closing the engine leaves no process
 * or directory behind.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent_client.h"
#include "engine.h"
#include "harness.h"

#define T_MS 20000

static char snap_mem[400], snap_state[400], run_dir[300];
static struct vmm_run src;

/* The echo guest (32 MiB, 1 vCPU) booted and snapshotted once for every case. */
static int group_setup(void **st)
{
	(void)st;
	char sock[400], ctl[400], cmd[1000];
	vmm_run_init(&src, "poolsnap");
	snprintf(sock, sizeof(sock), "%s/v.sock", src.dir);
	snprintf(ctl, sizeof(ctl), "%s/ctl", src.dir);
	snprintf(snap_mem, sizeof(snap_mem), "%s/snap.mem", src.dir);
	snprintf(snap_state, sizeof(snap_state), "%s/snap.state", src.dir);
	const char *av[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "32",
			     "--vsock-socket", sock, "--control", ctl, NULL };
	if (vmm_spawn(&src, av) || !wait_for_text(src.console, "vsock echo guest ready", T_MS))
		return -1;
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", snap_mem, snap_state);
	const char *r = vmm_ctl(ctl, cmd);
	if (!r || strncmp(r, "OK snapshot", 11)) {
		fprintf(stderr, "snapshot failed: %s\n", r ? r : "(no answer)");
		return -1;
	}
	r = vmm_ctl(ctl, "stop");
	vmm_wait(&src, T_MS);
	return 0;
}

static int group_teardown(void **st)
{
	(void)st;
	vmm_run_cleanup(&src);
	return 0;
}

static struct hearth_engine *open_engine(void)
{
	static int n;
	struct hearth_engine *e = NULL;
	char err[512];
	snprintf(run_dir, sizeof(run_dir), "/tmp/hearth-pooltest-%d-%d", (int)getpid(), n++);
	mkdir(run_dir, 0700);
	struct hearth_engine_config cfg = {
		.kind = HEARTH_ENGINE_BUILTIN,
		.run_dir = run_dir,
		.name_prefix = "pt-",
		.vmm_bin = vmm_bin(),
	};
	int rc = hearth_engine_open(&cfg, &e, err, sizeof(err));
	if (rc)
		fprintf(stderr, "engine open: %s\n", err);
	assert_int_equal(rc, 0);
	return e;
}

/* Closing the engine stops every pooled process: nothing is left in run_dir. */
static void close_engine(struct hearth_engine *e)
{
	hearth_engine_close(e);
	DIR *d = opendir(run_dir);
	assert_non_null(d);
	struct dirent *de;
	int left = 0;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			fprintf(stderr, "left behind: %s/%s\n", run_dir, de->d_name);
			left++;
		}
	closedir(d);
	assert_int_equal(left, 0);
	rmdir(run_dir);
}

/* Waits until the pool shows at least `idle` ready processes (and returns the stats). */
static struct hearth_pool_stats wait_idle(struct hearth_engine *e, int idle)
{
	struct hearth_pool_stats st;
	long long deadline = now_us() + (long long)T_MS * 1000;
	do {
		assert_int_equal(hearth_engine_pool_stats(e, &st), 0);
		if (st.idle >= idle)
			return st;
		usleep(20000);
	} while (now_us() < deadline);
	fprintf(stderr, "pool: %d idle, %d starting after %d ms (wanted %d idle)\n", st.idle,
		st.starting, T_MS, idle);
	fail();
	return st;
}

/* The clone answers Hello on the agent port (the echo guest's). */
static void clone_answers(struct hearth_vm *vm)
{
	struct agent_conn *c = NULL;
	char err[512], *sw = NULL;
	int rc = hearth_vm_connect(vm, T_MS, &c, err, sizeof(err));
	if (rc)
		fprintf(stderr, "connect: %s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(agent_hello(c, T_MS, &sw), AGENT_OK);
	assert_string_equal(sw, "hearth-test-guest vsock_echo");
	free(sw);
	agent_close(c);
}

/* pid of one pooled process (from its directory's pid file), or 0. */
static pid_t a_pooled_pid(char *dir_out, size_t len)
{
	DIR *d = opendir(run_dir);
	struct dirent *de;
	pid_t pid = 0;
	while (d && (de = readdir(d)) && !pid) {
		char p[700];
		if (strncmp(de->d_name, "pt-pool-", 8))
			continue;
		snprintf(p, sizeof(p), "%s/%s/pid", run_dir, de->d_name);
		char *s = slurp(p, NULL);
		pid = (pid_t)atoi(s);
		free(s);
		if (dir_out)
			snprintf(dir_out, len, "%s/%s", run_dir, de->d_name);
	}
	if (d)
		closedir(d);
	return pid;
}

static const struct hearth_pool_shape echo_shape = { .memory_mb = 32, .vcpus = 1, .count = 2 };
static const struct hearth_vm_spec echo_spec = { .memory_mb = 32, .vcpus = 1 };

static void pool_clone_hits(void **st)
{
	(void)st;
	struct hearth_engine *e = open_engine();
	struct hearth_vm *vm = NULL;
	char err[512];
	assert_int_equal(hearth_engine_pool_set(e, &echo_shape, 1), 0);
	wait_idle(e, 2);
	int rc = hearth_vm_clone(e, snap_mem, snap_state, &echo_spec, &vm, err, sizeof(err));
	if (rc)
		fprintf(stderr, "clone: %s\n", err);
	assert_int_equal(rc, 0);
	clone_answers(vm);
	struct hearth_pool_stats s;
	assert_int_equal(hearth_engine_pool_stats(e, &s), 0);
	assert_int_equal(s.hits, 1);
	assert_int_equal(s.misses, 0);
	/* The clone's console is its own file, and says it came from the pool. */
	assert_true(wait_for_text(hearth_vm_console_log(vm), "into a pooled process", T_MS));
	/* The pool refills behind the clone. */
	s = wait_idle(e, 2);
	assert_true(s.started >= 3);
	/* A second clone at once: also a hit; both answer. */
	struct hearth_vm *vm2 = NULL;
	assert_int_equal(hearth_vm_clone(e, snap_mem, snap_state, &echo_spec, &vm2, err, sizeof(err)),
			 0);
	clone_answers(vm2);
	clone_answers(vm);
	assert_int_equal(hearth_engine_pool_stats(e, &s), 0);
	assert_int_equal(s.hits, 2);
	assert_int_equal(hearth_vm_destroy(vm, err, sizeof(err)), 0);
	assert_int_equal(hearth_vm_destroy(vm2, err, sizeof(err)), 0);
	/* Fewer wanted: the surplus stops. */
	struct hearth_pool_shape one = echo_shape;
	one.count = 1;
	assert_int_equal(hearth_engine_pool_set(e, &one, 1), 0);
	long long deadline = now_us() + (long long)T_MS * 1000;
	do {
		assert_int_equal(hearth_engine_pool_stats(e, &s), 0);
		usleep(20000);
	} while (s.idle + s.starting > 1 && now_us() < deadline);
	assert_int_equal(s.idle + s.starting, 1);
	close_engine(e);
}

static void pool_replaces_killed(void **st)
{
	(void)st;
	struct hearth_engine *e = open_engine();
	struct hearth_vm *vm = NULL;
	char err[512];
	assert_int_equal(hearth_engine_pool_set(e, &echo_shape, 1), 0);
	struct hearth_pool_stats s = wait_idle(e, 2);
	uint64_t started = s.started;
	pid_t victim = a_pooled_pid(NULL, 0);
	assert_true(victim > 0);
	assert_int_equal(kill(victim, SIGKILL), 0);
	long long deadline = now_us() + (long long)T_MS * 1000;
	do {
		usleep(20000);
		assert_int_equal(hearth_engine_pool_stats(e, &s), 0);
	} while ((s.discarded < 1 || s.idle < 2) && now_us() < deadline);
	assert_int_equal(s.discarded, 1);
	assert_int_equal(s.idle, 2);
	assert_int_equal(s.started, started + 1);
	/* And clones still come from the pool. */
	assert_int_equal(hearth_vm_clone(e, snap_mem, snap_state, &echo_spec, &vm, err, sizeof(err)),
			 0);
	clone_answers(vm);
	assert_int_equal(hearth_engine_pool_stats(e, &s), 0);
	assert_int_equal(s.hits, 1);
	assert_int_equal(hearth_vm_destroy(vm, err, sizeof(err)), 0);
	close_engine(e);
}

/* A pooled process whose control socket answers garbage is stopped and replaced. */
static void pool_replaces_garbage(void **st)
{
	(void)st;
	struct hearth_engine *e = open_engine();
	struct hearth_pool_shape one = echo_shape;
	one.count = 1;
	assert_int_equal(hearth_engine_pool_set(e, &one, 1), 0);
	struct hearth_pool_stats s = wait_idle(e, 1);
	char dir[600], path[700];
	pid_t pid = a_pooled_pid(dir, sizeof(dir));
	assert_true(pid > 0);
	/* Put an impostor on its control socket path. */
	snprintf(path, sizeof(path), "%s/ctl.sock", dir);
	unlink(path);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	long long deadline = now_us() + (long long)T_MS * 1000;
	do {
		int c = accept(lfd, NULL, NULL);
		if (c >= 0) {
			char buf[256];
			usleep(10000);
			(void)!read(c, buf, sizeof(buf));
			(void)!write(c, "\x7f\x01garbage\n", 10);
			close(c);
		}
		usleep(20000);
		assert_int_equal(hearth_engine_pool_stats(e, &s), 0);
	} while ((s.discarded < 1 || s.idle < 1) && now_us() < deadline);
	close(lfd);
	assert_int_equal(s.discarded, 1);
	assert_int_equal(s.idle, 1);
	/* The impostor's process is gone (killed and reaped), and so is its directory. */
	assert_int_equal(kill(pid, 0), -1);
	struct stat sb;
	assert_int_equal(stat(dir, &sb), -1);
	/* The replacement restores a clone that answers. */
	struct hearth_vm *vm = NULL;
	char err[512];
	assert_int_equal(hearth_vm_clone(e, snap_mem, snap_state, &echo_spec, &vm, err, sizeof(err)),
			 0);
	clone_answers(vm);
	assert_int_equal(hearth_vm_destroy(vm, err, sizeof(err)), 0);
	close_engine(e);
}

/*
 * No pooled process of the clone's shape: a miss, and a spawned hearth-vmm.
 * A pooled process that refuses the snapshot (a caller that named the wrong
 * shape): discarded, a miss, and a spawned hearth-vmm; the caller sees a clone.
 */
static void pool_miss_falls_back(void **st)
{
	(void)st;
	struct hearth_engine *e = open_engine();
	struct hearth_vm *vm = NULL;
	char err[512];
	/* No shapes wanted at all. */
	assert_int_equal(hearth_vm_clone(e, snap_mem, snap_state, &echo_spec, &vm, err, sizeof(err)),
			 0);
	clone_answers(vm);
	struct hearth_pool_stats s;
	assert_int_equal(hearth_engine_pool_stats(e, &s), 0);
	assert_int_equal(s.hits, 0);
	assert_int_equal(s.misses, 1);
	assert_int_equal(hearth_vm_destroy(vm, err, sizeof(err)), 0);

	/* Pooled processes of 64 MiB, and a caller that says the 32 MiB snapshot is 64 MiB. */
	struct hearth_pool_shape big = { .memory_mb = 64, .vcpus = 1, .count = 1 };
	struct hearth_vm_spec wrong = { .memory_mb = 64, .vcpus = 1 };
	assert_int_equal(hearth_engine_pool_set(e, &big, 1), 0);
	wait_idle(e, 1);
	assert_int_equal(hearth_vm_clone(e, snap_mem, snap_state, &wrong, &vm, err, sizeof(err)), 0);
	clone_answers(vm);
	assert_int_equal(hearth_engine_pool_stats(e, &s), 0);
	assert_int_equal(s.hits, 0);
	assert_int_equal(s.misses, 2);
	assert_int_equal(s.discarded, 1);
	assert_int_equal(hearth_vm_destroy(vm, err, sizeof(err)), 0);
	/* The pool carries on: a right-shaped request later is served by it. */
	assert_int_equal(hearth_engine_pool_set(e, &echo_shape, 1), 0);
	wait_idle(e, 2);
	assert_int_equal(hearth_vm_clone(e, snap_mem, snap_state, &echo_spec, &vm, err, sizeof(err)),
			 0);
	clone_answers(vm);
	assert_int_equal(hearth_engine_pool_stats(e, &s), 0);
	assert_int_equal(s.hits, 1);
	assert_int_equal(hearth_vm_destroy(vm, err, sizeof(err)), 0);
	close_engine(e);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pool_clone_hits),
		cmocka_unit_test(pool_replaces_killed),
		cmocka_unit_test(pool_replaces_garbage),
		cmocka_unit_test(pool_miss_falls_back),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
