/*
 * test_config.c - hearthd --config (label daemon): the file's keys take
 * effect, command-line flags override them, and every kind of mistake stops
 * hearthd at start with a message naming the file and the line.
 */
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "../cmocka_main.h"
#include "harness.h"

static bool port_listens(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

	close(fd);
	return ok;
}

/* The file sets the engine (with its consent flag), a second port and no console; --listen wins. */
static void test_config_applies(void **state)
{
	struct hd *h = *state;
	char conf[128], text[512], *key;
	const char *extra[] = { "--config", conf, NULL };
	int other = free_port();
	struct resp r;

	snprintf(conf, sizeof(conf), "%s/hearthd.conf", h->dir);
	snprintf(text, sizeof(text),
		 "# hearthd configuration\n"
		 "\n"
		 "engine = process\n"
		 "allow-unisolated = true\n"
		 "   listen =  127.0.0.1:%d   \n"
		 "ui-dir = none\n"
		 "keep-warm = \"600\"\n"
		 "no-server-path-deploy = false\n"
		 "verbose = no\n",
		 other);
	write_file(conf, text);
	hd_start_args(h, extra); /* the harness's --listen comes after the file: it wins */
	assert_false(port_listens(other));
	key = tenant_create(h, "acme");
	deploy(h, key, "hello", EXAMPLES_DIR "/hello", NULL);
	assert_int_equal(invoke(h, key, "hello", "{}", NULL, &r), 200); /* the process engine ran it */
	resp_free(&r);
	assert_int_equal(http(h, "GET", "/ui/", NULL, NULL, NULL, 0, NULL, &r), 503);
	assert_string_equal(error_code(&r), "ConsoleUnavailable");
	resp_free(&r);
	free(key);
	hd_stop(h);
}

/* Runs hearthd --config FILE holding text; returns its exit status and fills out with stderr. */
static int run_with(struct hd *h, const char *text, char *out, size_t outlen)
{
	char conf[128], cmd[512];
	FILE *p;
	size_t n;
	int st;

	snprintf(conf, sizeof(conf), "%s/bad.conf", h->dir);
	if (text)
		write_file(conf, text);
	else
		unlink(conf);
	snprintf(cmd, sizeof(cmd), "%s --config %s --state-dir %s/state --listen 127.0.0.1:%d 2>&1",
		 HEARTHD_BIN, conf, h->dir, free_port());
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, outlen - 1, p);
	out[n] = 0;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_config_errors(void **state)
{
	struct hd *h = *state;
	static const struct {
		const char *text, *want;
	} cases[] = {
		{ "engine = process\nmax-vmz = 3\n", "bad.conf:2: unknown key 'max-vmz'" },
		{ "# c\n\nmax-vms = abc\n", "bad.conf:3: max-vms wants a whole number from 1 to 1000000, got 'abc'" },
		{ "max-vms = -4\n", "bad.conf:1: max-vms wants a whole number" },
		{ "max-vms = 12x\n", "bad.conf:1: max-vms wants a whole number" },
		{ "max-vms = 99999999999999999999\n", "bad.conf:1: max-vms wants a whole number" },
		{ "header-timeout = 0\n", "bad.conf:1: header-timeout wants a whole number from 1" },
		{ "engine = qemu\n", "bad.conf:1: engine wants auto, builtin, libvirt or process, got 'qemu'" },
		{ "listen = localhost\n", "bad.conf:1: listen wants HOST:PORT" },
		{ "listen = 127.0.0.1:70000\n", "bad.conf:1: listen wants HOST:PORT" },
		{ "allow-unisolated = maybe\n", "bad.conf:1: allow-unisolated wants true or false, got 'maybe'" },
		{ "state-dir = relative/dir\n", "bad.conf:1: state-dir wants an absolute path" },
		{ "state-dir =\n", "bad.conf:1: state-dir wants an absolute path, got ''" },
		{ "max-vms 3\n", "bad.conf:1: expected 'key = value'" },
		{ "max-vms = 3\nvmm-pool = 1\nmax-vms = 4\n", "bad.conf:3: 'max-vms' is already set on line 1" },
		{ "help = true\n", "bad.conf:1: unknown key 'help'" },
		{ "config = /etc/x\n", "bad.conf:1: unknown key 'config'" },
		{ NULL, "bad.conf: cannot read the configuration: No such file or directory" },
	};
	char out[2048];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = run_with(h, cases[i].text, out, sizeof(out));

		if (rc != 2 || !strstr(out, cases[i].want))
			fail_msg("case %zu: exit %d, stderr:\n%s\nwanted: %s", i, rc, out, cases[i].want);
	}
	/* The shipped default configuration is accepted (checked, then --help exits 0). */
	char cmd[512];
	FILE *p;
	int st;

	snprintf(cmd, sizeof(cmd), "%s --config %s/ops/hearthd.conf --help 2>&1", HEARTHD_BIN,
		 SOURCE_DIR);
	p = popen(cmd, "r");
	assert_non_null(p);
	out[fread(out, 1, sizeof(out) - 1, p)] = 0;
	st = pclose(p);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !strstr(out, "options from"))
		fail_msg("ops/hearthd.conf refused:\n%s", out);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config_applies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_ALL);
	return HEARTH_RUN_TESTS("daemon", tests, argc, argv);
}
