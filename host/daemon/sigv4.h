/*
 * sigv4.h - AWS Signature Version 4 (request signing), the verifying side.
 *
 * Pure functions over strings, no I/O and no store: lambda_api.c gathers the
 * request's pieces, looks the access key up, and calls these. Hashing and
 * HMAC are OpenSSL's (EVP_Digest, HMAC with SHA-256).
 *
 * The algorithm (AWS's "Create a signed AWS API request"):
 *   canonical request = METHOD \n canonical URI \n canonical query \n
 *                       canonical headers (each "name:value\n") \n signed headers \n payload hash
 *   string to sign    = "AWS4-HMAC-SHA256" \n X-Amz-Date \n scope \n hex(SHA-256(canonical request))
 *   scope             = yyyymmdd/region/service/aws4_request
 *   signing key       = HMAC(HMAC(HMAC(HMAC("AWS4" secret, yyyymmdd), region), service), "aws4_request")
 *   signature         = hex(HMAC(signing key, string to sign))
 * The canonical URI is the path as the client sent it (already percent-
 * encoded once), percent-encoded again segment by segment, as every AWS
 * service but S3 signs it. The canonical query decodes each name and value,
 * re-encodes them strictly (only A-Z a-z 0-9 - _ . ~ stay) and sorts them.
 */
#ifndef HEARTH_DAEMON_SIGV4_H
#define HEARTH_DAEMON_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SIGV4_MAX_SKEW_S 300   /* X-Amz-Date within 5 minutes of the server's clock */

/* The parsed Authorization header value. */
struct sigv4_auth {
	char access_key[128];
	char date[9];              /* yyyymmdd of the credential scope */
	char region[64];
	char service[64];
	char signed_headers[1024]; /* "host;x-amz-date", lowercase, sorted, ';'-separated */
	char signature[65];        /* 64 lowercase hex digits */
};

/*
 * Parses "AWS4-HMAC-SHA256 Credential=AKID/yyyymmdd/region/service/aws4_request,
 * SignedHeaders=a;b, Signature=hex" (spaces after commas optional). Returns 0,
 * -ENOTSUP when the scheme is not AWS4-HMAC-SHA256, or -EINVAL with a reason
 * in why (why may be NULL).
 */
int sigv4_parse_authorization(const char *value, struct sigv4_auth *out, char *why, size_t whylen);

/* Parses an ISO 8601 basic timestamp "yyyymmddThhmmssZ" (UTC); -EINVAL if malformed. */
int sigv4_parse_date(const char *s, time_t *out);

/* One request header as received (name in any case, value untrimmed). */
struct sigv4_header {
	const char *name;
	const char *value;
};

struct sigv4_request {
	const char *method;
	const char *raw_path;      /* as sent: "/2015-03-31/functions/f%3A1/invocations" */
	const char *raw_query;     /* as sent, without '?'; NULL or "" for none */
	const struct sigv4_header *headers;
	size_t nheaders;
	const char *payload_hash;  /* lowercase hex SHA-256 of the body, or UNSIGNED-PAYLOAD */
	const char *amz_date;      /* the X-Amz-Date value */
};

/*
 * Builds the canonical request for the signed headers in auth (malloc'd, caller
 * frees). NULL with why filled when a signed header is missing from the request,
 * or on a malformed query or out of memory.
 */
char *sigv4_canonical_request(const struct sigv4_request *rq, const char *signed_headers,
			      char *why, size_t whylen);

/* The signing key for a secret and scope (32 bytes). Returns 0 or -EIO. */
int sigv4_signing_key(const char *secret, const char *date, const char *region,
		      const char *service, uint8_t key[32]);

/*
 * Computes the signature (64 hex digits + NUL) of rq as signed with secret under
 * the scope in auth. Returns 0, or -EINVAL with why filled.
 */
int sigv4_sign(const struct sigv4_request *rq, const struct sigv4_auth *auth, const char *secret,
	       char sig[65], char *why, size_t whylen);

/*
 * The whole check except the key lookup and the clock: recomputes the signature
 * and compares it with auth->signature in constant time (CRYPTO_memcmp).
 * Returns true when they match.
 */
bool sigv4_verify(const struct sigv4_request *rq, const struct sigv4_auth *auth,
		  const char *secret, char *why, size_t whylen);

/* Lowercase hex SHA-256 of len bytes (65 bytes with the NUL). Returns 0 or -EIO. */
int sigv4_sha256_hex(const void *data, size_t len, char out[65]);

#endif
