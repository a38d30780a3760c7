/*
 * pool tests through the real hearthd (builtin engine, hearth-vmm with the
 * vsock echo test guest standing in for Linux, which cannot run on this PVM
 * host; the lab runs the same path with Linux): cold starts restore in
 * pre-started hearth-vmm processes, the pool stays within --max-vms, a
 * clone's first invocation records the snapshot's working set and later
 * clones prefetch it, hearthctl status shows the pool, deleting the function
 * removes its snapshot files, and every process is gone after hearthd stops.
 */
#include <glob.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "harness.h"

static bool wait_metric(struct hd *h, const char *name, int want, int seconds)
{
	for (int i = 0; i < seconds * 20; i++) {
		if (metric(h, name) == want)
			return true;
		usleep(50000);
	}
	fprintf(stderr, "%s stayed at %d, not %d\n", name, metric(h, name), want);
	return false;
}

static bool log_has(struct hd *h, const char *text, int seconds)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/hearthd.log", h->dir);
	for (int i = 0; i < seconds * 20; i++) {
		FILE *f = fopen(path, "r");
		char line[4096];
		bool found = false;
		while (f && !found && fgets(line, sizeof(line), f))
			found = strstr(line, text) != NULL;
		if (f)
			fclose(f);
		if (found)
			return true;
		usleep(50000);
	}
	fprintf(stderr, "hearthd.log never said '%s'\n", text);
	return false;
}

/* Does any live VM's console (hearth-vmm's stderr goes there too) hold text? */
static bool console_has(struct hd *h, const char *text)
{
	char pat[600];
	glob_t g;
	bool found = false;
	snprintf(pat, sizeof(pat), "%s/run/*/*/console.log", h->dir);
	if (glob(pat, 0, NULL, &g) != 0)
		return false;
	for (size_t i = 0; i < g.gl_pathc && !found; i++) {
		FILE *f = fopen(g.gl_pathv[i], "r");
		char line[1024];
		while (f && !found && fgets(line, sizeof(line), f))
			found = strstr(line, text) != NULL;
		if (f)
			fclose(f);
	}
	globfree(&g);
	return found;
}

static void test_pool_cold_starts(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "builtin", "--vmm", HEARTH_VMM_BIN,
					    "--builtin-kernel", VSOCK_ECHO_ELF, "--keep-warm", "5",
					    "--vmm-pool", "2", "--max-vms", "2", NULL };
	struct resp r;
	hd_start_args(h, args);
	char *key = tenant_create(h, "acme");
	deploy(h, key, "echo", EXAMPLES_DIR "/hello", NULL);
	/* No snapshot yet: nothing is pooled. */
	assert_int_equal(metric(h, "hearth_vmm_pool_idle"), 0);
	assert_int_equal(invoke(h, key, "echo", "first", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "boot");
	resp_free(&r);
	assert_true(log_has(h, "snapshot of echo v1 taken", 20));
	/* One VM alive, --max-vms 2: one pooled process at most. */
	assert_true(wait_metric(h, "hearth_vmm_pool_idle", 1, 4));
	usleep(300 * 1000); /* three pool ticks: no second one starts */
	assert_int_equal(metric(h, "hearth_vms"), 1);
	assert_int_equal(metric(h, "hearth_vmm_pool_idle") + metric(h, "hearth_vmm_pool_starting"), 1);
	/* The VM expires: two pooled. */
	assert_true(wait_metric(h, "hearth_vms", 0, 20));
	assert_true(wait_metric(h, "hearth_vmm_pool_idle", 2, 10));

	/* A cold start restores in a pooled process... */
	assert_int_equal(invoke(h, key, "echo", "pooled", NULL, &r), 200);
	assert_memory_equal(r.body, "pooled", 6);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "restore");
	fprintf(stderr, "pooled cold start: restore %s ms\n", hdr(&r, "X-Hearth-Restore-Ms"));
	resp_free(&r);
	assert_int_equal(metric(h, "hearth_vmm_pool_hits_total"), 1);
	assert_int_equal(metric(h, "hearth_vmm_pool_misses_total"), 0);
	/* ...whose first invocation records the snapshot's working set. */
	assert_true(log_has(h, "working set of echo v1 recorded", 10));
	char pat[600];
	glob_t g;
	snprintf(pat, sizeof(pat), "%s/state/snapshots/*.state.ws", h->dir);
	assert_int_equal(glob(pat, 0, NULL, &g), 0);
	assert_int_equal(g.gl_pathc, 1);
	globfree(&g);
	assert_true(wait_metric(h, "hearth_vms", 0, 20));

	/* The next clone prefetches it, from the pool again. */
	assert_true(wait_metric(h, "hearth_vmm_pool_idle", 2, 10));
	assert_int_equal(invoke(h, key, "echo", "prefetched", NULL, &r), 200);
	assert_memory_equal(r.body, "prefetched", 10);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "restore");
	resp_free(&r);
	if (!console_has(h, "hearth-vmm: prefetched ")) {
		char c[900];
		snprintf(c, sizeof(c), "ls -la %s/run/*/* >&2; tail -n 5 %s/run/*/*/console.log >&2; "
				       "grep -i 'work\\|pool' %s/hearthd.log | tail -5 >&2",
			 h->dir, h->dir, h->dir);
		if (system(c) != 0)
			fprintf(stderr, "(no logs)\n");
		fail();
	}
	assert_int_equal(metric(h, "hearth_vmm_pool_hits_total"), 2);

	/* Two at once (the second VM is within --max-vms 2): both answer. */
	struct par p[2];
	par_invoke(h, key, "echo", "twin", 2, p);
	assert_int_equal(par_count(p, 2, 200, NULL), 2);

	/* hearthctl status shows the pool. */
	char cmd[1200], out[2000] = "";
	snprintf(cmd, sizeof(cmd), "%s --url http://127.0.0.1:%d status 2>&1", HEARTHCTL_BIN, h->port);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	pclose(f);
	if (!strstr(out, "vmm pool: ") || !strstr(out, "clones restored in the pool"))
		fail_msg("hearthctl status said: %s", out);

	/* Deleting the function takes its snapshot and working set off the disk. */
	snprintf(pat, sizeof(pat), "%s/state/snapshots/v*", h->dir);
	assert_int_equal(glob(pat, 0, NULL, &g), 0);
	assert_true(g.gl_pathc >= 3); /* .mem, .state, .state.ws */
	globfree(&g);
	assert_int_equal(http(h, "DELETE", "/v1/functions/echo", key, NULL, NULL, 0, NULL, &r), 200);
	resp_free(&r);
	assert_int_equal(glob(pat, 0, NULL, &g), GLOB_NOMATCH);
	free(key);
	hd_stop(h);
	/* Pooled processes and clones alike are gone with hearthd. */
	assert_int_equal(vmm_procs_under(h->dir), 0);
}

/*
 * Host memory bounds the pool too: with room for 3 guests of 128 MiB, asking
 * for 8 pooled processes gets 3 while no VM runs, and 2 while one does.
 */
static void test_pool_host_memory(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "builtin", "--vmm", HEARTH_VMM_BIN,
					    "--builtin-kernel", VSOCK_ECHO_ELF, "--keep-warm", "3",
					    "--vmm-pool", "8", "--host-memory-mb", "384", NULL };
	struct resp r;
	hd_start_args(h, args);
	char *key = tenant_create(h, "acme");
	deploy(h, key, "echo", EXAMPLES_DIR "/hello", NULL); /* 128 MiB */
	assert_int_equal(invoke(h, key, "echo", "first", NULL, &r), 200);
	resp_free(&r);
	assert_true(log_has(h, "snapshot of echo v1 taken", 20));
	assert_true(wait_metric(h, "hearth_vmm_pool_idle", 2, 3));
	usleep(300 * 1000);
	assert_int_equal(metric(h, "hearth_vms"), 1); /* keep-warm 3 s: still alive */
	assert_int_equal(metric(h, "hearth_vmm_pool_idle") + metric(h, "hearth_vmm_pool_starting"), 2);
	assert_true(wait_metric(h, "hearth_vms", 0, 20));
	assert_true(wait_metric(h, "hearth_vmm_pool_idle", 3, 10));
	usleep(300 * 1000);
	assert_int_equal(metric(h, "hearth_vmm_pool_idle") + metric(h, "hearth_vmm_pool_starting"), 3);
	free(key);
	hd_stop(h);
	assert_int_equal(vmm_procs_under(h->dir), 0);
}

/*
 * A jailed clone killed by its cgroup's memory limit mid-invocation: hearthd
 * answers 502 VMOutOfMemory saying so, stays healthy, and the next clone
 * serves. The VMM wrapper makes the echo guest fill 60 MiB of its 128 MiB
 * and write them on every invocation (booted VMs: limit 128 + 64 MiB; a
 * clone's writes are its private copies), and, while the file "oom" exists, starts
 * clones with a 40 MiB limit. Needs root and a cgroup memory controller.
 */
static void test_vm_out_of_memory(void **state)
{
	struct hd *h = *state;
	if (geteuid() != 0 || (access("/sys/fs/cgroup/cgroup.controllers", F_OK) < 0 &&
			       access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) < 0)) {
		printf("SKIP: needs root and a cgroup memory controller (v2, or v1 memory)\n");
		exit(77);
	}
	char wrapper[600], trigger[600];
	snprintf(wrapper, sizeof(wrapper), "%s/vmm-wrapper", h->dir);
	snprintf(trigger, sizeof(trigger), "%s/oom", h->dir);
	FILE *f = fopen(wrapper, "w");
	assert_non_null(f);
	fprintf(f,
		"#!/bin/sh\n"
		"case \" $* \" in\n"
		"*' --restore '*|*' --pool '*)\n"
		"  if [ -e %s ]; then exec %s \"$@\" --jail-mem-max 40; fi\n"
		"  exec %s \"$@\" ;;\n"
		"esac\n"
		"exec %s \"$@\" --cmdline 'hearth.touch_mib=60 hearth.dirty=1'\n",
		trigger, HEARTH_VMM_BIN, HEARTH_VMM_BIN, HEARTH_VMM_BIN);
	fclose(f);
	assert_int_equal(chmod(wrapper, 0755), 0);
	const char *const args[] = { "--engine", "builtin", "--vmm", wrapper, "--builtin-kernel",
				     VSOCK_ECHO_ELF, "--keep-warm", "1", "--vmm-pool", "0",
				     "--jail", "on", NULL };
	struct resp r;
	hd_start_args(h, args);
	char *key = tenant_create(h, "acme");
	deploy(h, key, "echo", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(invoke(h, key, "echo", "first", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "boot");
	resp_free(&r);
	assert_true(log_has(h, "snapshot of echo v1 taken", 20));
	assert_true(wait_metric(h, "hearth_vms", 0, 20));

	f = fopen(trigger, "w");
	assert_non_null(f);
	fclose(f);
	long st = invoke(h, key, "echo", "too big", NULL, &r);
	if (st != 502 || strcmp(error_code(&r), "VMOutOfMemory") != 0)
		fail_msg("want 502 VMOutOfMemory, got %ld: %.*s", st, (int)r.len, r.body);
	assert_non_null(strstr(r.body, "killed by its cgroup"));
	resp_free(&r);
	assert_true(log_has(h, "killed by its cgroup", 5));
	hd_alive(h);

	unlink(trigger);
	assert_int_equal(invoke(h, key, "echo", "fits", NULL, &r), 200);
	assert_memory_equal(r.body, "fits", 4);
	assert_string_equal(hdr(&r, "X-Hearth-Cold-Start-Path"), "restore");
	resp_free(&r);
	free(key);
	hd_stop(h);
	assert_int_equal(vmm_procs_under(h->dir), 0);
}

/* The first live (not zombie) child of pid whose comm is name, or 0. */
static pid_t child_named(pid_t pid, const char *name)
{
	glob_t g;
	pid_t found = 0;

	if (glob("/proc/[0-9]*/stat", 0, NULL, &g) != 0)
		return 0;
	for (size_t i = 0; i < g.gl_pathc && !found; i++) {
		FILE *f = fopen(g.gl_pathv[i], "r");
		char line[1024], *rp;
		int ppid = 0, p = 0;
		char st = 0;

		if (!f)
			continue;
		if (fgets(line, sizeof(line), f) && sscanf(line, "%d", &p) == 1 &&
		    (rp = strrchr(line, ')')) && sscanf(rp + 2, "%c %d", &st, &ppid) == 2 &&
		    ppid == pid && st != 'Z' && strstr(line, name))
			found = p;
		fclose(f);
	}
	globfree(&g);
	return found;
}

/*
 * A VMM that hearthd started answers SIGTERM, as an operator would send it:
 * hearthd blocks SIGTERM, SIGINT and SIGHUP for its own sigwait, and a spawned
 * hearth-vmm (the jail's supervisor, which forwards them) must not inherit that.
 */
static void test_vmm_answers_sigterm(void **state)
{
	struct hd *h = *state;
	static const char *const args[] = { "--engine", "builtin", "--vmm", HEARTH_VMM_BIN,
					    "--builtin-kernel", VSOCK_ECHO_ELF, "--vmm-pool", "0",
					    NULL };
	struct resp r;
	char path[64], line[256];
	pid_t vmm;
	bool gone = false;

	hd_start_args(h, args);
	char *key = tenant_create(h, "acme");
	deploy(h, key, "echo", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(invoke(h, key, "echo", "first", NULL, &r), 200);
	resp_free(&r);
	assert_true((vmm = child_named(h->pid, "(hearth-vmm)")) > 0);
	snprintf(path, sizeof(path), "/proc/%d/status", (int)vmm);
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "SigBlk:", 7) == 0)
			fprintf(stderr, "hearth-vmm %d (hearthd's child) %s", (int)vmm, line);
	fclose(f);
	kill(vmm, SIGTERM);
	for (int i = 0; i < 100 && !gone; i++) {
		usleep(50 * 1000);
		gone = child_named(h->pid, "(hearth-vmm)") != vmm; /* exited (a zombie counts) */
	}
	assert_true(gone);
	/* hearthd goes on: the next call gets a new VM. */
	long st = invoke(h, key, "echo", "again", NULL, &r);
	if (st != 200)
		fail_msg("after the SIGTERM: %ld %.*s", st, (int)r.len, r.body);
	assert_memory_equal(r.body, "again", 5);
	resp_free(&r);
	free(key);
	hd_stop(h);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pool_cold_starts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pool_host_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vm_out_of_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmm_answers_sigterm, setup, teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
