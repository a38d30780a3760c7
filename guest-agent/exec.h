/*
 * exec.h - runs one handler process (exec mode) for hearth-agent.
 *
 * A run forks the handler into its own process group, feeds the payload on
 * stdin, collects stdout (the response, at most max_out bytes) and stderr (the
 * logs, at most max_log bytes, truncation marked), and ends when the handler
 * has exited and its pipes are drained. Nothing here blocks: the agent's poll
 * loop calls run_pollfds() / run_handle() / run_on_exit() / run_check_deadline().
 *
 * Children that outlive the handler are killed with its process group when it
 * exits; processes that escaped the group are swept by run_sweep_orphans().
 */
#ifndef HEARTH_AGENT_EXEC_H
#define HEARTH_AGENT_EXEC_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

struct run_spec {
	const char *path;
	char *const *argv;      /* argv[0] included, NULL-terminated */
	char *const *envp;      /* NULL-terminated */
	const char *workdir;
	const uint8_t *payload;
	size_t payload_len;
	size_t max_out;
	size_t max_log;
	uint32_t timeout_ms;
	uid_t uid;              /* run as uid/gid, no supplementary groups (0: unchanged) */
	gid_t gid;
};

/* In a forked child: drops to uid/gid (if uid is not 0). 0, or -1 with errno. */
int run_drop_to(uid_t uid, gid_t gid);

enum run_outcome {
	RUN_EXITED,       /* see exit_code */
	RUN_SIGNALED,     /* see signal */
	RUN_TIMEOUT,
	RUN_TOO_LARGE,
	RUN_SPAWN_FAILED, /* see spawn_errno */
};

struct run {
	pid_t pid;
	int fd_in, fd_out, fd_err;
	const uint8_t *payload;
	size_t payload_len, payload_off;
	uint8_t *out;
	size_t out_len, max_out;
	uint8_t *log;
	size_t log_len, max_log;
	bool log_truncated;
	bool too_large, timed_out, exited, done;
	int wstatus;
	struct rusage ru;
	int64_t start_us, end_us, deadline_us;
	int spawn_errno;
};

/* Starts the handler. Returns 0, or -errno when pipes/fork failed (host-side failure). */
int run_start(struct run *r, const struct run_spec *spec);

/* Adds the run's pipe fds to p (at most 3); returns how many were added. */
int run_pollfds(const struct run *r, struct pollfd *p);

/* Services ready pipe fds (reads stdout/stderr, writes stdin). */
void run_handle(struct run *r, const struct pollfd *p, int n);

/* Records the handler's exit (from the SIGCHLD reaper) and finishes the run. */
void run_on_exit(struct run *r, int wstatus, const struct rusage *ru);

/* Kills the run when its deadline has passed; returns ms until the deadline (or -1 if none). */
int run_check_deadline(struct run *r);

/* Kills the handler's process group (used when the host goes away). */
void run_abort(struct run *r);

enum run_outcome run_outcome(const struct run *r, int *code);
uint64_t run_duration_us(const struct run *r);
void run_free(struct run *r);

/* Kills every remaining child of this process (orphans re-parented to us). */
void run_sweep_orphans(void);

int64_t run_now_us(void);

#endif
