/*
 * control.h - hearth-vmm's control socket: a Unix stream socket taking one
 * command per line and answering one line, "OK ..." or "ERR <why>".
 *
 *   status                 OK state=<running|paused> vcpus=N mem_mib=N ...
 *   pause                  OK paused          (vCPUs parked, I/O completed)
 *   resume                 OK running
 *   snapshot MEM STATE     OK snapshot mem=MEM state=STATE ms=N
 *                          (pauses around the snapshot, resumes if it was running)
 *   stop                   OK stopping        (hearth-vmm exits with code 4)
 *
 * Files may come with a command as SCM_RIGHTS (at most CONTROL_MAX_FDS, with
 * the line's first bytes): the command names them "@0", "@1", ... in order
 * (fileref.h), e.g. "restore @0 @1 console=@2" or "snapshot @0 @1". They are
 * closed after that command, used or not. This is how hearthd hands a jailed
 * hearth-vmm, which can open nothing on the host, the files it needs.
 *
 * A malformed or unknown line gets "ERR ..." and the connection stays usable;
 * a line longer than CONTROL_LINE_MAX closes that connection. Commands run
 * on the main thread (evloop.h). `hearth-vmm ctl SOCKET CMD...` is the client.
 */
#ifndef HEARTH_VMM_CONTROL_H
#define HEARTH_VMM_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include "evloop.h"

#define CONTROL_LINE_MAX 1024
#define CONTROL_MAX_CLIENTS 4
#define CONTROL_MAX_ARGS 8
#define CONTROL_MAX_FDS 4

struct control;

typedef void (*control_exec_fn)(void *ctx, int argc, char **argv, char *reply, size_t replylen);

struct control_client {
	bool used;
	int fd;
	struct ev_handler h;
	struct control *ctl;
	char buf[CONTROL_LINE_MAX];
	size_t len;
	int fds[CONTROL_MAX_FDS]; /* received with the pending line, not yet named */
	int nfds;
};

struct control {
	int listen_fd;
	struct ev_handler h;
	char path[108];
	struct evloop *loop;
	struct control_client clients[CONTROL_MAX_CLIENTS];
	control_exec_fn exec;
	void *ctx;
};

/* Binds path (unlinking a stale socket first); fatal on host errors. */
void control_init(struct control *c, struct evloop *loop, const char *path, control_exec_fn exec,
		  void *ctx);
void control_shutdown(struct control *c);
/* Client: sends argv joined by spaces, prints the reply; exit status 0 if it began with OK. */
int control_client_main(const char *path, int argc, char **argv);

#endif
