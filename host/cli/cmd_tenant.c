/*
 * hearthctl tenant create|list|delete and hearthctl key create|list|delete:
 * tenant administration, which needs the admin key.
 */
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
		"  --json         print hearthd's answer as JSON\n"
		"Needs the admin key. The API key is shown once: hearthd keeps only its hash.\n");
	hctl_usage_globals(f);
}

static void key_usage(FILE *f)
{
	fprintf(f,
		"usage: hearthctl key create TENANT          add an API key; prints it\n"
		"       hearthctl key list TENANT            list key ids (never the keys)\n"
		"       hearthctl key delete TENANT KEY_ID   revoke a key\n"
		"  TENANT may also be given as --tenant NAME.\n"
		"  --json         print hearthd's answer as JSON\n"
		"Needs the admin key.\n");
	hctl_usage_globals(f);
}

/* Parses "[--json] [--help]"; returns -1 to go on, else an exit status. */
static int parse_simple(int argc, char **argv, bool *json, void (*usage)(FILE *))
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "jh", longopts)) != -1) {
		switch (c) {
		case 'j': *json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return HCTL_EXIT_USAGE;
		}
	}
	return -1;
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
	bool json = false;
	int rc = parse_simple(argc, argv, &json, tenant_usage);
	const char *verb, *name;
	json_t *out = NULL;
	char path[512], what[160];

	if (rc >= 0)
		return rc;
	if (optind >= argc) {
		tenant_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	verb = argv[optind];
	name = optind + 1 < argc ? argv[optind + 1] : NULL;
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
	bool json = false;
	int rc = parse_simple(argc, argv, &json, key_usage);
	const char *verb, *tenant = NULL, *key_id = NULL;
	json_t *out = NULL;
	char path[512], *te;
	int pos, want;

	if (rc >= 0)
		return rc;
	if (optind >= argc) {
		key_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	verb = argv[optind];
	pos = optind + 1;
	want = strcmp(verb, "delete") == 0 ? 2 : 1; /* TENANT [KEY_ID] */
	if (strcmp(verb, "create") && strcmp(verb, "list") && strcmp(verb, "delete")) {
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
		snprintf(path, sizeof(path), "/v1/tenants/%s/keys", te);
	}
	free(te);
	if (strcmp(verb, "create") == 0) {
		char what[160];

		if ((rc = hctl_call("POST", path, NULL, true, &out)))
			return rc;
		snprintf(what, sizeof(what), "created a key for tenant %s", tenant);
		print_new_key(out, json, what);
	} else if (strcmp(verb, "list") == 0) {
		size_t i;
		json_t *k;

		if ((rc = hctl_call("GET", path, NULL, true, &out)))
			return rc;
		if (json) {
			hctl_print_json(out);
		} else {
			printf("%-18s %s\n", "KEY_ID", "CREATED");
			json_array_foreach(json_object_get(out, "keys"), i, k) {
				char when[40];

				printf("%-18s %s\n", json_string_value(json_object_get(k, "key_id")),
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
