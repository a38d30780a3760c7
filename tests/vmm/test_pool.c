/*
 * vmm pool tests: hearth-vmm --pool pre-starts a VM of one shape and waits
 * on its control socket; 'restore STATE MEM vsock=P [console=F]' then brings
 * a snapshot to life in it. A pooled clone answers on its own socket; two
 * pooled clones of one snapshot never see each other's memory; a snapshot of
 * another shape, a tampered state file or a garbage command is refused and
 * the process stays pooled and usable; a restored process refuses a second
 * restore.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "echo_client.h"
#include "harness.h"

#define T_MS 20000

static void assert_contains(const char *hay, const char *needle)
{
	if (!hay || !strstr(hay, needle)) {
		fprintf(stderr, "expected to find [%s] in:\n%s\n", needle, hay ? hay : "(null)");
		fail();
	}
}

static const char *ctl(const char *path, const char *cmd)
{
	const char *r = vmm_ctl(path, cmd);
	assert_non_null(r);
	return r;
}

/* A running echo guest (2 vCPUs, 32 MiB) and its snapshot in r->dir/snap.{mem,state}. */
struct snapshot {
	struct vmm_run vm;
	char sock[320], ctl[320], mem[320], state[320];
};

static void make_snapshot(struct snapshot *s, const char *cmdline)
{
	vmm_run_init(&s->vm, "poolsrc");
	snprintf(s->sock, sizeof(s->sock), "%s/v.sock", s->vm.dir);
	snprintf(s->ctl, sizeof(s->ctl), "%s/ctl", s->vm.dir);
	snprintf(s->mem, sizeof(s->mem), "%s/snap.mem", s->vm.dir);
	snprintf(s->state, sizeof(s->state), "%s/snap.state", s->vm.dir);
	const char *av[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "32", "--vcpus", "2",
			     "--vsock-socket", s->sock, "--control", s->ctl, "--cmdline", cmdline,
			     NULL };
	assert_int_equal(vmm_spawn(&s->vm, av), 0);
	assert_true(wait_for_text(s->vm.console, "vsock echo guest ready", T_MS));
	echo_session(s->sock, "before", 2);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", s->mem, s->state);
	assert_contains(ctl(s->ctl, cmd), "OK snapshot");
}

struct pooled {
	struct vmm_run vm;
	char ctl[320], sock[320];
};

static void start_pooled(struct pooled *p, const char *tag, const char *mem_mib, const char *vcpus)
{
	vmm_run_init(&p->vm, tag);
	snprintf(p->ctl, sizeof(p->ctl), "%s/ctl", p->vm.dir);
	snprintf(p->sock, sizeof(p->sock), "%s/v.sock", p->vm.dir);
	const char *av[] = { "--pool", "--mem", mem_mib, "--vcpus", vcpus, "--control", p->ctl,
			     NULL };
	assert_int_equal(vmm_spawn(&p->vm, av), 0);
	assert_contains(ctl(p->ctl, "status"), "OK state=pooled");
}

static const char *restore(struct pooled *p, const struct snapshot *s, const char *extra)
{
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "restore %s %s vsock=%s%s%s", s->state, s->mem, p->sock,
		 extra ? " " : "", extra ? extra : "");
	return ctl(p->ctl, cmd);
}

/* Waits for text in a file; on failure shows what the VM and its hearth-vmm said. */
static void expect_text(const char *file, const char *text, struct vmm_run *r, const char *ctlp)
{
	if (wait_for_text(file, text, T_MS))
		return;
	char *f = slurp(file, NULL), *e = slurp(r->errlog, NULL), *c = slurp(r->console, NULL);
	const char *st = vmm_ctl(ctlp, "status");
	fprintf(stderr, "no '%s' in %s within %d ms\n--- it holds:\n%s\n--- stderr:\n%s\n"
			"--- first console:\n%s\n--- status: %s\n",
		text, file, T_MS, f, e, c, st ? st : "(no answer)");
	free(f);
	free(e);
	free(c);
	fail();
}

static void stop(struct vmm_run *r, const char *ctlp)
{
	assert_string_equal(ctl(ctlp, "stop"), "OK stopping");
	assert_int_equal(vmm_wait(r, T_MS), 4);
}

/* A pooled process restores a clone that answers, on its own socket, with its console moved. */
static void pool_restore_answers(void **st)
{
	(void)st;
	struct snapshot s;
	struct pooled p;
	make_snapshot(&s, "");
	start_pooled(&p, "pool1", "32", "2");
	char console[400], arg[420];
	snprintf(console, sizeof(console), "%s/clone-console", p.vm.dir);
	snprintf(arg, sizeof(arg), "console=%s", console);
	assert_contains(restore(&p, &s, arg), "OK restored us=");
	expect_text(console, "transport reset\n", &p.vm, p.ctl);
	assert_contains(ctl(p.ctl, "status"), "OK state=running vcpus=2 mem_mib=32");
	echo_session(p.sock, "pooled", 2);
	/* The memory state continues from the snapshot (2 invokes before it). */
	assert_true(wait_for_text(console, "invoke #4\n", T_MS));
	/* hearth-vmm's own lines follow the console too. */
	assert_true(wait_for_text(console, "into a pooled process", T_MS));
	/* Single use: a second restore is refused, and the clone keeps running. */
	assert_contains(restore(&p, &s, NULL), "ERR restore: only a pooled hearth-vmm");
	echo_session(p.sock, "again", 1);
	stop(&p.vm, p.ctl);
	stop(&s.vm, s.ctl);
	vmm_run_cleanup(&p.vm);
	vmm_run_cleanup(&s.vm);
}

/* Refusals happen before anything changes: the process stays pooled and then restores fine. */
static void pool_refusals_keep_it_usable(void **st)
{
	(void)st;
	struct snapshot s;
	struct pooled big, p;
	make_snapshot(&s, "");
	start_pooled(&big, "poolbig", "64", "2");
	assert_contains(restore(&big, &s, NULL),
			"ERR restore refused: the snapshot is of another shape (2 vCPUs, 32 MiB) "
			"than this pooled process (2 vCPUs, 64 MiB)");
	assert_contains(ctl(big.ctl, "status"), "OK state=pooled");
	stop(&big.vm, big.ctl);
	vmm_run_cleanup(&big.vm);

	start_pooled(&p, "poolbad", "32", "2");
	/* A tampered copy of the state file. */
	char bad[400];
	snprintf(bad, sizeof(bad), "%s/tampered.state", p.vm.dir);
	size_t n;
	char *blob = slurp(s.state, &n);
	assert_true(n > 200);
	blob[n / 2] ^= 0x5a;
	FILE *f = fopen(bad, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(blob, 1, n, f), n);
	fclose(f);
	free(blob);
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "restore %s %s vsock=%s", bad, s.mem, p.sock);
	assert_contains(ctl(p.ctl, cmd), "ERR restore refused: ");
	snprintf(cmd, sizeof(cmd), "restore /nonexistent/state %s vsock=%s", s.mem, p.sock);
	assert_contains(ctl(p.ctl, cmd), "ERR restore refused: ");
	/* No vsock path, an unknown argument, and commands that need a guest. */
	snprintf(cmd, sizeof(cmd), "restore %s %s", s.state, s.mem);
	assert_contains(ctl(p.ctl, cmd), "ERR restore refused: the snapshot has a vsock device");
	snprintf(cmd, sizeof(cmd), "restore %s %s vsock=%s bogus=1", s.state, s.mem, p.sock);
	assert_contains(ctl(p.ctl, cmd), "ERR restore: unknown argument 'bogus=1'");
	assert_contains(ctl(p.ctl, "resume"), "ERR pooled: no guest yet");
	assert_contains(ctl(p.ctl, "snapshot /tmp/x /tmp/y"), "ERR pooled: no guest yet");
	assert_contains(ctl(p.ctl, "\x01\x02garbage"), "ERR pooled: no guest yet");
	/* A memory file whose SHA-256 is not the snapshot's, when asked to check. */
	char badmem[400];
	snprintf(badmem, sizeof(badmem), "%s/other.mem", p.vm.dir);
	blob = slurp(s.mem, &n);
	blob[4096] ^= 1;
	f = fopen(badmem, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(blob, 1, n, f), n);
	fclose(f);
	free(blob);
	snprintf(cmd, sizeof(cmd), "restore %s %s vsock=%s verify-memory", s.state, badmem, p.sock);
	assert_contains(ctl(p.ctl, cmd), "ERR restore refused: ");
	assert_contains(ctl(p.ctl, "status"), "OK state=pooled");
	assert_false(vmm_exited(&p.vm));
	/* Still usable: the right snapshot, memory verified this time. */
	assert_contains(restore(&p, &s, "verify-memory"), "OK restored");
	echo_session(p.sock, "after-refusals", 1);
	stop(&p.vm, p.ctl);
	stop(&s.vm, s.ctl);
	vmm_run_cleanup(&p.vm);
	vmm_run_cleanup(&s.vm);
}

/* Two pooled clones of one snapshot: each one's writes stay its own. */
static void pool_clones_isolated(void **st)
{
	(void)st;
	struct snapshot s;
	struct pooled a, b;
	make_snapshot(&s, "");
	start_pooled(&a, "poolA", "32", "2");
	start_pooled(&b, "poolB", "32", "2");
	assert_contains(restore(&a, &s, NULL), "OK restored");
	assert_contains(restore(&b, &s, NULL), "OK restored");
	echo_session(a.sock, "cloneA", 3);
	echo_session(b.sock, "cloneB", 1);
	echo_session(s.sock, "original", 1);
	/* 2 invokes before the snapshot: A counts to 5, B to 3, the original to 3. */
	assert_true(wait_for_text(a.vm.console, "invoke #5\n", T_MS));
	assert_true(wait_for_text(b.vm.console, "invoke #3\n", T_MS));
	assert_true(wait_for_text(s.vm.console, "invoke #3\n", T_MS));
	char *bc = slurp(b.vm.console, NULL);
	assert_null(strstr(bc, "invoke #4"));
	assert_null(strstr(bc, "cloneA"));
	free(bc);
	char *sc = slurp(s.vm.console, NULL);
	assert_null(strstr(sc, "invoke #4"));
	free(sc);
	stop(&a.vm, a.ctl);
	stop(&b.vm, b.ctl);
	stop(&s.vm, s.ctl);
	vmm_run_cleanup(&a.vm);
	vmm_run_cleanup(&b.vm);
	vmm_run_cleanup(&s.vm);
}

/* The vsock socket bound at start (--vsock-socket), as hearthd's pool does: no vsock= needed. */
static void pool_prebound_socket(void **st)
{
	(void)st;
	struct snapshot s;
	struct pooled p;
	make_snapshot(&s, "");
	vmm_run_init(&p.vm, "poolbound");
	snprintf(p.ctl, sizeof(p.ctl), "%s/ctl", p.vm.dir);
	snprintf(p.sock, sizeof(p.sock), "%s/v.sock", p.vm.dir);
	const char *av[] = { "--pool", "--mem", "32", "--vcpus", "2", "--control", p.ctl,
			     "--vsock-socket", p.sock, NULL };
	assert_int_equal(vmm_spawn(&p.vm, av), 0);
	assert_contains(ctl(p.ctl, "status"), "OK state=pooled");
	char cmd[1400];
	/* Another path than the bound one: refused, still pooled. */
	snprintf(cmd, sizeof(cmd), "restore %s %s vsock=%s/other.sock", s.state, s.mem, p.vm.dir);
	assert_contains(ctl(p.ctl, cmd), "ERR restore refused: the vsock socket is already bound at");
	assert_contains(ctl(p.ctl, "status"), "OK state=pooled");
	snprintf(cmd, sizeof(cmd), "restore %s %s", s.state, s.mem);
	assert_contains(ctl(p.ctl, cmd), "OK restored");
	echo_session(p.sock, "prebound", 1);
	stop(&p.vm, p.ctl);
	stop(&s.vm, s.ctl);
	vmm_run_cleanup(&p.vm);
	vmm_run_cleanup(&s.vm);
}

/* A pooled process that is never used stops cleanly; a killed one leaves nothing running. */
static void pool_idle_stop(void **st)
{
	(void)st;
	struct pooled p, q;
	start_pooled(&p, "poolidle", "128", "1");
	stop(&p.vm, p.ctl);
	char *err = slurp(p.vm.errlog, NULL);
	assert_contains(err, "hearth-vmm: pooled (1 vCPUs, 128 MiB)");
	free(err);
	vmm_run_cleanup(&p.vm);
	start_pooled(&q, "poolkill", "32", "1");
	kill(q.vm.pid, SIGKILL);
	assert_int_equal(vmm_wait(&q.vm, T_MS), 128 + SIGKILL);
	vmm_run_cleanup(&q.vm);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(pool_restore_answers, vmm_teardown),
		cmocka_unit_test_teardown(pool_refusals_keep_it_usable, vmm_teardown),
		cmocka_unit_test_teardown(pool_clones_isolated, vmm_teardown),
		cmocka_unit_test_teardown(pool_idle_stop, vmm_teardown),
		cmocka_unit_test_teardown(pool_prebound_socket, vmm_teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
