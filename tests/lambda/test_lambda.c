/*
 * The Lambda Invoke API of the real hearthd (process engine), signed with AWS
 * Signature Version 4 by clients hearth did not write: libcurl's
 * CURLOPT_AWS_SIGV4, and the `aws` command of Debian's awscli package.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "../cmocka_main.h"
#include "harness.h"

#define AWS_BIN "/usr/bin/aws"
#define FN_DIR LAMBDA_FNS_DIR "/lambdafn"

struct awskey {
	char id[32];
	char secret[64];
};

static void aws_key(struct hd *h, const char *tenant, struct awskey *k)
{
	char path[128];
	struct resp r;
	json_t *j;

	snprintf(path, sizeof(path), "/v1/tenants/%s/keys?type=aws", tenant);
	assert_int_equal(http(h, "POST", path, h->admin, NULL, NULL, 0, NULL, &r), 201);
	j = body_json(&r);
	snprintf(k->id, sizeof(k->id), "%s", json_string_value(json_object_get(j, "access_key_id")));
	snprintf(k->secret, sizeof(k->secret), "%s",
		 json_string_value(json_object_get(j, "secret_access_key")));
	assert_int_equal(strlen(k->id), 20);
	assert_int_equal(strlen(k->secret), 40);
	assert_string_equal(json_string_value(json_object_get(j, "region")), "us-east-1");
	json_decref(j);
	resp_free(&r);
}

/*
 * A Lambda API request signed by libcurl (CURLOPT_AWS_SIGV4) with key k (NULL:
 * unsigned). hdrs: extra header lines, NULL-terminated.
 */
static long lam(struct hd *h, const struct awskey *k, const char *region, const char *method,
		const char *path, const void *body, size_t len, const char *const *hdrs,
		struct resp *r)
{
	const char *hl[16];
	char prov[128], up[128];
	struct http_opts o = { .hdrs = hl, .timeout_s = 60, .allow_expect = 1 };
	size_t n = 0;

	if (k) {
		snprintf(prov, sizeof(prov), "aws:amz:%s:lambda", region ? region : "us-east-1");
		snprintf(up, sizeof(up), "%s:%s", k->id, k->secret);
		o.aws_sigv4 = prov;
		o.userpwd = up;
	}
	for (; hdrs && hdrs[n]; n++) {
		assert_true(n + 2 < sizeof(hl) / sizeof(hl[0]));
		hl[n] = hdrs[n];
	}
	hl[n++] = "Content-Type: application/json";
	hl[n] = NULL;
	return http_ex(h, method, path, NULL, NULL, body, len, &o, r);
}

/*
 * The test's own small SigV4 signer (OpenSSL HMAC, written here apart from
 * hearthd's sigv4.c), for what libcurl 7.88's signer gets wrong: it does not
 * encode the path a second time or sort the query (both needed by every AWS
 * service but S3), and given an X-Amz-Date it sends that header twice. Signs
 * host and x-amz-date; query must be given already sorted and encoded.
 */
static void hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
	unsigned int n = 32;

	assert_non_null(HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg),
			     out, &n));
}

static void sha_hex(const void *d, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned int l = 32;

	assert_int_equal(EVP_Digest(d, n, md, &l, EVP_sha256(), NULL), 1);
	for (int i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

static long signed_req(struct hd *h, const struct awskey *k, const char *amz_date,
		       const char *method, const char *path, const char *query, const char *body,
		       struct resp *r)
{
	char canon_path[1024], creq[4096], sts[512], host[64], keybuf[80], hh[65], bh[65];
	char auth[512], dh[64], target[1024];
	unsigned char k1[32], k2[32];
	size_t o = 0;
	const char *hl[] = { auth, dh, NULL };
	struct http_opts opts = { .hdrs = hl, .timeout_s = 60 };

	for (const char *p = path; *p; p++) {
		unsigned char ch = (unsigned char)*p;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		    strchr("-_.~/", ch))
			canon_path[o++] = (char)ch;
		else
			o += (size_t)sprintf(canon_path + o, "%%%02X", ch);
	}
	canon_path[o] = 0;
	snprintf(host, sizeof(host), "127.0.0.1:%d", h->port);
	sha_hex(body ? body : "", body ? strlen(body) : 0, bh);
	snprintf(creq, sizeof(creq), "%s\n%s\n%s\nhost:%s\nx-amz-date:%s\n\nhost;x-amz-date\n%s",
		 method, canon_path, query ? query : "", host, amz_date, bh);
	sha_hex(creq, strlen(creq), hh);
	snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%.8s/us-east-1/lambda/aws4_request\n%s",
		 amz_date, amz_date, hh);
	snprintf(keybuf, sizeof(keybuf), "AWS4%s", k->secret);
	{
		char d[9];

		snprintf(d, sizeof(d), "%.8s", amz_date);
		hmac(keybuf, strlen(keybuf), d, k1);
	}
	hmac(k1, 32, "us-east-1", k2);
	hmac(k2, 32, "lambda", k1);
	hmac(k1, 32, "aws4_request", k2);
	hmac(k2, 32, sts, k1);
	o = (size_t)snprintf(auth, sizeof(auth), "Authorization: AWS4-HMAC-SHA256 Credential=%s/%.8s/"
				       "us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, "
				       "Signature=", k->id, amz_date);
	for (int i = 0; i < 32; i++)
		o += (size_t)sprintf(auth + o, "%02x", k1[i]);
	snprintf(dh, sizeof(dh), "X-Amz-Date: %s", amz_date);
	snprintf(target, sizeof(target), "%s%s%s", path, query && *query ? "?" : "",
		 query ? query : "");
	return http_ex(h, method, target, NULL, NULL, body, body ? strlen(body) : 0, &opts, r);
}

static void amz_now(char out[17], int offset_s)
{
	time_t t = time(NULL) + offset_s;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* A whole response header value (hdr() keeps at most 512 bytes); caller frees. */
static char *hdr_full(struct resp *r, const char *name)
{
	size_t n = strlen(name);

	for (char *p = r->hdrs; p && *p;) {
		char *eol = strstr(p, "\r\n");

		if (!eol)
			break;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			char *v = p + n + 1;

			while (*v == ' ')
				v++;
			return strndup(v, (size_t)(eol - v));
		}
		p = eol + 2;
	}
	return NULL;
}

static long lam_invoke(struct hd *h, const struct awskey *k, const char *fn, const char *event,
		       const char *const *hdrs, struct resp *r)
{
	char path[512];

	snprintf(path, sizeof(path), "/2015-03-31/functions/%s/invocations", fn);
	return lam(h, k, NULL, "POST", path, event, strlen(event), hdrs, r);
}

/* Asserts a Lambda-shaped error: status, x-amzn-ErrorType, {"Type", "message"}; returns the message. */
static char *lam_error(struct resp *r, long status, const char *type)
{
	json_t *j;
	char *msg;

	if (r->status != status || !hdr(r, "x-amzn-ErrorType") ||
	    strcmp(hdr(r, "x-amzn-ErrorType"), type) != 0)
		fail_msg("want %ld %s, got %ld %s: %.*s", status, type, r->status,
			 hdr(r, "x-amzn-ErrorType") ?: "(no x-amzn-ErrorType)", (int)r->len,
			 r->body ?: "");
	assert_non_null(hdr(r, "x-amzn-RequestId"));
	j = body_json(r);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "Type")),
			    status >= 500 ? "Service" : "User");
	assert_non_null(json_string_value(json_object_get(j, "message")));
	msg = strdup(json_string_value(json_object_get(j, "message")));
	json_decref(j);
	return msg;
}

static void expect_error(struct resp *r, long status, const char *type, const char *in_message)
{
	char *m = lam_error(r, status, type);

	if (in_message && !strstr(m, in_message))
		fail_msg("message '%s' lacks '%s'", m, in_message);
	free(m);
	resp_free(r);
}

static char *b64decode(const char *in, size_t *n)
{
	size_t len = strlen(in);
	unsigned char *out = malloc(len + 1);
	int got = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);

	assert_true(got >= 0);
	while (len > 0 && in[len - 1] == '=') { /* EVP_DecodeBlock counts the padding */
		got--;
		len--;
	}
	out[got] = 0;
	*n = (size_t)got;
	return (char *)out;
}

static int count_invocations(struct hd *h, const char *key, const char *fn)
{
	char path[128];
	struct resp r;
	json_t *j;
	int n;

	snprintf(path, sizeof(path), "/v1/functions/%s/logs?limit=1000", fn);
	assert_int_equal(http(h, "GET", path, key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	n = (int)json_array_size(json_object_get(j, "invocations"));
	json_decref(j);
	resp_free(&r);
	return n;
}

/* Starts hearthd with tenant acme (function fn deployed) and an AWS key for it. */
static char *start_acme(struct hd *h, struct awskey *k)
{
	char *key;

	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "fn", FN_DIR, NULL);
	aws_key(h, "acme", k);
	return key;
}

/* ---- cases ---------------------------------------------------------------------------- */

static void test_valid_signature(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k), date[17];
	json_t *j;

	assert_int_equal(lam_invoke(h, &k, "fn", "{\"n\": 1}", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Amz-Executed-Version"), "$LATEST");
	assert_non_null(hdr(&r, "x-amzn-RequestId"));
	assert_string_equal(hdr(&r, "x-amzn-RequestId"), hdr(&r, "X-Hearth-Request-Id"));
	assert_null(hdr(&r, "X-Amz-Function-Error"));
	assert_null(hdr(&r, "X-Amz-Log-Result"));
	assert_non_null(hdr(&r, "X-Hearth-Billed-Duration-Ms"));
	j = body_json(&r);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "echo"), "n")), 1);
	json_decref(j);
	resp_free(&r);
	/* Qualifier: a version number, $LATEST, and name:version. */
	assert_int_equal(lam(h, &k, NULL, "POST", "/2015-03-31/functions/fn/invocations?Qualifier=1",
			     "{}", 2, NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Amz-Executed-Version"), "1");
	resp_free(&r);
	assert_int_equal(lam(h, &k, NULL, "POST",
			     "/2015-03-31/functions/fn/invocations?Qualifier=%24LATEST", "{}", 2, NULL,
			     &r), 200);
	assert_string_equal(hdr(&r, "X-Amz-Executed-Version"), "$LATEST");
	resp_free(&r);
	/* A full ARN in the path, percent-encoded as the SDKs send it (signed a second time encoded). */
	amz_now(date, 0);
	assert_int_equal(signed_req(h, &k, date, "POST", "/2015-03-31/functions/arn%3Aaws%3Alambda%3A"
				    "us-east-1%3A000000000001%3Afunction%3Afn%3A1/invocations", NULL,
				    "{}", &r), 200);
	assert_string_equal(hdr(&r, "X-Amz-Executed-Version"), "1");
	resp_free(&r);
	assert_int_equal(lam(h, &k, NULL, "POST", "/2015-03-31/functions/fn/invocations?Qualifier=2",
			     "{}", 2, NULL, &r), 404);
	expect_error(&r, 404, "ResourceNotFoundException", "function:fn:2");
	assert_int_equal(signed_req(h, &k, date, "POST", "/2015-03-31/functions/fn%3A1/invocations",
				    "Qualifier=%24LATEST", "{}", &r), 400);
	expect_error(&r, 400, "InvalidParameterValueException", "qualifier");
	/* Same path as hearth's own API: metered and logged there. */
	assert_int_equal(count_invocations(h, key, "fn"), 4);
	free(key);
	hd_stop(h);
}

/* Sends a request whose Authorization we write ourselves (raw socket); returns the answer. */
static int tcp_connect(struct hd *h)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)h->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void raw(struct hd *h, const char *req, char *out, size_t cap)
{
	int fd = tcp_connect(h);
	size_t got = 0;

	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (got + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 5000) <= 0)
			break;
		n = read(fd, out + got, cap - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		if (strstr(out, "\r\n\r\n")) {
			/* Content-Length known: stop when the body is in. */
			const char *cl = strcasestr(out, "\r\nContent-Length:");
			const char *end = strstr(out, "\r\n\r\n") + 4;

			out[got] = 0;
			if (cl && (size_t)(out + got - end) >= strtoul(cl + 17, NULL, 10))
				break;
		}
	}
	out[got] = 0;
	close(fd);
}

static void test_bad_signature(void **state)
{
	struct hd *h = *state;
	struct awskey k, wrong;
	struct resp r;
	char *key = start_acme(h, &k), req[2048], ans[8192], date[17];

	/* The right key id with another secret. */
	wrong = k;
	wrong.secret[0] = wrong.secret[0] == 'A' ? 'B' : 'A';
	lam_invoke(h, &wrong, "fn", "{}", NULL, &r);
	expect_error(&r, 403, "InvalidSignatureException", "signature we calculated does not match");
	/* Our own Authorization: the right key and date, a made-up signature. */
	amz_now(date, 0);
	snprintf(req, sizeof(req),
		 "POST /2015-03-31/functions/fn/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		 "X-Amz-Date: %s\r\nAuthorization: AWS4-HMAC-SHA256 Credential=%s/%.8s/us-east-1/"
		 "lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=%s\r\n"
		 "Content-Length: 2\r\nConnection: close\r\n\r\n{}",
		 date, k.id, date,
		 "0000000000000000000000000000000000000000000000000000000000000000");
	raw(h, req, ans, sizeof(ans));
	assert_int_equal(strncmp(ans, "HTTP/1.1 403", 12), 0);
	assert_non_null(strcasestr(ans, "x-amzn-ErrorType: InvalidSignatureException"));
	/* A body other than the one x-amz-content-sha256 names. */
	{
		const char *hd[] = { "x-amz-content-sha256: " /* SHA-256 of the empty string */
				     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
				     NULL };

		lam_invoke(h, &k, "fn", "{}", hd, &r);
		expect_error(&r, 400, "InvalidSignatureException", "x-amz-content-sha256");
	}
	/* UNSIGNED-PAYLOAD, signed (curl signs every header it is given): accepted per SigV4. */
	{
		const char *hd[] = { "x-amz-content-sha256: UNSIGNED-PAYLOAD", NULL };

		assert_int_equal(lam_invoke(h, &k, "fn", "{\"u\": 1}", hd, &r), 200);
		resp_free(&r);
	}
	/* Other scopes: region, and no signature at all. */
	lam(h, &k, "eu-west-1", "POST", "/2015-03-31/functions/fn/invocations", "{}", 2, NULL, &r);
	expect_error(&r, 403, "InvalidSignatureException", "region");
	lam(h, NULL, NULL, "POST", "/2015-03-31/functions/fn/invocations", "{}", 2, NULL, &r);
	expect_error(&r, 403, "MissingAuthenticationTokenException", NULL);
	/* A hearth bearer key is not a signature. */
	{
		char bearer[200];
		const char *hd[] = { bearer, NULL };

		snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s", key);
		lam(h, NULL, NULL, "POST", "/2015-03-31/functions/fn/invocations", "{}", 2, hd, &r);
		expect_error(&r, 400, "IncompleteSignatureException", "AWS4-HMAC-SHA256");
	}
	/* None of them ran anything. */
	assert_int_equal(count_invocations(h, key, "fn"), 1);
	free(key);
	hd_stop(h);
}

static void test_stale_date(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k), date[17];
	const char *path = "/2015-03-31/functions/fn/invocations";

	amz_now(date, -400);
	signed_req(h, &k, date, "POST", path, NULL, "{}", &r);
	expect_error(&r, 403, "InvalidSignatureException", "Signature expired");
	amz_now(date, 400);
	signed_req(h, &k, date, "POST", path, NULL, "{}", &r);
	expect_error(&r, 403, "InvalidSignatureException", "not yet current");
	/* Within the five minutes, both ways. */
	amz_now(date, -240);
	assert_int_equal(signed_req(h, &k, date, "POST", path, NULL, "{}", &r), 200);
	resp_free(&r);
	amz_now(date, 240);
	assert_int_equal(signed_req(h, &k, date, "POST", path, NULL, "{}", &r), 200);
	resp_free(&r);
	/* A malformed X-Amz-Date (no zone). */
	amz_now(date, 0);
	date[15] = 0;
	signed_req(h, &k, date, "POST", path, NULL, "{}", &r);
	expect_error(&r, 400, "IncompleteSignatureException", "X-Amz-Date");
	assert_int_equal(count_invocations(h, key, "fn"), 2);
	free(key);
	hd_stop(h);
}

static void test_other_tenants_key(void **state)
{
	struct hd *h = *state;
	struct awskey k, kb;
	struct resp r;
	char *key = start_acme(h, &k), *keyb, path[256], date[17];
	json_t *j;

	keyb = tenant_create(h, "bob");
	aws_key(h, "bob", &kb);
	deploy(h, keyb, "bobfn", FN_DIR, NULL);
	/* Bob's valid key cannot reach acme's function, by name or by acme's ARN; it looks absent. */
	lam_invoke(h, &kb, "fn", "{}", NULL, &r);
	expect_error(&r, 404, "ResourceNotFoundException", "function:fn");
	amz_now(date, 0);
	signed_req(h, &kb, date, "POST", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A"
		   "000000000001%3Afunction%3Afn/invocations", NULL, "{}", &r);
	expect_error(&r, 404, "ResourceNotFoundException", NULL);
	lam(h, &kb, NULL, "GET", "/2015-03-31/functions/fn", NULL, 0, NULL, &r);
	expect_error(&r, 404, "ResourceNotFoundException", NULL);
	/* A missing function of bob's own gets the same answer. */
	lam_invoke(h, &kb, "nosuch", "{}", NULL, &r);
	expect_error(&r, 404, "ResourceNotFoundException", NULL);
	/* Event and DryRun do not leak it either. */
	{
		const char *ev[] = { "X-Amz-Invocation-Type: Event", NULL };
		const char *dr[] = { "X-Amz-Invocation-Type: DryRun", NULL };

		lam_invoke(h, &kb, "fn", "{}", ev, &r);
		expect_error(&r, 404, "ResourceNotFoundException", NULL);
		lam_invoke(h, &kb, "fn", "{}", dr, &r);
		expect_error(&r, 404, "ResourceNotFoundException", NULL);
	}
	/* Bob's list holds bob's function only. */
	assert_int_equal(lam(h, &kb, NULL, "GET", "/2015-03-31/functions/", NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	assert_int_equal(json_array_size(json_object_get(j, "Functions")), 1);
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(j, "Functions"), 0), "FunctionName")),
			    "bobfn");
	json_decref(j);
	resp_free(&r);
	/* And bob's key works for bob. */
	assert_int_equal(lam_invoke(h, &kb, "bobfn", "{}", NULL, &r), 200);
	resp_free(&r);
	assert_int_equal(count_invocations(h, key, "fn"), 0);
	/* An unknown access key id, and a revoked one. */
	{
		struct awskey none = kb;

		memcpy(none.id + 4, "AAAAAAAAAAAAAAAA", 16);
		lam_invoke(h, &none, "bobfn", "{}", NULL, &r);
		expect_error(&r, 403, "UnrecognizedClientException", NULL);
	}
	snprintf(path, sizeof(path), "/v1/tenants/bob/keys/%s", kb.id);
	assert_int_equal(http(h, "DELETE", path, h->admin, NULL, NULL, 0, NULL, &r), 200);
	resp_free(&r);
	lam_invoke(h, &kb, "bobfn", "{}", NULL, &r);
	expect_error(&r, 403, "UnrecognizedClientException", NULL);
	/* Deleting a tenant takes its AWS keys with it. */
	assert_int_equal(http(h, "DELETE", "/v1/tenants/acme", h->admin, NULL, NULL, 0, NULL, &r), 200);
	resp_free(&r);
	lam_invoke(h, &k, "fn", "{}", NULL, &r);
	expect_error(&r, 403, "UnrecognizedClientException", NULL);
	free(key);
	free(keyb);
	hd_stop(h);
}

static void test_tail_logs(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k), *log, *b64, rid[64];
	const char *tail[] = { "X-Amz-Log-Type: Tail", NULL };
	size_t n;

	assert_int_equal(lam_invoke(h, &k, "fn", "{\"x\": 2}", tail, &r), 200);
	snprintf(rid, sizeof(rid), "%s", hdr(&r, "x-amzn-RequestId"));
	log = hdr_full(&r, "X-Amz-Log-Result");
	assert_non_null(log);
	b64 = log;
	log = b64decode(b64, &n);
	free(b64);
	assert_non_null(strstr(log, "START RequestId: "));
	assert_non_null(strstr(log, rid));
	assert_non_null(strstr(log, "lambdafn got 8 bytes\n"));
	assert_non_null(strstr(log, "\nREPORT RequestId: "));
	assert_non_null(strstr(log, "Billed Duration: "));
	free(log);
	resp_free(&r);
	/* Over 4 KB of logs: the last 4 KB, ending with the REPORT line. */
	assert_int_equal(lam_invoke(h, &k, "fn", "{\"m\": \"manylogs\"}", tail, &r), 200);
	b64 = hdr_full(&r, "X-Amz-Log-Result");
	assert_non_null(b64);
	log = b64decode(b64, &n);
	free(b64);
	assert_int_equal(n, 4096);
	assert_null(strstr(log, "START RequestId"));
	assert_non_null(strstr(log, "log line 299 of a chatty function\nEND RequestId: "));
	assert_non_null(strstr(log, "REPORT RequestId: "));
	free(log);
	resp_free(&r);
	/* Without Tail, no log header. */
	assert_int_equal(lam_invoke(h, &k, "fn", "{}", NULL, &r), 200);
	assert_null(hdr(&r, "X-Amz-Log-Result"));
	resp_free(&r);
	{
		const char *bad[] = { "X-Amz-Log-Type: Everything", NULL };

		lam_invoke(h, &k, "fn", "{}", bad, &r);
		expect_error(&r, 400, "InvalidParameterValueException", "X-Amz-Log-Type");
	}
	free(key);
	hd_stop(h);
}

static void test_event(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k), id[64], okid[64];
	const char *ev[] = { "X-Amz-Invocation-Type: Event", NULL };
	json_t *j;

	/* Event goes to hearth's durable async queue: followable with hearth's API. */
	assert_int_equal(lam_invoke(h, &k, "fn", "{\"e\": 1}", ev, &r), 202);
	assert_int_equal(r.len, 0);
	snprintf(okid, sizeof(okid), "%s", hdr(&r, "x-amzn-RequestId"));
	resp_free(&r);
	j = wait_event(h, key, okid, "succeeded");
	json_decref(j);
	/* A failing event is retried, then dead-lettered, like any other. */
	assert_int_equal(lam_invoke(h, &k, "fn", "{\"m\": \"handled\"}", ev, &r), 202);
	snprintf(id, sizeof(id), "%s", hdr(&r, "x-amzn-RequestId"));
	resp_free(&r);
	j = wait_event(h, key, id, "dead");
	assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 3);
	json_decref(j);
	assert_int_equal(http(h, "GET", "/v1/dead-letters", key, NULL, NULL, 0, NULL, &r), 200);
	j = body_json(&r);
	assert_int_equal(json_array_size(json_object_get(j, "dead_letters")), 1);
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(j, "dead_letters"), 0), "request_id")),
			    id);
	json_decref(j);
	resp_free(&r);
	assert_int_equal(count_invocations(h, key, "fn"), 4);
	free(key);
	hd_stop(h);
}

static void test_dry_run(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k);
	const char *dr[] = { "X-Amz-Invocation-Type: DryRun", NULL };

	assert_int_equal(lam_invoke(h, &k, "fn", "{}", dr, &r), 204);
	assert_non_null(hdr(&r, "x-amzn-RequestId"));
	resp_free(&r);
	lam_invoke(h, &k, "nosuch", "{}", dr, &r);
	expect_error(&r, 404, "ResourceNotFoundException", NULL);
	{
		const char *bad[] = { "X-Amz-Invocation-Type: Sometimes", NULL };

		lam_invoke(h, &k, "fn", "{}", bad, &r);
		expect_error(&r, 400, "InvalidParameterValueException", "X-Amz-Invocation-Type");
	}
	/* Nothing ran. */
	assert_int_equal(count_invocations(h, key, "fn"), 0);
	free(key);
	hd_stop(h);
}

static void test_function_errors(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k);
	json_t *j;

	/* Exit status non-zero: the function's own (handled) error. */
	assert_int_equal(lam_invoke(h, &k, "fn", "{\"m\": \"handled\"}", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Amz-Function-Error"), "Handled");
	j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "errorType")), "Function.Error");
	assert_non_null(strstr(json_string_value(json_object_get(j, "errorMessage")), "plain failure"));
	json_decref(j);
	resp_free(&r);
	/* A Lambda-style error document is passed through as the function wrote it. */
	assert_int_equal(lam_invoke(h, &k, "fn", "{\"m\": \"handled-json\"}", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Amz-Function-Error"), "Handled");
	j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "errorType")), "ValidationError");
	assert_string_equal(json_string_value(json_object_get(j, "errorMessage")), "bad input");
	json_decref(j);
	resp_free(&r);
	/* Crash and timeout: unhandled. */
	assert_int_equal(lam_invoke(h, &k, "fn", "{\"m\": \"crash\"}", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Amz-Function-Error"), "Unhandled");
	j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "errorType")), "Runtime.ExitError");
	json_decref(j);
	resp_free(&r);
	assert_int_equal(lam_invoke(h, &k, "fn", "{\"m\": \"timeout\"}", NULL, &r), 200);
	assert_string_equal(hdr(&r, "X-Amz-Function-Error"), "Unhandled");
	j = body_json(&r);
	assert_string_equal(json_string_value(json_object_get(j, "errorType")), "Sandbox.Timedout");
	json_decref(j);
	resp_free(&r);
	/* The VM is still usable. */
	assert_int_equal(lam_invoke(h, &k, "fn", "{}", NULL, &r), 200);
	assert_null(hdr(&r, "X-Amz-Function-Error"));
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static json_t *lam_json(struct hd *h, const struct awskey *k, const char *path)
{
	struct resp r;
	json_t *j;

	if (lam(h, k, NULL, "GET", path, NULL, 0, NULL, &r) != 200)
		fail_msg("GET %s: %ld %.*s", path, r.status, (int)r.len, r.body ?: "");
	assert_non_null(hdr(&r, "x-amzn-RequestId"));
	j = body_json(&r);
	resp_free(&r);
	assert_non_null(j);
	return j;
}

static void test_get_and_list_functions(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k);
	json_t *j, *c, *fns;
	const char *marker;
	char path[256];

	deploy(h, key, "fn", FN_DIR, "?memory_mb=512&timeout_ms=2500"); /* version 2 */
	deploy(h, key, "b-fn", FN_DIR, NULL);
	deploy(h, key, "c-fn", FN_DIR, NULL);
	j = lam_json(h, &k, "/2015-03-31/functions/fn");
	c = json_object_get(j, "Configuration");
	assert_string_equal(json_string_value(json_object_get(c, "FunctionName")), "fn");
	assert_string_equal(json_string_value(json_object_get(c, "FunctionArn")),
			    "arn:aws:lambda:us-east-1:000000000001:function:fn");
	assert_string_equal(json_string_value(json_object_get(c, "Version")), "$LATEST");
	assert_int_equal(json_integer_value(json_object_get(c, "MemorySize")), 512);
	assert_int_equal(json_integer_value(json_object_get(c, "Timeout")), 3);
	assert_int_equal(json_integer_value(json_object_get(c, "HearthVersion")), 2);
	assert_string_equal(json_string_value(json_object_get(c, "Runtime")), "provided");
	assert_non_null(strstr(json_string_value(json_object_get(c, "Handler")), "handler.sh"));
	assert_int_equal(strlen(json_string_value(json_object_get(c, "LastModified"))), 28);
	assert_int_equal(strlen(json_string_value(json_object_get(c, "CodeSha256"))), 44);
	assert_true(json_integer_value(json_object_get(c, "CodeSize")) > 0);
	assert_non_null(json_object_get(j, "Code"));
	json_decref(j);
	/* A qualified GetFunction describes that version. */
	j = lam_json(h, &k, "/2015-03-31/functions/fn?Qualifier=1");
	c = json_object_get(j, "Configuration");
	assert_string_equal(json_string_value(json_object_get(c, "Version")), "1");
	assert_int_equal(json_integer_value(json_object_get(c, "MemorySize")), 128);
	assert_string_equal(json_string_value(json_object_get(c, "FunctionArn")),
			    "arn:aws:lambda:us-east-1:000000000001:function:fn:1");
	json_decref(j);
	lam(h, &k, NULL, "GET", "/2015-03-31/functions/fn?Qualifier=7", NULL, 0, NULL, &r);
	expect_error(&r, 404, "ResourceNotFoundException", NULL);
	lam(h, &k, NULL, "GET", "/2015-03-31/functions/fn?Qualifier=prod", NULL, 0, NULL, &r);
	expect_error(&r, 404, "ResourceNotFoundException", "aliases");
	/* ListFunctions, two to a page, in name order. */
	j = lam_json(h, &k, "/2015-03-31/functions/?MaxItems=2");
	fns = json_object_get(j, "Functions");
	assert_int_equal(json_array_size(fns), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(fns, 0), "FunctionName")),
			    "b-fn");
	assert_string_equal(json_string_value(json_object_get(json_array_get(fns, 1), "FunctionName")),
			    "c-fn");
	marker = json_string_value(json_object_get(j, "NextMarker"));
	assert_non_null(marker);
	/* In sorted order: libcurl 7.88 signs the query as given. */
	snprintf(path, sizeof(path), "/2015-03-31/functions/?Marker=%s&MaxItems=2", marker);
	json_decref(j);
	j = lam_json(h, &k, path);
	fns = json_object_get(j, "Functions");
	assert_int_equal(json_array_size(fns), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(fns, 0), "FunctionName")),
			    "fn");
	assert_null(json_object_get(j, "NextMarker"));
	json_decref(j);
	j = lam_json(h, &k, "/2015-03-31/functions/");
	assert_int_equal(json_array_size(json_object_get(j, "Functions")), 3);
	json_decref(j);
	lam(h, &k, NULL, "GET", "/2015-03-31/functions/?MaxItems=0", NULL, 0, NULL, &r);
	expect_error(&r, 400, "InvalidParameterValueException", "MaxItems");
	lam(h, &k, NULL, "GET", "/2015-03-31/functions/?MaxItems=2x", NULL, 0, NULL, &r);
	expect_error(&r, 400, "InvalidParameterValueException", "MaxItems");
	lam(h, &k, NULL, "DELETE", "/2015-03-31/functions/fn", NULL, 0, NULL, &r);
	expect_error(&r, 404, "UnknownOperationException", NULL);
	free(key);
	hd_stop(h);
}

static void test_malformed_and_oversized(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k), req[2048], ans[8192], date[17];

	/* 7 MiB announced: refused at the header, before the body is read. */
	amz_now(date, 0);
	snprintf(req, sizeof(req),
		 "POST /2015-03-31/functions/fn/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		 "X-Amz-Date: %s\r\nAuthorization: AWS4-HMAC-SHA256 Credential=%s/%.8s/us-east-1/"
		 "lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=%064d\r\n"
		 "Content-Length: 7340032\r\n\r\n",
		 date, k.id, date, 0);
	raw(h, req, ans, sizeof(ans));
	assert_int_equal(strncmp(ans, "HTTP/1.1 413", 12), 0);
	assert_non_null(strcasestr(ans, "x-amzn-ErrorType: RequestTooLargeException"));
	assert_non_null(strstr(ans, "6291456 bytes"));
	/* Sent in full, signed, one byte over the limit. */
	{
		size_t n = (6u << 20) + 1;
		char *big = malloc(n);

		memset(big, ' ', n);
		big[0] = '"';
		big[n - 1] = '"';
		lam(h, &k, NULL, "POST", "/2015-03-31/functions/fn/invocations", big, n, NULL, &r);
		expect_error(&r, 413, "RequestTooLargeException", NULL);
		free(big);
	}
	/* Not JSON, and garbage in Authorization. */
	lam_invoke(h, &k, "fn", "{not json", NULL, &r);
	expect_error(&r, 400, "InvalidRequestContentException", "Could not parse request body");
	snprintf(req, sizeof(req),
		 "POST /2015-03-31/functions/fn/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		 "X-Amz-Date: %s\r\nAuthorization: AWS4-HMAC-SHA256 Credential=%s, Signature=x\r\n"
		 "Content-Length: 2\r\nConnection: close\r\n\r\n{}", date, k.id);
	raw(h, req, ans, sizeof(ans));
	assert_int_equal(strncmp(ans, "HTTP/1.1 400", 12), 0);
	assert_non_null(strcasestr(ans, "x-amzn-ErrorType: IncompleteSignatureException"));
	/* Two Authorization headers. */
	snprintf(req, sizeof(req),
		 "GET /2015-03-31/functions/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Date: %s\r\n"
		 "Authorization: AWS4-HMAC-SHA256 Credential=%s/%.8s/us-east-1/lambda/aws4_request,"
		 " SignedHeaders=host;x-amz-date, Signature=%064d\r\nAuthorization: x\r\n"
		 "Connection: close\r\n\r\n", date, k.id, date, 0);
	raw(h, req, ans, sizeof(ans));
	assert_int_equal(strncmp(ans, "HTTP/1.1 400", 12), 0);
	/* Bad names, an unknown route. */
	lam_invoke(h, &k, "bad.name", "{}", NULL, &r);
	expect_error(&r, 400, "InvalidParameterValueException", "functionName");
	signed_req(h, &k, date, "POST", "/2015-03-31/functions/a%3Ab%3Ac%3Ad%3Ae/invocations", NULL,
		   "{}", &r);
	expect_error(&r, 400, "InvalidParameterValueException", NULL);
	signed_req(h, &k, date, "POST", "/2015-03-31/functions/bad%20name/invocations", NULL, "{}",
		   &r);
	expect_error(&r, 400, "InvalidParameterValueException", "functionName");
	lam(h, &k, NULL, "POST", "/2015-03-31/functions/fn/invoke-async", "{}", 2, NULL, &r);
	expect_error(&r, 404, "UnknownOperationException", NULL);
	/* Refused before routing, still in Lambda's format: a NUL in the name, a path too long. */
	raw(h, "POST /2015-03-31/functions/a%00b/invocations HTTP/1.1\r\nHost: x\r\n"
	       "Content-Length: 2\r\nConnection: close\r\n\r\n{}", ans, sizeof(ans));
	assert_int_equal(strncmp(ans, "HTTP/1.1 400", 12), 0);
	assert_non_null(strcasestr(ans, "x-amzn-ErrorType: InvalidRequestContentException"));
	{
		char longp[700];

		memset(longp, 'a', sizeof(longp) - 1);
		longp[sizeof(longp) - 1] = 0;
		snprintf(req, sizeof(req), "GET /2015-03-31/functions/%s HTTP/1.1\r\nHost: x\r\n"
			 "Connection: close\r\n\r\n", longp);
		raw(h, req, ans, sizeof(ans));
		assert_int_equal(strncmp(ans, "HTTP/1.1 414", 12), 0);
		assert_non_null(strcasestr(ans, "x-amzn-ErrorType: InvalidRequestContentException"));
	}
	/* hearthd kept serving, both APIs. */
	hd_alive(h);
	assert_int_equal(lam_invoke(h, &k, "fn", "{}", NULL, &r), 200);
	resp_free(&r);
	assert_int_equal(invoke(h, key, "fn", "{}", NULL, &r), 200);
	resp_free(&r);
	free(key);
	hd_stop(h);
}

static void test_throttled_like_hearth(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k);
	const char *lim = "{\"rate_per_s\": 1, \"burst\": 1}";
	int ok = 0, throttled = 0;

	assert_int_equal(http(h, "PUT", "/v1/tenants/acme/limits", h->admin, NULL, lim, strlen(lim),
			      NULL, &r), 200);
	resp_free(&r);
	for (int i = 0; i < 3; i++) {
		lam_invoke(h, &k, "fn", "{}", NULL, &r);
		if (r.status == 200) {
			ok++;
			resp_free(&r);
			continue;
		}
		throttled++;
		assert_non_null(hdr(&r, "Retry-After"));
		{
			json_t *j = body_json(&r);

			assert_string_equal(json_string_value(json_object_get(j, "Reason")),
					    "CallerRateLimitExceeded");
			json_decref(j);
		}
		expect_error(&r, 429, "TooManyRequestsException", "RateLimitExceeded");
	}
	/* A bucket of one token: the first call passes, at least one of the next two does not. */
	assert_true(ok >= 1);
	assert_true(throttled >= 1);
	assert_int_equal(ok + throttled, 3);
	free(key);
	hd_stop(h);
}

/* The host key: 0600, 32 bytes; the database never holds a secret in clear; a loose mode is refused. */
static void test_host_key_at_rest(void **state)
{
	struct hd *h = *state;
	struct awskey k;
	struct resp r;
	char *key = start_acme(h, &k), path[256], cmd[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/state/aws-host.key", h->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 32);
	hd_stop(h);
	/* Neither the database (with its WAL) nor the log holds the secret. */
	snprintf(cmd, sizeof(cmd), "grep -rqF '%s' %s/state %s/hearthd.log", k.secret, h->dir, h->dir);
	assert_int_not_equal(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "grep -rqF '%s' %s/state", k.id, h->dir);
	assert_int_equal(system(cmd), 0); /* (the grep itself works) */
	/* After a restart the sealed secret opens again. */
	hd_start(h);
	assert_int_equal(lam_invoke(h, &k, "fn", "{}", NULL, &r), 200);
	resp_free(&r);
	hd_stop(h);
	/* A host key others may read is refused, with a reason in the log. */
	assert_int_equal(chmod(path, 0644), 0);
	hd_start(h);
	lam_invoke(h, &k, "fn", "{}", NULL, &r);
	expect_error(&r, 500, "ServiceException", NULL);
	snprintf(cmd, sizeof(cmd), "grep -q 'aws-host.key is readable by group or others' %s/hearthd.log",
		 h->dir);
	assert_int_equal(system(cmd), 0);
	hd_stop(h);
	free(key);
}

/* ---- awscli ------------------------------------------------------------------------------ */

/* Runs `aws ...` with the environment given; returns its exit status, output in out. */
static int aws(const char *env, const char *args, char *out, size_t cap)
{
	char cmd[2048];
	FILE *p;
	size_t n;
	int st;

	snprintf(cmd, sizeof(cmd),
		 "env -i PATH=/usr/bin:/bin HOME=/nonexistent AWS_EC2_METADATA_DISABLED=true "
		 "AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PAGER= %s "
		 AWS_BIN " %s 2>&1", env, args);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, cap - 1, p);
	out[n] = 0;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_awscli(void **state)
{
	struct hd *h = *state;
	char *key, env[512], badenv[512], args[1024], out[16384], outfile[128], cmd[512];
	char hctl[256];
	FILE *f;
	json_t *j;
	size_t n;

	if (access(AWS_BIN, X_OK) != 0) {
		fprintf(stderr, "SKIP: %s not installed (Debian package awscli; ci/setup installs it)\n",
			AWS_BIN);
		skip();
	}
	hd_start(h);
	key = tenant_create(h, "acme");
	deploy(h, key, "fn", FN_DIR, NULL);
	free(tenant_create(h, "bob"));
	/* The key pair comes from hearthctl, as a user gets it. */
	snprintf(hctl, sizeof(hctl), "%s --url %s --key @%s/state/admin.key", HEARTHCTL_BIN, h->base,
		 h->dir);
	snprintf(cmd, sizeof(cmd), "%s key create --aws acme", hctl);
	f = popen(cmd, "r");
	assert_non_null(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	assert_int_equal(pclose(f), 0);
	assert_non_null(strstr(out, "AWS_ACCESS_KEY_ID=HKIA"));
	assert_non_null(strstr(out, "AWS_DEFAULT_REGION=us-east-1"));
	for (char *p = out; (p = strchr(p, '\n'));)
		*p = ' ';
	assert_true(strlen(out) < sizeof(env));
	memcpy(env, out, strlen(out) + 1);
	snprintf(cmd, sizeof(cmd), "%s key create --aws bob", hctl);
	f = popen(cmd, "r");
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	assert_int_equal(pclose(f), 0);
	for (char *p = out; (p = strchr(p, '\n'));)
		*p = ' ';
	assert_true(strlen(out) < sizeof(badenv));
	memcpy(badenv, out, strlen(out) + 1);
	/* hearthctl lists the access key id, never the secret. */
	snprintf(cmd, sizeof(cmd), "%s key list acme", hctl);
	f = popen(cmd, "r");
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	assert_int_equal(pclose(f), 0);
	assert_non_null(strstr(out, "aws"));
	assert_null(strstr(out, "AWS_SECRET"));

	/* aws lambda invoke, with the log tail. */
	snprintf(outfile, sizeof(outfile), "%s/out.json", h->dir);
	snprintf(args, sizeof(args),
		 "--endpoint-url %s lambda invoke --function-name fn --cli-binary-format "
		 "raw-in-base64-out --payload '{\"from\": \"awscli\"}' --log-type Tail %s",
		 h->base, outfile);
	if (aws(env, args, out, sizeof(out)) != 0)
		fail_msg("aws lambda invoke failed: %s", out);
	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "StatusCode")), 200);
	assert_string_equal(json_string_value(json_object_get(j, "ExecutedVersion")), "$LATEST");
	{
		char *log = b64decode(json_string_value(json_object_get(j, "LogResult")), &n);

		assert_non_null(strstr(log, "lambdafn got "));
		free(log);
	}
	json_decref(j);
	f = fopen(outfile, "r");
	assert_non_null(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	fclose(f);
	assert_string_equal(out, "{\"echo\": {\"from\": \"awscli\"}}");
	/* By ARN with a version: botocore encodes the ':'s, and signs the path encoded twice. */
	snprintf(args, sizeof(args),
		 "--endpoint-url %s lambda invoke --function-name "
		 "arn:aws:lambda:us-east-1:000000000001:function:fn:1 %s", h->base, outfile);
	if (aws(env, args, out, sizeof(out)) != 0)
		fail_msg("aws lambda invoke by ARN failed: %s", out);
	assert_non_null(strstr(out, "\"ExecutedVersion\": \"1\""));
	/* A function error as awscli shows it. */
	snprintf(args, sizeof(args),
		 "--endpoint-url %s lambda invoke --function-name fn --cli-binary-format "
		 "raw-in-base64-out --payload '\"crash\"' %s", h->base, outfile);
	assert_int_equal(aws(env, args, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"FunctionError\": \"Unhandled\""));
	/* Event and DryRun. */
	snprintf(args, sizeof(args),
		 "--endpoint-url %s lambda invoke --function-name fn --invocation-type Event "
		 "--cli-binary-format raw-in-base64-out --payload '{}' %s", h->base, outfile);
	assert_int_equal(aws(env, args, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"StatusCode\": 202"));
	snprintf(args, sizeof(args),
		 "--endpoint-url %s lambda invoke --function-name fn --invocation-type DryRun %s",
		 h->base, outfile);
	assert_int_equal(aws(env, args, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"StatusCode\": 204"));
	/* get-function, list-functions. */
	snprintf(args, sizeof(args), "--endpoint-url %s lambda get-function --function-name fn",
		 h->base);
	assert_int_equal(aws(env, args, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"FunctionArn\": \"arn:aws:lambda:us-east-1:000000000001:function:fn\""));
	snprintf(args, sizeof(args), "--endpoint-url %s lambda list-functions", h->base);
	assert_int_equal(aws(env, args, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"FunctionName\": \"fn\""));
	/* Errors as the SDK reads them: bob's key, a missing function, a wrong secret. */
	snprintf(args, sizeof(args), "--endpoint-url %s lambda invoke --function-name fn %s",
		 h->base, outfile);
	assert_int_not_equal(aws(badenv, args, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "(ResourceNotFoundException)"));
	snprintf(args, sizeof(args), "--endpoint-url %s lambda invoke --function-name nosuch %s",
		 h->base, outfile);
	assert_int_not_equal(aws(env, args, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "(ResourceNotFoundException)"));
	{
		char wrong[600];
		char *s = strstr(env, "AWS_SECRET_ACCESS_KEY=");

		assert_non_null(s);
		snprintf(wrong, sizeof(wrong), "%s", env);
		s = wrong + (s - env) + strlen("AWS_SECRET_ACCESS_KEY=");
		*s = *s == 'A' ? 'B' : 'A';
		snprintf(args, sizeof(args), "--endpoint-url %s lambda invoke --function-name fn %s",
			 h->base, outfile);
		assert_int_not_equal(aws(wrong, args, out, sizeof(out)), 0);
		assert_non_null(strstr(out, "(InvalidSignatureException)"));
	}
	/* Four of those ran (invoke, by ARN, crash, event); the event may still be on its way. */
	for (int i = 0; i < 100 && count_invocations(h, key, "fn") < 4; i++)
		usleep(50000);
	assert_int_equal(count_invocations(h, key, "fn"), 4);
	/* hearthctl revokes the access key; awscli is then refused. */
	{
		char *id = strstr(env, "AWS_ACCESS_KEY_ID=") + strlen("AWS_ACCESS_KEY_ID=");

		snprintf(cmd, sizeof(cmd), "%s key delete acme %.20s", hctl, id);
		f = popen(cmd, "r");
		n = fread(out, 1, sizeof(out) - 1, f);
		out[n] = 0;
		assert_int_equal(pclose(f), 0);
		assert_non_null(strstr(out, "deleted key HKIA"));
	}
	snprintf(args, sizeof(args), "--endpoint-url %s lambda invoke --function-name fn %s",
		 h->base, outfile);
	assert_int_not_equal(aws(env, args, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "(UnrecognizedClientException)"));
	free(key);
	hd_stop(h);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_valid_signature, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_signature, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_date, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_tenants_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tail_logs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dry_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_function_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_and_list_functions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_and_oversized, setup, teardown),
		cmocka_unit_test_setup_teardown(test_throttled_like_hearth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_key_at_rest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_awscli, setup, teardown),
	};

	curl_global_init(CURL_GLOBAL_ALL);
	return HEARTH_RUN_TESTS("lambda", tests, argc, argv);
}
