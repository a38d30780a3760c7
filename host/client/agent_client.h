/*
 * agent_client.h - host side of the hearth agent protocol.
 *
 * One struct agent_conn is one connection to one hearth-agent, over any
 * transport that yields a stream fd: a Unix socket (process engine, tests,
 * libvirt virtio-serial chardev), or hearth-vmm's hybrid vsock socket
 * ("CONNECT <port>\n" -> "OK <n>\n"). hearthd, the engines, the tests and the
 * benchmarks all use this library; there is no other copy of the host side.
 *
 * Calls are blocking with a timeout in milliseconds (-1 = no limit) and are
 * not thread-safe per connection. Every call returns AGENT_OK (0) or a
 * negative code: a frame_err (frame.h), MSG_EDECODE, or one of the AGENT_E*
 * below. After AGENT_EREMOTE, agent_last_error() has the agent's message and
 * agent_last_error_code() its hearth.ErrorCode.
 *
 * Call order on a new connection: agent_hello() first, then the others.
 */
#ifndef HEARTH_AGENT_CLIENT_H
#define HEARTH_AGENT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_OK 0
#define AGENT_EREMOTE (-30)  /* the agent answered with an Error message */
#define AGENT_EPROTO (-31)   /* unexpected reply (wrong type or seq) */
#define AGENT_ECONNECT (-32) /* could not connect (errno holds the cause) */

struct agent_conn;

const char *agent_strerror(int err);

/* Wraps an already connected stream fd; takes ownership of fd. */
struct agent_conn *agent_conn_from_fd(int fd);

/* Connects to a Unix stream socket, retrying until timeout_ms while it does not exist yet. */
int agent_connect_unix(const char *path, int timeout_ms, struct agent_conn **out);

/* Connects through a hybrid-vsock Unix socket (hearth-vmm / Firecracker style). */
int agent_connect_hybrid_vsock(const char *path, uint32_t port, int timeout_ms,
			       struct agent_conn **out);

void agent_close(struct agent_conn *c);
int agent_fd(const struct agent_conn *c);
/*
 * Between calls: false when the agent's end of the connection has closed
 * (its VM ended) or it sent something unasked. Costs one poll(2).
 */
bool agent_conn_alive(struct agent_conn *c);
const char *agent_last_error(const struct agent_conn *c);
int agent_last_error_code(const struct agent_conn *c);
/* Largest frame this side accepts (default FRAME_DEFAULT_MAX); set before agent_hello(). */
void agent_set_max_frame(struct agent_conn *c, size_t max);

/* Version handshake. *software (optional) gets a malloc'ed copy of the agent's name. */
int agent_hello(struct agent_conn *c, int timeout_ms, char **software);

struct agent_config {
	const char *handler;        /* absolute path */
	const char *const *args;    /* argv[1..], nargs entries */
	size_t nargs;
	const char *const *env;     /* "KEY=VALUE" strings, nenv entries */
	size_t nenv;
	const char *workdir;        /* NULL = "/" */
	uint32_t timeout_ms;        /* 0 = agent default (3000) */
	uint64_t max_response_bytes; /* 0 = agent default (6 MiB) */
	uint64_t max_log_bytes;     /* 0 = agent default (64 KiB) */
	const char *init;           /* optional init executable */
	uint32_t init_timeout_ms;   /* exec: the init step; runtime: bootstrap to its first /next */
	bool runtime;               /* HANDLER_RUNTIME: handler is a long-lived Lambda bootstrap */
	const char *function_arn;   /* runtime: Lambda-Runtime-Invoked-Function-Arn (NULL = agent's) */
};

/* Sends Configure and waits for Ready. *init_us (optional) gets the init step's duration. */
int agent_configure(struct agent_conn *c, const struct agent_config *cfg, int timeout_ms,
		    uint64_t *init_us);

/* Mirrors hearth.InvokeStatus. */
enum agent_invoke_status {
	AGENT_INVOKE_OK = 0,
	AGENT_INVOKE_FUNCTION_ERROR = 1,
	AGENT_INVOKE_CRASHED = 2,
	AGENT_INVOKE_TIMEOUT = 3,
	AGENT_INVOKE_RESPONSE_TOO_LARGE = 4,
	AGENT_INVOKE_SPAWN_FAILED = 5,
	AGENT_INVOKE_NOT_CONFIGURED = 6,
	AGENT_INVOKE_REJECTED = 7,
	AGENT_INVOKE_INIT_FAILED = 8,
};
const char *agent_invoke_status_name(int status);

struct agent_result {
	char *request_id;
	int status;             /* enum agent_invoke_status */
	int exit_code;
	int signal;
	uint8_t *body;
	size_t body_len;
	uint8_t *logs;
	size_t logs_len;
	bool logs_truncated;
	uint64_t duration_us;
	uint64_t max_rss_kb;
	char *error;            /* detail for non-OK statuses, or NULL */
};
void agent_result_free(struct agent_result *r);

/* Sends Invoke and waits for its InvokeResult. timeout_ms = handler timeout (0 = configured). */
int agent_invoke(struct agent_conn *c, const char *request_id, const void *payload, size_t len,
		 uint32_t timeout_ms, int wait_ms, struct agent_result *res);

/* Pipelining: send several invokes, then collect results in order. */
int agent_invoke_send(struct agent_conn *c, const char *request_id, const void *payload,
		      size_t len, uint32_t timeout_ms);
int agent_invoke_recv(struct agent_conn *c, int wait_ms, struct agent_result *res);

struct agent_pong {
	uint64_t uptime_us;
	uint32_t queued;
	bool busy;
};
int agent_ping(struct agent_conn *c, int timeout_ms, struct agent_pong *pong);

/* Mixes entropy into the guest kernel RNG; must be sent first after every snapshot restore. */
int agent_reseed(struct agent_conn *c, const void *entropy, size_t len, int timeout_ms);

/* Asks the agent to exit (process) or power off (PID 1). Waits for the Ack. */
int agent_shutdown(struct agent_conn *c, int timeout_ms);

/* Test hook: writes raw bytes to the connection (for malformed-input tests). */
int agent_send_raw(struct agent_conn *c, const void *buf, size_t len);

#endif
