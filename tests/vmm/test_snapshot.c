/*
 * vmm snapshot and control tests: a running echo guest snapshotted mid-run
 * through the control socket and restored into two VMs at once, each with
 * its own vsock socket; refused state files (truncated, tampered, version
 * mismatch, wrong memory file); pause/resume/status over the control socket.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <libfdt.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent_client.h"
#include "echo_client.h"
#include "harness.h"

#define T_MS 20000


static void assert_contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle)) {
		fprintf(stderr, "expected to find [%s] in:\n%s\n", needle, hay);
		fail();
	}
}

/* One control command; the reply line (the test fails when hearth-vmm cannot be reached). */
static const char *ctl(const char *path, const char *cmd)
{
	const char *r = vmm_ctl(path, cmd);
	assert_non_null(r);
	return r;
}

struct vm_paths {
	char sock[320], ctl[320];
};

static void boot_echo(struct vmm_run *r, struct vm_paths *p, const char *cmdline)
{
	snprintf(p->sock, sizeof(p->sock), "%s/v.sock", r->dir);
	snprintf(p->ctl, sizeof(p->ctl), "%s/ctl", r->dir);
	/* Two vCPUs, so snapshots carry a second (never started) vCPU's state too. */
	const char *av[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "32", "--vcpus", "2",
			     "--vsock-socket", p->sock, "--control", p->ctl, "--cmdline", cmdline,
			     NULL };
	assert_int_equal(vmm_spawn(r, av), 0);
	assert_true(wait_for_text(r->console, "vsock echo guest ready", T_MS));
}

static void restore_echo(struct vmm_run *r, struct vm_paths *p, const char *state,
			 const char *mem)
{
	snprintf(p->sock, sizeof(p->sock), "%s/v.sock", r->dir);
	snprintf(p->ctl, sizeof(p->ctl), "%s/ctl", r->dir);
	const char *av[] = { "--restore", state, "--restore-mem", mem, "--vsock-socket", p->sock,
			     "--control", p->ctl, NULL };
	assert_int_equal(vmm_spawn(r, av), 0);
}

static unsigned last_tick(const char *console)
{
	char *s = slurp(console, NULL);
	unsigned t = 0;
	for (char *p = strstr(s, "tick "); p; p = strstr(p + 1, "tick "))
		t = (unsigned)strtoul(p + 5, NULL, 10);
	free(s);
	return t;
}

static void stop_via_ctl(struct vmm_run *r, const char *ctlp)
{
	assert_string_equal(ctl(ctlp, "stop"), "OK stopping");
	assert_int_equal(vmm_wait(r, T_MS), 4);
}

static void snapshot_restore_twice(void **s)
{
	(void)s;
	struct vmm_run a, b, c;
	struct vm_paths pa, pb, pc;
	vmm_run_init(&a, "snapA");
	boot_echo(&a, &pa, "hearth.ticks=1000000");
	echo_session(pa.sock, "before", 3);
	assert_true(wait_for_text(a.console, "tick 1\n", T_MS));

	char mem[320], state[320], cmd[700];
	snprintf(mem, sizeof(mem), "%s/snap.mem", a.dir);
	snprintf(state, sizeof(state), "%s/snap.state", a.dir);
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", mem, state);
	const char *rep = ctl(pa.ctl, cmd);
	assert_true(strncmp(rep, "OK snapshot", 11) == 0);
	unsigned snap_tick = last_tick(a.console);
	/* The original keeps running after the snapshot. */
	assert_contains(ctl(pa.ctl, "status"), "OK state=running");

	vmm_run_init(&b, "snapB");
	vmm_run_init(&c, "snapC");
	restore_echo(&b, &pb, state, mem);
	restore_echo(&c, &pc, state, mem);
	/* The guest learns its vsock connections are gone... */
	assert_true(wait_for_text(b.console, "transport reset\n", T_MS));
	assert_true(wait_for_text(c.console, "transport reset\n", T_MS));
	/* ...and carries on counting from where the snapshot caught it. */
	char want[32];
	snprintf(want, sizeof(want), "tick %u\n", snap_tick + 2);
	assert_true(wait_for_text(b.console, want, T_MS));
	assert_true(wait_for_text(c.console, want, T_MS));
	char *bc = slurp(b.console, NULL);
	unsigned first = 0;
	char *t = strstr(bc, "tick ");
	if (t)
		first = (unsigned)strtoul(t + 5, NULL, 10);
	free(bc);
	assert_true(first >= snap_tick && first <= snap_tick + 2);

	assert_contains(ctl(pb.ctl, "status"), "OK state=running vcpus=2 mem_mib=32");
	/* Each clone serves its own socket; memory state (the invoke count) continues. */
	echo_session(pb.sock, "cloneB", 2);
	echo_session(pc.sock, "cloneC", 1);
	echo_session(pa.sock, "original", 1);
	assert_true(wait_for_text(b.console, "invoke #5\n", T_MS));
	assert_true(wait_for_text(c.console, "invoke #4\n", T_MS));
	assert_true(wait_for_text(a.console, "invoke #4\n", T_MS));
	char *cc = slurp(c.console, NULL);
	assert_null(strstr(cc, "invoke #5"));
	assert_null(strstr(cc, "invoke #1\n")); /* the restored console starts after the snapshot */
	free(cc);
	char *berr = slurp(b.errlog, NULL);
	assert_contains(berr, "vCPUs started");
	free(berr);

	stop_via_ctl(&b, pb.ctl);
	stop_via_ctl(&c, pc.ctl);
	stop_via_ctl(&a, pa.ctl);
	vmm_run_cleanup(&b);
	vmm_run_cleanup(&c);
	vmm_run_cleanup(&a);
}

static void expect_refused(const char *state, const char *mem, const char *msg)
{
	struct vmm_run r;
	vmm_run_init(&r, "refused");
	char sock[320];
	snprintf(sock, sizeof(sock), "%s/v.sock", r.dir);
	const char *av[] = { "--restore", state, "--restore-mem", mem, "--vsock-socket", sock, NULL };
	int rc = vmm_run_sync(&r, av, T_MS);
	char *err = slurp(r.errlog, NULL);
	if (rc != 1 || !strstr(err, msg))
		fprintf(stderr, "rc=%d stderr: %s\n", rc, err);
	assert_int_equal(rc, 1);
	assert_contains(err, "restore refused: ");
	assert_contains(err, msg);
	free(err);
	vmm_run_cleanup(&r);
}

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	fclose(f);
}

static void snapshot_refused(void **s)
{
	(void)s;
	struct vmm_run a;
	struct vm_paths pa;
	vmm_run_init(&a, "snapbad");
	boot_echo(&a, &pa, "");
	char mem[320], state[320], bad[320], badmem[320], cmd[700];
	snprintf(mem, sizeof(mem), "%s/m", a.dir);
	snprintf(state, sizeof(state), "%s/s", a.dir);
	snprintf(bad, sizeof(bad), "%s/bad", a.dir);
	snprintf(badmem, sizeof(badmem), "%s/badmem", a.dir);
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", mem, state);
	assert_true(strncmp(ctl(pa.ctl, cmd), "OK snapshot", 11) == 0);
	stop_via_ctl(&a, pa.ctl);

	size_t len;
	char *st = slurp(state, &len);
	assert_true(len > 1000);

	write_file(bad, st, len / 2);
	expect_refused(bad, mem, "truncated");

	/* One flipped bit inside the vCPU registers. */
	char *t = malloc(len);
	memcpy(t, st, len);
	int off = fdt_path_offset(t, "/cpu@0");
	assert_true(off >= 0);
	int plen;
	const uint8_t *regs = fdt_getprop(t, off, "regs", &plen);
	assert_non_null(regs);
	t[(const char *)regs - t + 8] ^= 0x10;
	write_file(bad, t, len);
	expect_refused(bad, mem, "state digest mismatch");

	/* A state file from a future format version. */
	memcpy(t, st, len);
	fdt32_t v2 = cpu_to_fdt32(2);
	assert_int_equal(fdt_setprop_inplace(t, 0, "version", &v2, 4), 0);
	write_file(bad, t, len);
	expect_refused(bad, mem, "format version 2, this build reads only version 1");

	/* Structure damage that libfdt itself catches. */
	memcpy(t, st, len);
	memset(t + fdt_off_dt_struct(t) + 4, 0xee, 16);
	write_file(bad, t, len);
	expect_refused(bad, mem, "corrupt (libfdt");

	write_file(bad, "garbage", 7);
	expect_refused(bad, mem, "not a hearth snapshot");

	/* The right state with a memory file that is not the one it was taken with. */
	size_t mlen;
	char *m = slurp(mem, &mlen);
	m[0x100000] ^= 1;
	write_file(badmem, m, mlen);
	expect_refused(state, badmem, "does not match the state file");
	write_file(badmem, m, mlen / 2);
	expect_refused(state, badmem, "the state file says");
	free(m);
	free(t);
	free(st);

	/* And the untouched pair still restores. */
	struct vmm_run r;
	struct vm_paths pr;
	vmm_run_init(&r, "snapgood");
	restore_echo(&r, &pr, state, mem);
	assert_true(wait_for_text(r.console, "transport reset\n", T_MS));
	echo_session(pr.sock, "good", 1);
	stop_via_ctl(&r, pr.ctl);
	vmm_run_cleanup(&r);
	vmm_run_cleanup(&a);
}

static void control_pause_resume(void **s)
{
	(void)s;
	struct vmm_run a;
	struct vm_paths pa;
	vmm_run_init(&a, "ctl");
	boot_echo(&a, &pa, "hearth.ticks=1000000");
	assert_true(wait_for_text(a.console, "tick 1\n", T_MS));
	assert_contains(ctl(pa.ctl, "status"), "OK state=running vcpus=2 mem_mib=32");
	assert_string_equal(ctl(pa.ctl, "pause"), "OK paused");
	assert_contains(ctl(pa.ctl, "status"), "state=paused");
	size_t l1, l2;
	free(slurp(a.console, &l1));
	usleep(1500 * 1000); /* ticks come about every second while running */
	free(slurp(a.console, &l2));
	assert_int_equal(l1, l2);
	assert_string_equal(ctl(pa.ctl, "resume"), "OK running");
	char want[32];
	snprintf(want, sizeof(want), "tick %u\n", last_tick(a.console) + 1);
	assert_true(wait_for_text(a.console, want, T_MS));
	assert_contains(ctl(pa.ctl, "frobnicate"), "ERR unknown command");
	assert_contains(ctl(pa.ctl, "snapshot /nonexistent/dir/m /nonexistent/dir/s"),
			"ERR snapshot failed: cannot create /nonexistent/dir/m");
	assert_contains(ctl(pa.ctl, "status"), "state=running");

	/* The command-line client speaks the same protocol. */
	char cmd[800], out[256];
	snprintf(cmd, sizeof(cmd), "%s ctl %s status", vmm_bin(), pa.ctl);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(out, sizeof(out), p));
	assert_int_equal(pclose(p), 0);
	assert_true(strncmp(out, "OK state=running", 16) == 0);
	snprintf(cmd, sizeof(cmd), "%s ctl %s bogus >/dev/null", vmm_bin(), pa.ctl);
	assert_int_not_equal(system(cmd), 0);

	/* A snapshot of a paused VM, restored with --start-paused, runs only on resume. */
	char mem[320], state[320];
	snprintf(mem, sizeof(mem), "%s/m", a.dir);
	snprintf(state, sizeof(state), "%s/s", a.dir);
	assert_string_equal(ctl(pa.ctl, "pause"), "OK paused");
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", mem, state);
	assert_true(strncmp(ctl(pa.ctl, cmd), "OK snapshot", 11) == 0);
	assert_contains(ctl(pa.ctl, "status"), "state=paused"); /* still paused */
	stop_via_ctl(&a, pa.ctl);
	char *err = slurp(a.errlog, NULL);
	assert_contains(err, "stopped through the control socket (exit 4)");
	free(err);

	struct vmm_run r;
	vmm_run_init(&r, "ctlrestore");
	char sock[320], ctlp[320];
	snprintf(sock, sizeof(sock), "%s/v.sock", r.dir);
	snprintf(ctlp, sizeof(ctlp), "%s/ctl", r.dir);
	const char *av[] = { "--restore", state, "--restore-mem", mem, "--vsock-socket", sock,
			     "--control", ctlp, "--start-paused", NULL };
	assert_int_equal(vmm_spawn(&r, av), 0);
	assert_contains(ctl(ctlp, "status"), "state=paused");
	usleep(300 * 1000);
	size_t len;
	free(slurp(r.console, &len));
	assert_int_equal(len, 0);
	assert_string_equal(ctl(ctlp, "resume"), "OK running");
	assert_true(wait_for_text(r.console, "transport reset\n", T_MS));
	echo_session(sock, "resumed", 1);
	stop_via_ctl(&r, ctlp);
	vmm_run_cleanup(&r);
	vmm_run_cleanup(&a);
}

/* Every thread of a running hearth-vmm is under a seccomp filter (mode 2). */
static void seccomp_active(void **s)
{
	(void)s;
	struct vmm_run a;
	struct vm_paths pa;
	vmm_run_init(&a, "seccomp");
	boot_echo(&a, &pa, "");
	echo_session(pa.sock, "filtered", 1); /* the device paths work under the filters */
	assert_contains(ctl(pa.ctl, "status"), "OK state=running");
	char *err = slurp(a.errlog, NULL);
	bool sanitized = strstr(err, "sanitizer build, seccomp filters not installed") != NULL;
	free(err);
	char path[128];
	int threads = 0, filtered = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)a.pid);
	DIR *d = opendir(path);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char st[300];
		snprintf(st, sizeof(st), "/proc/%d/task/%s/status", (int)a.pid, e->d_name);
		char *txt = slurp(st, NULL);
		threads++;
		if (strstr(txt, "Seccomp:\t2\n"))
			filtered++;
		free(txt);
	}
	closedir(d);
	assert_true(threads >= 2); /* main + one vCPU */
	if (sanitized)
		assert_int_equal(filtered, 0); /* and said so on stderr */
	else
		assert_int_equal(filtered, threads);
	stop_via_ctl(&a, pa.ctl);
	vmm_run_cleanup(&a);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(snapshot_restore_twice, vmm_teardown),
		cmocka_unit_test_teardown(snapshot_refused, vmm_teardown),
		cmocka_unit_test_teardown(control_pause_resume, vmm_teardown),
		cmocka_unit_test_teardown(seccomp_active, vmm_teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
