/*
 * evloop.h - the main thread's epoll loop. Handlers are structs embedded in
 * their owner, so registering allocates nothing; the owner must ev_del()
 * before freeing. An ev_del()ed handler may still get one event from the
 * batch ev_run_once is dispatching, so its cb must stay callable (and make
 * nothing of it). Only the main thread calls these.
 */
#ifndef HEARTH_VMM_EVLOOP_H
#define HEARTH_VMM_EVLOOP_H

#include <stdint.h>

struct ev_handler {
	void (*cb)(struct ev_handler *h, uint32_t events);
	int fd;
};

struct evloop {
	int epfd;
};

void ev_init(struct evloop *l);
/* Returns 0 or -errno. */
int ev_add(struct evloop *l, struct ev_handler *h, int fd, uint32_t events);
int ev_mod(struct evloop *l, struct ev_handler *h, uint32_t events);
void ev_del(struct evloop *l, struct ev_handler *h);
/* Waits up to timeout_ms and dispatches; returns the number of events handled. */
int ev_run_once(struct evloop *l, int timeout_ms);

#endif
