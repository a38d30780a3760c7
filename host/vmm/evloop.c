#include "evloop.h"

#include <err.h>
#include <errno.h>
#include <sys/epoll.h>

#include "vm.h"

void ev_init(struct evloop *l)
{
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		err(VMM_EXIT_ERROR, "epoll_create1 failed");
}

int ev_add(struct evloop *l, struct ev_handler *h, int fd, uint32_t events)
{
	h->fd = fd;
	struct epoll_event e = { .events = events, .data.ptr = h };
	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
}

int ev_mod(struct evloop *l, struct ev_handler *h, uint32_t events)
{
	struct epoll_event e = { .events = events, .data.ptr = h };
	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, h->fd, &e) < 0 ? -errno : 0;
}

void ev_del(struct evloop *l, struct ev_handler *h)
{
	if (h->fd >= 0)
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, h->fd, NULL);
}

int ev_run_once(struct evloop *l, int timeout_ms)
{
	struct epoll_event ev[32];
	int n = epoll_wait(l->epfd, ev, 32, timeout_ms);
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		err(VMM_EXIT_ERROR, "epoll_wait failed");
	}
	for (int i = 0; i < n; i++) {
		struct ev_handler *h = ev[i].data.ptr;
		h->cb(h, ev[i].events);
	}
	return n;
}
