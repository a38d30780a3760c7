/*
 * agent.c - the hearth-agent event loop; see agent.h.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec.h"
#include "msg.h"
#include "pid1.h"
#include "runtime.h"

#define REPLY_TIMEOUT_MS 10000
#define STALL_TIMEOUT_MS 30000   /* a frame left half-sent this long is dropped */
#define SERIAL_RETRY_MS 20
#define MIN_PEER_FRAME (64u * 1024u)
/* An InvokeResult's bytes besides body and logs: ids, error text, numbers. */
#define RESULT_OVERHEAD (4u * 1024u)
#define MIN_RESEED 32u
#define DEFAULT_TIMEOUT_MS 3000u
#define DEFAULT_MAX_RESPONSE (6u * 1024u * 1024u)
#define DEFAULT_MAX_LOG (64u * 1024u)
#define DEFAULT_INIT_TIMEOUT_MS 10000u

struct pending {
	uint64_t seq;
	char *request_id;
	uint8_t *payload;
	size_t len;
	uint32_t timeout_ms;
};

struct config {
	bool set;
	char *handler;
	char **argv;
	char **envp;
	char *workdir;
	uint32_t timeout_ms;
	size_t max_out, max_log;
	bool runtime;            /* HANDLER_RUNTIME: handler is a long-lived bootstrap */
	uint32_t init_timeout_ms;
	char *function_arn;
};

struct agent {
	const struct agent_opts *o;
	struct transport t;
	int sigfd;
	int64_t start_us;

	int conn;
	struct frame_reader fr;
	bool hello;
	size_t peer_max;
	int64_t partial_since_ms;
	int64_t serial_retry_ms;    /* serial: no polling (or reopening) before this */
	bool serial_broken;         /* serial: a real read error, reopen the device */

	struct config cfg;

	bool running;
	bool is_init;        /* the run is Configure's init step */
	bool want_result;    /* false once the requesting connection is gone */
	uint64_t run_seq;
	char *run_reqid;
	uint8_t *run_payload;
	struct run run;

	struct rt *rt;       /* the Runtime API, opened by the first RUNTIME Configure */
	uint64_t rt_cfg_seq; /* the Configure waiting for the runtime's first /next */

	struct pending q[AGENT_QUEUE_MAX];
	size_t qhead, qlen;
	size_t qbytes;       /* payload and request id bytes held by the queue */
	bool quit;
	int exit_status;
};

static void logf_(struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct agent *a, const char *fmt, ...)
{
	va_list ap;

	if (!a->o->verbose)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "hearth-agent: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static int64_t now_ms(void)
{
	return run_now_us() / 1000;
}

/* ---- replies ------------------------------------------------------------ */

static void drop_conn(struct agent *a, const char *why);

static void reply(struct agent *a, Hearth__Envelope *env)
{
	int rc;

	if (a->conn < 0)
		return;
	rc = msg_send(a->conn, env, a->peer_max, now_ms() + REPLY_TIMEOUT_MS);
	if (rc == FRAME_EINVAL) {
		/* Should not happen (results are sized to fit), but never send a frame the host refuses. */
		logf_(a, "reply %s too large for the host's frame limit", msg_name(env));
		return;
	}
	if (rc)
		drop_conn(a, frame_strerror(rc));
}

static void reply_error(struct agent *a, uint64_t seq, Hearth__ErrorCode code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void reply_error(struct agent *a, uint64_t seq, Hearth__ErrorCode code, const char *fmt, ...)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Error err = HEARTH__ERROR__INIT;
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	logf_(a, "error to host: %s", buf);
	err.code = code;
	err.message = buf;
	env.seq = seq;
	env.msg_case = HEARTH__ENVELOPE__MSG_ERROR;
	env.error = &err;
	reply(a, &env);
}

static void reply_ack(struct agent *a, uint64_t seq)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Ack ack = HEARTH__ACK__INIT;

	env.seq = seq;
	env.msg_case = HEARTH__ENVELOPE__MSG_ACK;
	env.ack = &ack;
	reply(a, &env);
}

static void reply_ready(struct agent *a, uint64_t seq, uint64_t init_us)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Ready ready = HEARTH__READY__INIT;

	ready.init_duration_us = init_us;
	ready.software = AGENT_VERSION;
	env.seq = seq;
	env.msg_case = HEARTH__ENVELOPE__MSG_READY;
	env.ready = &ready;
	reply(a, &env);
}

/* Sends one InvokeResult; p (body, logs, numbers) may be NULL. */
static void reply_result_parts(struct agent *a, uint64_t seq, const char *reqid,
			       Hearth__InvokeStatus status, const char *error,
			       const struct rt_result *p)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__InvokeResult res = HEARTH__INVOKE_RESULT__INIT;

	res.request_id = (char *)reqid;
	res.status = status;
	res.error = (char *)(error ? error : "");
	if (p) {
		res.exit_code = p->exit_code;
		res.signal = p->signal;
		res.body.data = (uint8_t *)p->body;
		res.body.len = p->body_len;
		res.logs.data = (uint8_t *)p->logs;
		res.logs.len = p->logs_len;
		res.logs_truncated = p->logs_truncated;
		res.duration_us = p->duration_us;
		res.max_rss_kb = p->max_rss_kb;
	}
	env.seq = seq;
	env.msg_case = HEARTH__ENVELOPE__MSG_INVOKE_RESULT;
	env.invoke_result = &res;
	/*
	 * Every invocation ends in exactly one InvokeResult. One the host's frame
	 * limit cannot take (the limit shrank since Configure, or a huge request
	 * id) becomes a function error without its body and logs; the host
	 * matches results by seq, so even the request id may go.
	 */
	size_t size = hearth__envelope__get_packed_size(&env);
	char msg[256]; /* res.error may point here until reply() has sent it */

	if (size > a->peer_max) {
		snprintf(msg, sizeof(msg), "response too large: the result takes %zu bytes; the host"
			 " accepts frames of at most %zu", size, a->peer_max);
		logf_(a, "invoke %.64s: %s", reqid ? reqid : "", msg);
		res.status = HEARTH__INVOKE_STATUS__INVOKE_RESPONSE_TOO_LARGE;
		res.error = msg;
		res.body.data = NULL;
		res.body.len = 0;
		res.logs.data = NULL;
		res.logs.len = 0;
		res.logs_truncated = p && p->logs_len > 0;
		if (hearth__envelope__get_packed_size(&env) > a->peer_max)
			res.request_id = (char *)"";
	}
	reply(a, &env);
}

static void reply_result(struct agent *a, uint64_t seq, const char *reqid,
			 Hearth__InvokeStatus status, const char *error, const struct run *r)
{
	struct rt_result p = { 0 };
	int code;

	if (!r) {
		reply_result_parts(a, seq, reqid, status, error, NULL);
		return;
	}
	switch (run_outcome(r, &code)) {
	case RUN_EXITED: p.exit_code = code; break;
	case RUN_SIGNALED: p.signal = code; break;
	default: break;
	}
	p.body = r->out;
	p.body_len = r->out_len;
	p.logs = r->log;
	p.logs_len = r->log_len;
	p.logs_truncated = r->log_truncated;
	p.duration_us = run_duration_us(r);
	p.max_rss_kb = (uint64_t)r->ru.ru_maxrss;
	reply_result_parts(a, seq, reqid, status, error, &p);
}

/* ---- configuration ------------------------------------------------------- */

static void free_strv(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void config_free(struct config *c)
{
	free(c->handler);
	free_strv(c->argv);
	free_strv(c->envp);
	free(c->workdir);
	free(c->function_arn);
	memset(c, 0, sizeof(*c));
}

#define STR_(x) #x
#define STR(x) STR_(x)

static size_t configure_bytes(const Hearth__Configure *m)
{
	size_t n = (m->handler ? strlen(m->handler) : 0) + (m->workdir ? strlen(m->workdir) : 0) +
		   (m->init ? strlen(m->init) : 0);

	for (size_t i = 0; i < m->n_args; i++)
		n += strlen(m->args[i]) + 1 + sizeof(char *);
	for (size_t i = 0; i < m->n_env; i++)
		n += strlen(m->env[i]->key) + (m->env[i]->value ? strlen(m->env[i]->value) : 0) + 2 +
		     sizeof(char *);
	return n;
}

static bool env_has(char **envp, size_t n, const char *key)
{
	size_t k = strlen(key);

	for (size_t i = 0; i < n; i++)
		if (strncmp(envp[i], key, k) == 0 && envp[i][k] == '=')
			return true;
	return false;
}

/* Validates and copies a Configure. Returns NULL or an error text. */
static const char *config_take(struct config *c, const Hearth__Configure *m, size_t peer_max)
{
	size_t n = 0;

	memset(c, 0, sizeof(*c));
	if (!m->handler || m->handler[0] != '/')
		return "handler must be an absolute path";
	if (m->mode != HEARTH__HANDLER_MODE__HANDLER_EXEC &&
	    m->mode != HEARTH__HANDLER_MODE__HANDLER_RUNTIME)
		return "unknown handler mode";
	if (m->mode == HEARTH__HANDLER_MODE__HANDLER_RUNTIME && m->init && m->init[0])
		return "runtime mode has no init step: the bootstrap initialises itself";
	if (m->function_arn && strlen(m->function_arn) > 256)
		return "function_arn exceeds 256 bytes";
	if (m->init && m->init[0] && m->init[0] != '/')
		return "init must be an absolute path";
	if (m->n_args > AGENT_CONFIGURE_MAX_ARGS || m->n_env > AGENT_CONFIGURE_MAX_ENV)
		return "too many args or env entries (at most " STR(AGENT_CONFIGURE_MAX_ARGS) " and "
		       STR(AGENT_CONFIGURE_MAX_ENV) ")";
	for (size_t i = 0; i < m->n_env; i++)
		if (!m->env[i]->key || !m->env[i]->key[0] || strchr(m->env[i]->key, '='))
			return "env keys must be non-empty and contain no '='";
	if (configure_bytes(m) > AGENT_CONFIGURE_MAX_BYTES)
		return "handler, args, env and workdir exceed " STR(AGENT_CONFIGURE_MAX_BYTES) " bytes";
	c->handler = strdup(m->handler);
	c->argv = calloc(m->n_args + 2, sizeof(char *));
	c->envp = calloc(m->n_env + 3, sizeof(char *));
	c->workdir = strdup(m->workdir && m->workdir[0] ? m->workdir : "/");
	c->function_arn = strdup(m->function_arn ? m->function_arn : "");
	c->runtime = m->mode == HEARTH__HANDLER_MODE__HANDLER_RUNTIME;
	c->init_timeout_ms = m->init_timeout_ms ? m->init_timeout_ms : DEFAULT_INIT_TIMEOUT_MS;
	if (!c->handler || !c->argv || !c->envp || !c->workdir || !c->function_arn)
		goto nomem;
	c->argv[0] = strdup(m->handler);
	for (size_t i = 0; i < m->n_args; i++)
		c->argv[i + 1] = strdup(m->args[i]);
	for (size_t i = 0; i < m->n_env; i++) {
		if (asprintf(&c->envp[n], "%s=%s", m->env[i]->key,
			     m->env[i]->value ? m->env[i]->value : "") < 0)
			goto nomem;
		n++;
	}
	if (!env_has(c->envp, n, "PATH"))
		c->envp[n++] = strdup("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
	if (!env_has(c->envp, n, "HOME"))
		c->envp[n++] = strdup("HOME=/tmp");
	c->timeout_ms = m->timeout_ms ? m->timeout_ms : DEFAULT_TIMEOUT_MS;
	c->max_log = m->max_log_bytes ? m->max_log_bytes : DEFAULT_MAX_LOG;
	if (c->max_log > peer_max / 4)
		c->max_log = peer_max / 4;
	c->max_out = m->max_response_bytes ? m->max_response_bytes : DEFAULT_MAX_RESPONSE;
	/*
	 * A result must fit in one frame the host accepts: body + logs + envelope.
	 * peer_max >= MIN_PEER_FRAME and max_log <= peer_max / 4 keep this positive;
	 * reply_result() still checks each result against the limit of the moment.
	 */
	size_t room = peer_max > c->max_log + RESULT_OVERHEAD ?
			      peer_max - c->max_log - RESULT_OVERHEAD : 0;

	if (c->max_out > room)
		c->max_out = room;
	c->set = true;
	return NULL;
nomem:
	config_free(c);
	return "out of memory";
}

/* ---- running handlers ---------------------------------------------------- */

static void start_next(struct agent *a);

static int start_run(struct agent *a, const char *path, char **argv, const uint8_t *payload,
		     size_t len, uint32_t timeout_ms)
{
	struct run_spec spec = {
		.path = path,
		.argv = argv,
		.envp = a->cfg.envp,
		.workdir = a->cfg.workdir,
		.payload = payload,
		.payload_len = len,
		.max_out = a->cfg.max_out,
		.max_log = a->cfg.max_log,
		.timeout_ms = timeout_ms,
		.uid = a->o->handler_uid,
		.gid = a->o->handler_gid,
	};
	int rc = run_start(&a->run, &spec);

	if (rc == 0) {
		a->running = true;
		a->want_result = true;
	}
	return rc;
}

static Hearth__InvokeStatus status_of(const struct run *r, char *err, size_t errlen,
				      const struct config *c)
{
	int code;

	switch (run_outcome(r, &code)) {
	case RUN_SPAWN_FAILED:
		snprintf(err, errlen, "cannot execute handler %s: %s", c->handler, strerror(code));
		return HEARTH__INVOKE_STATUS__INVOKE_SPAWN_FAILED;
	case RUN_TIMEOUT:
		snprintf(err, errlen, "handler timed out after %u ms; process group killed",
			 (unsigned)((r->deadline_us - r->start_us) / 1000));
		return HEARTH__INVOKE_STATUS__INVOKE_TIMEOUT;
	case RUN_TOO_LARGE:
		snprintf(err, errlen, "response exceeded %zu bytes; handler killed", r->max_out);
		return HEARTH__INVOKE_STATUS__INVOKE_RESPONSE_TOO_LARGE;
	case RUN_SIGNALED:
		snprintf(err, errlen, "handler killed by signal %d (%s)", code, strsignal(code));
		return HEARTH__INVOKE_STATUS__INVOKE_CRASHED;
	case RUN_EXITED:
		if (code == 0) {
			err[0] = 0;
			return HEARTH__INVOKE_STATUS__INVOKE_OK;
		}
		snprintf(err, errlen, "handler exited with status %d", code);
		return HEARTH__INVOKE_STATUS__INVOKE_FUNCTION_ERROR;
	}
	return HEARTH__INVOKE_STATUS__INVOKE_REJECTED;
}

static void finish_run(struct agent *a)
{
	char err[512];
	Hearth__InvokeStatus st = status_of(&a->run, err, sizeof(err), &a->cfg);

	if (a->want_result) {
		if (a->is_init) {
			if (st == HEARTH__INVOKE_STATUS__INVOKE_OK) {
				reply_ready(a, a->run_seq, run_duration_us(&a->run));
			} else {
				config_free(&a->cfg);
				reply_error(a, a->run_seq, HEARTH__ERROR_CODE__ERR_INIT_FAILED,
					    "init step failed: %s; stderr: %.*s", err,
					    (int)(a->run.log_len > 200 ? 200 : a->run.log_len),
					    a->run.log ? (const char *)a->run.log : "");
			}
		} else {
			reply_result(a, a->run_seq, a->run_reqid, st, err[0] ? err : NULL, &a->run);
		}
	}
	logf_(a, "%s %s: %s (%llu us)", a->is_init ? "init" : "invoke",
	      a->run_reqid ? a->run_reqid : "", err[0] ? err : "ok",
	      (unsigned long long)run_duration_us(&a->run));
	run_free(&a->run);
	free(a->run_reqid);
	free(a->run_payload);
	a->run_reqid = NULL;
	a->run_payload = NULL;
	a->running = false;
	a->is_init = false;
	run_sweep_orphans();
	start_next(a);
}

static void pending_free(struct pending *p)
{
	free(p->request_id);
	free(p->payload);
	memset(p, 0, sizeof(*p));
}

static bool can_start(const struct agent *a)
{
	if (a->cfg.set && a->cfg.runtime)
		return rt_can_invoke(a->rt);
	return !a->running;
}

static void start_next(struct agent *a)
{
	while (can_start(a) && a->qlen > 0) {
		struct pending p = a->q[a->qhead];
		int rc;

		a->qhead = (a->qhead + 1) % AGENT_QUEUE_MAX;
		a->qlen--;
		a->qbytes -= p.len + strlen(p.request_id);
		if (!a->cfg.set) {
			/* Queued while an init step ran, and that init failed: no handler. */
			reply_result(a, p.seq, p.request_id,
				     HEARTH__INVOKE_STATUS__INVOKE_NOT_CONFIGURED,
				     "the init step failed: the agent has no handler", NULL);
			pending_free(&p);
			continue;
		}
		if (a->cfg.runtime) {
			if (!rt_valid_request_id(p.request_id)) {
				reply_result(a, p.seq, p.request_id,
					     HEARTH__INVOKE_STATUS__INVOKE_REJECTED,
					     "runtime mode: the request id must be 1 to 128 of"
					     " [A-Za-z0-9._-] (it goes into Runtime API paths)", NULL);
				pending_free(&p);
				continue;
			}
			/* The runtime owns request id and payload from here. */
			rt_invoke(a->rt, p.seq, p.request_id, p.payload, p.len,
				  p.timeout_ms ? p.timeout_ms : a->cfg.timeout_ms);
			continue;
		}
		rc = start_run(a, a->cfg.handler, a->cfg.argv, p.payload, p.len,
			       p.timeout_ms ? p.timeout_ms : a->cfg.timeout_ms);
		if (rc < 0) {
			char err[128];

			snprintf(err, sizeof(err), "agent could not start the handler: %s",
				 strerror(-rc));
			reply_result(a, p.seq, p.request_id, HEARTH__INVOKE_STATUS__INVOKE_REJECTED,
				     err, NULL);
			pending_free(&p);
			continue;
		}
		a->run_seq = p.seq;
		a->run_reqid = p.request_id;      /* owned by the run from here */
		a->run_payload = p.payload;       /* read by the run until stdin closes */
		a->is_init = false;
	}
}

static void queue_clear(struct agent *a)
{
	while (a->qlen > 0) {
		pending_free(&a->q[a->qhead]);
		a->qhead = (a->qhead + 1) % AGENT_QUEUE_MAX;
		a->qlen--;
	}
	a->qbytes = 0;
}

/* ---- messages ------------------------------------------------------------ */

static void on_hello(struct agent *a, const Hearth__Envelope *e)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Hello h = HEARTH__HELLO__INIT;
	const Hearth__Hello *m = e->hello;

	if (m->protocol_version != HEARTH_PROTOCOL_VERSION) {
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_VERSION_MISMATCH,
			    "agent speaks protocol version %u, host sent %u",
			    HEARTH_PROTOCOL_VERSION, m->protocol_version);
		return;
	}
	if (m->max_frame && m->max_frame < MIN_PEER_FRAME) {
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_INVALID_ARGUMENT,
			    "max_frame %u is below the minimum of %u", m->max_frame, MIN_PEER_FRAME);
		return;
	}
	a->peer_max = m->max_frame ? m->max_frame : FRAME_DEFAULT_MAX;
	if (!a->hello && a->t.kind == TRANSPORT_SERIAL)
		logf_(a, "host said hello on %s", a->t.path);
	a->hello = true;
	h.protocol_version = HEARTH_PROTOCOL_VERSION;
	h.max_frame = (uint32_t)a->o->max_frame;
	h.software = AGENT_VERSION;
	env.seq = e->seq;
	env.msg_case = HEARTH__ENVELOPE__MSG_HELLO;
	env.hello = &h;
	reply(a, &env);
}

/* ---- runtime mode (runtime.h) --------------------------------------------- */

static void rt_hook_ready(void *ud, uint64_t init_us)
{
	struct agent *a = ud;

	reply_ready(a, a->rt_cfg_seq, init_us);
	start_next(a);
}

static void rt_hook_init_failed(void *ud, const char *msg, const uint8_t *logs, size_t len)
{
	struct agent *a = ud;
	size_t tail = len > 1024 ? 1024 : len;

	config_free(&a->cfg);
	reply_error(a, a->rt_cfg_seq, HEARTH__ERROR_CODE__ERR_INIT_FAILED,
		    "runtime init failed: %s; output: %.*s", msg, (int)tail,
		    logs ? (const char *)logs + (len - tail) : "");
	rt_stop(a->rt);
	start_next(a); /* whatever was queued is answered NOT_CONFIGURED */
}

static void rt_hook_result(void *ud, const struct rt_result *r)
{
	struct agent *a = ud;

	reply_result_parts(a, r->seq, r->request_id, (Hearth__InvokeStatus)r->status,
			   r->error[0] ? r->error : NULL, r);
	start_next(a);
}

static void rt_hook_log(void *ud, const char *msg)
{
	logf_(ud, "%s", msg);
}

static void configure_runtime(struct agent *a, uint64_t seq)
{
	struct rt_spec spec = {
		.bootstrap = a->cfg.handler,
		.argv = a->cfg.argv,
		.envp = a->cfg.envp,
		.workdir = a->cfg.workdir,
		.max_out = a->cfg.max_out,
		.max_log = a->cfg.max_log,
		.init_timeout_ms = a->cfg.init_timeout_ms,
		.function_arn = a->cfg.function_arn,
		.uid = a->o->handler_uid,
		.gid = a->o->handler_gid,
	};
	char err[256];

	if (!a->rt) {
		struct rt_hooks hooks = {
			.ud = a,
			.ready = rt_hook_ready,
			.init_failed = rt_hook_init_failed,
			.result = rt_hook_result,
			.log = rt_hook_log,
		};

		if (rt_open(&a->rt, a->o->runtime_addr ? a->o->runtime_addr :
				    (a->o->pid1 ? RT_DEFAULT_ADDR : "127.0.0.1:0"),
			    &hooks, err, sizeof(err)) < 0) {
			config_free(&a->cfg);
			reply_error(a, seq, HEARTH__ERROR_CODE__ERR_INTERNAL, "configure: %s", err);
			return;
		}
		logf_(a, "Runtime API on %s", rt_address(a->rt));
	}
	a->rt_cfg_seq = seq;
	if (rt_start(a->rt, &spec, err, sizeof(err)) < 0) {
		config_free(&a->cfg);
		reply_error(a, seq, HEARTH__ERROR_CODE__ERR_INTERNAL, "configure: %s", err);
	}
	/* Ready (or ERR_INIT_FAILED) follows from the runtime: rt_hook_ready/_init_failed. */
}

static void on_configure(struct agent *a, const Hearth__Envelope *e)
{
	const Hearth__Configure *m = e->configure;
	struct config c;
	const char *err;

	if (a->running || a->qlen || (a->rt && rt_busy(a->rt))) {
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_BUSY,
			    "cannot reconfigure while an invocation is running or queued");
		return;
	}
	err = config_take(&c, m, a->peer_max);
	if (err) {
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_INVALID_ARGUMENT, "configure: %s", err);
		return;
	}
	config_free(&a->cfg);
	a->cfg = c;
	if (a->rt)
		rt_stop(a->rt); /* a new configuration starts a new runtime, or none */
	if (c.runtime) {
		configure_runtime(a, e->seq);
		return;
	}
	if (m->init && m->init[0]) {
		char *argv[] = { m->init, NULL };
		int rc = start_run(a, m->init, argv, NULL, 0,
				   m->init_timeout_ms ? m->init_timeout_ms : DEFAULT_INIT_TIMEOUT_MS);

		if (rc < 0) {
			config_free(&a->cfg);
			reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_INTERNAL,
				    "cannot start init: %s", strerror(-rc));
			return;
		}
		a->is_init = true;
		a->run_seq = e->seq;
		a->run_reqid = strdup("init");
		return;
	}
	reply_ready(a, e->seq, 0);
}

static void on_invoke(struct agent *a, const Hearth__Envelope *e)
{
	const Hearth__Invoke *m = e->invoke;
	struct pending *p;

	if (!a->cfg.set) {
		reply_result(a, e->seq, m->request_id, HEARTH__INVOKE_STATUS__INVOKE_NOT_CONFIGURED,
			     "Invoke before Configure: the agent has no handler", NULL);
		return;
	}
	size_t bytes = m->payload.len + (m->request_id ? strlen(m->request_id) : 0);

	if (a->qlen == AGENT_QUEUE_MAX) {
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_BUSY,
			    "invoke queue full (%d waiting)", AGENT_QUEUE_MAX);
		return;
	}
	/* Bounded in bytes too: the queue holds copies of whole payloads. */
	if (a->qlen > 0 && a->qbytes + bytes > AGENT_QUEUE_MAX_BYTES) {
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_BUSY,
			    "invoke queue full (%zu bytes waiting, at most %u)", a->qbytes,
			    AGENT_QUEUE_MAX_BYTES);
		return;
	}
	p = &a->q[(a->qhead + a->qlen) % AGENT_QUEUE_MAX];
	p->seq = e->seq;
	p->request_id = strdup(m->request_id ? m->request_id : "");
	p->payload = malloc(m->payload.len ? m->payload.len : 1);
	p->len = m->payload.len;
	p->timeout_ms = m->timeout_ms;
	if (!p->request_id || !p->payload) {
		pending_free(p);
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_INTERNAL, "out of memory");
		return;
	}
	if (m->payload.len)
		memcpy(p->payload, m->payload.data, m->payload.len);
	a->qlen++;
	a->qbytes += p->len + strlen(p->request_id);
	start_next(a);
}

static void on_reseed(struct agent *a, const Hearth__Envelope *e)
{
	const Hearth__Reseed *m = e->reseed;
	struct {
		struct rand_pool_info info;
		uint8_t buf[512];
	} pool;
	int fd;

	if (m->entropy.len < MIN_RESEED || m->entropy.len > sizeof(pool.buf)) {
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_INVALID_ARGUMENT,
			    "reseed needs %u to %zu bytes (agent.proto), got %zu", MIN_RESEED,
			    sizeof(pool.buf), m->entropy.len);
		return;
	}
	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_INTERNAL, "open /dev/urandom: %s",
			    strerror(errno));
		return;
	}
	pool.info.entropy_count = (int)(m->entropy.len * 8);
	pool.info.buf_size = (int)m->entropy.len;
	memcpy(pool.buf, m->entropy.data, m->entropy.len);
	if (ioctl(fd, RNDADDENTROPY, &pool.info) < 0) {
		/*
		 * Without CAP_SYS_ADMIN (the process engine as a normal user) the
		 * bytes can still be mixed in, just not credited.
		 */
		if (write(fd, m->entropy.data, m->entropy.len) != (ssize_t)m->entropy.len) {
			reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_INTERNAL,
				    "mixing entropy failed: %s", strerror(errno));
			close(fd);
			return;
		}
	}
#ifdef RNDRESEEDCRNG
	/* Older kernels lack it (EINVAL/ENOTTY); the added entropy is used anyway. */
	ioctl(fd, RNDRESEEDCRNG);
#endif
	close(fd);
	explicit_bzero(pool.buf, sizeof(pool.buf));
	reply_ack(a, e->seq);
}

static void on_ping(struct agent *a, const Hearth__Envelope *e)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Pong pong = HEARTH__PONG__INIT;

	pong.nonce = e->ping->nonce;
	pong.uptime_us = (uint64_t)(run_now_us() - a->start_us);
	pong.queued = (uint32_t)a->qlen;
	pong.busy = a->running || (a->rt && rt_busy(a->rt));
	env.seq = e->seq;
	env.msg_case = HEARTH__ENVELOPE__MSG_PONG;
	env.pong = &pong;
	reply(a, &env);
}

static void on_message(struct agent *a, const uint8_t *buf, size_t len)
{
	Hearth__Envelope *e = msg_unpack(buf, len);

	if (!e) {
		reply_error(a, 0, HEARTH__ERROR_CODE__ERR_BAD_MESSAGE,
			    "frame of %zu bytes is not a valid hearth.Envelope", len);
		return;
	}
	if (!a->hello && e->msg_case != HEARTH__ENVELOPE__MSG_HELLO &&
	    e->msg_case != HEARTH__ENVELOPE__MSG_PING) {
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_HELLO_REQUIRED,
			    "send Hello first (got %s)", msg_name(e));
		msg_free(e);
		return;
	}
	switch (e->msg_case) {
	case HEARTH__ENVELOPE__MSG_HELLO: on_hello(a, e); break;
	case HEARTH__ENVELOPE__MSG_CONFIGURE: on_configure(a, e); break;
	case HEARTH__ENVELOPE__MSG_INVOKE: on_invoke(a, e); break;
	case HEARTH__ENVELOPE__MSG_RESEED: on_reseed(a, e); break;
	case HEARTH__ENVELOPE__MSG_PING: on_ping(a, e); break;
	case HEARTH__ENVELOPE__MSG_SHUTDOWN:
		reply_ack(a, e->seq);
		a->quit = true;
		break;
	default:
		reply_error(a, e->seq, HEARTH__ERROR_CODE__ERR_UNKNOWN_MESSAGE,
			    "unexpected message type %s", msg_name(e));
		break;
	}
	msg_free(e);
}

/* ---- connection ---------------------------------------------------------- */

static void drop_conn(struct agent *a, const char *why)
{
	if (a->conn < 0)
		return;
	/* An idle virtio-serial port "closes" every retry while no host is attached: stay quiet. */
	if (a->t.kind != TRANSPORT_SERIAL || a->hello)
		logf_(a, "host connection closed: %s", why);
	if (a->t.kind == TRANSPORT_SERIAL && !a->serial_broken) {
		/*
		 * Keep a virtio-serial port open across host sessions: closing it
		 * discards whatever the host already sent (a Hello racing our
		 * reopen was lost that way). While no host is attached the port
		 * polls as hung up, so stop polling it for a moment instead.
		 */
		a->serial_retry_ms = now_ms() + SERIAL_RETRY_MS;
	} else {
		close(a->conn);
		a->conn = -1;
		a->serial_broken = false;
	}
	frame_reader_reset(&a->fr);
	a->hello = false;
	a->partial_since_ms = 0;
	queue_clear(a);
	if (a->rt && a->cfg.set && a->cfg.runtime) {
		/*
		 * The runtime stays up with its state: a restored clone's host
		 * connection is new, and its runtime must not init again. Only a
		 * first init nobody waits for any more is stopped (as an init step).
		 */
		if (rt_first_init(a->rt)) {
			rt_stop(a->rt);
			config_free(&a->cfg);
		} else {
			rt_forget(a->rt);
		}
	}
	if (a->running) {
		a->want_result = false;
		run_abort(&a->run);
		if (a->is_init)
			config_free(&a->cfg);
	}
	if (a->t.kind == TRANSPORT_SERIAL)
		a->serial_retry_ms = now_ms() + SERIAL_RETRY_MS;
}

static void set_conn(struct agent *a, int fd)
{
	if (a->conn >= 0)
		drop_conn(a, "replaced by a new connection");
	a->conn = fd;
	a->peer_max = FRAME_DEFAULT_MAX;
	frame_reader_init(&a->fr, a->o->max_frame);
	if (a->t.kind != TRANSPORT_SERIAL)
		logf_(a, "host connected");
}

static void on_readable(struct agent *a)
{
	/* Bounded so that a flood of frames cannot starve the running handler's pipes. */
	for (int i = 0; i < 64 && a->conn >= 0 && !a->quit; i++) {
		uint8_t *buf;
		size_t len;
		int rc = frame_reader_poll(&a->fr, a->conn, &buf, &len);

		if (rc == FRAME_EAGAIN) {
			if (frame_reader_partial(&a->fr) && !a->partial_since_ms)
				a->partial_since_ms = now_ms();
			return;
		}
		if (rc == FRAME_ETOOBIG) {
			reply_error(a, 0, HEARTH__ERROR_CODE__ERR_FRAME_TOO_LARGE,
				    "frame of %zu bytes exceeds the maximum of %zu; closing",
				    a->fr.body_len, a->fr.max);
			drop_conn(a, "frame too large");
			return;
		}
		if (rc != FRAME_OK) {
			if (rc == FRAME_EIO || rc == FRAME_ENOMEM)
				a->serial_broken = true; /* not a hang-up: reopen the port */
			drop_conn(a, frame_strerror(rc));
			return;
		}
		a->partial_since_ms = 0;
		on_message(a, buf, len);
		free(buf);
	}
}

/* ---- main loop ----------------------------------------------------------- */

static void on_signal(struct agent *a)
{
	struct signalfd_siginfo si;
	int st;
	struct rusage ru;
	pid_t pid;

	while (read(a->sigfd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			if (!a->o->pid1) {
				a->quit = true;
				a->exit_status = 0;
			}
		}
	}
	/* Reap everything: our handler and any orphan re-parented to us. */
	while ((pid = wait4(-1, &st, WNOHANG, &ru)) > 0) {
		if (a->running && pid == a->run.pid)
			run_on_exit(&a->run, st, &ru);
		else if (a->rt)
			rt_on_exit(a->rt, pid, st);
	}
}

static int min_timeout(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

int agent_run(const struct agent_opts *o)
{
	struct agent a = { .o = o, .t = o->transport, .conn = -1 };
	sigset_t set;
	int rc;

	a.start_us = run_now_us();
	frame_reader_init(&a.fr, o->max_frame);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	a.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (a.sigfd < 0) {
		perror("hearth-agent: signalfd");
		return 1;
	}
	rc = transport_open(&a.t);
	if (rc < 0) {
		fprintf(stderr, "hearth-agent: cannot listen on %s: %s\n",
			a.t.kind == TRANSPORT_VSOCK ? "vsock" : a.t.path, strerror(-rc));
		return 1;
	}
	fprintf(stderr, "hearth-agent: listening on %s\n",
		a.t.kind == TRANSPORT_VSOCK ? "vsock" : a.t.path);

	while (!a.quit) {
		struct pollfd p[8];
		int n = 0, i_listen = -1, i_conn = -1, i_sig, nrun, nrt = 0, timeout = -1;

		if (a.t.kind == TRANSPORT_SERIAL && a.conn < 0 && now_ms() >= a.serial_retry_ms) {
			int fd = transport_accept(&a.t);

			if (fd >= 0)
				set_conn(&a, fd);
			else
				a.serial_retry_ms = now_ms() + SERIAL_RETRY_MS;
		}
		if (a.t.listen_fd >= 0) {
			i_listen = n;
			p[n++] = (struct pollfd){ .fd = a.t.listen_fd, .events = POLLIN };
		}
		bool serial_resting = a.t.kind == TRANSPORT_SERIAL && now_ms() < a.serial_retry_ms;

		if (a.conn >= 0 && !serial_resting) {
			i_conn = n;
			p[n++] = (struct pollfd){ .fd = a.conn, .events = POLLIN };
		}
		i_sig = n;
		p[n++] = (struct pollfd){ .fd = a.sigfd, .events = POLLIN };
		nrun = a.running ? run_pollfds(&a.run, p + n) : 0;
		if (a.rt) {
			nrt = rt_pollfds(a.rt, p + n + nrun);
			timeout = rt_check(a.rt);
		}

		if (a.running)
			timeout = min_timeout(timeout, run_check_deadline(&a.run));
		if (a.t.kind == TRANSPORT_SERIAL && (a.conn < 0 || serial_resting))
			timeout = min_timeout(timeout, SERIAL_RETRY_MS);
		if (a.partial_since_ms)
			timeout = min_timeout(timeout, (int)(a.partial_since_ms + STALL_TIMEOUT_MS -
							     now_ms() + 1));
		if (poll(p, (nfds_t)(n + nrun + nrt), timeout) < 0 && errno != EINTR) {
			perror("hearth-agent: poll");
			break;
		}
		if (nrun)
			run_handle(&a.run, p + n, nrun);
		if (p[i_sig].revents)
			on_signal(&a);
		if (a.rt) {
			rt_handle(a.rt, p + n + nrun, nrt);
			rt_check(a.rt);
		}
		if (a.running && a.run.done)
			finish_run(&a);
		if (i_conn >= 0 && a.conn >= 0 && p[i_conn].revents) {
			if (p[i_conn].revents & POLLIN)
				on_readable(&a);
			else
				drop_conn(&a, "hangup");
		}
		if (a.partial_since_ms && now_ms() - a.partial_since_ms >= STALL_TIMEOUT_MS)
			drop_conn(&a, "frame stalled mid-way");
		if (i_listen >= 0 && (p[i_listen].revents & POLLIN)) {
			int fd = transport_accept(&a.t);

			if (fd >= 0)
				set_conn(&a, fd);
		}
	}
	if (a.running) {
		run_abort(&a.run);
		run_free(&a.run);
	}
	queue_clear(&a);
	rt_close(a.rt);
	if (a.conn >= 0)
		close(a.conn);
	transport_close(&a.t);
	config_free(&a.cfg);
	frame_reader_reset(&a.fr);
	free(a.run_reqid);
	free(a.run_payload);
	return a.exit_status;
}
