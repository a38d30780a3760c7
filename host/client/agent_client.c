/*
 * agent_client.c - host side of the agent protocol; see agent_client.h.
 */
#include "agent_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "msg.h"

struct agent_conn {
	int fd;
	uint64_t next_seq;
	size_t max_frame;     /* what we accept */
	size_t peer_max;      /* what the agent accepts */
	char last_error[256];
	int last_error_code;
	/* seqs of pipelined invokes not yet collected, oldest first */
	uint64_t pending[256];
	size_t npending;
};

const char *agent_strerror(int err)
{
	switch (err) {
	case AGENT_EREMOTE: return "agent returned an error";
	case AGENT_EPROTO: return "unexpected reply from agent";
	case AGENT_ECONNECT: return "cannot connect to agent";
	default: return msg_strerror(err);
	}
}

const char *agent_invoke_status_name(int status)
{
	static const char *const names[] = {
		"OK", "FunctionError", "Crashed", "Timeout", "ResponseTooLarge",
		"SpawnFailed", "NotConfigured", "Rejected", "InitError",
	};

	if (status < 0 || (size_t)status >= sizeof(names) / sizeof(names[0]))
		return "Unknown";
	return names[status];
}

struct agent_conn *agent_conn_from_fd(int fd)
{
	struct agent_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	/*
	 * Start each connection at a random sequence number: over virtio-serial
	 * there is no connection boundary, so a late reply meant for an earlier
	 * connection can arrive here, and must not match one of ours.
	 */
	{
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		c->next_seq = (((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16) ^
				(uint64_t)(uintptr_t)c) << 16) | 1;
	}
	c->max_frame = FRAME_DEFAULT_MAX;
	c->peer_max = FRAME_DEFAULT_MAX;
	return c;
}

void agent_close(struct agent_conn *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

int agent_fd(const struct agent_conn *c) { return c->fd; }
const char *agent_last_error(const struct agent_conn *c) { return c->last_error; }
int agent_last_error_code(const struct agent_conn *c) { return c->last_error_code; }

void agent_set_max_frame(struct agent_conn *c, size_t max)
{
	c->max_frame = max > FRAME_ABSOLUTE_MAX ? FRAME_ABSOLUTE_MAX : max;
}

static int64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : frame_now_ms() + timeout_ms;
}

static void set_error(struct agent_conn *c, int code, const char *prefix, const char *detail)
{
	c->last_error_code = code;
	snprintf(c->last_error, sizeof(c->last_error), "%s%s", prefix, detail ? detail : "");
}

static int unix_connect_once(const char *path, int *out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return AGENT_ECONNECT;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return AGENT_ECONNECT;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		return AGENT_ECONNECT;
	}
	*out = fd;
	return AGENT_OK;
}

static int unix_connect(const char *path, int timeout_ms, int *out)
{
	int64_t deadline = deadline_of(timeout_ms);

	for (;;) {
		int rc = unix_connect_once(path, out);

		if (rc == AGENT_OK)
			return rc;
		/* The agent may not be listening yet: retry while it comes up. */
		if ((errno != ENOENT && errno != ECONNREFUSED) ||
		    (deadline >= 0 && frame_now_ms() >= deadline))
			return AGENT_ECONNECT;
		usleep(5000);
	}
}

int agent_connect_unix(const char *path, int timeout_ms, struct agent_conn **out)
{
	int fd, rc = unix_connect(path, timeout_ms, &fd);

	*out = NULL;
	if (rc)
		return rc;
	*out = agent_conn_from_fd(fd);
	return *out ? AGENT_OK : FRAME_ENOMEM;
}

int agent_connect_hybrid_vsock(const char *path, uint32_t port, int timeout_ms,
			       struct agent_conn **out)
{
	int64_t deadline = deadline_of(timeout_ms);
	char line[64];
	size_t n = 0;
	int fd, rc;

	*out = NULL;
	rc = unix_connect(path, timeout_ms, &fd);
	if (rc)
		return rc;
	snprintf(line, sizeof(line), "CONNECT %u\n", port);
	if (send(fd, line, strlen(line), MSG_NOSIGNAL) != (ssize_t)strlen(line))
		goto fail;
	/* Read the "OK <n>\n" line byte by byte so no protocol bytes are consumed. */
	while (n < sizeof(line) - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline < 0 ? -1 : deadline - frame_now_ms();

		if (deadline >= 0 && left <= 0)
			goto fail;
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		if (read(fd, line + n, 1) != 1)
			goto fail;
		if (line[n++] == '\n')
			break;
	}
	line[n] = 0;
	if (strncmp(line, "OK ", 3) != 0)
		goto fail;
	*out = agent_conn_from_fd(fd);
	return *out ? AGENT_OK : FRAME_ENOMEM;
fail:
	close(fd);
	errno = ECONNREFUSED;
	return AGENT_ECONNECT;
}

static int send_env(struct agent_conn *c, Hearth__Envelope *env, int64_t deadline)
{
	env->seq = c->next_seq++;
	return msg_send(c->fd, env, c->peer_max, deadline);
}

static bool is_pending(const struct agent_conn *c, uint64_t seq)
{
	for (size_t i = 0; i < c->npending; i++)
		if (c->pending[i] == seq)
			return true;
	return false;
}

/*
 * Receives the reply to seq. Log frames are skipped; an Error carrying seq
 * (or seq 0: a connection-level error) becomes AGENT_EREMOTE.
 */
static int recv_reply(struct agent_conn *c, uint64_t seq, Hearth__Envelope__MsgCase want,
		      int64_t deadline, Hearth__Envelope **out)
{
	for (;;) {
		Hearth__Envelope *e;
		int rc = msg_recv(c->fd, c->max_frame, deadline, &e);

		if (rc)
			return rc;
		if (e->msg_case == HEARTH__ENVELOPE__MSG_LOG) {
			msg_free(e);
			continue;
		}
		if (e->msg_case == HEARTH__ENVELOPE__MSG_ERROR && (e->seq == seq || e->seq == 0)) {
			set_error(c, e->error->code, "", e->error->message);
			msg_free(e);
			return AGENT_EREMOTE;
		}
		if (e->seq != seq && !is_pending(c, e->seq)) {
			/* A stale reply to a request this connection no longer waits for. */
			msg_free(e);
			continue;
		}
		if (e->seq != seq || e->msg_case != want) {
			char what[64];

			snprintf(what, sizeof(what), "%s (seq %llu)", msg_name(e),
				 (unsigned long long)e->seq);
			set_error(c, 0, "unexpected reply: ", what);
			msg_free(e);
			return AGENT_EPROTO;
		}
		*out = e;
		return AGENT_OK;
	}
}

static int transact(struct agent_conn *c, Hearth__Envelope *req, Hearth__Envelope__MsgCase want,
		    int timeout_ms, Hearth__Envelope **out)
{
	int64_t deadline = deadline_of(timeout_ms);
	int rc = send_env(c, req, deadline);

	if (rc)
		return rc;
	return recv_reply(c, req->seq, want, deadline, out);
}

int agent_hello(struct agent_conn *c, int timeout_ms, char **software)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT, *rep;
	Hearth__Hello hello = HEARTH__HELLO__INIT;
	int rc;

	hello.protocol_version = HEARTH_PROTOCOL_VERSION;
	hello.max_frame = (uint32_t)c->max_frame;
	hello.software = "hearth-host " HEARTH_VERSION;
	env.msg_case = HEARTH__ENVELOPE__MSG_HELLO;
	env.hello = &hello;
	rc = transact(c, &env, HEARTH__ENVELOPE__MSG_HELLO, timeout_ms, &rep);
	if (rc)
		return rc;
	if (rep->hello->protocol_version != HEARTH_PROTOCOL_VERSION) {
		char v[16];

		snprintf(v, sizeof(v), "%u", rep->hello->protocol_version);
		set_error(c, HEARTH__ERROR_CODE__ERR_VERSION_MISMATCH,
			  "agent speaks protocol version ", v);
		msg_free(rep);
		return AGENT_EREMOTE;
	}
	if (rep->hello->max_frame && rep->hello->max_frame < c->peer_max)
		c->peer_max = rep->hello->max_frame;
	if (software)
		*software = strdup(rep->hello->software ? rep->hello->software : "");
	msg_free(rep);
	return AGENT_OK;
}

int agent_configure(struct agent_conn *c, const struct agent_config *cfg, int timeout_ms,
		    uint64_t *init_us)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT, *rep;
	Hearth__Configure conf = HEARTH__CONFIGURE__INIT;
	Hearth__KeyValue *kvs = NULL, **kvp = NULL;
	char **dup = NULL;
	int rc = FRAME_ENOMEM;

	conf.handler = (char *)cfg->handler;
	conf.args = (char **)cfg->args;
	conf.n_args = cfg->nargs;
	conf.workdir = (char *)(cfg->workdir ? cfg->workdir : "");
	conf.timeout_ms = cfg->timeout_ms;
	conf.max_response_bytes = cfg->max_response_bytes;
	conf.max_log_bytes = cfg->max_log_bytes;
	conf.init = (char *)(cfg->init ? cfg->init : "");
	conf.init_timeout_ms = cfg->init_timeout_ms;
	conf.mode = cfg->runtime ? HEARTH__HANDLER_MODE__HANDLER_RUNTIME :
				   HEARTH__HANDLER_MODE__HANDLER_EXEC;
	conf.function_arn = (char *)(cfg->function_arn ? cfg->function_arn : "");
	if (cfg->nenv) {
		kvs = calloc(cfg->nenv, sizeof(*kvs));
		kvp = calloc(cfg->nenv, sizeof(*kvp));
		dup = calloc(cfg->nenv, sizeof(*dup));
		if (!kvs || !kvp || !dup)
			goto out;
		for (size_t i = 0; i < cfg->nenv; i++) {
			char *eq;

			dup[i] = strdup(cfg->env[i]);
			if (!dup[i])
				goto out;
			hearth__key_value__init(&kvs[i]);
			eq = strchr(dup[i], '=');
			if (eq)
				*eq++ = 0;
			kvs[i].key = dup[i];
			kvs[i].value = eq ? eq : "";
			kvp[i] = &kvs[i];
		}
		conf.env = kvp;
		conf.n_env = cfg->nenv;
	}
	env.msg_case = HEARTH__ENVELOPE__MSG_CONFIGURE;
	env.configure = &conf;
	rc = transact(c, &env, HEARTH__ENVELOPE__MSG_READY, timeout_ms, &rep);
	if (rc == AGENT_OK) {
		if (init_us)
			*init_us = rep->ready->init_duration_us;
		msg_free(rep);
	}
out:
	if (dup)
		for (size_t i = 0; i < cfg->nenv; i++)
			free(dup[i]);
	free(dup);
	free(kvs);
	free(kvp);
	return rc;
}

void agent_result_free(struct agent_result *r)
{
	if (!r)
		return;
	free(r->request_id);
	free(r->body);
	free(r->logs);
	free(r->error);
	memset(r, 0, sizeof(*r));
}

static void *memdup(const void *p, size_t n)
{
	void *d = malloc(n ? n : 1);

	if (d && n)
		memcpy(d, p, n);
	return d;
}

static int take_result(Hearth__Envelope *e, struct agent_result *res)
{
	Hearth__InvokeResult *ir = e->invoke_result;

	memset(res, 0, sizeof(*res));
	res->request_id = strdup(ir->request_id ? ir->request_id : "");
	res->status = (int)ir->status;
	res->exit_code = ir->exit_code;
	res->signal = ir->signal;
	res->body = memdup(ir->body.data, ir->body.len);
	res->body_len = ir->body.len;
	res->logs = memdup(ir->logs.data, ir->logs.len);
	res->logs_len = ir->logs.len;
	res->logs_truncated = ir->logs_truncated;
	res->duration_us = ir->duration_us;
	res->max_rss_kb = ir->max_rss_kb;
	if (ir->error && ir->error[0])
		res->error = strdup(ir->error);
	if (!res->request_id || !res->body || !res->logs) {
		agent_result_free(res);
		return FRAME_ENOMEM;
	}
	return AGENT_OK;
}

int agent_invoke_send(struct agent_conn *c, const char *request_id, const void *payload,
		      size_t len, uint32_t timeout_ms)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Invoke inv = HEARTH__INVOKE__INIT;
	int rc;

	if (c->npending == sizeof(c->pending) / sizeof(c->pending[0]))
		return FRAME_EINVAL;
	inv.request_id = (char *)request_id;
	inv.payload.data = (uint8_t *)payload;
	inv.payload.len = len;
	inv.timeout_ms = timeout_ms;
	env.msg_case = HEARTH__ENVELOPE__MSG_INVOKE;
	env.invoke = &inv;
	rc = send_env(c, &env, -1);
	if (rc == AGENT_OK)
		c->pending[c->npending++] = env.seq;
	return rc;
}

int agent_invoke_recv(struct agent_conn *c, int wait_ms, struct agent_result *res)
{
	Hearth__Envelope *rep;
	uint64_t seq;
	int rc;

	memset(res, 0, sizeof(*res));
	if (c->npending == 0)
		return FRAME_EINVAL;
	seq = c->pending[0];
	rc = recv_reply(c, seq, HEARTH__ENVELOPE__MSG_INVOKE_RESULT, deadline_of(wait_ms), &rep);
	if (rc == FRAME_ETIMEDOUT)
		return rc; /* still pending: the caller may wait again */
	memmove(c->pending, c->pending + 1, (c->npending - 1) * sizeof(c->pending[0]));
	c->npending--;
	if (rc)
		return rc;
	rc = take_result(rep, res);
	msg_free(rep);
	return rc;
}

int agent_invoke(struct agent_conn *c, const char *request_id, const void *payload, size_t len,
		 uint32_t timeout_ms, int wait_ms, struct agent_result *res)
{
	int rc = agent_invoke_send(c, request_id, payload, len, timeout_ms);

	if (rc)
		return rc;
	return agent_invoke_recv(c, wait_ms, res);
}

int agent_ping(struct agent_conn *c, int timeout_ms, struct agent_pong *pong)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT, *rep;
	Hearth__Ping ping = HEARTH__PING__INIT;
	int rc;

	ping.nonce = c->next_seq * 2654435761u;
	env.msg_case = HEARTH__ENVELOPE__MSG_PING;
	env.ping = &ping;
	rc = transact(c, &env, HEARTH__ENVELOPE__MSG_PONG, timeout_ms, &rep);
	if (rc)
		return rc;
	if (rep->pong->nonce != ping.nonce) {
		set_error(c, 0, "pong nonce mismatch", NULL);
		rc = AGENT_EPROTO;
	} else if (pong) {
		pong->uptime_us = rep->pong->uptime_us;
		pong->queued = rep->pong->queued;
		pong->busy = rep->pong->busy;
	}
	msg_free(rep);
	return rc;
}

static int simple_ack(struct agent_conn *c, Hearth__Envelope *env, int timeout_ms)
{
	Hearth__Envelope *rep;
	int rc = transact(c, env, HEARTH__ENVELOPE__MSG_ACK, timeout_ms, &rep);

	if (rc == AGENT_OK)
		msg_free(rep);
	return rc;
}

int agent_reseed(struct agent_conn *c, const void *entropy, size_t len, int timeout_ms)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Reseed rs = HEARTH__RESEED__INIT;

	rs.entropy.data = (uint8_t *)entropy;
	rs.entropy.len = len;
	env.msg_case = HEARTH__ENVELOPE__MSG_RESEED;
	env.reseed = &rs;
	return simple_ack(c, &env, timeout_ms);
}

int agent_shutdown(struct agent_conn *c, int timeout_ms)
{
	Hearth__Envelope env = HEARTH__ENVELOPE__INIT;
	Hearth__Shutdown sd = HEARTH__SHUTDOWN__INIT;

	env.msg_case = HEARTH__ENVELOPE__MSG_SHUTDOWN;
	env.shutdown = &sd;
	return simple_ack(c, &env, timeout_ms);
}

int agent_send_raw(struct agent_conn *c, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t w = send(c->fd, p, len, MSG_NOSIGNAL);

		if (w < 0 && errno == ENOTSOCK)
			w = write(c->fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return FRAME_EIO;
		}
		p += w;
		len -= (size_t)w;
	}
	return AGENT_OK;
}

bool agent_conn_alive(struct agent_conn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN | POLLRDHUP };
	char b;

	if (poll(&pfd, 1, 0) < 0)
		return true; /* cannot tell: the call itself will */
	if (pfd.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL))
		return false;
	/* An idle agent sends nothing: readable means the end of the stream, or junk. */
	if (pfd.revents & POLLIN)
		return recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
	return true;
}
