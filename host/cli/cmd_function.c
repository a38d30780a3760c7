/*
 * hearthctl list | get NAME | delete NAME | config NAME --provisioned N |
 * prewarm NAME [--count N] [--wait]: a tenant's functions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "hearthctl.h"

static void fn_usage(FILE *f, const char *cmd)
{
	if (strcmp(cmd, "list") == 0)
		fprintf(f, "usage: hearthctl list [--json]\n  the tenant's functions and their latest versions\n");
	else if (strcmp(cmd, "get") == 0)
		fprintf(f, "usage: hearthctl get [--json] NAME\n  a function and all its versions\n");
	else if (strcmp(cmd, "delete") == 0)
		fprintf(f, "usage: hearthctl delete [--json] NAME\n  delete a function, all its versions "
			   "and its warm VMs\n");
	else if (strcmp(cmd, "config") == 0)
		fprintf(f, "usage: hearthctl config [--json] NAME --provisioned N\n"
			   "  keep N VMs of the latest version warm (0 lets it scale to zero)\n");
	else
		fprintf(f, "usage: hearthctl prewarm [--json] [--count N] [--wait] NAME\n"
			   "  start warm VMs of the latest version now so that the next N invocations\n"
			   "  find one (default 1); --wait shows progress until they are up (it\n"
			   "  watches the host's hearth_vms gauge, so other VMs starting or stopping\n"
			   "  at the same time can end the wait early or late)\n");
	fprintf(f, "  --json         print hearthd's answer as JSON\n");
	hctl_usage_globals(f);
}

/* hearth_vms from /metrics (a gauge of live function VMs on the host), or -1. */
static long long host_vms(void)
{
	struct hctl_request rq = { .method = "GET", .path = "/metrics", .no_auth = true };
	struct hctl_response rs;
	long long n = -1;

	if (hctl_request(&rq, &rs))
		return -1;
	if (rs.status == 200) {
		for (char *l = rs.body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
			if (strncmp(l, "hearth_vms ", 11) == 0)
				n = atoll(l + 11);
	}
	hctl_response_free(&rs);
	return n;
}

static int prewarm_wait(long long before, long long started, double timeout_s)
{
	struct timespec t0, now;
	double t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		long long n = host_vms();

		clock_gettime(CLOCK_MONOTONIC, &now);
		t = (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
		if (n < 0) {
			hctl_progress_done();
			fprintf(stderr, "hearthctl: cannot read /metrics to follow the prewarm\n");
			return HCTL_EXIT_API;
		}
		if (n - before >= started) {
			hctl_progress("prewarm: %lld of %lld VMs up after %.1fs", started, started, t);
			hctl_progress_done();
			return 0;
		}
		if (t > timeout_s) {
			hctl_progress_done();
			fprintf(stderr, "hearthctl: prewarm: only %lld of %lld VMs up after %.0fs\n",
				n - before < 0 ? 0 : n - before, started, t);
			return HCTL_EXIT_FAIL;
		}
		if (hctl_tty())
			hctl_progress("prewarm: %lld of %lld VMs up %c %.1fs",
				      n - before < 0 ? 0 : n - before, started, "|/-\\"[(int)(t * 10) % 4],
				      t);
		usleep(100000);
	}
}

int cmd_function(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "provisioned", required_argument, NULL, 'p' },
		{ "count", required_argument, NULL, 'n' },
		{ "wait", no_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd = argv[0], *name = NULL;
	long long provisioned = -1, count = -1;
	bool json = false, wait = false;
	char path[512], *ne = NULL, when[40];
	json_t *out = NULL, *x;
	size_t i;
	int c, rc = 0;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "jp:n:wh", longopts)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'p':
			if (strcmp(cmd, "config"))
				goto usage;
			if ((provisioned = hctl_parse_count("--provisioned", optarg, 1000)) < 0)
				return HCTL_EXIT_USAGE;
			break;
		case 'n':
			if (strcmp(cmd, "prewarm"))
				goto usage;
			if ((count = hctl_parse_count("--count", optarg, 100)) < 1) {
				if (count == 0)
					fprintf(stderr, "hearthctl: --count must be at least 1\n");
				return HCTL_EXIT_USAGE;
			}
			break;
		case 'w':
			if (strcmp(cmd, "prewarm"))
				goto usage;
			wait = true;
			break;
		case 'h': fn_usage(stdout, cmd); return 0;
		default: goto usage;
		}
	}
	if (strcmp(cmd, "list") == 0) {
		if (optind != argc)
			goto usage;
		if ((rc = hctl_call("GET", "/v1/functions", NULL, false, &out)))
			return rc;
		if (json) {
			hctl_print_json(out);
		} else {
			printf("%-24s %7s %7s %9s %11s %-8s %s\n", "NAME", "VERSION", "MEMORY",
			       "TIMEOUT", "PROVISIONED", "ENGINE", "IMAGE");
			json_array_foreach(json_object_get(out, "functions"), i, x)
				printf("%-24s %7lld %4lld MB %6lld ms %11lld %-8s %.12s\n",
				       json_string_value(json_object_get(x, "name")),
				       (long long)json_integer_value(json_object_get(x, "latest_version")),
				       (long long)json_integer_value(json_object_get(x, "memory_mb")),
				       (long long)json_integer_value(json_object_get(x, "timeout_ms")),
				       (long long)json_integer_value(json_object_get(x, "provisioned")),
				       json_string_value(json_object_get(x, "engine")),
				       json_string_value(json_object_get(x, "image_sha256")));
		}
		json_decref(out);
		return 0;
	}
	if (optind != argc - 1)
		goto usage;
	name = argv[optind];
	ne = hctl_escape(name);
	if (strcmp(cmd, "get") == 0) {
		snprintf(path, sizeof(path), "/v1/functions/%s", ne);
		if ((rc = hctl_call("GET", path, NULL, false, &out)))
			goto out;
		if (json) {
			hctl_print_json(out);
		} else {
			printf("function %s: latest version %lld, provisioned %lld, created %s\n",
			       json_string_value(json_object_get(out, "name")),
			       (long long)json_integer_value(json_object_get(out, "latest_version")),
			       (long long)json_integer_value(json_object_get(out, "provisioned")),
			       hctl_time(json_object_get(out, "created_at"), when, sizeof(when)));
			printf("%7s %7s %9s %-8s %-12s %-24s %s\n", "VERSION", "MEMORY", "TIMEOUT",
			       "ENGINE", "IMAGE", "HANDLER", "CREATED");
			json_array_foreach(json_object_get(out, "versions"), i, x)
				printf("%7lld %4lld MB %6lld ms %-8s %.12s %-24s %s\n",
				       (long long)json_integer_value(json_object_get(x, "version")),
				       (long long)json_integer_value(json_object_get(x, "memory_mb")),
				       (long long)json_integer_value(json_object_get(x, "timeout_ms")),
				       json_string_value(json_object_get(x, "engine")),
				       json_string_value(json_object_get(x, "image_sha256")),
				       json_string_value(json_object_get(x, "handler")),
				       hctl_time(json_object_get(x, "created_at"), when, sizeof(when)));
		}
	} else if (strcmp(cmd, "delete") == 0) {
		snprintf(path, sizeof(path), "/v1/functions/%s", ne);
		if ((rc = hctl_call("DELETE", path, NULL, false, &out)))
			goto out;
		if (json)
			hctl_print_json(out);
		else
			printf("deleted function %s\n", name);
	} else if (strcmp(cmd, "config") == 0) {
		if (provisioned < 0) {
			fprintf(stderr, "hearthctl: config needs --provisioned N\n");
			goto usage;
		}
		snprintf(path, sizeof(path), "/v1/functions/%s/config", ne);
		if ((rc = hctl_call("PUT", path, json_pack("{s:I}", "provisioned", provisioned), false,
				    &out)))
			goto out;
		if (json)
			hctl_print_json(out);
		else
			printf("%s: provisioned %lld\n", name,
			       (long long)json_integer_value(json_object_get(out, "provisioned")));
	} else { /* prewarm */
		long long before = wait ? host_vms() : 0, started;

		snprintf(path, sizeof(path), "/v1/functions/%s/prewarm?count=%lld", ne,
			 count > 0 ? count : 1);
		if ((rc = hctl_call("POST", path, NULL, false, &out)))
			goto out;
		started = (long long)json_integer_value(json_object_get(out, "started_vms"));
		if (json)
			hctl_print_json(out);
		else
			printf("%s version %lld: starting %lld VM%s (engine %s)\n", name,
			       (long long)json_integer_value(json_object_get(out, "version")), started,
			       started == 1 ? "" : "s",
			       json_string_value(json_object_get(out, "engine")));
		fflush(stdout);
		if (wait && started > 0)
			rc = prewarm_wait(before, started, 600);
	}
out:
	json_decref(out);
	free(ne);
	return rc;
usage:
	fn_usage(stderr, cmd);
	free(ne);
	return HCTL_EXIT_USAGE;
}
