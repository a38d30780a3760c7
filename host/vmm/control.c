#include "control.h"

#include <err.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fileref.h"
#include "vm.h"

static void drop_fds(struct control_client *cl)
{
	for (int i = 0; i < cl->nfds; i++)
		close(cl->fds[i]);
	cl->nfds = 0;
}

static void client_close(struct control_client *cl)
{
	ev_del(cl->ctl->loop, &cl->h);
	close(cl->fd);
	drop_fds(cl);
	cl->used = false;
}

static void send_reply(struct control_client *cl, const char *reply)
{
	char out[CONTROL_LINE_MAX + 2];
	int n = snprintf(out, sizeof(out), "%s\n", reply);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(out))
		n = (int)sizeof(out) - 1;
	/* Replies are short; a client that does not read them loses its connection. */
	if (send(cl->fd, out, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
		client_close(cl);
}

static void run_line(struct control_client *cl, char *line)
{
	char *argv[CONTROL_MAX_ARGS + 1];
	int argc = 0;
	char *save = NULL;
	for (char *t = strtok_r(line, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
		if (argc == CONTROL_MAX_ARGS) {
			send_reply(cl, "ERR too many arguments");
			return;
		}
		argv[argc++] = t;
	}
	argv[argc] = NULL;
	if (argc == 0) {
		send_reply(cl, "ERR empty command");
		return;
	}
	char reply[CONTROL_LINE_MAX];
	reply[0] = 0;
	/* Files that came with this line are "@0", "@1", ... for this command only. */
	for (int i = 0; i < cl->nfds; i++) {
		char name[16];
		snprintf(name, sizeof(name), "@%d", i);
		if (fref_register(name, cl->fds[i]) < 0)
			close(cl->fds[i]);
	}
	cl->nfds = 0;
	cl->ctl->exec(cl->ctl->ctx, argc, argv, reply, sizeof(reply));
	fref_forget("@");
	send_reply(cl, reply);
}

static void client_event(struct ev_handler *h, uint32_t events)
{
	struct control_client *cl =
		(struct control_client *)((char *)h - offsetof(struct control_client, h));
	(void)events;
	if (!cl->used)
		return;
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(CONTROL_MAX_FDS * sizeof(int))];
	} cm;
	struct iovec iov = { cl->buf + cl->len, sizeof(cl->buf) - cl->len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			     .msg_controllen = sizeof(cm.b) };
	ssize_t n = recvmsg(cl->fd, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); n > 0 && c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (cl->nfds < CONTROL_MAX_FDS)
				cl->fds[cl->nfds++] = fd;
			else
				close(fd);
		}
	}
	if (mh.msg_flags & MSG_CTRUNC) {
		send_reply(cl, "ERR too many files passed with one command");
		if (cl->used)
			client_close(cl);
		return;
	}
	if (n <= 0) {
		client_close(cl);
		return;
	}
	cl->len += (size_t)n;
	for (;;) {
		char *nl = memchr(cl->buf, '\n', cl->len);
		if (!nl)
			break;
		*nl = 0;
		size_t used = (size_t)(nl - cl->buf) + 1;
		run_line(cl, cl->buf);
		if (!cl->used)
			return;
		memmove(cl->buf, cl->buf + used, cl->len - used);
		cl->len -= used;
	}
	if (cl->len == sizeof(cl->buf)) {
		send_reply(cl, "ERR line too long");
		if (cl->used)
			client_close(cl);
	}
}

static void listen_event(struct ev_handler *h, uint32_t events)
{
	struct control *c = (struct control *)((char *)h - offsetof(struct control, h));
	(void)events;
	int fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++) {
		struct control_client *cl = &c->clients[i];
		if (cl->used)
			continue;
		memset(cl, 0, sizeof(*cl));
		cl->used = true;
		cl->fd = fd;
		cl->ctl = c;
		cl->h.cb = client_event;
		if (ev_add(c->loop, &cl->h, fd, EPOLLIN) < 0) {
			close(fd);
			cl->used = false;
		}
		return;
	}
	const char busy[] = "ERR too many control connections\n";
	if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* nothing more to do for it */
	}
	close(fd);
}

void control_init(struct control *c, struct evloop *loop, const char *path, control_exec_fn exec,
		  void *ctx)
{
	memset(c, 0, sizeof(*c));
	c->loop = loop;
	c->exec = exec;
	c->ctx = ctx;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		errx(VMM_EXIT_USAGE, "control socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	snprintf(c->path, sizeof(c->path), "%s", path);
	unlink(path);
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->listen_fd < 0)
		err(VMM_EXIT_ERROR, "control: socket failed");
	if (bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		err(VMM_EXIT_ERROR, "control: bind %s failed", path);
	if (listen(c->listen_fd, 8) < 0)
		err(VMM_EXIT_ERROR, "control: listen failed");
	c->h.cb = listen_event;
	if (ev_add(loop, &c->h, c->listen_fd, EPOLLIN) < 0)
		err(VMM_EXIT_ERROR, "control: epoll_ctl failed");
}

void control_shutdown(struct control *c)
{
	if (!c->loop)
		return;
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (c->clients[i].used)
			client_close(&c->clients[i]);
	ev_del(c->loop, &c->h);
	close(c->listen_fd);
	unlink(c->path);
	c->loop = NULL;
}

int control_client_main(const char *path, int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		errx(VMM_EXIT_USAGE, "control socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		err(VMM_EXIT_ERROR, "cannot connect to control socket %s", path);
	char line[CONTROL_LINE_MAX];
	size_t len = 0;
	for (int i = 0; i < argc; i++) {
		int n = snprintf(line + len, sizeof(line) - len, "%s%s", i ? " " : "", argv[i]);
		if (n < 0 || (size_t)n >= sizeof(line) - len - 1)
			errx(VMM_EXIT_USAGE, "command too long");
		len += (size_t)n;
	}
	line[len++] = '\n';
	if (write(fd, line, len) != (ssize_t)len)
		err(VMM_EXIT_ERROR, "control: write failed");
	char reply[CONTROL_LINE_MAX + 1];
	size_t got = 0;
	while (got < sizeof(reply) - 1) {
		ssize_t n = read(fd, reply + got, 1);
		if (n <= 0 || reply[got] == '\n')
			break;
		got++;
	}
	reply[got] = 0;
	close(fd);
	printf("%s\n", reply);
	return strncmp(reply, "OK", 2) == 0 ? 0 : 1;
}
