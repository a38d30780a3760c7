/*
 * hearthctl build PACKAGE - builds the guest initramfs of a function package
 * with hearth_image_build() (host/image/image.h) and prints where it went.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "hearthctl.h"
#include "image.h"

#ifndef HEARTH_AGENT_DEFAULT
#define HEARTH_AGENT_DEFAULT NULL
#endif

static void build_usage(FILE *f)
{
	fprintf(f,
		"usage: hearthctl build [--agent PATH] [--busybox PATH] [--out DIR] [--json] PACKAGE\n"
		"  PACKAGE        a directory or .tar.gz with manifest.json at its root\n"
		"  --agent PATH   hearth-agent binary for /init (default: $HEARTH_AGENT or the built one)\n"
		"  --busybox PATH busybox-static for shell functions (default: /bin/busybox)\n"
		"  --out DIR      image directory (default: %s/images)\n"
		"  --json         print the result as one JSON object\n",
		HEARTH_CACHE_DIR);
}

int cmd_build(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"agent", required_argument, NULL, 'a'}, {"busybox", required_argument, NULL, 'b'},
		{"out", required_argument, NULL, 'o'},   {"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
	};
	struct hearth_image_opts opts = {0};
	struct hearth_image img;
	char err[512], *out_default = NULL;
	int c, json = 0;

	opts.agent = getenv("HEARTH_AGENT") ? getenv("HEARTH_AGENT") : HEARTH_AGENT_DEFAULT;
	optind = 1;
	while ((c = getopt_long(argc, argv, "a:b:o:jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'a': opts.agent = optarg; break;
		case 'b': opts.busybox = optarg; break;
		case 'o': opts.out_dir = optarg; break;
		case 'j': json = 1; break;
		case 'h': build_usage(stdout); return 0;
		default: build_usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		build_usage(stderr);
		return 2;
	}
	if (!opts.agent) {
		fprintf(stderr, "hearthctl build: no hearth-agent known; pass --agent PATH\n");
		return 2;
	}
	opts.package = argv[optind];
	if (!opts.out_dir) {
		if (asprintf(&out_default, "%s/images", HEARTH_CACHE_DIR) < 0)
			return 1;
		opts.out_dir = out_default;
	}
	if (hearth_image_build(&opts, &img, err, sizeof(err))) {
		fprintf(stderr, "hearthctl build: %s: %s\n", opts.package, err);
		free(out_default);
		return 1;
	}
	if (json) {
		json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:s, s:i, s:i, s:b}", "sha256",
				      img.sha256, "path", img.path, "size", (json_int_t)img.size,
				      "entries", (json_int_t)img.entries, "handler",
				      img.manifest.handler, "memory_mb", (int)img.manifest.memory_mb,
				      "timeout_ms", (int)img.manifest.timeout_ms, "shell",
				      (int)img.manifest.shell);

		if (!o || json_dumpf(o, stdout, JSON_COMPACT) < 0)
			fprintf(stderr, "hearthctl build: cannot format JSON\n");
		putchar('\n');
		json_decref(o);
	} else {
		printf("%s %s\n", img.sha256, img.path);
	}
	hearth_image_free(&img);
	free(out_default);
	return 0;
}
