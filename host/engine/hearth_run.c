/*
 * hearth-run - runs one function in one VM by hand, through the engine
 * interface, the way hearthd will: build the image from the package, boot,
 * wait for the agent's Ready, invoke with stdin as the event, print the
 * response on stdout, destroy. A developer tool; hearthd does not use it.
 *
 * usage: hearth-run [options] PACKAGE < event
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "engine.h"
#include "image.h"

#ifndef HEARTH_AGENT_DEFAULT
#define HEARTH_AGENT_DEFAULT NULL
#endif

#define MAX_EVENT (6u * 1024u * 1024u)

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hearth-run [options] PACKAGE < event\n"
		"  PACKAGE            function directory or .tar.gz with manifest.json\n"
		"  --engine NAME      libvirt (default) or process (NO isolation, development only)\n"
		"  --kernel BZIMAGE   guest kernel (default: $HEARTH_KERNEL, else kernel-config/build --print)\n"
		"  --agent PATH       hearth-agent for /init (default: $HEARTH_AGENT or the built one)\n"
		"  --uri URI          libvirt URI (default qemu:///system)\n"
		"  --run-dir DIR      sockets, console logs, save files (default /run/hearth)\n"
		"  --count N          invoke N times with the same event (default 1)\n"
		"  --keep             leave the VM running and print its name (destroy it with virsh)\n"
		"  --console          print the guest console log on stderr at the end\n");
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int find_kernel(char *out, size_t len)
{
	char cmd[4096], dir[4096] = "";
	FILE *p;

	if (getenv("HEARTH_KERNEL")) {
		snprintf(out, len, "%s", getenv("HEARTH_KERNEL"));
		return 0;
	}
	snprintf(cmd, sizeof(cmd), "%s/kernel-config/build --print", HEARTH_SOURCE_DIR);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	while (fgets(dir, sizeof(dir), p))
		;
	if (pclose(p) != 0)
		return -1;
	dir[strcspn(dir, "\n")] = '\0';
	snprintf(out, len, "%s/bzImage", dir);
	return 0;
}

static void print_console(const struct hearth_vm *vm)
{
	const char *log = hearth_vm_console_log(vm);
	char buf[4096];
	size_t n;
	FILE *f = log ? fopen(log, "r") : NULL;

	if (!f)
		return;
	fprintf(stderr, "---- console (%s) ----\n", log);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, stderr);
	fclose(f);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"engine", required_argument, NULL, 'e'}, {"kernel", required_argument, NULL, 'k'},
		{"agent", required_argument, NULL, 'a'},  {"uri", required_argument, NULL, 'u'},
		{"run-dir", required_argument, NULL, 'r'}, {"count", required_argument, NULL, 'n'},
		{"keep", no_argument, NULL, 'K'},         {"console", no_argument, NULL, 'C'},
		{"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	/* Its own prefix, so that opening the engine reaps only earlier hearth-run VMs. */
	struct hearth_engine_config cfg = {.kind = HEARTH_ENGINE_LIBVIRT, .name_prefix = "hearth-run-"};
	struct hearth_image_opts io = {.out_dir = HEARTH_CACHE_DIR "/images"};
	struct hearth_image img;
	struct hearth_engine *e = NULL;
	struct hearth_vm *vm = NULL;
	struct agent_conn *c = NULL;
	char err[512], kernel[4096] = "", *event = NULL;
	size_t elen = 0;
	int opt, count = 1, keep = 0, console = 0, rc, status = 1;
	double t0;

	io.agent = getenv("HEARTH_AGENT") ? getenv("HEARTH_AGENT") : HEARTH_AGENT_DEFAULT;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'e':
			if (!strcmp(optarg, "libvirt")) {
				cfg.kind = HEARTH_ENGINE_LIBVIRT;
			} else if (!strcmp(optarg, "process")) {
				cfg.kind = HEARTH_ENGINE_PROCESS;
				cfg.allow_unisolated = true; /* asking for it by name is the consent */
			} else {
				fprintf(stderr, "hearth-run: unknown engine '%s'\n", optarg);
				return 2;
			}
			break;
		case 'k': snprintf(kernel, sizeof(kernel), "%s", optarg); break;
		case 'a': io.agent = optarg; break;
		case 'u': cfg.libvirt_uri = optarg; break;
		case 'r': cfg.run_dir = optarg; break;
		case 'n': count = atoi(optarg); break;
		case 'K': keep = 1; break;
		case 'C': console = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1 || count < 1) {
		usage(stderr);
		return 2;
	}
	if (!io.agent) {
		fprintf(stderr, "hearth-run: no hearth-agent known; pass --agent\n");
		return 2;
	}
	if (cfg.kind == HEARTH_ENGINE_LIBVIRT && !kernel[0] && find_kernel(kernel, sizeof(kernel))) {
		fprintf(stderr, "hearth-run: no guest kernel; run kernel-config/build or pass --kernel\n");
		return 2;
	}

	/* The event: all of stdin. */
	event = malloc(MAX_EVENT);
	if (!event)
		return 1;
	while (!isatty(0) && elen < MAX_EVENT) {
		ssize_t n = read(0, event + elen, MAX_EVENT - elen);

		if (n <= 0)
			break;
		elen += (size_t)n;
	}

	io.package = argv[optind];
	if (hearth_image_build(&io, &img, err, sizeof(err))) {
		fprintf(stderr, "hearth-run: %s: %s\n", io.package, err);
		free(event);
		return 1;
	}
	fprintf(stderr, "image %s (%llu bytes, handler %s, %u MiB)\n", img.path,
		(unsigned long long)img.size, img.manifest.handler, img.manifest.memory_mb);
	if (hearth_engine_open(&cfg, &e, err, sizeof(err))) {
		fprintf(stderr, "hearth-run: engine: %s\n", err);
		goto out;
	}
	{
		struct hearth_vm_spec spec = {.kernel = kernel, .initrd = img.path,
					      .memory_mb = img.manifest.memory_mb};
		struct agent_config ac = {
			.handler = img.manifest.handler,
			.args = (const char *const *)img.manifest.args,
			.nargs = img.manifest.nargs,
			.env = (const char *const *)img.manifest.env,
			.nenv = img.manifest.nenv,
			.timeout_ms = img.manifest.timeout_ms,
			.init = img.manifest.init,
		};

		t0 = now_ms();
		if (hearth_vm_create(e, &spec, &vm, err, sizeof(err)) ||
		    hearth_vm_connect(vm, 60000, &c, err, sizeof(err))) {
			fprintf(stderr, "hearth-run: %s\n", err);
			goto out;
		}
		rc = agent_hello(c, 60000, NULL);
		if (!rc)
			rc = agent_configure(c, &ac, 60000, NULL);
		if (rc) {
			fprintf(stderr, "hearth-run: agent: %s (%s)\n", agent_strerror(rc),
				agent_last_error(c));
			goto out;
		}
	}
	fprintf(stderr, "%s: %s engine, %s, Ready after %.0f ms\n", hearth_vm_name(vm),
		hearth_engine_name(e), hearth_engine_accel(e), now_ms() - t0);

	status = 0;
	for (int i = 0; i < count; i++) {
		struct agent_result r;
		char id[32];

		snprintf(id, sizeof(id), "run-%d", i + 1);
		t0 = now_ms();
		rc = agent_invoke(c, id, event, elen, 0, 60000, &r);
		if (rc) {
			fprintf(stderr, "hearth-run: invoke: %s (%s)\n", agent_strerror(rc),
				agent_last_error(c));
			status = 1;
			break;
		}
		fwrite(r.body, 1, r.body_len, stdout);
		fflush(stdout);
		if (r.logs_len) {
			fprintf(stderr, "---- logs ----\n");
			fwrite(r.logs, 1, r.logs_len, stderr);
		}
		fprintf(stderr, "%s: %s%s%s, %.1f ms round trip, handler %llu us, max RSS %llu KiB\n",
			id, agent_invoke_status_name(r.status), r.error ? ": " : "",
			r.error ? r.error : "", now_ms() - t0, (unsigned long long)r.duration_us,
			(unsigned long long)r.max_rss_kb);
		if (r.status != AGENT_INVOKE_OK)
			status = 1;
		agent_result_free(&r);
	}
out:
	agent_close(c);
	if (vm && console)
		print_console(vm);
	if (vm && keep) {
		fprintf(stderr, "kept %s running (virsh destroy %s; rm -r %s/%s)\n", hearth_vm_name(vm),
			hearth_vm_name(vm), cfg.run_dir ? cfg.run_dir : "/run/hearth",
			hearth_vm_name(vm));
	} else if (vm && hearth_vm_destroy(vm, err, sizeof(err))) {
		fprintf(stderr, "hearth-run: destroy: %s\n", err);
		status = 1;
	}
	hearth_engine_close(e);
	hearth_image_free(&img);
	free(event);
	return status;
}
