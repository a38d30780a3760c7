/*
 * agent.h - hearth-agent's event loop: one host connection, one invocation at
 * a time, pipelined Invokes queued in arrival order.
 *
 * Concurrency decision: an Invoke that arrives while another runs is QUEUED
 * (up to AGENT_QUEUE_MAX) and run after it, in order; beyond that it is
 * refused with Error{ERR_BUSY}. Ping is answered at once even mid-invocation.
 * When the host connection goes away, the running invocation is killed and
 * the queue is dropped: nobody is left to receive the results.
 */
#ifndef HEARTH_AGENT_AGENT_H
#define HEARTH_AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>

#include "transport.h"

#define AGENT_QUEUE_MAX 64
#define AGENT_VERSION "hearth-agent 0.1.0"

struct agent_opts {
	struct transport transport;
	size_t max_frame;
	bool pid1;
	bool verbose;
};

/* Runs until Shutdown (or SIGTERM when not PID 1). Returns the exit status. */
int agent_run(const struct agent_opts *opts);

#endif
