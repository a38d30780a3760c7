/*
 * lambda_api.c - the AWS Lambda Invoke API; see lambda_api.h.
 */
#include "lambda_api.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <uuid/uuid.h>

#include "api_internal.h"
#include "awskeys.h"
#include "log.h"
#include "sigv4.h"

#define SMALL_BODY_LIMIT (1u << 20)
#define LOG_TAIL_BYTES 4096
#define LIST_DEFAULT_ITEMS 50
#define LIST_MAX_ITEMS 10000

struct lambda_req {
	char request_id[64];     /* x-amzn-RequestId of answers that are not an invocation's */
	struct sigv4_auth auth;
	char secret[AWSKEY_SECRET_LEN + 1];
	char amz_date[17];
	char *raw_path, *raw_query;
	bool tail;               /* X-Amz-Log-Type: Tail */
	bool latest;             /* unqualified or $LATEST: X-Amz-Executed-Version is $LATEST */
};

bool lambda_is_path(const char *url)
{
	return url && strncmp(url, LAMBDA_PATH_PREFIX, strlen(LAMBDA_PATH_PREFIX)) == 0;
}

void lambda_req_free(struct lambda_req *l)
{
	if (!l)
		return;
	OPENSSL_cleanse(l->secret, sizeof(l->secret));
	free(l->raw_path);
	free(l->raw_query);
	free(l);
}

/* ---- answers -------------------------------------------------------------------- */

/*
 * An error as Lambda sends it: status, x-amzn-ErrorType (what the SDKs read),
 * and {"Type", "message"} plus any extra members. extra's reference is taken.
 */
static enum MHD_Result lerr_x(struct req *r, unsigned status, const char *type, json_t *extra,
			      const char *const *more_headers, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
static enum MHD_Result lerr_x(struct req *r, unsigned status, const char *type, json_t *extra,
			      const char *const *more_headers, const char *fmt, ...)
{
	char msg[1024];
	const char *h[16];
	int k = 0;
	va_list ap;
	json_t *m, *j;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	m = json_string(msg);
	j = json_pack("{s:s,s:o}", "Type", status >= 500 ? "Service" : "User", "message",
		      m ? m : json_string("(message not UTF-8)"));
	if (extra) {
		json_object_update(j, extra);
		json_decref(extra);
	}
	h[k++] = "x-amzn-ErrorType";
	h[k++] = type;
	h[k++] = "x-amzn-RequestId";
	h[k++] = r->lam->request_id;
	for (size_t i = 0; more_headers && more_headers[i] && k < 14; i += 2) {
		h[k++] = more_headers[i];
		h[k++] = more_headers[i + 1];
	}
	h[k] = NULL;
	return api_send_json(r->conn, status, j, h);
}

#define lerr(r, status, type, ...) lerr_x(r, status, type, NULL, NULL, __VA_ARGS__)

static void account_of(int64_t tenant_id, char out[16])
{
	snprintf(out, 16, "%012lld", (long long)tenant_id);
}

static void function_arn(struct req *r, const char *name, const char *qual, char *out, size_t n)
{
	char acct[16];

	account_of(r->who.tenant_id, acct);
	snprintf(out, n, "arn:aws:lambda:%s:%s:function:%s%s%s", r->api->cfg.aws_region, acct, name,
		 qual ? ":" : "", qual ? qual : "");
}

/* Lambda's Reason for a refusal by hearth's admission control. */
static const char *throttle_reason(const char *hearth_code)
{
	if (strcmp(hearth_code, "TenantConcurrencyLimitExceeded") == 0)
		return "ConcurrentInvocationLimitExceeded";
	if (strcmp(hearth_code, "ReservedConcurrencyLimitExceeded") == 0)
		return "ReservedFunctionConcurrentInvocationLimitExceeded";
	if (strcmp(hearth_code, "RateLimitExceeded") == 0)
		return "CallerRateLimitExceeded";
	return hearth_code; /* MemoryQuotaExceeded, BudgetExceeded, HostCapacityExceeded */
}

static enum MHD_Result too_many(struct req *r, const char *hearth_code, int retry_after,
				const char *detail)
{
	char ra[16];
	const char *h[] = { "Retry-After", ra, NULL };

	snprintf(ra, sizeof(ra), "%d", retry_after > 0 ? retry_after : 1);
	return lerr_x(r, 429, "TooManyRequestsException",
		      json_pack("{s:s,s:s}", "Reason", throttle_reason(hearth_code),
				"retryAfterSeconds", ra),
		      h, "Rate Exceeded. (%s: %s)", hearth_code, detail);
}

static struct lambda_req *lambda_req_new(struct req *r)
{
	struct lambda_req *l = r->lam ? r->lam : calloc(1, sizeof(*l));
	uuid_t u;

	if (!l || r->lam)
		return l;
	r->lam = l;
	uuid_generate_random(u);
	uuid_unparse_lower(u, l->request_id);
	return l;
}

enum MHD_Result lambda_refuse(struct req *r, unsigned status, const char *type, const char *message)
{
	if (!lambda_req_new(r))
		return MHD_NO;
	return lerr(r, status, type, "%s", message);
}

/* ---- authentication at the header ------------------------------------------------- */

static bool signed_header(const struct sigv4_auth *a, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = a->signed_headers; *p;) {
		const char *semi = strchr(p, ';');
		size_t len = semi ? (size_t)(semi - p) : strlen(p);

		if (len == n && strncmp(p, name, n) == 0)
			return true;
		if (!semi)
			break;
		p = semi + 1;
	}
	return false;
}

static enum MHD_Result count_auth(void *cls, enum MHD_ValueKind kind, const char *key,
				  const char *value)
{
	(void)kind;
	(void)value;
	if (strcasecmp(key, "Authorization") == 0)
		(*(int *)cls)++;
	return MHD_YES;
}

static void iso_basic(time_t t, char out[17])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static bool is_invoke(const char *method, const char *url)
{
	size_t n = strlen(url);

	return strcmp(method, "POST") == 0 && n > 12 && strcmp(url + n - 12, "/invocations") == 0;
}

enum MHD_Result lambda_begin(struct req *r, const char *method, const char *url)
{
	struct api *a = r->api;
	struct MHD_Connection *c = r->conn;
	struct lambda_req *l = lambda_req_new(r);
	struct conn *k = api_conn_of(c);
	const char *raw = k && k->raw_uri ? k->raw_uri : url, *q;
	const char *authz = api_header(c, "Authorization"), *amz = api_header(c, "X-Amz-Date");
	const char *cl = api_header(c, "Content-Length");
	char why[256], now_s[17], bound[17];
	time_t t, now = time(NULL);
	int nauth = 0, rc;

	if (!l)
		return MHD_NO;
	q = strchr(raw, '?');
	l->raw_path = q ? strndup(raw, (size_t)(q - raw)) : strdup(raw);
	l->raw_query = strdup(q ? q + 1 : "");
	if (!l->raw_path || !l->raw_query)
		return lerr(r, 500, "ServiceException", "out of memory");
	MHD_get_connection_values(c, MHD_HEADER_KIND, count_auth, &nauth);
	if (!authz)
		return lerr(r, 403, "MissingAuthenticationTokenException",
			    "Missing Authentication Token (sign requests with AWS Signature Version 4"
			    " and a key from `hearthctl key create --aws`)");
	if (nauth > 1)
		return lerr(r, 400, "IncompleteSignatureException", "send one Authorization header");
	rc = sigv4_parse_authorization(authz, &l->auth, why, sizeof(why));
	if (rc)
		return lerr(r, 400, "IncompleteSignatureException", "%s", why);
	if (!amz || sigv4_parse_date(amz, &t))
		return lerr(r, 400, "IncompleteSignatureException",
			    "X-Amz-Date must be given as yyyymmddThhmmssZ (UTC)");
	if (!signed_header(&l->auth, "x-amz-date"))
		return lerr(r, 400, "IncompleteSignatureException",
			    "x-amz-date must be among the SignedHeaders");
	snprintf(l->amz_date, sizeof(l->amz_date), "%s", amz);
	iso_basic(now, now_s);
	if (t < now - SIGV4_MAX_SKEW_S) {
		iso_basic(now - SIGV4_MAX_SKEW_S, bound);
		return lerr(r, 403, "InvalidSignatureException",
			    "Signature expired: %s is now earlier than %s (%s - 5 min.)", amz, bound,
			    now_s);
	}
	if (t > now + SIGV4_MAX_SKEW_S) {
		iso_basic(now + SIGV4_MAX_SKEW_S, bound);
		return lerr(r, 403, "InvalidSignatureException",
			    "Signature not yet current: %s is still later than %s (%s + 5 min.)", amz,
			    bound, now_s);
	}
	if (strncmp(l->auth.date, amz, 8) != 0)
		return lerr(r, 403, "InvalidSignatureException",
			    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of"
			    " date from HTTP: '%s' != '%.8s', from '%s'.", l->auth.date, amz, amz);
	if (strcmp(l->auth.service, "lambda") != 0)
		return lerr(r, 403, "InvalidSignatureException",
			    "Credential should be scoped to correct service: 'lambda'.");
	if (strcmp(l->auth.region, a->cfg.aws_region) != 0)
		return lerr(r, 403, "InvalidSignatureException",
			    "Credential should be scoped to a valid region: this endpoint serves '%s',"
			    " not '%s'.", a->cfg.aws_region, l->auth.region);
	rc = awskeys_lookup(a->awskeys, l->auth.access_key, &r->who.tenant_id, r->who.tenant,
			    sizeof(r->who.tenant), l->secret);
	if (rc == -ENOENT)
		return lerr(r, 403, "UnrecognizedClientException",
			    "The security token included in the request is invalid.");
	if (rc)
		return lerr(r, 500, "ServiceException",
			    "this access key cannot be used now (hearthd's log says why)");
	r->who.admin = false;
	r->limit = is_invoke(method, url) ? a->cfg.max_invoke_payload : SMALL_BODY_LIMIT;
	if (cl && strtoull(cl, NULL, 10) > r->limit)
		return lerr(r, 413, "RequestTooLargeException",
			    "Request must be smaller than %zu bytes for the %s operation", r->limit,
			    is_invoke(method, url) ? "InvokeFunction" : "this");
	return MHD_YES;
}

/* ---- signature, once the body is in ------------------------------------------------ */

struct hdr_list {
	struct sigv4_header h[128];
	size_t n;
	bool overflow;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
				      const char *value)
{
	struct hdr_list *l = cls;

	(void)kind;
	if (l->n == sizeof(l->h) / sizeof(l->h[0])) {
		l->overflow = true;
		return MHD_NO;
	}
	l->h[l->n].name = key;
	l->h[l->n].value = value ? value : "";
	l->n++;
	return MHD_YES;
}

/* Returns true when the signature holds; otherwise the error has been queued in *ret. */
static bool verify(struct req *r, const char *method, enum MHD_Result *ret)
{
	struct lambda_req *l = r->lam;
	struct hdr_list hl = { .n = 0 };
	const char *xsha = api_header(r->conn, "X-Amz-Content-Sha256");
	char body_hash[65], why[512];
	struct sigv4_request rq = {
		.method = method,
		.raw_path = l->raw_path,
		.raw_query = l->raw_query,
		.amz_date = l->amz_date,
	};
	bool ok;

	if (sigv4_sha256_hex(r->body ? r->body : "", r->len, body_hash)) {
		*ret = lerr(r, 500, "ServiceException", "cannot hash the request body");
		return false;
	}
	rq.payload_hash = body_hash;
	if (xsha && strcmp(xsha, SIGV4_UNSIGNED_PAYLOAD) == 0) {
		/* Allowed by SigV4 when the header itself is signed: the body is then not covered. */
		if (!signed_header(&l->auth, "x-amz-content-sha256")) {
			*ret = lerr(r, 403, "InvalidSignatureException",
				    "UNSIGNED-PAYLOAD needs x-amz-content-sha256 among the SignedHeaders");
			return false;
		}
		rq.payload_hash = SIGV4_UNSIGNED_PAYLOAD;
	} else if (xsha && strcasecmp(xsha, body_hash) != 0) {
		*ret = lerr(r, 400, "InvalidSignatureException",
			    "The provided 'x-amz-content-sha256' header does not match what was"
			    " computed.");
		return false;
	}
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect_header, &hl);
	if (hl.overflow) {
		*ret = lerr(r, 400, "IncompleteSignatureException", "too many request headers");
		return false;
	}
	rq.headers = hl.h;
	rq.nheaders = hl.n;
	ok = sigv4_verify(&rq, &l->auth, l->secret, why, sizeof(why));
	OPENSSL_cleanse(l->secret, sizeof(l->secret)); /* not needed past this point */
	if (!ok) {
		hlog_info("lambda", "refused a request signed with access key %s: %s",
			  l->auth.access_key, why);
		*ret = lerr(r, 403, "InvalidSignatureException", "%s", why);
	}
	return ok;
}

/* ---- function names ---------------------------------------------------------------- */

static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

struct target {
	char name[128];
	char qual[128];      /* "" = none */
	int version;         /* 0 = latest */
};

enum resolved { RESOLVED, NOT_FOUND, INVALID };

/*
 * FunctionName as Lambda takes it: name, name:qualifier, account:function:name[:q]
 * or arn:aws:lambda:region:account:function:name[:q]; then ?Qualifier. Another
 * account's or region's ARN is not found, exactly as a missing function is.
 */
static enum resolved resolve(struct req *r, const char *in, struct target *t, char *why,
			     size_t whylen)
{
	char buf[512], *parts[9], *save = NULL, acct[16];
	const char *name, *qual = NULL, *qp = api_query(r->conn, "Qualifier");
	int n = 0;

	memset(t, 0, sizeof(*t));
	if (strlen(in) >= sizeof(buf)) {
		snprintf(why, whylen, "FunctionName is too long");
		return INVALID;
	}
	snprintf(buf, sizeof(buf), "%s", in);
	for (char *p = buf, *tok; (tok = strtok_r(p, ":", &save)); p = NULL) {
		if (n == 9)
			break;
		parts[n++] = tok;
	}
	account_of(r->who.tenant_id, acct);
	switch (n) {
	case 1:
	case 2:
		name = parts[0];
		qual = n == 2 ? parts[1] : NULL;
		break;
	case 3:
	case 4:
		if (strcmp(parts[1], "function") != 0)
			goto invalid;
		if (strcmp(parts[0], acct) != 0)
			goto other;
		name = parts[2];
		qual = n == 4 ? parts[3] : NULL;
		break;
	case 7:
	case 8:
		if (strcmp(parts[0], "arn") != 0 || strcmp(parts[2], "lambda") != 0 ||
		    strcmp(parts[5], "function") != 0)
			goto invalid;
		if (strcmp(parts[1], "aws") != 0 || strcmp(parts[3], r->api->cfg.aws_region) != 0 ||
		    strcmp(parts[4], acct) != 0)
			goto other;
		name = parts[6];
		qual = n == 8 ? parts[7] : NULL;
		break;
	default:
		goto invalid;
	}
	if (!valid_name(name))
		goto invalid;
	snprintf(t->name, sizeof(t->name), "%s", name);
	if (qual && qp && strcmp(qual, qp) != 0) {
		snprintf(why, whylen, "The derived qualifier from the function name does not match the"
				      " specified qualifier.");
		return INVALID;
	}
	if (!qual)
		qual = qp;
	if (qual) {
		if (strlen(qual) == 0 || strlen(qual) >= sizeof(t->qual)) {
			snprintf(why, whylen, "Qualifier is 1 to 127 characters");
			return INVALID;
		}
		snprintf(t->qual, sizeof(t->qual), "%s", qual);
		if (strcmp(qual, "$LATEST") != 0) {
			char *end;
			long v;

			if (qual[0] < '1' || qual[0] > '9')
				goto alias; /* hearth has no aliases */
			errno = 0;
			v = strtol(qual, &end, 10);
			if (errno || *end || v > INT_MAX)
				goto alias;
			t->version = (int)v;
		}
	}
	return RESOLVED;
alias: {
		char arn[400];

		function_arn(r, t->name, t->qual, arn, sizeof(arn));
		snprintf(why, whylen, "Function not found: %s (hearth has no aliases)", arn);
		return NOT_FOUND;
	}
other:
	snprintf(why, whylen, "Function not found: %s", in);
	return NOT_FOUND;
invalid:
	snprintf(why, whylen, "1 validation error detected: Value '%s' at 'functionName' failed to"
			      " satisfy constraint: a function name ([A-Za-z0-9_-], 1-64), optionally"
			      " with :qualifier, or its ARN", in);
	return INVALID;
}

/* ---- Invoke ---------------------------------------------------------------------- */

static enum MHD_Result h_invoke(struct req *r, const char *fn)
{
	struct lambda_req *l = r->lam;
	struct MHD_Connection *c = r->conn;
	const char *type = api_header(c, "X-Amz-Invocation-Type");
	const char *log = api_header(c, "X-Amz-Log-Type");
	enum api_invoke_mode mode = API_INVOKE_SYNC;
	struct api_invoke_out o;
	struct target t;
	char why[512], arn[400];

	switch (resolve(r, fn, &t, why, sizeof(why))) {
	case RESOLVED: break;
	case NOT_FOUND: return lerr(r, 404, "ResourceNotFoundException", "%s", why);
	case INVALID: return lerr(r, 400, "InvalidParameterValueException", "%s", why);
	}
	if (type && strcmp(type, "Event") == 0)
		mode = API_INVOKE_EVENT;
	else if (type && strcmp(type, "DryRun") == 0)
		mode = API_INVOKE_DRYRUN;
	else if (type && strcmp(type, "RequestResponse") != 0)
		return lerr(r, 400, "InvalidParameterValueException",
			    "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun");
	if (log && strcmp(log, "Tail") != 0 && strcmp(log, "None") != 0)
		return lerr(r, 400, "InvalidParameterValueException", "X-Amz-Log-Type must be None or Tail");
	if (r->len > 0) {
		/* Lambda takes JSON events only, and says so before anything runs. */
		json_error_t e;
		json_t *j = json_loadb(r->body, r->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);

		if (!j)
			return lerr(r, 400, "InvalidRequestContentException",
				    "Could not parse request body into json: %s (line %d, column %d)",
				    e.text, e.line, e.column);
		json_decref(j);
	}
	l->tail = log && strcmp(log, "Tail") == 0 && mode == API_INVOKE_SYNC;
	l->latest = t.version == 0;
	switch (api_invoke_start(r, r->who.tenant_id, t.name, t.version, mode, &o)) {
	case API_INVOKE_ANSWERED:
		return api_respond_invocation(r);
	case API_INVOKE_SUBMITTED:
		return MHD_YES;
	case API_INVOKE_QUEUED: {
		const char *h[] = { "x-amzn-RequestId", o.request_id, "X-Hearth-Request-Id",
				    o.request_id, NULL };

		return api_send_buf(c, 202, "application/json", strdup(""), 0, h);
	}
	case API_INVOKE_CHECKED: {
		const char *h[] = { "x-amzn-RequestId", o.request_id, NULL };

		return api_send_buf(c, 204, "application/json", strdup(""), 0, h);
	}
	case API_INVOKE_REFUSED:
		break;
	}
	if (o.status == 404) {
		function_arn(r, t.name, t.qual[0] ? t.qual : NULL, arn, sizeof(arn));
		return lerr(r, 404, "ResourceNotFoundException", "Function not found: %s", arn);
	}
	if (o.status == 429)
		return too_many(r, o.code, o.retry_after, o.message);
	return lerr(r, o.status >= 500 ? o.status : 500, "ServiceException", "%s: %s", o.code,
		    o.message);
}

static char *base64(const void *data, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *)out, data, (int)n);
	return out;
}

/* Lambda's Tail: START, the function's logs, END and REPORT; the last 4 KB, base64. */
static char *log_tail(const struct invocation *inv, const char *version)
{
	const struct agent_result *res = &inv->res;
	size_t cap = res->logs_len + 1024, n = 0, from;
	char *buf = malloc(cap), *out;
	int w;

	if (!buf)
		return NULL;
	w = snprintf(buf, cap, "START RequestId: %s Version: %s\n", inv->request_id, version);
	n = (size_t)w;
	memcpy(buf + n, res->logs ? (const char *)res->logs : "", res->logs_len);
	n += res->logs_len;
	if (res->logs_len && buf[n - 1] != '\n')
		buf[n++] = '\n';
	w = snprintf(buf + n, cap - n,
		     "END RequestId: %s\nREPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %llu"
		     " ms\tMemory Size: %u MB\tMax Memory Used: %llu MB\t\n",
		     inv->request_id, inv->request_id, res->duration_us / 1000.0,
		     (unsigned long long)quota_billed_ms(res->duration_us), inv->ver.memory_mb,
		     (unsigned long long)((res->max_rss_kb + 1023) / 1024));
	n += (size_t)w < cap - n ? (size_t)w : cap - n - 1;
	from = n > LOG_TAIL_BYTES ? n - LOG_TAIL_BYTES : 0;
	out = base64(buf + from, n - from);
	free(buf);
	return out;
}

static const char *error_type(const struct invocation *inv)
{
	switch (inv->res.status) {
	case AGENT_INVOKE_FUNCTION_ERROR: return "Function.Error";
	case AGENT_INVOKE_CRASHED: return "Runtime.ExitError";
	case AGENT_INVOKE_TIMEOUT: return "Sandbox.Timedout";
	case AGENT_INVOKE_RESPONSE_TOO_LARGE: return "Function.ResponseSizeTooLarge";
	case AGENT_INVOKE_INIT_FAILED: return "Runtime.InitError";
	default: return "Runtime.Unknown";
	}
}

/* The error document of a failed function: its own, if it printed a Lambda-style one. */
static json_t *function_error_body(const struct invocation *inv)
{
	const struct agent_result *res = &inv->res;
	json_t *j = NULL, *msg;
	const char *type = error_type(inv);
	char rtype[64];

	if (res->status == AGENT_INVOKE_FUNCTION_ERROR && res->body_len) {
		j = json_loadb((const char *)res->body, res->body_len, 0, NULL);
		if (json_is_object(j) && (json_object_get(j, "errorMessage") ||
					  json_object_get(j, "errorType")))
			return j;
		json_decref(j);
	}
	if (res->status == AGENT_INVOKE_FUNCTION_ERROR && res->body_len)
		msg = json_stringn((const char *)res->body, res->body_len);
	else
		msg = json_string(res->error ? res->error : error_type(inv));
	/* Runtime mode names its own failures ("Runtime.ExitError: ...", "Runtime.NoResponse: ..."). */
	if (res->status == AGENT_INVOKE_FUNCTION_ERROR && !res->body_len && res->error &&
	    strncmp(res->error, "Runtime.", 8) == 0 && strchr(res->error, ':')) {
		snprintf(rtype, sizeof(rtype), "%.*s", (int)(strchr(res->error, ':') - res->error),
			 res->error);
		type = rtype;
	}
	return json_pack("{s:s,s:o,s:i,s:i,s:[]}", "errorType", type, "errorMessage",
			 msg ? msg : json_string("(output not UTF-8)"), "exitCode", res->exit_code,
			 "signal", res->signal, "stackTrace");
}

enum MHD_Result lambda_respond(struct req *r)
{
	struct invocation *inv = r->inv;
	struct lambda_req *l = r->lam;
	struct api_meter_bufs b;
	const char *h[40];
	char *tail = NULL;
	enum MHD_Result ret;
	int k = 0;

	snprintf(l->request_id, sizeof(l->request_id), "%s", inv->request_id);
	snprintf(b.ver, sizeof(b.ver), "%d", inv->ver.version);
	if (inv->outcome != INV_OK) {
		if (inv->http_status == 429)
			return too_many(r, inv->error_code, 1, inv->error);
		return lerr(r, inv->http_status >= 500 ? (unsigned)inv->http_status : 500,
			    "ServiceException", "%s: %s", inv->error_code, inv->error);
	}
	h[k++] = "x-amzn-RequestId";
	h[k++] = inv->request_id;
	h[k++] = "X-Hearth-Request-Id";
	h[k++] = inv->request_id;
	h[k++] = "X-Amz-Executed-Version";
	h[k++] = l->latest ? "$LATEST" : b.ver;
	h[k++] = "X-Hearth-Function-Version";
	h[k++] = b.ver;
	k = api_meter_headers(inv, &b, h, k);
	if (l->tail) {
		tail = log_tail(inv, l->latest ? "$LATEST" : b.ver);
		if (tail) {
			h[k++] = "X-Amz-Log-Result";
			h[k++] = tail;
		}
	}
	if (inv->res.status != AGENT_INVOKE_OK) {
		h[k++] = "X-Amz-Function-Error";
		h[k++] = inv->res.status == AGENT_INVOKE_FUNCTION_ERROR ? "Handled" : "Unhandled";
		h[k] = NULL;
		ret = api_send_json(r->conn, 200, function_error_body(inv), h);
	} else {
		void *body = inv->res.body;

		h[k] = NULL;
		inv->res.body = NULL; /* handed to MHD, which frees it */
		ret = api_send_buf(r->conn, 200, "application/json", body ? body : strdup(""),
				   body ? inv->res.body_len : 0, h);
	}
	free(tail);
	return ret;
}

/* ---- GetFunction, ListFunctions -------------------------------------------------------- */

static json_t *configuration(struct req *r, json_t *row, const char *qual)
{
	const char *name = json_string_value(json_object_get(row, "name"));
	const char *sha = json_string_value(json_object_get(row, "image_sha256"));
	json_int_t tmo = json_integer_value(json_object_get(row, "timeout_ms"));
	time_t created = (time_t)json_integer_value(json_object_get(row, "created_at"));
	char arn[400], role[96], acct[16], when[40], ver[16], *code_sha = NULL;
	uint8_t raw[32];
	struct tm tm;
	json_t *j;

	account_of(r->who.tenant_id, acct);
	function_arn(r, name, qual, arn, sizeof(arn));
	snprintf(role, sizeof(role), "arn:aws:iam::%s:role/hearth-function", acct);
	gmtime_r(&created, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S.000+0000", &tm);
	snprintf(ver, sizeof(ver), "%lld",
		 (long long)json_integer_value(json_object_get(row, "version")));
	if (sha && strlen(sha) == 64) {
		for (int i = 0; i < 32; i++)
			sscanf(sha + 2 * i, "%2hhx", &raw[i]);
		code_sha = base64(raw, 32);
	}
	j = json_pack("{s:s,s:s,s:s,s:s,s:O,s:I,s:s,s:I,s:O,s:s,s:s,s:s,s:s,s:s,s:s,s:[s]}",
		      "FunctionName", name, "FunctionArn", arn, "Runtime", "provided", "Role", role,
		      "Handler", json_object_get(row, "handler"), "CodeSize",
		      json_integer_value(json_object_get(row, "package_bytes")), "Description", "",
		      "Timeout", (json_int_t)((tmo + 999) / 1000), "MemorySize",
		      json_object_get(row, "memory_mb"), "LastModified", when, "CodeSha256",
		      code_sha ? code_sha : "", "Version",
		      qual && strcmp(qual, "$LATEST") != 0 ? ver : "$LATEST", "State", "Active",
		      "LastUpdateStatus", "Successful", "PackageType", "Zip", "Architectures",
		      "x86_64");
	free(code_sha);
	if (j) /* not Lambda's, and useful: the number of the version that $LATEST is */
		json_object_set_new(j, "HearthVersion", json_integer(atoi(ver)));
	return j;
}

static enum MHD_Result h_get(struct req *r, const char *fn)
{
	struct target t;
	char why[512], arn[400];
	json_t *rows, *cfg;

	switch (resolve(r, fn, &t, why, sizeof(why))) {
	case RESOLVED: break;
	case NOT_FOUND: return lerr(r, 404, "ResourceNotFoundException", "%s", why);
	case INVALID: return lerr(r, 400, "InvalidParameterValueException", "%s", why);
	}
	rows = store_lambda_functions(r->api->store, r->who.tenant_id, t.name, t.version, NULL, 0);
	if (json_array_size(rows) == 0) {
		json_decref(rows);
		function_arn(r, t.name, t.qual[0] ? t.qual : NULL, arn, sizeof(arn));
		return lerr(r, 404, "ResourceNotFoundException", "Function not found: %s", arn);
	}
	cfg = configuration(r, json_array_get(rows, 0), t.qual[0] ? t.qual : NULL);
	json_decref(rows);
	if (!cfg)
		return lerr(r, 500, "ServiceException", "cannot describe the function");
	const char *h[] = { "x-amzn-RequestId", r->lam->request_id, NULL };

	return api_send_json(r->conn, 200,
			     json_pack("{s:o,s:{s:s,s:s}}", "Configuration", cfg, "Code",
				       "RepositoryType", "hearth", "Location", ""),
			     h);
}

static enum MHD_Result h_list(struct req *r)
{
	const char *marker = api_query(r->conn, "Marker"), *mi = api_query(r->conn, "MaxItems");
	long max = LIST_DEFAULT_ITEMS;
	json_t *rows, *fns, *out;
	size_t i, n;

	if (mi) {
		char *end;

		errno = 0;
		max = strtol(mi, &end, 10);
		if (errno || *end || mi[0] < '0' || mi[0] > '9' || max < 1 || max > LIST_MAX_ITEMS)
			return lerr(r, 400, "InvalidParameterValueException",
				    "MaxItems must be an integer 1..%d", LIST_MAX_ITEMS);
	}
	/* The marker is the last name of the previous page (names are [A-Za-z0-9_-]). */
	if (marker && !valid_name(marker))
		return lerr(r, 400, "InvalidParameterValueException", "Marker is not one this API gave");
	rows = store_lambda_functions(r->api->store, r->who.tenant_id, NULL, 0, marker, (int)max + 1);
	if (!rows)
		return lerr(r, 500, "ServiceException", "cannot list functions");
	n = json_array_size(rows);
	fns = json_array();
	for (i = 0; i < n && i < (size_t)max; i++)
		json_array_append_new(fns, configuration(r, json_array_get(rows, i), NULL));
	out = json_pack("{s:o}", "Functions", fns);
	if (n > (size_t)max)
		json_object_set_new(out, "NextMarker",
				    json_incref(json_object_get(json_array_get(rows, max - 1), "name")));
	json_decref(rows);
	const char *h[] = { "x-amzn-RequestId", r->lam->request_id, NULL };

	return api_send_json(r->conn, 200, out, h);
}

/* ---- routing ---------------------------------------------------------------------------- */

enum MHD_Result lambda_route(struct req *r, const char *method, const char *url)
{
	char path[600], *seg[4], *save = NULL;
	enum MHD_Result ret;
	int n = 0;

	if (r->too_large)
		return lerr(r, 413, "RequestTooLargeException",
			    "Request must be smaller than %zu bytes for the InvokeFunction operation",
			    r->limit);
	if (r->io_error)
		return lerr(r, 500, "ServiceException", "cannot take the request body");
	if (!verify(r, method, &ret))
		return ret;
	snprintf(path, sizeof(path), "%s", url + strlen(LAMBDA_PATH_PREFIX));
	for (char *p = path, *t; (t = strtok_r(p, "/", &save)); p = NULL) {
		if (n == 4) {
			n = 5;
			break;
		}
		seg[n++] = t;
	}
	if (n >= 1 && strcmp(seg[0], "functions") == 0) {
		if (n == 1 && strcmp(method, "GET") == 0)
			return h_list(r);
		if (n == 2 && strcmp(method, "GET") == 0)
			return h_get(r, seg[1]);
		if (n == 3 && strcmp(seg[2], "invocations") == 0 && strcmp(method, "POST") == 0)
			return h_invoke(r, seg[1]);
	}
	return lerr(r, 404, "UnknownOperationException",
		    "hearth's Lambda API serves Invoke, GetFunction and ListFunctions (%s %s is not"
		    " one); manage functions with hearth's own API", method, url);
}
