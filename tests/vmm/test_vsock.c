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
#include <sys/time.h>
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

/* ---- hostile peers on either side of the hybrid socket (issue 14) ---- */

/* A raw hybrid-socket client: connected, nothing sent yet. */
static int raw_connect(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	assert_true(strlen(sock) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	struct timeval tv = { .tv_sec = 20 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* "CONNECT 52\n" and its "OK <n>\n" (20 s: nested TCG in the lab can stall for seconds). */
static int raw_connect_52(const char *sock)
{
	int fd = raw_connect(sock);
	assert_int_equal(write(fd, "CONNECT 52\n", 11), 11);
	char line[32];
	size_t n = 0;
	while (n < sizeof(line) - 1 && read(fd, line + n, 1) == 1 && line[n] != '\n')
		n++;
	line[n] = 0;
	if (strncmp(line, "OK ", 3))
		fail_msg("CONNECT 52 answered '%s'", line);
	return fd;
}

/* 1 if the peer closed (EOF), 0 if the socket stays open (read timed out), within ms. */
static int peer_closed_within(int fd, int ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char b[256];
	for (;;) {
		ssize_t n = read(fd, b, sizeof(b));
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 1;
		if (n < 0)
			return 0; /* EAGAIN: timed out, still open */
	}
}

/* CPU time (user + system) of a process so far, in ms. */
static long long cpu_ms(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *p = strrchr(buf, ')');
	assert_non_null(p);
	unsigned long long ut = 0, st = 0;
	/* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
	assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
				&st),
			 2);
	return (long long)(ut + st) * 1000 / sysconf(_SC_CLK_TCK);
}

/*
 * The guest accepts, then stops giving rx buffers back; the host sends 64 KiB
 * and closes. hearth-vmm must not spin on the closed socket (it did, at ~96%
 * of a core, on EPOLLHUP), and must go on serving.
 */
static void vsock_withheld_rx_no_spin(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "vsockhold");
	char sock[300];
	start_echo(&r, sock, sizeof(sock), "hearth.rx=hold");
	int fd = raw_connect_52(sock);
	assert_true(wait_for_text(r.console, "rx: holding buffers from now on\n", T_MS));
	static char big[65536];
	memset(big, 'x', sizeof(big));
	size_t off = 0;
	struct timeval tv = { .tv_sec = 2 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (off < sizeof(big)) {
		ssize_t n = write(fd, big + off, sizeof(big) - off);
		if (n <= 0)
			break; /* the socket buffer is full: enough is queued */
		off += (size_t)n;
	}
	close(fd);
	usleep(200 * 1000);
	long long c0 = cpu_ms(r.pid);
	usleep(1000 * 1000);
	long long used = cpu_ms(r.pid) - c0;
	printf("hearth-vmm used %lld ms of CPU in 1 s with a closed peer and withheld buffers\n",
	       used);
	assert_true(used < 300);
	assert_false(vmm_exited(&r));
	stop_vmm(&r);
	vmm_run_cleanup(&r);
}

/*
 * Rx buffers that hold a header and no data: the host's bytes wait (they
 * used to be taken for the host's EOF, and the guest was told the host shut
 * the connection down, losing the data). Control packets still get through.
 */
static void vsock_header_only_rx_not_eof(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "vsocktiny");
	char sock[300];
	start_echo(&r, sock, sizeof(sock), "hearth.rx=tiny");
	int fd = raw_connect_52(sock); /* the request and response fit header-only buffers */
	assert_int_equal(write(fd, "\0\0\0\2hi", 6), 6);
	/* The host never closed: the connection stays, nobody is told of a shutdown. */
	assert_int_equal(peer_closed_within(fd, 1000), 0);
	char *con = slurp(r.console, NULL);
	if (strstr(con, "host shut the connection down"))
		fail_msg("the guest was told the host shut down:\n%s", con);
	free(con);
	close(fd);
	stop_vmm(&r);
	vmm_run_cleanup(&r);
}

/*
 * Clients that connect and never send their CONNECT line used to hold every
 * pending slot for good. Past the half-open limit they make room.
 */
static void vsock_idle_clients_time_out(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "vsockidle");
	char sock[300];
	start_echo(&r, sock, sizeof(sock), NULL);
	int idle[12];
	for (int i = 0; i < 12; i++)
		idle[i] = raw_connect(sock);
	/* All slots are taken: a real client is turned away now... */
	struct agent_conn *c = NULL;
	assert_int_not_equal(agent_connect_hybrid_vsock(sock, 52, 1000, &c), AGENT_OK);
	/* ...and served once the idle ones are past the limit. */
	sleep(4);
	echo_session(sock, "after-idle", 1);
	/* The oldest idle clients were closed to make room. */
	assert_int_equal(peer_closed_within(idle[0], 1000), 1);
	for (int i = 0; i < 12; i++)
		close(idle[i]);
	stop_vmm(&r);
	vmm_run_cleanup(&r);
}

/*
 * A guest that never answers host connection requests used to keep each
 * request's slot until a device reset; past the limit, a new request takes
 * the oldest one's slot (that client sees EOF: refused).
 */
static void vsock_unanswered_requests_reclaimed(void **s)
{
	(void)s;
	struct vmm_run r;
	vmm_run_init(&r, "vsockmute");
	char sock[300];
	start_echo(&r, sock, sizeof(sock), "hearth.mute=1");
	enum { N = 32 }; /* VSOCK_MAX_CONNS */
	int fd[N + 1];
	for (int i = 0; i < N; i++) {
		fd[i] = raw_connect(sock);
		assert_int_equal(write(fd[i], "CONNECT 52\n", 11), 11);
		usleep(20 * 1000); /* in order, so fd[0] is the oldest */
	}
	assert_true(wait_for_text(r.console, "mute: request ignored\n", T_MS));
	/* One more at once: no slot. */
	fd[N] = raw_connect(sock);
	assert_int_equal(write(fd[N], "CONNECT 52\n", 11), 11);
	assert_int_equal(peer_closed_within(fd[N], 2000), 1);
	close(fd[N]);
	/* Past the limit: the next request takes the oldest slot. */
	sleep(4);
	fd[N] = raw_connect(sock);
	assert_int_equal(write(fd[N], "CONNECT 52\n", 11), 11);
	assert_int_equal(peer_closed_within(fd[0], 2000), 1);
	assert_int_equal(peer_closed_within(fd[N], 500), 0); /* waiting for the guest, not refused */
	char *err = slurp(r.errlog, NULL);
	assert_contains(err, "unanswered for over");
	free(err);
	for (int i = 0; i <= N; i++)
		close(fd[i]);
	stop_vmm(&r);
	vmm_run_cleanup(&r);
}

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
		cmocka_unit_test_teardown(vsock_withheld_rx_no_spin, vmm_teardown),
		cmocka_unit_test_teardown(vsock_header_only_rx_not_eof, vmm_teardown),
		cmocka_unit_test_teardown(vsock_idle_clients_time_out, vmm_teardown),
		cmocka_unit_test_teardown(vsock_unanswered_requests_reclaimed, vmm_teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
