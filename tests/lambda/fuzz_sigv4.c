/*
 * libFuzzer target: sigv4.c's parsers and canonical request builder on hostile
 * input. The input is split at NUL bytes into an Authorization value, an
 * X-Amz-Date, a raw path, a raw query and header name/value pairs; everything
 * is verified against a fixed secret. Nothing may crash, leak or read out of
 * bounds, and a verify must never succeed with a made-up signature (it would
 * need an HMAC-SHA256 collision).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sigv4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), *parts[16];
	struct sigv4_header hs[6];
	struct sigv4_auth a;
	size_t n = 0, nh = 0;
	time_t t;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = 0;
	for (char *p = buf; n < 16;) {
		parts[n++] = p;
		p += strlen(p);
		if (p >= buf + size)
			break;
		p++;
	}
	while (n < 5)
		parts[n++] = "";
	sigv4_parse_date(parts[1], &t);
	if (sigv4_parse_authorization(parts[0], &a, NULL, 0) == 0) {
		for (size_t i = 5; i + 1 < n && nh < 6; i += 2)
			hs[nh++] = (struct sigv4_header){ parts[i], parts[i + 1] };
		struct sigv4_request rq = {
			.method = "POST", .raw_path = parts[2], .raw_query = parts[3], .headers = hs,
			.nheaders = nh, .payload_hash = parts[4], .amz_date = parts[1],
		};
		char why[256];

		if (sigv4_verify(&rq, &a, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", why, sizeof(why)))
			abort();
		free(sigv4_canonical_request(&rq, a.signed_headers, why, sizeof(why)));
	}
	free(buf);
	return 0;
}
