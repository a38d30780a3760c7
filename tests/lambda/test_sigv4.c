/*
 * Unit tests for sigv4.c against published and independently produced vectors:
 * - AWS's documented signing-key derivation example (IAM, 20120215);
 * - AWS's documented IAM ListUsers request (canonical request hash and signature);
 * - the SigV4 test suite's get-vanilla request;
 * - a Lambda Invoke of an ARN with a query string, signed by botocore 1.43
 *   (double-encoded path, re-encoded and sorted query).
 * Then the ways a verifier must say no.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../cmocka_main.h"
#include "sigv4.h"

static const char secret[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
static const char empty_hash[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static void test_signing_key_aws_example(void **state)
{
	uint8_t k[32];
	char h[65];

	(void)state;
	assert_int_equal(sigv4_signing_key(secret, "20120215", "us-east-1", "iam", k), 0);
	hex(k, 32, h);
	assert_string_equal(h, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

static const struct sigv4_header iam_headers[] = {
	{ "Host", "iam.amazonaws.com" },
	{ "Content-Type", "application/x-www-form-urlencoded; charset=utf-8" },
	{ "X-Amz-Date", "20150830T123600Z" },
};

static const struct sigv4_request iam_req = {
	.method = "GET",
	.raw_path = "/",
	.raw_query = "Version=2010-05-08&Action=ListUsers", /* sorted by the signer */
	.headers = iam_headers,
	.nheaders = 3,
	.payload_hash = empty_hash,
	.amz_date = "20150830T123600Z",
};

static void iam_auth(struct sigv4_auth *a)
{
	char why[256];

	assert_int_equal(sigv4_parse_authorization(
				 "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/"
				 "aws4_request, SignedHeaders=content-type;host;x-amz-date, "
				 "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
				 a, why, sizeof(why)),
			 0);
}

static void test_iam_example(void **state)
{
	struct sigv4_auth a;
	char *creq, h[65], sig[65], why[256];

	(void)state;
	iam_auth(&a);
	assert_string_equal(a.access_key, "AKIDEXAMPLE");
	assert_string_equal(a.date, "20150830");
	assert_string_equal(a.region, "us-east-1");
	assert_string_equal(a.service, "iam");
	creq = sigv4_canonical_request(&iam_req, a.signed_headers, why, sizeof(why));
	assert_non_null(creq);
	assert_int_equal(sigv4_sha256_hex(creq, strlen(creq), h), 0);
	assert_string_equal(h, "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
	free(creq);
	assert_int_equal(sigv4_sign(&iam_req, &a, secret, sig, why, sizeof(why)), 0);
	assert_string_equal(sig, a.signature);
	assert_true(sigv4_verify(&iam_req, &a, secret, why, sizeof(why)));
}

static void test_get_vanilla(void **state)
{
	static const struct sigv4_header hs[] = {
		{ "Host", "example.amazonaws.com" },
		{ "X-Amz-Date", "20150830T123600Z" },
	};
	struct sigv4_request rq = {
		.method = "GET", .raw_path = "/", .raw_query = "", .headers = hs, .nheaders = 2,
		.payload_hash = empty_hash, .amz_date = "20150830T123600Z",
	};
	struct sigv4_auth a = { .date = "20150830", .region = "us-east-1", .service = "service",
				.signed_headers = "host;x-amz-date" };
	char sig[65];

	(void)state;
	assert_int_equal(sigv4_sign(&rq, &a, secret, sig, NULL, 0), 0);
	assert_string_equal(sig, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

/* botocore's SigV4Auth("lambda", "us-east-1") on an Invoke of an ARN with a query. */
static const struct sigv4_header boto_headers[] = {
	{ "X-Amz-Invocation-Type", "RequestResponse" },
	{ "Content-Type", "application/json" },
	{ "X-Amz-Date", "20261201T022947Z" },
	{ "Host", "127.0.0.1:7070" },
	{ "Content-Length", "7" },
};

static void boto_request(struct sigv4_request *rq, char body_hash[65])
{
	assert_int_equal(sigv4_sha256_hex("{\"a\":1}", 7, body_hash), 0);
	assert_string_equal(body_hash,
			    "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862");
	*rq = (struct sigv4_request){
		.method = "POST",
		.raw_path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000001"
			    "%3Afunction%3Ahello/invocations",
		.raw_query = "Qualifier=%24LATEST&b=a%20b",
		.headers = boto_headers,
		.nheaders = 5,
		.payload_hash = body_hash,
		.amz_date = "20261201T022947Z",
	};
}

static void boto_auth(struct sigv4_auth *a)
{
	assert_int_equal(sigv4_parse_authorization(
				 "AWS4-HMAC-SHA256 Credential=HKIAEXAMPLEEXAMPLE22/20261201/us-east-1/"
				 "lambda/aws4_request, SignedHeaders=content-type;host;x-amz-date;"
				 "x-amz-invocation-type, Signature=c8309ed32554615e51e8267d72f1fd9f9e5b"
				 "860b7da858c47be250df771b02b8",
				 a, NULL, 0),
			 0);
}

static void test_botocore_lambda_vector(void **state)
{
	struct sigv4_request rq;
	struct sigv4_auth a;
	char bh[65], why[256], *creq;

	(void)state;
	boto_request(&rq, bh);
	boto_auth(&a);
	creq = sigv4_canonical_request(&rq, a.signed_headers, why, sizeof(why));
	assert_non_null(creq);
	/* The path is encoded a second time, as every AWS service but S3 signs it. */
	assert_non_null(strstr(creq, "\n/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-east-1"));
	assert_non_null(strstr(creq, "\nQualifier=%24LATEST&b=a%20b\n"));
	free(creq);
	assert_true(sigv4_verify(&rq, &a, secret, why, sizeof(why)));
}

static void test_tampering_refused(void **state)
{
	struct sigv4_request rq, t;
	struct sigv4_auth a, b;
	struct sigv4_header hs[5];
	char bh[65], other[65], why[256];

	(void)state;
	boto_request(&rq, bh);
	boto_auth(&a);
	/* Another body. */
	t = rq;
	assert_int_equal(sigv4_sha256_hex("{\"a\":2}", 7, other), 0);
	t.payload_hash = other;
	assert_false(sigv4_verify(&t, &a, secret, why, sizeof(why)));
	assert_non_null(strstr(why, "does not match"));
	/* UNSIGNED-PAYLOAD in place of the hash the client signed. */
	t = rq;
	t.payload_hash = SIGV4_UNSIGNED_PAYLOAD;
	assert_false(sigv4_verify(&t, &a, secret, NULL, 0));
	/* Another method, path, query, signed header value, date. */
	t = rq;
	t.method = "PUT";
	assert_false(sigv4_verify(&t, &a, secret, NULL, 0));
	t = rq;
	t.raw_path = "/2015-03-31/functions/hello/invocations";
	assert_false(sigv4_verify(&t, &a, secret, NULL, 0));
	t = rq;
	t.raw_query = "Qualifier=1";
	assert_false(sigv4_verify(&t, &a, secret, NULL, 0));
	memcpy(hs, boto_headers, sizeof(hs));
	hs[0].value = "Event";
	t = rq;
	t.headers = hs;
	assert_false(sigv4_verify(&t, &a, secret, NULL, 0));
	t = rq;
	t.amz_date = "20261201T022948Z";
	assert_false(sigv4_verify(&t, &a, secret, NULL, 0));
	/* Another secret, region, one flipped signature digit. */
	assert_false(sigv4_verify(&rq, &a, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEz", NULL, 0));
	b = a;
	strcpy(b.region, "eu-west-1");
	assert_false(sigv4_verify(&rq, &b, secret, NULL, 0));
	b = a;
	b.signature[63] = b.signature[63] == '8' ? '9' : '8';
	assert_false(sigv4_verify(&rq, &b, secret, NULL, 0));
	/* An unsigned header may change: it is not covered. */
	memcpy(hs, boto_headers, sizeof(hs));
	hs[4].value = "8";
	t = rq;
	t.headers = hs;
	assert_true(sigv4_verify(&t, &a, secret, NULL, 0));
	/* Hex digits of the given signature in upper case are the same signature. */
	b = a;
	for (int i = 0; i < 64; i++)
		if (b.signature[i] >= 'a')
			b.signature[i] = (char)(b.signature[i] - 32);
	assert_true(sigv4_verify(&rq, &b, secret, NULL, 0));
}

static void test_signed_header_missing(void **state)
{
	struct sigv4_request rq;
	struct sigv4_auth a;
	char bh[65], why[256];

	(void)state;
	boto_request(&rq, bh);
	boto_auth(&a);
	rq.nheaders = 3; /* Host and Content-Length gone */
	assert_false(sigv4_verify(&rq, &a, secret, why, sizeof(why)));
	assert_non_null(strstr(why, "'host' is not in the request"));
	/* The host header must be signed at all. */
	boto_request(&rq, bh);
	strcpy(a.signed_headers, "content-type;x-amz-date");
	assert_false(sigv4_verify(&rq, &a, secret, why, sizeof(why)));
	assert_non_null(strstr(why, "host header must be signed"));
}

static void test_parse_authorization(void **state)
{
	static const char *const bad[] = {
		"Bearer hk_0123",
		"AWS4-HMAC-SHA256",
		"AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/iam/aws4_request, SignedHeaders=host",
		"AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/iam, SignedHeaders=host, Signature="
		"5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
		"AWS4-HMAC-SHA256 Credential=AK/2015083/us-east-1/iam/aws4_request, SignedHeaders=host, "
		"Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
		"AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/iam/aws4_request/x, SignedHeaders=host,"
		" Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
		"AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/iam/aws4_request, SignedHeaders=host, "
		"Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d",
		"AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/iam/aws4_request, SignedHeaders=host, "
		"Signature=zz672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
		"AWS4-HMAC-SHA256 Credential=AK/2015x830/us-east-1/iam/aws4_request, SignedHeaders=host, "
		"Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
	};
	struct sigv4_auth a;
	char why[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = 0;
		assert_int_not_equal(sigv4_parse_authorization(bad[i], &a, why, sizeof(why)), 0);
		assert_true(why[0] != 0);
	}
	assert_int_equal(sigv4_parse_authorization(NULL, &a, NULL, 0), -ENOTSUP);
	/* No spaces after the commas is fine too. */
	assert_int_equal(sigv4_parse_authorization(
				 "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/iam/aws4_request,"
				 "SignedHeaders=host;x-amz-date,Signature=5d672d79c15b13162d9279b0855cf"
				 "ba6789a8edb4c82c400e06b5924a6f2b5d7", &a, why, sizeof(why)),
			 0);
	assert_string_equal(a.signed_headers, "host;x-amz-date");
}

static void test_query_encoding(void **state)
{
	static const struct sigv4_header hs[] = { { "host", "h" } };
	struct sigv4_request rq = { .method = "GET", .raw_path = "/a b/~x", .headers = hs,
				    .nheaders = 1, .payload_hash = empty_hash };
	char *c;

	(void)state;
	/* Decoded and strictly re-encoded, sorted by name then value; '+' is not a space. */
	rq.raw_query = "b=2&a=%7e&a=1&c&d=x+y&e=%2a";
	c = sigv4_canonical_request(&rq, "host", NULL, 0);
	assert_non_null(c);
	assert_string_equal(c, "GET\n/a%20b/~x\na=1&a=~&b=2&c=&d=x%2By&e=%2A\nhost:h\n\nhost\n"
			       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	free(c);
	rq.raw_query = "a=%zz";
	assert_null(sigv4_canonical_request(&rq, "host", NULL, 0));
	rq.raw_query = "a=%4";
	assert_null(sigv4_canonical_request(&rq, "host", NULL, 0));
}

static void test_header_values_trimmed_and_joined(void **state)
{
	static const struct sigv4_header hs[] = {
		{ "Host", "h" }, { "X-A", "  one   two  " }, { "x-a", "three" },
	};
	struct sigv4_request rq = { .method = "GET", .raw_path = "/", .raw_query = "", .headers = hs,
				    .nheaders = 3, .payload_hash = empty_hash };
	char *c;

	(void)state;
	c = sigv4_canonical_request(&rq, "host;x-a", NULL, 0);
	assert_non_null(c);
	assert_non_null(strstr(c, "\nhost:h\nx-a:one two,three\n\nhost;x-a\n"));
	free(c);
	/* SignedHeaders in upper case is not what a signer sends. */
	assert_null(sigv4_canonical_request(&rq, "Host;x-a", NULL, 0));
}

static void test_parse_date(void **state)
{
	time_t t;

	(void)state;
	assert_int_equal(sigv4_parse_date("20150830T123600Z", &t), 0);
	assert_int_equal((long long)t, 1440938160LL);
	assert_int_equal(sigv4_parse_date("20150830T123600", &t), -EINVAL);
	assert_int_equal(sigv4_parse_date("2015-08-30T12:36:00Z", &t), -EINVAL);
	assert_int_equal(sigv4_parse_date("20151330T123600Z", &t), -EINVAL);
	assert_int_equal(sigv4_parse_date("20150830T253600Z", &t), -EINVAL);
	assert_int_equal(sigv4_parse_date("2015083OT123600Z", &t), -EINVAL);
	assert_int_equal(sigv4_parse_date(NULL, &t), -EINVAL);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signing_key_aws_example),
		cmocka_unit_test(test_iam_example),
		cmocka_unit_test(test_get_vanilla),
		cmocka_unit_test(test_botocore_lambda_vector),
		cmocka_unit_test(test_tampering_refused),
		cmocka_unit_test(test_signed_header_missing),
		cmocka_unit_test(test_parse_authorization),
		cmocka_unit_test(test_query_encoding),
		cmocka_unit_test(test_header_values_trimmed_and_joined),
		cmocka_unit_test(test_parse_date),
	};

	return HEARTH_RUN_TESTS("sigv4", tests, argc, argv);
}
