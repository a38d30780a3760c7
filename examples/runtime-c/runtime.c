/*
 * A Lambda custom runtime in C: the package's `bootstrap`. Started once per
 * VM; it initialises (here: counts nothing yet), then loops on the Runtime
 * API: take the next event, answer it. Its handler upper-cases the event and
 * says how many events this process has served, so warm state is visible.
 *
 * Build it static (the guest has no libc of its own):
 *   cc -O2 -static -o bootstrap runtime.c lambda_http.c
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lambda_http.h"

int main(void)
{
	const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
	unsigned long served = 0;

	if (!api) {
		fprintf(stderr, "AWS_LAMBDA_RUNTIME_API is not set\n");
		return 1;
	}
	fprintf(stderr, "c runtime: pid %d, handler '%s', api %s\n", (int)getpid(),
		getenv("_HANDLER") ? getenv("_HANDLER") : "", api);
	for (;;) {
		struct lh_resp ev;
		char *out;
		size_t n;

		if (lh_next(api, &ev) != 200) {
			free(ev.body);
			sleep(1); /* the agent restarts us if we die; a failed poll is retried */
			continue;
		}
		served++;
		n = ev.len + 64;
		out = malloc(n);
		if (!out) {
			lh_error(api, ev.request_id, "Runtime.OutOfMemory", "no memory");
			free(ev.body);
			continue;
		}
		for (size_t i = 0; i < ev.len; i++)
			ev.body[i] = (char)toupper((unsigned char)ev.body[i]);
		n = (size_t)snprintf(out, n, "%s (event %lu of pid %d)", ev.body, served,
				     (int)getpid());
		fprintf(stderr, "c runtime: %s\n", ev.request_id);
		lh_respond(api, ev.request_id, out, n);
		free(out);
		free(ev.body);
	}
}
