/*
 * vmm boot tests: real KVM VMs booting the freestanding guests of
 * tests/guests through the 64-bit boot protocol, plus the exit codes for a
 * crashing guest, wild MMIO, and bad kernels/usage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <fcntl.h>
#include <unistd.h>

#include "harness.h"

#define BOOT_TIMEOUT_MS 20000

static void assert_contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle)) {
		fprintf(stderr, "expected to find [%s] in:\n%s\n", needle, hay);
		fail();
	}
}

static void run_hello(const char *image, const char *vcpus)
{
	struct vmm_run r;
	vmm_run_init(&r, "hello");
	const char *av[] = { "--kernel", guest_path(image), "--mem", "32", "--vcpus", vcpus, NULL };
	int rc = vmm_run_sync(&r, av, BOOT_TIMEOUT_MS);
	char *con = slurp(r.console, NULL), *err = slurp(r.errlog, NULL);
	if (rc != 0)
		fprintf(stderr, "stderr: %s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(con, "hello from the hearth test guest\n");
	assert_contains(err, "guest reset the machine");
	free(con);
	free(err);
	vmm_run_cleanup(&r);
}

static void hello_vmlinux(void **s) { (void)s; run_hello("hello.elf", "1"); }
static void hello_bzimage(void **s) { (void)s; run_hello("hello.bzImage", "1"); }
/* The guest starts its APs with INIT-SIPI-SIPI; each reports the APIC id CPUID gives it. */
static void smp(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "smp");
	const char *av[] = { "--kernel", guest_path("smp.elf"), "--mem", "32", "--vcpus", "4", NULL };
	int rc = vmm_run_sync(&r, av, BOOT_TIMEOUT_MS);
	char *con = slurp(r.console, NULL);
	assert_int_equal(rc, 0);
	assert_contains(con, "smp: cpuid says 4 logical cpus, hypervisor bit 1\n");
	assert_contains(con, "smp: 4 cpus up, apic ids 0/4 ");
	assert_contains(con, " 1/4");
	assert_contains(con, " 2/4");
	assert_contains(con, " 3/4");
	free(con);
	vmm_run_cleanup(&r);
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static void boot_params(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "bootparams");
	char rd[320];
	snprintf(rd, sizeof(rd), "%s/initrd", r.dir);
	uint8_t buf[5000];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + (i >> 5));
	FILE *f = fopen(rd, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, sizeof(buf), f), sizeof(buf));
	fclose(f);
	const char *cmdline = "console=ttyS0 hearth.test=boot_params quiet";
	const char *av[] = { "--kernel", guest_path("boot_params.elf"), "--mem", "48",
			     "--vcpus", "2", "--initrd", rd, "--cmdline", cmdline, NULL };
	int rc = vmm_run_sync(&r, av, BOOT_TIMEOUT_MS);
	char *con = slurp(r.console, NULL);
	assert_int_equal(rc, 0);
	assert_contains(con, "boot_flag=0xaa55 magic=0x53726448 loader=0xff\n");
	assert_contains(con, "e820 entries=3\n"
			     "e820 0x0 0x9fc00 1\n"
			     "e820 0x9fc00 0x60400 2\n"
			     "e820 0x100000 0x2f00000 1\n");
	/* hearth-vmm's own parameters come first, so that the user's can override them. */
	assert_contains(con, "cmdline=[acpi=off console=ttyS0 hearth.test=boot_params quiet]\n");
	/* One processor entry per vCPU, 0 the BSP; the IOAPIC's 24 pins; LINT0 and LINT1. */
	assert_contains(con, "mptable ok cpus=2 bsp=0 lapic=0xfee00000 ioapic=0xfec00000 id=2 "
			     "intsrc=24 lint=2\n");
	char want[128];
	snprintf(want, sizeof(want), "size=%zu fnv1a=0x%llx\n", sizeof(buf),
		 (unsigned long long)fnv1a(buf, sizeof(buf)));
	assert_contains(con, want);
	/* The initrd sits page-aligned at the top of RAM, above the guest image. */
	const char *a = strstr(con, "initrd addr=0x");
	assert_non_null(a);
	unsigned long long addr = strtoull(a + strlen("initrd addr="), NULL, 16);
	assert_int_equal(addr & 0xfff, 0);
	assert_true(addr >= 0x200000 && addr + sizeof(buf) <= 48ull << 20);
	/* A 16550A answers: scratch register, loopback, FIFO enabled, transmitter empty. */
	assert_contains(con, "uart probe scratch=ok loopback=ok iir=0xc1 lsr=0x60\n");
	assert_contains(con, "boot_params done\n");
	free(con);
	vmm_run_cleanup(&r);
}

static void triple_fault(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "triple");
	const char *av[] = { "--kernel", guest_path("triple_fault.elf"), "--mem", "32", NULL };
	int rc = vmm_run_sync(&r, av, BOOT_TIMEOUT_MS);
	char *con = slurp(r.console, NULL), *err = slurp(r.errlog, NULL);
	assert_int_equal(rc, 3);
	assert_contains(con, "about to fault");
	assert_null(strstr(con, "still running"));
	assert_contains(err, "guest crashed");
	free(con);
	free(err);
	vmm_run_cleanup(&r);
}

static void wild_mmio(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "wildmmio");
	const char *av[] = { "--kernel", guest_path("wild_mmio.elf"), "--mem", "32", NULL };
	int rc = vmm_run_sync(&r, av, BOOT_TIMEOUT_MS);
	char *con = slurp(r.console, NULL), *err = slurp(r.errlog, NULL);
	assert_int_equal(rc, 0);
	assert_contains(con, "read 0xffffffff, still alive\n");
	assert_contains(err, "wrote 4 bytes at unmapped MMIO 0xe0001000");
	assert_contains(err, "read 4 bytes at unmapped MMIO 0xe0002000");
	free(con);
	free(err);
	vmm_run_cleanup(&r);
}

static void expect_failure(const char *tag, const char *const *av, int code, const char *msg)
{
	struct vmm_run r;
	vmm_run_init(&r, tag);
	int rc = vmm_run_sync(&r, av, BOOT_TIMEOUT_MS);
	char *err = slurp(r.errlog, NULL);
	assert_int_equal(rc, code);
	assert_contains(err, msg);
	free(err);
	vmm_run_cleanup(&r);
}

static void bad_kernels(void **s)
{
	(void)s;
	const char *missing[] = { "--kernel", "/nonexistent/vmlinux", NULL };
	expect_failure("badk1", missing, 1, "cannot open /nonexistent/vmlinux");

	char path[] = "/tmp/hvt-garbage-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "this is not a kernel at all, not even close......", 50), 50);
	close(fd);
	const char *garbage[] = { "--kernel", path, NULL };
	expect_failure("badk2", garbage, 1, "neither an ELF vmlinux nor a bzImage");

	/* An ELF cut off inside its program headers. */
	char *elf = slurp(guest_path("hello.elf"), NULL);
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, elf, 70), 70);
	close(fd);
	free(elf);
	expect_failure("badk3", garbage, 1, "bad program header table");
	unlink(path);

	const char *toosmall[] = { "--kernel", guest_path("hello.elf"), "--mem", "1", NULL };
	expect_failure("badk4", toosmall, 2, "--mem");
	const char *nokernel[] = { "--mem", "32", NULL };
	expect_failure("badk5", nokernel, 2, "is required");
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(hello_vmlinux, vmm_teardown), cmocka_unit_test_teardown(hello_bzimage, vmm_teardown),
		cmocka_unit_test_teardown(smp, vmm_teardown),     cmocka_unit_test_teardown(boot_params, vmm_teardown),
		cmocka_unit_test_teardown(triple_fault, vmm_teardown),  cmocka_unit_test_teardown(wild_mmio, vmm_teardown),
		cmocka_unit_test_teardown(bad_kernels, vmm_teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
