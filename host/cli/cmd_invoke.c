/*
 * hearthctl invoke | event | logs | dead-letters: running functions and
 * reading what they did.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "hearthctl.h"

#define MAX_EVENT (64u << 20)

static void invoke_usage(FILE *f)
{
	fprintf(f,
		"usage: hearthctl invoke [options] NAME\n"
		"  the event: --data STRING | --file PATH ('-' for stdin) | stdin when it is not a\n"
		"  terminal | empty\n"
		"  --version N      invoke version N instead of the latest\n"
		"  --async          queue the event (retried, dead-lettered on failure); prints\n"
		"                   its request id\n"
		"  --wait           with --async: follow the event until it succeeded or died\n"
		"  --headers        print the metering headers on stderr (also with -v)\n"
		"The function's response goes to stdout as is. Exit status: 0 ok, 1 the function\n"
		"failed (its error report goes to stdout), 3 hearthd refused or failed the call.\n");
	hctl_usage_globals(f);
}

static char *read_all(FILE *f, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap), *nb;

	while (buf) {
		size_t r = fread(buf + n, 1, cap - n, f);

		n += r;
		if (r == 0)
			break;
		if (n == cap) {
			if (cap >= MAX_EVENT) {
				fprintf(stderr, "hearthctl: the event is larger than %u bytes\n", MAX_EVENT);
				free(buf);
				return NULL;
			}
			nb = realloc(buf, cap * 2);
			if (!nb)
				free(buf);
			buf = nb;
			cap *= 2;
		}
	}
	if (!buf || ferror(f)) {
		fprintf(stderr, "hearthctl: cannot read the event: %s\n", strerror(errno));
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

/* Follows an async event until it is done; returns the exit status. */
static int event_follow(const char *id, bool wait)
{
	char path[256], *ie = hctl_escape(id);
	struct timespec t0, now;
	json_t *out = NULL;
	const char *state = "";
	int rc;

	snprintf(path, sizeof(path), "/v1/invocations/%s", ie);
	free(ie);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		double t;

		json_decref(out);
		if ((rc = hctl_call("GET", path, NULL, false, &out))) {
			hctl_progress_done();
			return rc;
		}
		state = json_string_value(json_object_get(out, "state"));
		if (!state)
			state = "?";
		if (!wait || strcmp(state, "succeeded") == 0 || strcmp(state, "dead") == 0)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		t = (double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
		if (hctl_tty())
			hctl_progress("event %s: %s (attempts %lld) %c %.1fs", id, state,
				      (long long)json_integer_value(json_object_get(out, "attempts")),
				      "|/-\\"[(int)(t * 10) % 4], t);
		usleep(100000);
	}
	hctl_progress_done();
	printf("%s %s attempts %lld%s%s\n", id, state,
	       (long long)json_integer_value(json_object_get(out, "attempts")),
	       json_string_value(json_object_get(out, "last_error")) ? " last error: " : "",
	       json_string_value(json_object_get(out, "last_error")) ?
		       json_string_value(json_object_get(out, "last_error")) : "");
	rc = strcmp(state, "dead") == 0 ? HCTL_EXIT_FAIL : 0;
	json_decref(out);
	return rc;
}

static void print_metering(const struct hctl_response *rs)
{
	static const char *const names[] = {
		"X-Hearth-Request-Id", "X-Hearth-Function-Version", "X-Hearth-Duration-Ms",
		"X-Hearth-Billed-Duration-Ms", "X-Hearth-Max-Memory-Used-Mb", "X-Hearth-Cold-Start",
		"X-Hearth-Cold-Start-Path", "X-Hearth-Boot-Ms", "X-Hearth-Restore-Ms",
		"X-Hearth-Init-Ms", "X-Hearth-Function-Error",
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = hctl_header(rs, names[i]);

		if (v)
			fprintf(stderr, "%s: %s\n", names[i], v);
	}
}

int cmd_invoke(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "data", required_argument, NULL, 'd' },
		{ "file", required_argument, NULL, 'f' },
		{ "version", required_argument, NULL, 'V' },
		{ "async", no_argument, NULL, 'a' },
		{ "wait", no_argument, NULL, 'w' },
		{ "headers", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = NULL, *file = NULL, *hdrs[2] = { NULL, NULL };
	bool async = false, wait = false, show = false;
	long long version = 0;
	char path[512], *ne, *event = NULL;
	size_t len = 0;
	struct hctl_request rq = { .method = "POST", .content_type = "application/octet-stream" };
	struct hctl_response rs;
	int c, rc;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "d:f:aHh", longopts)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'f': file = optarg; break;
		case 'V':
			if ((version = hctl_parse_count("--version", optarg, 1 << 30)) < 1) {
				if (version == 0)
					fprintf(stderr, "hearthctl: versions start at 1\n");
				return HCTL_EXIT_USAGE;
			}
			break;
		case 'a': async = true; break;
		case 'w': wait = true; break;
		case 'H': show = true; break;
		case 'h': invoke_usage(stdout); return 0;
		default: invoke_usage(stderr); return HCTL_EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || (data && file) || (wait && !async)) {
		if (data && file)
			fprintf(stderr, "hearthctl: give --data or --file, not both\n");
		if (wait && !async)
			fprintf(stderr, "hearthctl: --wait goes with --async\n");
		invoke_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	if (data) {
		rq.body = data;
		rq.body_len = strlen(data);
	} else if (file || !isatty(STDIN_FILENO)) {
		FILE *f = !file || strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");

		if (!f) {
			fprintf(stderr, "hearthctl: %s: %s\n", file, strerror(errno));
			return HCTL_EXIT_FAIL;
		}
		event = read_all(f, &len);
		if (f != stdin)
			fclose(f);
		if (!event)
			return HCTL_EXIT_FAIL;
		rq.body = event;
		rq.body_len = len;
	}
	ne = hctl_escape(argv[optind]);
	if (version)
		snprintf(path, sizeof(path), "/v1/functions/%s/invoke?version=%lld", ne, version);
	else
		snprintf(path, sizeof(path), "/v1/functions/%s/invoke", ne);
	free(ne);
	rq.path = path;
	/* A cold start can take seconds: after one, say on a TTY what is going on. */
	rq.progress = argv[optind];
	rq.progress_wait = "waiting for the function (a cold start boots a VM)";
	rq.progress_after_s = 1.0;
	rq.progress_transient = true;
	if (async) {
		hdrs[0] = "X-Hearth-Invocation-Type: Event";
		rq.headers = hdrs;
	}
	rc = hctl_request(&rq, &rs);
	free(event);
	if (rc)
		return rc;
	if (show || hctl_g.verbose)
		print_metering(&rs);
	if (rs.status == 202 && async) {
		json_t *j = json_loadb(rs.body, rs.len, 0, NULL);
		const char *id = json_string_value(json_object_get(j, "request_id"));

		if (!id) {
			fprintf(stderr, "hearthctl: hearthd accepted the event without a request id\n");
			rc = HCTL_EXIT_API;
		} else if (wait) {
			fprintf(stderr, "queued event %s\n", id);
			rc = event_follow(id, true);
		} else {
			printf("%s\n", id);
		}
		json_decref(j);
	} else if (rs.status == 200) {
		const char *ferr = hctl_header(&rs, "X-Hearth-Function-Error");

		fwrite(rs.body, 1, rs.len, stdout);
		fflush(stdout);
		if (ferr) {
			json_t *j = json_loadb(rs.body, rs.len, 0, NULL);
			const char *msg = json_string_value(json_object_get(j, "errorMessage"));

			fprintf(stderr, "hearthctl: function error: %s%s%s (request %s)\n", ferr,
				msg && *msg ? ": " : "", msg ? msg : "",
				hctl_header(&rs, "X-Hearth-Request-Id") ?
					hctl_header(&rs, "X-Hearth-Request-Id") : "?");
			json_decref(j);
			rc = HCTL_EXIT_FAIL;
		}
	} else {
		rc = hctl_api_error(&rs);
	}
	hctl_response_free(&rs);
	return rc;
}

static void event_usage(FILE *f)
{
	fprintf(f, "usage: hearthctl event [--wait] [--json] REQUEST_ID\n"
		   "  the state of an async event: queued, running, succeeded or dead;\n"
		   "  --wait follows it until it succeeded (exit 0) or died (exit 1)\n");
	hctl_usage_globals(f);
}

int cmd_event(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "wait", no_argument, NULL, 'w' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool wait = false, json = false;
	int c;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "wjh", longopts)) != -1) {
		switch (c) {
		case 'w': wait = true; break;
		case 'j': json = true; break;
		case 'h': event_usage(stdout); return 0;
		default: event_usage(stderr); return HCTL_EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || (json && wait)) {
		event_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	if (json) {
		char path[256], *ie = hctl_escape(argv[optind]);
		json_t *out;
		int rc;

		snprintf(path, sizeof(path), "/v1/invocations/%s", ie);
		free(ie);
		if ((rc = hctl_call("GET", path, NULL, false, &out)))
			return rc;
		hctl_print_json(out);
		json_decref(out);
		return 0;
	}
	return event_follow(argv[optind], wait);
}

/* --limit N, 1..1000; says why on stderr and returns -1 when N is refused. */
static int parse_limit(const char *arg, long long *limit)
{
	*limit = hctl_parse_count("--limit", arg, 1000);
	if (*limit >= 1)
		return 0;
	if (*limit == 0)
		fprintf(stderr, "hearthctl: --limit must be at least 1\n");
	return -1;
}

static void logs_usage(FILE *f)
{
	fprintf(f, "usage: hearthctl logs [--limit N] [--json] NAME\n"
		   "  the last N invocations of a function (default 20), oldest first: a START line,\n"
		   "  the function's logs (its stderr), END and a REPORT line with the metering\n");
	hctl_usage_globals(f);
}

static void print_invocation(const json_t *x)
{
	const char *id = json_string_value(json_object_get(x, "request_id"));
	const char *logs = json_string_value(json_object_get(x, "logs"));
	const char *err = json_string_value(json_object_get(x, "error"));
	long long start_us = (long long)json_integer_value(json_object_get(x, "start_us"));
	time_t t = (time_t)(start_us / 1000000);
	struct tm tm;
	char when[40] = "";

	if (gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	printf("%s.%03lldZ START RequestId: %s Version: %lld (%s)\n", when,
	       (start_us / 1000) % 1000, id ? id : "?",
	       (long long)json_integer_value(json_object_get(x, "version")),
	       json_string_value(json_object_get(x, "kind")) ?
		       json_string_value(json_object_get(x, "kind")) : "?");
	if (logs && *logs) {
		fputs(logs, stdout);
		if (logs[strlen(logs) - 1] != '\n')
			putchar('\n');
	}
	printf("END RequestId: %s\n", id ? id : "?");
	printf("REPORT RequestId: %s Duration: %.2f ms Billed Duration: %lld ms Memory Size: %lld MB "
	       "Max Memory Used: %lld MB",
	       id ? id : "?", (double)json_integer_value(json_object_get(x, "duration_us")) / 1000.0,
	       (long long)json_integer_value(json_object_get(x, "billed_ms")),
	       (long long)json_integer_value(json_object_get(x, "memory_mb")),
	       ((long long)json_integer_value(json_object_get(x, "max_rss_kb")) + 1023) / 1024);
	if (json_integer_value(json_object_get(x, "cold")))
		printf(" Init Duration: %lld ms",
		       (long long)(json_integer_value(json_object_get(x, "init_ms")) +
				   json_integer_value(json_object_get(x, "boot_ms"))));
	printf(" Status: %s", json_string_value(json_object_get(x, "status")) ?
				      json_string_value(json_object_get(x, "status")) : "?");
	if (err && *err)
		printf(" Error: %s", err);
	putchar('\n');
}

int cmd_logs(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "limit", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long long limit = 20;
	bool json = false;
	char path[512], *ne;
	json_t *out, *inv;
	int c, rc;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "n:jh", longopts)) != -1) {
		switch (c) {
		case 'n':
			if (parse_limit(optarg, &limit))
				return HCTL_EXIT_USAGE;
			break;
		case 'j': json = true; break;
		case 'h': logs_usage(stdout); return 0;
		default: logs_usage(stderr); return HCTL_EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		logs_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	ne = hctl_escape(argv[optind]);
	snprintf(path, sizeof(path), "/v1/functions/%s/logs?limit=%lld", ne, limit);
	free(ne);
	if ((rc = hctl_call("GET", path, NULL, false, &out)))
		return rc;
	inv = json_object_get(out, "invocations");
	if (json) {
		hctl_print_json(out);
	} else {
		/* hearthd lists the newest first; read like a log, oldest first. */
		for (size_t i = json_array_size(inv); i-- > 0;)
			print_invocation(json_array_get(inv, i));
	}
	json_decref(out);
	return 0;
}

static void dl_usage(FILE *f)
{
	fprintf(f, "usage: hearthctl dead-letters [--limit N] [--json]\n"
		   "  async events that failed every retry or expired (newest first)\n");
	hctl_usage_globals(f);
}

int cmd_dead_letters(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "limit", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long long limit = 100;
	bool json = false;
	char path[128];
	json_t *out, *x;
	size_t i;
	int c, rc;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "n:jh", longopts)) != -1) {
		switch (c) {
		case 'n':
			if (parse_limit(optarg, &limit))
				return HCTL_EXIT_USAGE;
			break;
		case 'j': json = true; break;
		case 'h': dl_usage(stdout); return 0;
		default: dl_usage(stderr); return HCTL_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		dl_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "/v1/dead-letters?limit=%lld", limit);
	if ((rc = hctl_call("GET", path, NULL, false, &out)))
		return rc;
	if (json) {
		hctl_print_json(out);
	} else {
		printf("%-36s %-20s %7s %8s %-20s %s\n", "REQUEST_ID", "FUNCTION", "VERSION",
		       "ATTEMPTS", "FAILED", "REASON");
		json_array_foreach(json_object_get(out, "dead_letters"), i, x) {
			json_t *ms = json_object_get(x, "failed_ms");
			json_t *s = json_integer(json_integer_value(ms) / 1000);
			char when[40];

			printf("%-36s %-20s %7lld %8lld %-20s %s\n",
			       json_string_value(json_object_get(x, "request_id")),
			       json_string_value(json_object_get(x, "function")),
			       (long long)json_integer_value(json_object_get(x, "version")),
			       (long long)json_integer_value(json_object_get(x, "attempts")),
			       hctl_time(s, when, sizeof(when)),
			       json_string_value(json_object_get(x, "reason")));
			json_decref(s);
		}
	}
	json_decref(out);
	return 0;
}
