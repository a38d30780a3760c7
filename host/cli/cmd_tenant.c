/*
 * hearthctl tenant create|list|delete|set|limits and hearthctl key
 * create|list|delete: tenant administration, which needs the admin key.
 *
 * `tenant set` sends only the limits given on the command line (hearthd keeps
 * the others) and hearthd applies them at once; both it and `tenant limits`
 * print the tenant's full limits as hearthd answers them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "hearthctl.h"

static void tenant_usage(FILE *f)
{
	fprintf(f,
		"usage: hearthctl tenant create NAME   create a tenant; prints its first API key\n"
		"       hearthctl tenant list          list tenants\n"
		"       hearthctl tenant delete NAME   delete a tenant, its keys and functions\n"
		"       hearthctl tenant limits NAME   show the tenant's limits\n"
		"       hearthctl tenant set NAME LIMIT...   change some limits, effective at once\n"
		"  --json         print hearthd's answer as JSON\n"
		"limits (tenant set; only those given change; N is a whole number, 0 or\n"
		"'unlimited' removes the limit):\n"
		"  --max-concurrency N    invocations running at once\n"
		"  --max-memory-mb N      memory (MB) of the invocations running at once\n"
		"  --rate N               invocations admitted per second (token bucket) ...\n"
		"  --burst N              ... holding N tokens (default: the rate, one second)\n"
		"  --max-functions N      functions the tenant may have\n"
		"  --max-package-bytes N  size of one uploaded package\n"
		"  --max-code-bytes N     code storage: the images of all the tenant's versions\n"
		"                         (CodeStorageExceeded at deploy beyond it)\n"
		"  --budget-gb-s N        GB-seconds per calendar month (UTC); 1 GB-s = 1,024,000 MB-ms\n"
		"  --budget-mb-ms N       the same budget in MB-milliseconds (exclusive with --budget-gb-s)\n"
		"An invocation over a limit is refused (exit 3) with the reason and a Retry-After:\n"
		"TenantConcurrencyLimitExceeded, RateLimitExceeded, MemoryQuotaExceeded, BudgetExceeded\n"
		"(or HostCapacityExceeded when the host itself is full).\n"
		"Needs the admin key. The API key is shown once: hearthd keeps only its hash.\n");
	hctl_usage_globals(f);
}

static void key_usage(FILE *f)
{
	fprintf(f,
		"usage: hearthctl key create TENANT          add an API key; prints it\n"
		"       hearthctl key create --aws TENANT    add an AWS access key pair (SigV4, for the\n"
		"                                            Lambda API); prints AWS_ACCESS_KEY_ID=,\n"
		"                                            AWS_SECRET_ACCESS_KEY= and AWS_DEFAULT_REGION=\n"
		"       hearthctl key list TENANT            list key ids and access key ids (never secrets)\n"
		"       hearthctl key delete TENANT KEY_ID   revoke a key (an API key or an access key id)\n"
		"  TENANT may also be given as --tenant NAME.\n"
		"  --json         print hearthd's answer as JSON\n"
		"Needs the admin key.\n");
	hctl_usage_globals(f);
}

/*
 * The limits `tenant set` can send. The bounds keep every value inside what
 * hearthd can multiply without overflow (GB-s become MB-ms, bursts become
 * milli-tokens); a value outside them is a usage error before any request.
 */
#define OPT_LIMIT 0x80 /* getopt vals OPT_LIMIT + index into limit_opts */
static const struct limit_opt {
	const char *opt; /* command-line option, without "--" */
	const char *key; /* JSON key of PUT /v1/tenants/{t}/limits */
	long long max;
} limit_opts[] = {
	{ "max-concurrency", "max_concurrency", INT32_MAX },
	{ "max-memory-mb", "max_memory_mb", INT32_MAX },
	{ "rate", "rate_per_s", INT32_MAX },
	{ "burst", "burst", INT32_MAX },
	{ "max-functions", "max_functions", INT32_MAX },
	{ "max-package-bytes", "max_package_bytes", INT64_MAX },
	{ "max-code-bytes", "max_code_bytes", 1000000000000LL },
	{ "budget-gb-s", "budget_gb_s", INT64_MAX / 1024000 },
	{ "budget-mb-ms", "budget_mb_ms", INT64_MAX },
};
#define NLIMITS (sizeof(limit_opts) / sizeof(limit_opts[0]))

/* Adds --OPT VALUE to body; -1 (message printed) when VALUE is not a count in range. */
static int limit_add(json_t *body, const struct limit_opt *l, const char *value)
{
	char name[40];
	long long n;

	snprintf(name, sizeof(name), "--%s", l->opt);
	if (strcmp(value, "unlimited") == 0)
		n = 0;
	else if ((n = hctl_parse_count(name, value, l->max)) < 0)
		return -1;
	json_object_set_new(body, l->key, json_integer(n));
	return 0;
}

static long long lim(const json_t *j, const char *key)
{
	return (long long)json_integer_value(json_object_get(j, key));
}

/* Prints one limit: the value with its unit, or "unlimited" for 0. */
static void limit_line(const char *what, long long n, const char *unit)
{
	if (n == 0)
		printf("  %-17s unlimited\n", what);
	else
		printf("  %-17s %lld%s\n", what, n, unit);
}

/* The answer of GET/PUT /v1/tenants/{t}/limits, readably. */
static void print_limits(const json_t *j)
{
	char size[32];
	long long pkg = lim(j, "max_package_bytes"), budget = lim(j, "budget_mb_ms");

	printf("limits of tenant %s:\n", json_string_value(json_object_get(j, "tenant")));
	limit_line("max concurrency", lim(j, "max_concurrency"), " running at once");
	limit_line("max memory", lim(j, "max_memory_mb"), " MB in running invocations");
	limit_line("rate", lim(j, "rate_per_s"), " per second");
	if (lim(j, "rate_per_s"))
		limit_line("burst", lim(j, "burst"), " at once above the rate");
	limit_line("max functions", lim(j, "max_functions"), "");
	if (pkg)
		printf("  %-17s %lld bytes (%s)\n", "max package", pkg,
		       hctl_bytes((double)pkg, size, sizeof(size)));
	else
		limit_line("max package", 0, "");
	long long code = lim(j, "max_code_bytes"), used = lim(j, "code_bytes_used");
	char usz[32];
	hctl_bytes((double)used, usz, sizeof(usz));
	if (code)
		printf("  %-17s %lld bytes (%s); %s used\n", "code storage", code,
		       hctl_bytes((double)code, size, sizeof(size)), usz);
	else
		printf("  %-17s unlimited; %s used\n", "code storage", usz);
	if (budget)
		printf("  %-17s %s GB-s (%lld MB-ms) per calendar month (UTC)\n", "budget",
		       json_string_value(json_object_get(j, "budget_gb_s")), budget);
	else
		limit_line("budget", 0, "");
}

/* tenant limits NAME, or tenant set NAME with the limits in body (stolen). */
static int tenant_limits(const char *name, json_t *body, bool json)
{
	char path[512], *e = hctl_escape(name);
	json_t *out = NULL;
	int rc;

	snprintf(path, sizeof(path), "/v1/tenants/%s/limits", e);
	free(e);
	if ((rc = hctl_call(body ? "PUT" : "GET", path, body, true, &out)))
		return rc;
	if (json)
		hctl_print_json(out);
	else
		print_limits(out);
	json_decref(out);
	return 0;
}

/* Prints a freshly created key: the key alone on stdout, so scripts can take it. */
static void print_new_key(json_t *j, bool json, const char *what)
{
	if (json) {
		hctl_print_json(j);
		return;
	}
	fprintf(stderr, "%s (key id %s); the API key is shown only now:\n", what,
		json_string_value(json_object_get(j, "key_id")));
	printf("%s\n", json_string_value(json_object_get(j, "api_key")));
}

int cmd_tenant(int argc, char **argv)
{
	struct option longopts[NLIMITS + 3] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
	};
	bool json = false, gb_s = false, mb_ms = false;
	json_t *limits = json_object(), *out = NULL;
	const char *verb, *name;
	char path[512], what[160];
	int c, rc;

	for (size_t i = 0; i < NLIMITS; i++)
		longopts[2 + i] = (struct option){ limit_opts[i].opt, required_argument, NULL,
						   OPT_LIMIT + (int)i };
	optind = 1;
	while ((c = hctl_getopt(argc, argv, "jh", longopts)) != -1) {
		if (c >= OPT_LIMIT && c < OPT_LIMIT + (int)NLIMITS) {
			const struct limit_opt *l = &limit_opts[c - OPT_LIMIT];

			gb_s |= strcmp(l->key, "budget_gb_s") == 0;
			mb_ms |= strcmp(l->key, "budget_mb_ms") == 0;
			if (limit_add(limits, l, optarg)) {
				json_decref(limits);
				return HCTL_EXIT_USAGE;
			}
			continue;
		}
		if (c == 'j') {
			json = true;
			continue;
		}
		json_decref(limits);
		if (c == 'h') {
			tenant_usage(stdout);
			return 0;
		}
		tenant_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	if (optind >= argc) {
		json_decref(limits);
		tenant_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	verb = argv[optind];
	name = optind + 1 < argc ? argv[optind + 1] : NULL;
	if (strcmp(verb, "set") == 0 || strcmp(verb, "limits") == 0) {
		bool set = strcmp(verb, "set") == 0;
		const char *why = !name || optind + 2 != argc ? "wants one tenant NAME" :
				  set && json_object_size(limits) == 0 ? "wants at least one limit option" :
				  gb_s && mb_ms ? "takes --budget-gb-s or --budget-mb-ms, not both" :
				  NULL;

		if (!why && !set && json_object_size(limits))
			why = "takes no limit options (use tenant set)";
		if (why) {
			fprintf(stderr, "hearthctl: tenant %s %s\n", verb, why);
			json_decref(limits);
			return HCTL_EXIT_USAGE;
		}
		if (!set) {
			json_decref(limits);
			limits = NULL;
		}
		return tenant_limits(name, limits, json);
	}
	if (json_object_size(limits)) {
		fprintf(stderr, "hearthctl: limit options are only for tenant set\n");
		json_decref(limits);
		return HCTL_EXIT_USAGE;
	}
	json_decref(limits);
	if (strcmp(verb, "list") == 0 && optind + 1 == argc) {
		size_t i;
		json_t *t;
		char when[40];

		if ((rc = hctl_call("GET", "/v1/tenants", NULL, true, &out)))
			return rc;
		if (json) {
			hctl_print_json(out);
		} else {
			printf("%-24s %9s  %s\n", "TENANT", "FUNCTIONS", "CREATED");
			json_array_foreach(json_object_get(out, "tenants"), i, t)
				printf("%-24s %9lld  %s\n",
				       json_string_value(json_object_get(t, "name")),
				       (long long)json_integer_value(json_object_get(t, "functions")),
				       hctl_time(json_object_get(t, "created_at"), when, sizeof(when)));
		}
		json_decref(out);
		return 0;
	}
	if (!name || optind + 2 != argc || (strcmp(verb, "create") && strcmp(verb, "delete"))) {
		tenant_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	if (strcmp(verb, "create") == 0) {
		if ((rc = hctl_call("POST", "/v1/tenants", json_pack("{s:s}", "name", name), true,
				    &out)))
			return rc;
		snprintf(what, sizeof(what), "created tenant %s", name);
		print_new_key(out, json, what);
	} else {
		char *e = hctl_escape(name);

		snprintf(path, sizeof(path), "/v1/tenants/%s", e);
		free(e);
		if ((rc = hctl_call("DELETE", path, NULL, true, &out)))
			return rc;
		if (json)
			hctl_print_json(out);
		else
			printf("deleted tenant %s\n", name);
	}
	json_decref(out);
	return 0;
}

int cmd_key(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "aws", no_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = false, aws = false;
	const char *verb, *tenant = NULL, *key_id = NULL;
	json_t *out = NULL;
	char path[512], *te;
	int pos, want, rc, c;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "jh", longopts)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'a': aws = true; break;
		case 'h': key_usage(stdout); return 0;
		default: key_usage(stderr); return HCTL_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		key_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	verb = argv[optind];
	pos = optind + 1;
	want = strcmp(verb, "delete") == 0 ? 2 : 1; /* TENANT [KEY_ID] */
	if ((strcmp(verb, "create") && strcmp(verb, "list") && strcmp(verb, "delete")) ||
	    (aws && strcmp(verb, "create") != 0)) {
		key_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	/* TENANT comes positionally or as --tenant NAME. */
	if (argc - pos == want)
		tenant = argv[pos++];
	else if (argc - pos == want - 1)
		tenant = hctl_g.tenant;
	if (!tenant || argc - pos != want - 1) {
		key_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	if (want == 2)
		key_id = argv[pos];
	te = hctl_escape(tenant);
	if (key_id) {
		char *ke = hctl_escape(key_id);

		snprintf(path, sizeof(path), "/v1/tenants/%s/keys/%s", te, ke);
		free(ke);
	} else {
		snprintf(path, sizeof(path), "/v1/tenants/%s/keys%s", te, aws ? "?type=aws" : "");
	}
	free(te);
	if (strcmp(verb, "create") == 0) {
		char what[160];

		if ((rc = hctl_call("POST", path, NULL, true, &out)))
			return rc;
		if (aws && json) {
			hctl_print_json(out);
		} else if (aws) {
			/* One VAR=value per line: `export $(hearthctl key create --aws T)` takes it. */
			fprintf(stderr, "created AWS access key %s for tenant %s; the secret is shown"
					" only now:\n",
				json_string_value(json_object_get(out, "access_key_id")), tenant);
			printf("AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_DEFAULT_REGION=%s\n",
			       json_string_value(json_object_get(out, "access_key_id")),
			       json_string_value(json_object_get(out, "secret_access_key")),
			       json_string_value(json_object_get(out, "region")));
		} else {
			snprintf(what, sizeof(what), "created a key for tenant %s", tenant);
			print_new_key(out, json, what);
		}
	} else if (strcmp(verb, "list") == 0) {
		size_t i;
		json_t *k;

		if ((rc = hctl_call("GET", path, NULL, true, &out)))
			return rc;
		if (json) {
			hctl_print_json(out);
		} else {
			printf("%-22s %-6s %s\n", "KEY_ID", "TYPE", "CREATED");
			json_array_foreach(json_object_get(out, "keys"), i, k) {
				char when[40];

				printf("%-22s %-6s %s\n", json_string_value(json_object_get(k, "key_id")),
				       "hearth",
				       hctl_time(json_object_get(k, "created_at"), when, sizeof(when)));
			}
			json_array_foreach(json_object_get(out, "aws_keys"), i, k) {
				char when[40];

				printf("%-22s %-6s %s\n",
				       json_string_value(json_object_get(k, "access_key_id")), "aws",
				       hctl_time(json_object_get(k, "created_at"), when, sizeof(when)));
			}
		}
	} else {
		if ((rc = hctl_call("DELETE", path, NULL, true, &out)))
			return rc;
		if (json)
			hctl_print_json(out);
		else
			printf("deleted key %s of tenant %s\n", key_id, tenant);
	}
	json_decref(out);
	return 0;
}
