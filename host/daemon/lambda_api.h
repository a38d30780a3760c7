/*
 * lambda_api.h - the AWS Lambda Invoke API, served by hearthd next to its own.
 *
 * Routes (under /2015-03-31/, as the AWS SDKs and `aws lambda` send them):
 *   POST /functions/{name}/invocations   Invoke: X-Amz-Invocation-Type
 *        RequestResponse (default), Event (202, hearth's async queue) or DryRun
 *        (204); X-Amz-Log-Type: Tail; ?Qualifier=$LATEST|N
 *   GET  /functions/{name}               GetFunction (read-only)
 *   GET  /functions/                     ListFunctions (?Marker=&MaxItems=)
 * {name} may be a name, name:qualifier, or a full or partial ARN; an ARN of
 * another account (tenant) or region is simply not found.
 *
 * Authentication is AWS Signature Version 4 with the tenant's access keys
 * (awskeys.h), service "lambda", the daemon's region. What can be checked from
 * the header is checked before any body byte is read: the Authorization
 * format, X-Amz-Date within 5 minutes, the credential scope, and that the
 * access key exists. The signature covers the body's SHA-256, so it is
 * verified once the body (at most the invoke payload limit) is in.
 *
 * Errors have Lambda's shape: status, x-amzn-ErrorType, x-amzn-RequestId and
 * {"Type": "User"|"Service", "message": "..."}. A function's own failure is 200
 * with X-Amz-Function-Error: Handled (it exited non-zero: its error) or
 * Unhandled (crash, timeout, response too large).
 *
 * Called only by api.c, at the two steps of a request and when an invocation
 * it submitted is done.
 */
#ifndef HEARTH_DAEMON_LAMBDA_API_H
#define HEARTH_DAEMON_LAMBDA_API_H

#include <stdbool.h>

#include <microhttpd.h>

struct req;
struct lambda_req;

#define LAMBDA_PATH_PREFIX "/2015-03-31/"

/* The request target (decoded path, or raw target) belongs to the Lambda API. */
bool lambda_is_path(const char *url);

/* The request header is complete, no body byte read: authenticate and set limits. */
enum MHD_Result lambda_begin(struct req *r, const char *method, const char *url);

/* The body is in: verify the signature, then serve the route. */
enum MHD_Result lambda_route(struct req *r, const char *method, const char *url);

/* The invocation submitted by lambda_route is done (r->inv): answer it. */
enum MHD_Result lambda_respond(struct req *r);

/*
 * Answers a Lambda path's request refused before routing (too long, bad
 * escapes, conflicting lengths) in Lambda's error format.
 */
enum MHD_Result lambda_refuse(struct req *r, unsigned status, const char *type, const char *message);

/* Frees the request's Lambda state (the unsealed secret is cleansed). NULL is fine. */
void lambda_req_free(struct lambda_req *l);

#endif
