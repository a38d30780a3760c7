/*
 * bench_rt_noop: the no-op custom runtime of ci/bench invoke (runtime mode):
 * takes each event from the Runtime API and answers "{}" at once, over one
 * kept-alive connection (examples/runtime-c/lambda_http.c). Static: it runs
 * chrooted in the function image on the process engine.
 */
#include <stdlib.h>
#include <unistd.h>

#include "lambda_http.h"

int main(void)
{
	const char *api = getenv("AWS_LAMBDA_RUNTIME_API");

	if (!api)
		return 1;
	for (;;) {
		struct lh_resp ev;

		if (lh_next(api, &ev) == 200)
			lh_respond(api, ev.request_id, "{}", 2);
		else
			usleep(10000);
		free(ev.body);
	}
}
