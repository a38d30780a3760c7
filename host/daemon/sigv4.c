/*
 * sigv4.c - AWS Signature Version 4 verification; see sigv4.h.
 */
#include "sigv4.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static void say(char *why, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t n, const char *fmt, ...)
{
	va_list ap;

	if (!why || !n)
		return;
	va_start(ap, fmt);
	vsnprintf(why, n, fmt, ap);
	va_end(ap);
}

/* A growing string; on allocation failure it goes to the error state and stays there. */
struct sb {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);

		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void sb_str(struct sb *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static bool unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

/* Percent-encodes n bytes the way SigV4 wants it (uppercase hex); keeps '/' if keep_slash. */
static void sb_encode(struct sb *b, const char *s, size_t n, bool keep_slash)
{
	static const char hx[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (unreserved(c) || (keep_slash && c == '/')) {
			sb_add(b, (const char *)&c, 1);
		} else {
			char e[3] = { '%', hx[c >> 4], hx[c & 15] };

			sb_add(b, e, 3);
		}
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes %XX escapes of s[0..n) into out (at least n+1 bytes); returns the length or -1. */
static long pct_decode(const char *s, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi, lo;

			if (i + 2 >= n)
				return -1;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = 0;
	return (long)o;
}

int sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hx[] = "0123456789abcdef";
	uint8_t md[32];
	unsigned int n = sizeof(md);

	if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1)
		return -EIO;
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hx[md[i] >> 4];
		out[2 * i + 1] = hx[md[i] & 15];
	}
	out[64] = 0;
	return 0;
}

/* ---- Authorization and X-Amz-Date ------------------------------------------------ */

/* Copies the value of "name=" from a comma-separated list into out; -1 if absent or too long. */
static int auth_field(const char *list, const char *name, char *out, size_t outlen)
{
	size_t nl = strlen(name);
	const char *p = list;

	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		while (len > 0 && p[len - 1] == ' ')
			len--;
		if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			if (len - nl - 1 >= outlen)
				return -1;
			memcpy(out, p + nl + 1, len - nl - 1);
			out[len - nl - 1] = 0;
			return 0;
		}
		if (!end)
			break;
		p = end + 1;
	}
	return -1;
}

int sigv4_parse_authorization(const char *value, struct sigv4_auth *out, char *why, size_t whylen)
{
	char cred[512], *parts[5], *save = NULL;
	int n = 0;
	size_t al = strlen(SIGV4_ALGORITHM);

	memset(out, 0, sizeof(*out));
	if (!value || strncmp(value, SIGV4_ALGORITHM, al) != 0 || value[al] != ' ') {
		say(why, whylen, "Authorization must use " SIGV4_ALGORITHM);
		return -ENOTSUP;
	}
	value += al + 1;
	if (auth_field(value, "Credential", cred, sizeof(cred)) ||
	    auth_field(value, "SignedHeaders", out->signed_headers, sizeof(out->signed_headers)) ||
	    auth_field(value, "Signature", out->signature, sizeof(out->signature))) {
		say(why, whylen, "Authorization header requires 'Credential', 'SignedHeaders' and"
			       " 'Signature' parameters");
		return -EINVAL;
	}
	for (char *t = strtok_r(cred, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
		if (n == 5) {
			n = 6;
			break;
		}
		parts[n++] = t;
	}
	if (n != 5 || strcmp(parts[4], "aws4_request") != 0 || strlen(parts[1]) != 8 ||
	    strlen(parts[0]) >= sizeof(out->access_key) || strlen(parts[2]) >= sizeof(out->region) ||
	    strlen(parts[3]) >= sizeof(out->service)) {
		say(why, whylen, "Credential must be ACCESS_KEY/yyyymmdd/region/service/aws4_request");
		return -EINVAL;
	}
	for (int i = 0; i < 8; i++)
		if (!isdigit((unsigned char)parts[1][i])) {
			say(why, whylen, "the credential scope's date must be yyyymmdd");
			return -EINVAL;
		}
	snprintf(out->access_key, sizeof(out->access_key), "%s", parts[0]);
	memcpy(out->date, parts[1], 9);
	snprintf(out->region, sizeof(out->region), "%s", parts[2]);
	snprintf(out->service, sizeof(out->service), "%s", parts[3]);
	if (strlen(out->signature) != 64) {
		say(why, whylen, "Signature must be 64 hex digits");
		return -EINVAL;
	}
	for (int i = 0; i < 64; i++)
		if (hexval(out->signature[i]) < 0) {
			say(why, whylen, "Signature must be 64 hex digits");
			return -EINVAL;
		}
	return 0;
}

int sigv4_parse_date(const char *s, time_t *out)
{
	struct tm tm = { 0 };

	if (!s || strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
		return -EINVAL;
	for (int i = 0; i < 15; i++)
		if (i != 8 && !isdigit((unsigned char)s[i]))
			return -EINVAL;
	if (sscanf(s, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
		   &tm.tm_min, &tm.tm_sec) != 6)
		return -EINVAL;
	if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return -EINVAL;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	*out = timegm(&tm);
	return 0;
}

/* ---- canonical request -------------------------------------------------------------- */

struct qparam {
	char *name, *value; /* already re-encoded */
};

static int qparam_cmp(const void *a, const void *b)
{
	const struct qparam *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

static char *encoded(const char *s, size_t n, bool *bad)
{
	char *dec = malloc(n + 1);
	struct sb b = { 0 };
	long dl;

	if (!dec)
		return NULL;
	dl = pct_decode(s, n, dec);
	if (dl < 0) {
		*bad = true;
		free(dec);
		return NULL;
	}
	sb_encode(&b, dec, (size_t)dl, false);
	sb_add(&b, "", 0);
	free(dec);
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

static int canonical_query(struct sb *out, const char *q, char *why, size_t whylen)
{
	struct qparam *ps = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	for (const char *p = q; p && *p;) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);

		if (len > 0) {
			const char *eq = memchr(p, '=', len);
			size_t nl = eq ? (size_t)(eq - p) : len;
			bool bad = false;
			struct qparam qp;

			if (n == cap) {
				struct qparam *np = realloc(ps, (cap = cap ? cap * 2 : 8) * sizeof(*ps));

				if (!np) {
					rc = -ENOMEM;
					break;
				}
				ps = np;
			}
			qp.name = encoded(p, nl, &bad);
			qp.value = eq ? encoded(eq + 1, len - nl - 1, &bad) : strdup("");
			if (!qp.name || !qp.value) {
				free(qp.name);
				free(qp.value);
				rc = bad ? -EINVAL : -ENOMEM;
				if (bad)
					say(why, whylen, "the query string holds a malformed %%-escape");
				break;
			}
			ps[n++] = qp;
		}
		if (!amp)
			break;
		p = amp + 1;
	}
	if (rc == 0) {
		if (n) /* qsort wants a non-NULL base even for nothing */
			qsort(ps, n, sizeof(*ps), qparam_cmp);
		for (size_t i = 0; i < n; i++) {
			if (i)
				sb_str(out, "&");
			sb_str(out, ps[i].name);
			sb_str(out, "=");
			sb_str(out, ps[i].value);
		}
	}
	for (size_t i = 0; i < n; i++) {
		free(ps[i].name);
		free(ps[i].value);
	}
	free(ps);
	return rc;
}

/* Appends a header value trimmed, with runs of spaces and tabs collapsed to one space. */
static void sb_trimmed(struct sb *b, const char *v)
{
	bool space = false, any = false;

	for (; *v; v++) {
		if (*v == ' ' || *v == '\t') {
			space = any;
			continue;
		}
		if (space)
			sb_add(b, " ", 1);
		space = false;
		any = true;
		sb_add(b, v, 1);
	}
}

static int canonical_headers(struct sb *out, const struct sigv4_request *rq, const char *signed_h,
			     char *why, size_t whylen)
{
	const char *p = signed_h;
	bool host = false;

	if (!*p) {
		say(why, whylen, "SignedHeaders is empty");
		return -EINVAL;
	}
	while (*p) {
		const char *semi = strchr(p, ';');
		size_t len = semi ? (size_t)(semi - p) : strlen(p);
		int found = 0;

		if (len == 0 || len > 256) {
			say(why, whylen, "SignedHeaders is malformed");
			return -EINVAL;
		}
		for (size_t i = 0; i < len; i++)
			if (isupper((unsigned char)p[i])) {
				say(why, whylen, "SignedHeaders must be lowercase");
				return -EINVAL;
			}
		if (len == 4 && strncmp(p, "host", 4) == 0)
			host = true;
		sb_add(out, p, len);
		sb_add(out, ":", 1);
		for (size_t i = 0; i < rq->nheaders; i++) {
			const struct sigv4_header *h = &rq->headers[i];

			if (strlen(h->name) != len || strncasecmp(h->name, p, len) != 0)
				continue;
			if (found++)
				sb_add(out, ",", 1);
			sb_trimmed(out, h->value ? h->value : "");
		}
		if (!found) {
			say(why, whylen, "the signed header '%.*s' is not in the request", (int)len, p);
			return -EINVAL;
		}
		sb_add(out, "\n", 1);
		if (!semi)
			break;
		p = semi + 1;
	}
	if (!host) {
		say(why, whylen, "the host header must be signed");
		return -EINVAL;
	}
	return 0;
}

char *sigv4_canonical_request(const struct sigv4_request *rq, const char *signed_headers,
			      char *why, size_t whylen)
{
	struct sb b = { 0 };
	const char *path = rq->raw_path && *rq->raw_path ? rq->raw_path : "/";

	sb_str(&b, rq->method);
	sb_str(&b, "\n");
	sb_encode(&b, path, strlen(path), true);
	sb_str(&b, "\n");
	if (canonical_query(&b, rq->raw_query, why, whylen))
		goto fail;
	sb_str(&b, "\n");
	if (canonical_headers(&b, rq, signed_headers, why, whylen))
		goto fail;
	sb_str(&b, "\n");
	sb_str(&b, signed_headers);
	sb_str(&b, "\n");
	sb_str(&b, rq->payload_hash);
	if (b.oom) {
		say(why, whylen, "out of memory");
		goto fail;
	}
	return b.p;
fail:
	free(b.p);
	return NULL;
}

/* ---- keys and signatures --------------------------------------------------------------- */

static int hmac(const void *key, size_t klen, const char *msg, uint8_t out[32])
{
	unsigned int n = 32;

	return HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &n) ?
		       0 : -EIO;
}

int sigv4_signing_key(const char *secret, const char *date, const char *region,
		      const char *service, uint8_t key[32])
{
	size_t sl = strlen(secret);
	char *k = malloc(sl + 5);
	uint8_t a[32], b[32];
	int rc;

	if (!k)
		return -ENOMEM;
	memcpy(k, "AWS4", 4);
	memcpy(k + 4, secret, sl + 1);
	rc = hmac(k, sl + 4, date, a);
	if (!rc)
		rc = hmac(a, 32, region, b);
	if (!rc)
		rc = hmac(b, 32, service, a);
	if (!rc)
		rc = hmac(a, 32, "aws4_request", key);
	OPENSSL_cleanse(k, sl + 4);
	OPENSSL_cleanse(a, sizeof(a));
	OPENSSL_cleanse(b, sizeof(b));
	free(k);
	return rc;
}

int sigv4_sign(const struct sigv4_request *rq, const struct sigv4_auth *auth, const char *secret,
	       char sig[65], char *why, size_t whylen)
{
	static const char hx[] = "0123456789abcdef";
	char *creq = sigv4_canonical_request(rq, auth->signed_headers, why, whylen);
	char chash[65], sts[512];
	uint8_t key[32], mac[32];
	int rc;

	if (!creq)
		return -EINVAL;
	rc = sigv4_sha256_hex(creq, strlen(creq), chash);
	free(creq);
	if (rc)
		return rc;
	snprintf(sts, sizeof(sts), SIGV4_ALGORITHM "\n%s\n%s/%s/%s/aws4_request\n%s",
		 rq->amz_date ? rq->amz_date : "", auth->date, auth->region, auth->service, chash);
	rc = sigv4_signing_key(secret, auth->date, auth->region, auth->service, key);
	if (!rc)
		rc = hmac(key, 32, sts, mac);
	OPENSSL_cleanse(key, sizeof(key));
	if (rc)
		return rc;
	for (int i = 0; i < 32; i++) {
		sig[2 * i] = hx[mac[i] >> 4];
		sig[2 * i + 1] = hx[mac[i] & 15];
	}
	sig[64] = 0;
	return 0;
}

bool sigv4_verify(const struct sigv4_request *rq, const struct sigv4_auth *auth,
		  const char *secret, char *why, size_t whylen)
{
	char sig[65], given[65];

	if (sigv4_sign(rq, auth, secret, sig, why, whylen))
		return false;
	/* Hex digits compare case-insensitively; lower the given one first, then compare in constant time. */
	for (int i = 0; i < 64; i++)
		given[i] = (char)tolower((unsigned char)auth->signature[i]);
	given[64] = 0;
	if (CRYPTO_memcmp(sig, given, 64) != 0) {
		say(why, whylen, "The request signature we calculated does not match the signature"
			       " you provided. Check your AWS Secret Access Key and signing method."
			       " Consult the service documentation for details.");
		return false;
	}
	return true;
}
