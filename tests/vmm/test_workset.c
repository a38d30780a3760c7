/*
 * vmm working-set tests: a clone's first invocation touches a known amount
 * of guest RAM (the echo guest's hearth.touch_mib); `workset FILE` on the
 * control socket records the pages it touched; later restores (spawned with
 * --prefetch, pooled with prefetch=) fetch them ahead and still answer.
 * Hostile working-set files (garbage, another RAM size, ranges outside RAM,
 * truncated) are refused with a message and the restore goes on without
 * prefetch.
 */
#include <endian.h>
#include <libfdt.h>
#include <setjmp.h>
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
#define TOUCH_MIB 8

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

struct vmx {
	struct vmm_run r;
	char sock[320], ctl[320];
};

static void paths(struct vmx *v, const char *tag)
{
	vmm_run_init(&v->r, tag);
	snprintf(v->sock, sizeof(v->sock), "%s/v.sock", v->r.dir);
	snprintf(v->ctl, sizeof(v->ctl), "%s/ctl", v->r.dir);
}

static char snap_mem[400], snap_state[400];
static struct vmx src;

/* The echo guest, 64 MiB, touching TOUCH_MIB on each Invoke; snapshotted after one. */
static void make_snapshot(void)
{
	char cmdline[64], cmd[1000];
	paths(&src, "wssrc");
	snprintf(cmdline, sizeof(cmdline), "hearth.touch_mib=%d", TOUCH_MIB);
	const char *av[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "64", "--vsock-socket",
			     src.sock, "--control", src.ctl, "--cmdline", cmdline, NULL };
	assert_int_equal(vmm_spawn(&src.r, av), 0);
	assert_true(wait_for_text(src.r.console, "vsock echo guest ready", T_MS));
	echo_session(src.sock, "src", 1);
	snprintf(snap_mem, sizeof(snap_mem), "%s/snap.mem", src.r.dir);
	snprintf(snap_state, sizeof(snap_state), "%s/snap.state", src.r.dir);
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", snap_mem, snap_state);
	assert_contains(ctl(src.ctl, cmd), "OK snapshot");
}

static void restore(struct vmx *v, const char *tag, const char *prefetch_file)
{
	paths(v, tag);
	const char *av[] = { "--restore", snap_state, "--restore-mem", snap_mem, "--vsock-socket",
			     v->sock, "--control", v->ctl, prefetch_file ? "--prefetch" : NULL,
			     prefetch_file, NULL };
	assert_int_equal(vmm_spawn(&v->r, av), 0);
}

static void stop(struct vmx *v)
{
	assert_string_equal(ctl(v->ctl, "stop"), "OK stopping");
	assert_int_equal(vmm_wait(&v->r, T_MS), 4);
	vmm_run_cleanup(&v->r);
}

static void workset_record_and_prefetch(void **st)
{
	(void)st;
	struct vmx b, c, p;
	char ws[500], cmd[2000];
	make_snapshot();
	/* A clone's first invocation: the working set. */
	restore(&b, "wsB", NULL);
	echo_session(b.sock, "first", 1);
	snprintf(ws, sizeof(ws), "%s/snap.ws", src.r.dir);
	snprintf(cmd, sizeof(cmd), "workset %s", ws);
	const char *rep = ctl(b.ctl, cmd);
	unsigned long long pages = 0, ranges = 0;
	assert_int_equal(sscanf(rep, "OK workset pages=%llu ranges=%llu", &pages, &ranges), 2);
	/* At least the touched MiB; far less than all of the 64 MiB of RAM. */
	printf("working set: %llu pages in %llu ranges\n", pages, ranges);
	assert_true(pages >= TOUCH_MIB * 256);
	assert_true(pages < 64 * 256 / 2);
	assert_true(ranges >= 1);
	stop(&b);

	/* Spawned restore with the working set fetched ahead: it says so, and answers. */
	restore(&c, "wsC", ws);
	echo_session(c.sock, "prefetched", 2);
	char *err = slurp(c.r.errlog, NULL);
	char want[80];
	snprintf(want, sizeof(want), "prefetched %llu pages in %llu ranges", pages, ranges);
	assert_contains(err, want);
	free(err);
	stop(&c);

	/* A pooled process takes prefetch= with the restore. */
	paths(&p, "wsP");
	const char *av[] = { "--pool", "--mem", "64", "--control", p.ctl, NULL };
	assert_int_equal(vmm_spawn(&p.r, av), 0);
	assert_contains(ctl(p.ctl, "status"), "OK state=pooled");
	snprintf(cmd, sizeof(cmd), "restore %s %s vsock=%s prefetch=%s", snap_state, snap_mem, p.sock,
		 ws);
	assert_contains(ctl(p.ctl, cmd), "OK restored");
	echo_session(p.sock, "pooled", 1);
	assert_true(wait_for_text(p.r.errlog, want, T_MS));
	stop(&p);
	stop(&src);
}

/* Writes a working-set FDT with the given format, RAM size and raw ranges. */
static void write_ws(const char *path, const char *format, uint64_t mem_size, const uint64_t *pairs,
		     int npairs, size_t truncate_to)
{
	char buf[4096];
	uint64_t be[32];
	for (int i = 0; i < 2 * npairs; i++)
		be[i] = htobe64(pairs[i]);
	assert_int_equal(fdt_create_empty_tree(buf, sizeof(buf)), 0);
	assert_int_equal(fdt_setprop_string(buf, 0, "format", format), 0);
	assert_int_equal(fdt_setprop_u64(buf, 0, "mem-size", mem_size), 0);
	assert_int_equal(fdt_setprop(buf, 0, "ranges", be, npairs * 16), 0);
	assert_int_equal(fdt_pack(buf), 0);
	size_t len = fdt_totalsize(buf);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, truncate_to ? truncate_to : len, f),
			 truncate_to ? truncate_to : len);
	fclose(f);
}

static void hostile_ws(const char *tag, const char *path, const char *why)
{
	struct vmx v;
	restore(&v, tag, path);
	echo_session(v.sock, tag, 1);
	char *err = slurp(v.r.errlog, NULL);
	assert_contains(err, "hearth-vmm: no prefetch: ");
	assert_contains(err, why);
	free(err);
	stop(&v);
}

static void workset_hostile(void **st)
{
	(void)st;
	char p[500];
	make_snapshot();
	const uint64_t mem64 = 64ull << 20, pages = mem64 / 4096;
	uint64_t ok[] = { 0, 16 }, outside[] = { pages - 4, 5 }, wrap[] = { 1, UINT64_MAX },
		 zero[] = { 3, 0 };

	snprintf(p, sizeof(p), "%s/garbage.ws", src.r.dir);
	FILE *f = fopen(p, "wb");
	assert_non_null(f);
	fputs("this is not a device tree, not even close\n", f);
	fclose(f);
	hostile_ws("wsgarbage", p, "not a flattened device tree");

	snprintf(p, sizeof(p), "%s/format.ws", src.r.dir);
	write_ws(p, "something-else", mem64, ok, 1, 0);
	hostile_ws("wsformat", p, "format is not");

	snprintf(p, sizeof(p), "%s/size.ws", src.r.dir);
	write_ws(p, "hearth-workset-1", 128ull << 20, ok, 1, 0);
	hostile_ws("wssize", p, "another RAM size");

	snprintf(p, sizeof(p), "%s/outside.ws", src.r.dir);
	write_ws(p, "hearth-workset-1", mem64, outside, 1, 0);
	hostile_ws("wsout", p, "outside guest RAM");

	snprintf(p, sizeof(p), "%s/wrap.ws", src.r.dir);
	write_ws(p, "hearth-workset-1", mem64, wrap, 1, 0);
	hostile_ws("wswrap", p, "outside guest RAM");

	snprintf(p, sizeof(p), "%s/zero.ws", src.r.dir);
	write_ws(p, "hearth-workset-1", mem64, zero, 1, 0);
	hostile_ws("wszero", p, "outside guest RAM");

	snprintf(p, sizeof(p), "%s/trunc.ws", src.r.dir);
	write_ws(p, "hearth-workset-1", mem64, ok, 1, 60);
	hostile_ws("wstrunc", p, "not a flattened device tree");

	hostile_ws("wsmissing", "/nonexistent/snap.ws", "No such file");
	stop(&src);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(workset_record_and_prefetch, vmm_teardown),
		cmocka_unit_test_teardown(workset_hostile, vmm_teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
