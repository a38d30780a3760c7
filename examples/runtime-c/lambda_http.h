/*
 * lambda_http.h - the smallest client of the Lambda Runtime API that a C
 * runtime needs inside a hearth guest, where there is no libcurl: HTTP/1.1 over
 * one kept-alive connection (reopened when the server closes it), blocking,
 * bounded (LH_MAX_BODY). Not thread-safe.
 */
#ifndef LAMBDA_HTTP_H
#define LAMBDA_HTTP_H

#include <stddef.h>

#define LH_MAX_BODY (16u << 20)

struct lh_resp {
	int status;                 /* HTTP status, or -1 if the exchange failed */
	char request_id[160];       /* Lambda-Runtime-Aws-Request-Id */
	char deadline_ms[32];       /* Lambda-Runtime-Deadline-Ms */
	char function_arn[320];     /* Lambda-Runtime-Invoked-Function-Arn */
	char trace_id[256];         /* Lambda-Runtime-Trace-Id */
	char *body;                 /* NUL-terminated, malloc'ed */
	size_t len;
};

/*
 * METHOD http://<api><path>, with extra_headers ("Name: value\r\n"..., or NULL)
 * and body. Returns the HTTP status (r->status) or -1; free r->body after.
 */
int lh_call(const char *api, const char *method, const char *path, const char *extra_headers,
	    const void *body, size_t len, struct lh_resp *r);

/* GET .../invocation/next (waits for an event). */
int lh_next(const char *api, struct lh_resp *r);
/* POST .../invocation/<id>/response; returns the status (202 when accepted). */
int lh_respond(const char *api, const char *id, const void *body, size_t len);
/* POST .../invocation/<id>/error with Lambda's error JSON; returns the status. */
int lh_error(const char *api, const char *id, const char *type, const char *message);

#endif
