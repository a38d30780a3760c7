/*
 * In-process tests of the snapshot state-file library (snapshots/): a round
 * trip, exact-size property access, and refusal of damaged files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "snapshot.h"

static char dir[] = "/tmp/hvt-snapfile-XXXXXX";
static char state[300], mem[300];

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	fclose(f);
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	rewind(f);
	char *b = malloc(*len);
	assert_int_equal(fread(b, 1, *len, f), *len);
	fclose(f);
	return b;
}

static int setup(void **s)
{
	(void)s;
	strcpy(dir, "/tmp/hvt-snapfile-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(mem, sizeof(mem), "%s/mem", dir);
	static uint8_t ram[8192];
	for (size_t i = 0; i < sizeof(ram); i++)
		ram[i] = (uint8_t)(i * 13);
	write_file(mem, ram, sizeof(ram));
	struct snap_config cfg = { .mem_size = sizeof(ram), .vcpus = 2 };
	assert_int_equal(snap_sha256_file(mem, cfg.mem_sha256), 0);
	snprintf(cfg.kernel_id, sizeof(cfg.kernel_id), "vmlinux:1234");
	snprintf(cfg.vmm_version, sizeof(cfg.vmm_version), "test");
	struct snap_builder *b = snap_build_begin(&cfg);
	assert_non_null(b);
	uint8_t big[100000];
	memset(big, 0xab, sizeof(big)); /* forces the builder to grow its buffer */
	assert_int_equal(snap_node_begin(b, "cpu@0"), 0);
	assert_int_equal(snap_prop(b, "regs", "0123456789abcdef", 16), 0);
	assert_int_equal(snap_prop(b, "big", big, sizeof(big)), 0);
	assert_int_equal(snap_node_end(b), 0);
	char err[256];
	assert_int_equal(snap_build_write(b, state, err, sizeof(err)), 0);
	snap_build_free(b);
	return 0;
}

static int teardown(void **s)
{
	(void)s;
	unlink(state);
	unlink(mem);
	rmdir(dir);
	return 0;
}

static void round_trip(void **s)
{
	(void)s;
	struct snap sn;
	char err[256];
	assert_int_equal(snap_load(state, &sn, err, sizeof(err)), 0);
	assert_int_equal(sn.version, SNAP_VERSION);
	assert_int_equal(sn.cfg.mem_size, 8192);
	assert_int_equal(sn.cfg.vcpus, 2);
	assert_string_equal(sn.cfg.kernel_id, "vmlinux:1234");
	assert_int_equal(snap_check_memory(&sn, mem, err, sizeof(err)), 0);
	const void *r = snap_prop_get(&sn, "/cpu@0", "regs", 16, err, sizeof(err));
	assert_non_null(r);
	assert_memory_equal(r, "0123456789abcdef", 16);
	/* Exact sizes only; missing nodes and properties are named. */
	assert_null(snap_prop_get(&sn, "/cpu@0", "regs", 17, err, sizeof(err)));
	assert_non_null(strstr(err, "is 16 bytes, expected 17"));
	assert_null(snap_prop_get(&sn, "/cpu@1", "regs", 16, err, sizeof(err)));
	assert_non_null(strstr(err, "node /cpu@1 missing"));
	assert_null(snap_prop_get(&sn, "/cpu@0", "sregs", 16, err, sizeof(err)));
	assert_non_null(strstr(err, "/cpu@0/sregs missing"));
	size_t len;
	assert_null(snap_prop_get_var(&sn, "/cpu@0", "big", 1000, &len, err, sizeof(err)));
	assert_non_null(snap_prop_get_var(&sn, "/cpu@0", "big", 100000, &len, err, sizeof(err)));
	assert_int_equal(len, 100000);
	snap_free(&sn);
}

static void refused(void **s)
{
	(void)s;
	size_t len;
	char *st = read_all(state, &len);
	char bad[320], err[256];
	struct snap sn;
	snprintf(bad, sizeof(bad), "%s/bad", dir);

	for (size_t cut = 0; cut < len; cut += len / 7 + 1) {
		write_file(bad, st, cut);
		assert_int_equal(snap_load(bad, &sn, err, sizeof(err)), -1);
	}
	/* Every single flipped byte is refused (structure, magic, version or digest). */
	for (size_t i = 0; i < len; i += 97) {
		st[i] ^= 0x5a;
		write_file(bad, st, len);
		if (snap_load(bad, &sn, err, sizeof(err)) == 0) {
			fprintf(stderr, "flipped byte %zu accepted\n", i);
			fail();
		}
		st[i] ^= 0x5a;
	}
	char m2[320];
	snprintf(m2, sizeof(m2), "%s/m2", dir);
	write_file(m2, "x", 1);
	assert_int_equal(snap_load(state, &sn, err, sizeof(err)), 0);
	assert_int_equal(snap_check_memory(&sn, m2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "the state file says 8192"));
	snap_free(&sn);
	assert_int_equal(snap_load("/nonexistent/state", &sn, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot open state file"));
	unlink(bad);
	unlink(m2);
	free(st);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(refused, setup, teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
