/*
 * runtime.h - HandlerMode RUNTIME: a long-lived Lambda custom runtime
 * (`bootstrap`) and the Lambda Runtime API it polls, served by the agent over
 * HTTP (libmicrohttpd) on 127.0.0.1:9001 in a VM.
 *
 * The agent owns the HTTP server for the life of the process (a VM's address
 * never changes) and one bootstrap process at a time:
 *
 *   rt_start()   starts the bootstrap (its own process group, stdin /dev/null,
 *                stdout and stderr into one log pipe) with AWS_LAMBDA_RUNTIME_API
 *                and the Lambda environment. Its first GET .../invocation/next
 *                ends init: hooks.ready(init_us). An exit, POST .../init/error or
 *                no /next within the init timeout is hooks.init_failed() and the
 *                runtime is left down.
 *   rt_invoke()  hands one invocation to the runtime (at most one at a time:
 *                rt_can_invoke()); a /next that is waiting gets it at once,
 *                otherwise the next /next does. The deadline runs from here.
 *
 * Every invocation given to rt_invoke() gets exactly one hooks.result(), decided
 * by the first of: POST .../{id}/response (OK, or RESPONSE_TOO_LARGE beyond
 * max_out), POST .../{id}/error (FUNCTION_ERROR, the posted body returned),
 * the deadline (TIMEOUT; the runtime is killed and started again), the runtime
 * exiting (FUNCTION_ERROR "Runtime.ExitError"; started again), a /next without
 * an answer (FUNCTION_ERROR "Runtime.NoResponse"), or a restart's init failing
 * (INIT_FAILED). After that its id is remembered for a while and any further
 * POST for it is 409 InvalidStateTransition; an id never handed out is 400
 * InvalidRequestID. Bodies are bounded (413 beyond), paths, methods and
 * headers checked; a buggy runtime gets 4xx and the agent keeps serving.
 * rt_forget() (the host went away) drops the invocation without a result but
 * leaves the runtime running, so a restored snapshot keeps its initialised
 * runtime waiting in /next.
 *
 * Not thread-safe: everything runs in the agent's poll loop (MHD in external
 * epoll mode, its callbacks inside rt_handle()).
 */
#ifndef HEARTH_AGENT_RUNTIME_H
#define HEARTH_AGENT_RUNTIME_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RT_DEFAULT_ADDR "127.0.0.1:9001"
#define RT_API_PREFIX "/2018-06-01/runtime"
#define RT_MAX_REQUEST_ID 128
#define RT_MAX_ERROR_TYPE 128
#define RT_MAX_CONNECTIONS 32
#define RT_RECENT_IDS 16

struct rt;

struct rt_result {
	uint64_t seq;
	const char *request_id;
	int status;                /* Hearth__InvokeStatus */
	const char *error;         /* "" when OK */
	const uint8_t *body;
	size_t body_len;
	const uint8_t *logs;
	size_t logs_len;
	bool logs_truncated;
	uint64_t duration_us;
	uint64_t max_rss_kb;
	int exit_code, signal;     /* Runtime.ExitError */
};

struct rt_hooks {
	void *ud;
	void (*ready)(void *ud, uint64_t init_us);
	void (*init_failed)(void *ud, const char *msg, const uint8_t *logs, size_t len);
	void (*result)(void *ud, const struct rt_result *r);
	void (*log)(void *ud, const char *msg);   /* verbose agent log, may be NULL */
};

struct rt_spec {
	const char *bootstrap;     /* absolute path */
	char *const *argv;         /* NULL-terminated, argv[0] included */
	char *const *envp;         /* the function's env; the Lambda variables are added */
	const char *workdir;
	size_t max_out;            /* response and error body limit */
	size_t max_log;
	uint32_t init_timeout_ms;
	const char *function_arn;  /* "" = built from AWS_REGION and AWS_LAMBDA_FUNCTION_NAME */
	uid_t uid;                 /* the bootstrap's uid/gid (0: unchanged; exec.h) */
	gid_t gid;
};

/* Starts the HTTP server on addr ("HOST:PORT", port 0 = any). Returns 0 or -errno. */
int rt_open(struct rt **out, const char *addr, const struct rt_hooks *hooks, char *err,
	    size_t errlen);
void rt_close(struct rt *rt);
/* The value of AWS_LAMBDA_RUNTIME_API ("127.0.0.1:9001"). */
const char *rt_address(const struct rt *rt);

/* (Re)starts the bootstrap under spec (copied); a running one is killed first. */
int rt_start(struct rt *rt, const struct rt_spec *spec, char *err, size_t errlen);
/* Kills the runtime, drops its invocation without a result, forgets the spec. */
void rt_stop(struct rt *rt);
bool rt_configured(const struct rt *rt);
/* True when a new invocation may be given (none is in progress). */
bool rt_can_invoke(const struct rt *rt);
/* True while an invocation is in progress or the first init runs. */
bool rt_busy(const struct rt *rt);
/* True until the first init after rt_start() is reported (ready or failed). */
bool rt_first_init(const struct rt *rt);
/* Takes ownership of request_id and payload (malloc'ed). */
void rt_invoke(struct rt *rt, uint64_t seq, char *request_id, uint8_t *payload, size_t len,
	       uint32_t timeout_ms);
/* The host is gone: the current invocation gets no result; the runtime stays. */
void rt_forget(struct rt *rt);

int rt_pollfds(const struct rt *rt, struct pollfd *p);   /* at most 2 */
void rt_handle(struct rt *rt, const struct pollfd *p, int n);
/* Enforces deadlines; returns ms until the next one, or -1. */
int rt_check(struct rt *rt);
/* A child was reaped; returns true if it was the runtime. */
bool rt_on_exit(struct rt *rt, pid_t pid, int wstatus);

/* Request ids the Runtime API can carry in a path: [A-Za-z0-9._-]{1,128}. */
bool rt_valid_request_id(const char *id);

#endif
