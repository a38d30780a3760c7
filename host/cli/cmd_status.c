/*
 * hearthctl status: does hearthd answer, and is the key accepted? Also the
 * host's VM count and its pool of pre-started hearth-vmm processes (from
 * /metrics, which needs no key), and with the admin key the state store and,
 * for a fleet on PostgreSQL, its hosts (GET /v1/hosts).
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "client.h"
#include "hearthctl.h"

static void status_usage(FILE *f)
{
	fprintf(f, "usage: hearthctl status\n  checks that hearthd answers (GET /healthz) and "
		   "whether the key is accepted;\n  shows the VMs and the pre-started hearth-vmm "
		   "pool (GET /metrics);\n  with the admin key, the state store and a fleet's hosts "
		   "(GET /v1/hosts)\n");
	hctl_usage_globals(f);
}

/* The value of one unlabelled metric in a Prometheus text body, or -1. */
static double metric(const char *body, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		double v;

		if (!strncmp(p, name, n) && p[n] == ' ' && sscanf(p + n + 1, "%lf", &v) == 1)
			return v;
	}
	return -1;
}

static void show_host(void)
{
	struct hctl_request rq = { .method = "GET", .path = "/metrics", .no_auth = true };
	struct hctl_response rs;

	if (hctl_request(&rq, &rs))
		return;
	if (rs.status == 200 && rs.body) {
		double vms = metric(rs.body, "hearth_vms"), idle = metric(rs.body, "hearth_vmm_pool_idle"),
		       starting = metric(rs.body, "hearth_vmm_pool_starting"),
		       hits = metric(rs.body, "hearth_vmm_pool_hits_total"),
		       misses = metric(rs.body, "hearth_vmm_pool_misses_total"),
		       discarded = metric(rs.body, "hearth_vmm_pool_discarded_total");

		if (vms >= 0)
			printf("VMs: %.0f\n", vms);
		if (idle >= 0)
			printf("vmm pool: %.0f ready, %.0f starting; clones restored in the pool %.0f, "
			       "spawned (pool miss) %.0f; pooled processes replaced %.0f\n",
			       idle, starting, hits, misses, discarded);
	}
	hctl_response_free(&rs);
}

/* The store and, for a fleet, every host: id, address, live, heartbeat age. */
static int show_hosts(void)
{
	json_t *j, *hosts, *h;
	size_t i;
	int rc;

	if ((rc = hctl_call("GET", "/v1/hosts", NULL, true, &j)))
		return rc;
	hosts = json_object_get(j, "hosts");
	printf("store: %s", json_string_value(json_object_get(j, "store")) ?: "?");
	if (json_array_size(hosts) == 0) {
		printf(" (this host alone)\n");
		json_decref(j);
		return 0;
	}
	printf(", %zu hosts\n%-20s %-24s %-5s %s\n", json_array_size(hosts), "HOST", "ADDRESS",
	       "LIVE", "LAST HEARTBEAT");
	json_array_foreach(hosts, i, h) {
		printf("%-20s %-24s %-5s %.1f s ago\n",
		       json_string_value(json_object_get(h, "host_id")) ?: "?",
		       json_string_value(json_object_get(h, "address")) ?: "",
		       json_integer_value(json_object_get(h, "live")) ? "yes" : "no",
		       (double)json_integer_value(json_object_get(h, "heartbeat_ms_ago")) / 1000.0);
	}
	json_decref(j);
	return 0;
}

int cmd_status(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct hctl_request rq = { .method = "GET", .path = "/healthz", .no_auth = true };
	struct hctl_response rs;
	int c, rc;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "h", longopts)) != -1) {
		if (c == 'h') {
			status_usage(stdout);
			return 0;
		}
		status_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	if (optind != argc) {
		status_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	if ((rc = hctl_request(&rq, &rs)))
		return rc;
	if (rs.status != 200) {
		rc = hctl_api_error(&rs);
		hctl_response_free(&rs);
		return rc;
	}
	printf("hearthd at %s: ok\n", hctl_g.url);
	hctl_response_free(&rs);
	show_host();
	if (!hctl_have_key()) {
		printf("key: none given\n");
		return 0;
	}
	/* Which key is this? Tenant administration tells admin (200) from tenant (403). */
	rq.path = "/v1/tenants";
	rq.no_auth = false;
	rq.no_tenant = true;
	if ((rc = hctl_request(&rq, &rs)))
		return rc;
	if (rs.status == 200) {
		printf("key: admin\n");
		hctl_response_free(&rs);
		return show_hosts();
	}
	else if (rs.status == 403)
		printf("key: tenant key\n");
	else
		rc = hctl_api_error(&rs);
	hctl_response_free(&rs);
	return rc;
}
