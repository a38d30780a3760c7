/*
 * runtime.c - the Lambda Runtime API and the bootstrap process; see runtime.h.
 */
#include "runtime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "agent.pb-c.h"
#include "exec.h"

enum phase {
	PH_DOWN,      /* no runtime process */
	PH_INIT,      /* started, has not asked for /next yet */
	PH_READY,     /* has asked for /next at least once */
};

enum route { RO_NEXT, RO_RESPONSE, RO_ERROR, RO_INIT_ERROR };

struct req {
	enum route route;
	char id[RT_MAX_REQUEST_ID + 1];
	uint8_t *body;
	size_t len, limit;
	bool too_big;
	bool parked;        /* a suspended /next */
	unsigned gen;       /* the runtime generation that parked it */
	bool wake;          /* resumed: answer now (an event, or the runtime is gone) */
	struct MHD_Connection *conn;
};

struct inv {
	bool active;
	bool handed;        /* given to the runtime by /next */
	uint64_t seq;
	char *id;
	uint8_t *payload;
	size_t len;
	int64_t accept_us, handed_us, deadline_us;
	int64_t deadline_wall_ms;
	uint32_t timeout_ms;
	char trace[96];
	struct req *uploader;   /* the one POST for it whose body is being received */
};

struct rt {
	struct rt_hooks hooks;
	struct MHD_Daemon *d;
	int epfd;
	char addr[64];

	/* spec, owned copies */
	bool configured;
	char *bootstrap, *workdir, *arn;
	char **argv, **envp;
	size_t max_out, max_log;
	uint32_t init_timeout_ms;
	uid_t uid;
	gid_t gid;

	enum phase phase;
	bool first_init;    /* Ready/init_failed still owed to the host */
	pid_t pid;
	int log_fd;
	int status_fd;      /* /proc/<pid>/status, kept open: read for VmHWM per invocation */
	int64_t init_start_us, init_deadline_us;
	bool killed;        /* we killed it (timeout, init timeout): its exit is not an error */
	bool stay_down;     /* its init failed: started again only by the next invocation */
	unsigned gen;       /* bumped at every start; a /next parked by an older one is stale */
	char exec_err[160]; /* why execve failed, if it did */

	uint8_t *log;
	size_t log_len;
	bool log_truncated;

	struct inv cur;
	struct req *parked;
	bool need_run;      /* a connection was resumed: MHD_run() without waiting */

	struct {
		char id[RT_MAX_REQUEST_ID + 1];
		const char *why;
	} recent[RT_RECENT_IDS];
	unsigned recent_next;
};

static void rlog(struct rt *rt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rlog(struct rt *rt, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (!rt->hooks.log)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	rt->hooks.log(rt->hooks.ud, buf);
}

bool rt_valid_request_id(const char *id)
{
	size_t n = 0;

	for (const char *s = id; *s; s++, n++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	}
	return n >= 1 && n <= RT_MAX_REQUEST_ID;
}

/* ---- logs ---------------------------------------------------------------- */

static void log_append(struct rt *rt, const uint8_t *data, size_t n)
{
	size_t take = n;

	if (rt->log_len + take > rt->max_log)
		take = rt->max_log > rt->log_len ? rt->max_log - rt->log_len : 0;
	if (take) {
		uint8_t *nb = realloc(rt->log, rt->log_len + take);

		if (!nb) {
			rt->log_truncated = true;
			return;
		}
		memcpy(nb + rt->log_len, data, take);
		rt->log = nb;
		rt->log_len += take;
	}
	if (take < n)
		rt->log_truncated = true;
}

/* Reads what the runtime has written so far (it wrote it before its HTTP request). */
static void log_drain(struct rt *rt)
{
	uint8_t buf[16384];

	while (rt->log_fd >= 0) {
		ssize_t n = read(rt->log_fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			close(rt->log_fd);
			rt->log_fd = -1;
			return;
		}
		log_append(rt, buf, (size_t)n);
	}
}

static void log_reset(struct rt *rt)
{
	free(rt->log);
	rt->log = NULL;
	rt->log_len = 0;
	rt->log_truncated = false;
}

/* ---- the runtime process -------------------------------------------------- */

static void kill_runtime(struct rt *rt)
{
	if (rt->pid > 0) {
		kill(-rt->pid, SIGKILL);
		kill(rt->pid, SIGKILL);
		rt->killed = true;
	}
}

static int spawn(struct rt *rt, char *err, size_t errlen)
{
	int lp[2], ep[2], e = 0;
	ssize_t n;
	pid_t pid;

	if (pipe2(lp, O_CLOEXEC))
		goto sys;
	if (pipe2(ep, O_CLOEXEC)) {
		close(lp[0]);
		close(lp[1]);
		goto sys;
	}
	rt->init_start_us = run_now_us(); /* init counts from here: the exec is part of it */
	pid = fork();
	if (pid < 0) {
		close(lp[0]);
		close(lp[1]);
		close(ep[0]);
		close(ep[1]);
		goto sys;
	}
	if (pid == 0) {
		/* Between fork and exec: async-signal-safe calls only. */
		sigset_t none;
		int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);

		setpgid(0, 0);
		for (int sig = 1; sig < NSIG; sig++)
			signal(sig, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(lp[1], 1) < 0 || dup2(lp[1], 2) < 0)
			goto fail;
		if (run_drop_to(rt->uid, rt->gid) < 0)
			goto fail;
		if (rt->workdir && chdir(rt->workdir) < 0)
			goto fail;
		execve(rt->bootstrap, rt->argv, rt->envp);
fail:
		e = errno;
		if (write(ep[1], &e, sizeof(e)) < 0) {
			/* nothing more to do */
		}
		_exit(127);
	}
	setpgid(pid, pid);
	{
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
		if (rt->status_fd >= 0)
			close(rt->status_fd);
		rt->status_fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	close(lp[1]);
	close(ep[1]);
	do
		n = read(ep[0], &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	close(ep[0]);
	fcntl(lp[0], F_SETFL, O_NONBLOCK);
	rt->pid = pid;
	rt->log_fd = lp[0];
	rt->killed = false;
	rt->stay_down = false;
	rt->gen++;
	rt->phase = PH_INIT;
	rt->init_deadline_us = rt->init_start_us + (int64_t)rt->init_timeout_ms * 1000;
	rt->exec_err[0] = 0;
	if (n == (ssize_t)sizeof(e)) /* reported when its exit is reaped, as an init failure */
		snprintf(rt->exec_err, sizeof(rt->exec_err), "cannot execute %s: %s", rt->bootstrap,
			 strerror(e));
	return 0;
sys:
	e = errno;
	snprintf(err, errlen, "cannot start bootstrap: %s", strerror(e));
	return -e;
}

/* The runtime's peak RSS so far (kB), or 0. */
static uint64_t runtime_hwm_kb(const struct rt *rt)
{
	char buf[4096], *p;
	ssize_t n;

	if (rt->status_fd < 0)
		return 0;
	n = pread(rt->status_fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strstr(buf, "\nVmHWM:");
	return p ? strtoull(p + 8, NULL, 10) : 0;
}

/* ---- outcomes ------------------------------------------------------------- */

static void remember(struct rt *rt, const char *id, const char *why)
{
	unsigned i = rt->recent_next++ % RT_RECENT_IDS;

	snprintf(rt->recent[i].id, sizeof(rt->recent[i].id), "%s", id);
	rt->recent[i].why = why;
}

static const char *recent_why(const struct rt *rt, const char *id)
{
	for (unsigned i = 0; i < RT_RECENT_IDS; i++)
		if (rt->recent[i].id[0] && strcmp(rt->recent[i].id, id) == 0)
			return rt->recent[i].why;
	return NULL;
}

static void inv_free(struct inv *v)
{
	free(v->id);
	free(v->payload);
	memset(v, 0, sizeof(*v));
}

/*
 * Decides the current invocation's outcome: the one place that does, so it
 * happens once. `why` is what a later POST for this id is told.
 */
static void decide(struct rt *rt, int status, const char *error, const uint8_t *body, size_t len,
		   const char *why, int exit_code, int sig)
{
	struct rt_result r = { 0 };
	int64_t now = run_now_us();

	if (!rt->cur.active)
		return;
	log_drain(rt);
	r.seq = rt->cur.seq;
	r.request_id = rt->cur.id;
	r.status = status;
	r.error = error ? error : "";
	r.body = body;
	r.body_len = len;
	r.logs = rt->log;
	r.logs_len = rt->log_len;
	r.logs_truncated = rt->log_truncated;
	r.duration_us = (uint64_t)(now - (rt->cur.handed ? rt->cur.handed_us : rt->cur.accept_us));
	r.max_rss_kb = rt->pid > 0 ? runtime_hwm_kb(rt) : 0;
	r.exit_code = exit_code;
	r.signal = sig;
	remember(rt, rt->cur.id, why);
	rlog(rt, "invoke %s: %s%s%s (%" PRIu64 " us)", rt->cur.id,
	     status == HEARTH__INVOKE_STATUS__INVOKE_OK ? "ok" : "failed",
	     error && error[0] ? ": " : "", error ? error : "", r.duration_us);
	/* The struct is cleared before the hook: the hook may hand in the next invocation. */
	struct inv done = rt->cur;

	memset(&rt->cur, 0, sizeof(rt->cur));
	r.request_id = done.id;
	rt->hooks.result(rt->hooks.ud, &r);
	log_reset(rt);
	inv_free(&done);
}

static void init_failed(struct rt *rt, const char *msg)
{
	rt->stay_down = true;
	log_drain(rt);
	rlog(rt, "runtime init failed: %s", msg);
	if (rt->first_init) {
		rt->first_init = false;
		rt->hooks.init_failed(rt->hooks.ud, msg, rt->log, rt->log_len);
		log_reset(rt);
	} else if (rt->cur.active) {
		char e[512];

		snprintf(e, sizeof(e), "Runtime.InitError: %s", msg);
		decide(rt, HEARTH__INVOKE_STATUS__INVOKE_INIT_FAILED, e, NULL, 0,
		       "the runtime's init failed", 0, 0);
	}
}

/* ---- HTTP ------------------------------------------------------------------ */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const void *body,
			     size_t len, const char *ctype, bool copy)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, (void *)body,
						copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", ctype);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Lambda's error shape. type and msg are ours (ids in msg are validated), never raw input. */
static enum MHD_Result reply_err(struct MHD_Connection *c, unsigned status, const char *type,
				 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result reply_err(struct MHD_Connection *c, unsigned status, const char *type,
				 const char *fmt, ...)
{
	char msg[384], body[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = snprintf(body, sizeof(body), "{\"errorMessage\":\"%s\",\"errorType\":\"%s\"}", msg, type);
	if (n < 0 || (size_t)n >= sizeof(body))
		n = (int)strlen(body);
	return reply(c, status, body, (size_t)n, "application/json", true);
}

static enum MHD_Result reply_accepted(struct MHD_Connection *c)
{
	static const char ok[] = "{\"status\":\"OK\"}";

	return reply(c, 202, ok, sizeof(ok) - 1, "application/json", false);
}

static void make_trace(struct inv *v)
{
	uint8_t rnd[20];

	if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	snprintf(v->trace, sizeof(v->trace),
		 "Root=1-%08lx-%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x;"
		 "Parent=%02x%02x%02x%02x%02x%02x%02x%02x;Sampled=0",
		 (unsigned long)time(NULL), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6],
		 rnd[7], rnd[8], rnd[9], rnd[10], rnd[11], rnd[12], rnd[13], rnd[14], rnd[15],
		 rnd[16], rnd[17], rnd[18], rnd[19]);
}

/* Answers a /next with the current invocation. */
static enum MHD_Result give_event(struct rt *rt, struct MHD_Connection *c)
{
	struct inv *v = &rt->cur;
	struct MHD_Response *r;
	char deadline[32];
	enum MHD_Result ret;

	r = MHD_create_response_from_buffer(v->len, v->payload, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	snprintf(deadline, sizeof(deadline), "%" PRId64, v->deadline_wall_ms);
	MHD_add_response_header(r, "Content-Type", "application/json");
	MHD_add_response_header(r, "Lambda-Runtime-Aws-Request-Id", v->id);
	MHD_add_response_header(r, "Lambda-Runtime-Deadline-Ms", deadline);
	MHD_add_response_header(r, "Lambda-Runtime-Invoked-Function-Arn", rt->arn);
	MHD_add_response_header(r, "Lambda-Runtime-Trace-Id", v->trace);
	ret = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	v->handed = true;
	v->handed_us = run_now_us();
	return ret;
}

static void wake_parked(struct rt *rt)
{
	struct req *q = rt->parked;

	if (!q)
		return;
	rt->parked = NULL;
	q->parked = false;
	q->wake = true;
	MHD_resume_connection(q->conn);
	rt->need_run = true;
}

static enum MHD_Result on_next(struct rt *rt, struct req *q, struct MHD_Connection *c)
{
	if (q->wake) {
		q->wake = false;
		if (q->gen != rt->gen || rt->phase == PH_DOWN)
			return reply_err(c, 410, "Runtime.Gone", "the runtime that asked was stopped");
		if (rt->cur.active && !rt->cur.handed && rt->phase == PH_READY)
			return give_event(rt, c);
		if (rt->parked) /* superseded by a newer /next */
			return reply_err(c, 409, "InvalidStateTransition",
					 "another /next is waiting; this one is superseded");
		/* Spurious: wait on. */
	} else {
		if (rt->phase == PH_INIT) {
			uint64_t init_us = (uint64_t)(run_now_us() - rt->init_start_us);

			rt->phase = PH_READY;
			rlog(rt, "runtime initialised in %" PRIu64 " us", init_us);
			if (rt->first_init) {
				rt->first_init = false;
				rt->hooks.ready(rt->hooks.ud, init_us);
			}
		}
		if (rt->cur.active && rt->cur.handed) {
			char e[256];

			snprintf(e, sizeof(e), "Runtime.NoResponse: the runtime asked for the next event"
				 " without answering %s", rt->cur.id);
			decide(rt, HEARTH__INVOKE_STATUS__INVOKE_FUNCTION_ERROR, e, NULL, 0,
			       "the runtime asked for the next event without answering it", 0, 0);
		}
		if (rt->cur.active && !rt->cur.handed)
			return give_event(rt, c);
		if (rt->parked)
			wake_parked(rt); /* the older poller is answered 409 (it may be gone) */
	}
	q->parked = true;
	q->gen = rt->gen;
	rt->parked = q;
	MHD_suspend_connection(c);
	return MHD_YES;
}

/* Where a POST for id stands; NULL if it is the current, handed, undecided invocation. */
static enum MHD_Result check_id(struct rt *rt, struct MHD_Connection *c, const char *id, bool *ok)
{
	const char *why;

	*ok = false;
	if (rt->cur.active && rt->cur.handed && strcmp(rt->cur.id, id) == 0) {
		*ok = true;
		return MHD_YES;
	}
	why = recent_why(rt, id);
	if (why)
		return reply_err(c, 409, "InvalidStateTransition",
				 "invocation %s is already decided: %s", id, why);
	if (rt->cur.active && strcmp(rt->cur.id, id) == 0)
		return reply_err(c, 400, "InvalidStateTransition",
				 "invocation %s was not handed out by /next yet", id);
	return reply_err(c, 400, "InvalidRequestID", "no invocation %s is in progress", id);
}

static void error_type(struct MHD_Connection *c, char *out, size_t n)
{
	const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						    "Lambda-Runtime-Function-Error-Type");
	size_t k = 0;

	/* Echoed to the caller: keep it printable, short, and free of quotes. */
	for (const char *s = t ? t : ""; *s && k + 1 < n && k < RT_MAX_ERROR_TYPE; s++)
		if (*s > 0x20 && *s < 0x7f && *s != '"' && *s != '\\')
			out[k++] = *s;
	out[k] = 0;
	if (!k)
		snprintf(out, n, "Unhandled");
}

static enum MHD_Result on_post_done(struct rt *rt, struct req *q, struct MHD_Connection *c)
{
	char type[RT_MAX_ERROR_TYPE + 1], e[512];
	bool ok;
	enum MHD_Result ret;

	if (q->route == RO_INIT_ERROR) {
		if (rt->phase != PH_INIT)
			return reply_err(c, 403, "InvalidStateTransition",
					 "init/error is only accepted before the first /next");
		if (q->too_big)
			return reply_err(c, 413, "RequestEntityTooLarge",
					 "init error body exceeds %zu bytes", q->limit);
		error_type(c, type, sizeof(type));
		ret = reply_accepted(c);
		snprintf(e, sizeof(e), "the runtime reported an init error (%s): %.*s", type,
			 (int)(q->len > 300 ? 300 : q->len), q->body ? (const char *)q->body : "");
		kill_runtime(rt);
		rt->phase = PH_DOWN;
		init_failed(rt, e);
		return ret;
	}
	ret = check_id(rt, c, q->id, &ok);
	if (!ok)
		return ret;
	if (q->too_big) {
		snprintf(e, sizeof(e), "%s: the runtime's %s body exceeds %zu bytes",
			 q->route == RO_RESPONSE ? "Function.ResponseSizeTooLarge" :
						   "Runtime.ErrorTooLarge",
			 q->route == RO_RESPONSE ? "response" : "error", q->limit);
		ret = reply_err(c, 413, "RequestEntityTooLarge", "body exceeds %zu bytes", q->limit);
		decide(rt, HEARTH__INVOKE_STATUS__INVOKE_RESPONSE_TOO_LARGE, e, NULL, 0,
		       "its response was too large", 0, 0);
		return ret;
	}
	ret = reply_accepted(c);
	if (q->route == RO_RESPONSE) {
		decide(rt, HEARTH__INVOKE_STATUS__INVOKE_OK, NULL, q->body, q->len,
		       "a response was already accepted", 0, 0);
	} else {
		error_type(c, type, sizeof(type));
		decide(rt, HEARTH__INVOKE_STATUS__INVOKE_FUNCTION_ERROR, type, q->body, q->len,
		       "an error was already accepted", 0, 0);
	}
	return ret;
}

/* Parses the URL into a route; 0 or the HTTP status to refuse it with. */
static unsigned route_of(const char *url, const char *method, struct req *q)
{
	static const char inv[] = RT_API_PREFIX "/invocation/";
	const char *rest, *slash;

	if (strcmp(url, RT_API_PREFIX "/invocation/next") == 0) {
		q->route = RO_NEXT;
		return strcmp(method, "GET") == 0 ? 0 : 405;
	}
	if (strcmp(url, RT_API_PREFIX "/init/error") == 0) {
		q->route = RO_INIT_ERROR;
		return strcmp(method, "POST") == 0 ? 0 : 405;
	}
	if (strncmp(url, inv, sizeof(inv) - 1) != 0)
		return 404;
	rest = url + sizeof(inv) - 1;
	slash = strchr(rest, '/');
	if (!slash || (size_t)(slash - rest) > RT_MAX_REQUEST_ID || slash == rest)
		return 404;
	memcpy(q->id, rest, (size_t)(slash - rest));
	q->id[slash - rest] = 0;
	if (strcmp(slash, "/response") == 0)
		q->route = RO_RESPONSE;
	else if (strcmp(slash, "/error") == 0)
		q->route = RO_ERROR;
	else
		return 404;
	if (!rt_valid_request_id(q->id))
		return 400;
	return strcmp(method, "POST") == 0 ? 0 : 405;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *data,
				  size_t *data_size, void **con_cls)
{
	struct rt *rt = cls;
	struct req *q = *con_cls;

	(void)version;
	if (!q) {
		struct req tmp = { 0 };
		unsigned st = route_of(url, method, &tmp);
		const char *cl;

		if (st == 404)
			return reply_err(c, 404, "NotFound", "no such Runtime API path");
		if (st == 405)
			return reply_err(c, 405, "MethodNotAllowed", "wrong method for this path");
		if (st)
			return reply_err(c, 400, "InvalidRequestID",
					 "request ids are 1 to %d of [A-Za-z0-9._-]", RT_MAX_REQUEST_ID);
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		*q = tmp;
		q->conn = c;
		q->limit = rt->max_out;
		*con_cls = q;
		/*
		 * /next is answered from the next call, once libmicrohttpd has the
		 * whole request: a response queued (or a suspend) before that makes
		 * it close the connection, and the runtime reconnect every time.
		 */
		if (q->route == RO_NEXT)
			return MHD_YES;
		/* A declared length over the limit is refused before any body byte is read. */
		cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > q->limit) {
			q->too_big = true;
			return on_post_done(rt, q, c);
		}
		if (q->route != RO_INIT_ERROR) {
			bool ok;
			enum MHD_Result ret = check_id(rt, c, q->id, &ok);

			if (!ok)
				return ret; /* refused before the body is read */
			/* One body at a time per invocation: memory stays within one response. */
			if (rt->cur.uploader)
				return reply_err(c, 409, "InvalidStateTransition",
						 "another answer for %s is being received", q->id);
			rt->cur.uploader = q;
		}
		return MHD_YES;
	}
	if (q->route == RO_NEXT)
		return on_next(rt, q, c);
	if (*data_size) {
		size_t n = *data_size;

		*data_size = 0;
		if (q->too_big)
			return MHD_YES;
		if (q->len + n > q->limit) {
			q->too_big = true;
			free(q->body);
			q->body = NULL;
			q->len = 0;
			return MHD_YES;
		}
		uint8_t *nb = realloc(q->body, q->len + n);

		if (!nb)
			return MHD_NO;
		memcpy(nb + q->len, data, n);
		q->body = nb;
		q->len += n;
		return MHD_YES;
	}
	return on_post_done(rt, q, c);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct rt *rt = cls;
	struct req *q = *con_cls;

	(void)c;
	(void)toe;
	if (!q)
		return;
	if (rt->parked == q)
		rt->parked = NULL;
	if (rt->cur.uploader == q)
		rt->cur.uploader = NULL;
	free(q->body);
	free(q);
	*con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct rt *rt = cls;
	char buf[256];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = 0;
	rlog(rt, "runtime api: %s", buf);
}

int rt_open(struct rt **out, const char *addr, const struct rt_hooks *hooks, char *err,
	    size_t errlen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[48];
	const char *colon = strrchr(addr, ':');
	unsigned long port;
	char *end;
	struct rt *rt;
	const union MHD_DaemonInfo *info;

	if (!colon || (size_t)(colon - addr) >= sizeof(host)) {
		snprintf(err, errlen, "runtime API address must be HOST:PORT (got %s)", addr);
		return -EINVAL;
	}
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = 0;
	port = strtoul(colon + 1, &end, 10);
	if (*end || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		snprintf(err, errlen, "runtime API address must be IPv4:PORT (got %s)", addr);
		return -EINVAL;
	}
	sa.sin_port = htons((uint16_t)port);
	rt = calloc(1, sizeof(*rt));
	if (!rt)
		return -ENOMEM;
	rt->hooks = *hooks;
	rt->pid = -1;
	rt->log_fd = -1;
	rt->status_fd = -1;
	rt->epfd = -1;
	/*
	 * External epoll mode: MHD's sockets sit behind one epoll fd that the
	 * agent's poll loop watches; callbacks run inside rt_handle(). Never TLS
	 * (the static agent links no TLS library: see mhd_notls.c).
	 */
	rt->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0,
				 NULL, NULL, on_request, rt,
				 MHD_OPTION_EXTERNAL_LOGGER, mhd_log, rt,
				 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
				 /* idle keep-alive connections only; a waiting /next is suspended */
				 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
				 MHD_OPTION_CONNECTION_LIMIT, (unsigned)RT_MAX_CONNECTIONS,
				 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
				 MHD_OPTION_NOTIFY_COMPLETED, on_completed, rt,
				 MHD_OPTION_END);
	if (!rt->d) {
		snprintf(err, errlen, "cannot serve the Runtime API on %s (address in use?)", addr);
		free(rt);
		return -EADDRINUSE;
	}
	info = MHD_get_daemon_info(rt->d, MHD_DAEMON_INFO_EPOLL_FD);
	rt->epfd = info ? info->epoll_fd : -1;
	info = MHD_get_daemon_info(rt->d, MHD_DAEMON_INFO_BIND_PORT);
	snprintf(rt->addr, sizeof(rt->addr), "%s:%u", host,
		 info ? (unsigned)info->port : (unsigned)port);
	*out = rt;
	return 0;
}

const char *rt_address(const struct rt *rt)
{
	return rt->addr;
}

static void spec_free(struct rt *rt)
{
	free(rt->bootstrap);
	free(rt->workdir);
	free(rt->arn);
	for (char **p = rt->argv; p && *p; p++)
		free(*p);
	free(rt->argv);
	for (char **p = rt->envp; p && *p; p++)
		free(*p);
	free(rt->envp);
	rt->bootstrap = rt->workdir = rt->arn = NULL;
	rt->argv = rt->envp = NULL;
	rt->configured = false;
}

static char **strv_dup(char *const *v, size_t extra)
{
	size_t n = 0;
	char **out;

	while (v && v[n])
		n++;
	out = calloc(n + extra + 1, sizeof(char *));
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!(out[i] = strdup(v[i])))
			return out; /* caller sees the hole as the end; spec_free frees what is there */
	return out;
}

static const char *env_get(char *const *envp, const char *key)
{
	size_t k = strlen(key);

	for (size_t i = 0; envp && envp[i]; i++)
		if (strncmp(envp[i], key, k) == 0 && envp[i][k] == '=')
			return envp[i] + k + 1;
	return NULL;
}

static void env_default(char **envp, const char *key, const char *value)
{
	size_t n = 0;

	if (env_get(envp, key))
		return;
	while (envp[n])
		n++;
	if (asprintf(&envp[n], "%s=%s", key, value) < 0)
		envp[n] = NULL;
}

static void env_set(char **envp, const char *key, const char *value)
{
	size_t k = strlen(key), n;

	for (n = 0; envp[n]; n++) {
		if (strncmp(envp[n], key, k) == 0 && envp[n][k] == '=') {
			char *s;

			if (asprintf(&s, "%s=%s", key, value) >= 0) {
				free(envp[n]);
				envp[n] = s;
			}
			return;
		}
	}
	if (asprintf(&envp[n], "%s=%s", key, value) < 0)
		envp[n] = NULL;
}

int rt_start(struct rt *rt, const struct rt_spec *s, char *err, size_t errlen)
{
	const char *region, *name;

	rt_stop(rt);
	rt->bootstrap = strdup(s->bootstrap);
	rt->workdir = strdup(s->workdir ? s->workdir : "/");
	rt->uid = s->uid;
	rt->gid = s->gid;
	rt->argv = strv_dup(s->argv, 0);
	rt->envp = strv_dup(s->envp, 8);
	if (!rt->bootstrap || !rt->workdir || !rt->argv || !rt->envp) {
		spec_free(rt);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	env_set(rt->envp, "AWS_LAMBDA_RUNTIME_API", rt->addr);
	env_default(rt->envp, "LAMBDA_TASK_ROOT", rt->workdir);
	env_default(rt->envp, "_HANDLER", "");
	env_default(rt->envp, "AWS_REGION", "us-east-1");
	env_default(rt->envp, "AWS_DEFAULT_REGION", env_get(rt->envp, "AWS_REGION"));
	env_default(rt->envp, "AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
	env_default(rt->envp, "AWS_LAMBDA_FUNCTION_NAME", "function");
	env_default(rt->envp, "TZ", ":UTC");
	region = env_get(rt->envp, "AWS_REGION");
	name = env_get(rt->envp, "AWS_LAMBDA_FUNCTION_NAME");
	if (s->function_arn && s->function_arn[0])
		rt->arn = strdup(s->function_arn);
	else if (asprintf(&rt->arn, "arn:aws:lambda:%s:000000000000:function:%s", region, name) < 0)
		rt->arn = NULL;
	if (!rt->arn) {
		spec_free(rt);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rt->max_out = s->max_out;
	rt->max_log = s->max_log;
	rt->init_timeout_ms = s->init_timeout_ms;
	rt->configured = true;
	rt->first_init = true;
	log_reset(rt);
	if (spawn(rt, err, errlen) < 0) {
		rt->first_init = false;
		spec_free(rt);
		return -EIO;
	}
	return 0;
}

void rt_stop(struct rt *rt)
{
	kill_runtime(rt);
	if (rt->cur.active) {
		remember(rt, rt->cur.id, "the runtime was stopped");
		inv_free(&rt->cur);
	}
	wake_parked(rt);
	rt->phase = PH_DOWN;
	rt->first_init = false;
	spec_free(rt);
}

bool rt_configured(const struct rt *rt)
{
	return rt->configured;
}

bool rt_can_invoke(const struct rt *rt)
{
	return rt->configured && !rt->cur.active && !rt->first_init;
}

bool rt_first_init(const struct rt *rt)
{
	return rt->first_init;
}

bool rt_busy(const struct rt *rt)
{
	return rt->cur.active || rt->first_init;
}

void rt_invoke(struct rt *rt, uint64_t seq, char *id, uint8_t *payload, size_t len,
	       uint32_t timeout_ms)
{
	struct timespec ts;
	struct inv *v = &rt->cur;

	memset(v, 0, sizeof(*v));
	v->active = true;
	v->seq = seq;
	v->id = id;
	v->payload = payload;
	v->len = len;
	v->timeout_ms = timeout_ms;
	v->accept_us = run_now_us();
	v->deadline_us = v->accept_us + (int64_t)timeout_ms * 1000;
	clock_gettime(CLOCK_REALTIME, &ts);
	v->deadline_wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
	make_trace(v);
	if (rt->phase == PH_DOWN && rt->pid <= 0) {
		char err[256];

		/* Left down by a failed (re)start: try again for this invocation. */
		if (spawn(rt, err, sizeof(err)) < 0) {
			init_failed(rt, err);
			return;
		}
	}
	if (rt->parked && rt->phase == PH_READY)
		wake_parked(rt);
}

void rt_forget(struct rt *rt)
{
	if (rt->cur.active) {
		remember(rt, rt->cur.id, "the host connection closed before it finished");
		inv_free(&rt->cur);
	}
}

int rt_pollfds(const struct rt *rt, struct pollfd *p)
{
	int n = 0;

	if (rt->epfd >= 0)
		p[n++] = (struct pollfd){ .fd = rt->epfd, .events = POLLIN };
	if (rt->log_fd >= 0)
		p[n++] = (struct pollfd){ .fd = rt->log_fd, .events = POLLIN };
	return n;
}

void rt_handle(struct rt *rt, const struct pollfd *p, int n)
{
	for (int i = 0; i < n; i++) {
		if (p[i].fd == rt->log_fd && p[i].revents)
			log_drain(rt);
	}
	/* Always: a resumed connection or an MHD timeout may be due without an fd event. */
	rt->need_run = false;
	MHD_run(rt->d);
}

int rt_check(struct rt *rt)
{
	int64_t now = run_now_us(), next = -1;
	MHD_UNSIGNED_LONG_LONG mt;
	int ms = -1;

	if (rt->cur.active && now >= rt->cur.deadline_us) {
		char e[128];

		snprintf(e, sizeof(e), "Task timed out after %u ms; the runtime is restarted",
			 rt->cur.timeout_ms);
		decide(rt, HEARTH__INVOKE_STATUS__INVOKE_TIMEOUT, e, NULL, 0,
		       "its deadline passed", 0, 0);
		kill_runtime(rt);
	}
	if (rt->phase == PH_INIT && rt->pid > 0 && !rt->killed && now >= rt->init_deadline_us) {
		char e[160];

		snprintf(e, sizeof(e), "the runtime did not ask for an event (GET %s/invocation/next)"
			 " within %u ms", RT_API_PREFIX, rt->init_timeout_ms);
		kill_runtime(rt);
		init_failed(rt, e);
	}
	if (rt->cur.active)
		next = rt->cur.deadline_us;
	if (rt->phase == PH_INIT && rt->pid > 0 && !rt->killed &&
	    (next < 0 || rt->init_deadline_us < next))
		next = rt->init_deadline_us;
	if (next >= 0) {
		int64_t left = next - now;

		ms = left <= 0 ? 0 : (int)((left + 999) / 1000);
	}
	if (MHD_get_timeout(rt->d, &mt) == MHD_YES && (ms < 0 || mt < (MHD_UNSIGNED_LONG_LONG)ms))
		ms = (int)mt;
	if (rt->need_run)
		ms = 0;
	return ms;
}

bool rt_on_exit(struct rt *rt, pid_t pid, int wstatus)
{
	char e[256];
	bool was_init;

	if (pid != rt->pid || pid <= 0)
		return false;
	kill(-pid, SIGKILL); /* whatever it left in its group goes with it */
	log_drain(rt);
	if (rt->log_fd >= 0) {
		close(rt->log_fd);
		rt->log_fd = -1;
	}
	rt->pid = -1;
	if (rt->status_fd >= 0) {
		close(rt->status_fd);
		rt->status_fd = -1;
	}
	was_init = rt->phase == PH_INIT;
	rt->phase = PH_DOWN;
	wake_parked(rt);
	if (rt->exec_err[0])
		snprintf(e, sizeof(e), "%s", rt->exec_err);
	else if (WIFSIGNALED(wstatus))
		snprintf(e, sizeof(e), "killed by signal %d (%s)", WTERMSIG(wstatus),
			 strsignal(WTERMSIG(wstatus)));
	else
		snprintf(e, sizeof(e), "exited with status %d", WEXITSTATUS(wstatus));
	if (!rt->configured || (rt->stay_down && !rt->cur.active))
		return true; /* stopped, or its init failure is already reported */
	if (rt->stay_down)
		goto again; /* an invocation came while the failed runtime was dying */
	if (was_init && !rt->killed) {
		char m[300];

		snprintf(m, sizeof(m), "the runtime %s during init", e);
		init_failed(rt, m);
		return true; /* left down; the next invocation starts it again */
	}
	if (rt->cur.active && !rt->killed) {
		char m[300];

		snprintf(m, sizeof(m), "Runtime.ExitError: the runtime %s", e);
		rlog(rt, "%s; starting it again", m);
		decide(rt, HEARTH__INVOKE_STATUS__INVOKE_FUNCTION_ERROR, m, NULL, 0,
		       "the runtime exited", WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 0,
		       WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
	} else if (!rt->killed) {
		rlog(rt, "the runtime %s while idle; starting it again", e);
	}
again:
	/* Started again at once, as Lambda does after a crash or a timeout. */
	if (rt->pid <= 0 && spawn(rt, e, sizeof(e)) < 0)
		init_failed(rt, e);
	return true;
}

void rt_close(struct rt *rt)
{
	if (!rt)
		return;
	rt_stop(rt);
	if (rt->log_fd >= 0)
		close(rt->log_fd);
	if (rt->status_fd >= 0)
		close(rt->status_fd);
	if (rt->d) {
		MHD_run(rt->d); /* lets a resumed /next finish before the stop */
		MHD_stop_daemon(rt->d);
	}
	log_reset(rt);
	free(rt);
}
