/*
 * hearthctl status: does hearthd answer, and is the key accepted?
 */
#include <stdio.h>

#include "client.h"
#include "hearthctl.h"

static void status_usage(FILE *f)
{
	fprintf(f, "usage: hearthctl status\n  checks that hearthd answers (GET /healthz) and "
		   "whether the key is accepted\n");
	hctl_usage_globals(f);
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
	if (rs.status == 200)
		printf("key: admin\n");
	else if (rs.status == 403)
		printf("key: tenant key\n");
	else
		rc = hctl_api_error(&rs);
	hctl_response_free(&rs);
	return rc;
}
