/*
 * hearthctl - command line front end. main() only dispatches; each
 * subcommand lives in its own cmd_*.c file (see hearthctl.h).
 */
#include <stdio.h>
#include <string.h>

#include "hearthctl.h"

struct subcommand {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct subcommand subcommands[] = {
	{"build", cmd_build, "turn a function package into a guest initramfs image"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: hearthctl <command> [options]   (hearthctl <command> --help)\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("hearthctl %s\n", HEARTH_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		if (!strcmp(argv[1], subcommands[i].name))
			return subcommands[i].run(argc - 1, argv + 1);
	fprintf(stderr, "hearthctl: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
