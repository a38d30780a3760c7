/*
 * config.c - hearthd.conf: keys checked by kind, turned into options placed
 * before the command line's (see config.h).
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum kind { K_PATH, K_STRING, K_INT, K_ENGINE, K_LISTEN, K_SOCKET, K_UIDIR };

/*
 * The value kind of every key that takes one. Ranges follow what hearthd
 * accepts on the command line (positive_arg: 1..10^7) or what makes sense
 * (0 allowed where 0 means "none"/"default").
 */
static const struct {
	const char *key;
	enum kind kind;
	long long min, max;
} kinds[] = {
	{ "listen", K_LISTEN, 0, 0 },
	{ "socket", K_SOCKET, 0, 0 },
	{ "state-dir", K_PATH, 0, 0 },
	{ "run-dir", K_PATH, 0, 0 },
	{ "store", K_STRING, 0, 0 },
	{ "host-id", K_STRING, 0, 0 },
	{ "engine", K_ENGINE, 0, 0 },
	{ "libvirt-uri", K_STRING, 0, 0 },
	{ "kernel", K_PATH, 0, 0 },
	{ "vmm", K_PATH, 0, 0 },
	{ "builtin-kernel", K_PATH, 0, 0 },
	{ "agent", K_PATH, 0, 0 },
	{ "keep-warm", K_INT, 1, 31536000 },
	{ "restore-timeout-ms", K_INT, 1, 10000000 },
	{ "max-vms", K_INT, 1, 1000000 },
	{ "vmm-pool", K_INT, 0, 10000000 },
	{ "jail", K_STRING, 0, 0 },
	{ "jail-uid-base", K_INT, 1, 4294901759LL },
	{ "parked-ttl", K_INT, 1, 31536000 },
	{ "host-memory-mb", K_INT, 1, 1LL << 40 },
	{ "vcpu-overcommit", K_INT, 1, 1000 },
	{ "unreserved-floor", K_INT, 0, 1000000 },
	{ "async-retries", K_INT, 0, 1000 },
	{ "async-backoff-ms", K_INT, 1, 86400000 },
	{ "async-max-age", K_INT, 1, 31536000 },
	{ "max-connections", K_INT, 1, 10000000 },
	{ "max-connections-per-ip", K_INT, 1, 10000000 },
	{ "unix-max-connections", K_INT, 1, 10000000 },
	{ "header-timeout", K_INT, 1, 10000000 },
	{ "image-gc-interval", K_INT, 1, 31536000 },
	{ "ledger-batch-ms", K_INT, 0, 600000 },
	{ "inline-max-us", K_INT, 0, 10000000 },
	{ "disk-reserve-mb", K_INT, 0, 1LL << 30 },
	{ "ui-dir", K_UIDIR, 0, 0 },
	{ "region", K_STRING, 0, 0 },
	{ "aws-region", K_STRING, 0, 0 },
};

const char *config_path(int argc, char **argv, int *explicit_out)
{
	const char *p = NULL;

	*explicit_out = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			p = argv[++i];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			p = argv[i] + 9;
	}
	if (p) {
		*explicit_out = 1;
		return strcmp(p, "none") == 0 ? NULL : p;
	}
	return access(HEARTHD_DEFAULT_CONFIG, F_OK) == 0 ? HEARTHD_DEFAULT_CONFIG : NULL;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = 0;
	return s;
}

/* Checks one value by its key's kind; returns NULL or what is wrong with it. */
static const char *check_value(const char *key, const char *v, char *why, size_t n)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (strcmp(kinds[i].key, key) != 0)
			continue;
		switch (kinds[i].kind) {
		case K_INT: {
			char *end;
			long long x;

			errno = 0;
			x = strtoll(v, &end, 10);
			if (errno || end == v || *end || *v == '+' || *v == '-' || x < kinds[i].min ||
			    x > kinds[i].max) {
				snprintf(why, n, "a whole number from %lld to %lld", kinds[i].min,
					 kinds[i].max);
				return why;
			}
			return NULL;
		}
		case K_ENGINE:
			if (strcmp(v, "auto") && strcmp(v, "builtin") && strcmp(v, "libvirt") &&
			    strcmp(v, "process"))
				return "auto, builtin, libvirt or process";
			return NULL;
		case K_LISTEN: {
			char host[256];
			int port;
			char tail;

			if (strcmp(v, "none") == 0 ||
			    (sscanf(v, "%255[^:]:%d%c", host, &port, &tail) == 2 && port > 0 &&
			     port <= 65535))
				return NULL;
			return "HOST:PORT (port 1-65535) or none";
		}
		case K_SOCKET:
		case K_UIDIR:
			if (strcmp(v, "none") == 0 || v[0] == '/')
				return NULL;
			return "an absolute path or none";
		case K_PATH:
			if (v[0] == '/')
				return NULL;
			return "an absolute path";
		case K_STRING:
			return *v ? NULL : "a non-empty value";
		}
	}
	return *v ? NULL : "a non-empty value";
}

static int parse_bool(const char *v)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0)
			return 1;
		if (strcasecmp(v, no[i]) == 0)
			return 0;
	}
	return -1;
}

/* The loaded options stay reachable until exit (they become hearthd's argv). */
static char **loaded_argv;

#define FAIL(...)                                                                                 \
	do {                                                                                      \
		snprintf(err, errlen, __VA_ARGS__);                                               \
		goto out;                                                                         \
	} while (0)

int config_load(const char *path, const struct option *opts, int argc, char **argv,
		int *argc_out, char ***argv_out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	char **out = NULL;
	const char **seen = NULL;
	int *seen_line = NULL;
	int n = 0, nseen = 0, lineno = 0, rc = -1;
	size_t cap = (size_t)argc + 1;

	if (!f) {
		snprintf(err, errlen, "%s: cannot read the configuration: %s", path, strerror(errno));
		return -1;
	}
	out = calloc(cap, sizeof(*out));
	if (!out)
		FAIL("%s: out of memory", path);
	out[n++] = argv[0];
	while (fgets(line, sizeof(line), f)) {
		char *s, *eq, *key, *val;
		const struct option *o;
		int b;

		lineno++;
		if (!strchr(line, '\n') && !feof(f))
			FAIL("%s:%d: line longer than %zu bytes", path, lineno, sizeof(line) - 2);
		s = trim(line);
		if (*s == 0 || *s == '#')
			continue;
		eq = strchr(s, '=');
		if (!eq)
			FAIL("%s:%d: expected 'key = value', got '%s'", path, lineno, s);
		*eq = 0;
		key = trim(s);
		val = trim(eq + 1);
		if (strlen(val) >= 2 && val[0] == '"' && val[strlen(val) - 1] == '"') {
			val[strlen(val) - 1] = 0;
			val++;
		}
		for (o = opts; o->name && strcmp(o->name, key) != 0; o++)
			;
		if (!o->name || strcmp(key, "help") == 0 || strcmp(key, "config") == 0)
			FAIL("%s:%d: unknown key '%s' (the keys are hearthd's flags without '--'; "
			     "see hearthd --help)", path, lineno, key);
		for (int i = 0; i < nseen; i++)
			if (strcmp(seen[i], o->name) == 0)
				FAIL("%s:%d: '%s' is already set on line %d", path, lineno, key,
				     seen_line[i]);
		{
			const char **ns = realloc(seen, (size_t)(nseen + 1) * sizeof(*seen));
			int *nl = ns ? realloc(seen_line, (size_t)(nseen + 1) * sizeof(int)) : NULL;

			if (ns)
				seen = ns;
			if (!nl)
				FAIL("%s: out of memory", path);
			seen_line = nl;
			seen[nseen] = o->name;
			seen_line[nseen++] = lineno;
		}
		if (o->has_arg == no_argument) {
			b = parse_bool(val);
			if (b < 0)
				FAIL("%s:%d: %s wants true or false, got '%s'", path, lineno, key, val);
			if (!b)
				continue;
		} else {
			char why[96];
			const char *bad = check_value(o->name, val, why, sizeof(why));

			if (bad)
				FAIL("%s:%d: %s wants %s, got '%s'", path, lineno, key, bad, val);
		}
		/* "--key" and its value, or "--key" alone */
		char **no = realloc(out, (cap + 2) * sizeof(*out));

		if (!no)
			FAIL("%s: out of memory", path);
		out = no;
		cap += 2;
		if (asprintf(&out[n], "--%s", o->name) < 0 ||
		    (o->has_arg != no_argument && !(out[n + 1] = strdup(val))))
			FAIL("%s: out of memory", path);
		n += o->has_arg == no_argument ? 1 : 2;
	}
	if (ferror(f))
		FAIL("%s: read error", path);
	for (int i = 1; i < argc; i++)
		out[n++] = argv[i];
	out[n] = NULL;
	*argc_out = n;
	*argv_out = out;
	loaded_argv = out;
	rc = 0;
out:
	fclose(f);
	free(seen);
	free(seen_line);
	if (rc) {
		for (int i = 1; out && i < n; i++)
			free(out[i]);
		free(out);
	}
	return rc;
}
