/*
 * hearthctl - command line front end. main() only dispatches; each
 * subcommand lives in its own cmd_*.c file (see hearthctl.h).
 */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "client.h"
#include "hearthctl.h"

struct subcommand {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct subcommand subcommands[] = {
	{"status", cmd_status, "check that hearthd answers and which key this is"},
	{"tenant", cmd_tenant, "create, list or delete tenants; show or set their limits (admin)"},
	{"key", cmd_key, "create, list or revoke a tenant's API keys (admin)"},
	{"deploy", cmd_deploy, "upload a function package (directory or .tar.gz) as a new version"},
	{"list", cmd_function, "list the tenant's functions"},
	{"get", cmd_function, "show a function and its versions"},
	{"delete", cmd_function, "delete a function"},
	{"invoke", cmd_invoke, "invoke a function (sync, or --async)"},
	{"event", cmd_event, "show or follow an async event"},
	{"logs", cmd_logs, "recent invocations with their logs and REPORT lines"},
	{"dead-letters", cmd_dead_letters, "async events that failed for good"},
	{"usage", cmd_usage, "metered usage (invocations, GB-s) by hour, function or tenant"},
	{"config", cmd_function, "set a function's provisioned (always warm) VM count"},
	{"prewarm", cmd_function, "start warm VMs of a function now"},
	{"build", cmd_build, "turn a function package into a guest initramfs image (local)"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: hearthctl [global options] <command> [options]   (hearthctl <command> --help)\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		fprintf(f, "  %-13s %s\n", subcommands[i].name, subcommands[i].summary);
	fputc('\n', f);
	hctl_usage_globals(f);
}

int main(int argc, char **argv)
{
	int cmd, rc;

	cmd = hctl_leading_globals(argc, argv);
	if (cmd < 0) {
		usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	if (!strcmp(argv[cmd], "-h") || !strcmp(argv[cmd], "--help") || !strcmp(argv[cmd], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[cmd], "--version")) {
		printf("hearthctl %s\n", HEARTH_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
		if (strcmp(argv[cmd], subcommands[i].name))
			continue;
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			fprintf(stderr, "hearthctl: curl_global_init failed\n");
			return HCTL_EXIT_FAIL;
		}
		rc = subcommands[i].run(argc - cmd, argv + cmd);
		hctl_cleanup();
		curl_global_cleanup();
		return rc;
	}
	fprintf(stderr, "hearthctl: unknown command '%s'\n", argv[cmd]);
	usage(stderr);
	return HCTL_EXIT_USAGE;
}
