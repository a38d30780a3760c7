/* echo_client.c - see echo_client.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "agent_client.h"
#include "echo_client.h"

#define T_MS 20000

/* Hello, Ping and several Invokes through the client library. */
void echo_session(const char *sock, const char *tag, int n_invokes)
{
	struct agent_conn *c = NULL;
	int rc = agent_connect_hybrid_vsock(sock, 52, T_MS, &c);
	if (rc)
		fprintf(stderr, "connect: %s\n", agent_strerror(rc));
	assert_int_equal(rc, AGENT_OK);
	char *sw = NULL;
	rc = agent_hello(c, T_MS, &sw);
	if (rc)
		fprintf(stderr, "%s: hello: %s\n", tag, agent_strerror(rc));
	assert_int_equal(rc, AGENT_OK);
	assert_string_equal(sw, "hearth-test-guest vsock_echo");
	free(sw);
	struct agent_pong pong;
	rc = agent_ping(c, T_MS, &pong);
	if (rc)
		fprintf(stderr, "%s: ping: %s\n", tag, agent_strerror(rc));
	assert_int_equal(rc, AGENT_OK);
	assert_true(pong.uptime_us > 0);
	for (int i = 0; i < n_invokes; i++) {
		char payload[600], id[32];
		int n = snprintf(payload, sizeof(payload), "%s payload %d ", tag, i);
		/* Make some payloads span several vsock packets' worth of framing. */
		while (i == 1 && n < (int)sizeof(payload) - 1) {
			payload[n] = (char)('a' + n % 26);
			n++;
		}
		snprintf(id, sizeof(id), "%s-%d", tag, i);
		struct agent_result res;
		memset(&res, 0, sizeof(res));
		rc = agent_invoke(c, id, payload, (size_t)n, 0, T_MS, &res);
		if (rc)
			fprintf(stderr, "%s: invoke %d: %s\n", tag, i, agent_strerror(rc));
		assert_int_equal(rc, AGENT_OK);
		assert_int_equal(res.status, AGENT_INVOKE_OK);
		assert_string_equal(res.request_id, id);
		assert_int_equal(res.body_len, (size_t)n);
		assert_memory_equal(res.body, payload, (size_t)n);
		agent_result_free(&res);
	}
	agent_close(c);
}

