/*
 * harness.h - test harness for suites that run the real hearthd: start it on
 * temporary directories and a free port, stop it (asserting a clean exit), and
 * make HTTP requests with libcurl. Used by tests/daemon and tests/quota.
 */
#ifndef HEARTH_TESTS_HARNESS_H
#define HEARTH_TESTS_HARNESS_H

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

struct hd {
	pid_t pid;
	char dir[64];
	char base[64];
	char admin[160];
	int port;
	int use_unix;     /* http() goes through the Unix socket instead of TCP */
	unsigned nofile;  /* if set, hearthd starts with RLIMIT_NOFILE soft 256, hard nofile */
};

struct resp {
	long status;
	char *body;
	size_t len;
	char *hdrs;
	size_t hlen;
};

/* One request of a burst: status, start of the body, two headers. */
struct par {
	long status;
	char body[512];
	size_t len;
	char retry_after[16];
	char request_id[64];
};

extern const char *const process_engine[];

int free_port(void);
size_t on_data(char *p, size_t sz, size_t n, void *ud);
void resp_free(struct resp *r);
/*
 * A deploy (POST /v1/functions/<name> of a packed function) on a thread of its
 * own, after delay_ms: for races against deletes. status holds the answer.
 */
struct deploy_job {
	struct hd *h;
	const char *key, *name;
	const char *pkg;
	size_t len;
	int delay_ms;
	long status;
	pthread_t th;
};
void deploy_job_start(struct deploy_job *d);
/* Joins it; its status. */
long deploy_job_wait(struct deploy_job *d);

/*
 * What a request may set beyond http()'s arguments; zeroed fields keep http()'s
 * behaviour.
 */
struct http_opts {
	const char *const *hdrs; /* header lines after key's and tenant's, NULL-terminated */
	long timeout_s;          /* 0: 120 */
	const char *aws_sigv4;   /* CURLOPT_AWS_SIGV4 provider ("aws:amz:REGION:SERVICE"), or NULL */
	const char *userpwd;     /* CURLOPT_USERPWD ("ID:SECRET", the key to sign with), or NULL */
	int allow_expect;        /* leave out the empty "Expect:" line: libcurl may then send
				  * "Expect: 100-continue" for a large body */
};

/*
 * Performs one request; returns the HTTP status (0 if the connection failed).
 * key: Authorization: Bearer; tenant: X-Hearth-Tenant (each NULL: not sent). A
 * body is sent if given, and always (maybe empty) with POST and PUT.
 */
long http_ex(struct hd *h, const char *method, const char *path, const char *key,
	     const char *tenant, const void *body, size_t len, const struct http_opts *o,
	     struct resp *r);
/* http_ex with at most one extra header line (extra, or NULL) and the defaults. */
long http(struct hd *h, const char *method, const char *path, const char *key,
		 const char *tenant, const void *body, size_t len, const char *extra, struct resp *r);
const char *hdr(struct resp *r, const char *name);
json_t *body_json(struct resp *r);
const char *error_code(struct resp *r);
void hd_start_args(struct hd *h, const char *const *extra);
void hd_start(struct hd *h);
void hd_alive(struct hd *h);
void hd_stop(struct hd *h);
/* Writes text to path (asserts). */
void write_file(const char *path, const char *text);
int setup(void **state);
int teardown(void **state);
char *tenant_create(struct hd *h, const char *name);
char *pack(struct hd *h, const char *dir, size_t *len);
void deploy(struct hd *h, const char *key, const char *name, const char *dir,
		   const char *query);
long invoke(struct hd *h, const char *key, const char *name, const char *event,
		   const char *extra, struct resp *r);
json_t *wait_event(struct hd *h, const char *key, const char *id, const char *want);
int metric(struct hd *h, const char *name);
/* PUT /v1/tenants/<tenant>/limits with json as the admin; asserts 200. */
void set_limits(struct hd *h, const char *tenant, const char *json);
/* How many hearth-vmm processes name a path under dir on their command line. */
int vmm_procs_under(const char *dir);

/* Sends n POSTs of event to fn's invoke at once and waits for all; tick (if any)
 * runs between polls. */
void par_invoke_tick(struct hd *h, const char *key, const char *fn, const char *event, int n,
		     struct par *out, void (*tick)(void *), void *ctx);
void par_invoke(struct hd *h, const char *key, const char *fn, const char *event, int n,
		struct par *out);
/* How many of the n results have this status (and contain code, if given). */
int par_count(const struct par *p, int n, long status, const char *code);

#endif
