/*
 * agent.h - hearth-agent's event loop: one host connection, one invocation at
 * a time, pipelined Invokes queued in arrival order.
 *
 * Concurrency decision: an Invoke that arrives while another runs is QUEUED
 * (up to AGENT_QUEUE_MAX invokes and AGENT_QUEUE_MAX_BYTES of payloads, one
 * always fits) and run after it, in order; beyond that it is refused with
 * Error{ERR_BUSY}. Every accepted Invoke ends in exactly one InvokeResult: one
 * too large for the host's frame limit becomes RESPONSE_TOO_LARGE without its
 * body, and one queued behind an init step that fails gets NOT_CONFIGURED.
 * A Configure is bounded (AGENT_CONFIGURE_MAX_*), and decoding any frame is
 * bounded in memory (msg.h). Ping is answered at once even mid-invocation.
 * When the host connection goes away, the running invocation is killed and
 * the queue is dropped: nobody is left to receive the results.
 */
#ifndef HEARTH_AGENT_AGENT_H
#define HEARTH_AGENT_AGENT_H

#include <stdbool.h>
#include <sys/types.h>
#include <stddef.h>

#include "transport.h"

#define AGENT_QUEUE_MAX 64
#define AGENT_QUEUE_MAX_BYTES (16u << 20)
#define AGENT_CONFIGURE_MAX_ARGS 4096
#define AGENT_CONFIGURE_MAX_ENV 4096
#define AGENT_CONFIGURE_MAX_BYTES (1u << 20)
#define AGENT_VERSION "hearth-agent 0.1.0"

struct agent_opts {
	struct transport transport;
	size_t max_frame;
	bool pid1;
	bool verbose;
	/* Runtime API address (HOST:PORT); NULL = 127.0.0.1:9001 as PID 1, else a free port. */
	const char *runtime_addr;
	/*
	 * The handler (and a runtime's bootstrap) runs as this uid/gid with no
	 * supplementary groups; 0 = as the agent. As PID 1 (in a VM) the default
	 * is HEARTH_HANDLER_UID: the function never runs as the guest's root.
	 */
	uid_t handler_uid;
	gid_t handler_gid;
};

#define HEARTH_HANDLER_UID 993u /* as Lambda's sandbox user */

/* Runs until Shutdown (or SIGTERM when not PID 1). Returns the exit status. */
int agent_run(const struct agent_opts *opts);

#endif
