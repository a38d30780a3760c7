/*
 * vmm vsock tests: the vsock_echo guest (its own virtio-mmio vsock driver)
 * driven through hearth-vmm's hybrid vsock socket by the real host client
 * library (host/client), and hostile guests that break the virtqueue rules.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <signal.h>
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

static void start_echo(struct vmm_run *r, char *sock, size_t socklen, const char *extra_cmdline)
{
	snprintf(sock, socklen, "%s/v.sock", r->dir);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "console=ttyS0 %s", extra_cmdline ? extra_cmdline : "");
	const char *av[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "32",
			     "--vsock-socket", sock, "--cmdline", cmd, NULL };
	assert_int_equal(vmm_spawn(r, av), 0);
	assert_true(wait_for_text(r->console, "vsock echo guest ready, cid 3", T_MS));
}

static void stop_vmm(struct vmm_run *r)
{
	kill(r->pid, SIGTERM);
	assert_int_equal(vmm_wait(r, T_MS), 4); /* VMM_EXIT_STOPPED */
}

static void vsock_echo(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "vsockecho");
	char sock[300];
	start_echo(&r, sock, sizeof(sock), NULL);
	echo_session(sock, "first", 3);
	/* A second connection after the first closed. */
	echo_session(sock, "second", 2);
	assert_true(wait_for_text(r.console, "invoke #5\n", T_MS));
	stop_vmm(&r);
	vmm_run_cleanup(&r);
}

/* What an engine sends around invocations: Configure, Reseed, Shutdown. */
static void vsock_engine_messages(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "vsockengine");
	char sock[300];
	start_echo(&r, sock, sizeof(sock), NULL);
	struct agent_conn *c = NULL;
	assert_int_equal(agent_connect_hybrid_vsock(sock, 52, T_MS, &c), AGENT_OK);
	assert_int_equal(agent_hello(c, T_MS, NULL), AGENT_OK);
	uint8_t ent[32] = { 1, 2, 3 };
	assert_int_equal(agent_reseed(c, ent, sizeof(ent), T_MS), AGENT_OK);
	assert_int_equal(agent_reseed(c, ent, 8, T_MS), AGENT_EREMOTE);
	assert_non_null(strstr(agent_last_error(c), "at least 32 bytes"));
	struct agent_config cfg = { .handler = "/bin/echo" };
	assert_int_equal(agent_configure(c, &cfg, T_MS, NULL), AGENT_OK);
	assert_int_equal(agent_shutdown(c, T_MS), AGENT_OK);
	agent_close(c);
	/* Shutdown powers the guest off: hearth-vmm exits 0 (guest stop). */
	assert_int_equal(vmm_wait(&r, T_MS), 0);
	assert_true(wait_for_text(r.console, "agent: shutdown\n", T_MS));
	vmm_run_cleanup(&r);
}

static void vsock_refused_port(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "vsockrefused");
	char sock[300];
	start_echo(&r, sock, sizeof(sock), NULL);
	/* Nothing listens on port 53 in the guest: the connection is refused... */
	struct agent_conn *c = NULL;
	assert_int_equal(agent_connect_hybrid_vsock(sock, 53, T_MS, &c), AGENT_ECONNECT);
	/* ...and a malformed request line is dropped; the VM keeps serving. */
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(sock) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, "CONNECT banana\n", 15), 15);
	char b[8];
	assert_int_equal(read(fd, b, sizeof(b)), 0);
	close(fd);
	echo_session(sock, "after", 1);
	stop_vmm(&r);
	vmm_run_cleanup(&r);
}

static void vsock_guest_initiated(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "vsockguest");
	char path[320];
	snprintf(path, sizeof(path), "%s/v.sock_4242", r.dir);
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	char sock[300];
	snprintf(sock, sizeof(sock), "%s/v.sock", r.dir);
	const char *av[] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "32",
			     "--vsock-socket", sock, "--cmdline", "hearth.connect=4242", NULL };
	assert_int_equal(vmm_spawn(&r, av), 0);
	int fd = accept(lfd, NULL, NULL);
	assert_true(fd >= 0);
	char buf[128];
	size_t got = 0;
	const char *want = "hello host, this is the guest\n";
	while (got < strlen(want)) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
		assert_true(n > 0);
		got += (size_t)n;
	}
	buf[got] = 0;
	assert_string_equal(buf, want);
	assert_int_equal(write(fd, "hello guest\n", 12), 12);
	assert_true(wait_for_text(r.console, "guest-initiated got: hello guest\n", T_MS));
	close(fd);
	close(lfd);
	/* Still serving the agent port afterwards. */
	echo_session(sock, "post", 1);
	stop_vmm(&r);
	vmm_run_cleanup(&r);
}

/*
 * A guest breaks the virtqueue rules; the device must fail with a clear
 * message, hearth-vmm must not, and after a driver reset the same VM serves
 * the agent protocol again.
 */
static void hostile(const char *mode, const char *why)
{
	struct vmm_run r;
	vmm_run_init(&r, mode);
	char sock[300], cmd[64];
	snprintf(cmd, sizeof(cmd), "hearth.hostile=%s", mode);
	start_echo(&r, sock, sizeof(sock), cmd);
	assert_true(wait_for_text(r.console, "hostile: device usable again after reset\n", T_MS));
	char *con = slurp(r.console, NULL), *err = slurp(r.errlog, NULL);
	assert_contains(con, "hostile: device failed as expected\n");
	assert_contains(err, "virtio-vsock device failed: ");
	assert_contains(err, why);
	free(con);
	free(err);
	echo_session(sock, mode, 2);
	stop_vmm(&r);
	vmm_run_cleanup(&r);
}

static void hostile_outside_ram(void **s) { (void)s; hostile("outside", "outside guest RAM"); }
static void hostile_desc_loop(void **s) { (void)s; hostile("loop", "too long or looping"); }
static void hostile_oversize_len(void **s) { (void)s; hostile("oversize", "above the 64 KiB maximum"); }
static void hostile_huge_desc(void **s) { (void)s; hostile("hugedesc", "outside guest RAM"); }
static void hostile_avail_ring(void **s) { (void)s; hostile("ring", "more than a queue size ahead"); }

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(vsock_echo, vmm_teardown),
		cmocka_unit_test_teardown(vsock_refused_port, vmm_teardown),
		cmocka_unit_test_teardown(vsock_engine_messages, vmm_teardown),
		cmocka_unit_test_teardown(vsock_guest_initiated, vmm_teardown),
		cmocka_unit_test_teardown(hostile_outside_ram, vmm_teardown),
		cmocka_unit_test_teardown(hostile_desc_loop, vmm_teardown),
		cmocka_unit_test_teardown(hostile_oversize_len, vmm_teardown),
		cmocka_unit_test_teardown(hostile_huge_desc, vmm_teardown),
		cmocka_unit_test_teardown(hostile_avail_ring, vmm_teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
